"""The SQLite file's layout: a file in a layout this version does not know is refused clearly and left as it is;
and the state the ledger's store keeps between its transactions. (SQLite only: the layout is that engine's own.)"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.backends.sqlite import SCHEMA_VERSION
from sos_kernel.backends.sqlite_ledger import (
    ACCOUNT_MEMO_MAX,
    LEDGER_SCHEMA,
    STATEMENT_BLOCK,
    TENANT_STATES_MAX,
    SQLiteLedgerStore,
)
from sos_kernel.errors import BackendFailure
from sos_kernel.ledger.service import BATCH_MAX

pytestmark = pytest.mark.anyio


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as c:
        return {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def ledger_file(path: Path, *, layout: int | None) -> str:
    """A file with this layout's ledger tables and one account, recording ``layout`` (None: no layout recorded)."""
    with closing(sqlite3.connect(path)) as c:
        for statement in LEDGER_SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        c.execute("INSERT INTO ledger_accounts VALUES ('default', 'agent:alice', 'USD', 0, 0, 0, 0, 0, 0, x'00')")
        if layout is not None:
            c.execute(f"PRAGMA user_version = {layout}")
        c.commit()
    return f"sqlite:///{path}"


@pytest.mark.parametrize("layout", [None, SCHEMA_VERSION + 1], ids=["unrecorded", "later"])
async def test_a_file_in_an_unknown_layout_is_refused_and_left_as_it_is(tmp_path: Path, layout: int | None) -> None:
    path = tmp_path / "other.db"
    url = ledger_file(path, layout=layout)
    before = tables(path)
    with pytest.raises(BackendFailure, match="not this version's layout") as info:
        async with sos_kernel.open(url):
            pass
    assert info.value.code == "SOS-6031"
    assert info.value.details["layout"] == (layout or 0)
    assert info.value.details["expected"] == SCHEMA_VERSION
    assert "ledger_accounts" in info.value.details["tables"]
    assert tables(path) == before  # nothing made, dropped or rewritten
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("SELECT count(*) FROM ledger_accounts").fetchone() == (1,)


async def test_a_new_file_records_its_layout_and_opens_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    async with sos_kernel.open(url) as kernel:
        await kernel.ledger.open_account("agent:alice", "USD")
    with closing(sqlite3.connect(tmp_path / "k.db")) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    async with sos_kernel.open(url) as kernel:
        assert [b.owner for b in await kernel.ledger.balances()] == ["agent:alice"]


async def _transfers(ledger: Any, count: int, prefix: str = "t") -> None:
    for i in range(count):
        await ledger.transfer(id=f"{prefix}{i}", debit="system:mint", credit="agent:alice", amount=1, currency="USD")


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
