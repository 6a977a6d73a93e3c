"""Governance and audit stores on SQLite: each primitive one transaction (``BEGIN IMMEDIATE`` for writes), so an
append never forks a chain and a budget check-and-count never races, across processes sharing the file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..audit.chain import audit_genesis, chained, text_digest
from ..audit.models import AuditDraft, AuditRecord, Checkpoint
from ..audit.store import AuditStore
from ..errors import InvariantViolation
from ..governance import store as _store
from ..governance.store import Charge, GovernanceStore
from ..ledger.chain import canonical_metadata, micros
from .sqlite_ledger import AUDIT_COUNT, AUDIT_HEAD, AUDIT_PAGE, details_text

__all__ = [
    "GOVERNANCE_SCHEMA",
    "SQLiteAuditStore",
    "SQLiteGovernanceStore",
    "append_audit",
    "append_audit_row",
    "append_draft",
]

GOVERNANCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS governance_policies (
    tenant TEXT NOT NULL PRIMARY KEY, revision INTEGER NOT NULL, document TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS governance_counters (
    tenant TEXT NOT NULL, key TEXT NOT NULL, count INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (tenant, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS governance_approvals (
    tenant TEXT NOT NULL, id TEXT NOT NULL, document TEXT NOT NULL, expires REAL NOT NULL, pending INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_records (
    tenant TEXT NOT NULL, seq INTEGER NOT NULL, at_us INTEGER NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL, details TEXT NOT NULL, prev TEXT NOT NULL,
    digest TEXT NOT NULL, PRIMARY KEY (tenant, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_ledger_blocks (
    tn INTEGER NOT NULL, seq INTEGER NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (tn, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tenant TEXT NOT NULL, seq INTEGER NOT NULL, document TEXT NOT NULL, PRIMARY KEY (tenant, seq)) WITHOUT ROWID;
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def append_audit(c: sqlite3.Connection, tenant: str, draft: AuditDraft) -> AuditRecord:
    """Chain ``draft`` inside the caller's open write transaction."""
    row = c.execute(_HEAD, (tenant,)).fetchone()
    record = chained(tenant, row[1] if row else None, int(row[0]) if row else 0, draft)
    details = canonical_metadata(dict(record.details)) or "{}"
    c.execute(_APPEND, (tenant, record.seq, micros(record.at), *_text(record), details, record.prev, record.digest))
    return record


def append_audit_row(
    c: sqlite3.Connection | sqlite3.Cursor, tenant: str, kind: str, actor: str, fields: dict[str, Any]
) -> None:
    """Append one record inside the caller's open write transaction, without building models (``fields``: action,
    outcome, details), e.g. a store recording its own effect in the same transaction. The head is read in the
    transaction, including the ledger rows holding records (so processes sharing the file never
    fork the chain), and the details encoded once."""
    row = c.execute(_HEAD, (tenant,)).fetchone()
    seq, prev = (row[0], row[1]) if row else (0, audit_genesis(tenant))
    at_us = time.time_ns() // 1000
    action, outcome, resource = fields["action"], fields["outcome"], fields.get("resource", "")
    text = details_text(fields["details"])
    digest = text_digest(prev, seq + 1, at_us, kind, actor, action, resource, outcome, text)
    c.execute(_APPEND, (tenant, seq + 1, at_us, kind, actor, action, resource, outcome, text or "{}", prev, digest))


def append_draft(c: sqlite3.Connection | sqlite3.Cursor, tenant: str, draft: AuditDraft | None) -> None:
    """Append ``draft`` (when given) inside the caller's open write transaction, with its effect: a store write
    and its audit record commit together or not at all."""
    if draft is None:
        return
    fields = {"action": draft.action, "resource": draft.resource, "outcome": draft.outcome, "details": draft.details}
    append_audit_row(c, tenant, draft.kind, draft.actor, fields)


def _text(r: AuditRecord) -> tuple[str, ...]:
    return (r.kind, r.actor, r.action, r.resource, r.outcome)


_HEAD = AUDIT_HEAD  # the chain's head, whether in audit_records or in a ledger row
_APPEND = "INSERT INTO audit_records VALUES (?,?,?,?,?,?,?,?,?,?,?)"


