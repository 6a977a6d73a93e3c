"""A2A tasks on SQLite: a row per task; each primitive is one transaction, so servers sharing the file share
the tasks (a task made by one is found by ``tasks/get`` on another, or after a restart)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..a2a_tasks.store import A2ATaskBounds, A2ATaskStore

__all__ = ["A2A_TASKS_SCHEMA", "SQLiteA2ATaskStore"]

A2A_TASKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS a2a_tasks (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, id TEXT NOT NULL, caller TEXT NOT NULL, seq INTEGER NOT NULL,
    live_until REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (tenant, owner, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS a2a_tasks_by_seq ON a2a_tasks (tenant, seq);
CREATE INDEX IF NOT EXISTS a2a_tasks_by_caller ON a2a_tasks (tenant, caller, seq);
"""


def _evict(c: sqlite3.Connection, tenant: str, now: float, caller: str | None) -> bool:
    """Drop the oldest finished or stale record (of ``caller`` if given); False when there is none."""
    mine = "" if caller is None else " AND caller=?"
    args = (tenant, now) if caller is None else (tenant, now, caller)
    sql = f"WHERE tenant=? AND live_until<=?{mine} ORDER BY seq"
    oldest = c.execute(f"SELECT owner, id FROM a2a_tasks {sql} LIMIT 1", args).fetchone()
    if oldest is None:
        return False
    c.execute("DELETE FROM a2a_tasks WHERE tenant=? AND owner=? AND id=?", (tenant, *oldest))
    return True


class SQLiteA2ATaskStore(A2ATaskStore):
    """A2A task primitives as SQLite transactions."""

    def __init__(self, engine: Any) -> None:
        self._db = engine

    async def put(
        self,
        tenant: str,
        owner: str,
        caller: str,
        task_id: str,
        data: bytes,
        live_until: float,
        now: float,
        bounds: A2ATaskBounds,
    ) -> str:
        def tx(c: sqlite3.Connection) -> str:
            key = (tenant, owner, task_id)
            if c.execute("SELECT 1 FROM a2a_tasks WHERE tenant=? AND owner=? AND id=?", key).fetchone():
                sql = "UPDATE a2a_tasks SET live_until=?, data=? WHERE tenant=? AND owner=? AND id=?"
                c.execute(sql, (live_until, data, *key))
                return ""
            sql = "SELECT COUNT(*), COALESCE(SUM(live_until > ?), 0) FROM a2a_tasks WHERE tenant=? AND caller=?"
            kept, running = c.execute(sql, (now, tenant, caller)).fetchone()
            if live_until > now and running >= bounds.caller_running_max:
                return "a2a_running_tasks_per_caller_max"
            # a caller past its own bound makes room among its own records first, so it never evicts another's
            if kept >= bounds.caller_tasks_max and not _evict(c, tenant, now, caller):
                return "a2a_tasks_per_caller_max"
            full = (
                c.execute("SELECT COUNT(*) FROM a2a_tasks WHERE tenant=?", (tenant,)).fetchone()[0] >= bounds.tasks_max
            )
            if full and not _evict(c, tenant, now, None):
                return "a2a_tasks_per_tenant_max"
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM a2a_tasks WHERE tenant=?", (tenant,)).fetchone()[0]
            c.execute("INSERT INTO a2a_tasks VALUES (?,?,?,?,?,?,?)", (*key, caller, seq, live_until, data))
            return ""

        refused: str = await self._db.write(tx)
        return refused

    async def get(self, tenant: str, owner: str, task_id: str) -> bytes | None:
        def q(c: sqlite3.Connection) -> Any:
            sql = "SELECT data FROM a2a_tasks WHERE tenant=? AND owner=? AND id=?"
            return c.execute(sql, (tenant, owner, task_id)).fetchone()

        found = await self._db.read(q)
        return None if found is None else bytes(found[0])

    async def owned(self, tenant: str, owner: str, limit: int) -> list[bytes]:
        def q(c: sqlite3.Connection) -> list[Any]:
            sql = "SELECT data FROM a2a_tasks WHERE tenant=? AND owner=? ORDER BY seq LIMIT ?"
            return c.execute(sql, (tenant, owner, limit)).fetchall()

        return [bytes(r[0]) for r in await self._db.read(q)]

    async def delete(self, tenant: str, owner: str, task_id: str) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM a2a_tasks WHERE tenant=? AND owner=? AND id=?", (tenant, owner, task_id))

        await self._db.write(tx)
