"""The audit chain: coverage of every declared operation, records on every backend and remotely, tamper tests on
the durable engines (an edit, a deletion, an insertion, a reordering: ``verify()`` names the record), signed
checkpoints, a property test over single-record edits, and the CloudEvents export."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sos_kernel
from sos_kernel.audit import AUDITED_OPERATIONS, NOT_AUDITED, AuditDraft
from sos_kernel.audit.chain import ChainWalk, chained
from sos_kernel.backends import Implements
from sos_kernel.backends.sqlite import sqlite_path
from sos_kernel.backends.sqlite_ledger import AUDIT_COLUMNS, AUDIT_PAGE, STATEMENT_BLOCK
from sos_kernel.errors import Forbidden, InvalidArgument, SOSError
from sos_kernel.operations import declared
from sos_kernel.server._routes_ops import SERVICES

from ..conftest import Api, Connect, requires
from ..procs import WorkerProcess

pytestmark = pytest.mark.anyio

USD = "USD"
AUDIT_WORKER = str(Path(__file__).with_name("_audit_worker.py"))


def test_every_declared_operation_is_audited_or_says_why_not() -> None:
    missing, both = [], []
    for cls in SERVICES:
        for op in declared(cls).values():
            key = f"{op.service}.{op.name}"
            if key not in AUDITED_OPERATIONS and key not in NOT_AUDITED:
                missing.append(key)
            if key in AUDITED_OPERATIONS and key in NOT_AUDITED:
                both.append(key)
    assert missing == [], "add each to AUDITED_OPERATIONS or NOT_AUDITED (with the reason)"
    assert both == []
    assert all(reason.strip() for reason in NOT_AUDITED.values())
    declared_keys = {f"{op.service}.{op.name}" for cls in SERVICES for op in declared(cls).values()}
    assert set(AUDITED_OPERATIONS) | set(NOT_AUDITED) <= declared_keys  # no stale rows


async def test_session_operations_and_refusals_are_recorded(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    _, admin = await kernel.tenants.create("aud", "scale")
    view = kernel.tenant("aud")
    await view.ledger.open_account("system:t", USD, allow_negative=True)
    alice = await view.tokens.issue(agent="agent:alice")
    s = await connect(alice.secret)
    a = await connect(admin)
    await s.ledger.open_account("agent:alice", USD)
    await a.ledger.transfer(id="t1", debit="system:t", credit="agent:alice", amount=7, currency=USD)
    await s.bus.send("agent:alice", "agent:bob", "not audited")
    with pytest.raises(Forbidden):
        await s.ledger.transfer(id="t2", debit="system:t", credit="agent:alice", amount=7, currency=USD)
    records = await a.audit.events("aud")
    summary = [(r.kind, r.action, r.actor, r.outcome) for r in records]
    assert ("operation", "ledger.open_account", "agent:alice", "ok") in summary
    writes = [(r.kind, r.action, r.actor, r.outcome, r.details["ids"]) for r in records if r.kind == "ledger.write"]
    assert writes == [("ledger.write", "ledger.transfer", f"token:{admin_id(records)}", "ok", ["t1"])]
    assert ("denial", "ledger.transfer", "agent:alice", "denied") in summary
    assert not [r for r in records if r.action == "bus.send"]
    assert [r.kind for r in records[:2]] == ["tenant.status", "token.issued"]  # created, then its admin token
    report = await a.audit.verify()
    assert (report.ok, report.problems, report.records) == (True, [], len(records))
    with pytest.raises(Forbidden):
        await s.audit.events("aud")  # reading the chain needs audit:read
    with pytest.raises(Forbidden):
        await a.audit.events("default")  # and only the caller's tenant


def admin_id(records: list[Any]) -> str:
    return next((r.resource.removeprefix("token:") for r in records if r.kind == "token.issued"), "")


async def test_every_ledger_write_is_recorded_with_its_ids(api: Api) -> None:
    await api.ledger.open_account("system:t", USD, allow_negative=True)
    await api.ledger.open_account("agent:a", USD)
    await api.ledger.transfer(id="w1", debit="system:t", credit="agent:a", amount=5, currency=USD)
    await api.ledger.hold(id="h1", debit="agent:a", credit="system:t", amount=2, currency=USD, timeout_s=60)
    await api.ledger.capture("h1")
    with pytest.raises(SOSError):
        await api.ledger.transfer(id="w2", debit="agent:a", credit="system:t", amount=500, currency=USD)
    await api.ledger.transfer(id="w1", debit="system:t", credit="agent:a", amount=5, currency=USD)  # a replay
    writes = [(r.action, r.outcome, r.details["ids"]) for r in await api.audit.events("default", kind="ledger.write")]
    assert writes == [
        ("ledger.transfer", "ok", ["w1"]),
        ("ledger.hold", "ok", ["h1"]),
        ("ledger.capture", "ok", ["h1:capture"]),
        ("ledger.transfer", "failed", ["w2"]),
    ]
    assert (await api.audit.verify()).ok


async def test_every_engine_writes_the_record_in_the_transfer_step(kernel: sos_kernel.Kernel) -> None:
    assert kernel.backend.ledger.audits_writes is True


class _Crash(Exception):
    """Stands for the process dying right after the store applied a batch."""


async def _crash(*args: Any, **kwargs: Any) -> None:
    raise _Crash


async def test_a_ledger_write_never_exists_without_its_record(kernel: sos_kernel.Kernel) -> None:
    """The record is written by the store's own step (one Lua script, one SQLite transaction, one memory step):
    whatever the service does after the store returns, the write's record is already in the chain."""
    view = kernel.tenant("default")
    await view.ledger.open_account("system:t", USD, allow_negative=True)
    await view.ledger.open_account("agent:a", USD)
    view.ledger.audit = _crash  # a record appended after the effect would be lost here
    await view.ledger.transfer(id="c1", debit="system:t", credit="agent:a", amount=5, currency=USD)
    await view.ledger.hold(id="c2", debit="agent:a", credit="system:t", amount=2, currency=USD, timeout_s=60)
    await view.ledger.capture("c2", 1)
    writes = [(r.action, r.outcome, r.details) for r in await view.audit.events("default", kind="ledger.write")]
    assert writes[0] == ("ledger.transfer", "ok", {"ids": ["c1"], "count": 1, "sequence": 1})
    assert [w[:2] for w in writes[1:]] == [("ledger.hold", "ok"), ("ledger.capture", "ok")]
    assert (await view.ledger.get_transfer("c1")).amount == 5
    assert (await view.audit.verify()).ok


