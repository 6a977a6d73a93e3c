"""``check()`` must fail on a broken ledger: each engine's stored state is corrupted directly (a balance moved
without a transfer, a statement entry dropped or added; on SQLite also its id table) and ``check()`` must raise
SOS-6099 naming the account or the id."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

import sos_kernel
from sos_kernel.backends.sqlite_ledger import STATEMENT_BLOCK
from sos_kernel.errors import InvariantViolation

pytestmark = pytest.mark.anyio

USD = "USD"
TRANSFERS = STATEMENT_BLOCK + 6  # past one statement block, so SQLite's entered statements are corrupted too


async def funded(kernel: sos_kernel.Kernel) -> None:
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
        client = aioredis.Redis.from_url(kernel_url)
        await client.hincrby("sos:{t:default}:acct:agent:bob:USD", "cp", 1)
        await client.aclose()


async def statement_entry_dropped(kernel: sos_kernel.Kernel, kernel_url: str) -> None:
    store: Any = kernel.backend.ledger
    if kernel_url.startswith("memory"):
        store._history[("default", "agent:alice", USD)].pop(0)
    elif kernel_url.startswith("sqlite"):
        await _sqlite(
            kernel_url,
            "DELETE FROM ledger_statements WHERE owner = 'agent:alice' AND k = "
            "(SELECT min(k) FROM ledger_statements WHERE owner = 'agent:alice')",
        )
    else:
        client = aioredis.Redis.from_url(kernel_url)
        if await client.zrem("sos:{t:default}:hist:agent:alice:USD", "t0") != 1:
            raise RuntimeError("no statement entry to drop")
        await client.aclose()


async def statement_entry_added(kernel: sos_kernel.Kernel, kernel_url: str) -> None:
    store: Any = kernel.backend.ledger
    if kernel_url.startswith("memory"):
        store._history[("default", "agent:bob", USD)].insert(0, "t0")
    elif kernel_url.startswith("sqlite"):
        await _sqlite(
            kernel_url,
            "INSERT INTO ledger_statements (owner, currency, k) SELECT 'agent:bob', 'USD', min(k) "
            "FROM ledger_statements WHERE owner = 'agent:alice'",
        )
    else:
        client = aioredis.Redis.from_url(kernel_url)
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
            "INSERT INTO ledger_records SELECT k + 1000, tn, id, kind, debit, credit, currency, amount, pending_id,"
            " timeout_s, code, reason, metadata, ts, ok, error_code, error_message, state, captured, expires"
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
