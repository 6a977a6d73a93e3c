"""Skills on SQLite: one row per version and one owner per skill id; an id's owner is claimed, and invocation ids
and counters change, in one transaction. A paid invocation's charge (the ledger's linked batch) and its count are one
transaction too, with the invocation id's binding and its ``sos.skill_executed`` message, when the ledger and bus
stores share this store's engine (as they do in the SQLite backend): the message exists iff the charge does."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..bus.store import Appended, BusStore, Entry, Retention
from ..errors import IdempotencyConflict
from ..ledger.store import Applied, LedgerStore
from ..skills.store import (
    InvocationStep,
    Invoked,
    SkillBounds,
    SkillDemand,
    SkillRecord,
    SkillStats,
    SkillStore,
    bound_exceeded,
    paid,
)
from .sqlite_engine import SQLiteEngine
from .sqlite_governance import append_draft
from .sqlite_ledger import SQLiteLedgerStore

__all__ = ["SKILLS_SCHEMA", "SKILLS_UPGRADE_TO_6", "SQLiteSkillStore"]

SKILLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS skill_versions (
    tenant TEXT NOT NULL, skill_id TEXT NOT NULL, version TEXT NOT NULL, card BLOB NOT NULL, digest TEXT NOT NULL,
    verification BLOB NOT NULL, invocations INTEGER NOT NULL, earned INTEGER NOT NULL, last_at REAL,
    by_tenant TEXT NOT NULL, published REAL NOT NULL, PRIMARY KEY (tenant, skill_id, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_invocations (
    tenant TEXT NOT NULL, invocation_id TEXT NOT NULL, binding TEXT, counted INTEGER NOT NULL,
    PRIMARY KEY (tenant, invocation_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_owners (
    tenant TEXT NOT NULL, skill_id TEXT NOT NULL, author TEXT NOT NULL, PRIMARY KEY (tenant, skill_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skill_callers (
    tenant TEXT NOT NULL, skill_id TEXT NOT NULL, caller TEXT NOT NULL, paid INTEGER NOT NULL,
    PRIMARY KEY (tenant, skill_id, caller)) WITHOUT ROWID;
"""

SKILLS_UPGRADE_TO_6 = (
    # the binding and the counted mark of an invocation id, two tables keyed alike in layout 5, become one row
    # (binding NULL: counted by a release that kept no binding); a file made before skills existed has neither
    "CREATE TABLE IF NOT EXISTS skill_invocations (tenant TEXT NOT NULL, invocation_id TEXT NOT NULL,"
    " PRIMARY KEY (tenant, invocation_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS skill_invocation_bindings (tenant TEXT NOT NULL, invocation_id TEXT NOT NULL,"
    " binding TEXT NOT NULL, PRIMARY KEY (tenant, invocation_id)) WITHOUT ROWID",
    "CREATE TABLE skill_invocations_6 (tenant TEXT NOT NULL, invocation_id TEXT NOT NULL, binding TEXT,"
    " counted INTEGER NOT NULL, PRIMARY KEY (tenant, invocation_id)) WITHOUT ROWID",
    "INSERT INTO skill_invocations_6 SELECT b.tenant, b.invocation_id, b.binding, EXISTS (SELECT 1 FROM"
    " skill_invocations i WHERE i.tenant=b.tenant AND i.invocation_id=b.invocation_id)"
    " FROM skill_invocation_bindings b",
    "INSERT INTO skill_invocations_6 SELECT tenant, invocation_id, NULL, 1 FROM skill_invocations i WHERE NOT EXISTS"
    " (SELECT 1 FROM skill_invocation_bindings b WHERE b.tenant=i.tenant AND b.invocation_id=i.invocation_id)",
    "DROP TABLE skill_invocations",
    "DROP TABLE skill_invocation_bindings",
    "ALTER TABLE skill_invocations_6 RENAME TO skill_invocations",
)
"""Layout 5 -> 6 of the skills tables (run in order by the SQLite backend's migration of that step)."""

# binds and (when the invocation counts) marks a new id in one row; returns nothing for a known one
_MARK = "INSERT INTO skill_invocations VALUES (?,?,?,?) ON CONFLICT DO NOTHING RETURNING 1"

_COLUMNS = "skill_id, version, card, digest, verification, invocations, earned, last_at, by_tenant, published"


def _record(row: Any) -> SkillRecord:
    skill_id, version, card, digest, verification, invocations, earned, last_at, by_tenant, published = row
    stats = SkillStats(int(invocations), int(earned), last_at, json.loads(by_tenant))
    return SkillRecord(skill_id, version, bytes(card), digest, bytes(verification), stats, published)