async def test_the_record_is_read_back_right_after_a_transfer(kernel: sos_kernel.Kernel) -> None:
    """Every field of the store-written record survives the store's own encoding, with unusual ids and actors."""
    from sos_kernel.audit import act_as, done_acting

    view = kernel.tenant("default")
    await view.ledger.open_account("system:t", USD, allow_negative=True)
    await view.ledger.open_account("agent:e", USD)
    token = act_as('agent:q"uote\\/ü😀')
    try:
        batch = [
            {"id": f"x/{i}:a@b.c_-" + "z" * 150, "debit": "system:t", "credit": "agent:e", "amount": 1, "currency": USD}
            for i in range(3)
        ]
        await view.ledger.transfer_many(batch)
        with pytest.raises(SOSError):
            await view.ledger.transfer(id="too-much", debit="agent:e", credit="system:t", amount=99, currency=USD)
    finally:
        done_acting(token)
    before = await view.audit.events("default", kind="ledger.write")
    assert [(r.actor, r.action, r.outcome, r.details["ids"]) for r in before] == [
        ('agent:q"uote\\/ü😀', "ledger.transfer", "ok", [b["id"] for b in batch]),
        ('agent:q"uote\\/ü😀', "ledger.transfer", "failed", ["too-much"]),
    ]
    assert [r.details["sequence"] for r in before] == [1, 4]
    assert all(abs((r.at - datetime.now(UTC)).total_seconds()) < 60 for r in before)
    report = await view.audit.verify()
    assert (report.ok, report.problems) == (True, [])


