"""``check()`` must fail on a broken ledger: each engine's stored state is corrupted directly (a balance moved
without a transfer, a statement entry dropped or added; on SQLite also its id table) and ``check()`` must raise
SOS-6099 naming the account or the id."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from typing import Any

import pytest
import redis.asyncio as aioredis

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.backends.sqlite_ledger import SEQ_BITS, STATEMENT_BLOCK
from sos_kernel.errors import InvariantViolation

from ..conftest import Api, OpenApi, requires
from ..redis_cluster import async_client

pytestmark = pytest.mark.anyio

USD = "USD"
TRANSFERS = STATEMENT_BLOCK + 6  # past one block and one anchor of SQLite's, so entered records are corrupted too


async def funded(kernel: Api) -> None:
    led = kernel.ledger
    await led.open_account("system:treasury", USD, allow_negative=True)
    await led.open_account("agent:alice", USD)
    await led.open_account("agent:bob", USD)
    for i in range(TRANSFERS):
        await led.transfer(id=f"t{i}", debit="system:treasury", credit="agent:alice", amount=10, currency=USD)
    await led.transfer(id="to-bob", debit="agent:alice", credit="agent:bob", amount=5, currency=USD)
    await led.check()  # sound before the corruption


Corrupt = Callable[[sos_kernel.Kernel, str], Awaitable[None]]


async def _sqlite(kernel_url: str, sql: str) -> None:
    db = sqlite3.connect(kernel_url.removeprefix("sqlite:///"))
    with db:
        changed = db.execute(sql).rowcount
    db.close()
    if changed != 1:
        raise RuntimeError(f"the corruption changed {changed} rows: {sql}")


async def balance_moved(kernel: sos_kernel.Kernel, kernel_url: str) -> None:
    store: Any = kernel.backend.ledger
    if kernel_url.startswith("memory"):
        store._accounts[("default", "agent:bob", USD)][1].credits_posted += 1
    elif kernel_url.startswith("sqlite"):
        await _sqlite(kernel_url, "UPDATE ledger_accounts SET cp = cp + 1 WHERE owner = 'agent:bob'")
    else:
        client = async_client(kernel_url)
        await client.hincrby("sos:{t:default}:acct:agent:bob:USD", "cp", 1)
        await client.aclose()


async def statement_entry_dropped(kernel: sos_kernel.Kernel, kernel_url: str) -> None:
    store: Any = kernel.backend.ledger
    if kernel_url.startswith("memory"):
        store._history[("default", "agent:alice", USD)].pop(0)
    elif kernel_url.startswith("sqlite"):
        # alice's second record no longer links to her first
        await _sqlite(kernel_url, "UPDATE ledger_records SET cprev = 0 WHERE id = 't1'")
    else:
        client = async_client(kernel_url)
        if await client.zrem("sos:{t:default}:hist:agent:alice:USD", "t0") != 1:
            raise RuntimeError("no statement entry to drop")
        await client.aclose()


async def statement_entry_added(kernel: sos_kernel.Kernel, kernel_url: str) -> None:
    store: Any = kernel.backend.ledger
    if kernel_url.startswith("memory"):
        store._history[("default", "agent:bob", USD)].insert(0, "t0")
    elif kernel_url.startswith("sqlite"):
        # bob's only record links to a record of alice's
        await _sqlite(
            kernel_url,
            f"UPDATE ledger_records SET cprev = (SELECT k % {1 << SEQ_BITS} FROM ledger_records WHERE id = 't0')"
            " WHERE id = 'to-bob'",
        )
    else:
        client = async_client(kernel_url)
        await client.zadd("sos:{t:default}:hist:agent:bob:USD", {"t0": 1})
        await client.aclose()


async def check_names(kernel_url: str, corrupt: Corrupt, detail: str, expected: str) -> None:
    """Fund a ledger, ``corrupt`` it, and expect ``check()`` to raise SOS-6099 with ``details[detail] == expected``."""
    async with sos_kernel.open(kernel_url) as kernel:
        await funded(kernel)
        await corrupt(kernel, kernel_url)
        with pytest.raises(InvariantViolation) as info:
            await kernel.ledger.check()
        assert info.value.code == "SOS-6099"
        assert info.value.details[detail] == expected


@pytest.mark.parametrize(
    ("corrupt", "owner"),
    [(balance_moved, "agent:bob"), (statement_entry_dropped, "agent:alice"), (statement_entry_added, "agent:bob")],
    ids=["balance-moved", "statement-entry-dropped", "statement-entry-added"],
)
async def test_check_raises_on_a_corrupted_ledger(target: str, kernel_url: str, corrupt: Corrupt, owner: str) -> None:
    await check_names(kernel_url, corrupt, "owner", owner)


@pytest.mark.parametrize(
    ("sql", "tid"),
    [
        ("DELETE FROM ledger_ids WHERE id = 't1'", "t1"),  # an entered record no longer found by its id
        # a record appended with an id recorded before: a second outcome for one id
        (
            "INSERT INTO ledger_records (k, tn, id, kind, debit, credit, currency, amount, pending_id, timeout_s,"
            " code, reason, metadata, ts, ok, error_code, error_message, state, captured, expires, digest)"
            " SELECT k + 1000, tn, id, kind, debit, credit, currency, amount, pending_id,"
            " timeout_s, code, reason, metadata, ts, ok, error_code, error_message, state, captured, expires, digest"
            " FROM ledger_records WHERE id = 't2'",
            "t2",
        ),
    ],
    ids=["id-entry-dropped", "id-recorded-twice"],
)
async def test_check_raises_on_a_corrupted_sqlite_id_table(tmp_path: Any, sql: str, tid: str) -> None:
    # SQLite finds a record by id through ledger_ids (and the records after the last complete block), a structure
    # of its own beside the records: check() looks every record up by its id
    async def run_sql(kernel: sos_kernel.Kernel, kernel_url: str) -> None:
        await _sqlite(kernel_url, sql)

    await check_names(f"sqlite:///{tmp_path / 'ids.db'}", run_sql, "id", tid)


# -- careful edits: the stored state kept consistent (balances, statements, ids), caught by the chain ------------------

HOLD = "hold-1"
P = "sos:{t:default}:"


async def chained(api: Api) -> None:
    """The funded ledger, with an open hold from alice to bob (placed after every transfer)."""
    await funded(api)
    await api.ledger.hold(id=HOLD, debit="agent:alice", credit="agent:bob", amount=3, currency=USD, timeout_s=3600)
    await api.ledger.check()


async def _sqlite_many(kernel_url: str, *statements: str) -> None:
    with closing(sqlite3.connect(kernel_url.removeprefix("sqlite:///"))) as db, db:
        for sql in statements:
            if db.execute(sql).rowcount != 1:
                raise RuntimeError(f"the corruption did not change exactly one row: {sql}")


def _k(tid: str) -> str:
    return f"(SELECT k FROM ledger_records WHERE id = '{tid}')"


def _balance_sql(owner: str, column: str, delta: int) -> str:
    return f"UPDATE ledger_accounts SET {column} = {column} + ({delta}) WHERE owner = '{owner}'"


async def _redis(kernel_url: str, edit: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    client = async_client(kernel_url)
    try:
        await edit(client)
    finally:
        await client.aclose()


async def _move(client: aioredis.Redis, owner: str, field: str, delta: int) -> None:
    await client.hincrby(f"{P}acct:{owner}:USD", field, delta)


async def amount_changed(kernel_url: str) -> None:
    # t3 moved 15 instead of 10, both balances agreeing
    if kernel_url.startswith("sqlite"):
        await _sqlite_many(
            kernel_url,
            "UPDATE ledger_records SET amount = 15 WHERE id = 't3'",
            _balance_sql("system:treasury", "dp", 5),
            _balance_sql("agent:alice", "cp", 5),
        )
        return

    async def edit(client: aioredis.Redis) -> None:
        await client.hset(f"{P}xfer:t3", "amount", "15")
        await _move(client, "system:treasury", "dp", 5)
        await _move(client, "agent:alice", "cp", 5)

    await _redis(kernel_url, edit)


async def credit_redirected(kernel_url: str) -> None:
    # t66 credited bob instead of alice: balances and statements agree (on SQLite it is past the last entered block)
    if kernel_url.startswith("sqlite"):
        await _sqlite_many(
            kernel_url,
            "UPDATE ledger_records SET credit = 'agent:bob' WHERE id = 't66'",
            _balance_sql("agent:alice", "cp", -10),
            _balance_sql("agent:bob", "cp", 10),
        )
        return

    async def edit(client: aioredis.Redis) -> None:
        seq = int(await client.hget(f"{P}xfer:t66", "seq") or 0)
        await client.hset(f"{P}xfer:t66", "credit", "agent:bob")
        await client.zrem(f"{P}hist:agent:alice:USD", "t66")
        await client.zadd(f"{P}hist:agent:bob:USD", {"t66": seq})
        await _move(client, "agent:alice", "cp", -10)
        await _move(client, "agent:bob", "cp", 10)

    await _redis(kernel_url, edit)


async def allow_negative_flipped(kernel_url: str) -> None:
    # alice may now overdraw: nothing else changes, and nothing she did so far breaks a rule
    if kernel_url.startswith("sqlite"):
        await _sqlite_many(kernel_url, "UPDATE ledger_accounts SET allow_negative = 1 WHERE owner = 'agent:alice'")
        return

    async def edit(client: aioredis.Redis) -> None:
        await client.hset(f"{P}acct:agent:alice:USD", "neg", "1")

    await _redis(kernel_url, edit)


async def record_deleted(kernel_url: str) -> None:
    # t5 gone, with its id entry, its statement links (t6 linked past it) and what it moved
    if kernel_url.startswith("sqlite"):
        await _sqlite_many(
            kernel_url,
            "UPDATE ledger_records SET (dprev, cprev) = (SELECT dprev, cprev FROM ledger_records WHERE id = 't5')"
            " WHERE id = 't6'",
            "DELETE FROM ledger_ids WHERE id = 't5'",
            "DELETE FROM ledger_records WHERE id = 't5'",
            _balance_sql("system:treasury", "dp", -10),
            _balance_sql("agent:alice", "cp", -10),
        )
        return

    async def edit(client: aioredis.Redis) -> None:
        await client.delete(f"{P}xfer:t5")
        for key in ("xfers", "hist:system:treasury:USD", "hist:agent:alice:USD"):
            await client.zrem(f"{P}{key}", "t5")
        await _move(client, "system:treasury", "dp", -10)
        await _move(client, "agent:alice", "cp", -10)

    await _redis(kernel_url, edit)


async def records_swapped(kernel_url: str) -> None:
    # t69 and to-bob trade places in the sequence: the same money moved, in another order
    if kernel_url.startswith("sqlite"):
        await _sqlite_many(
            kernel_url,
            "UPDATE ledger_records SET k = -1 WHERE id = 't69'",
            f"UPDATE ledger_records SET k = k - 1 WHERE k = {_k('to-bob')}",
            f"UPDATE ledger_records SET k = {_k('to-bob')} + 1 WHERE id = 't69'",
        )
        return

    async def edit(client: aioredis.Redis) -> None:
        first, second = [int(await client.hget(f"{P}xfer:{tid}", "seq") or 0) for tid in ("t69", "to-bob")]
        for tid, seq in (("t69", second), ("to-bob", first)):
            await client.hset(f"{P}xfer:{tid}", "seq", str(seq))
            await client.zadd(f"{P}xfers", {tid: seq})
        await client.zadd(f"{P}hist:agent:alice:USD", {"t69": second, "to-bob": first})
        await client.zadd(f"{P}hist:system:treasury:USD", {"t69": second})
        await client.zadd(f"{P}hist:agent:bob:USD", {"to-bob": first})

    await _redis(kernel_url, edit)


FORGED_COLUMNS = (
    "tn, id, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, metadata, ts, ok,"
    " error_code, error_message, state, captured, expires, digest"
)

FORGED_VALUES = FORGED_COLUMNS.replace(" id,", " 'forged',", 1)


async def record_inserted(kernel_url: str) -> None:
    # a copy of t1 under a new id, appended after the last record, with what it moved
    if kernel_url.startswith("sqlite"):
        last = "(SELECT max(k) FROM ledger_records)"
        await _sqlite_many(
            kernel_url,
            f"INSERT INTO ledger_records (k, {FORGED_COLUMNS}) SELECT {last} + 1,"
            f" {FORGED_VALUES} FROM ledger_records WHERE id = 't1'",
            _balance_sql("system:treasury", "dp", 10),
            _balance_sql("agent:alice", "cp", 10),
        )
        return

    async def edit(client: aioredis.Redis) -> None:
        seq = int(await client.incr(f"{P}lseq"))
        fields = {k.decode(): v for k, v in (await client.hgetall(f"{P}xfer:t1")).items()}
        await client.hset(f"{P}xfer:forged", mapping={**fields, "id": "forged", "seq": str(seq)})
        for key in ("xfers", "hist:system:treasury:USD", "hist:agent:alice:USD"):
            await client.zadd(f"{P}{key}", {"forged": seq})
        await _move(client, "system:treasury", "dp", 10)
        await _move(client, "agent:alice", "cp", 10)

    await _redis(kernel_url, edit)


async def hold_expired_early(kernel_url: str) -> None:
    # the open hold marked expired an hour early, its held amounts released
    if kernel_url.startswith("sqlite"):
        await _sqlite_many(
            kernel_url,
            f"UPDATE ledger_records SET state = 'expired' WHERE id = '{HOLD}'",
            _balance_sql("agent:alice", "dpend", -3),
            _balance_sql("agent:bob", "cpend", -3),
        )
        return

    async def edit(client: aioredis.Redis) -> None:
        await client.hset(f"{P}xfer:{HOLD}", "state", "expired")
        await client.zrem(f"{P}holds", HOLD)
        await _move(client, "agent:alice", "dpe", -3)
        await _move(client, "agent:bob", "cpe", -3)

    await _redis(kernel_url, edit)


@pytest.mark.parametrize(
    ("corrupt", "detail", "expected"),
    [
        (amount_changed, "id", "t3"),
        (credit_redirected, "id", "t66"),
        (allow_negative_flipped, "owner", "agent:alice"),
        (record_deleted, "id", "t6"),  # the record after the gap
        (records_swapped, "id", "to-bob"),  # the first record out of place
        (record_inserted, "id", "forged"),
        (hold_expired_early, "id", HOLD),
    ],
    ids=lambda v: v.__name__.replace("_", "-") if callable(v) else None,
)
async def test_check_detects_a_careful_edit_of_the_stored_ledger(
    open_api: OpenApi,
    kernel_url: str,
    implements: Implements,
    corrupt: Callable[[str], Awaitable[None]],
    detail: str,
    expected: str,
) -> None:
    # every edit keeps balances, statements and ids consistent, so only the chain (or the hold states it implies)
    # shows it; the memory store keeps nothing that can be edited from outside. Remotely: the same error over HTTP
    requires(implements, durable=True)
    async with open_api() as api:
        await chained(api)
        await corrupt(kernel_url)  # from another connection, while the kernel has the ledger open
        with pytest.raises(InvariantViolation) as info:
            await api.ledger.check()
    assert info.value.code == "SOS-6099"
    assert info.value.details[detail] == expected, info.value
