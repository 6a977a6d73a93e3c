"""The delivery path, each case against a raw floor of the same pattern measured in the same run.

- ask/reply round trip (p50/p99) per backend: ``bus.ask`` to a responder subscribed in the same process that
  answers with ``Delivery.reply`` (the reply and the request's ack in one store step), against
  memory: a request and a reply over two anyio memory streams, with pydantic validation on each receiving side;
  sqlite: a bare ``sqlite3`` insert of the request, select of it, insert of the reply, select of it;
  redis: redis-py ``XADD`` of the request, the responder's blocking ``XREAD``, ``XADD`` of the reply, blocking
  ``XREAD`` of it.
- redis, one group with 1 and 4 consumers: a producer publishes while the consumers take and ack, against
  ``XADD`` + blocking ``XREADGROUP COUNT 16`` + ``XACK`` per entry with the same number of consumers.
- redis fan-out to 1, 10 and 100 channel subscribers: the time until every subscriber has every message, against
  one blocking ``XREAD`` per subscriber on the stream.
- memory and sqlite costs with 1k and 100k entries stored on the address (1M with ``SOS_BENCH_1M=1``):
  ``history(50)`` of the oldest and of the newest entries, and consume+ack of one entry, in µs (the oldest
  entries are read past the memory store's kept message objects at every size; see ``costs``).

Rounds are interleaved (ours, then raw, ROUNDS times); the tables show medians. Redis: ``SOS_BENCH_REDIS_URL``
if set, else a ``redis-server`` from PATH on a free loopback port.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from pydantic import TypeAdapter

import sos_kernel
from sos_kernel.backends.memory import KEPT_MESSAGES_MAX
from sos_kernel.contracts import SendMessage, SendPayload

from .bench_bus import messages, redis_server

ROUNDS = 3
N_ASKS = 300
N_GROUP = 2000
N_FAN = 50
PREFETCH = 16
STORED = (1_000, 100_000, 1_000_000) if os.environ.get("SOS_BENCH_1M") == "1" else (1_000, 100_000)
N_COST = 1000
SUBSCRIBERS_PER_KERNEL = 25

Sample = Callable[[], Awaitable[list[float]]]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def interleaved(ours: Sample, raw: Sample) -> tuple[list[float], list[float], float, float]:
    """ROUNDS rounds, ours then raw; every round's samples pooled, and each side's CPU seconds per sample."""
    a: list[float] = []
    b: list[float] = []
    cpu = [0.0, 0.0]
    for _ in range(ROUNDS):
        for side, (sample, out) in enumerate(((ours, a), (raw, b))):
            started = time.process_time()
            out += await sample()
            cpu[side] += time.process_time() - started
    return a, b, cpu[0] / max(1, len(a)), cpu[1] / max(1, len(b))


# --- ask/reply ---------------------------------------------------------------------------------------------------


async def ask_ours(url: str) -> list[float]:
    """Round trips of ``bus.ask`` to a responder in the same process, seconds each."""
    out: list[float] = []
    async with sos_kernel.open(url) as kernel:

        async def oracle() -> None:
            async with kernel.bus.subscribe("agent:oracle") as sub:
                for _ in range(N_ASKS):
                    d = await sub.receive()
                    assert d is not None
                    await d.reply("42")  # the reply, and the ack of the request in the same store step

        async with anyio.create_task_group() as tg:
            tg.start_soon(oracle)
            for i in range(N_ASKS):
                started = time.perf_counter()
                await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=30)
                out.append(time.perf_counter() - started)
    return out


def _send(text: str) -> bytes:
    return SendMessage(source="agent:alice", target="agent:oracle", payload=SendPayload(text=text)).to_json()


async def ask_raw_memory() -> list[float]:
    """A request and a reply over two anyio memory streams, each validated by pydantic where it is received."""
    adapter = TypeAdapter(SendMessage)
    req_send, req_recv = anyio.create_memory_object_stream[bytes](1)
    rep_send, rep_recv = anyio.create_memory_object_stream[bytes](1)
    out: list[float] = []

    async def oracle() -> None:
        async for data in req_recv:
            adapter.validate_json(data)
            await rep_send.send(_send("42"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(oracle)
        for i in range(N_ASKS):
            started = time.perf_counter()
            await req_send.send(_send(f"q{i}"))
            adapter.validate_json(await rep_recv.receive())
            out.append(time.perf_counter() - started)
        await req_send.aclose()
    return out


def ask_raw_sqlite_sync(path: Path) -> list[float]:
    """Insert a request, select it, insert the reply, select it: four statements, two commits."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, address TEXT, data BLOB)")
    out: list[float] = []
    for i in range(N_ASKS):
        started = time.perf_counter()
        db.execute("INSERT INTO q (address, data) VALUES (?, ?)", ("agent:oracle", _send(f"q{i}")))
        db.execute("SELECT data FROM q WHERE address = ? ORDER BY id DESC LIMIT 1", ("agent:oracle",)).fetchone()
        db.execute("INSERT INTO q (address, data) VALUES (?, ?)", (f"reply:{i}", _send("42")))
        db.execute("SELECT data FROM q WHERE address = ? ORDER BY id DESC LIMIT 1", (f"reply:{i}",)).fetchone()
        out.append(time.perf_counter() - started)
    db.close()
    return out


