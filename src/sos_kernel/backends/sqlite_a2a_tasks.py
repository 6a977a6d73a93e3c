"""A2A tasks on SQLite: a row per task; each primitive is one transaction, so servers sharing the file share
the tasks (a task made by one is found by ``tasks/get`` on another, or after a restart)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..a2a_tasks.store import A2ATaskStore

__all__ = ["A2A_TASKS_SCHEMA", "SQLiteA2ATaskStore"]

A2A_TASKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS a2a_tasks (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, finished INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (tenant, owner, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS a2a_tasks_by_seq ON a2a_tasks (tenant, seq);
"""


class SQLiteA2ATaskStore(A2ATaskStore):
    """A2A task primitives as SQLite transactions."""

    def __init__(self, engine: Any) -> None:
        self._db = engine

    async def put(self, tenant: str, owner: str, task_id: str, data: bytes, finished: bool, tasks_max: int) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            key = (tenant, owner, task_id)
            if c.execute("SELECT 1 FROM a2a_tasks WHERE tenant=? AND owner=? AND id=?", key).fetchone():
                sql = "UPDATE a2a_tasks SET finished=?, data=? WHERE tenant=? AND owner=? AND id=?"
                c.execute(sql, (int(finished), data, *key))
                return True
            if c.execute("SELECT COUNT(*) FROM a2a_tasks WHERE tenant=?", (tenant,)).fetchone()[0] >= tasks_max:
                sql = "SELECT owner, id FROM a2a_tasks WHERE tenant=? AND finished=1 ORDER BY seq LIMIT 1"
                oldest = c.execute(sql, (tenant,)).fetchone()
                if oldest is None:
                    return False
                c.execute("DELETE FROM a2a_tasks WHERE tenant=? AND owner=? AND id=?", (tenant, *oldest))
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM a2a_tasks WHERE tenant=?", (tenant,)).fetchone()[0]
            c.execute("INSERT INTO a2a_tasks VALUES (?,?,?,?,?,?)", (*key, seq, int(finished), data))
            return True

        done: bool = await self._db.write(tx)
        return done

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
