"""A second process: remembers what argv says in the kernel at argv[1], then prints its lexical vector's digest."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import sos_kernel
from sos_kernel.memory import LexicalEmbedder


async def main(url: str, namespace: str, id: str, vector: str) -> None:
    async with sos_kernel.open(url) as kernel:
        await kernel.memory.remember(namespace, f"written by another process ({id})", id=id, vector=json.loads(vector))
    text = "Determinism: the same text, the same vector, in every process."
    print(hashlib.sha256(repr(LexicalEmbedder().embed_one(text)).encode()).hexdigest())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
