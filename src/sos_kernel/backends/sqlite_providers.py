"""Providers on SQLite: a row per card, per breaker (with its version) and per engine call; each primitive is one
transaction, so processes sharing the file share the matrix, the breakers and the calls in flight."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..providers._codec import dump_breaker, load_breaker
from ..providers.breaker import CLOSED, BreakerState
from ..providers.store import CallClaim, ProviderStore

__all__ = ["PROVIDERS_SCHEMA", "SQLiteProviderStore"]

PROVIDERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS provider_cards (
    tenant TEXT NOT NULL, id TEXT NOT NULL, card BLOB NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS provider_breakers (
    tenant TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS engine_calls (
    tenant TEXT NOT NULL, id TEXT NOT NULL, token TEXT NOT NULL, reply BLOB, expires REAL NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS engine_calls_expires ON engine_calls (expires);
"""


class SQLiteProviderStore(ProviderStore):
    """Provider primitives as SQLite transactions."""

    def __init__(self, engine: Any) -> None:
        self._db = engine

    async def put_card(self, tenant: str, provider_id: str, card: bytes, count_max: int) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            known = c.execute("SELECT 1 FROM provider_cards WHERE tenant=? AND id=?", (tenant, provider_id)).fetchone()
            if known is None:
                (count,) = c.execute("SELECT COUNT(*) FROM provider_cards WHERE tenant=?", (tenant,)).fetchone()
                if count >= count_max:
                    return False
            c.execute("INSERT OR REPLACE INTO provider_cards VALUES (?,?,?)", (tenant, provider_id, card))
            return True

        done: bool = await self._db.write(tx)
        return done

    async def remove_card(self, tenant: str, provider_id: str) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM provider_breakers WHERE tenant=? AND id=?", (tenant, provider_id))
            return c.execute("DELETE FROM provider_cards WHERE tenant=? AND id=?", (tenant, provider_id)).rowcount > 0

        done: bool = await self._db.write(tx)
        return done

    async def cards(self, tenant: str) -> list[bytes]:
        def q(c: sqlite3.Connection) -> list[bytes]:
            rows = c.execute("SELECT card FROM provider_cards WHERE tenant=? ORDER BY id", (tenant,)).fetchall()
            return [bytes(r[0]) for r in rows]

        found: list[bytes] = await self._db.read(q)
        return found

    async def breaker(self, tenant: str, provider_id: str) -> tuple[BreakerState, int]:
        def q(c: sqlite3.Connection) -> Any:
            sql = "SELECT state, version FROM provider_breakers WHERE tenant=? AND id=?"
            return c.execute(sql, (tenant, provider_id)).fetchone()

        row = await self._db.read(q)
        return (load_breaker(row[0]), int(row[1])) if row else (CLOSED, 0)

    async def swap_breaker(self, tenant: str, provider_id: str, version: int, state: BreakerState) -> bool:
        text = dump_breaker(state)

        def tx(c: sqlite3.Connection) -> bool:
            if version == 0:
                sql = "INSERT OR IGNORE INTO provider_breakers VALUES (?,?,1,?)"
                return c.execute(sql, (tenant, provider_id, text)).rowcount > 0
            sql = "UPDATE provider_breakers SET state=?, version=? WHERE tenant=? AND id=? AND version=?"
            return c.execute(sql, (text, version + 1, tenant, provider_id, version)).rowcount > 0

        done: bool = await self._db.write(tx)
        return done

    async def claim_call(self, tenant: str, call_id: str, token: str, now: float, lease_s: float) -> CallClaim:
        def tx(c: sqlite3.Connection) -> CallClaim:
            c.execute("DELETE FROM engine_calls WHERE expires <= ?", (now,))  # lapsed claims and replies
            sql = "SELECT reply, token FROM engine_calls WHERE tenant=? AND id=?"
            row = c.execute(sql, (tenant, call_id)).fetchone()
            if row is not None:
                reply = None if row[0] is None else bytes(row[0])
                return CallClaim("running" if reply is None else "done", reply, str(row[1]))
            c.execute("INSERT INTO engine_calls VALUES (?,?,?,NULL,?)", (tenant, call_id, token, now + lease_s))
            return CallClaim("claimed")

        claim: CallClaim = await self._db.write(tx)
        return claim

    async def finish_call(self, tenant: str, call_id: str, token: str, reply: bytes, now: float, keep_s: float) -> None:
        sql = "UPDATE engine_calls SET reply=?, expires=? WHERE tenant=? AND id=? AND token=? AND reply IS NULL"
        await self._db.write(lambda c: c.execute(sql, (reply, now + keep_s, tenant, call_id, token)))

    async def release_call(self, tenant: str, call_id: str, token: str) -> None:
        sql = "DELETE FROM engine_calls WHERE tenant=? AND id=? AND token=? AND reply IS NULL"
        await self._db.write(lambda c: c.execute(sql, (tenant, call_id, token)))
