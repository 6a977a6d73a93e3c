"""Idempotency replies on SQLite: one row per ``(tenant, principal, key)``; each primitive one transaction.

``seq`` orders records by their claim, so the oldest are dropped first when a bound is reached; expired rows of
a tenant are deleted before its bounds are counted. Expiry times are epoch seconds, so every process on the file
agrees on them.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from ..replies import RUNNING, Reply, ReplyBounds, ReplyStore

if TYPE_CHECKING:
    from .sqlite_engine import SQLiteEngine

__all__ = ["REPLIES_SCHEMA", "SQLiteReplyStore"]

REPLIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS idem_replies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, principal TEXT NOT NULL, key TEXT NOT NULL,
    fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, expires REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS idem_replies_key ON idem_replies (tenant, principal, key);
CREATE INDEX IF NOT EXISTS idem_replies_principal ON idem_replies (tenant, principal, seq);
CREATE INDEX IF NOT EXISTS idem_replies_tenant ON idem_replies (tenant, seq);
"""

_KEY = "tenant=? AND principal=? AND key=?"


def _count(c: sqlite3.Connection, where: str, args: tuple[str, ...]) -> int:
    return int(c.execute(f"SELECT COUNT(*) FROM idem_replies WHERE {where}", args).fetchone()[0])


def _drop_oldest(c: sqlite3.Connection, where: str, args: tuple[str, ...], keep: int) -> None:
    excess = _count(c, where, args) - keep
    if excess > 0:
        c.execute(
            f"DELETE FROM idem_replies WHERE seq IN (SELECT seq FROM idem_replies WHERE {where} ORDER BY seq LIMIT ?)",
            (*args, excess),
        )


def _make_room(c: sqlite3.Connection, tenant: str, principal: str, bounds: ReplyBounds, now: float) -> None:
    c.execute("DELETE FROM idem_replies WHERE tenant=? AND expires<=?", (tenant, now))
    _drop_oldest(c, "tenant=? AND principal=?", (tenant, principal), bounds.principal_keys_max - 1)
    _drop_oldest(c, "tenant=?", (tenant,), bounds.tenant_keys_max - 1)


class SQLiteReplyStore(ReplyStore):
    """Reply primitives as SQLite transactions (see :class:`~sos_kernel.backends.sqlite.SQLiteEngine`)."""

    def __init__(self, engine: SQLiteEngine) -> None:
        self._db = engine

    async def claim(self, tenant: str, principal: str, key: str, fingerprint: str, bounds: ReplyBounds) -> Reply | None:
        now = time.time()

        def tx(c: sqlite3.Connection) -> Reply | None:
            row = c.execute(
                f"SELECT fingerprint, status, body FROM idem_replies WHERE {_KEY} AND expires>?",
                (tenant, principal, key, now),
            ).fetchone()
            if row is not None:
                return Reply(row[0], int(row[1]), bytes(row[2]))
            c.execute(f"DELETE FROM idem_replies WHERE {_KEY}", (tenant, principal, key))
            _make_room(c, tenant, principal, bounds, now)
            c.execute(
                "INSERT INTO idem_replies (tenant, principal, key, fingerprint, status, body, expires)"
                " VALUES (?,?,?,?,?,?,?)",
                (tenant, principal, key, fingerprint, RUNNING, b"", now + bounds.running_s),
            )
            return None

        return await self._db.write(tx)

    async def finish(self, tenant: str, principal: str, key: str, reply: Reply, ttl_s: float) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                f"UPDATE idem_replies SET status=?, body=?, expires=? WHERE {_KEY} AND fingerprint=? AND status=?",
                (reply.status, reply.body, time.time() + ttl_s, tenant, principal, key, reply.fingerprint, RUNNING),
            )

        await self._db.write(tx)

    async def release(self, tenant: str, principal: str, key: str, fingerprint: str) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                f"DELETE FROM idem_replies WHERE {_KEY} AND fingerprint=? AND status=?",
                (tenant, principal, key, fingerprint, RUNNING),
            )

        await self._db.write(tx)
