"""Redis Cluster against one Redis server: publish and transfer throughput with 1 and 4 client processes, and the
cost of ``durability=replicated``.

Targets, in the same run: one ``redis-server`` (``redis://``), a 3-master/3-replica loopback cluster
(``redis+cluster://``, the tests' ``tests/redis_cluster.py``), and the same cluster with ``?durability=replicated``
(every publish and transfer waits for its replica). Each client process runs ``CONCURRENCY`` tasks for
``DURATION_S`` over ``TENANTS`` tenants (spread over the masters); the raw floor is the same processes sending the
engine's bare command for the operation (``XADD`` for a publish, ``HINCRBY`` for a transfer) with redis-py on the
same target. Throughput is operations per second summed over the processes; the ratio is to the raw floor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DURATION_S = 3.0
CONCURRENCY = 8
TENANTS = 16
PROCESSES = (1, 4)
USD = "USD"


async def _go(go: str) -> float:
    """Say READY, wait for the go file, and return when the measured window ends."""
    import anyio

    print("READY", flush=True)
    while not await anyio.Path(go).exists():  # noqa: ASYNC110 -- another process creates it
        await anyio.sleep(0.005)
    return time.time() + DURATION_S


async def _spread(step: Callable[[int, int], Awaitable[None]], stop_at: float) -> int:
    import anyio

    done = 0

    async def loop(task: int) -> None:
        nonlocal done
        n = 0
        while time.time() < stop_at:
            await step(task, n)
            n += 1
            done += 1

    async with anyio.create_task_group() as tg:
        for task in range(CONCURRENCY):
            tg.start_soon(loop, task)
    return done


async def _kernel_op(url: str, op: str, go: str, worker: int) -> int:
    import sos_kernel
    from sos_kernel.contracts import SendMessage, SendPayload

    async with sos_kernel.open(url) as kernel:
        views = [kernel.tenant(f"b{i}") for i in range(TENANTS)]
        if op == "transfer":
            for v in views:
                await v.ledger.open_account("system:issuer", USD, allow_negative=True)
                await v.ledger.open_account("agent:sink", USD)

        async def step(task: int, n: int) -> None:
            view = views[(task + n) % TENANTS]
            if op == "publish":
                await view.bus.publish(
                    SendMessage(source="agent:a", target="agent:sink", payload=SendPayload(text="x"))
                )
            else:
                tid = f"{worker}-{task}-{n}-{uuid.uuid4().hex[:8]}"
                await view.ledger.transfer(id=tid, debit="system:issuer", credit="agent:sink", amount=1, currency=USD)

        return await _spread(step, await _go(go))


async def _raw_op(url: str, op: str, go: str, worker: int) -> int:
    from tests.redis_cluster import async_client

    client = async_client(url.partition("?")[0])
    await client.ping()

    async def step(task: int, n: int) -> None:
        prefix = f"sos:{{t:b{(task + n) % TENANTS}}}:"
        if op == "publish":
            await client.xadd(prefix + "stream:raw", {"d": b"x" * 200}, maxlen=1000, approximate=True)
        else:
            await client.hincrby(prefix + "acct:raw", "cp", 1)

    try:
        return await _spread(step, await _go(go))
    finally:
        await client.aclose()


def worker_main(url: str, op: str, raw: str, worker: int, go: str) -> None:
    import anyio

    run = _raw_op if raw == "1" else _kernel_op
    print(json.dumps({"done": anyio.run(run, url, op, go, worker)}), flush=True)


def measure(url: str, op: str, processes: int, raw: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        args = [sys.executable, "-m", "benchmarks.bench_cluster", "--worker", url, op, "1" if raw else "0"]
        procs = [
            subprocess.Popen([*args, str(i), str(go)], stdout=subprocess.PIPE, text=True) for i in range(processes)
        ]
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "READY":  # the kernel is open and its accounts exist
                raise RuntimeError("a benchmark worker did not start")
        go.touch()
        total = 0
        for p in procs:
            out, _ = p.communicate(timeout=120)
            total += json.loads(out.strip().splitlines()[-1])["done"]
    return total / DURATION_S


def main() -> None:
    from tests.redis_cluster import local_cluster

    from .bench_bus import redis_server

    with redis_server() as server_url, tempfile.TemporaryDirectory() as tmp, local_cluster(Path(tmp)) as cluster:
        if server_url is None:
            print("(redis-server not found)")
            return
        targets: list[tuple[str, str]] = [
            ("redis (one server)", server_url),
            ("cluster (3 masters)", cluster.url),
            ("cluster, replicated", cluster.url + "?durability=replicated"),
        ]
        print(f"{DURATION_S:.0f} s per row, {CONCURRENCY} tasks per process, {TENANTS} tenants; ops/s summed")
        print(f"{'target':<22} {'op':<9} {'procs':>5} {'sos ops/s':>10} {'raw ops/s':>10} {'ratio':>6}")
        rows: list[dict[str, Any]] = []
        for op in ("publish", "transfer"):
            for name, url in targets:
                for processes in PROCESSES:
                    sos = measure(url, op, processes, raw=False)
                    raw = measure(url, op, processes, raw=True)
                    rows.append({"target": name, "op": op, "procs": processes, "sos": sos, "raw": raw})
                    print(f"{name:<22} {op:<9} {processes:>5} {sos:>10.0f} {raw:>10.0f} {sos / max(raw, 1.0):>6.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        url, op, raw, worker, go = sys.argv[2:7]
        worker_main(url, op, raw, int(worker), go)
    else:
        main()