async def test_a_large_batch_writes_a_bounded_record(kernel: sos_kernel.Kernel) -> None:
    from sos_kernel.audit import AUDIT_DETAILS_BYTES_MAX

    await kernel.ledger.open_account("system:t", USD, allow_negative=True)
    await kernel.ledger.open_account("agent:a", USD)
    pay = {"debit": "system:t", "credit": "agent:a", "amount": 1, "currency": USD}
    await kernel.ledger.transfer_many([{"id": f"{i:03d}" + "x" * 197, **pay} for i in range(150)])
    (record,) = await kernel.audit.events("default", kind="ledger.write")
    assert len(json.dumps(record.details, separators=(",", ":"))) <= AUDIT_DETAILS_BYTES_MAX
    assert record.details["count"] == 150
    assert record.details["ids"] == [f"{i:03d}" + "x" * 197 for i in range(len(record.details["ids"]))]
    assert (await kernel.audit.verify()).ok


APPENDERS, APPENDS = 3, 25


async def test_processes_appending_to_one_chain_never_fork_it(
    kernel: sos_kernel.Kernel, implements: Implements, tmp_path: Any
) -> None:
    """Transfers (recorded in their own step) and direct appends from several processes at once: one chain, every
    record in it once, and it verifies."""
    requires(implements, multi_process=True)
    await kernel.ledger.open_account("system:t", USD, allow_negative=True)
    await kernel.ledger.open_account("agent:a", USD)
    go = tmp_path / "go"
    workers = [WorkerProcess(AUDIT_WORKER, kernel.url, str(APPENDS), str(go)) for _ in range(APPENDERS)]
    for worker in workers:
        worker.wait_ready()
    go.touch()
    assert [line for worker in workers for line in worker.finish()] == ["done"] * APPENDERS
    records = await kernel.audit.events("default", limit=1000)
    assert [r.seq for r in records] == list(range(1, 2 * APPENDERS * APPENDS + 1))
    writes = [r for r in records if r.kind == "ledger.write"]
    assert len({tuple(r.details["ids"]) for r in writes}) == len(writes) == APPENDERS * APPENDS
    assert len([r for r in records if r.kind == "test"]) == APPENDERS * APPENDS
    report = await kernel.audit.verify()
    assert (report.ok, report.problems, report.records) == (True, [], 2 * APPENDERS * APPENDS)


async def test_ledger_writes_and_other_records_interleave_in_one_chain(kernel: sos_kernel.Kernel) -> None:
    """Ledger batches (whose records SQLite keeps in their ledger rows until a block is entered) and records
    appended by others in between, past a ledger block: one chain, each record once, in order."""
    await kernel.ledger.open_account("system:t", USD, allow_negative=True)
    await kernel.ledger.open_account("agent:a", USD)
    start = (await kernel.audit.verify()).records
    kinds = []
    for i in range(STATEMENT_BLOCK + 6):
        if i % 9 == 4:  # a batch of two: its record names both
            two = [
                {"id": f"b{i}-{j}", "debit": "system:t", "credit": "agent:a", "amount": 1, "currency": USD}
                for j in (0, 1)
            ]
            await kernel.ledger.transfer_many(two)
        else:
            await kernel.ledger.transfer(id=f"w{i}", debit="system:t", credit="agent:a", amount=1, currency=USD)
        kinds.append("ledger.write")
        if i % 5 == 0:
            await kernel.audit.record("test", actor="agent:x", details={"i": i})
            kinds.append("test")
    records = await kernel.audit.events("default", limit=1000, after=start)
    assert [r.seq for r in records] == list(range(start + 1, start + len(kinds) + 1))
    assert [r.kind for r in records] == kinds
    assert [r.details["count"] for r in records if r.kind == "ledger.write"][:5] == [1, 1, 1, 1, 2]
    report = await kernel.audit.verify()
    assert (report.ok, report.problems, report.records) == (True, [], start + len(kinds))
    cp = await kernel.audit.checkpoint()  # the head, wherever it is kept
    assert cp is not None
    assert (cp.seq, cp.digest) == (records[-1].seq, records[-1].digest)
    exported = await kernel.audit.export("default", after=start)
    assert [e["data"]["seq"] for e in exported] == [r.seq for r in records]


