"""Messages survive a crash: a process that stored a transition is killed before publishing its messages, and
another process's ``sweep`` (or read) publishes them exactly once. A create killed after funding its bounty is
completed by ``sweep``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.errors import TaskNotFound
from sos_kernel.tasks import ESCROW_ACCOUNT

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


async def _seed(url: str) -> None:
    async with sos_kernel.open(url) as kernel:
        await kernel.ledger.open_account("system:treasury", "USD", allow_negative=True)
        await kernel.ledger.open_account("agent:boss", "USD")
        await kernel.ledger.transfer(
            id="seed", debit="system:treasury", credit="agent:boss", amount=800, currency="USD"
        )


async def _after_funding(url: str) -> tuple[Counter[str], str, int, int]:
    async with sos_kernel.open(url) as kernel:
        with pytest.raises(TaskNotFound):  # a reservation is not a task yet
            await kernel.tasks.get("crash-1")
        await kernel.tasks.sweep()
        await kernel.tasks.sweep()
        task = await kernel.tasks.get("crash-1")
        history = await kernel.bus.history("sos:channel:tasks", limit=100)
        escrow = (await kernel.ledger.balance(ESCROW_ACCOUNT, "USD")).available
        boss = (await kernel.ledger.balance("agent:boss", "USD")).available
        await kernel.ledger.check()
        return Counter(m.type for m in history), task.status, escrow, boss


@pytest.mark.slow
def test_a_create_killed_after_funding_is_completed_by_sweep(kernel_url: str, implements: Implements) -> None:
    requires(implements, multi_process=True)
    anyio.run(_seed, kernel_url)
    worker = WorkerProcess(WORKER, kernel_url, "fund", "crash-1")
    try:
        worker.wait_ready()
    finally:
        worker.stop()  # SIGKILL after the bounty moved into escrow, before the task was made visible
    assert anyio.run(_after_funding, kernel_url) == (Counter({"task_created": 1}), "queued", 500, 300)
