"""Tasks on SQLite: one row per task; every transition is one ``UPDATE ... WHERE rev = ?`` transaction, so of two
processes deciding on the same task exactly one writes. The clock is this host's (a SQLite file has one host)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ..tasks.store import TaskRecord, TaskStore
from ..tasks.transitions import TERMINAL
from .sqlite_governance import append_draft

__all__ = ["TASKS_SCHEMA", "SQLiteTaskStore"]

TASKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    tenant TEXT NOT NULL, id TEXT NOT NULL, rev INTEGER NOT NULL, status TEXT NOT NULL, open INTEGER NOT NULL,
    created REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks (tenant, created, id);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (tenant, open);
"""

_COLUMNS = "id, rev, status, created, data"


def _record(row: Any) -> TaskRecord:
    return TaskRecord(str(row[0]), int(row[1]), str(row[2]), float(row[3]), bytes(row[4]))


class SQLiteTaskStore(TaskStore):
    """Task primitives as SQLite transactions; a swap given a record appends it in its own transaction."""

    audits_writes: bool = True

    def __init__(self, engine: Any) -> None:
        self._db = engine
        self.clock: Callable[[], float] = time.time

    async def insert(
        self, tenant: str, record: TaskRecord, open_max: int, creator: str | None = None, creator_open_max: int = 0
    ) -> tuple[TaskRecord | None, bool]:
        def tx(c: sqlite3.Connection) -> tuple[TaskRecord | None, bool]:
            row = c.execute(f"SELECT {_COLUMNS} FROM tasks WHERE tenant=? AND id=?", (tenant, record.id)).fetchone()
            if row is not None:
                return _record(row), False
            (count,) = c.execute("SELECT COUNT(*) FROM tasks WHERE tenant=? AND open=1", (tenant,)).fetchone()
            if count >= open_max:
                return None, False
            # the creator's share can be full only when the tenant holds that many open tasks at all
            shared = creator is not None and 0 < creator_open_max <= count
            if shared and _created_open(c, tenant, creator or "") >= creator_open_max:
                return None, False
            c.execute(
                "INSERT INTO tasks VALUES (?,?,?,?,?,?,?)",
                (tenant, record.id, record.rev, record.status, int(record.status not in TERMINAL), record.created_at,
                 record.data),
            )  # fmt: skip
            return None, True

        result: tuple[TaskRecord | None, bool] = await self._db.write(tx)
        return result

    async def load(self, tenant: str, task_id: str) -> tuple[TaskRecord | None, float]:
        def tx(c: sqlite3.Connection) -> TaskRecord | None:
            row = c.execute(f"SELECT {_COLUMNS} FROM tasks WHERE tenant=? AND id=?", (tenant, task_id)).fetchone()
            return _record(row) if row else None

        found: TaskRecord | None = await self._db.read(tx)
        return found, self.clock()

    async def swap(self, tenant: str, expected: TaskRecord, record: TaskRecord, audit: Any = None) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cursor = c.execute(
                "UPDATE tasks SET rev=?, status=?, open=?, data=? WHERE tenant=? AND id=? AND rev=?",
                (record.rev, record.status, int(record.status not in TERMINAL), record.data, tenant, record.id,
                 expected.rev),
            )  # fmt: skip
            if cursor.rowcount == 1:
                append_draft(c, tenant, audit)
            return cursor.rowcount == 1

        result: bool = await self._db.write(tx)
        return result

    async def records(self, tenant: str, status: str | None, limit: int) -> list[TaskRecord]:
        def tx(c: sqlite3.Connection) -> list[TaskRecord]:
            sql, args = (
                ("WHERE tenant=?", [tenant]) if status is None else ("WHERE tenant=? AND status=?", [tenant, status])
            )
            rows = c.execute(f"SELECT {_COLUMNS} FROM tasks {sql} ORDER BY created, id LIMIT ?", (*args, limit))
            return [_record(r) for r in rows]

        result: list[TaskRecord] = await self._db.read(tx)
        return result

    async def open_count(self, tenant: str) -> int:
        def tx(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT COUNT(*) FROM tasks WHERE tenant=? AND open=1", (tenant,)).fetchone()[0])

        result: int = await self._db.read(tx)
        return result

    async def delete(self, tenant: str, expected: TaskRecord) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cursor = c.execute(
                "DELETE FROM tasks WHERE tenant=? AND id=? AND rev=?", (tenant, expected.id, expected.rev)
            )
            return cursor.rowcount == 1

        result: bool = await self._db.write(tx)
        return result

    async def finished_count(self, tenant: str) -> int:
        def tx(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT COUNT(*) FROM tasks WHERE tenant=? AND open=0", (tenant,)).fetchone()[0])

        result: int = await self._db.read(tx)
        return result

    async def now(self) -> float:
        return self.clock()


def _created_open(c: sqlite3.Connection, tenant: str, creator: str) -> int:
    """The tenant's open tasks whose stored state names ``creator`` as ``created_by``."""
    sql = (
        "SELECT COUNT(*) FROM tasks WHERE tenant=? AND open=1 "
        "AND json_extract(CAST(data AS TEXT), '$.task.created_by')=?"
    )
    return int(c.execute(sql, (tenant, creator)).fetchone()[0])
