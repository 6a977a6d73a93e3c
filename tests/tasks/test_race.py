"""The claim race: 4 processes on one SQLite file (or one Redis) claim the same 100 tasks at once.

Each task is claimed by exactly one process per attempt; when the 1 s leases run out every task is claimed again
(attempt 2) by exactly one process, and every submit made with an attempt-1 token is refused as stale while the
attempt-2 submits go through.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements

from ..conftest import requires
from ..procs import WorkerProcess

WORKER = str(Path(__file__).with_name("_race_worker.py"))
WORKERS = 4
TASKS = 100
TENANT = "race"


async def create(url: str) -> None:
    async with sos_kernel.open(url) as kernel:
        tasks = kernel.tenant(TENANT).tasks
        for i in range(TASKS):
            await tasks.create(f"task {i}", id=f"race-{i:03d}", reviewers=["agent:rev"])


async def final(url: str) -> list[Any]:
    async with sos_kernel.open(url) as kernel:
        return await kernel.tenant(TENANT).tasks.list(limit=TASKS)


def run_workers(url: str, go_file: Path, seed: int) -> list[dict[str, Any]]:
    with ExitStack() as stack:
        workers = []
        for index in range(WORKERS):
            worker = WorkerProcess(WORKER, url, TENANT, str(index), str(TASKS), str(seed + index), str(go_file))
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        go_file.touch()
        out = []
        for index, worker in enumerate(workers):
            out += [{**json.loads(line), "worker": index} for line in worker.finish()]
        return out


@pytest.mark.slow
def test_each_task_is_claimed_once_per_attempt_across_processes(
    kernel_url: str, implements: Implements, tmp_path: Path
) -> None:
    requires(implements, multi_process=True)
    anyio.run(create, kernel_url)
    lines = run_workers(kernel_url, tmp_path / "go", random.randrange(2**31))
    claims = [line for line in lines if line["op"] == "claim" and line["ok"]]
    per_attempt = Counter((c["task"], c["attempt"]) for c in claims)
    assert set(per_attempt.values()) == {1}
    assert set(per_attempt) == {(f"race-{i:03d}", a) for i in range(TASKS) for a in (1, 2)}
    refused = [line for line in lines if line["op"] == "claim" and not line["ok"]]
    assert {r["code"] for r in refused} <= {"SOS-6012"}
    submits = [line for line in lines if line["op"] == "submit"]
    stale = [s for s in submits if s["attempt"] == 1]
    assert len(stale) == TASKS
    assert {(s["ok"], s["code"], s["reason"]) for s in stale} == {(False, "SOS-6012", "stale")}
    fresh = [s for s in submits if s["attempt"] == 2]
    assert len(fresh) == TASKS
    assert all(s["ok"] for s in fresh)
    winners = {c["task"]: f"agent:w{c['worker']}" for c in claims if c["attempt"] == 2}
    for task in anyio.run(final, kernel_url):
        assert (task.status, task.attempt, task.assignee, task.result) == (
            "review",
            2,
            winners[task.id],
            {"attempt": 2},
        )