async def test_events_page_and_filter(api: Api) -> None:
    for i in range(5):
        await api.ledger.open_account(f"agent:a{i}", USD)
    await api.governance.set_policy("default", {"name": "p"})
    await api.governance.remove_policy("default")
    everything = await api.audit.events("default", limit=1000)
    seqs = [r.seq for r in everything]
    assert seqs == sorted(seqs)
    page = await api.audit.events("default", limit=2, after=seqs[0])
    assert [r.seq for r in page] == seqs[1:3]
    assert [r.kind for r in await api.audit.events("default", kind="policy.removed")] == ["policy.removed"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
        with pytest.raises(InvalidArgument):
            await api.audit.events("default", **bad)


async def test_export_is_cloudevents(api: Api) -> None:
    await api.governance.set_policy("default", {"name": "p"})
    events = await api.audit.export("default")
    last = events[-1]
    assert last["specversion"] == "1.0"
    assert last["type"] == "sos.audit.policy.set"
    assert last["source"] == "sos-kernel/tenants/default/audit"
    assert {"id", "time", "datacontenttype", "data"} <= set(last)
    json.dumps(events)  # JSON Lines ready


async def test_sqlite_keeps_ledger_records_in_their_rows_and_pages_seek_them(tmp_path: Path) -> None:
    """SQLite: a ledger batch's record stays in its ledger row for good (no copy into ``audit_records``); a page
    of the chain finds its first ledger record through the block anchors, by index, never by scanning the
    tenant's ledger, and every page (from any sequence) is the chain's slice."""
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        await kernel.ledger.open_account("system:t", USD, allow_negative=True)
        await kernel.ledger.open_account("agent:a", USD)
        for i in range(3 * STATEMENT_BLOCK + 5):
            if i % 50 == 7:  # records of others in between
                await kernel.audit.record("test", actor="agent:x", action="x.y", resource=f"r{i}")
            await kernel.ledger.transfer(id=f"w{i}", debit="system:t", credit="agent:a", amount=1, currency=USD)
        chain = await kernel.audit.events("default", limit=1000)
        assert [r.seq for r in chain] == list(range(1, len(chain) + 1))
        for after in (0, 1, 63, 64, 65, 100, 128, 190, len(chain) - 2, len(chain)):
            assert await kernel.audit.events("default", after=after, limit=7) == chain[after : after + 7]
        assert (await kernel.audit.verify()).ok
    with sqlite3.connect(tmp_path / "k.db") as c:
        kinds = {r[0] for r in c.execute("SELECT kind FROM audit_records WHERE tenant='default'")}
        assert "ledger.write" not in kinds
        assert c.execute("SELECT count(*) FROM audit_ledger_blocks").fetchone()[0] == 3
        plan = " | ".join(r[-1] for r in c.execute(f"EXPLAIN QUERY PLAN {AUDIT_PAGE}", ("default", 100, 7)))
    assert "SCAN ledger_records" not in plan, plan
    assert "SCAN audit" not in plan, plan
    assert "SEARCH audit_ledger_blocks USING PRIMARY KEY" in plan, plan


async def test_an_edited_sqlite_anchor_cannot_hide_ledger_records(tmp_path: Path) -> None:
    """SQLite: an anchor moved past its block's records would make pages skip them; verify() names the gap (a
    deleted anchor only makes a page read from an earlier one)."""
    kernel = await sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}")
    await _records(kernel, 2 * STATEMENT_BLOCK + 3, "transfer")
    assert (await kernel.audit.verify()).ok
    with sqlite3.connect(sqlite_path(kernel.url)) as c:
        c.execute("DELETE FROM audit_ledger_blocks WHERE seq = (SELECT max(seq) FROM audit_ledger_blocks)")
    assert (await kernel.audit.verify()).ok
    assert len(await kernel.audit.events("default", after=STATEMENT_BLOCK + 2, limit=5)) == 5
    with sqlite3.connect(sqlite_path(kernel.url)) as c:
        c.execute("UPDATE audit_ledger_blocks SET k = k + 10")
    report = await kernel.audit.verify()
    await kernel.aclose()
    assert report.ok is False
    assert report.problems[0].startswith("record 11 follows record 0"), report.problems