class SQLiteSkillStore(SkillStore):
    """Skill primitives as SQLite transactions; a verification given a record appends it in its own transaction."""

    audits_writes: bool = True
    checks_choice: bool = True

    def __init__(self, engine: Any) -> None:
        self._db = engine
        self._bus_seen: tuple[BusStore, _AppendsWithin | None] | None = None

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

    async def put_version(
        self, tenant: str, record: SkillRecord, author: str, bounds: SkillBounds | None = None
    ) -> tuple[SkillRecord | None, str]:
        def tx(c: sqlite3.Connection) -> tuple[SkillRecord | None, str]:
            if bounds is not None:
                _check_bounds(c, tenant, record, author, bounds)
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

    @staticmethod
    def _versions(c: sqlite3.Connection, tenant: str, skill_id: str) -> list[str]:
        rows = c.execute("SELECT version FROM skill_versions WHERE tenant=? AND skill_id=?", (tenant, skill_id))
        return [r[0] for r in rows.fetchall()]

    async def versions(self, tenant: str, skill_id: str) -> list[str]:
        result: list[str] = await self._db.read(lambda c: self._versions(c, tenant, skill_id))
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
        result: str = await self._db.write(lambda c: self._bind(c, tenant, invocation_id, binding))
        return result

    async def counted(self, tenant: str, invocation_id: str) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            sql = "SELECT 1 FROM skill_invocations WHERE tenant=? AND invocation_id=? AND counted"
            return c.execute(sql, (tenant, invocation_id)).fetchone() is not None

        result: bool = await self._db.read(tx)
        return result

    @staticmethod
    def _mark(
        c: sqlite3.Connection, tenant: str, invocation_id: str, binding: str | None, counts: bool
    ) -> tuple[str | None, bool]:
        """The id's one row: bind it to ``binding`` unless it is bound (None binds nothing) and, if ``counts`` and
        it is bound to ``binding`` (or None is given), mark it counted unless it is. Returns ``(the binding on
        record, whether it was marked counted now)``; an id bound to another binding is left as it is."""
        key = (tenant, invocation_id)
        # a new id (the usual case) is bound and marked by one statement; a known one is read back
        if c.execute(_MARK, (*key, binding, int(counts))).fetchall():
            return binding, counts
        bound, counted = c.execute(
            "SELECT binding, counted FROM skill_invocations WHERE tenant=? AND invocation_id=?", key
        ).fetchone()
        if binding is not None and bound is not None and bound != binding:
            return bound, False
        marks = counts and not counted
        if marks or (bound is None and binding is not None):
            c.execute(
                "UPDATE skill_invocations SET binding=coalesce(binding, ?), counted=max(counted, ?)"
                " WHERE tenant=? AND invocation_id=?",
                (binding, int(counts), *key),
            )
        return bound if bound is not None else binding, marks

    @staticmethod
    def _tally(
        c: sqlite3.Connection,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
    ) -> None:
        """Move the version's counters by one invocation (marked counted in the same transaction)."""
        # the caller tenant's count moves inside the row's JSON in the same statement (any key: json_each compares
        # it as text, json_object writes it as it is)
        c.execute(
            "UPDATE skill_versions SET invocations=invocations+1, earned=earned+?1, last_at=?2,"
            " by_tenant=json_patch(by_tenant, json_object(?3,"
            " coalesce((SELECT value FROM json_each(by_tenant) WHERE key=?3), 0) + 1))"
            " WHERE tenant=?4 AND skill_id=?5 AND version=?6",
            (price, now, caller_tenant, tenant, skill_id, version),
        )

    @classmethod
    def _count(
        cls,
        c: sqlite3.Connection,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
    ) -> bool:
        if not cls._mark(c, tenant, invocation_id, None, True)[1]:
            return False
        cls._tally(c, tenant, skill_id, version, invocation_id, caller_tenant, price, now)
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

    @classmethod
    def _bind(cls, c: sqlite3.Connection, tenant: str, invocation_id: str, binding: str) -> str:
        return str(cls._mark(c, tenant, invocation_id, binding, False)[0])

    def _own_bus(self, bus: BusStore) -> _AppendsWithin | None:
        """``bus`` if it can append inside this store's transactions (checked once per bus store: a Protocol check
        costs microseconds)."""
        seen = self._bus_seen
        if seen is None or seen[0] is not bus:
            own = bus if isinstance(bus, _AppendsWithin) and bus.engine.conn is self._db.conn else None
            seen = self._bus_seen = (bus, own)
        return seen[1]

    async def invoke(self, step: InvocationStep, ledger: LedgerStore, bus: BusStore, retention: Retention) -> Invoked:
        own_ledger = ledger if isinstance(ledger, SQLiteLedgerStore) and ledger.engine is self._db else None
        if step.charge and own_ledger is None:  # another file or engine: several steps
            if step.chosen_from is not None and await self.versions(step.tenant, step.skill_id) != step.chosen_from:
                return _STALE
            return await super().invoke(step, ledger, bus, retention)
        own_bus = self._own_bus(bus)

        def finish(c: sqlite3.Connection, applied: Applied | None) -> Invoked:
            if step.chosen_from is not None and self._versions(c, step.tenant, step.skill_id) != step.chosen_from:
                raise _Stale  # rolls back the charge: it was priced for another version
            counts = applied is None or paid(applied)
            bound, marked = self._mark(c, step.tenant, step.invocation_id, step.binding, counts)
            if bound != step.binding:
                raise _Unbound(str(bound))  # rolls back the charge applied in this transaction
            announces = own_bus is not None
            if not marked:
                if counts and applied is not None and not applied.existing:  # money moved for an id counted already
                    raise IdempotencyConflict(
                        f"invocation id {step.invocation_id!r} was already used",
                        details={"invocation_id": step.invocation_id},
                    )
                return Invoked(step.binding, applied, False, announces)
            self._tally(c, *step.count_args())
            if own_bus is not None:
                own_bus.append_in(c, step.tenant, [step.message], retention)
            return Invoked(step.binding, applied, True, announces)

        try:
            if own_ledger is not None and step.charge:
                invoked = (await own_ledger.apply_then(step.tenant, step.charge, step.now, finish))[1]
            else:
                invoked = await self._db.write(lambda c: finish(c, None))
        except _Unbound as unbound:
            return Invoked(unbound.bound, None, False, False)
        except _Stale:
            return _STALE
        if own_bus is not None and invoked.counted:
            own_bus.appended(step.tenant, {step.message[0]})
        return invoked

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


