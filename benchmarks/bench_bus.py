"""The bus on each backend against the raw floor it is built on, measured in the same run.

- memory: publish → deliver → ack, against an anyio memory stream carrying the same bytes plus pydantic
  validation of them on the receiving side.
- sqlite: single publish, batched publish (100 per call) and consume+ack, against bare ``sqlite3`` transactions of
  the same shape (insert one row per transaction; 100 rows per transaction; claim a batch then delete each row in
  its own transaction), same file settings (WAL, synchronous=NORMAL); and publish → consume → ack of one message
  at a time (a subscriber receiving each message right after its publish) against the same three bare
  transactions per message (insert; claim; delete). Then, per message, the CPU time (``time.process_time``) and
  the WAL pages of ``publish`` and of publish → consume → ack, ours and the floor's (checkpoints off).
- redis: single publish against a single ``XADD``; batched publish (100 per call) against a redis-py pipeline of
  100 ``XADD``; consume+ack against ``XREADGROUP COUNT 16`` plus one ``XACK`` per message — the same round trips a
  subscriber that acks each delivery makes.

Rounds are interleaved (ours, then raw, ROUNDS times, each on a fresh kernel, file or key) and the table shows the
median rates. Setting a round up is not timed on either side: the kernel is opened before its run as the raw
client is connected before its own.

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
from contextlib import AsyncExitStack, contextmanager
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
ROUNDS = 5


def messages(n: int, target: str = "agent:bench") -> list[bytes]:
    """``n`` distinct ~400-byte send messages as wire bytes."""
    text = "x" * 230
    return [
        SendMessage(source="agent:producer", target=target, payload=SendPayload(text=text)).to_json() for _ in range(n)
    ]


async def stream_floor(data: list[bytes], buffer: int, adapter: TypeAdapter[Any]) -> int:
    """The in-process floor: ``data`` through an anyio memory stream of ``buffer``, each item validated by pydantic
    where it is sent and where it is received. Returns how many went through."""
    send, receive = anyio.create_memory_object_stream[bytes](buffer)
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


def _raw_take(conn: sqlite3.Connection, cursor: int) -> list[int]:
    """The raw floor's delivery: claim up to ``PREFETCH`` entries after ``cursor`` into a pending table in one
    transaction, then ack each in its own; returns their positions."""
    conn.execute("BEGIN IMMEDIATE")
    rows = conn.execute("SELECT pos, data FROM t WHERE pos > ? ORDER BY pos LIMIT ?", (cursor, PREFETCH))
    taken = [pos for pos, _ in rows.fetchall()]
    conn.executemany("INSERT INTO pending VALUES (?)", [(p,) for p in taken])
    conn.execute("COMMIT")
    for pos in taken:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM pending WHERE pos=?", (pos,))
        conn.execute("COMMIT")
    return taken


Run = Callable[[], Awaitable[int]]
Close = Callable[[], Awaitable[None]]
Make = Callable[[], Awaitable[tuple[Run, Close]]]
"""Sets one round up (a fresh kernel or connection, outside the timing) and gives its run and its teardown."""


async def _nothing() -> None:
    return None


async def timed(fn: Run) -> float:
    """Messages per second of one run of ``fn`` (which returns how many it handled)."""
    started = time.perf_counter()
    count = await fn()
    return count / (time.perf_counter() - started)


async def paired(ours: Make, raw: Make) -> tuple[float, float]:
    """ROUNDS interleaved rounds (ours, then raw, each set up afresh and untimed): the median rates."""
    ours_rates, raw_rates = [], []
    for _ in range(ROUNDS):
        for make, rates in ((ours, ours_rates), (raw, raw_rates)):
            run, close = await make()
            try:
                rates.append(await timed(run))
            finally:
                await close()
    return statistics.median(ours_rates), statistics.median(raw_rates)


def publish_body(data: list[bytes], per_call: int) -> Callable[[sos_kernel.Kernel], Run]:
    """A round that publishes ``data`` on a kernel: one ``publish`` each, or ``publish_many`` of ``per_call``."""

    def body(kernel: sos_kernel.Kernel) -> Run:
        async def run() -> int:
            if per_call == 1:
                for item in data:
                    await kernel.bus.publish(item)
            else:
                for i in range(0, len(data), per_call):
                    await kernel.bus.publish_many(data[i : i + per_call])
            return len(data)

        return run

    return body


async def on_kernel(url: str, body: Callable[[sos_kernel.Kernel], Run]) -> tuple[Run, Close]:
    """A round on a kernel opened (and later closed) outside the timed run, as the raw side's client is."""
    stack = AsyncExitStack()
    kernel = await stack.enter_async_context(sos_kernel.open(url))
    return body(kernel), stack.aclose


# --- memory ------------------------------------------------------------------------------------------------------