async def test_checkpoints_are_signed_and_checked(kernel: sos_kernel.Kernel) -> None:
    await kernel.governance.set_policy("default", {"name": "p"})
    cp = await kernel.audit.checkpoint()
    assert cp is not None
    assert cp.public_key == kernel.audit_key.public.hex
    report = await kernel.audit.verify()
    assert (report.ok, report.checkpoints) == (True, 1)


# -- tampering, directly in the engines ------------------------------------------------------------------------


async def _records(kernel: sos_kernel.Kernel, n: int, source: str = "record") -> None:
    if source == "transfer":  # records the ledger's own step writes
        await kernel.ledger.open_account("system:t", USD, allow_negative=True)
        await kernel.ledger.open_account("agent:a", USD)
        n -= (await kernel.audit.verify()).records
    for i in range(n):
        if source == "transfer":
            await kernel.ledger.transfer(id=f"w{i}", debit="system:t", credit="agent:a", amount=1, currency=USD)
        else:
            await kernel.audit.record("test", actor=f"agent:a{i}", action="x.y", resource=f"r{i}", details={"i": i})


class Engine:
    """Edits the audit records of the ``default`` tenant behind the kernel's back."""

    def __init__(self, kernel: sos_kernel.Kernel, redis_url: str | None, ledger_row: bool = False) -> None:
        self.kernel = kernel
        self.redis_url = redis_url
        self.ledger_row = ledger_row
        """SQLite: the records edited are ledger batches' records, kept in their ledger rows (for good)."""

    async def run(self, edit: str) -> None:
        if self.kernel.backend.name == "sqlite":
            self._sqlite(edit)
        else:
            await self._redis(edit)

    def _sqlite(self, edit: str) -> None:
        with sqlite3.connect(sqlite_path(self.kernel.url)) as c:
            if self.ledger_row:  # a ledger batch's record, in its last ledger row
                self._sqlite_ledger_row(c, edit)
                return
            where = "tenant='default' AND seq=?"
            if edit == "change":
                c.execute(f"UPDATE audit_records SET actor='agent:mallory' WHERE {where}", (3,))
            elif edit == "delete":
                c.execute(f"DELETE FROM audit_records WHERE {where}", (3,))
            elif edit == "insert":
                row = c.execute(f"SELECT * FROM audit_records WHERE {where}", (5,)).fetchone()
                c.execute("INSERT INTO audit_records VALUES (?,?,?,?,?,?,?,?,?,?,?)", (row[0], 6, *row[2:]))
            elif edit == "reorder":
                c.execute(f"UPDATE audit_records SET seq=-1 WHERE {where}", (3,))
                c.execute(f"UPDATE audit_records SET seq=3 WHERE {where}", (4,))
                c.execute("UPDATE audit_records SET seq=4 WHERE tenant='default' AND seq=-1")

    @staticmethod
    def _sqlite_ledger_row(c: sqlite3.Connection, edit: str) -> None:
        in_rows = [r[0] for r in c.execute("SELECT audit_seq FROM ledger_records WHERE audit_seq IS NOT NULL")]
        in_table = [r[0] for r in c.execute("SELECT seq FROM audit_records WHERE tenant='default'")]
        if not ({3, 4, 5} <= set(in_rows) and {3, 4, 5}.isdisjoint(in_table)):
            raise AssertionError(f"records 3-5 are not (only) in ledger rows: {in_rows}, {in_table}")
        if edit == "change":
            c.execute("UPDATE ledger_records SET audit_actor='agent:mallory' WHERE audit_seq=3")
        elif edit == "delete":
            erased = ", ".join(f"{name}=NULL" for name, _ in AUDIT_COLUMNS)
            c.execute(f"UPDATE ledger_records SET {erased} WHERE audit_seq=3")
        elif edit == "insert":  # a ledger row after the last, holding a copy of record 5 as record 6
            columns = [row[1] for row in c.execute("PRAGMA table_info(ledger_records)")]
            forged = {"k": "(SELECT max(k) FROM ledger_records) + 1", "id": "'forged'", "audit_seq": "6"}
            values = ", ".join(forged.get(name, name) for name in columns)
            c.execute(f"INSERT INTO ledger_records SELECT {values} FROM ledger_records WHERE audit_seq=5")
        elif edit == "reorder":
            c.execute("UPDATE ledger_records SET audit_seq=7-audit_seq WHERE audit_seq IN (3, 4)")

    async def _redis(self, edit: str) -> None:
        from ..redis_cluster import async_client

        r = async_client(str(self.redis_url))
        key = "sos:{t:default}:audit:records"
        try:
            if edit == "change":
                doc = json.loads(await r.hget(key, "3"))
                doc["actor"] = "agent:mallory"
                await r.hset(key, "3", json.dumps(doc))
            elif edit == "delete":
                await r.hdel(key, "3")
            elif edit == "insert":
                doc = json.loads(await r.hget(key, "5"))
                await r.hset(key, "6", json.dumps({**doc, "seq": 6}))
            elif edit == "reorder":
                three, four = await r.hget(key, "3"), await r.hget(key, "4")
                await r.hset(key, mapping={"3": four, "4": three})
        finally:
            await r.aclose()


