"""Skills on SQLite: one row per version and one owner per skill id; an id's owner is claimed, and invocation ids
and counters change, in one transaction. A paid invocation's charge (the ledger's linked batch) and its count are one
transaction too, when the ledger store shares this store's engine (as it does in the SQLite backend)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import IdempotencyConflict
from ..ledger.models import TransferRequest
from ..ledger.store import Applied, LedgerStore
from ..skills.store import SkillDemand, SkillRecord, SkillStats, SkillStore, charged
from .sqlite_governance import append_draft
from .sqlite_ledger import SQLiteLedgerStore

__all__ = ["SKILLS_SCHEMA", "SQLiteSkillStore"]

SKILLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS skill_versions (
    tenant TEXT NOT NULL, skill_id TEXT NOT NULL, version TEXT NOT NULL, card BLOB NOT NULL, digest TEXT NOT NULL,
    verification BLOB NOT NULL, invocations INTEGER NOT NULL, earned INTEGER NOT NULL, last_at REAL,
    by_tenant TEXT NOT NULL, published REAL NOT NULL, PRIMARY KEY (tenant, skill_id, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_invocations (
    tenant TEXT NOT NULL, invocation_id TEXT NOT NULL, PRIMARY KEY (tenant, invocation_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_invocation_bindings (
    tenant TEXT NOT NULL, invocation_id TEXT NOT NULL, binding TEXT NOT NULL,
    PRIMARY KEY (tenant, invocation_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_owners (
    tenant TEXT NOT NULL, skill_id TEXT NOT NULL, author TEXT NOT NULL, PRIMARY KEY (tenant, skill_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_callers (
    tenant TEXT NOT NULL, skill_id TEXT NOT NULL, caller TEXT NOT NULL, paid INTEGER NOT NULL,
    PRIMARY KEY (tenant, skill_id, caller)) WITHOUT ROWID;
"""

_COLUMNS = "skill_id, version, card, digest, verification, invocations, earned, last_at, by_tenant, published"


def _record(row: Any) -> SkillRecord:
    skill_id, version, card, digest, verification, invocations, earned, last_at, by_tenant, published = row
    stats = SkillStats(int(invocations), int(earned), last_at, json.loads(by_tenant))
    return SkillRecord(skill_id, version, bytes(card), digest, bytes(verification), stats, published)