async def memory_rates() -> list[tuple[str, float, float, str]]:
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[Union[tuple(CORE_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
    )

    async def ours() -> tuple[Run, Close]:
        data = messages(N_CONSUME)

        def body(kernel: sos_kernel.Kernel) -> Run:
            async def run() -> int:
                async with (
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

        return await on_kernel("memory://", body)

    async def raw() -> tuple[Run, Close]:
        data = messages(N_CONSUME)

        async def run() -> int:
            return await stream_floor(data, PREFETCH, adapter)

        return run, _nothing

    return [("memory publish→deliver→ack", *await paired(ours, raw), "record")]


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

    def publishing(n: int, per_call: int) -> Callable[[sos_kernel.Kernel], Run]:
        return publish_body(messages(n), per_call)

    async def ours_single() -> tuple[Run, Close]:
        return await on_kernel(url(), publishing(N_SINGLE, 1))

    async def ours_batched() -> tuple[Run, Close]:
        return await on_kernel(url(), publishing(N_BATCHED, BATCH))

    def raw_inserts(n: int, per_tx: int) -> Make:
        async def make() -> tuple[Run, Close]:
            data, conn = messages(n), _raw_db(tmp / f"raw-{next(counter)}.db")

            async def run() -> int:
                for i in range(0, len(data), per_tx):
                    conn.execute("BEGIN IMMEDIATE")
                    if per_tx == 1:
                        conn.execute("INSERT INTO t (mid, data) VALUES (?, ?)", ("id", data[i]))
                    else:
                        rows = [("id", d) for d in data[i : i + per_tx]]
                        conn.executemany("INSERT INTO t (mid, data) VALUES (?, ?)", rows)
                    conn.execute("COMMIT")
                return len(data)

            async def close() -> None:
                conn.close()

            return run, close

        return make

    async def ours_consume() -> tuple[Run, Close]:
        where = url()
        async with sos_kernel.open(where) as kernel:
            data = messages(N_CONSUME)
            for i in range(0, N_CONSUME, BATCH):
                await kernel.bus.publish_many(data[i : i + BATCH])

        def body(kernel: sos_kernel.Kernel) -> Run:
            async def run() -> int:
                async with kernel.bus.subscribe("agent:bench", prefetch=PREFETCH) as sub:
                    for _ in range(N_CONSUME):
                        delivery = await sub.receive()
                        assert delivery is not None
                        await delivery.ack()
                return N_CONSUME

            return run

        return await on_kernel(where, body)

    async def raw_consume() -> tuple[Run, Close]:
        conn = _raw_db(tmp / f"raw-{next(counter)}.db")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (mid, data) VALUES (?, ?)", [("id", d) for d in messages(N_CONSUME)])
        conn.execute("COMMIT")

        async def run() -> int:
            cursor, done = 0, 0
            while done < N_CONSUME:
                taken = _raw_take(conn, cursor)
                cursor, done = taken[-1], done + len(taken)
            return done

        async def close() -> None:
            conn.close()

        return run, close

    async def ours_end_to_end() -> tuple[Run, Close]:
        def body(kernel: sos_kernel.Kernel) -> Run:
            async def run() -> int:
                data = messages(N_SINGLE)
                async with kernel.bus.subscribe("agent:bench", prefetch=PREFETCH) as sub:
                    for item in data:
                        await kernel.bus.publish(item)
                        delivery = await sub.receive()
                        assert delivery is not None
                        await delivery.ack()
                return N_SINGLE

            return run

        return await on_kernel(url(), body)

    async def raw_end_to_end() -> tuple[Run, Close]:
        conn = _raw_db(tmp / f"raw-{next(counter)}.db")
        data = messages(N_SINGLE)

        async def run() -> int:
            cursor = 0
            for item in data:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (mid, data) VALUES (?, ?)", ("id", item))
                conn.execute("COMMIT")
                cursor = _raw_take(conn, cursor)[-1]
            return len(data)

        async def close() -> None:
            conn.close()

        return run, close

    return [
        ("sqlite single publish", *await paired(ours_single, raw_inserts(N_SINGLE, 1)), "record"),
        (
            f"sqlite batched publish ({BATCH}/call)",
            *await paired(ours_batched, raw_inserts(N_BATCHED, BATCH)),
            "record",
        ),
        ("sqlite consume+ack", *await paired(ours_consume, raw_consume), "record"),
        ("sqlite publish→consume→ack", *await paired(ours_end_to_end, raw_end_to_end), "≥ 0.6x"),
    ]


N_COSTS = 2000
WARM = 50


def _checkpoints_off(conn: sqlite3.Connection) -> int:
    """Empty the WAL and stop automatic checkpoints, so the WAL keeps every frame written; the page size."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


def _wal_frames(db: Path, page_bytes: int) -> int:
    return (Path(f"{db}-wal").stat().st_size - 32) // (page_bytes + 24)  # a 32-byte header, 24 bytes per frame


async def _ours_cost(db: Path, end_to_end: bool) -> tuple[float, float]:
    """CPU µs and WAL pages per message of ours: ``publish`` alone, or publish → receive → ack one at a time."""
    data = messages(N_COSTS + WARM)
    async with AsyncExitStack() as stack:
        kernel = await stack.enter_async_context(sos_kernel.open(f"sqlite:///{db}"))
        sub = await stack.enter_async_context(kernel.bus.subscribe("agent:bench")) if end_to_end else None
        for i, item in enumerate(data):
            if i == WARM:
                page_bytes = _checkpoints_off(kernel.backend.engine.conn)  # type: ignore[attr-defined]
                started = time.process_time()
            await kernel.bus.publish(item)
            if sub is not None:
                delivery = await sub.receive()
                assert delivery is not None
                await delivery.ack()
        cpu = time.process_time() - started
        return cpu / N_COSTS * 1e6, _wal_frames(db, page_bytes) / N_COSTS


def _raw_cost(db: Path, end_to_end: bool) -> tuple[float, float]:
    """The same for the raw floor: an insert per message, then (end to end) its claim and ack transactions."""
    conn, cursor = _raw_db(db), 0
    for i, item in enumerate(messages(N_COSTS + WARM)):
        if i == WARM:
            page_bytes = _checkpoints_off(conn)
            started = time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (mid, data) VALUES (?, ?)", ("id", item))
        conn.execute("COMMIT")
        if end_to_end:
            cursor = _raw_take(conn, cursor)[-1]
    cpu = time.process_time() - started
    frames = _wal_frames(db, page_bytes)
    conn.close()
    return cpu / N_COSTS * 1e6, frames / N_COSTS


async def sqlite_costs(tmp: Path) -> str:
    """CPU time (``time.process_time``) and WAL pages per message, ours and the raw floor's, one run of each
    (untimed by the clock; checkpoints off so that the WAL keeps every page a commit wrote)."""
    head = f"{'ours CPU µs':>12} {'raw CPU µs':>11} {'ratio':>6} {'ours WAL':>9} {'raw WAL':>8}"
    lines = [f"{'sqlite per message':<28} {head}"]
    for name, end_to_end in (("publish", False), ("publish→consume→ack", True)):
        ours = await _ours_cost(tmp / f"cost-ours-{end_to_end}.db", end_to_end)
        raw = _raw_cost(tmp / f"cost-raw-{end_to_end}.db", end_to_end)
        lines.append(
            f"{name:<28} {ours[0]:>12.1f} {raw[0]:>11.1f} {raw[0] / ours[0]:>5.2f}x {ours[1]:>9.2f} {raw[1]:>8.2f}"
        )
    return "\n".join(lines)


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
    rounds = iter(range(1_000_000))

    def publishing(n: int, per_call: int) -> Make:
        async def make() -> tuple[Run, Close]:
            return await on_kernel(url, publish_body(messages(n), per_call))

        return make

    def raw_xadds(n: int, per_call: int) -> Make:
        async def make() -> tuple[Run, Close]:
            data = messages(n)

            async def run() -> int:
                if per_call == 1:
                    for item in data:
                        await client.xadd("raw:single", {"d": item})
                else:
                    for i in range(0, len(data), per_call):
                        pipe = client.pipeline(transaction=False)
                        for item in data[i : i + per_call]:
                            pipe.xadd("raw:batched", {"d": item})
                        await pipe.execute()
                return len(data)

            return run, _nothing

        return make

    async def ours_consume() -> tuple[Run, Close]:
        address = f"agent:consume-{next(rounds)}"
        data = messages(N_CONSUME, target=address)
        async with sos_kernel.open(url) as kernel:
            for i in range(0, len(data), BATCH):
                await kernel.bus.publish_many(data[i : i + BATCH])

        def body(kernel: sos_kernel.Kernel) -> Run:
            async def run() -> int:
                async with kernel.bus.subscribe(address, prefetch=PREFETCH) as sub:
                    for _ in range(N_CONSUME):
                        delivery = await sub.receive()
                        assert delivery is not None
                        await delivery.ack()
                return N_CONSUME

            return run

        return await on_kernel(url, body)

    async def raw_consume() -> tuple[Run, Close]:
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

        return run, _nothing

    rows = [
        ("redis single publish", *await paired(publishing(N_SINGLE, 1), raw_xadds(N_SINGLE, 1)), "≥ 0.85x"),
        (
            f"redis batched publish ({BATCH}/call)",
            *await paired(publishing(N_BATCHED, BATCH), raw_xadds(N_BATCHED, BATCH)),
            "≥ 0.6x",
        ),
        ("redis consume+ack", *await paired(ours_consume, raw_consume), "≥ 0.6x"),
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
        costs = anyio.run(sqlite_costs, Path(tmp))
    with redis_server() as url:
        if url is None:
            print("(redis-server not found; set SOS_BENCH_REDIS_URL to add the redis rows)")
        else:
            rows += anyio.run(redis_rates, url)
    print(render(rows))
    print(costs)


if __name__ == "__main__":
    main()