EXPECTED = {
    "change": "record 3 was edited",
    "delete": "record 4 follows record 2",
    # past a ledger block the real record 6 is there too: whichever of the two is read first, 6 is named
    "insert": "record 6 (does not hold the digest of record 5|follows record 6)",
    # SQLite: seq 3 holds record 4's fields; Redis: record 4 sits where 3 was
    "reorder": "record [34] (does not hold the digest of|follows) record 2",
}
# a ledger row's record holds no previous digest (it is the record before's, read from there): a record moved or
# copied into another row is chained by its place, and named as edited
EXPECTED_LEDGER_ROW = {
    **EXPECTED,
    "insert": "record 6 (was edited|follows record 6)",
    "reorder": "record 3 was edited",
}
SOURCES = {
    "record": 5,  # records appended by the audit service
    "transfer": 5,  # ledger batches' records, in ledger rows of the block not complete yet
    "transfer-block": STATEMENT_BLOCK + 5,  # the same, records 3 to 5 in a complete (anchored) block
}


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("edit", list(EXPECTED))
async def test_a_tampered_record_is_named(
    kernel: sos_kernel.Kernel,
    implements: Implements,
    target: str,
    edit: str,
    source: str,
    request: pytest.FixtureRequest,
) -> None:
    requires(implements, durable=True)  # an engine to edit behind the kernel's back
    await _records(kernel, SOURCES[source], source.split("-")[0])
    assert (await kernel.audit.verify()).ok
    redis_url = kernel.url if target in ("redis", "redis-cluster") else None
    await Engine(kernel, redis_url, ledger_row=source.startswith("transfer")).run(edit)
    report = await kernel.audit.verify()
    assert report.ok is False
    expected = EXPECTED_LEDGER_ROW if source.startswith("transfer") and target == "sqlite" else EXPECTED
    assert re.search(expected[edit], report.problems[0]), report.problems


@pytest.mark.parametrize("column", ["id", "kind", "ok", "k"])
async def test_an_edit_of_the_ledger_row_a_record_is_derived_from_is_named(tmp_path: Path, column: str) -> None:
    """SQLite: a single transfer's record takes its action, outcome and details from its ledger row; an edit of
    the row's id, kind or status, or a move of the row to another sequence, changes the record, and verify()
    names it."""
    kernel = await sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}")
    await _records(kernel, 5, "transfer")
    assert (await kernel.audit.verify()).ok
    with sqlite3.connect(sqlite_path(kernel.url)) as c:
        edit = {"id": "'forged'", "kind": "'pending'", "ok": "0", "k": "k + 100"}[column]
        c.execute(f"UPDATE ledger_records SET {column}={edit} WHERE audit_seq=3")
    report = await kernel.audit.verify()
    await kernel.aclose()
    assert report.problems[:1] == ["record 3 was edited: its digest does not match its fields"]


