"""A writer process: remembers memories in agent:bob's namespace of tenant acme until its share refuses them, then
prints how many it stored (argv: kernel URL, id prefix, how many to try, text length, memories_max, bytes_max)."""

from __future__ import annotations

import asyncio
import sys

import sos_kernel
from sos_kernel.errors import LimitExceeded
from sos_kernel.memory import MemoryLimits


async def main(url: str, prefix: str, tries: str, text_len: str, memories_max: str, bytes_max: str) -> None:
    limits = MemoryLimits(memories_max=int(memories_max), bytes_max=int(bytes_max))
    stored = 0
    async with sos_kernel.open(url, memory_limits=limits) as kernel:
        mem = kernel.tenant("acme").memory
        for i in range(int(tries)):
            try:
                await mem.remember("agent:bob/fill", "x" * int(text_len), id=f"{prefix}{i}", vector=[1.0])
            except LimitExceeded:
                continue
            stored += 1
    print(stored)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
