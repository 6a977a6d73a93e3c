"""The SOS bridge, one way (SOS -> kernel), against the raw floor it is built on, measured in the same run.

- ours: ``SOSBridge.sync_once`` rounds until N SOS inbox entries (flat fields, as SOS writes them) are published
  into a ``redis://`` kernel on the same server: per entry it reads, parses in the ``sos-0.4`` dialect, checks the
  loop marker, publishes (validation, dedupe, XADD) and stores its position.
- raw: the same entries read with ``XRANGE`` pages of 100 and copied one ``XADD`` each to another stream with
  redis-py: what any bridge must at least do.

Rounds are interleaved (ours, then raw, ROUNDS times, each on fresh keys); the table shows the median rates.
Redis: ``SOS_BENCH_REDIS_URL`` if set, else a ``redis-server`` from PATH on a free loopback port.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid

import anyio

import sos_kernel
from sos_kernel.bridge import SOSBridge
from sos_kernel.contracts import AgentCard

from .bench_bus import redis_server

N = 2000
ROUNDS = 3
PAGE = 100
KERNEL_DB, SOS_DB = 2, 3


def _fields(i: int) -> dict[str, str]:
    return {
        "type": "send",
        "source": "agent:kasra",
        "timestamp": "2026-12-07T03:52:01Z",
        "version": "1.0",
        "message_id": str(uuid.uuid4()),
        "target": "agent:alice",
        "payload": json.dumps({"text": f"message {i}", "content_type": "text/plain"}),
    }


async def _fill(client: object, key: str) -> None:
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    for i in range(N):
        pipe.xadd(key, _fields(i))
    await pipe.execute()


async def ours(base: str) -> float:
    import redis.asyncio as aioredis

    sos = aioredis.Redis.from_url(f"{base}/{SOS_DB}")
    await sos.flushdb()
    await _fill(sos, "sos:stream:global:agent:alice")
    async with sos_kernel.open(f"{base}/{KERNEL_DB}") as kernel:
        await kernel.registry.register(AgentCard(name="alice", tool="sdk", type="remote", role="executor"))
        async with SOSBridge(kernel, sos, tenant="bench") as bridge:
            started = time.perf_counter()
            while bridge.status().bridged_in < N:
                await bridge.sync_once()
            elapsed = time.perf_counter() - started
        client = kernel.backend.client  # type: ignore[attr-defined]
        await client.flushdb()
    await sos.aclose()
    return N / elapsed


async def raw(base: str) -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(f"{base}/{SOS_DB}")
    await client.flushdb()
    await _fill(client, "src")
    started = time.perf_counter()
    last = "-"
    while True:
        rows = await client.xrange("src", min=last, max="+", count=PAGE)
        for entry_id, fields in rows:
            await client.xadd("dst", fields)
            last = "(" + entry_id.decode()
        if len(rows) < PAGE:
            break
    elapsed = time.perf_counter() - started
    await client.aclose()
    return N / elapsed


async def rates(base: str) -> tuple[float, float]:
    got: list[float] = []
    floor: list[float] = []
    for _ in range(ROUNDS):
        got.append(await ours(base))
        floor.append(await raw(base))
    return statistics.median(got), statistics.median(floor)


def main() -> None:
    """Print the one-way rate against the XRANGE+XADD floor."""
    with redis_server() as url:
        if url is None:
            print("(redis-server not found; set SOS_BENCH_REDIS_URL)")
            return
        got, floor = anyio.run(rates, url.rsplit("/", 1)[0])
    print(f"{'case':<36} {'ours msg/s':>12} {'raw msg/s':>12} {'ratio':>7}")
    print(f"{'SOS -> kernel (redis), ' + str(N) + ' entries':<36} {got:>12,.0f} {floor:>12,.0f} {got / floor:>6.2f}x")


if __name__ == "__main__":
    main()
