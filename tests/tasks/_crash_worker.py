"""A process that stores one task transition and dies before the bus has its messages (``test_outbox.py``).

    python _crash_worker.py URL OP TASK_ID

``OP`` is ``create`` (the task) or ``claim`` (it, as ``agent:crasher``). The publish step is made to block: the
worker prints ``READY`` once the transition is stored and the publish has begun, and waits there to be killed.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

import sos_kernel
from sos_kernel.tasks import Tasks


async def _stall(self: Tasks, messages: list[dict[str, Any]]) -> None:
    print("READY", flush=True)  # the transition is stored; the bus has not seen its messages
    await anyio.sleep_forever()


async def main(url: str, op: str, task_id: str) -> None:
    Tasks._publish = _stall  # type: ignore[method-assign]  # the crash point under test
    async with sos_kernel.open(url) as kernel:
        if op == "create":
            await kernel.tasks.create("crash", id=task_id, reviewers=["agent:rev"])
        else:
            await kernel.tasks.claim(task_id, agent="agent:crasher")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
