"""Checkpoints on SQLite: a row per checkpoint and per pending write; each primitive is one transaction, so
processes sharing the file share a graph's state."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..checkpoints.store import CheckpointRow, CheckpointStore, WriteRow

__all__ = ["CHECKPOINTS_SCHEMA", "SQLiteCheckpointStore"]

CHECKPOINTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_checkpoints (
    tenant TEXT NOT NULL, thread TEXT NOT NULL, ns TEXT NOT NULL, id TEXT NOT NULL, parent TEXT NOT NULL,
    state BLOB NOT NULL, metadata BLOB NOT NULL, PRIMARY KEY (tenant, thread, ns, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS graph_writes (
    tenant TEXT NOT NULL, thread TEXT NOT NULL, ns TEXT NOT NULL, checkpoint TEXT NOT NULL, task TEXT NOT NULL,
    idx INTEGER NOT NULL, channel TEXT NOT NULL, value BLOB NOT NULL, path TEXT NOT NULL,
    PRIMARY KEY (tenant, thread, ns, checkpoint, task, idx)) WITHOUT ROWID;
"""

_COLUMNS = "thread, ns, id, parent, state, metadata"


def _row(r: Any) -> CheckpointRow:
    return CheckpointRow(r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5]))


def _prune(c: sqlite3.Connection, tenant: str, thread: str, ns: str, keep: int) -> None:
    sql = "SELECT id FROM graph_checkpoints WHERE tenant=? AND thread=? AND ns=? ORDER BY id DESC LIMIT -1 OFFSET ?"
    for (old,) in c.execute(sql, (tenant, thread, ns, keep)).fetchall():
        for table, column in (("graph_checkpoints", "id"), ("graph_writes", "checkpoint")):
            sql_d = f"DELETE FROM {table} WHERE tenant=? AND thread=? AND ns=? AND {column}=?"
            c.execute(sql_d, (tenant, thread, ns, old))


class SQLiteCheckpointStore(CheckpointStore):
    """Checkpoint primitives as SQLite transactions."""

    def __init__(self, engine: Any) -> None:
        self._db = engine

    async def put(self, tenant: str, row: CheckpointRow, threads_max: int, per_thread_max: int) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            known = c.execute(
                "SELECT 1 FROM graph_checkpoints WHERE tenant=? AND thread=? LIMIT 1", (tenant, row.thread)
            ).fetchone()
            if known is None:
                sql = "SELECT COUNT(*) FROM (SELECT DISTINCT thread FROM graph_checkpoints WHERE tenant=?)"
                if c.execute(sql, (tenant,)).fetchone()[0] >= threads_max:
                    return False
            values = (tenant, row.thread, row.ns, row.checkpoint_id, row.parent_id, row.state, row.metadata)
            c.execute("INSERT OR REPLACE INTO graph_checkpoints VALUES (?,?,?,?,?,?,?)", values)
            _prune(c, tenant, row.thread, row.ns, per_thread_max)
            return True

        done: bool = await self._db.write(tx)
        return done

    async def put_writes(
        self, tenant: str, thread: str, ns: str, checkpoint_id: str, writes: Sequence[WriteRow]
    ) -> None:
        def tx(c: sqlite3.Connection) -> None:
            for w in writes:
                verb = "INSERT OR REPLACE" if w.idx < 0 else "INSERT OR IGNORE"
                values = (tenant, thread, ns, checkpoint_id, w.task_id, w.idx, w.channel, w.value, w.task_path)
                c.execute(f"{verb} INTO graph_writes VALUES (?,?,?,?,?,?,?,?,?)", values)

        await self._db.write(tx)

    async def get(self, tenant: str, thread: str, ns: str, checkpoint_id: str | None) -> CheckpointRow | None:
        def q(c: sqlite3.Connection) -> Any:
            base = f"SELECT {_COLUMNS} FROM graph_checkpoints WHERE tenant=? AND thread=? AND ns=?"
            if checkpoint_id is None:
                return c.execute(base + " ORDER BY id DESC LIMIT 1", (tenant, thread, ns)).fetchone()
            return c.execute(base + " AND id=?", (tenant, thread, ns, checkpoint_id)).fetchone()

        found = await self._db.read(q)
        return None if found is None else _row(found)

    async def find(
        self, tenant: str, thread: str | None, ns: str | None, before: str | None, limit: int | None
    ) -> list[CheckpointRow]:
        def q(c: sqlite3.Connection) -> list[Any]:
            sql, args_ = f"SELECT {_COLUMNS} FROM graph_checkpoints WHERE tenant=?", list[str | int]([tenant])
            for column, value in (("thread=?", thread), ("ns=?", ns), ("id<?", before)):
                if value is not None:
                    sql, args_ = f"{sql} AND {column}", [*args_, value]
            sql += " ORDER BY thread DESC, id DESC"
            if limit is not None:
                sql, args_ = f"{sql} LIMIT ?", [*args_, limit]
            return c.execute(sql, args_).fetchall()

        return [_row(r) for r in await self._db.read(q)]

    async def writes(self, tenant: str, thread: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        def q(c: sqlite3.Connection) -> list[Any]:
            sql = (
                "SELECT task, idx, channel, value, path FROM graph_writes"
                " WHERE tenant=? AND thread=? AND ns=? AND checkpoint=? ORDER BY task, idx"
            )
            return c.execute(sql, (tenant, thread, ns, checkpoint_id)).fetchall()

        return [WriteRow(r[0], int(r[1]), r[2], bytes(r[3]), r[4]) for r in await self._db.read(q)]

    async def delete_thread(self, tenant: str, thread: str) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM graph_checkpoints WHERE tenant=? AND thread=?", (tenant, thread))
            c.execute("DELETE FROM graph_writes WHERE tenant=? AND thread=?", (tenant, thread))

        await self._db.write(tx)
