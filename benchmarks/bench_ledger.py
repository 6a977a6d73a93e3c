"""Ledger transfers on SQLite and Redis against the raw floor they are built on, measured in the same run.

- sqlite single: ``Ledger.transfer`` (one ``BEGIN IMMEDIATE`` transaction each) against a bare ``sqlite3``
  transaction of the same shape — read the debit balance and check it, insert the transfer row under its id (the
  primary key is the idempotency check), update both balances — with the same file settings (WAL,
  synchronous=NORMAL).
- sqlite batched: ``Ledger.transfer_many`` of 100 against the same 100 steps in one bare transaction.
- sqlite random pairs over 10 and 100k accounts: ``Ledger.transfer`` between two accounts drawn at random (the same
  seeded draws on both sides) against the raw single transfer over the same accounts; every account is opened and
  funded before the timed run (once, then the file is copied for each round).
- sqlite paid invocation: ``Skills.record_invocation`` of a priced skill (a three-way split) against
  ``Ledger.transfer_many`` of the same three transfers, the linked batch it records.
- redis single: ``Ledger.transfer`` (one ``EVALSHA`` of the ledger script) against ``EVALSHA`` of a minimal script
  doing the same: refuse a known id, check the balance, ``HINCRBY`` both accounts, ``HSET`` the transfer.

Rounds are interleaved (ours, then raw, ROUNDS times, each on a fresh database), so a burst of load on a noisy
machine hits a case and its floor alike; the table shows median rates, the median of the per-round ratios and
their range. On the 2-core VMs these run on, one SQLite round's ratio moves by ±20% (a commit now and then waits
on a checkpoint's fsync), hence nine rounds.

A single SQLite transfer's commit costs in proportion to the pages it writes to the WAL: two lines under the table
count the pages each side writes per single transfer (alice → bob, and between random accounts among 100k), in an
untimed run with automatic checkpoints off.

Targets (ledger issue): every ratio ≥ 0.5x; random pairs over 100k accounts ≥ 0.45x; a paid invocation ≥ 0.5x of
the linked batch of three. Redis: ``SOS_BENCH_REDIS_URL`` if set, else a ``redis-server`` from
PATH on a free loopback port (``bench_bus.redis_server``).
"""

from __future__ import annotations

import itertools
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import sos_kernel

from .bench_bus import redis_server

N_SINGLE = 4000
N_BATCHED = 20_000
BATCH = 100
ROUNDS = 9
USD = "USD"
FUNDS = 10**12

Row = tuple[str, float, float, float, str, tuple[float, float]]


async def timed(fn: Callable[[], Awaitable[int]]) -> float:
    """Transfers per second of one run of ``fn`` (which returns how many it made)."""
    started = time.perf_counter()
    count = await fn()
    return count / (time.perf_counter() - started)


Make = Callable[[], Awaitable[Callable[[], Awaitable[int]]]]
"""Prepares one run (untimed: a fresh database, funded accounts) and returns it."""


async def paired(name: str, ours: Make, raw: Make, target: str) -> Row:
    """ROUNDS interleaved runs of ours and raw: median rates and the median of the per-round ratios."""
    ours_rates, raw_rates = [], []
    for _ in range(ROUNDS):
        ours_rates.append(await timed(await ours()))
        raw_rates.append(await timed(await raw()))
    ratios = [o / r for o, r in zip(ours_rates, raw_rates, strict=True)]
    spread = (min(ratios), max(ratios))
    return name, statistics.median(ours_rates), statistics.median(raw_rates), statistics.median(ratios), target, spread


async def funded(url: str) -> sos_kernel.Kernel:
    """An open kernel whose ledger has alice (funded) and bob; the caller closes it."""
    kernel = await sos_kernel.open(url)
    ledger = kernel.ledger
    await ledger.open_account("system:mint", USD, allow_negative=True)
    for owner in ("agent:alice", "agent:bob"):
        await ledger.open_account(owner, USD)
    await ledger.transfer(id="fund", debit="system:mint", credit="agent:alice", amount=FUNDS, currency=USD)
    return kernel


def ours_single(url: Callable[[], str], n: int) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        kernel = await funded(url())
        ledger = kernel.ledger

        async def run() -> int:
            for i in range(n):
                await ledger.transfer(id=f"t{i}", debit="agent:alice", credit="agent:bob", amount=7, currency=USD)
            await kernel.aclose()
            return n

        return run

    return make


def ours_batched(url: Callable[[], str], n: int) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        kernel = await funded(url())
        ledger = kernel.ledger
        leg = {"debit": "agent:alice", "credit": "agent:bob", "amount": 7, "currency": USD}
        batches = [[{"id": f"t{i + j}", **leg} for j in range(BATCH)] for i in range(0, n, BATCH)]

        async def run() -> int:
            for batch in batches:
                await ledger.transfer_many(batch)
            await kernel.aclose()
            return n

        return run

    return make


