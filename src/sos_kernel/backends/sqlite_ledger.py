"""The ledger on SQLite: each batch is one ``BEGIN IMMEDIATE`` transaction running the shared rules."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..ledger.models import Account, Balance, Price, Transfer, TransferRequest
from ..ledger.rules import AccountState, evaluate, expire_holds
from ..ledger.store import Applied, LedgerStore, UsageQuery

__all__ = ["LEDGER_SCHEMA", "SQLiteLedgerStore"]

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_accounts (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, currency TEXT NOT NULL, allow_negative INTEGER NOT NULL,
    dp INTEGER NOT NULL, cp INTEGER NOT NULL, dpend INTEGER NOT NULL, cpend INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (tenant, owner, currency)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_transfers (
    tenant TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
    open_hold INTEGER NOT NULL, expires REAL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_transfers_seq ON ledger_transfers (tenant, seq);
CREATE INDEX IF NOT EXISTS ledger_open_holds ON ledger_transfers (tenant, open_hold, expires);
CREATE TABLE IF NOT EXISTS ledger_history (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, currency TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (tenant, owner, currency, seq, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_seq (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_usage (
    tenant TEXT NOT NULL, id TEXT NOT NULL, n INTEGER NOT NULL, record TEXT NOT NULL, provider TEXT NOT NULL,
    model TEXT NOT NULL, occurred REAL NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_usage_n ON ledger_usage (tenant, n);
CREATE TABLE IF NOT EXISTS ledger_prices (
    tenant TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, model)) WITHOUT ROWID;
"""

AccountKey = tuple[str, str]


def _row_balance(row: Sequence[Any]) -> Balance:
    owner, currency, allow_negative, dp, cp, dpend, cpend = row
    return Balance(owner, currency, int(dp), int(cp), int(dpend), int(cpend), bool(allow_negative))


