"""The SQLite file's layout: a file in a layout this version does not know is refused clearly and left as it is;
and the state the ledger's store keeps between its transactions. (SQLite only: the layout is that engine's own.)"""

from __future__ import annotations

import ast
import inspect
import random
import sqlite3
import textwrap
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.backends import sqlite_ledger
from sos_kernel.backends.sqlite import SCHEMA_VERSION
from sos_kernel.backends.sqlite_ledger import (
    LEDGER_SCHEMA,
    SEQ_BITS,
    STATEMENT_ANCHOR_EVERY,
    STATEMENT_BLOCK,
    TENANT_STATES_MAX,
    SQLiteLedgerStore,
)
from sos_kernel.errors import BackendFailure, InsufficientFunds
from sos_kernel.ledger.chain import canonical_metadata, micros
from sos_kernel.ledger.models import Price, Rate

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
        c.execute(
            "INSERT INTO ledger_accounts (tenant, owner, currency, allow_negative, dp, cp, dpend, cpend, created,"
            " digest) VALUES ('default', 'agent:alice', 'USD', 0, 0, 0, 0, 0, 0, x'00')"
        )
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

        def disk_fails(c: sqlite3.Connection, tenant: str, base: int, before: int, last: int) -> bool:
            if last % STATEMENT_BLOCK == 0:
                raise sqlite3.OperationalError("disk I/O error")
            return entered(c, tenant, base, before, last)

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
        # the batch's record, with its audit record in the same row, chained to the head this store's last commit
        # left (no other write since: the data version and the connection's count of changes say so)
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


async def test_a_kept_tenant_state_holds_a_bounded_number_of_accounts_and_forgets_the_least_recent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo_max = 64  # the bound's behaviour, at a size a test can pass quickly
    monkeypatch.setattr(sqlite_ledger, "ACCOUNT_MEMO_MAX", memo_max)
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        store: Any = kernel.backend.ledger
        ledger = kernel.ledger
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        agents = [f"agent:a{i}" for i in range(3 * memo_max)]
        for owner in agents:
            await ledger.open_account(owner, "USD")
        for i, owner in enumerate(agents):  # the mint is in every batch: the most recently used throughout
            await ledger.transfer(id=f"m{i}", debit="system:mint", credit=owner, amount=1, currency="USD")
            (state,) = store._states.values()
            assert len(state.accounts) <= memo_max
            assert ("system:mint", "USD") in state.accounts
            assert (owner, "USD") in state.accounts
        assert (await ledger.balance(agents[0], "USD")).posted == 1  # a forgotten account is read again, exactly
        await ledger.transfer(id="again", debit="system:mint", credit=agents[0], amount=1, currency="USD")
        assert (await ledger.balance(agents[0], "USD")).posted == 2
        await ledger.check()


async def test_a_store_keeps_a_bounded_number_of_accounts_over_all_tenants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_ledger, "ACCOUNTS_KEPT_MAX", 8)
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        store: Any = kernel.backend.ledger
        for n in range(6):
            ledger = kernel.tenant(f"t{n}").ledger
            await ledger.open_account("system:mint", "USD", allow_negative=True)
            await ledger.open_account("agent:alice", "USD")
            await _transfers(ledger, 1)
            assert sum(len(s.accounts) for s in store._states.values()) <= 8
            assert f"t{n}" in store._states  # the tenant just written is kept; the least recent were forgotten
        await kernel.tenant("t0").ledger.check()


def _write_paths() -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """Every write primitive of the SQLite ledger store but ``apply``, called on ``store`` for tenant "default"."""
    now = time.time()
    return {
        "open_account": lambda s: s.open_account("default", "agent:carol", "USD", False, now),
        "balance": lambda s: s.balance("default", "agent:alice", "USD", now),
        "put_usage": lambda s: s.put_usage(
            "default", "u1", {"provider": "p", "model": "m", "occurred_ts": now, "event": {}}
        ),
        "set_price": lambda s: s.set_price("default", Price("p", "m", 1, 1, 0, "USD")),
        "set_rate": lambda s: s.set_rate("default", Rate("USD", "EUR", 9, 10, "system:exchange", None, None)),
    }