async def ask_raw_redis(client: Any) -> list[float]:
    """XADD the request; the responder's blocking XREAD, XADD of the reply; the asker's blocking XREAD of it."""
    out: list[float] = []
    await client.delete("raw:oracle")
    ready = anyio.Event()

    async def oracle() -> None:
        last = "$"
        ready.set()
        for _ in range(N_ASKS):
            reply = await client.xread({"raw:oracle": last}, count=1, block=30_000)
            entry_id, fields = reply[0][1][0]
            last = entry_id
            await client.xadd(b"raw:reply:" + fields[b"c"], {"d": _send("42")})

    async with anyio.create_task_group() as tg:
        tg.start_soon(oracle)
        await ready.wait()
        for i in range(N_ASKS):
            channel = f"raw:reply:{i}"
            started = time.perf_counter()
            await client.xadd("raw:oracle", {"d": _send(f"q{i}"), "c": str(i)})
            await client.xread({channel: "0-0"}, count=1, block=30_000)
            out.append(time.perf_counter() - started)
            await client.delete(channel)
    return out


# --- redis groups and fan-out ------------------------------------------------------------------------------------


async def group_ours(url: str, consumers: int, tag: str) -> tuple[float, float]:
    """Messages per second a group of ``consumers`` takes and acks while one producer publishes, and the CPU µs
    of this process per message."""
    data = messages(N_GROUP, target=f"agent:grp-{tag}")
    done = anyio.Event()
    async with sos_kernel.open(url) as kernel, anyio.create_task_group() as tg:
        left = [N_GROUP]
        subs = [kernel.bus.subscribe(f"agent:grp-{tag}", consumer=f"c{i}", prefetch=PREFETCH) for i in range(consumers)]
        for sub in subs:
            await sub.open()

        async def consume(sub: sos_kernel.Subscription) -> None:
            while left[0] > 0:
                d = await sub.receive(timeout_s=0.05)
                if d is not None:
                    await d.ack()
                    left[0] -= 1
            done.set()
            await sub.aclose()

        started, cpu = time.perf_counter(), time.process_time()
        for sub in subs:
            tg.start_soon(consume, sub)
        for item in data:
            await kernel.bus.publish(item)
        await done.wait()
        return N_GROUP / (time.perf_counter() - started), (time.process_time() - cpu) / N_GROUP * 1e6


async def group_raw(client: Any, consumers: int, tag: str) -> tuple[float, float]:
    """The same with redis-py: XADD; per consumer blocking XREADGROUP COUNT 16 and one XACK per entry."""
    key = f"raw:grp-{tag}"
    await client.xgroup_create(key, "g", id="$", mkstream=True)
    data = messages(N_GROUP)
    left = [N_GROUP]

    async def consume(name: str) -> None:
        while left[0] > 0:
            reply = await client.xreadgroup("g", name, {key: ">"}, count=PREFETCH, block=50)
            for entry_id, _ in reply[0][1] if reply else []:
                await client.xack(key, "g", entry_id)
                left[0] -= 1

    started, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for i in range(consumers):
            tg.start_soon(consume, f"c{i}")
        for item in data:
            await client.xadd(key, {"d": item})
    return N_GROUP / (time.perf_counter() - started), (time.process_time() - cpu) / N_GROUP * 1e6


