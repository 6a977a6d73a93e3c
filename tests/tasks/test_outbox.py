"""Messages survive a crash: a process that stored a transition is killed before publishing its messages, and
another process's ``sweep`` (or read) publishes them exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements

from ..conftest import requires
from ..procs import WorkerProcess

WORKER = str(Path(__file__).with_name("_crash_worker.py"))


async def _prepare(url: str, op: str) -> None:
    if op == "claim":
        async with sos_kernel.open(url) as kernel:
            await kernel.tasks.create("crash", id="crash-1", reviewers=["agent:rev"])


async def _recover(url: str, how: str) -> tuple[Counter[str], str, int]:
    async with sos_kernel.open(url) as kernel:
        if how == "sweep":
            await kernel.tasks.sweep()
        else:
            await kernel.tasks.get("crash-1")
        await kernel.tasks.sweep()  # again: the messages are no longer owed
        task = await kernel.tasks.get("crash-1")
        history = await kernel.bus.history("sos:channel:tasks", limit=100)
        return Counter(m.type for m in history), task.status, task.attempt


@pytest.mark.slow
@pytest.mark.parametrize(("op", "how", "expected"), [
    ("create", "sweep", {"task_created": 1}),
    ("claim", "sweep", {"task_created": 1, "task_claimed": 1}),
    ("claim", "get", {"task_created": 1, "task_claimed": 1}),
])  # fmt: skip
def test_messages_owed_by_a_killed_process_are_published_once(
    kernel_url: str, implements: Implements, op: str, how: str, expected: dict[str, int]
) -> None:
    requires(implements, multi_process=True)
    anyio.run(_prepare, kernel_url, op)
    worker = WorkerProcess(WORKER, kernel_url, op, "crash-1")
    try:
        worker.wait_ready()
    finally:
        worker.stop()  # SIGKILL between storing the transition and the bus accepting its messages
    types, status, attempt = anyio.run(_recover, kernel_url, how)
    assert types == Counter(expected)
    assert (status, attempt) == (("claimed", 1) if op == "claim" else ("queued", 0))