@runtime_checkable
class _AppendsWithin(Protocol):
    """A bus store that appends inside another store's open transaction (``SQLiteBusStore``, which imports this
    module, so it is recognised by what it does)."""

    @property
    def engine(self) -> SQLiteEngine: ...

    def append_in(
        self, c: sqlite3.Connection, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention
    ) -> list[Appended]: ...

    def appended(self, tenant: str, addresses: set[str]) -> None: ...


class _Unbound(Exception):
    """The invocation id is bound to another outcome: the transaction is rolled back (nothing of it is kept)."""

    def __init__(self, bound: str) -> None:
        super().__init__(bound)
        self.bound = bound


class _Stale(Exception):
    """The skill's versions changed since the version was chosen: the transaction is rolled back."""


_STALE = Invoked("", None, False, False, stale=True)


def _check_bounds(c: sqlite3.Connection, tenant: str, record: SkillRecord, author: str, bounds: SkillBounds) -> None:
    """Raise (the transaction writes nothing) when inserting ``record`` would pass a bound; a replay, another
    owner's id and an existing version pass through to the caller's checks."""
    key = (tenant, record.skill_id)
    row = c.execute("SELECT author FROM skill_owners WHERE tenant=? AND skill_id=?", key).fetchone()
    if row is not None:
        if (
            str(row[0]) != author
            or c.execute(
                "SELECT 1 FROM skill_versions WHERE tenant=? AND skill_id=? AND version=?", (*key, record.version)
            ).fetchone()
        ):
            return
        count = c.execute("SELECT COUNT(*) FROM skill_versions WHERE tenant=? AND skill_id=?", key).fetchone()[0]
        if count >= bounds.versions_max:
            raise bound_exceeded("versions", bounds, record.skill_id)
        return
    if c.execute("SELECT COUNT(*) FROM skill_owners WHERE tenant=?", (tenant,)).fetchone()[0] >= bounds.skills_max:
        raise bound_exceeded("skills", bounds, record.skill_id)
    mine = c.execute("SELECT COUNT(*) FROM skill_owners WHERE tenant=? AND author=?", (tenant, author)).fetchone()[0]
    if mine >= bounds.author_skills_max:
        raise bound_exceeded("author", bounds, record.skill_id)