def test_every_write_primitive_of_the_store_is_covered() -> None:
    # the primitives whose body writes (through _write or _write_plain) are exactly apply, apply_then (apply and
    # more in its transaction) and the ones above
    source = textwrap.dedent(inspect.getsource(SQLiteLedgerStore))
    tree = ast.parse(source)
    (cls,) = tree.body
    writers = {
        node.name
        for node in cls.body  # type: ignore[attr-defined]
        if isinstance(node, ast.AsyncFunctionDef)
        and not node.name.startswith("_")
        and any(isinstance(n, ast.Attribute) and n.attr in ("_write", "_write_plain") for n in ast.walk(node))
    }
    assert writers == {"apply", "apply_then", *_write_paths()}


def test_the_store_writes_and_changes_its_kept_state_in_one_function_only() -> None:
    # a write transaction made elsewhere could leave a kept tenant state that no longer matches the file
    tree = ast.parse(textwrap.dedent(inspect.getsource(SQLiteLedgerStore)))
    (cls,) = tree.body
    engine_writes, state_changes = [], []
    for method in cls.body:  # type: ignore[attr-defined]
        for node in ast.walk(method):
            if isinstance(node, ast.Attribute) and node.attr == "write" and ast.unparse(node.value) == "self._db":
                engine_writes.append(method.name)
            if isinstance(node, ast.Attribute) and ast.unparse(node) == "self._states":
                state_changes.append(method.name)
    assert engine_writes == ["_write"]
    assert set(state_changes) <= {"__init__", "_write", "_install"}


@pytest.mark.parametrize("path", list(_write_paths()))
async def test_a_write_path_drops_the_kept_state_and_the_ledger_stays_exact(tmp_path: Path, path: str) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    async with sos_kernel.open(url) as kernel, sos_kernel.open(url) as other:
        store: Any = kernel.backend.ledger
        ledger = kernel.ledger
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        await _transfers(ledger, 2)
        assert "default" in store._states
        await _write_paths()[path](store)
        assert "default" not in store._states  # dropped: the next transaction reads the tenant again
        await _transfers(other.ledger, 1, prefix="other")  # another connection commits in between
        t = await ledger.transfer(id="after", debit="system:mint", credit="agent:alice", amount=1, currency="USD")
        assert t.sequence == 4
        assert "default" in store._states  # installed by the transfer's commit
        assert (await ledger.balance("agent:alice", "USD")).posted == 4
        await ledger.check()


LAYOUT_3_RECORD_COLUMNS = (
    "k, tn, id, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, metadata, ts, ok,"
    " error_code, error_message, state, captured, expires, digest"
)