def _with_prev(rows: list[Any], prev: str | None) -> list[Any]:
    """``rows`` (in sequence order) with the previous digest of each record held in a ledger row (NULL there): the
    digest of the row before it (``prev`` for the first: the record before the page's, None when it is not there,
    and then ``verify()`` has named the gap already)."""
    out = []
    for row in rows:
        if row[8] is None:
            row = (*row[:8], prev or "", row[9])
        out.append(row)
        prev = row[9]
    return out


def _record(tenant: str, row: Any) -> AuditRecord:
    seq, at_us, kind, actor, action, resource, outcome, details, prev, digest = row
    try:
        return AuditRecord(
            tenant=tenant,
            seq=seq,
            at=_EPOCH + timedelta(microseconds=int(at_us)),
            kind=kind,
            actor=actor,
            action=action,
            resource=resource,
            outcome=outcome,
            details=json.loads(details),
            prev=prev,
            digest=digest,
        )
    except (ValueError, TypeError) as exc:
        raise InvariantViolation(f"audit record {seq} of {tenant!r} is malformed: {exc}", details={"seq": seq}) from exc


class SQLiteGovernanceStore(GovernanceStore):
    """Policies, counters and approvals in the kernel's SQLite file. A write given an audit record appends it in
    its own transaction (``audits_writes``)."""

    audits_writes: bool = True

    def __init__(self, engine: Any) -> None:
        self._db = engine

    async def get_policy(self, tenant: str) -> tuple[int, str] | None:
        def tx(c: sqlite3.Connection) -> tuple[int, str] | None:
            row = c.execute("SELECT revision, document FROM governance_policies WHERE tenant=?", (tenant,)).fetchone()
            return None if row is None or row[1] is None else (int(row[0]), str(row[1]))

        result: tuple[int, str] | None = await self._db.read(tx)
        return result

    async def put_policy(self, tenant: str, document: str, audit: Any = None) -> int:
        def tx(c: sqlite3.Connection) -> int:
            c.execute(
                "INSERT INTO governance_policies VALUES (?,1,?) ON CONFLICT (tenant) DO UPDATE"
                " SET revision=revision+1, document=excluded.document",
                (tenant, document),
            )
            revision = int(
                c.execute("SELECT revision FROM governance_policies WHERE tenant=?", (tenant,)).fetchone()[0]
            )
            if audit is not None:
                append_draft(c, tenant, audit.model_copy(update={"details": {**audit.details, "revision": revision}}))
            return revision

        result: int = await self._db.write(tx)
        return result

    async def delete_policy(self, tenant: str, audit: Any = None) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE governance_policies SET document=NULL WHERE tenant=? AND document IS NOT NULL", (tenant,)
            )
            if cur.rowcount > 0:
                append_draft(c, tenant, audit)
            return cur.rowcount > 0

        result: bool = await self._db.write(tx)
        return result

    async def consume(self, tenant: str, charges: Sequence[Charge], now: float) -> int:
        def tx(c: sqlite3.Connection) -> int:
            c.execute("DELETE FROM governance_counters WHERE tenant=? AND expires<=?", (tenant, now))
            for i, ch in enumerate(charges):
                row = c.execute(
                    "SELECT count FROM governance_counters WHERE tenant=? AND key=?", (tenant, ch.key)
                ).fetchone()
                if (int(row[0]) if row else 0) + ch.amount > ch.maximum:
                    return i
            for ch in charges:
                c.execute(
                    "INSERT INTO governance_counters VALUES (?,?,?,?) ON CONFLICT (tenant, key) DO UPDATE"
                    " SET count=count+excluded.count",
                    (tenant, ch.key, ch.amount, ch.expires_at),
                )
            return -1

        result: int = await self._db.write(tx)
        return result

    async def put_approval(
        self, tenant: str, id: str, document: str, expires_at: float, pending_max: int, now: float, audit: Any = None
    ) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM governance_approvals WHERE tenant=? AND pending=1 AND expires<=?", (tenant, now))
            c.execute(
                "DELETE FROM governance_approvals WHERE tenant=? AND id IN (SELECT id FROM governance_approvals"
                " WHERE tenant=? AND pending=0 AND expires<=? LIMIT ?)",
                (tenant, tenant, now - _store.APPROVALS_DECIDED_KEPT_S, _store.APPROVALS_PURGE_MAX),
            )
            count = c.execute(
                "SELECT count(*) FROM governance_approvals WHERE tenant=? AND pending=1", (tenant,)
            ).fetchone()[0]
            if count >= pending_max:
                return False
            c.execute("INSERT INTO governance_approvals VALUES (?,?,?,?,1)", (tenant, id, document, expires_at))
            append_draft(c, tenant, audit)
            return True

        result: bool = await self._db.write(tx)
        return result

    async def get_approval(self, tenant: str, id: str) -> str | None:
        def tx(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT document FROM governance_approvals WHERE tenant=? AND id=?", (tenant, id)
            ).fetchone()
            return None if row is None else str(row[0])

        result: str | None = await self._db.read(tx)
        return result

    async def decide_approval(self, tenant: str, id: str, document: str, audit: Any = None) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE governance_approvals SET document=?, pending=0 WHERE tenant=? AND id=? AND pending=1",
                (document, tenant, id),
            )
            if cur.rowcount > 0:
                append_draft(c, tenant, audit)
            return cur.rowcount > 0

        result: bool = await self._db.write(tx)
        return result

    async def list_approvals(self, tenant: str, now: float) -> list[str]:
        def tx(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT document FROM governance_approvals WHERE tenant=? AND pending=1 AND expires>? ORDER BY expires",
                (tenant, now),
            ).fetchall()
            return [str(r[0]) for r in rows]

        result: list[str] = await self._db.read(tx)
        return result


