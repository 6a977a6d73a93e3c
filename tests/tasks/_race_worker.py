"""One worker of the claim race (``test_race.py``), run as a separate process.

    python _race_worker.py URL TENANT INDEX TASKS SEED GO_FILE

Prints ``READY``, waits for ``GO_FILE``, then, as ``agent:w<INDEX>``:

1. tries to claim every task once with a 1 s lease (shuffled order);
2. once its leases have run out, claims every task again (60 s lease), retrying a task while an attempt-1 lease
   of another worker still runs, until someone holds attempt 2;
3. submits with each attempt-1 token it won (all stale by now), then with each attempt-2 token.

It prints one JSON line per call: ``{"op", "task", "attempt", "ok", "code", "reason"}``; the test judges them.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio

import sos_kernel
from sos_kernel.errors import IllegalTransition, SOSError, TaskAlreadyClaimed
from sos_kernel.tasks import Tasks

FIRST_LEASE_S = 1
SECOND_LEASE_S = 60


def say(**item: Any) -> None:
    print(json.dumps(item, separators=(",", ":")), flush=True)


async def claim_once(tasks: Tasks, agent: str, task_id: str, lease_s: int) -> tuple[int, str] | None:
    try:
        claim = await tasks.claim(task_id, agent=agent, lease_s=lease_s)
    except SOSError as exc:
        say(op="claim", task=task_id, attempt=exc.details.get("attempt"), ok=False, code=exc.code,
            reason=exc.details.get("reason"))  # fmt: skip
        return None
    say(op="claim", task=task_id, attempt=claim.attempt, ok=True, code=None, reason=None)
    return claim.attempt, claim.token


async def reclaim(tasks: Tasks, agent: str, task_id: str) -> tuple[int, str] | None:
    """Claim attempt 2 of ``task_id`` unless another worker does first."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            claim = await tasks.claim(task_id, agent=agent, lease_s=SECOND_LEASE_S)
        except TaskAlreadyClaimed as exc:
            if exc.details.get("attempt", 0) >= 2:
                return None  # someone else holds attempt 2
            await anyio.sleep(0.05)  # an attempt-1 lease still runs
            continue
        except IllegalTransition:
            return None  # its attempt-2 worker has submitted it already
        say(op="claim", task=task_id, attempt=claim.attempt, ok=True, code=None, reason=None)
        return claim.attempt, claim.token
    raise SystemExit(f"{task_id} never reached attempt 2")


async def submit(tasks: Tasks, task_id: str, attempt: int, token: str) -> None:
    try:
        await tasks.submit(task_id, token, result={"attempt": attempt})
    except SOSError as exc:
        say(op="submit", task=task_id, attempt=attempt, ok=False, code=exc.code, reason=exc.details.get("reason"))
        return
    say(op="submit", task=task_id, attempt=attempt, ok=True, code=None, reason=None)


async def main(url: str, tenant: str, index: int, count: int, seed: int, go_file: str) -> None:
    rng = random.Random(seed)
    agent = f"agent:w{index}"
    async with sos_kernel.open(url) as kernel:
        tasks = kernel.tenant(tenant).tasks
        print("READY", flush=True)
        deadline = time.monotonic() + 60
        while not await anyio.Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal in 60 s")
            await anyio.sleep(0.005)
        ids = [f"race-{i:03d}" for i in range(count)]
        won: list[tuple[str, int, str]] = []
        for task_id in rng.sample(ids, len(ids)):
            got = await claim_once(tasks, agent, task_id, FIRST_LEASE_S)
            if got:
                won.append((task_id, *got))
        await anyio.sleep(FIRST_LEASE_S + 0.2)  # every lease this worker won has run out
        for task_id in rng.sample(ids, len(ids)):
            got = await reclaim(tasks, agent, task_id)
            if got:
                won.append((task_id, *got))
        for task_id, attempt, token in sorted(won, key=lambda w: w[1]):
            await submit(tasks, task_id, attempt, token)


if __name__ == "__main__":
    url, tenant, index, count, seed, go_file = sys.argv[1:7]
    anyio.run(main, url, tenant, int(index), int(count), int(seed), go_file)