class SQLiteLedgerStore(LedgerStore):
    """Ledger primitives as SQLite transactions (see :class:`~sos_kernel.backends.sqlite.SQLiteEngine`)."""

    def __init__(self, engine: Any) -> None:
        self._db = engine

    # -- helpers run inside a transaction ------------------------------------------------------------------------

    @staticmethod
    def _load_accounts(
        c: sqlite3.Connection, tenant: str, keys: set[AccountKey]
    ) -> dict[AccountKey, AccountState | None]:
        out: dict[AccountKey, AccountState | None] = {}
        for owner, currency in keys:
            row = c.execute(
                "SELECT allow_negative, dp, cp, dpend, cpend FROM ledger_accounts WHERE tenant=? AND owner=?"
                " AND currency=?",
                (tenant, owner, currency),
            ).fetchone()
            out[(owner, currency)] = AccountState(bool(row[0]), *map(int, row[1:])) if row else None
        return out

    @staticmethod
    def _save_accounts(c: sqlite3.Connection, tenant: str, accounts: dict[AccountKey, AccountState | None]) -> None:
        c.executemany(
            "UPDATE ledger_accounts SET dp=?, cp=?, dpend=?, cpend=? WHERE tenant=? AND owner=? AND currency=?",
            [
                (s.debits_posted, s.credits_posted, s.debits_pending, s.credits_pending, tenant, o, cur)
                for (o, cur), s in accounts.items()
                if s is not None
            ],
        )

    @staticmethod
    def _put_transfer(c: sqlite3.Connection, tenant: str, t: Transfer, *, new: bool) -> None:
        open_hold = int(t.kind == "pending" and t.state == "pending")
        expires = t.expires_at.timestamp() if t.expires_at else None
        c.execute(
            "INSERT OR REPLACE INTO ledger_transfers VALUES (?,?,?,?,?,?)",
            (tenant, t.id, t.sequence, json.dumps(t.to_record()), open_hold, expires),
        )
        if new and t.ok:
            c.executemany(
                "INSERT INTO ledger_history VALUES (?,?,?,?,?)",
                [(tenant, owner, t.currency, t.sequence, t.id) for owner in (t.debit, t.credit)],
            )

    def _expire(self, c: sqlite3.Connection, tenant: str, now: float) -> None:
        rows = c.execute(
            "SELECT record FROM ledger_transfers WHERE tenant=? AND open_hold=1 AND expires<=?", (tenant, now)
        ).fetchall()
        if not rows:
            return
        holds = {t.id: t for t in (Transfer.from_record(json.loads(r[0])) for r in rows)}
        keys = {(h.debit, h.currency) for h in holds.values()} | {(h.credit, h.currency) for h in holds.values()}
        accounts = self._load_accounts(c, tenant, keys)
        states = {k: v for k, v in accounts.items() if v is not None}
        for hold in expire_holds(holds, states, now).values():
            self._put_transfer(c, tenant, hold, new=False)
        self._save_accounts(c, tenant, accounts)

    @staticmethod
    def _get(c: sqlite3.Connection, tenant: str, ids: Sequence[str]) -> dict[str, Transfer]:
        out = {}
        for transfer_id in ids:
            row = c.execute(
                "SELECT record FROM ledger_transfers WHERE tenant=? AND id=?", (tenant, transfer_id)
            ).fetchone()
            if row:
                out[transfer_id] = Transfer.from_record(json.loads(row[0]))
        return out

    # -- primitives -----------------------------------------------------------------------------------------

    async def open_account(
        self, tenant: str, owner: str, currency: str, allow_negative: bool, now: float
    ) -> tuple[Account, bool]:
        def tx(c: sqlite3.Connection) -> tuple[Account, bool]:
            cur = c.execute(
                "INSERT OR IGNORE INTO ledger_accounts VALUES (?,?,?,?,0,0,0,0,?)",
                (tenant, owner, currency, int(allow_negative), now),
            )
            row = c.execute(
                "SELECT allow_negative, created FROM ledger_accounts WHERE tenant=? AND owner=? AND currency=?",
                (tenant, owner, currency),
            ).fetchone()
            return Account(owner, currency, bool(row[0]), datetime.fromtimestamp(row[1], UTC)), cur.rowcount > 0

        result: tuple[Account, bool] = await self._db.write(tx)
        return result

    async def balance(self, tenant: str, owner: str, currency: str, now: float) -> Balance | None:
        def tx(c: sqlite3.Connection) -> Balance | None:
            self._expire(c, tenant, now)
            row = c.execute(
                "SELECT owner, currency, allow_negative, dp, cp, dpend, cpend FROM ledger_accounts WHERE tenant=?"
                " AND owner=? AND currency=?",
                (tenant, owner, currency),
            ).fetchone()
            return _row_balance(row) if row else None

        result: Balance | None = await self._db.write(tx)
        return result

    async def apply(self, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        def tx(c: sqlite3.Connection) -> Applied:
            existing = self._get(c, tenant, [r.id for r in requests])
            if existing:
                return Applied([], existing)
            self._expire(c, tenant, now)
            if not requests:
                return Applied([], {})
            holds = self._get(c, tenant, [r.pending_id for r in requests if r.pending_id])
            keys = {(r.debit, r.currency) for r in requests if r.kind in ("posted", "pending")}
            keys |= {(r.credit, r.currency) for r in requests if r.kind in ("posted", "pending")}
            keys |= {(h.debit, h.currency) for h in holds.values()} | {(h.credit, h.currency) for h in holds.values()}
            accounts = self._load_accounts(c, tenant, keys)
            row = c.execute("SELECT seq FROM ledger_seq WHERE tenant=?", (tenant,)).fetchone()
            first = (int(row[0]) if row else 0) + 1
            result = evaluate(requests, accounts, holds, now, first)
            for transfer in result.transfers:
                self._put_transfer(c, tenant, transfer, new=True)
            for hold in result.holds.values():
                self._put_transfer(c, tenant, hold, new=False)
            self._save_accounts(c, tenant, accounts)
            c.execute(
                "INSERT INTO ledger_seq VALUES (?,?) ON CONFLICT (tenant) DO UPDATE SET seq=excluded.seq",
                (tenant, first + len(result.transfers) - 1),
            )
            return Applied(result.transfers, {})

        result: Applied = await self._db.write(tx)
        return result

    async def transfers(self, tenant: str, ids: Sequence[str]) -> dict[str, Transfer]:
        result: dict[str, Transfer] = await self._db.read(lambda c: self._get(c, tenant, ids))
        return result

    async def history(self, tenant: str, owner: str, currency: str, after_seq: int, limit: int) -> list[Transfer]:
        def tx(c: sqlite3.Connection) -> list[Transfer]:
            rows = c.execute(
                "SELECT t.record FROM ledger_history h JOIN ledger_transfers t ON t.tenant=h.tenant AND t.id=h.id"
                " WHERE h.tenant=? AND h.owner=? AND h.currency=? AND h.seq>? ORDER BY h.seq LIMIT ?",
                (tenant, owner, currency, after_seq, limit),
            ).fetchall()
            return [Transfer.from_record(json.loads(r[0])) for r in rows]

        result: list[Transfer] = await self._db.read(tx)
        return result

    async def balances(self, tenant: str) -> list[Balance]:
        def tx(c: sqlite3.Connection) -> list[Balance]:
            rows = c.execute(
                "SELECT owner, currency, allow_negative, dp, cp, dpend, cpend FROM ledger_accounts WHERE tenant=?"
                " ORDER BY owner, currency",
                (tenant,),
            ).fetchall()
            return [_row_balance(r) for r in rows]

        result: list[Balance] = await self._db.read(tx)
        return result

    async def all_transfers(self, tenant: str, after_seq: int, limit: int) -> list[Transfer]:
        def tx(c: sqlite3.Connection) -> list[Transfer]:
            rows = c.execute(
                "SELECT record FROM ledger_transfers WHERE tenant=? AND seq>? ORDER BY seq LIMIT ?",
                (tenant, after_seq, limit),
            ).fetchall()
            return [Transfer.from_record(json.loads(r[0])) for r in rows]

        result: list[Transfer] = await self._db.read(tx)
        return result

    async def put_usage(self, tenant: str, event_id: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        def tx(c: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            row = c.execute("SELECT record FROM ledger_usage WHERE tenant=? AND id=?", (tenant, event_id)).fetchone()
            if row:
                return json.loads(row[0]), False
            n = c.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM ledger_usage WHERE tenant=?", (tenant,)).fetchone()[0]
            c.execute(
                "INSERT INTO ledger_usage VALUES (?,?,?,?,?,?,?)",
                (tenant, event_id, n, json.dumps(record), record["provider"], record["model"], record["occurred_ts"]),
            )
            return record, True

        result: tuple[dict[str, Any], bool] = await self._db.write(tx)
        return result

    async def usage(self, tenant: str, query: UsageQuery, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT record FROM ledger_usage WHERE tenant=?"
        args: list[Any] = [tenant]
        for clause, value in (
            (" AND provider=?", query.provider),
            (" AND model=?", query.model),
            (" AND occurred>=?", query.since),
            (" AND occurred<?", query.until),
        ):
            if value is not None:
                sql += clause
                args.append(value)
        sql += " ORDER BY n LIMIT ?"
        args.append(limit)

        def tx(c: sqlite3.Connection) -> list[dict[str, Any]]:
            return [json.loads(r[0]) for r in c.execute(sql, args).fetchall()]

        result: list[dict[str, Any]] = await self._db.read(tx)
        return result

    async def set_price(self, tenant: str, price: Price) -> None:
        record = json.dumps(
            [price.input_per_mtok_micros, price.output_per_mtok_micros, price.per_image_micros, price.currency]
        )

        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO ledger_prices VALUES (?,?,?,?)", (tenant, price.provider, price.model, record)
            )

        await self._db.write(tx)

    async def price(self, tenant: str, provider: str, model: str) -> Price | None:
        def tx(c: sqlite3.Connection) -> Price | None:
            row = c.execute(
                "SELECT record FROM ledger_prices WHERE tenant=? AND provider=? AND model=?", (tenant, provider, model)
            ).fetchone()
            if row is None:
                return None
            inp, out, img, currency = json.loads(row[0])
            return Price(provider, model, inp, out, img, currency)

        result: Price | None = await self._db.read(tx)
        return result
