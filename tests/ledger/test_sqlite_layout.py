"""The SQLite ledger's file layout: a file written with an earlier layout is refused clearly or, when its ledger
holds nothing, upgraded in place; and the state a store keeps between its transactions. (SQLite only: the layout is
that engine's own.)"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.backends.sqlite_ledger import (
    ACCOUNT_MEMO_MAX,
    CHAINED_TABLES,
    LEDGER_SCHEMA,
    STATEMENT_BLOCK,
    TENANT_STATES_MAX,
    SQLiteLedgerStore,
)
from sos_kernel.errors import BackendFailure
from sos_kernel.ledger.service import BATCH_MAX

pytestmark = pytest.mark.anyio

EARLIER_LAYOUT = """
CREATE TABLE ledger_accounts (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, currency TEXT NOT NULL, allow_negative INTEGER NOT NULL,
    dp INTEGER NOT NULL, cp INTEGER NOT NULL, dpend INTEGER NOT NULL, cpend INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (tenant, owner, currency)) WITHOUT ROWID;
CREATE TABLE ledger_transfers (
    tenant TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
    open_hold INTEGER NOT NULL, expires REAL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX ledger_transfers_seq ON ledger_transfers (tenant, seq);
CREATE INDEX ledger_open_holds ON ledger_transfers (tenant, open_hold, expires);
CREATE TABLE ledger_history (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, currency TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (tenant, owner, currency, seq, id)) WITHOUT ROWID;
CREATE TABLE ledger_seq (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""
EARLIER_TABLES = ["ledger_history", "ledger_seq", "ledger_transfers"]


def earlier_file(path: Path, *, recorded: bool) -> str:
    with closing(sqlite3.connect(path)) as c:
        c.executescript(EARLIER_LAYOUT)
        if recorded:
            c.execute("INSERT INTO ledger_accounts VALUES ('default', 'agent:alice', 'USD', 0, 0, 0, 0, 0, 0)")
            c.execute("INSERT INTO ledger_transfers VALUES ('default', 't1', 1, '{}', 0, NULL)")
            c.execute("INSERT INTO ledger_seq VALUES ('default', 1)")
        c.commit()
    return f"sqlite:///{path}"


def schema(path: Path, kind: str) -> set[str]:
    """The names of the file's schema objects of ``kind`` (``table`` or ``index``)."""
    with closing(sqlite3.connect(path)) as c:
        return {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type=?", (kind,))}


async def test_an_earlier_layout_with_records_is_refused_on_every_ledger_call(tmp_path: Path) -> None:
    path = tmp_path / "earlier.db"
    async with sos_kernel.open(earlier_file(path, recorded=True)) as kernel:
        for attempt in (kernel.ledger.balances(), kernel.ledger.get_transfer("t1")):
            with pytest.raises(BackendFailure, match="earlier layout") as info:
                await attempt
            assert info.value.code == "SOS-6031"
            assert sorted(info.value.details["tables"]) == EARLIER_TABLES
        await kernel.bus.send("agent:alice", "agent:bob", "the rest of the file is still usable")
    assert set(EARLIER_TABLES) <= schema(path, "table")  # nothing was dropped or rewritten


async def test_an_earlier_layout_that_recorded_nothing_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "earlier.db"
    async with sos_kernel.open(earlier_file(path, recorded=False)) as kernel:
        ledger = kernel.ledger
        assert await ledger.balances() == []
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        t = await ledger.transfer(id="t1", debit="system:mint", credit="agent:alice", amount=5, currency="USD")
        assert t.sequence == 1
        await ledger.check()
    assert not set(EARLIER_TABLES) & schema(path, "table")


SECOND_LAYOUT = """
CREATE TABLE ledger_tenants (n INTEGER PRIMARY KEY, tenant TEXT NOT NULL UNIQUE);
CREATE TABLE ledger_records (
    k INTEGER PRIMARY KEY, tn INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, debit TEXT NOT NULL,
    credit TEXT NOT NULL, currency TEXT NOT NULL, amount INTEGER NOT NULL, pending_id TEXT NOT NULL,
    timeout_s INTEGER NOT NULL, code INTEGER NOT NULL, reason TEXT NOT NULL, metadata TEXT NOT NULL,
    ts REAL NOT NULL, ok INTEGER NOT NULL, error_code TEXT NOT NULL, error_message TEXT NOT NULL, state TEXT NOT NULL,
    captured INTEGER NOT NULL, expires REAL NOT NULL);
CREATE UNIQUE INDEX ledger_records_id ON ledger_records (tn, id);
CREATE INDEX ledger_records_debit ON ledger_records (debit, currency) WHERE ok = 1;
CREATE INDEX ledger_records_credit ON ledger_records (credit, currency) WHERE ok = 1;
CREATE INDEX ledger_records_open ON ledger_records (tn, expires) WHERE state = 'pending';
"""
SECOND_INDEXES = ["ledger_records_credit", "ledger_records_debit"]


def second_file(path: Path, *, recorded: bool) -> str:
    """A file of the second layout, whose statements were partial indexes of ``ledger_records``."""
    with closing(sqlite3.connect(path)) as c:
        c.executescript(EARLIER_LAYOUT.split("CREATE TABLE ledger_transfers")[0] + SECOND_LAYOUT)
        if recorded:
            c.execute("INSERT INTO ledger_accounts VALUES ('default', 'agent:alice', 'USD', 0, 0, 0, 0, 0, 0)")
            c.execute("INSERT INTO ledger_tenants VALUES (1, 'default')")
            c.execute(
                "INSERT INTO ledger_records VALUES"
                " ((1 << 40) + 1, 1, 't1', 'posted', 'system:mint', 'agent:alice', 'USD', 5, '', 0, 0, '', '', 0, 1,"
                " '', '', '', 0, 0)"
            )
        c.commit()
    return f"sqlite:///{path}"


async def test_the_second_layout_with_records_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "second.db"
    async with sos_kernel.open(second_file(path, recorded=True)) as kernel:
        for attempt in (kernel.ledger.history("agent:alice", "USD"), kernel.ledger.get_transfer("t1")):
            with pytest.raises(BackendFailure, match="earlier layout") as info:
                await attempt
            assert info.value.code == "SOS-6031"
            assert sorted(info.value.details["indexes"]) == SECOND_INDEXES
    assert set(SECOND_INDEXES) <= schema(path, "index")


async def test_the_second_layout_that_recorded_nothing_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "second.db"
    async with sos_kernel.open(second_file(path, recorded=False)) as kernel:
        ledger = kernel.ledger
        assert await ledger.balances() == []
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        await ledger.transfer(id="t1", debit="system:mint", credit="agent:alice", amount=5, currency="USD")
        assert [t.id for t in await ledger.history("agent:alice", "USD")] == ["t1"]
        await ledger.check()
    assert not set(SECOND_INDEXES) & schema(path, "index")


async def _transfers(ledger: Any, count: int, prefix: str = "t") -> None:
    for i in range(count):
        await ledger.transfer(id=f"{prefix}{i}", debit="system:mint", credit="agent:alice", amount=1, currency="USD")


def unchained_file(path: Path, *, accounts: int, recorded: int) -> str:
    """A file of the layout before the chain: this layout without the ``digest`` columns."""
    with closing(sqlite3.connect(path)) as c:
        for statement in LEDGER_SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        for table in CHAINED_TABLES:
            c.execute(f"ALTER TABLE {table} DROP COLUMN digest")
        for i in range(accounts):
            c.execute(f"INSERT INTO ledger_accounts VALUES ('default', 'agent:a{i}', 'USD', 0, 0, 0, 0, 0, 0)")
        c.execute("INSERT INTO ledger_tenants VALUES (1, 'default')")
        for seq in range(1, recorded + 1):
            c.execute(
                "INSERT INTO ledger_records VALUES (?, 1, ?, 'posted', 'agent:a0', 'agent:a1', 'USD', 5, '', 0, 0,"
                " '', '', 0, 1, '', '', '', 0, 0)",
                ((1 << 40) + seq, f"t{seq}"),
            )
        c.commit()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(("accounts", "recorded"), [(2, 1), (1, 0)], ids=["with-records", "with-accounts-only"])
async def test_a_ledger_written_before_the_chain_is_refused(tmp_path: Path, accounts: int, recorded: int) -> None:
    # its records and accounts carry no digest, so check() could vouch for none of them: not migrated
    path = tmp_path / "unchained.db"
    async with sos_kernel.open(unchained_file(path, accounts=accounts, recorded=recorded)) as kernel:
        for attempt in (kernel.ledger.balances(), kernel.ledger.open_account("agent:b", "USD")):
            with pytest.raises(BackendFailure, match="earlier layout") as info:
                await attempt
            assert info.value.code == "SOS-6031"
            assert info.value.details["tables"] == list(CHAINED_TABLES)
    with closing(sqlite3.connect(path)) as c:  # nothing was dropped or rewritten
        assert c.execute("SELECT count(*) FROM ledger_accounts").fetchone() == (accounts,)


async def test_an_empty_ledger_written_before_the_chain_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "unchained.db"
    async with sos_kernel.open(unchained_file(path, accounts=0, recorded=0)) as kernel:
        await kernel.ledger.open_account("system:mint", "USD", allow_negative=True)
        await kernel.ledger.open_account("agent:alice", "USD")
        await _transfers(kernel.ledger, STATEMENT_BLOCK + 1)
        await kernel.ledger.check()
    with closing(sqlite3.connect(path)) as c:
        for table in CHAINED_TABLES:
            assert "digest" in {row[1] for row in c.execute(f"PRAGMA table_info({table})")}


async def test_a_transaction_that_rolls_back_leaves_no_kept_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store keeps each tenant's last sequence, unentered ids and accounts between transactions; a transaction
    # that changed them and then failed (here: the disk refusing the block entry) must leave them as committed
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        ledger = kernel.ledger
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        await _transfers(ledger, STATEMENT_BLOCK - 1)
        entered = SQLiteLedgerStore._enter_blocks

        def disk_fails(c: sqlite3.Connection, base: int, before: int, last: int) -> bool:
            if last % STATEMENT_BLOCK == 0:
                raise sqlite3.OperationalError("disk I/O error")
            return entered(c, base, before, last)

        monkeypatch.setattr(SQLiteLedgerStore, "_enter_blocks", staticmethod(disk_fails))
        with pytest.raises(BackendFailure):
            await ledger.transfer(id="edge", debit="system:mint", credit="agent:alice", amount=1, currency="USD")
        monkeypatch.setattr(SQLiteLedgerStore, "_enter_blocks", staticmethod(entered))
        t = await ledger.transfer(id="edge", debit="system:mint", credit="agent:alice", amount=1, currency="USD")
        assert (t.sequence, t.replayed) == (STATEMENT_BLOCK, False)
        assert (await ledger.balance("agent:alice", "USD")).posted == STATEMENT_BLOCK
        await ledger.check()


async def test_a_transfer_from_the_only_writer_reads_only_its_id(tmp_path: Path) -> None:
    # what the kept state saves: with no other connection committing, a transfer reads the data version and looks
    # its id up, then writes (a statement plan, so that losing this fast path fails here rather than only in a
    # benchmark)
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        ledger = kernel.ledger
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        await _transfers(ledger, 2)
        statements: list[str] = []
        conn = kernel.backend.engine.conn
        conn.set_trace_callback(statements.append)
        try:
            await _transfers(ledger, 1, prefix="traced")
        finally:
            conn.set_trace_callback(None)
    assert [" ".join(s.split()[:3]) for s in statements] == [
        "BEGIN IMMEDIATE",
        "PRAGMA data_version",
        "SELECT 1 FROM",
        "INSERT INTO ledger_records",
        "UPDATE ledger_accounts SET",
        "UPDATE ledger_accounts SET",
        "COMMIT",
    ]


async def test_a_store_keeps_the_state_of_a_bounded_number_of_tenants(tmp_path: Path) -> None:
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        store: Any = kernel.backend.ledger
        for n in range(TENANT_STATES_MAX + 3):
            ledger = kernel.tenant(f"t{n}").ledger
            await ledger.open_account("system:mint", "USD", allow_negative=True)
            await ledger.open_account("agent:alice", "USD")
            await _transfers(ledger, 1)
            assert len(store._states) == min(n + 1, TENANT_STATES_MAX)
        first, last = kernel.tenant("t0").ledger, kernel.tenant(f"t{TENANT_STATES_MAX + 2}").ledger
        # the least recently used was forgotten, and is read again from the file, exactly
        assert (
            await first.transfer(id="again", debit="system:mint", credit="agent:alice", amount=1, currency="USD")
        ).sequence == 2
        assert (
            await last.transfer(id="t0", debit="system:mint", credit="agent:alice", amount=1, currency="USD")
        ).replayed
        await first.check()


async def test_a_kept_tenant_state_holds_a_bounded_number_of_accounts(tmp_path: Path) -> None:
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        store: Any = kernel.backend.ledger
        ledger = kernel.ledger
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        agents = [f"agent:a{i}" for i in range(ACCOUNT_MEMO_MAX + 100)]
        for owner in agents:
            await ledger.open_account(owner, "USD")
        for start in (0, BATCH_MAX):
            batch = [
                {"id": f"m{i}", "debit": "system:mint", "credit": owner, "amount": 1, "currency": "USD"}
                for i, owner in enumerate(agents[start : start + BATCH_MAX], start)
            ]
            await ledger.transfer_many(batch)
            (state,) = store._states.values()
            assert len(state.accounts) <= ACCOUNT_MEMO_MAX
        assert (await ledger.balance(agents[-1], "USD")).posted == 1
        await ledger.check()