# --- sqlite ------------------------------------------------------------------------------------------------------


def _raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE accounts (owner TEXT PRIMARY KEY, balance INTEGER NOT NULL) WITHOUT ROWID")
    conn.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY, debit TEXT, credit TEXT, amount INTEGER) WITHOUT ROWID")
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [("agent:alice", FUNDS), ("agent:bob", 0)])
    return conn


def _raw_transfer(
    conn: sqlite3.Connection, transfer_id: str, amount: int, debit: str = "agent:alice", credit: str = "agent:bob"
) -> None:
    """The floor of one transfer: check the debit balance, insert under the id, update both balances."""
    (balance,) = conn.execute("SELECT balance FROM accounts WHERE owner=?", (debit,)).fetchone()
    if balance < amount:
        raise RuntimeError("insufficient funds")
    conn.execute("INSERT INTO transfers VALUES (?, ?, ?, ?)", (transfer_id, debit, credit, amount))
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE owner=?", (amount, debit))
    conn.execute("UPDATE accounts SET balance = balance + ? WHERE owner=?", (amount, credit))


def raw_sqlite(path: Callable[[], Path], n: int, per_tx: int) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        conn = _raw_db(path())

        async def run() -> int:
            for start in range(0, n, per_tx):
                conn.execute("BEGIN IMMEDIATE")
                for i in range(start, start + per_tx):
                    _raw_transfer(conn, f"t{i}", 7)
                conn.execute("COMMIT")
            conn.close()
            return n

        return run

    return make


# --- random pairs over many accounts ---------------------------------------------------------------------------

FUND_BATCH = 1000
ACCOUNT_FUNDS = 10**9
SEED = 27


def owners(count: int) -> list[str]:
    return [f"agent:a{i}" for i in range(count)]


def draws(count: int, n: int) -> list[tuple[str, str]]:
    """``n`` random (debit, credit) pairs of distinct accounts among ``count``, the same on every call."""
    rng, names = random.Random(SEED), owners(count)
    return [tuple(rng.sample(names, 2)) for _ in range(n)]  # type: ignore[misc]


async def many_accounts(path: Path, count: int) -> None:
    """A ledger file with ``count`` funded accounts (untimed, made once per size)."""
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        ledger = kernel.ledger
        await ledger.open_account("system:mint", USD, allow_negative=True)
        names = owners(count)
        for owner in names:
            await ledger.open_account(owner, USD)
        for start in range(0, count, FUND_BATCH):
            batch = [
                {"id": f"fund-{o}", "debit": "system:mint", "credit": o, "amount": ACCOUNT_FUNDS, "currency": USD}
                for o in names[start : start + FUND_BATCH]
            ]
            await ledger.transfer_many(batch)


def raw_many(path: Path, count: int) -> None:
    conn = _raw_db(path)
    conn.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?)", [(o, ACCOUNT_FUNDS) for o in owners(count)])
    conn.close()


def ours_random(template: Path, copies: Callable[[], Path], pairs: list[tuple[str, str]]) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        path = copies()
        shutil.copyfile(template, path)
        kernel = await sos_kernel.open(f"sqlite:///{path}")
        ledger = kernel.ledger

        async def run() -> int:
            for i, (debit, credit) in enumerate(pairs):
                await ledger.transfer(id=f"t{i}", debit=debit, credit=credit, amount=7, currency=USD)
            await kernel.aclose()
            return len(pairs)

        return run

    return make


def raw_random(template: Path, copies: Callable[[], Path], pairs: list[tuple[str, str]]) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        path = copies()
        shutil.copyfile(template, path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")

        async def run() -> int:
            for i, (debit, credit) in enumerate(pairs):
                conn.execute("BEGIN IMMEDIATE")
                _raw_transfer(conn, f"t{i}", 7, debit, credit)
                conn.execute("COMMIT")
            conn.close()
            return len(pairs)

        return run

    return make


async def random_rows(tmp: Path) -> list[Row]:
    counter = itertools.count()
    rows = []
    for count, label in ((10, "10"), (100_000, "100k")):
        ours_template, raw_template = tmp / f"many-ours-{count}.db", tmp / f"many-raw-{count}.db"
        await many_accounts(ours_template, count)
        raw_many(raw_template, count)
        pairs = draws(count, N_SINGLE)

        def copy() -> Path:
            return tmp / f"copy-{next(counter)}.db"

        target = "≥ 0.45x" if count >= 100_000 else "(for reading)"
        ours, raw = ours_random(ours_template, copy, pairs), raw_random(raw_template, copy, pairs)
        rows.append(await paired(f"sqlite transfer, random of {label}", ours, raw, target))
    return rows


# --- paid skill invocation -----------------------------------------------------------------------------------

N_INVOCATIONS = 1000
SKILL_CARD = {
    "schema_version": "1",
    "id": "bench-skill",
    "name": "Bench",
    "version": "1.0.0",
    "author_agent": "agent:author",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "bench.py"},
    "commerce": {
        "price_per_call_micros": 1_000,
        "currency": USD,
        "marketplace_listed": True,
        "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
    },
}
SPLIT = (("agent:author", 850), ("system:operator", 100), ("system:network", 50))