async def test_a_file_in_layout_3_is_upgraded_and_its_audit_chain_goes_on(tmp_path: Path) -> None:
    # a file as layout 3 left it: every audit record in audit_records, ledger rows without the audit columns
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    async with sos_kernel.open(url) as kernel:
        kernel.backend.ledger.audits_writes = False  # the batches' records go to audit_records, as layout 3 had them
        await kernel.ledger.open_account("system:mint", "USD", allow_negative=True)
        await kernel.ledger.open_account("agent:alice", "USD")
        await _transfers(kernel.ledger, STATEMENT_BLOCK + 3)
        await kernel.audit.record("test", actor="agent:x")
        before = await kernel.audit.events("default", limit=1000)
    as_layout_4(path)
    with closing(sqlite3.connect(path)) as c:
        for name, _ in sqlite_ledger.AUDIT_COLUMNS:
            c.execute(f"ALTER TABLE ledger_records DROP COLUMN {name}")
        c.execute("PRAGMA user_version = 3")
        columns = ", ".join(row[1] for row in c.execute("PRAGMA table_info(ledger_records)"))
        assert columns == LAYOUT_3_RECORD_COLUMNS
    async with sos_kernel.open(url) as kernel:
        report = await kernel.audit.verify()
        assert (report.ok, report.records) == (True, len(before))
        assert await kernel.audit.events("default", limit=1000) == before
        await _transfers(kernel.ledger, STATEMENT_BLOCK, prefix="new")  # the new ones in the ledger rows, then entered
        await kernel.audit.record("test", actor="agent:y")
        after = await kernel.audit.events("default", limit=1000)
        assert after[: len(before)] == before
        assert [r.seq for r in after] == list(range(1, len(before) + STATEMENT_BLOCK + 2))
        assert [r.details["ids"] for r in after[len(before) : -1]] == [[f"new{i}"] for i in range(STATEMENT_BLOCK)]
        report = await kernel.audit.verify()
        assert (report.ok, report.problems, report.records) == (True, [], len(after))
        await kernel.ledger.check()
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        in_rows = c.execute("SELECT count(*) FROM ledger_records WHERE audit_seq IS NOT NULL").fetchone()[0]
        assert in_rows == STATEMENT_BLOCK  # the old rows hold none


def bus_pending_as_layout_5(c: sqlite3.Connection) -> None:
    """The bus's pending rows as layouts up to 5 made them: no nack reason columns (layout 6)."""
    for name in ("nack_attempt", "nack_reason"):
        c.execute(f"ALTER TABLE bus_pending DROP COLUMN {name}")


def as_layout_4(path: Path) -> None:
    """Rewrite a file of this layout as layout 4 left it: no statement links, and an entry in ``ledger_statements``
    per side of every applied record up to each tenant's last complete block."""
    with closing(sqlite3.connect(path)) as c:
        bus_pending_as_layout_5(c)
        for table, name in (
            ("ledger_records", "dprev"),
            ("ledger_records", "cprev"),
            ("ledger_accounts", "last_seq"),
            ("ledger_accounts", "n_records"),
        ):
            c.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
        c.execute("DELETE FROM ledger_statements")
        c.execute(
            f"WITH e AS (SELECT tn, (tn << {SEQ_BITS}) + (max(k) - (tn << {SEQ_BITS})) / {STATEMENT_BLOCK}"
            f" * {STATEMENT_BLOCK} AS upto FROM ledger_records GROUP BY tn)"
            " INSERT INTO ledger_statements (owner, currency, k)"
            " SELECT debit, currency, k FROM ledger_records JOIN e USING (tn) WHERE ok=1 AND k<=upto"
            " UNION ALL SELECT credit, currency, k FROM ledger_records JOIN e USING (tn) WHERE ok=1 AND k<=upto"
        )
        c.execute("PRAGMA user_version = 4")
        c.commit()


def statement_tables(path: Path) -> list[list[Any]]:
    with closing(sqlite3.connect(path)) as c:
        return [
            c.execute("SELECT k, dprev, cprev FROM ledger_records ORDER BY k").fetchall(),
            c.execute(
                "SELECT tenant, owner, currency, last_seq, n_records FROM ledger_accounts ORDER BY 1, 2, 3"
            ).fetchall(),
            c.execute("SELECT owner, currency, k FROM ledger_statements ORDER BY 1, 2, 3").fetchall(),
        ]


OWNERS = [f"agent:a{i}" for i in range(5)]
CURRENCIES = ("USD", "EUR")