async def test_a_rewritten_chain_is_caught_by_its_signed_checkpoint(tmp_path: Any) -> None:
    kernel = await sos_kernel.open(f"sqlite:///{tmp_path}/cp.db")  # the check is above the store: one engine
    await _records(kernel, 4)
    await kernel.audit.checkpoint()
    with sqlite3.connect(sqlite_path(kernel.url)) as c:  # rewrite record 2 and re-chain everything after it
        rows = c.execute("SELECT * FROM audit_records WHERE tenant='default' ORDER BY seq").fetchall()
        prev = rows[0][10]
        for row in rows[1:]:
            seq, at_us, kind, actor, action, resource, outcome, details = row[1:9]
            actor = "agent:mallory" if seq == 2 else actor
            at = datetime.fromtimestamp(at_us // 1_000_000, UTC).replace(microsecond=at_us % 1_000_000)
            draft = AuditDraft(
                at=at,
                kind=kind,
                actor=actor,
                action=action,
                resource=resource,
                outcome=outcome,
                details=json.loads(details),
            )
            record = chained("default", prev, seq - 1, draft)
            c.execute(
                "UPDATE audit_records SET actor=?, prev=?, digest=? WHERE tenant='default' AND seq=?",
                (actor, record.prev, record.digest, seq),
            )
            prev = record.digest
    report = await kernel.audit.verify()
    await kernel.aclose()
    assert report.ok is False
    assert report.problems == ["record 4 differs from its signed checkpoint (chain rewritten)"]


def _chain(n: int) -> list[Any]:
    records, prev, at = [], None, datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        draft = AuditDraft(at=at, kind="k", actor=f"agent:a{i}", action="x", resource=f"r{i}", details={"i": i})
        record = chained("t", prev, i, draft)
        records.append(record)
        prev = record.digest
    return records


PLAIN_ID = r"[A-Za-z0-9_.:@/-]{1,40}"
FIELDS = st.sampled_from(["kind", "actor", "action", "resource", "outcome", "details", "at", "seq", "prev", "digest"])


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 12), index=st.integers(0, 11), field=FIELDS, text=st.text(min_size=1, max_size=8))
def test_any_single_record_edit_is_detected(n: int, index: int, field: str, text: str) -> None:
    records = _chain(n)
    i = index % n
    old = getattr(records[i], field)
    new: Any
    if field == "details":
        new = {**old, "x": text}
    elif field == "at":
        new = old.replace(microsecond=(old.microsecond + 1 + len(text)) % 1_000_000)
    elif field == "seq":
        new = old + 1 + len(text)
    else:
        new = old + text
    records[i] = records[i].model_copy(update={field: new})
    walk = ChainWalk("t")
    assert not all(walk.step(r) for r in records)
    assert f"record {records[i].seq}" in walk.problems[0] or f"record {i + 1}" in walk.problems[0]


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3),
    kind=st.sampled_from(["posted", "pending", "post_pending", "void_pending"]),
    failed=st.booleans(),
    sequence=st.integers(1, 2**40),
    actor=st.text(max_size=12),
    seq=st.integers(1, 2**40),
    at_us=st.integers(0, 2**62),
)
def test_the_sqlite_ledger_row_record_is_the_canonical_one(
    ids: list[str], kind: Any, failed: bool, sequence: int, actor: str, seq: int, at_us: int
) -> None:
    """The SQLite ledger writes a batch's record from its transfers without building it: the same action, outcome
    and details as ``ledger_write_record``, and the digest ``text_digest`` gives."""
    from sos_kernel.audit.chain import text_digest
    from sos_kernel.backends.sqlite_ledger import LEDGER_WRITE_KIND, _batch_fields, _ledger_digest
    from sos_kernel.ledger.chain import canonical_metadata
    from sos_kernel.ledger.models import Transfer
    from sos_kernel.ledger.service import ledger_write_record

    at = datetime(2026, 1, 1, tzinfo=UTC)
    status: Any = "failed" if failed else "ok"
    batch = [
        Transfer(i, kind, "a", "b", USD, 1, None, 0, 0, "", {}, at, sequence + n, status, None, None, None, 0, None)
        for n, i in enumerate(ids)
    ]
    record = ledger_write_record(batch)
    action, outcome, text, _derived = _batch_fields(batch)
    assert (action, outcome, text) == (record["action"], record["outcome"], canonical_metadata(record["details"]))
    prev = bytes(range(32))
    expected = text_digest(prev.hex(), seq, at_us, LEDGER_WRITE_KIND, actor, action, "", outcome, text)
    assert _ledger_digest(prev, seq, at_us, actor, action, outcome, text).hex() == expected


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(
        st.one_of(st.text(min_size=1, max_size=40), st.from_regex(PLAIN_ID, fullmatch=True)), min_size=1, max_size=3
    ),
    kind=st.sampled_from(["posted", "pending", "post_pending", "void_pending"]),
    failed=st.booleans(),
    sequence=st.integers(1, 2**40 - 4),
    actor=st.sampled_from(["kernel", "agent:a", "agent:é"]),
)
def test_a_sqlite_ledger_row_reads_back_its_canonical_record(
    ids: list[str], kind: Any, failed: bool, sequence: int, actor: str
) -> None:
    """What a ledger row stores of its batch's record (all of it, or only its sequence, time, actor and digest for
    a batch of one transfer with a plain id) reads back as ``ledger_write_record``'s fields, chained."""
    from sos_kernel.audit import act_as, done_acting
    from sos_kernel.audit.chain import text_digest
    from sos_kernel.backends import sqlite_ledger as sl
    from sos_kernel.ledger.chain import canonical_metadata
    from sos_kernel.ledger.models import Transfer
    from sos_kernel.ledger.service import ledger_write_record

    at = datetime(2026, 1, 1, tzinfo=UTC)
    status: Any = "failed" if failed else "ok"
    batch = [
        Transfer(i, kind, "a", "b", USD, 1, None, 0, 0, "", {}, at, sequence + n, status, None, None, None, 0, None)
        for n, i in enumerate(ids)
    ]
    record = ledger_write_record(batch)
    prev = bytes(range(32))
    with sqlite3.connect(":memory:") as c:
        c.executescript(sl.LEDGER_SCHEMA)
        token = act_as(actor)
        try:
            audit, (seq, digest) = sl._ledger_audit(c.cursor(), "t", (6, prev), 0, 0, batch)
        finally:
            done_acting(token)
        sl._insert(c.cursor(), 1, 1 << sl.SEQ_BITS, batch, [bytes(32)] * len(batch), [(0, 0)] * len(batch), 0.0, audit)
        (row,) = c.execute(f"SELECT {sl._AUDIT_AS_RECORD} FROM ledger_records WHERE audit_seq IS NOT NULL").fetchall()
    s, at_us, k, a, action, resource, outcome, text, stored_prev, hexdigest = row
    assert (s, k, a, resource, stored_prev, hexdigest) == (seq, sl.LEDGER_WRITE_KIND, actor, "", None, digest.hex())
    assert (action, outcome, text) == (record["action"], record["outcome"], canonical_metadata(record["details"]))
    assert hexdigest == text_digest(prev.hex(), 7, at_us, sl.LEDGER_WRITE_KIND, actor, action, "", outcome, text)