async def skill_kernel(url: str) -> sos_kernel.Kernel:
    """A kernel with the priced skill published, its caller funded and every receiving account open."""
    kernel = await sos_kernel.open(url)
    ledger = kernel.ledger
    await ledger.open_account("system:mint", USD, allow_negative=True)
    for owner in ("agent:caller", *(o for o, _ in SPLIT)):
        await ledger.open_account(owner, USD)
    await ledger.transfer(id="fund", debit="system:mint", credit="agent:caller", amount=FUNDS, currency=USD)
    await kernel.skills.publish(SKILL_CARD)
    return kernel


def ours_invocations(url: Callable[[], str], n: int) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        kernel = await skill_kernel(url())
        skills = kernel.skills

        async def run() -> int:
            for i in range(n):
                await skills.record_invocation(
                    "bench-skill", caller="agent:caller", tenant="default", invocation_id=f"i{i}"
                )
            await kernel.aclose()
            return n

        return run

    return make


def split_batches(url: Callable[[], str], n: int) -> Make:
    async def make() -> Callable[[], Awaitable[int]]:
        kernel = await skill_kernel(url())
        ledger = kernel.ledger
        batches = [
            [
                {"id": f"b{i}:{k}", "debit": "agent:caller", "credit": owner, "amount": amount, "currency": USD}
                for k, (owner, amount) in enumerate(SPLIT)
            ]
            for i in range(n)
        ]

        async def run() -> int:
            for batch in batches:
                await ledger.transfer_many(batch)
            await kernel.aclose()
            return n

        return run

    return make


async def invocation_rows(tmp: Path) -> list[Row]:
    counter = itertools.count()

    def url() -> str:
        return f"sqlite:///{tmp}/skill-{next(counter)}.db"

    ours, floor = ours_invocations(url, N_INVOCATIONS), split_batches(url, N_INVOCATIONS)
    return [await paired("sqlite paid invocation / batch of 3", ours, floor, "≥ 0.5x")]


N_PAGES = 1000


def _checkpoints_off(conn: sqlite3.Connection) -> int:
    """Empty the WAL and stop automatic checkpoints, so the WAL keeps every page written; returns the page size."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (page_bytes,) = conn.execute("PRAGMA page_size").fetchone()
    return int(page_bytes)


def _wal_frames(wal: Path, page_bytes: int) -> float:
    return (wal.stat().st_size - 32) / (page_bytes + 24)  # a 32-byte header, then a 24-byte header per frame


async def sqlite_pages(tmp: Path) -> tuple[float, float]:
    """WAL pages written per single transfer (untimed): ours, then the raw floor's."""
    kernel = await funded(f"sqlite:///{tmp}/pages-ours.db")
    page_bytes = _checkpoints_off(kernel.backend.engine.conn)
    for i in range(N_PAGES):
        await kernel.ledger.transfer(id=f"t{i}", debit="agent:alice", credit="agent:bob", amount=7, currency=USD)
    ours = _wal_frames(tmp / "pages-ours.db-wal", page_bytes)
    await kernel.aclose()
    conn = _raw_db(tmp / "pages-raw.db")
    page_bytes = _checkpoints_off(conn)
    for i in range(N_PAGES):
        conn.execute("BEGIN IMMEDIATE")
        _raw_transfer(conn, f"t{i}", 7)
        conn.execute("COMMIT")
    raw = _wal_frames(tmp / "pages-raw.db-wal", page_bytes)
    conn.close()
    return ours / N_PAGES, raw / N_PAGES


N_RANDOM_PAGES = 2000
RANDOM_PAGES_ACCOUNTS = 100_000


