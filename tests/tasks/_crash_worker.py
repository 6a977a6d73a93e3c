"""A process that stores one task transition and dies before the bus has its messages (``test_outbox.py``).

    python _crash_worker.py URL OP TASK_ID

``OP`` is ``create`` (the task) or ``claim`` (it, as ``agent:crasher``): the publish step is made to block, and
the worker prints ``READY`` once the transition is stored and the publish has begun. ``fund`` creates the task
with a bounty of 500 from ``agent:boss`` and blocks right after the ledger moved it, before the task is made
visible. Then it waits to be killed.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

import sos_kernel
from sos_kernel.ledger import Ledger
from sos_kernel.tasks import Tasks

_transfer = Ledger.transfer


async def _stall(self: Tasks, messages: list[dict[str, Any]]) -> None:
    print("READY", flush=True)  # the transition is stored; the bus has not seen its messages
    await anyio.sleep_forever()


async def _transfer_then_stall(self: Ledger, *args: Any, **kwargs: Any) -> Any:
    await _transfer(self, *args, **kwargs)
    if str(kwargs.get("id", "")).startswith("task:"):
        print("READY", flush=True)  # the bounty is in escrow; the task is still a reservation
        await anyio.sleep_forever()


async def main(url: str, op: str, task_id: str) -> None:
    # the crash point under test
    if op == "fund":
        Ledger.transfer = _transfer_then_stall  # type: ignore[method-assign]
    else:
        Tasks._publish = _stall  # type: ignore[method-assign]
    async with sos_kernel.open(url) as kernel:
        if op == "fund":
            await kernel.tasks.create("crash", id=task_id, reviewers=["agent:rev"], bounty=500, funded_by="agent:boss")
        elif op == "create":
            await kernel.tasks.create("crash", id=task_id, reviewers=["agent:rev"])
        else:
            await kernel.tasks.claim(task_id, agent="agent:crasher")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