async def _mixed_records(ledger: Any, count: int, prefix: str) -> None:
    """``count`` steps between the OWNERS in both currencies: transfers, linked batches moving both ways, holds
    voided or captured or left pending, and failed transfers."""
    rng = random.Random(prefix)
    for i in range(count):
        debit, credit = rng.sample(OWNERS, 2)
        leg = {"debit": debit, "credit": credit, "amount": 1, "currency": CURRENCIES[i % 2]}
        if i % 10 == 0:
            back = {**leg, "debit": credit, "credit": debit}
            await ledger.transfer_many([{"id": f"{prefix}b{i}", **leg}, {"id": f"{prefix}r{i}", **back}])
        elif i % 10 == 1:
            await ledger.hold(id=f"{prefix}h{i}", timeout_s=600, **leg)
            if i % 3 == 0:
                await ledger.void(f"{prefix}h{i}")
            elif i % 3 == 1:
                await ledger.capture(f"{prefix}h{i}", 1)
        elif i % 10 == 2:
            with pytest.raises(InsufficientFunds):
                await ledger.transfer(id=f"{prefix}f{i}", **{**leg, "amount": 10**12})
        else:
            await ledger.transfer(id=f"{prefix}t{i}", **leg)


async def _statements(ledger: Any) -> dict[tuple[str, str], list[Any]]:
    out = {}
    for owner in ["system:mint", *OWNERS]:
        for currency in CURRENCIES:
            out[(owner, currency)] = await ledger.history(owner, currency, limit=10_000)
    return out


async def _funded(ledger: Any) -> None:
    for currency in CURRENCIES:
        await ledger.open_account("system:mint", currency, allow_negative=True)
        for owner in OWNERS:
            await ledger.open_account(owner, currency)
            await ledger.transfer(
                id=f"fund-{owner}-{currency}", debit="system:mint", credit=owner, amount=10**6, currency=currency
            )