async def fan_ours(url: str, subscribers: int, tag: str) -> float:
    """Seconds until each of ``subscribers`` channel subscribers has taken and acked N_FAN messages."""
    channel = f"sos:channel:fan-{tag}"
    data = messages(N_FAN, target=channel)
    async with AsyncExitStack() as stack:
        kernel = await stack.enter_async_context(sos_kernel.open(url))
        # subscribers spread over kernels as over processes: SUBSCRIBERS_PER_KERNEL each (each kernel one shared read)
        kernels = [
            await stack.enter_async_context(sos_kernel.open(url)) for _ in range(0, subscribers, SUBSCRIBERS_PER_KERNEL)
        ]
        subs = [
            kernels[i // SUBSCRIBERS_PER_KERNEL].bus.subscribe(channel, prefetch=PREFETCH) for i in range(subscribers)
        ]
        for sub in subs:
            await sub.open()

        async def consume(sub: sos_kernel.Subscription) -> None:
            for _ in range(N_FAN):
                d = await sub.receive()
                assert d is not None
                await d.ack()
            await sub.aclose()

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for sub in subs:
                tg.start_soon(consume, sub)
            for item in data:
                await kernel.bus.publish(item)
        return time.perf_counter() - started


async def fan_raw(client: Any, subscribers: int, tag: str) -> float:
    """The same with redis-py: XADD; one blocking XREAD per subscriber, from the last id it saw."""
    key = f"raw:fan-{tag}"
    first = await client.xadd(key, {"d": b""})
    data = messages(N_FAN)

    async def consume() -> None:
        last, seen = first, 0
        while seen < N_FAN:
            reply = await client.xread({key: last}, count=PREFETCH, block=1000)
            for entry_id, _ in reply[0][1] if reply else []:
                last, seen = entry_id, seen + 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(subscribers):
            tg.start_soon(consume)
        for item in data:
            await client.xadd(key, {"d": item})
    return time.perf_counter() - started


# --- costs with stored data --------------------------------------------------------------------------------------


async def costs(url: str, stored: int) -> tuple[float, float, float]:
    """µs of ``history(50)`` of the oldest 50 and of the newest 50, and of consume+ack of one (the oldest) entry,
    with ``stored`` entries kept on the address.

    The memory store keeps the message objects of the newest ``KEPT_MESSAGES_MAX`` entries it wrote (any address)
    and parses older ones when read. The newest 50 are read first, kept at every size; then a filler of that many
    entries on another address is published, so the oldest are parsed at every size: each column compares the
    store's costs at one size with another, not kept objects against parsed ones.
    """
    limits = sos_kernel.BusLimits(retention_count_max=stored)
    address = "agent:store"
    async with sos_kernel.open(url, limits=limits) as kernel:
        receipts: list[sos_kernel.PublishReceipt] = []
        for _ in range(0, stored, 1000):
            receipts = await kernel.bus.publish_many(messages(1000, target=address))
        newest_after = receipts[-51].position
        started = time.perf_counter()
        for _ in range(N_COST):
            await kernel.bus.history(address, after=newest_after, limit=50)
        newest_us = (time.perf_counter() - started) / N_COST * 1e6
        for _ in range(0, KEPT_MESSAGES_MAX, 512):
            await kernel.bus.publish_many(messages(512, target="agent:filler"))
        started = time.perf_counter()
        for _ in range(N_COST):
            await kernel.bus.history(address, limit=50)
        oldest_us = (time.perf_counter() - started) / N_COST * 1e6
        async with kernel.bus.subscribe(address, prefetch=1) as sub:
            started = time.perf_counter()
            for _ in range(N_COST):
                d = await sub.receive()
                assert d is not None
                await d.ack()
            consume_us = (time.perf_counter() - started) / N_COST * 1e6
    return oldest_us, newest_us, consume_us


# --- the run -----------------------------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> float:
    return pct(values, q) * 1000


async def ask_rows(tmp: Path, redis_url: str | None) -> list[str]:
    head = f"{'ask/reply round trip':<22} {'p50 ms':>8} {'p99 ms':>8} {'raw p50':>8} {'raw p99':>8} {'rate':>6}"
    lines = [head + f" {'cpu µs':>7} {'raw cpu':>7} {'cpu rate':>8}"]
    cases: list[tuple[str, Sample, Sample]] = [
        ("memory", lambda: ask_ours("memory://"), ask_raw_memory),
    ]
    counter = iter(range(1_000_000))

    async def sqlite_ours() -> list[float]:
        return await ask_ours(f"sqlite:///{tmp}/ask-{next(counter)}.db")

    async def sqlite_raw() -> list[float]:
        return await anyio.to_thread.run_sync(ask_raw_sqlite_sync, tmp / f"raw-{next(counter)}.db")

    cases.append(("sqlite", sqlite_ours, sqlite_raw))
    if redis_url is not None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url, max_connections=1000)
        cases.append(("redis", lambda: ask_ours(redis_url), lambda: ask_raw_redis(client)))
    for name, ours, raw in cases:
        a, b, cpu_a, cpu_b = await interleaved(ours, raw)
        rate = _ms(b, 0.5) / _ms(a, 0.5)
        ours_ms = f"{_ms(a, 0.5):>8.3f} {_ms(a, 0.99):>8.3f}"
        cpu = f"{cpu_a * 1e6:>7.0f} {cpu_b * 1e6:>7.0f} {cpu_b / cpu_a:>7.2f}x"
        lines.append(f"{name:<22} {ours_ms} {_ms(b, 0.5):>8.3f} {_ms(b, 0.99):>8.3f} {rate:>5.2f}x {cpu}")
    if redis_url is not None:
        await client.aclose()
    return lines