async def random_pages(tmp: Path, count: int = RANDOM_PAGES_ACCOUNTS) -> tuple[float, float]:
    """WAL pages written per transfer between random accounts among ``count`` (untimed, checkpoints off): ours,
    then the raw floor's, each on a copy of the funded file ``random_rows`` made in ``tmp`` (made here if absent)."""
    ours_template, raw_template = tmp / f"many-ours-{count}.db", tmp / f"many-raw-{count}.db"
    if not ours_template.exists():
        await many_accounts(ours_template, count)
    if not raw_template.exists():
        raw_many(raw_template, count)
    pairs = draws(count, N_RANDOM_PAGES)
    ours_path, raw_path = tmp / "pages-random-ours.db", tmp / "pages-random-raw.db"
    shutil.copyfile(ours_template, ours_path)
    shutil.copyfile(raw_template, raw_path)
    async with sos_kernel.open(f"sqlite:///{ours_path}") as kernel:
        page_bytes = _checkpoints_off(kernel.backend.engine.conn)
        for i, (debit, credit) in enumerate(pairs):
            await kernel.ledger.transfer(id=f"t{i}", debit=debit, credit=credit, amount=7, currency=USD)
        ours = _wal_frames(Path(f"{ours_path}-wal"), page_bytes)
    conn = sqlite3.connect(raw_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    page_bytes = _checkpoints_off(conn)
    for i, (debit, credit) in enumerate(pairs):
        conn.execute("BEGIN IMMEDIATE")
        _raw_transfer(conn, f"t{i}", 7, debit, credit)
        conn.execute("COMMIT")
    raw = _wal_frames(Path(f"{raw_path}-wal"), page_bytes)
    conn.close()
    return ours / N_RANDOM_PAGES, raw / N_RANDOM_PAGES


async def sqlite_rates(tmp: Path) -> list[Row]:
    counter = itertools.count()

    def url() -> str:
        return f"sqlite:///{tmp}/ours-{next(counter)}.db"

    def raw_path() -> Path:
        return tmp / f"raw-{next(counter)}.db"

    return [
        await paired("sqlite transfer", ours_single(url, N_SINGLE), raw_sqlite(raw_path, N_SINGLE, 1), "≥ 0.5x"),
        await paired(
            f"sqlite transfer_many ({BATCH}/call)",
            ours_batched(url, N_BATCHED),
            raw_sqlite(raw_path, N_BATCHED, BATCH),
            "≥ 0.5x",
        ),
    ]


# --- redis -------------------------------------------------------------------------------------------------------

RAW_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local amount = tonumber(ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'b')) < amount then return -1 end
redis.call('HINCRBY', KEYS[1], 'b', -amount)
redis.call('HINCRBY', KEYS[2], 'b', amount)
redis.call('HSET', KEYS[3], 'debit', ARGV[2], 'credit', ARGV[3], 'amount', ARGV[1])
return 1
"""


async def redis_rates(url: str) -> list[Row]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    script: Any = client.register_script(RAW_SCRIPT)
    rounds = itertools.count()

    async def raw_make() -> Callable[[], Awaitable[int]]:
        r = next(rounds)
        await client.hset(f"raw{r}:alice", "b", FUNDS)
        await client.hset(f"raw{r}:bob", "b", 0)

        async def run() -> int:
            for i in range(N_SINGLE):
                keys = [f"raw{r}:alice", f"raw{r}:bob", f"raw{r}:t:{i}"]
                if await script(keys=keys, args=[7, "agent:alice", "agent:bob"]) != 1:
                    raise RuntimeError("raw transfer refused")
            return N_SINGLE

        return run

    async def ours_make() -> Callable[[], Awaitable[int]]:
        await client.flushdb()
        return await ours_single(lambda: url, N_SINGLE)()

    rows = [await paired("redis transfer", ours_make, raw_make, "≥ 0.5x")]
    await client.flushdb()
    await client.aclose()
    return rows


def render(rows: list[Row]) -> str:
    """The results table."""
    lines = [f"{'case':<34} {'ours /s':>10} {'raw /s':>10} {'ratio':>7}  {'rounds':<11}  target"]
    for name, ours, raw, ratio, target, (low, high) in rows:
        rounds = f"{low:.2f}-{high:.2f}x"
        lines.append(f"{name:<34} {ours:>10,.0f} {raw:>10,.0f} {ratio:>6.2f}x  {rounds:<11}  {target}")
    return "\n".join(lines)


def main() -> None:
    """Run every case and print one table."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = anyio.run(sqlite_rates, Path(tmp))
        rows += anyio.run(random_rows, Path(tmp))
        rows += anyio.run(invocation_rows, Path(tmp))
        pages = anyio.run(sqlite_pages, Path(tmp))
        random_page_counts = anyio.run(random_pages, Path(tmp))
    with redis_server() as url:
        if url is None:
            print("(redis-server not found; set SOS_BENCH_REDIS_URL to add the redis row)")
        else:
            rows += anyio.run(redis_rates, url)
    print(render(rows))
    print(f"sqlite WAL pages per single transfer: ours {pages[0]:.1f}, raw {pages[1]:.1f}")
    ours_random_pages, raw_random_pages = random_page_counts
    print(
        f"sqlite WAL pages per transfer, random of {RANDOM_PAGES_ACCOUNTS:,}:"
        f" ours {ours_random_pages:.1f}, raw {raw_random_pages:.1f}"
    )


if __name__ == "__main__":
    main()
