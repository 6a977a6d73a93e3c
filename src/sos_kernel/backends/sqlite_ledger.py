"""The ledger on SQLite: each batch is one ``BEGIN IMMEDIATE`` transaction running the shared rules.

The layout is chosen so that a transfer's commit writes as few pages as the ledger's guarantees allow, since a
single transfer's cost is mostly its commit, and a commit's cost grows with the pages it writes: the record, its
id and the two accounts (about three and a half pages), while the statements are written a batch at a time.

- ``ledger_records`` holds one row per recorded id, applied or failed, in columns. Its integer key is
  ``(tenant number << SEQ_BITS) + sequence``: a tenant's ledger is one contiguous range of the table in sequence
  order, a new record is an append at the end of that range (SQLite's cheapest insert), and the tenant's last
  sequence is the last key of the range, so no counter row is written.
- ``ledger_records_id``, unique on (tenant number, id), is the idempotency check: a batch is written at once,
  and if the constraint fails the transaction is rolled back and the recorded outcomes are read instead. A first
  attempt pays no lookup; a replay pays a rolled-back write and a read.
- ``ledger_statements`` holds each account's statement: one entry (owner, currency, key) per side of every
  applied record, in sequence order. It is written a block of :data:`STATEMENT_BLOCK` sequences at a time, not
  per record: the transaction that records a block's last sequence enters every applied record of the block, so
  a tenant whose last sequence is ``L`` has every applied record up to ``L - L % STATEMENT_BLOCK`` entered and
  none after (no counter says so: it follows from ``L``). A statement is read as its entries plus the records
  after that point (fewer than :data:`STATEMENT_BLOCK`, read by key range), in one snapshot, so it is always
  exact; a single transfer writes no statement page, and one in 64 writes a few for the whole block.
- ``ledger_records_open`` indexes open holds only (a partial index), by expiry.
- ``ledger_tenants`` numbers the tenants; ``ledger_accounts`` holds each account's four counters.

A file written with an earlier layout is not migrated. The first one (``ledger_transfers``, ``ledger_history``,
``ledger_seq``) and the second (statements as the partial indexes ``ledger_records_debit`` and
``ledger_records_credit``) are recognised: if that ledger recorded anything, every ledger call fails with
SOS-6031 naming the tables or indexes found; if it recorded nothing, they are dropped and the file is used.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import BackendFailure, InvariantViolation, LimitExceeded
from ..ledger.models import Account, Balance, Price, Transfer, TransferRequest, new_transfer
from ..ledger.rules import AccountState, evaluate, expire_holds
from ..ledger.store import Applied, LedgerStore, UsageQuery

__all__ = ["LEDGER_SCHEMA", "SEQ_BITS", "STATEMENT_BLOCK", "SQLiteLedgerStore"]

T = TypeVar("T")

SEQ_BITS = 40
"""A record's key is ``(tenant number << SEQ_BITS) + sequence``: 2**40 records per tenant, 2**23 tenants."""
SEQ_SPAN = 1 << SEQ_BITS
TENANTS_MAX = 1 << (63 - SEQ_BITS)
TENANT_MEMO_MAX = 10_000
PARAMS_MAX = 500  # bound parameters per statement; SQLite's limit is 999 on old builds
ACCOUNTS_PER_SELECT = 100  # SQLite joins at most 500 selects in a compound
STATEMENT_BLOCK = 64
"""Sequences whose applied records are entered in the statements at once: a statement read scans fewer records
than this by key range, and this many single transfers share the pages of one statement write."""
# earlier layouts, oldest first: the kind of schema object that marks them (and its plural), their names, and the
# table whose rows are their records
EARLIER_LAYOUTS = (
    ("table", "tables", ("ledger_transfers", "ledger_history", "ledger_seq"), "ledger_transfers"),
    ("index", "indexes", ("ledger_records_debit", "ledger_records_credit"), "ledger_records"),
)

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_accounts (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, currency TEXT NOT NULL, allow_negative INTEGER NOT NULL,
    dp INTEGER NOT NULL, cp INTEGER NOT NULL, dpend INTEGER NOT NULL, cpend INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (tenant, owner, currency)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_tenants (n INTEGER PRIMARY KEY, tenant TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS ledger_records (
    k INTEGER PRIMARY KEY, tn INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, debit TEXT NOT NULL,
    credit TEXT NOT NULL, currency TEXT NOT NULL, amount INTEGER NOT NULL, pending_id TEXT NOT NULL,
    timeout_s INTEGER NOT NULL, code INTEGER NOT NULL, reason TEXT NOT NULL, metadata TEXT NOT NULL,
    ts REAL NOT NULL, ok INTEGER NOT NULL, error_code TEXT NOT NULL, error_message TEXT NOT NULL, state TEXT NOT NULL,
    captured INTEGER NOT NULL, expires REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_records_id ON ledger_records (tn, id);
CREATE INDEX IF NOT EXISTS ledger_records_open ON ledger_records (tn, expires) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS ledger_statements (
    owner TEXT NOT NULL, currency TEXT NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (owner, currency, k)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_usage (
    tenant TEXT NOT NULL, id TEXT NOT NULL, n INTEGER NOT NULL, record TEXT NOT NULL, provider TEXT NOT NULL,
    model TEXT NOT NULL, occurred REAL NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_usage_n ON ledger_usage (tenant, n);
CREATE TABLE IF NOT EXISTS ledger_prices (
    tenant TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, model)) WITHOUT ROWID;
"""

_COLUMNS = (
    "k, id, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, metadata, ts, ok,"
    " error_code, error_message, state, captured, expires"
)
_INSERT = f"INSERT INTO ledger_records (tn, {_COLUMNS}) VALUES ({','.join('?' * 20)})"
# an applied plain transfer (kind posted) with its constant columns written in the statement, not bound: most
# records are these, and every bound parameter costs the sqlite3 module a conversion
_INSERT_POSTED = (
    f"INSERT INTO ledger_records (tn, {_COLUMNS}) VALUES (?,?,?,'posted',?,?,?,?,'',0,?,?,?,?,1,'','','',0,0.0)"
)
_SELECT = f"SELECT {_COLUMNS} FROM ledger_records"
_LAST_KEY = "(SELECT k FROM ledger_records WHERE k>=?2 AND k<?3 ORDER BY k DESC LIMIT 1)"
# what every batch asks first, read with its accounts (one row, told apart by its NULL owner): the tenant's last key
# and whether a hold is due (?1 the tenant number, ?2 its first key, ?3 past its last, ?4 now)
_PROBE = (
    f"SELECT NULL, NULL, {_LAST_KEY},"
    " EXISTS (SELECT 1 FROM ledger_records WHERE tn=?1 AND state='pending' AND expires<=?4), NULL, NULL, NULL"
)
# enter the applied records with keys in (?1, ?2] in their accounts' statements
_ENTER_STATEMENTS = (
    "INSERT INTO ledger_statements (owner, currency, k)"
    " SELECT debit, currency, k FROM ledger_records WHERE k>?1 AND k<=?2 AND ok=1"
    " UNION ALL SELECT credit, currency, k FROM ledger_records WHERE k>?1 AND k<=?2 AND ok=1"
)
_RECORD_COLUMNS = ", ".join(f"r.{name.strip()}" for name in _COLUMNS.split(","))
# an account's statement (owner ?1, currency ?4) in the tenant whose keys are ?2 to below ?3, after key ?5, at most
# ?6 records: its entries, then the records not entered yet (after the last complete block of the tenant's last
# key), which are fewer than STATEMENT_BLOCK
_HISTORY = (
    f"SELECT * FROM (SELECT {_RECORD_COLUMNS} FROM ledger_statements s JOIN ledger_records r ON r.k = s.k"
    " WHERE s.owner=?1 AND s.currency=?4 AND s.k>?5 AND s.k<?3 ORDER BY s.k LIMIT ?6)"
    f" UNION ALL SELECT * FROM ({_SELECT}"
    f" WHERE k > MAX(?5, ?2 + ({_LAST_KEY} - ?2) / {STATEMENT_BLOCK} * {STATEMENT_BLOCK}) AND k<?3"
    " AND ok=1 AND currency=?4 AND (debit=?1 OR credit=?1) ORDER BY k LIMIT ?6)"
    " ORDER BY k LIMIT ?6"
)
_ACCOUNT_COLUMNS = "owner, currency, allow_negative, dp, cp, dpend, cpend"
_SELECT_ACCOUNTS = f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts"

AccountKey = tuple[str, str]


class _Recorded(Exception):
    """An id of the batch is already recorded: raised inside the transaction so that it rolls back."""


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _row_balance(row: Sequence[Any]) -> Balance:
    owner, currency, allow_negative, dp, cp, dpend, cpend = row
    return Balance(owner, currency, dp, cp, dpend, cpend, bool(allow_negative))


def _row_transfer(row: Sequence[Any]) -> Transfer:
    k, tid, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, meta, ts, ok = row[:14]
    error_code, error_message, state, captured, expires = row[14:]
    return new_transfer(
        tid,
        kind,
        debit,
        credit,
        currency,
        amount,
        pending_id or None,
        timeout_s,
        code,
        reason,
        json.loads(meta) if meta else {},
        _at(ts),
        k & (SEQ_SPAN - 1),
        "ok" if ok else "failed",
        error_code or None,
        error_message or None,
        state or None,
        captured,
        _at(expires) if expires else None,
    )


def _is_plain(t: Transfer) -> bool:
    """Whether ``_INSERT_POSTED`` records ``t`` exactly as ``_INSERT`` would."""
    return (
        t.kind == "posted"
        and t.status == "ok"
        and not t.pending_id
        and t.timeout_s == 0
        and t.state is None
        and t.captured == 0
        and t.expires_at is None
    )


def _posted_row(tn: int, base: int, t: Transfer, now: float) -> tuple[Any, ...]:
    meta = json.dumps(t.metadata) if t.metadata else ""
    return (tn, base + t.sequence, t.id, t.debit, t.credit, t.currency, t.amount, t.code, t.reason, meta, now)


def _transfer_row(tn: int, base: int, t: Transfer, now: float) -> tuple[Any, ...]:
    # "" and 0 stand for None: binding None costs the sqlite3 module an adapter lookup, several times an int's
    return (
        tn,
        base + t.sequence,
        t.id,
        t.kind,
        t.debit,
        t.credit,
        t.currency,
        t.amount,
        t.pending_id or "",
        t.timeout_s,
        t.code,
        t.reason,
        json.dumps(t.metadata) if t.metadata else "",
        now,
        1 if t.status == "ok" else 0,
        t.error_code or "",
        t.error_message or "",
        t.state or "",
        t.captured,
        0.0 if t.expires_at is None else t.expires_at.timestamp(),
    )


@functools.lru_cache(maxsize=ACCOUNTS_PER_SELECT)
def _accounts_sql(accounts: int) -> str:
    # a compound of primary-key lookups: for the few accounts of a batch, cheaper than IN (...), which builds a
    # temporary index per execution
    return " UNION ALL ".join([f"{_SELECT_ACCOUNTS} WHERE tenant=? AND owner=? AND currency=?"] * accounts)


@functools.lru_cache(maxsize=ACCOUNTS_PER_SELECT + 1)
def _probe_sql(accounts: int) -> str:
    # the probe, then the accounts as in _accounts_sql: ?5 the tenant, then each account's owner and currency
    rows = [
        f"{_SELECT_ACCOUNTS} WHERE tenant=?5 AND owner=?{6 + 2 * i} AND currency=?{7 + 2 * i}" for i in range(accounts)
    ]
    return " UNION ALL ".join([_PROBE, *rows])


@functools.lru_cache(maxsize=PARAMS_MAX)
def _ids_sql(ids: int) -> str:
    return f"{_SELECT} WHERE tn=? AND id IN ({','.join('?' * ids)})"


def _chunks(items: Sequence[T], size: int = PARAMS_MAX) -> Iterable[Sequence[T]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _account_keys(requests: Sequence[TransferRequest], holds: dict[str, Transfer]) -> set[AccountKey]:
    keys: set[AccountKey] = set()
    for r in requests:
        if r.kind in ("posted", "pending"):
            keys.add((r.debit, r.currency))
            keys.add((r.credit, r.currency))
    for h in holds.values():
        keys.add((h.debit, h.currency))
        keys.add((h.credit, h.currency))
    return keys


class SQLiteLedgerStore(LedgerStore):
    """Ledger primitives as SQLite transactions (see :class:`~sos_kernel.backends.sqlite.SQLiteEngine`)."""

    def __init__(self, engine: Any) -> None:
        self._db = engine
        self._schema_checked = False
        # tenant slug -> number; only numbers read back from a committed row are kept, and a number never changes
        self._tenant_numbers: dict[str, int] = {}

    # -- transactions -------------------------------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        if not self._schema_checked:
            return self._checked_first(self._db.write, fn)
        result: Awaitable[T] = self._db.write(fn)
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        if not self._schema_checked:
            return self._checked_first(self._db.read, fn)
        result: Awaitable[T] = self._db.read(fn)
        return result

    async def _checked_first(
        self, run: Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]], fn: Callable[[sqlite3.Connection], T]
    ) -> T:
        # once per store, before its first transaction, so a file in an earlier layout fails every ledger call
        await self._db.write(self._drop_or_refuse_earlier_layout)
        self._schema_checked = True
        return await run(fn)

    def _drop_or_refuse_earlier_layout(self, c: sqlite3.Connection) -> None:
        for kind, plural, names, records in EARLIER_LAYOUTS:
            marks = ",".join("?" * len(names))
            sql = f"SELECT name FROM sqlite_master WHERE type=? AND name IN ({marks})"
            found = [r[0] for r in c.execute(sql, (kind, *names))]
            if not found:
                continue
            # a layout's own records table may be gone already; a current one (ledger_records) is always there
            present = records in found or records not in names
            if present and c.execute(f"SELECT 1 FROM {records} LIMIT 1").fetchone():
                raise BackendFailure(
                    f"SQLite database {self._db.path!r} holds a ledger in an earlier layout ({plural}"
                    f" {', '.join(found)}), which this version does not migrate: open a new file for the ledger",
                    details={plural: found},
                )
            for name in found:  # the old ledger recorded nothing: nothing is lost
                c.execute(f"DROP {kind.upper()} {name}")

    # -- helpers run inside a transaction ------------------------------------------------------------------------

    def _tenant_number(self, c: sqlite3.Connection, tenant: str, *, create: bool) -> int | None:
        number = self._tenant_numbers.get(tenant)
        if number is not None:
            return number
        row = c.execute("SELECT n FROM ledger_tenants WHERE tenant=?", (tenant,)).fetchone()
        if row is None:
            if not create:
                return None
            # not remembered: this transaction may still roll back, and then the number is not this tenant's
            number = int(c.execute("INSERT INTO ledger_tenants (tenant) VALUES (?)", (tenant,)).lastrowid or 0)
        else:
            number = int(row[0])
            if len(self._tenant_numbers) >= TENANT_MEMO_MAX:  # bounded; a reset only costs a lookup
                self._tenant_numbers.clear()
            self._tenant_numbers[tenant] = number
        if not 0 < number < TENANTS_MAX:
            raise LimitExceeded(f"the SQLite ledger holds at most {TENANTS_MAX - 1} tenants")
        return number

    @staticmethod
    def _load_accounts(
        c: sqlite3.Connection, tenant: str, keys: set[AccountKey]
    ) -> dict[AccountKey, AccountState | None]:
        out: dict[AccountKey, AccountState | None] = dict.fromkeys(keys)
        for part in _chunks(list(keys), ACCOUNTS_PER_SELECT):
            args = [value for owner, currency in part for value in (tenant, owner, currency)]
            for owner, currency, neg, dp, cp, dpend, cpend in c.execute(_accounts_sql(len(part)), args):
                out[(owner, currency)] = AccountState(bool(neg), dp, cp, dpend, cpend)
        return out

    @classmethod
    def _probe(
        cls, c: sqlite3.Connection, tenant: str, tn: int, now: float, keys: set[AccountKey]
    ) -> tuple[tuple[int | None, int], dict[AccountKey, AccountState | None]]:
        """The probe's two values (see _PROBE) and the accounts ``keys`` name, in one statement if they are few."""
        base = tn << SEQ_BITS
        ordered = list(keys)
        args: list[Any] = [tn, base, base + SEQ_SPAN, now]
        if ordered:
            args.append(tenant)
        for owner, currency in ordered[:ACCOUNTS_PER_SELECT]:
            args += (owner, currency)
        out: dict[AccountKey, AccountState | None] = dict.fromkeys(keys)
        probe = None
        for owner, currency, neg, dp, cp, dpend, cpend in c.execute(
            _probe_sql(min(len(ordered), ACCOUNTS_PER_SELECT)), args
        ):
            if owner is None:
                probe = (neg, dp)
            else:
                out[(owner, currency)] = AccountState(bool(neg), dp, cp, dpend, cpend)
        if probe is None:
            raise InvariantViolation("the ledger probe returned no row")
        if len(ordered) > ACCOUNTS_PER_SELECT:
            out.update(cls._load_accounts(c, tenant, set(ordered[ACCOUNTS_PER_SELECT:])))
        return probe, out

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
    def _get(c: sqlite3.Connection, tn: int, ids: Sequence[str]) -> dict[str, Transfer]:
        out: dict[str, Transfer] = {}
        for part in _chunks(ids):
            rows = c.execute(_ids_sql(len(part)), (tn, *part))
            out.update((t.id, t) for t in map(_row_transfer, rows))
        return out

    @staticmethod
    def _update_holds(c: sqlite3.Connection, base: int, holds: Iterable[Transfer]) -> None:
        c.executemany(
            "UPDATE ledger_records SET state=?, captured=? WHERE k=?",
            [(h.state or "", h.captured, base + h.sequence) for h in holds],
        )

    def _expire(self, c: sqlite3.Connection, tenant: str, tn: int, now: float) -> None:
        rows = c.execute(f"{_SELECT} WHERE tn=? AND state='pending' AND expires<=?", (tn, now)).fetchall()
        if not rows:
            return
        holds = {t.id: t for t in map(_row_transfer, rows)}
        accounts = self._load_accounts(c, tenant, _account_keys([], holds))
        states = {k: v for k, v in accounts.items() if v is not None}
        self._update_holds(c, tn << SEQ_BITS, expire_holds(holds, states, now).values())
        self._save_accounts(c, tenant, accounts)

    def _apply(self, c: sqlite3.Connection, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        tn = self._tenant_number(c, tenant, create=True)
        if tn is None:
            raise InvariantViolation(f"tenant {tenant!r} has no ledger number")
        base = tn << SEQ_BITS
        keys = _account_keys(requests, {})
        (last, due), accounts = self._probe(c, tenant, tn, now, keys)
        if due:
            self._expire(c, tenant, tn, now)
            accounts = self._load_accounts(c, tenant, keys)  # as the expiry left them
        if not requests:
            return Applied([], {})
        first = (0 if last is None else last - base) + 1
        if first + len(requests) >= SEQ_SPAN:
            raise LimitExceeded(f"tenant {tenant!r} has recorded {SEQ_SPAN - 1} transfers, the SQLite ledger's most")
        pending_ids = [r.pending_id for r in requests if r.pending_id]
        holds = self._get(c, tn, pending_ids) if pending_ids else {}
        if holds:  # a settlement moves its hold's accounts
            accounts.update(self._load_accounts(c, tenant, _account_keys([], holds) - accounts.keys()))
        result = evaluate(requests, accounts, holds, now, first)
        try:
            if all(map(_is_plain, result.transfers)):
                c.executemany(_INSERT_POSTED, [_posted_row(tn, base, t, now) for t in result.transfers])
            else:
                c.executemany(_INSERT, [_transfer_row(tn, base, t, now) for t in result.transfers])
        except sqlite3.IntegrityError as exc:
            if "ledger_records.id" not in str(exc):
                raise
            raise _Recorded from exc
        if result.holds:
            self._update_holds(c, base, result.holds.values())
        if result.failure is None:
            self._save_accounts(c, tenant, accounts)
        self._enter_statements(c, base, first - 1, first + len(requests) - 1)
        return Applied(result.transfers, {})

    @staticmethod
    def _enter_statements(c: sqlite3.Connection, base: int, before: int, last: int) -> None:
        # the batch took the tenant's last sequence from `before` to `last`: the blocks it completed are entered,
        # in one write of a few pages for that many records, instead of one page per side of every record
        entered, entering = before - before % STATEMENT_BLOCK, last - last % STATEMENT_BLOCK
        if entering > entered:
            c.execute(_ENTER_STATEMENTS, (base + entered, base + entering))

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
            return Account(owner, currency, bool(row[0]), _at(row[1])), cur.rowcount > 0

        return await self._write(tx)

    async def balance(self, tenant: str, owner: str, currency: str, now: float) -> Balance | None:
        def tx(c: sqlite3.Connection) -> Balance | None:
            tn = self._tenant_number(c, tenant, create=False)
            if tn is not None:
                self._expire(c, tenant, tn, now)
            row = c.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE tenant=? AND owner=? AND currency=?",
                (tenant, owner, currency),
            ).fetchone()
            return _row_balance(row) if row else None

        return await self._write(tx)

    async def apply(self, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        try:
            return await self._write(lambda c: self._apply(c, tenant, requests, now))
        except _Recorded:
            existing = await self.transfers(tenant, [r.id for r in requests])
        if not existing:
            raise InvariantViolation("the ledger refused a batch as recorded, and none of its ids is")
        return Applied([], existing)

    async def transfers(self, tenant: str, ids: Sequence[str]) -> dict[str, Transfer]:
        def tx(c: sqlite3.Connection) -> dict[str, Transfer]:
            tn = self._tenant_number(c, tenant, create=False)
            return {} if tn is None else self._get(c, tn, ids)

        return await self._read(tx)

    async def history(self, tenant: str, owner: str, currency: str, after_seq: int, limit: int) -> list[Transfer]:
        def tx(c: sqlite3.Connection) -> list[Transfer]:
            tn = self._tenant_number(c, tenant, create=False)
            if tn is None:
                return []
            base = tn << SEQ_BITS
            args = (owner, base, base + SEQ_SPAN, currency, base + after_seq, limit)
            return [_row_transfer(r) for r in c.execute(_HISTORY, args)]

        return await self._read(tx)

    async def balances(self, tenant: str) -> list[Balance]:
        def tx(c: sqlite3.Connection) -> list[Balance]:
            rows = c.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE tenant=? ORDER BY owner, currency", (tenant,)
            ).fetchall()
            return [_row_balance(r) for r in rows]

        return await self._read(tx)

    async def all_transfers(self, tenant: str, after_seq: int, limit: int) -> list[Transfer]:
        def tx(c: sqlite3.Connection) -> list[Transfer]:
            tn = self._tenant_number(c, tenant, create=False)
            if tn is None:
                return []
            bounds = ((tn << SEQ_BITS) + after_seq, (tn + 1) << SEQ_BITS, limit)
            return [_row_transfer(r) for r in c.execute(f"{_SELECT} WHERE k>? AND k<? ORDER BY k LIMIT ?", bounds)]

        return await self._read(tx)

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

        return await self._write(tx)

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

        return await self._read(tx)

    async def set_price(self, tenant: str, price: Price) -> None:
        record = json.dumps(
            [price.input_per_mtok_micros, price.output_per_mtok_micros, price.per_image_micros, price.currency]
        )

        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO ledger_prices VALUES (?,?,?,?)", (tenant, price.provider, price.model, record)
            )

        await self._write(tx)

    async def price(self, tenant: str, provider: str, model: str) -> Price | None:
        def tx(c: sqlite3.Connection) -> Price | None:
            row = c.execute(
                "SELECT record FROM ledger_prices WHERE tenant=? AND provider=? AND model=?", (tenant, provider, model)
            ).fetchone()
            if row is None:
                return None
            inp, out, img, currency = json.loads(row[0])
            return Price(provider, model, inp, out, img, currency)

        return await self._read(tx)