class SQLiteSkillStore(SkillStore):
    """Skill primitives as SQLite transactions; a verification given a record appends it in its own transaction."""

    audits_writes: bool = True

    def __init__(self, engine: Any) -> None:
        self._db = engine

    @staticmethod
    def _get(c: sqlite3.Connection, tenant: str, skill_id: str, version: str) -> SkillRecord | None:
        row = c.execute(
            f"SELECT {_COLUMNS} FROM skill_versions WHERE tenant=? AND skill_id=? AND version=?",
            (tenant, skill_id, version),
        ).fetchone()
        return _record(row) if row else None

    @staticmethod
    def _claim(c: sqlite3.Connection, tenant: str, skill_id: str, author: str) -> str:
        c.execute("INSERT OR IGNORE INTO skill_owners VALUES (?,?,?)", (tenant, skill_id, author))
        row = c.execute("SELECT author FROM skill_owners WHERE tenant=? AND skill_id=?", (tenant, skill_id)).fetchone()
        return str(row[0])

    async def put_version(self, tenant: str, record: SkillRecord, author: str) -> tuple[SkillRecord | None, str]:
        def tx(c: sqlite3.Connection) -> tuple[SkillRecord | None, str]:
            owner = self._claim(c, tenant, record.skill_id, author)
            existing = self._get(c, tenant, record.skill_id, record.version)
            if owner != author or existing is not None:
                return existing, owner
            s = record.stats
            c.execute(
                "INSERT INTO skill_versions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    tenant,
                    record.skill_id,
                    record.version,
                    record.card,
                    record.digest,
                    record.verification,
                    s.total_invocations,
                    s.total_earned_micros,
                    s.last_invocation_at,
                    json.dumps(s.invocations_by_tenant),
                    record.published_at,
                ),
            )
            return None, owner

        result: tuple[SkillRecord | None, str] = await self._db.write(tx)
        return result

    async def get_version(self, tenant: str, skill_id: str, version: str) -> SkillRecord | None:
        result: SkillRecord | None = await self._db.read(lambda c: self._get(c, tenant, skill_id, version))
        return result

    async def versions(self, tenant: str, skill_id: str) -> list[str]:
        def tx(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT version FROM skill_versions WHERE tenant=? AND skill_id=?", (tenant, skill_id))
            return [r[0] for r in rows.fetchall()]

        result: list[str] = await self._db.read(tx)
        return result

    async def skill_ids(self, tenant: str) -> list[str]:
        def tx(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT DISTINCT skill_id FROM skill_versions WHERE tenant=? ORDER BY skill_id", (tenant,))
            return [r[0] for r in rows.fetchall()]

        result: list[str] = await self._db.read(tx)
        return result

    async def set_verification(
        self, tenant: str, skill_id: str, version: str, verification: bytes, audit: Any = None
    ) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE skill_versions SET verification=? WHERE tenant=? AND skill_id=? AND version=?",
                (verification, tenant, skill_id, version),
            )
            if cur.rowcount > 0:  # the verification's record commits with it
                append_draft(c, tenant, audit)
            return cur.rowcount > 0

        result: bool = await self._db.write(tx)
        return result

    async def bind_invocation(self, tenant: str, invocation_id: str, binding: str) -> str:
        def tx(c: sqlite3.Connection) -> str:
            key = (tenant, invocation_id)
            c.execute("INSERT OR IGNORE INTO skill_invocation_bindings VALUES (?,?,?)", (*key, binding))
            row = c.execute(
                "SELECT binding FROM skill_invocation_bindings WHERE tenant=? AND invocation_id=?", key
            ).fetchone()
            return str(row[0])

        result: str = await self._db.write(tx)
        return result

    async def counted(self, tenant: str, invocation_id: str) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            sql = "SELECT 1 FROM skill_invocations WHERE tenant=? AND invocation_id=?"
            return c.execute(sql, (tenant, invocation_id)).fetchone() is not None

        result: bool = await self._db.read(tx)
        return result

    @staticmethod
    def _count(
        c: sqlite3.Connection,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
    ) -> bool:
        cur = c.execute("INSERT OR IGNORE INTO skill_invocations VALUES (?,?)", (tenant, invocation_id))
        if cur.rowcount == 0:
            return False
        row = c.execute(
            "SELECT by_tenant FROM skill_versions WHERE tenant=? AND skill_id=? AND version=?",
            (tenant, skill_id, version),
        ).fetchone()
        by_tenant = json.loads(row[0])
        by_tenant[caller_tenant] = by_tenant.get(caller_tenant, 0) + 1
        c.execute(
            "UPDATE skill_versions SET invocations=invocations+1, earned=earned+?, last_at=?, by_tenant=?"
            " WHERE tenant=? AND skill_id=? AND version=?",
            (price, now, json.dumps(by_tenant), tenant, skill_id, version),
        )
        return True

    async def record_invocation(
        self,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
    ) -> bool:
        args = (tenant, skill_id, version, invocation_id, caller_tenant, price, now)
        result: bool = await self._db.write(lambda c: self._count(c, *args))
        return result

    async def invoke(
        self,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
        ledger: LedgerStore,
        charge: Sequence[TransferRequest],
    ) -> tuple[Applied, bool]:
        args = (tenant, skill_id, version, invocation_id, caller_tenant, price, now)
        if not isinstance(ledger, SQLiteLedgerStore) or ledger.engine is not self._db:
            return await super().invoke(*args, ledger, charge)  # another file or engine: two steps

        def count(c: sqlite3.Connection, applied: Applied) -> bool:
            if not charged(applied):
                return False
            if not self._count(c, *args):  # money moved for an id already counted: undo it all
                raise IdempotencyConflict(
                    f"invocation id {invocation_id!r} was already used", details={"invocation_id": invocation_id}
                )
            return True

        return await ledger.apply_then(tenant, charge, now, count)

    async def note_caller(self, tenant: str, skill_id: str, caller: str, paid: bool) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO skill_callers VALUES (?,?,?,?)"
                " ON CONFLICT (tenant, skill_id, caller) DO UPDATE SET paid = max(paid, excluded.paid)",
                (tenant, skill_id, caller, int(paid)),
            )

        await self._db.write(tx)

    async def demand(self, tenant: str) -> dict[str, SkillDemand]:
        def tx(c: sqlite3.Connection) -> dict[str, SkillDemand]:
            sql = "SELECT skill_id, count(*), sum(paid) FROM skill_callers WHERE tenant=? GROUP BY skill_id"
            return {r[0]: SkillDemand(int(r[1]), int(r[2])) for r in c.execute(sql, (tenant,)).fetchall()}

        result: dict[str, SkillDemand] = await self._db.read(tx)
        return result
