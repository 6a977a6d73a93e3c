"""One racer of the budget test (``test_governed.py``), run as a separate process.

    python _budget_worker.py URL CALLS GO_FILE

Prints ``READY`` once its kernel is open, waits for ``GO_FILE``, then makes CALLS governed tool calls and prints
``ok`` or ``denied`` for each.
"""

from __future__ import annotations

import sys
import time

import anyio

import sos_kernel
from sos_kernel.errors import Forbidden
from sos_kernel.governance import governed


async def main(url: str, calls: int, go_file: str) -> None:
    async with sos_kernel.open(url) as kernel:
        ran: list[int] = []

        async def tool(x: int) -> int:
            ran.append(x)
            return x

        checked = governed(tool, action="tool.search", governance=kernel.governance, agent="agent:racer")
        print("READY", flush=True)
        deadline = time.monotonic() + 60
        while not await anyio.Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal in 60 s")
            await anyio.sleep(0.005)
        for i in range(calls):
            try:
                await checked(i)
                print("ok", flush=True)
            except Forbidden:
                print("denied", flush=True)
        print(f"ran {len(ran)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