class SQLiteAuditStore(AuditStore):
    """The audit chain in the table ``audit_records`` and in the last ledger row of each ledger batch (see
    :mod:`sos_kernel.backends.sqlite_ledger`), which every read here includes; checkpoints in
    ``audit_checkpoints``."""

    def __init__(self, engine: Any) -> None:
        self._db = engine

    async def append(self, tenant: str, draft: AuditDraft) -> AuditRecord:
        result: AuditRecord = await self._db.write(lambda c: append_audit(c, tenant, draft))
        return result

    async def page(self, tenant: str, after: int, limit: int) -> list[AuditRecord]:
        def tx(c: sqlite3.Connection) -> list[Any]:
            # from record `after` itself: its digest is the previous one of the next, if that is a ledger row's
            return c.execute(AUDIT_PAGE, (tenant, max(after - 1, 0), limit + 1)).fetchall()

        rows = await self._db.read(tx)
        prev: str | None = audit_genesis(tenant) if after <= 0 else None
        if after > 0 and rows and rows[0][0] == after:
            prev, rows = rows[0][9], rows[1:]
        return [_record(tenant, r) for r in _with_prev(rows[:limit], prev)]

    async def head(self, tenant: str) -> tuple[int, str | None]:
        def tx(c: sqlite3.Connection) -> tuple[int, str | None]:
            row = c.execute(_HEAD, (tenant,)).fetchone()
            return (int(row[0]), str(row[1])) if row else (0, None)

        result: tuple[int, str | None] = await self._db.read(tx)
        return result

    async def count(self, tenant: str) -> int:
        def tx(c: sqlite3.Connection) -> int:
            return int(c.execute(AUDIT_COUNT, (tenant,)).fetchone()[0])

        result: int = await self._db.read(tx)
        return result

    async def put_checkpoint(self, checkpoint: Checkpoint) -> None:
        doc = checkpoint.model_dump_json()
        await self._db.write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO audit_checkpoints VALUES (?,?,?)", (checkpoint.tenant, checkpoint.seq, doc)
            )
        )

    async def checkpoints(self, tenant: str) -> list[Checkpoint]:
        def tx(c: sqlite3.Connection) -> list[Any]:
            return c.execute("SELECT document FROM audit_checkpoints WHERE tenant=? ORDER BY seq", (tenant,)).fetchall()

        rows = await self._db.read(tx)
        return [Checkpoint.model_validate_json(r[0]) for r in rows]