async def test_identity_events_are_recorded(kernel: sos_kernel.Kernel) -> None:
    await kernel.tenants.create("idt", "scale")
    view = kernel.tenant("idt")
    issued = await view.tokens.issue(agent="agent:a")
    await view.tokens.revoke(issued.id)
    await kernel.tenants.suspend("idt")
    await kernel.tenants.activate("idt")
    found = [(r.kind, r.resource, r.outcome) for r in await view.audit.events("idt")]
    assert ("token.issued", f"token:{issued.id}", "ok") in found
    assert ("token.revoked", f"token:{issued.id}", "ok") in found
    assert [o for k, _, o in found if k == "tenant.status"] == ["active", "suspended", "active"]
    assert (await view.audit.verify()).ok


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.text(max_size=12), max_size=5),
    count=st.integers(0, 10**6),
    sequence=st.integers(0, 2**62),
    extra=st.booleans(),
)
def test_the_sqlite_details_encoding_is_the_canonical_one(
    ids: list[str], count: int, sequence: int, extra: bool
) -> None:
    """The SQLite store writes a ledger batch's details without ``json.dumps``; the digest stays the chain's."""
    from sos_kernel.backends.sqlite_ledger import details_text
    from sos_kernel.ledger.chain import canonical_metadata

    details: dict[str, Any] = {"ids": ids, "count": count, "sequence": sequence}
    if extra:
        details["more"] = ids[:1]
    assert details_text(details) == canonical_metadata(details)
