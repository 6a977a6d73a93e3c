"""Memories on SQLite, durable in the kernel's file: a row per memory (vector as float32 bytes), the namespace's
space and count, a version per namespace, the tenant's usage and each owner group's (``memory_groups``: an
agent's own namespaces, or the shared ones), each write one ``BEGIN IMMEDIATE`` transaction.

Search is exact: numpy over the namespace's stored vectors, in an in-process snapshot brought up to date when the
namespace's version moved (one small read per query, so another process's writes are seen at once): each write
logs the ids it changed (``memory_log``, the last ``LOG_VERSIONS_MAX`` writes), so the refresh reads only those.
That is the plain path because it is the faster exact one here: sqlite-vec's brute-force scan over the same
vectors measured 10-13x slower than numpy (see docs/benchmarks.md, ``python -m benchmarks memory``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..memory.store import (
    LOG_VERSIONS_MAX,
    MemoryStore,
    PutOutcome,
    Quota,
    Snapshot,
    SnapshotCache,
    Space,
    StoredMemory,
    group_of,
)

__all__ = ["MEMORY_SCHEMA", "MEMORY_UPGRADE_TO_6", "SQLiteMemoryStore"]

_ITEMS = """CREATE TABLE IF NOT EXISTS memory_items (
    tenant TEXT NOT NULL, namespace TEXT NOT NULL, id TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,
    vector BLOB NOT NULL, digest TEXT NOT NULL, created REAL NOT NULL, expires REAL, size INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace, id))"""
_GROUPS = """CREATE TABLE IF NOT EXISTS memory_groups (
    tenant TEXT NOT NULL, grp TEXT NOT NULL, count INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, grp)) WITHOUT ROWID"""

MEMORY_SCHEMA = f"""
{_ITEMS};
CREATE INDEX IF NOT EXISTS memory_items_expires ON memory_items (tenant, expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS memory_spaces (
    tenant TEXT NOT NULL, namespace TEXT NOT NULL, space TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memory_versions (
    tenant TEXT NOT NULL, namespace TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memory_log (
    tenant TEXT NOT NULL, namespace TEXT NOT NULL, version INTEGER NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (tenant, namespace, version, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memory_usage (
    tenant TEXT NOT NULL PRIMARY KEY, count INTEGER NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID;
{_GROUPS};
"""

MEMORY_UPGRADE_TO_6 = (
    # each owner group's count and bytes, summed once from the memories stored (a file made before memory existed
    # gets its items table here, empty, as the schema would make it)
    _ITEMS,
    _GROUPS,
    "INSERT INTO memory_groups SELECT tenant, grp, count(*), sum(size) FROM (SELECT tenant, size, CASE WHEN"
    " substr(namespace, 1, 6) = 'agent:' THEN (CASE WHEN instr(namespace, '/') > 0 THEN substr(namespace, 1,"
    " instr(namespace, '/') - 1) ELSE namespace END) ELSE '' END AS grp FROM memory_items) GROUP BY tenant, grp",
)
"""Layout 5 -> 6 of the memory tables (run in order by the SQLite backend's migration of that step): the groups are
:func:`~sos_kernel.memory.store.group_of` in SQL."""

_COLUMNS = "id, text, metadata, vector, digest, created, expires"


def _row(row: Any) -> StoredMemory:
    id, text, metadata, vector, digest, created, expires = row
    return StoredMemory(id, text, metadata, bytes(vector), digest, created, expires)


def _bump(c: sqlite3.Connection, tenant: str, namespace: str, ids: Sequence[str]) -> None:
    """A new version of the namespace, logging the ``ids`` it changed (and dropping the log's oldest writes)."""
    # versions are never deleted, so a namespace made again never reuses a version a cache may hold
    (version,) = c.execute(
        "INSERT INTO memory_versions VALUES (?,?,1) ON CONFLICT (tenant, namespace) DO UPDATE SET version=version+1"
        " RETURNING version",
        (tenant, namespace),
    ).fetchone()
    c.executemany("INSERT OR IGNORE INTO memory_log VALUES (?,?,?,?)", [(tenant, namespace, version, i) for i in ids])
    c.execute(
        "DELETE FROM memory_log WHERE tenant=? AND namespace=? AND version<=?",
        (tenant, namespace, version - LOG_VERSIONS_MAX),
    )


def _usage(c: sqlite3.Connection, tenant: str) -> tuple[int, int]:
    row = c.execute("SELECT count, bytes FROM memory_usage WHERE tenant=?", (tenant,)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _group_usage(c: sqlite3.Connection, tenant: str, group: str) -> tuple[int, int]:
    row = c.execute("SELECT count, bytes FROM memory_groups WHERE tenant=? AND grp=?", (tenant, group)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


class SQLiteMemoryStore(MemoryStore):
    """Memory primitives as SQLite transactions (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self._db = engine
        self._big = engine.offloading()  # batches and snapshots may be megabytes: off the event loop
        self._cache = SnapshotCache()

    async def space(self, tenant: str, namespace: str) -> Space | None:
        def tx(c: sqlite3.Connection) -> Space | None:
            row = c.execute(
                "SELECT space FROM memory_spaces WHERE tenant=? AND namespace=?", (tenant, namespace)
            ).fetchone()
            return Space.decode(row[0]) if row else None

        result: Space | None = await self._db.read(tx)
        return result

    async def put_many(
        self, tenant: str, namespace: str, space: Space, memories: Sequence[StoredMemory], quota: Quota, now: float
    ) -> PutOutcome:
        def tx(c: sqlite3.Connection) -> PutOutcome:
            row = c.execute(
                "SELECT space FROM memory_spaces WHERE tenant=? AND namespace=?", (tenant, namespace)
            ).fetchone()
            if row is not None and Space.decode(row[0]) != space:
                return PutOutcome("space", space=Space.decode(row[0]))
            if row is None:
                (spaces,) = c.execute("SELECT count(*) FROM memory_spaces WHERE tenant=?", (tenant,)).fetchone()
                if spaces >= quota.namespaces_max:
                    return PutOutcome("namespaces")
                if quota.group_namespaces_max and _group_count(c, tenant, quota.group) >= quota.group_namespaces_max:
                    return PutOutcome("group")
            return self._put(c, tenant, namespace, space, memories, quota, now, row is None)

        result: PutOutcome = await self._big.write(tx)
        return result

    def _put(
        self,
        c: sqlite3.Connection,
        tenant: str,
        namespace: str,
        space: Space,
        memories: Sequence[StoredMemory],
        quota: Quota,
        now: float,
        new: bool,
    ) -> PutOutcome:
        existing, replaced, fresh = {}, [], []
        for m in memories:
            old = c.execute(
                f"SELECT {_COLUMNS}, size FROM memory_items WHERE tenant=? AND namespace=? AND id=?",
                (tenant, namespace, m.id),
            ).fetchone()
            if old is not None:
                stored = _row(old[:7])
                if stored.live(now):
                    if stored.digest != m.digest:
                        return PutOutcome("conflict", {m.id: stored})
                    existing[m.id] = stored
                    continue
                replaced.append(int(old[7]))
            fresh.append(m)
        added, grown = len(fresh) - len(replaced), sum(m.size_bytes for m in fresh) - sum(replaced)
        count, size = _usage(c, tenant)
        count, size = count + added, size + grown
        if count > quota.memories_max:
            return PutOutcome("memories")
        if size > quota.bytes_max:
            return PutOutcome("bytes")
        group = group_of(namespace)
        held, held_bytes = _group_usage(c, tenant, group)
        held, held_bytes = held + added, held_bytes + grown
        if quota.group_memories_max and held > quota.group_memories_max:
            return PutOutcome("group_memories")
        if quota.group_bytes_max and held_bytes > quota.group_bytes_max:
            return PutOutcome("group_bytes")
        if not fresh:
            return PutOutcome(existing=existing)
        c.executemany(
            "INSERT OR REPLACE INTO memory_items VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (tenant, namespace, m.id, m.text, m.metadata, m.vector, m.digest, m.created, m.expires, m.size_bytes)
                for m in fresh
            ],
        )
        if new:
            c.execute("INSERT INTO memory_spaces VALUES (?,?,?,?)", (tenant, namespace, space.encode(), added))
        else:
            c.execute(
                "UPDATE memory_spaces SET count=count+? WHERE tenant=? AND namespace=?", (added, tenant, namespace)
            )
        c.execute(
            "INSERT INTO memory_usage VALUES (?,?,?) ON CONFLICT (tenant) DO UPDATE SET count=?, bytes=?",
            (tenant, count, size, count, size),
        )
        c.execute(
            "INSERT INTO memory_groups VALUES (?,?,?,?) ON CONFLICT (tenant, grp) DO UPDATE SET count=?, bytes=?",
            (tenant, group, held, held_bytes, held, held_bytes),
        )
        _bump(c, tenant, namespace, [m.id for m in fresh])
        return PutOutcome(existing=existing)

    async def get(self, tenant: str, namespace: str, id: str) -> StoredMemory | None:
        def tx(c: sqlite3.Connection) -> StoredMemory | None:
            row = c.execute(
                f"SELECT {_COLUMNS} FROM memory_items WHERE tenant=? AND namespace=? AND id=?", (tenant, namespace, id)
            ).fetchone()
            return _row(row) if row else None

        result: StoredMemory | None = await self._db.read(tx)
        return result

    async def delete(self, tenant: str, namespace: str, ids: Sequence[str]) -> int:
        def tx(c: sqlite3.Connection) -> int:
            removed, freed, gone = 0, 0, []
            for id in dict.fromkeys(ids):
                row = c.execute(
                    "DELETE FROM memory_items WHERE tenant=? AND namespace=? AND id=? RETURNING size",
                    (tenant, namespace, id),
                ).fetchone()
                if row is not None:
                    removed, freed = removed + 1, freed + int(row[0])
                    gone.append(id)
            if not removed:
                return 0
            c.execute("UPDATE memory_usage SET count=count-?, bytes=bytes-? WHERE tenant=?", (removed, freed, tenant))
            c.execute(
                "UPDATE memory_groups SET count=count-?, bytes=bytes-? WHERE tenant=? AND grp=?",
                (removed, freed, tenant, group_of(namespace)),
            )
            c.execute(
                "UPDATE memory_spaces SET count=count-? WHERE tenant=? AND namespace=?", (removed, tenant, namespace)
            )
            c.execute("DELETE FROM memory_spaces WHERE tenant=? AND namespace=? AND count<=0", (tenant, namespace))
            _bump(c, tenant, namespace, gone)
            return removed

        result: int = await self._db.write(tx)
        return result

    async def page(self, tenant: str, namespace: str, after: str | None, limit: int) -> list[StoredMemory]:
        def tx(c: sqlite3.Connection) -> list[StoredMemory]:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM memory_items WHERE tenant=? AND namespace=? AND id>? ORDER BY id LIMIT ?",
                (tenant, namespace, after if after is not None else "", limit),
            ).fetchall()
            return [_row(r) for r in rows]

        result: list[StoredMemory] = await self._big.read(tx)
        return result

    async def namespaces(self, tenant: str) -> list[tuple[str, Space, int]]:
        def tx(c: sqlite3.Connection) -> list[tuple[str, Space, int]]:
            rows = c.execute(
                "SELECT namespace, space, count FROM memory_spaces WHERE tenant=? ORDER BY namespace", (tenant,)
            ).fetchall()
            return [(r[0], Space.decode(r[1]), int(r[2])) for r in rows]

        result: list[tuple[str, Space, int]] = await self._db.read(tx)
        return result

    async def expired(self, tenant: str, now: float, limit: int) -> list[tuple[str, str]]:
        def tx(c: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = c.execute(
                "SELECT namespace, id FROM memory_items WHERE tenant=? AND expires IS NOT NULL AND expires<=? LIMIT ?",
                (tenant, now, limit),
            ).fetchall()
            return [(r[0], r[1]) for r in rows]

        result: list[tuple[str, str]] = await self._db.read(tx)
        return result

    async def _version(self, tenant: str, namespace: str) -> tuple[int, Space] | None:
        def tx(c: sqlite3.Connection) -> tuple[int, Space] | None:
            row = c.execute(
                "SELECT v.version, s.space FROM memory_spaces s JOIN memory_versions v USING (tenant, namespace)"
                " WHERE s.tenant=? AND s.namespace=?",
                (tenant, namespace),
            ).fetchone()
            return (int(row[0]), Space.decode(row[1])) if row else None

        result: tuple[int, Space] | None = await self._db.read(tx)
        return result

    async def snapshot(self, tenant: str, namespace: str) -> Snapshot | None:
        current = await self._version(tenant, namespace)
        if current is None:
            return None
        version, space = current
        cached = self._cache.latest(tenant, namespace)
        if cached is not None and cached[0] == version and cached[1].space == space:
            return cached[1]
        if cached is not None and cached[1].space == space:
            caught_up = await self._catch_up(tenant, namespace, cached[0], cached[1])
            if caught_up is not None:
                return self._cache.put(tenant, namespace, caught_up, cached[1])
        loaded: tuple[int, Snapshot] | None = await self._big.read(lambda c: _load(c, tenant, namespace))
        if loaded is None:
            return None
        return self._cache.put(tenant, namespace, loaded[0], loaded[1])

    async def _catch_up(self, tenant: str, namespace: str, since: int, snapshot: Snapshot) -> int | None:
        """Apply the writes logged after version ``since`` to ``snapshot``; its new version, or None when the log
        no longer reaches back that far (then the namespace is reloaded)."""

        def tx(c: sqlite3.Connection) -> tuple[int, list[StoredMemory], list[str]] | None:
            logged = c.execute(
                "SELECT version, id FROM memory_log WHERE tenant=? AND namespace=? AND version>? ORDER BY version",
                (tenant, namespace, since),
            ).fetchall()
            if not logged or logged[0][0] != since + 1:
                return None
            ids = list(dict.fromkeys(r[1] for r in logged))
            found = []
            for start in range(0, len(ids), _IN_MAX):
                chunk = ids[start : start + _IN_MAX]
                marks = ",".join("?" * len(chunk))
                found += c.execute(
                    f"SELECT {_COLUMNS} FROM memory_items WHERE tenant=? AND namespace=? AND id IN ({marks})",
                    (tenant, namespace, *chunk),
                ).fetchall()
            return int(logged[-1][0]), [_row(r) for r in found], ids

        changed: tuple[int, list[StoredMemory], list[str]] | None = await self._big.read(tx)
        if changed is None:
            return None
        version, upserts, ids = changed
        present = {m.id for m in upserts}
        snapshot.apply(upserts, [i for i in ids if i not in present])
        return version


_IN_MAX = 500
"""Ids per ``IN (...)`` list (SQLite allows 32 766 parameters; smaller lists keep statements cheap to prepare)."""


def _load(c: sqlite3.Connection, tenant: str, namespace: str) -> tuple[int, Snapshot] | None:
    row = c.execute(
        "SELECT v.version, s.space FROM memory_spaces s JOIN memory_versions v USING (tenant, namespace)"
        " WHERE s.tenant=? AND s.namespace=?",
        (tenant, namespace),
    ).fetchone()
    if row is None:
        return None
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM memory_items WHERE tenant=? AND namespace=? ORDER BY id", (tenant, namespace)
    ).fetchall()
    return int(row[0]), Snapshot.build([_row(r) for r in rows], Space.decode(row[1]))


def _group_count(c: sqlite3.Connection, tenant: str, group: str) -> int:
    """The tenant's namespaces in ``group`` (:func:`~sos_kernel.memory.store.in_group`); GLOB is case-sensitive."""
    if group:  # agent names hold no GLOB metacharacter
        sql = "SELECT count(*) FROM memory_spaces WHERE tenant=? AND (namespace=? OR namespace GLOB ?)"
        return int(c.execute(sql, (tenant, group, group + "/*")).fetchone()[0])
    sql = "SELECT count(*) FROM memory_spaces WHERE tenant=? AND namespace NOT GLOB 'agent:*'"
    return int(c.execute(sql, (tenant,)).fetchone()[0])
