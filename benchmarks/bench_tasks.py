"""Full task lifecycles on SQLite and Redis against the ledger's own hold + capture, measured in the same run.

A lifecycle is: create with a bounty (a balance read, the funding transfer into escrow, the insert, a
``task_created`` message), claim (a compare-and-set, ``task_claimed``), submit with one evidence item (a
compare-and-set, an ``evidence`` message), approve (a compare-and-set, the payout transfer, ``gate_verdict`` and
``task_completed``). The floor is the ledger alone placing a hold and capturing it, the money movement a bounty
needs at the least; the target is 0.3x of it (a lifecycle is about four writes and four messages).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

import sos_kernel

LIFECYCLES = 300
ROUNDS = 3
EVIDENCE = {"argv": ["make", "test"], "exit_status": 0, "output_sha256": "0" * 64, "output_bytes": 10}


async def _setup(url: str) -> sos_kernel.Kernel:
    kernel = await sos_kernel.open(url)
    led = kernel.ledger
    await led.open_account("system:treasury", "USD", allow_negative=True)
    for owner in ("agent:boss", "agent:worker"):
        await led.open_account(owner, "USD")
    await led.transfer(id="fund", debit="system:treasury", credit="agent:boss", amount=10**12, currency="USD")
    return kernel


async def lifecycles(url: str, tag: str) -> float:
    kernel = await _setup(url)
    tasks = kernel.tasks
    started = time.perf_counter()
    for i in range(LIFECYCLES):
        task = await tasks.create(
            "bench", id=f"{tag}-{i}", reviewers=["agent:rev"], bounty=1000, funded_by="agent:boss"
        )
        claim = await tasks.claim(task.id, agent="agent:worker")
        await tasks.submit(task.id, claim.token, evidence=[EVIDENCE])
        await tasks.review(task.id, reviewer="agent:rev", verdict="approve")
    rate = LIFECYCLES / (time.perf_counter() - started)
    await kernel.aclose()
    return rate


async def holds(url: str, tag: str) -> float:
    kernel = await _setup(url)
    led = kernel.ledger
    started = time.perf_counter()
    for i in range(LIFECYCLES):
        hold = await led.hold(
            id=f"{tag}-h{i}", debit="agent:boss", credit="agent:worker", amount=1000, currency="USD", timeout_s=600
        )
        await led.capture(hold.id)
    rate = LIFECYCLES / (time.perf_counter() - started)
    await kernel.aclose()
    return rate


def _redis(tmp: str) -> tuple[str, subprocess.Popen[bytes] | None]:
    url = os.environ.get("SOS_TEST_REDIS_URL")
    if url:
        return url, None
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (or set SOS_TEST_REDIS_URL)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return f"redis://127.0.0.1:{port}/0", proc


def _report(engine: str, ours: list[float], floor: list[float]) -> None:
    o, f = statistics.median(ours), statistics.median(floor)
    print(f"{engine + ' lifecycle (create..approve)':<44} {o:>10,.0f}")
    print(f"{engine + ' ledger hold + capture (floor)':<44} {f:>10,.0f}")
    print(f"{engine} ratio {o / f:.2f}x (target >= 0.30x)")


def main() -> None:
    """Interleave rounds of both cases per engine and print the medians and their ratio."""
    print(f"{'case':<44} {'per s':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        ours, floor = [], []
        for r in range(ROUNDS):
            ours.append(anyio.run(lifecycles, f"sqlite:///{Path(tmp)}/tasks-{r}.db", f"s{r}"))
            floor.append(anyio.run(holds, f"sqlite:///{Path(tmp)}/holds-{r}.db", f"s{r}"))
        _report("sqlite", ours, floor)
        url, proc = _redis(tmp)
        try:
            ours, floor = [], []
            for r in range(ROUNDS):
                tag = f"r{r}-{os.getpid()}"
                ours.append(anyio.run(lifecycles, url, tag))
                floor.append(anyio.run(holds, url, tag))
            _report("redis", ours, floor)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