async def test_a_transfer_writes_no_statement_entry_but_an_anchor_every_so_many_records(tmp_path: Path) -> None:
    # the statements are links in the records and the account rows: ledger_statements only holds an anchor at
    # every STATEMENT_ANCHOR_EVERY-th record of an account, written with that record
    records = 3 * STATEMENT_ANCHOR_EVERY + 5
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        ledger = kernel.ledger
        await ledger.open_account("system:mint", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        await _transfers(ledger, records)
    [links, heads, anchors] = statement_tables(tmp_path / "k.db")
    base = 1 << SEQ_BITS
    assert links == [(base + s, s - 1, s - 1) for s in range(1, records + 1)]
    assert heads == [
        ("default", "agent:alice", "USD", records, records),
        ("default", "system:mint", "USD", records, records),
    ]
    every = range(STATEMENT_ANCHOR_EVERY, records + 1, STATEMENT_ANCHOR_EVERY)
    assert anchors == sorted((owner, "USD", base + s) for owner in ("agent:alice", "system:mint") for s in every)


async def test_a_file_in_layout_4_is_upgraded_and_its_statements_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    async with sos_kernel.open(url) as kernel:
        for tenant in ("default", "acme"):
            ledger = kernel.tenant(tenant).ledger
            await _funded(ledger)
            await _mixed_records(ledger, 4 * STATEMENT_BLOCK + 9, tenant)
        before = {t: await _statements(kernel.tenant(t).ledger) for t in ("default", "acme")}
    made = statement_tables(path)
    as_layout_4(path)
    async with sos_kernel.open(url) as kernel:
        for tenant in ("default", "acme"):
            ledger = kernel.tenant(tenant).ledger
            assert await _statements(ledger) == before[tenant]
            await ledger.check()
    assert statement_tables(path) == made  # the links, heads and anchors this layout's transfers wrote
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        sqlite_ledger._upgrade_statement_links(c)  # idempotent
        c.commit()
    assert statement_tables(path) == made
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.ledger
        await _mixed_records(ledger, STATEMENT_BLOCK + 3, "new")  # new transfers go on from the chains' heads
        after = await _statements(ledger)
        for key, listed in before["default"].items():
            assert after[key][: len(listed)] == listed
        assert sum(len(v) for v in after.values()) > sum(len(v) for v in before["default"].values())
        await ledger.check()
        assert await _statements(kernel.tenant("acme").ledger) == before["acme"]


async def test_a_file_in_layout_4_is_upgraded_and_its_audit_chain_goes_on(tmp_path: Path) -> None:
    # a file as layout 4 left it: the records of complete blocks copied into audit_records (and still in their
    # ledger rows), the last block's only in its rows, no anchors
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    async with sos_kernel.open(url) as kernel:
        await kernel.ledger.open_account("system:mint", "USD", allow_negative=True)
        await kernel.ledger.open_account("agent:alice", "USD")
        await kernel.audit.record("test", actor="agent:x")
        await _transfers(kernel.ledger, 2 * STATEMENT_BLOCK + 3)
        before = await kernel.audit.events("default", limit=1000)
    by_seq = {r.seq: r for r in before}
    with closing(sqlite3.connect(path)) as c:
        entered = "audit_seq IS NOT NULL AND k & ? <= ?"
        bounds = ((1 << sqlite_ledger.SEQ_BITS) - 1, 2 * STATEMENT_BLOCK)
        copies = [by_seq[r[0]] for r in c.execute(f"SELECT audit_seq FROM ledger_records WHERE {entered}", bounds)]
        c.executemany(
            "INSERT INTO audit_records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    *(r.tenant, r.seq, micros(r.at), r.kind, r.actor, r.action, r.resource, r.outcome),
                    *(canonical_metadata(dict(r.details)), r.prev, r.digest),
                )
                for r in copies
            ],
        )
        # layout 4's rows held every field and the previous digest
        c.execute("ALTER TABLE ledger_records ADD COLUMN audit_prev BLOB")
        for r in before:
            fields = (r.action, r.outcome, canonical_metadata(dict(r.details)), bytes.fromhex(r.prev), r.seq)
            c.execute(
                "UPDATE ledger_records SET audit_action=?, audit_outcome=?, audit_details=?, audit_prev=?"
                " WHERE audit_seq=?",
                fields,
            )
        c.execute("DROP TABLE audit_ledger_blocks")
        bus_pending_as_layout_5(c)
        c.execute("PRAGMA user_version = 4")
        c.commit()
    for _ in range(2):  # a second opening finds nothing left to upgrade
        async with sos_kernel.open(url) as kernel:
            report = await kernel.audit.verify()
            assert (report.ok, report.problems, report.records) == (True, [], len(before))
            assert await kernel.audit.events("default", limit=1000) == before
    async with sos_kernel.open(url) as kernel:
        await _transfers(kernel.ledger, STATEMENT_BLOCK, prefix="new")  # completes the block of the old tail
        await kernel.audit.record("test", actor="agent:y")
        after = await kernel.audit.events("default", limit=1000)
        assert after[: len(before)] == before
        assert [r.seq for r in after] == list(range(1, len(before) + STATEMENT_BLOCK + 2))
        assert [r.details["ids"] for r in after[len(before) : -1]] == [[f"new{i}"] for i in range(STATEMENT_BLOCK)]
        assert await kernel.audit.events("default", after=100, limit=5) == after[100:105]
        report = await kernel.audit.verify()
        assert (report.ok, report.problems, report.records) == (True, [], len(after))
        await kernel.ledger.check()
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        in_table = c.execute("SELECT count(*) FROM audit_records WHERE kind='ledger.write'").fetchone()[0]
        assert in_table == 2 * STATEMENT_BLOCK  # the copies layout 4 made stay, once
        in_rows = c.execute("SELECT count(*) FROM ledger_records WHERE audit_seq IS NOT NULL").fetchone()[0]
        assert in_rows == 3 + STATEMENT_BLOCK  # the rest, in their rows for good
        kept = c.execute("SELECT count(*) FROM ledger_records WHERE audit_prev IS NOT NULL").fetchone()[0]
        assert kept == 3  # layout 4's tail rows keep the column; nothing writes or reads it any more
        assert c.execute("SELECT count(*) FROM audit_ledger_blocks").fetchone()[0] == 1  # the block completed since