async def redis_rows(url: str) -> list[str]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, max_connections=1000)
    await client.flushdb()
    tags = iter(range(1_000_000))
    lines = [
        f"{'redis group':<22} {'ours msg/s':>10} {'raw msg/s':>10} {'ratio':>6} {'ours cpu µs':>11} {'raw cpu µs':>10}"
    ]
    for consumers in (1, 4):
        ours: list[tuple[float, float]] = []
        raw: list[tuple[float, float]] = []
        for _ in range(ROUNDS):  # interleaved: ours, then raw
            ours.append(await group_ours(url, consumers, str(next(tags))))
            raw.append(await group_raw(client, consumers, str(next(tags))))
        o, r = statistics.median(x for x, _ in ours), statistics.median(x for x, _ in raw)
        oc, rc = statistics.median(c for _, c in ours), statistics.median(c for _, c in raw)
        row = f"{o:>10,.0f} {r:>10,.0f} {o / r:>5.2f}x {oc:>11,.0f} {rc:>10,.0f}"
        lines.append(f"{f'{consumers} consumer(s)':<22} {row}")
    lines.append(f"{'redis fan-out':<22} {'ours ms':>10} {'raw ms':>10} {'ratio':>6}")
    for subscribers in (1, 10, 100):
        ours_s: list[float] = []
        raw_s: list[float] = []
        for _ in range(ROUNDS):
            ours_s.append(await fan_ours(url, subscribers, str(next(tags))))
            raw_s.append(await fan_raw(client, subscribers, str(next(tags))))
        o, r = statistics.median(ours_s) * 1000, statistics.median(raw_s) * 1000
        lines.append(f"{f'{subscribers} subscriber(s)':<22} {o:>10.1f} {r:>10.1f} {o / r:>5.2f}x")
    await client.flushdb()
    await client.aclose()
    return lines


async def cost_rows(tmp: Path) -> list[str]:
    head = f"{'stored on the address':<22} {'history(50) oldest µs':>22} {'newest µs':>10} {'consume+ack µs':>15}"
    lines = [head]
    for name in ("memory", "sqlite"):
        for stored in STORED:
            url = "memory://" if name == "memory" else f"sqlite:///{tmp}/cost-{stored}.db"
            h, n, c = await costs(url, stored)
            lines.append(f"{f'{name} {stored:,}':<22} {h:>22.1f} {n:>10.1f} {c:>15.1f}")
    return lines


async def run_all(tmp: Path, redis_url: str | None) -> list[str]:
    lines = await ask_rows(tmp, redis_url)
    if redis_url is not None:
        lines += [""] + await redis_rows(redis_url)
    return lines + [""] + await cost_rows(tmp)


def main() -> None:
    """Run every case and print the tables."""
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        if url is None:
            print("(redis-server not found; set SOS_BENCH_REDIS_URL to add the redis rows)")
        print("\n".join(anyio.run(run_all, Path(tmp), url)))


if __name__ == "__main__":
    main()
