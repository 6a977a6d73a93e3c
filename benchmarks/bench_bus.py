"""The bus on each backend against the raw floor it is built on, measured in the same run.

- memory: publish → deliver → ack, against an anyio memory stream carrying the same bytes plus pydantic
  validation of them on the receiving side.
- sqlite: single publish, batched publish (100 per call) and consume+ack, against bare ``sqlite3`` transactions of
  the same shape (insert one row per transaction; 100 rows per transaction; claim a batch then delete each row in
  its own transaction), same file settings (WAL, synchronous=NORMAL).
- redis: single publish against a single ``XADD``; batched publish (100 per call) against a redis-py pipeline of
  100 ``XADD``; consume+ack against ``XREADGROUP COUNT 16`` plus one ``XACK`` per message — the same round trips a
  subscriber that acks each delivery makes.

Targets (issue "Kernel facade and the Bus"): redis batched ≥ 0.6x, consume+ack ≥ 0.6x, single publish ≥ 0.85x.
Redis: ``SOS_BENCH_REDIS_URL`` if set, else a ``redis-server`` from PATH on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Union

import anyio
from pydantic import Field, TypeAdapter

import sos_kernel
from sos_kernel.contracts import CORE_TYPES, SendMessage, SendPayload

N_SINGLE = 2000
N_BATCHED = 20_000
N_CONSUME = 5000
BATCH = 100
PREFETCH = 16
ROUNDS = 3


def messages(n: int, target: str = "agent:bench") -> list[bytes]:
    """``n`` distinct ~400-byte send messages as wire bytes."""
    text = "x" * 230
    return [
        SendMessage(source="agent:producer", target=target, payload=SendPayload(text=text)).to_json() for _ in range(n)
    ]


async def timed(fn: Callable[[], Awaitable[int]]) -> float:
    """Messages per second of one run of ``fn`` (which returns how many it handled)."""
    started = time.perf_counter()
    count = await fn()
    return count / (time.perf_counter() - started)


async def best_of(make: Callable[[], Callable[[], Awaitable[int]]]) -> float:
    """The median rate over ROUNDS fresh runs."""
    return statistics.median([await timed(make()) for _ in range(ROUNDS)])


# --- memory ------------------------------------------------------------------------------------------------------


async def memory_rates() -> list[tuple[str, float, float, str]]:
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[Union[tuple(CORE_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
    )

    def ours() -> Callable[[], Awaitable[int]]:
        data = messages(N_CONSUME)

        async def run() -> int:
            async with (
                sos_kernel.open("memory://") as kernel,
                kernel.bus.subscribe("agent:bench", prefetch=PREFETCH) as sub,
                anyio.create_task_group() as tg,
            ):

                async def produce() -> None:
                    for item in data:
                        await kernel.bus.publish(item)

                tg.start_soon(produce)
                for _ in data:
                    delivery = await sub.receive()
                    assert delivery is not None
                    await delivery.ack()
            return len(data)

        return run

    def raw() -> Callable[[], Awaitable[int]]:
        data = messages(N_CONSUME)

        async def run() -> int:
            send, receive = anyio.create_memory_object_stream[bytes](PREFETCH)
            async with anyio.create_task_group() as tg:

                async def produce() -> None:
                    async with send:
                        for item in data:
                            adapter.validate_json(item)
                            await send.send(item)

                tg.start_soon(produce)
                async with receive:
                    async for item in receive:
                        adapter.validate_json(item)
            return len(data)

        return run

    return [("memory publish→deliver→ack", await best_of(ours), await best_of(raw), "record")]


# --- sqlite ------------------------------------------------------------------------------------------------------


def _raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (pos INTEGER PRIMARY KEY AUTOINCREMENT, mid TEXT, data BLOB)")
    conn.execute("CREATE TABLE IF NOT EXISTS pending (pos INTEGER PRIMARY KEY)")
    return conn


async def sqlite_rates(tmp: Path) -> list[tuple[str, float, float, str]]:
    counter = iter(range(1_000_000))

    def url() -> str:
        return f"sqlite:///{tmp}/ours-{next(counter)}.db"

    def ours_single() -> Callable[[], Awaitable[int]]:
        data, where = messages(N_SINGLE), url()

        async def run() -> int:
            async with sos_kernel.open(where) as kernel:
                for item in data:
                    await kernel.bus.publish(item)
            return len(data)

        return run

    def raw_single() -> Callable[[], Awaitable[int]]:
        data, conn = messages(N_SINGLE), _raw_db(tmp / f"raw-{next(counter)}.db")

        async def run() -> int:
            for item in data:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (mid, data) VALUES (?, ?)", ("id", item))
                conn.execute("COMMIT")
            conn.close()
            return len(data)

        return run

    def ours_batched() -> Callable[[], Awaitable[int]]:
        data, where = messages(N_BATCHED), url()

        async def run() -> int:
            async with sos_kernel.open(where) as kernel:
                for i in range(0, len(data), BATCH):
                    await kernel.bus.publish_many(data[i : i + BATCH])
            return len(data)

        return run

    def raw_batched() -> Callable[[], Awaitable[int]]:
        data, conn = messages(N_BATCHED), _raw_db(tmp / f"raw-{next(counter)}.db")

        async def run() -> int:
            for i in range(0, len(data), BATCH):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO t (mid, data) VALUES (?, ?)", [("id", d) for d in data[i : i + BATCH]])
                conn.execute("COMMIT")
            conn.close()
            return len(data)

        return run

    async def filled_kernel(n: int) -> str:
        where = url()
        async with sos_kernel.open(where) as kernel:
            data = messages(n)
            for i in range(0, n, BATCH):
                await kernel.bus.publish_many(data[i : i + BATCH])
        return where

    async def ours_consume_factory() -> Callable[[], Awaitable[int]]:
        where = await filled_kernel(N_CONSUME)

        async def run() -> int:
            async with sos_kernel.open(where) as kernel, kernel.bus.subscribe("agent:bench", prefetch=PREFETCH) as sub:
                for _ in range(N_CONSUME):
                    delivery = await sub.receive()
                    assert delivery is not None
                    await delivery.ack()
            return N_CONSUME

        return run

    def raw_consume() -> Callable[[], Awaitable[int]]:
        conn = _raw_db(tmp / f"raw-{next(counter)}.db")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (mid, data) VALUES (?, ?)", [("id", d) for d in messages(N_CONSUME)])
        conn.execute("COMMIT")

        async def run() -> int:
            cursor, done = 0, 0
            while done < N_CONSUME:
                conn.execute("BEGIN IMMEDIATE")
                rows = conn.execute("SELECT pos, data FROM t WHERE pos > ? ORDER BY pos LIMIT ?", (cursor, PREFETCH))
                batch = rows.fetchall()
                conn.executemany("INSERT INTO pending VALUES (?)", [(p,) for p, _ in batch])
                conn.execute("COMMIT")
                for pos, _ in batch:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("DELETE FROM pending WHERE pos=?", (pos,))
                    conn.execute("COMMIT")
                cursor, done = batch[-1][0], done + len(batch)
            conn.close()
            return done

        return run

    consume_ours = statistics.median([await timed(await ours_consume_factory()) for _ in range(ROUNDS)])
    return [
        ("sqlite single publish", await best_of(ours_single), await best_of(raw_single), "record"),
        (f"sqlite batched publish ({BATCH}/call)", await best_of(ours_batched), await best_of(raw_batched), "record"),
        ("sqlite consume+ack", consume_ours, await best_of(raw_consume), "record"),
    ]


# --- redis -------------------------------------------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A Redis URL: SOS_BENCH_REDIS_URL, else a temporary redis-server, else None."""
    url = os.environ.get("SOS_BENCH_REDIS_URL")
    if url:
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            import redis

            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def redis_rates(url: str) -> list[tuple[str, float, float, str]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.flushdb()

    def ours_single() -> Callable[[], Awaitable[int]]:
        data = messages(N_SINGLE)

        async def run() -> int:
            async with sos_kernel.open(url) as kernel:
                for item in data:
                    await kernel.bus.publish(item)
            return len(data)

        return run

    def raw_single() -> Callable[[], Awaitable[int]]:
        data = messages(N_SINGLE)

        async def run() -> int:
            for item in data:
                await client.xadd("raw:single", {"d": item})
            return len(data)

        return run

    def ours_batched() -> Callable[[], Awaitable[int]]:
        data = messages(N_BATCHED)

        async def run() -> int:
            async with sos_kernel.open(url) as kernel:
                for i in range(0, len(data), BATCH):
                    await kernel.bus.publish_many(data[i : i + BATCH])
            return len(data)

        return run

    def raw_batched() -> Callable[[], Awaitable[int]]:
        data = messages(N_BATCHED)

        async def run() -> int:
            for i in range(0, len(data), BATCH):
                pipe = client.pipeline(transaction=False)
                for item in data[i : i + BATCH]:
                    pipe.xadd("raw:batched", {"d": item})
                await pipe.execute()
            return len(data)

        return run

    rounds = iter(range(1_000_000))

    async def ours_consume_factory() -> Callable[[], Awaitable[int]]:
        address = f"agent:consume-{next(rounds)}"
        data = messages(N_CONSUME, target=address)
        async with sos_kernel.open(url) as kernel:
            for i in range(0, len(data), BATCH):
                await kernel.bus.publish_many(data[i : i + BATCH])

        async def run() -> int:
            async with sos_kernel.open(url) as kernel, kernel.bus.subscribe(address, prefetch=PREFETCH) as sub:
                for _ in range(N_CONSUME):
                    delivery = await sub.receive()
                    assert delivery is not None
                    await delivery.ack()
            return N_CONSUME

        return run

    async def raw_consume_factory() -> Callable[[], Awaitable[int]]:
        key = f"raw:consume-{next(rounds)}"
        pipe = client.pipeline(transaction=False)
        for item in messages(N_CONSUME):
            pipe.xadd(key, {"d": item})
        await pipe.execute()
        await client.xgroup_create(key, "g", id="0")

        async def run() -> int:
            done = 0
            while done < N_CONSUME:
                reply = await client.xreadgroup("g", "c", {key: ">"}, count=PREFETCH)
                for entry_id, _ in reply[0][1]:
                    await client.xack(key, "g", entry_id)
                    done += 1
            return done

        return run

    consume_ours = statistics.median([await timed(await ours_consume_factory()) for _ in range(ROUNDS)])
    consume_raw = statistics.median([await timed(await raw_consume_factory()) for _ in range(ROUNDS)])
    rows = [
        ("redis single publish", await best_of(ours_single), await best_of(raw_single), "≥ 0.85x"),
        (f"redis batched publish ({BATCH}/call)", await best_of(ours_batched), await best_of(raw_batched), "≥ 0.6x"),
        ("redis consume+ack", consume_ours, consume_raw, "≥ 0.6x"),
    ]
    await client.flushdb()
    await client.aclose()
    return rows


def render(rows: list[tuple[str, float, float, str]]) -> str:
    """The results table."""
    lines = [f"{'case':<36} {'ours msg/s':>12} {'raw msg/s':>12} {'ratio':>7}  target"]
    for name, ours, raw, target in rows:
        lines.append(f"{name:<36} {ours:>12,.0f} {raw:>12,.0f} {ours / raw:>6.2f}x  {target}")
    return "\n".join(lines)


def main() -> None:
    """Run every backend's cases and print one table."""
    rows = anyio.run(memory_rates)
    with tempfile.TemporaryDirectory() as tmp:
        rows += anyio.run(sqlite_rates, Path(tmp))
    with redis_server() as url:
        if url is None:
            print("(redis-server not found; set SOS_BENCH_REDIS_URL to add the redis rows)")
        else:
            rows += anyio.run(redis_rates, url)
    print(render(rows))


if __name__ == "__main__":
    main()
