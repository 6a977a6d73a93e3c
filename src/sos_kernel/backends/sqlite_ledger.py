"""The ledger on SQLite: each batch is one ``BEGIN IMMEDIATE`` transaction running the shared rules.

The layout is chosen so that a transfer's commit writes as few pages as the ledger's guarantees allow, since a
single transfer's cost is mostly its commit, and a commit's cost grows with the pages it writes: the record and the
two accounts (about two pages), while the id table is written a block at a time and the statements are links in
those rows.

- ``ledger_records`` holds one row per recorded id, applied or failed, in columns. Its integer key is
  ``(tenant number << SEQ_BITS) + sequence``: a tenant's ledger is one contiguous range of the table in sequence
  order, a new record is an append at the end of that range (SQLite's cheapest insert), and the tenant's last
  sequence is the last key of the range, so no counter row is written.
- Records are entered in the id table a block of :data:`STATEMENT_BLOCK` sequences at a time, not one by one:
  the transaction that records a block's last sequence enters every record of the block, so a tenant whose last
  sequence is ``L`` has every record up to ``L - L % STATEMENT_BLOCK`` entered and none after (no counter says so:
  it follows from ``L``). Whatever reads the id table also reads the records after that point, fewer than
  :data:`STATEMENT_BLOCK`, by key range, in the same snapshot, so every read is exact; a single transfer writes no
  page of it, and one in 64 writes a few for the whole block.
- ``ledger_ids`` maps (tenant number, id) to the record's key: with the records not entered yet, it is the
  idempotency check, made before anything is written. Its primary key refuses an id entered twice (SOS-6099).
- Each account's statement is a chain through its applied records: a record's ``dprev`` and ``cprev`` are the
  sequences of its debit's and its credit's previous applied record in its currency (0 for none), written with the
  record, and the account's row holds its last applied record's sequence and how many it has (``last_seq``,
  ``n_records``, written by the same ``UPDATE`` that moves its balance). A transfer so writes no page for the
  statements but the two account rows it writes anyway, where an entry per side would land on a random leaf of an
  index per account. ``ledger_statements`` holds an anchor (owner, currency, key) at every
  :data:`STATEMENT_ANCHOR_EVERY`-th record of an account, written in the transaction that applies that record:
  ``history`` starts at the anchor far enough past its cursor (or at the account's last record) and walks back,
  reading at most ``limit + STATEMENT_ANCHOR_EVERY`` records.
- A batch's ``ledger.write`` audit record (see :mod:`sos_kernel.audit`) is written in the batch's last row, in the
  ``audit_*`` columns (:data:`AUDIT_COLUMNS`, NULL in every other row), chained like any record, and stays there:
  the transaction writes no page of ``audit_records`` for it, whose B-tree it does not otherwise touch. The
  transaction that completes a block writes one anchor row per block holding a record (:data:`AUDIT_BLOCKS`: the
  block's first record's sequence and key), so a page of the chain seeks its first ledger record by index. Every
  read of the chain (:data:`AUDIT_HEAD`, :data:`AUDIT_PAGE`, :data:`AUDIT_COUNT`: the next append's head, pages,
  ``verify()``, export, checkpoints) reads ``audit_records`` and the ledger rows together, in one snapshot.
- ``ledger_records_open`` indexes open holds only (a partial index), by expiry.
- ``ledger_tenants`` numbers the tenants; ``ledger_accounts`` holds each account's four counters.

Between its transactions a store keeps what it knows of each tenant (:class:`_TenantState`: the last sequence,
the ids not entered yet, the earliest expiry of an open hold, the accounts it has read or written), and uses it
only while the file's ``PRAGMA data_version``, read inside the write transaction, says no other connection has
committed since; otherwise it reads the last sequence, the expiry and the batch's accounts again in one statement,
and looks ids up among the unentered records in SQL until the next block completes. Every write transaction goes
through ``SQLiteLedgerStore._write``, the one place the kept state changes: it takes the tenant's state out before
the transaction and keeps the one a committed transfer leaves; every other write leaves none. A transfer from the one
process writing a file so reads no more than whether its id is in the id table. The state also keeps the tenant's
audit chain head, which any write on the same connection may move (another store appending a record): it is used
only while the connection's ``total_changes`` is what it was at the end of the transaction that kept it.

Every record and every account row carries its digest (a ``digest`` column, 32 bytes; see
:mod:`sos_kernel.ledger.chain`): a record's is computed in the transaction that inserts it, chained to the tenant's
previous record, whose digest the tenant state keeps (or the probe reads with the last key).

The file's layout is checked once, when the backend opens it (:data:`sos_kernel.backends.sqlite.SCHEMA_VERSION`);
a file made before the audit columns or the statement links gets them then, and one whose ledger records were
copied into ``audit_records`` (layout 4) keeps those copies only (:func:`upgrade_ledger`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from ..audit import acting
from ..audit.chain import audit_genesis, text_digest
from ..errors import InvariantViolation, LimitExceeded
from ..ledger.chain import account_digest, canonical_metadata, genesis, link
from ..ledger.models import Account, Balance, Price, Rate, Transfer, TransferRequest
from ..ledger.rules import AccountState, evaluate, expire_holds
from ..ledger.service import LEDGER_WRITE_IDS_BYTES_MAX, ledger_write_action, ledger_write_record
from ..ledger.store import Applied, LedgerStore, UsageQuery, load_rate, rate_key, rate_record

__all__ = [
    "LEDGER_SCHEMA",
    "LEDGER_WRITE_KIND",
    "SEQ_BITS",
    "STATEMENT_ANCHOR_EVERY",
    "STATEMENT_BLOCK",
    "SQLiteLedgerStore",
    "upgrade_ledger",
]

T = TypeVar("T")

SEQ_BITS = 40
"""A record's key is ``(tenant number << SEQ_BITS) + sequence``: 2**40 records per tenant, 2**23 tenants."""
SEQ_SPAN = 1 << SEQ_BITS
TENANTS_MAX = 1 << (63 - SEQ_BITS)
TENANT_MEMO_MAX = 10_000
TENANT_STATES_MAX = 64
"""Tenants whose state (:class:`_TenantState`) a store keeps between transactions; past it, the least recently
used is forgotten (reading it again costs one statement)."""
ACCOUNT_MEMO_MAX = 131_072
"""Accounts a kept tenant state holds; past it, the least recently used are forgotten (read again when a batch names
them), so a ledger of up to this many active accounts is served from memory once each has been read."""
ACCOUNTS_KEPT_MAX = 131_072
"""Accounts a store keeps over all its kept tenant states (about 300 bytes each: some 40 MB at worst); past it,
the least recently used tenant states are forgotten whole."""
AUDIT_MIDDLES_MAX = 1024
"""Encoded (actor, action, outcome) parts of ledger records' digests a process keeps (a few hundred bytes each)."""
PARAMS_MAX = 500  # bound parameters per statement; SQLite's limit is 999 on old builds
ACCOUNTS_PER_SELECT = 100  # SQLite joins at most 500 selects in a compound
STATEMENT_BLOCK = 64
"""Sequences whose records are entered in the id table at once: a read by id scans fewer records than this by key
range, and this many single transfers share the pages of one block's entry."""
STATEMENT_ANCHOR_EVERY = 64
"""An account's every this-many-th applied record is anchored in ``ledger_statements``: a ``history`` page walks
back from an anchor through at most this many records more than it returns, and one transfer in about
this-many-over-two writes an anchor."""
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_accounts (
    tenant TEXT NOT NULL, owner TEXT NOT NULL, currency TEXT NOT NULL, allow_negative INTEGER NOT NULL,
    dp INTEGER NOT NULL, cp INTEGER NOT NULL, dpend INTEGER NOT NULL, cpend INTEGER NOT NULL, created REAL NOT NULL,
    digest BLOB NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0, n_records INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, owner, currency)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_tenants (n INTEGER PRIMARY KEY, tenant TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS ledger_records (
    k INTEGER PRIMARY KEY, tn INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, debit TEXT NOT NULL,
    credit TEXT NOT NULL, currency TEXT NOT NULL, amount INTEGER NOT NULL, pending_id TEXT NOT NULL,
    timeout_s INTEGER NOT NULL, code INTEGER NOT NULL, reason TEXT NOT NULL, metadata TEXT NOT NULL,
    ts REAL NOT NULL, ok INTEGER NOT NULL, error_code TEXT NOT NULL, error_message TEXT NOT NULL, state TEXT NOT NULL,
    captured INTEGER NOT NULL, expires REAL NOT NULL, digest BLOB NOT NULL, audit_seq INTEGER, audit_at_us INTEGER,
    audit_actor TEXT, audit_action TEXT, audit_outcome TEXT, audit_details TEXT, audit_digest BLOB,
    dprev INTEGER NOT NULL DEFAULT 0, cprev INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ledger_records_open ON ledger_records (tn, expires) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS ledger_ids (
    tn INTEGER NOT NULL, id TEXT NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (tn, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_statements (
    owner TEXT NOT NULL, currency TEXT NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (owner, currency, k)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_usage (
    tenant TEXT NOT NULL, id TEXT NOT NULL, n INTEGER NOT NULL, record TEXT NOT NULL, provider TEXT NOT NULL,
    model TEXT NOT NULL, occurred REAL NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_usage_n ON ledger_usage (tenant, n);
CREATE TABLE IF NOT EXISTS ledger_prices (
    tenant TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, model)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_rates (
    tenant TEXT NOT NULL, from_currency TEXT NOT NULL, to_currency TEXT NOT NULL, valid_from TEXT NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (tenant, from_currency, to_currency, valid_from)) WITHOUT ROWID;
"""

_COLUMNS = (
    "k, id, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, metadata, ts, ok,"
    " error_code, error_message, state, captured, expires"
)
_INSERT = f"INSERT INTO ledger_records (tn, {_COLUMNS}, digest, dprev, cprev) VALUES ({','.join('?' * 23)})"


_SELECT = f"SELECT {_COLUMNS} FROM ledger_records"
_LAST_KEY = "(SELECT k FROM ledger_records WHERE k>=?2 AND k<?3 ORDER BY k DESC LIMIT 1)"
# what a connection reads of a tenant when it knows nothing current of it, with the accounts of the batch (one row,
# told apart by its NULL owner): the last key, the earliest expiry of an open hold and the last record's digest (?1
# the tenant number, ?2 its first key, ?3 past its last)
_PROBE = (
    f"SELECT NULL, NULL, {_LAST_KEY},"
    " (SELECT MIN(expires) FROM ledger_records WHERE tn=?1 AND state='pending'),"
    " (SELECT digest FROM ledger_records WHERE k>=?2 AND k<?3 ORDER BY k DESC LIMIT 1), NULL, NULL, NULL, NULL"
)
# the first key of a tenant's records not entered yet (in SQL: ?2 the tenant's first key, ?3 past its last)
_UNENTERED = f"?2 + ({_LAST_KEY} - ?2) / {STATEMENT_BLOCK} * {STATEMENT_BLOCK}"
# enter the records with keys in (?1, ?2] in the id table
_ENTER_IDS = "INSERT INTO ledger_ids (tn, id, k) SELECT tn, id, k FROM ledger_records WHERE k>?1 AND k<=?2"
_ANCHOR = "INSERT INTO ledger_statements (owner, currency, k) VALUES (?,?,?)"
_RECORD_COLUMNS = ", ".join(f"r.{name.strip()}" for name in _COLUMNS.split(","))
# the sequence of the previous record of the account ?1 (in the record r's currency) that r links to
_PREV = "CASE WHEN r.debit=?1 THEN r.dprev ELSE r.cprev END"
# an account's statement (owner ?1, currency ?4, tenant ?8) in the tenant whose keys are ?2 to below ?3, after key
# ?5, at most ?6 records: from the (?7 + 1)-th anchor after ?5 (or, with fewer, the account's last record) back
# along the links to ?5; each step goes to an earlier record, so an edited link cannot make it loop
_HISTORY = (
    "WITH RECURSIVE walk(k) AS (SELECT coalesce("
    "(SELECT k FROM ledger_statements WHERE owner=?1 AND currency=?4 AND k>?5 AND k<?3 ORDER BY k LIMIT 1 OFFSET ?7),"
    " (SELECT ?2 + last_seq FROM ledger_accounts WHERE tenant=?8 AND owner=?1 AND currency=?4 AND last_seq>0))"
    f" UNION ALL SELECT ?2 + {_PREV} FROM walk JOIN ledger_records r ON r.k = walk.k"
    f" WHERE walk.k>?5 AND {_PREV} BETWEEN 1 AND r.k - ?2 - 1)"
    f" SELECT {_RECORD_COLUMNS} FROM walk JOIN ledger_records r ON r.k = walk.k WHERE walk.k>?5 ORDER BY r.k LIMIT ?6"
)
_ACCOUNT_COLUMNS = "owner, currency, allow_negative, dp, cp, dpend, cpend"
_SELECT_ACCOUNTS = f"SELECT {_ACCOUNT_COLUMNS}, last_seq, n_records FROM ledger_accounts"

# -- the audit records kept in ledger rows ------------------------------------------------------------------------
LEDGER_WRITE_KIND = "ledger.write"
"""The kind of a ledger batch's audit record (its resource is empty): the one kind a ledger row holds."""
AUDIT_COLUMNS = (
    ("audit_seq", "INTEGER"),
    ("audit_at_us", "INTEGER"),
    ("audit_actor", "TEXT"),
    ("audit_action", "TEXT"),
    ("audit_outcome", "TEXT"),
    ("audit_details", "TEXT"),
    ("audit_digest", "BLOB"),
)
"""The columns of ``ledger_records`` holding a batch's audit record, in its last row (NULL in every other row);
the digest as 32 bytes (``audit_records`` keeps digests in hex). The previous record's digest is not stored: it is
the digest of the record before, wherever that is, and read from there (a ledger row's record is chained to it all
the same, so a changed, deleted or inserted record is named as before). The record of a batch of one transfer with a
plain id (the usual batch) leaves its action, outcome and details NULL too: they are its row's
(:data:`_DERIVED_KINDS`), written back by :data:`_AUDIT_AS_RECORD` when read, so the row holds only the record's
sequence, time, actor and digest."""
_AUDIT_DERIVED = ("audit_seq", "audit_at_us", "audit_actor", "audit_digest")
_AUDIT_STORED = (
    "audit_seq",
    "audit_at_us",
    "audit_actor",
    "audit_action",
    "audit_outcome",
    "audit_details",
    "audit_digest",
)


def _insert_audited_sql(columns: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO ledger_records (tn, {_COLUMNS}, digest, dprev, cprev, {', '.join(columns)})"
        f" VALUES ({','.join('?' * (23 + len(columns)))})"
    )


_INSERT_AUDITED = _insert_audited_sql(_AUDIT_STORED)
_INSERT_AUDITED_DERIVED = _insert_audited_sql(_AUDIT_DERIVED)
_DERIVED_KINDS = ("posted", "pending", "post_pending", "void_pending")
"""The transfer kinds whose single-transfer batch record is derived from its row (every kind there is)."""
_DERIVED_ACTION = (
    "CASE kind " + " ".join(f"WHEN '{kind}' THEN '{ledger_write_action(kind)}'" for kind in _DERIVED_KINDS) + " END"
)
# a ledger row's audit record in audit_records' column order (seq, at_us, kind, actor, action, resource, outcome,
# details, prev, digest): prev NULL (the previous record's digest, read by the store), and the fields a batch of one
# transfer derives from its row (see AUDIT_COLUMNS) written back as ledger_write_record gives them
_AUDIT_AS_RECORD = (
    f"audit_seq, audit_at_us, '{LEDGER_WRITE_KIND}', audit_actor, coalesce(audit_action, {_DERIVED_ACTION}), '',"
    " coalesce(audit_outcome, CASE ok WHEN 1 THEN 'ok' ELSE 'failed' END),"
    f""" coalesce(audit_details, '{{"count":1,"ids":["' || id || '"],"sequence":' || (k & {SEQ_SPAN - 1}) || '}}'),"""
    " NULL, lower(hex(audit_digest))"
)
AUDIT_BLOCKS = "audit_ledger_blocks"
"""The table anchoring the records kept in ledger rows: one row (tenant number, the first record's sequence, its
key) per complete block of :data:`STATEMENT_BLOCK` ledger keys holding any record, written by the transaction that
completes the block; a page of the chain seeks the block holding its first record here."""


def _unentered(base: str, end: str) -> str:
    # the last key of the tenant's last complete block (see _UNENTERED)
    last = f"(SELECT k FROM ledger_records WHERE k>={base} AND k<{end} ORDER BY k DESC LIMIT 1)"
    return f"{base} + ({last} - {base}) / {STATEMENT_BLOCK} * {STATEMENT_BLOCK}"


def _head_sql(tn: str, entered: str, end: str) -> str:
    # the ledger's last record is at or after its last anchored block, else among the keys after `entered` (the
    # tenant's last complete block): no anchor, no record in a complete block
    lower = f"coalesce((SELECT k FROM {AUDIT_BLOCKS} WHERE tn={tn} ORDER BY seq DESC LIMIT 1), {entered})"
    return (
        "SELECT * FROM (SELECT seq, digest FROM audit_records WHERE tenant=?1 ORDER BY seq DESC LIMIT 1)"
        " UNION ALL SELECT * FROM (SELECT audit_seq, lower(hex(audit_digest)) FROM ledger_records"
        f" WHERE k>={lower} AND k<{end} AND audit_seq IS NOT NULL ORDER BY k DESC LIMIT 1) ORDER BY 1 DESC LIMIT 1"
    )


# the tenant named ?1's number and key range; NULL when it has no ledger (then its ledger holds no record)
_TN = "(SELECT n FROM ledger_tenants WHERE tenant=?1)"
_BASE = f"({_TN} << {SEQ_BITS})"
_END = f"({_TN} + 1 << {SEQ_BITS})"

AUDIT_HEAD = _head_sql(_TN, _unentered(_BASE, _END), _END)
"""The audit chain's head (seq, digest) of the tenant ?1: its last record in ``audit_records`` or in a ledger row,
whichever is later (no row before its first record)."""
# the same, ?2 the tenant's last entered key, ?3 past its last (the tenant's number follows from it)
_LEDGER_AUDIT_HEAD = _head_sql(f"((?3 >> {SEQ_BITS}) - 1)", "?2", "?3")
# the key of the ledger's block holding the tenant's record ?2 + 1 (or the first after it): the last block anchored
# at or before that sequence, else the tenant's first key
_PAGE_START = (
    f"coalesce((SELECT k FROM {AUDIT_BLOCKS} WHERE tn={_TN} AND seq<=?2 + 1 ORDER BY seq DESC LIMIT 1), {_BASE})"
)
AUDIT_PAGE = (
    "SELECT * FROM (SELECT seq, at_us, kind, actor, action, resource, outcome, details, prev, digest"
    " FROM audit_records WHERE tenant=?1 AND seq>?2 ORDER BY seq LIMIT ?3)"
    f" UNION ALL SELECT * FROM (SELECT {_AUDIT_AS_RECORD} FROM ledger_records WHERE k>={_PAGE_START} AND k<{_END}"
    " AND audit_seq>?2 ORDER BY k LIMIT ?3) ORDER BY 1 LIMIT ?3"
)
"""Up to ?3 audit records of the tenant ?1 after sequence ?2, in ``audit_records`` or in ledger rows, by sequence
(the ledger's from the block its first one is in: a seek, never a scan of the tenant's ledger from its start)."""
AUDIT_COUNT = (
    "SELECT (SELECT count(*) FROM audit_records WHERE tenant=?1) + (SELECT count(*) FROM ledger_records"
    f" WHERE k>={_BASE} AND k<{_END} AND audit_seq IS NOT NULL)"
)
"""How many audit records the tenant ?1 has, in ``audit_records`` and in ledger rows (``verify()``'s check that
no record was added beside the chain: it reads every record anyway)."""
# anchor each complete block in keys (?1, ?2] (?1 a block's end) that holds a record (?3 the tenant number)
_ANCHOR_BLOCKS = (
    f"INSERT INTO {AUDIT_BLOCKS} (tn, seq, k) SELECT ?3, min(audit_seq), min(k) FROM ledger_records"
    f" WHERE k>?1 AND k<=?2 AND audit_seq IS NOT NULL GROUP BY (k - ?1 - 1) / {STATEMENT_BLOCK}"
)

AccountKey = tuple[str, str]


@dataclass(slots=True)
class _Account(AccountState):
    """An account's balance fields and its statement's head, as its row holds them."""

    last_seq: int = 0
    """The sequence of its last applied record (0 before the first): the next one links to it."""
    n_records: int = 0
    """How many applied records it has: the one that makes this a multiple of STATEMENT_ANCHOR_EVERY is anchored."""


@dataclass(slots=True)
class _TenantState:
    """What a connection knows of one tenant's ledger as of its own last commit to it.

    It is current for as long as no other connection commits to the file, which ``PRAGMA data_version`` tells:
    :class:`SQLiteLedgerStore` keeps these only under the version it read in the transaction that left them, and
    reads them again from the file when another connection has committed since.
    """

    last: int
    """The tenant's last sequence (0 before its first record)."""
    due_at: float
    """No open hold of the tenant expires before this (``inf`` when none is open). A lower bound: once it has
    passed, the due holds are expired and it is read again."""
    tail: set[str] | None
    """The ids of the tenant's records after its last complete block (the ones not in the id table yet), or None
    when they were not read: then they are looked up in the file, until the next block completes."""
    accounts: dict[AccountKey, _Account]
    """Accounts of the tenant as committed, by (owner, currency); an account not here is read from the file."""
    head: bytes
    """The digest the tenant's next record is chained to (see :mod:`sos_kernel.ledger.chain`)."""
    audit: tuple[int, bytes] | None = None
    """The tenant's audit chain head (sequence, digest) as this connection's last commit to the tenant left it, or
    None when it is to be read in the transaction. Any other write on the connection may append to the chain, so
    it is used only while :attr:`changes` is still the connection's count of changed rows."""
    changes: int = -1
    """The connection's ``total_changes`` at the end of the transaction that left this state."""


Staged = tuple[int, "_TenantState"]
"""A transaction's data version and the tenant state it leaves, kept once it has committed."""


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _row_balance(row: Sequence[Any]) -> Balance:
    owner, currency, allow_negative, dp, cp, dpend, cpend = row
    return Balance(owner, currency, dp, cp, dpend, cpend, bool(allow_negative))


def _row_transfer(row: Sequence[Any]) -> Transfer:
    k, tid, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, meta, ts, ok = row[:14]
    error_code, error_message, state, captured, expires = row[14:]
    return Transfer(
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


def _insert(
    c: sqlite3.Cursor,
    tn: int,
    base: int,
    transfers: list[Transfer],
    digests: list[bytes],
    links: list[tuple[int, int]],
    now: float,
    audit: tuple[Any, ...] | None,
) -> None:
    """Insert the records of a batch, with their digests and statement links, and its audit record (if any) in its
    last row."""
    rows = [(*_transfer_row(tn, base, t, now), d, *ln) for t, d, ln in zip(transfers, digests, links, strict=True)]
    if audit is None:
        c.executemany(_INSERT, rows)
        return
    if len(rows) > 1:  # the other rows leave the audit columns out (NULL) rather than binding None
        c.executemany(_INSERT, rows[:-1])
    c.execute(audit[0], (*rows[-1], *audit[1]))


def _statement_links(
    base: int, transfers: list[Transfer], accounts: dict[AccountKey, _Account | None]
) -> tuple[list[tuple[int, int]], list[tuple[str, str, int]]]:
    """Each record's statement links (its debit's and its credit's previous applied record, 0 for none; 0 and 0
    for a failed one), and the anchors the batch adds. Moves the accounts' statement heads, in order."""
    links: list[tuple[int, int]] = []
    anchors: list[tuple[str, str, int]] = []
    for t in transfers:
        if t.status != "ok":
            links.append((0, 0))
            continue
        debit, credit = accounts.get((t.debit, t.currency)), accounts.get((t.credit, t.currency))
        if debit is None or credit is None:
            raise InvariantViolation(f"transfer {t.id} was applied to an account the batch did not read")
        links.append((debit.last_seq, credit.last_seq))
        for owner, account in ((t.debit, debit), (t.credit, credit)):
            account.last_seq = t.sequence
            account.n_records += 1
            if account.n_records % STATEMENT_ANCHOR_EVERY == 0:
                anchors.append((owner, t.currency, base + t.sequence))
    return links, anchors


def _ledger_audit(
    c: sqlite3.Cursor, tenant: str, head: tuple[int, bytes] | None, entered: int, end: int, batch: list[Transfer]
) -> tuple[tuple[Any, ...], tuple[int, bytes]]:
    """The audit record of ``batch`` (:func:`~sos_kernel.ledger.service.ledger_write_record`'s) as the statement
    inserting the batch's last row with it and the values of its audit columns (see :data:`AUDIT_COLUMNS`), and
    the chain's new head (sequence, digest). It is chained after ``head`` when the
    caller knows it current, else after the head read in the open write transaction (so processes sharing the file
    never fork the chain): ``entered`` is the tenant's last entered key, ``end`` past its last key."""
    if head is None:
        row = c.execute(_LEDGER_AUDIT_HEAD, (tenant, entered, end)).fetchone()
        head = (row[0], _digest_bytes(tenant, row[0], row[1])) if row else (0, bytes.fromhex(audit_genesis(tenant)))
    seq, prev = head
    seq += 1
    at_us, actor = time.time_ns() // 1000, acting()
    action, outcome, text, derived = _batch_fields(batch)
    digest = _ledger_digest(prev, seq, at_us, actor, action, outcome, text)
    if derived:
        return (_INSERT_AUDITED_DERIVED, (seq, at_us, actor, digest)), (seq, digest)
    return (_INSERT_AUDITED, (seq, at_us, actor, action, outcome, text or "{}", digest)), (seq, digest)


def _digest_bytes(tenant: str, seq: int, digest: Any) -> bytes:
    try:
        return bytes.fromhex(digest)
    except (TypeError, ValueError):
        raise InvariantViolation(
            f"audit record {seq} of {tenant!r} has a malformed digest", details={"seq": seq}
        ) from None


def _batch_fields(batch: list[Transfer]) -> tuple[str, str, str, bool]:
    """The action, outcome and details (in canonical text) of ``batch``'s audit record, and whether they follow
    from its row (a batch of one transfer with a plain id, the usual batch, taken without building the record)."""
    first = batch[0]
    tid = first.id
    if len(batch) == 1 and len(tid) + 3 <= LEDGER_WRITE_IDS_BYTES_MAX and _PLAIN.match(tid):
        kind = first.kind
        return (
            _ACTIONS.get(kind) or ledger_write_action(kind),
            first.status,
            f'{{"count":1,"ids":["{tid}"],"sequence":{first.sequence}}}',
            kind in _ACTIONS,
        )
    record = ledger_write_record(batch)
    return record["action"], record["outcome"], details_text(record["details"]), False


_ACTIONS = {kind: ledger_write_action(kind) for kind in _DERIVED_KINDS}


_KIND_FIELD = f"{len(LEDGER_WRITE_KIND)}:{LEDGER_WRITE_KIND}"


def _ledger_digest(prev: bytes, seq: int, at_us: int, actor: str, action: str, outcome: str, text: str) -> bytes:
    """``text_digest(prev.hex(), seq, at_us, LEDGER_WRITE_KIND, actor, action, "", outcome, text)`` as bytes, the
    fields encoded in one step when they are ASCII (the usual case: then characters are bytes)."""
    n, t = str(seq), str(at_us)
    middle = _middle(actor, action, outcome)
    encoded = f"1:A{len(n)}:{n}{len(t)}:{t}{middle}{len(text)}:{text}"
    if not encoded.isascii():
        return bytes.fromhex(text_digest(prev.hex(), seq, at_us, LEDGER_WRITE_KIND, actor, action, "", outcome, text))
    return _sha256(prev + encoded.encode("ascii")).digest()


_sha256 = hashlib.sha256


@functools.lru_cache(maxsize=AUDIT_MIDDLES_MAX)
def _middle(actor: str, action: str, outcome: str) -> str:
    # the encoded fields between the time and the details: the same for most records (one actor, one action)
    return f"{_KIND_FIELD}{len(actor)}:{actor}{len(action)}:{action}0:{len(outcome)}:{outcome}"


_PLAIN = re.compile(r"[A-Za-z0-9_.:@/-]*\Z")
"""Strings JSON writes as they are (no escape): every transfer id."""


def details_text(details: dict[str, Any]) -> str:
    """``canonical_metadata(details)``, written directly for a ledger batch's details (the hot path)."""
    ids, count, sequence = details.get("ids"), details.get("count"), details.get("sequence")
    if (
        len(details) == 3
        and type(count) is int
        and type(sequence) is int
        and type(ids) is list
        and all(type(i) is str and _PLAIN.match(i) for i in ids)
    ):
        named = ",".join(['"' + i + '"' for i in ids])
        return f'{{"count":{count},"ids":[{named}],"sequence":{sequence}}}'
    return canonical_metadata(details)


def upgrade_ledger(c: sqlite3.Connection) -> None:
    """Add the columns a file made before them lacks (:data:`AUDIT_COLUMNS`, NULL in its existing rows), inside
    the opening write transaction: the file's records stay as they are, and its audit chain goes on from its head;
    then link its statements (:func:`_upgrade_statement_links`)."""
    present = {row[1] for row in c.execute("PRAGMA table_info(ledger_records)")}
    for name, kind in AUDIT_COLUMNS:
        if name not in present:
            c.execute(f"ALTER TABLE ledger_records ADD COLUMN {name} {kind}")
    _upgrade_audit_rows(c)
    _upgrade_statement_links(c)


_LINK_COLUMNS = (
    ("ledger_records", "dprev"),
    ("ledger_records", "cprev"),
    ("ledger_accounts", "last_seq"),
    ("ledger_accounts", "n_records"),
)
# every applied record's two sides with, per account, the previous side's sequence and the side's ordinal
_SIDES = f"""CREATE TEMP TABLE ledger_upgrade_sides AS
SELECT k, tn, owner, currency, side, coalesce(lag(k) OVER w - (tn << {SEQ_BITS}), 0) AS prev, row_number() OVER w AS n
FROM (SELECT k, tn, debit AS owner, currency, 0 AS side FROM ledger_records WHERE ok=1
      UNION ALL SELECT k, tn, credit, currency, 1 FROM ledger_records WHERE ok=1)
WINDOW w AS (PARTITION BY tn, owner, currency ORDER BY k)"""
_LINKS_FILL = (
    "UPDATE ledger_records SET"
    " dprev=coalesce((SELECT prev FROM temp.ledger_upgrade_sides s WHERE s.k=ledger_records.k AND s.side=0), 0),"
    " cprev=coalesce((SELECT prev FROM temp.ledger_upgrade_sides s WHERE s.k=ledger_records.k AND s.side=1), 0)"
)
_HEADS_FILL = (
    f"UPDATE ledger_accounts SET (last_seq, n_records) = (SELECT coalesce(max(s.k) - (s.tn << {SEQ_BITS}), 0),"
    " count(*) FROM temp.ledger_upgrade_sides s WHERE s.tn=(SELECT n FROM ledger_tenants t"
    " WHERE t.tenant=ledger_accounts.tenant) AND s.owner=ledger_accounts.owner AND s.currency=ledger_accounts.currency)"
)


def _upgrade_statement_links(c: sqlite3.Connection) -> None:
    """Give a file made before the statement links (layout 4 and earlier: an entry per side of every applied
    record) its links, its accounts' statement heads and its anchors, all computed from the applied records, in
    the opening write transaction. Idempotent: run again, it computes the same."""
    for table, name in _LINK_COLUMNS:
        if name not in {row[1] for row in c.execute(f"PRAGMA table_info({table})")}:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
    c.execute("DROP TABLE IF EXISTS temp.ledger_upgrade_sides")
    c.execute(_SIDES)
    c.execute("CREATE INDEX temp.ledger_upgrade_sides_k ON ledger_upgrade_sides (k, side)")
    c.execute("CREATE INDEX temp.ledger_upgrade_sides_owner ON ledger_upgrade_sides (tn, owner, currency)")
    c.execute(_LINKS_FILL)
    c.execute(_HEADS_FILL)
    c.execute("DELETE FROM ledger_statements")
    c.execute(
        "INSERT INTO ledger_statements (owner, currency, k) SELECT owner, currency, k"
        f" FROM temp.ledger_upgrade_sides WHERE n % {STATEMENT_ANCHOR_EVERY} = 0"
    )
    c.execute("DROP TABLE temp.ledger_upgrade_sides")


def _upgrade_audit_rows(c: sqlite3.Connection) -> None:
    """Layout 4 -> 5: a ledger row's record copied into ``audit_records`` with its block (layout 4) stays there
    only, its copy in the row erased, so every record is in one place; the rows not entered yet keep theirs (and
    are anchored when their block completes; their ``audit_prev`` column, which layout 5 neither writes nor reads,
    stays). Idempotent: a file without such copies is left as it is."""
    names = [name for name, _ in AUDIT_COLUMNS]
    if "audit_prev" in {row[1] for row in c.execute("PRAGMA table_info(ledger_records)")}:
        names.append("audit_prev")
    erased = ", ".join(f"{name}=NULL" for name in names)
    c.execute(
        f"UPDATE ledger_records SET {erased} WHERE audit_seq IS NOT NULL AND EXISTS (SELECT 1 FROM audit_records a"
        " JOIN ledger_tenants t ON a.tenant=t.tenant WHERE t.n=ledger_records.tn AND a.seq=ledger_records.audit_seq)"
    )


def _meta(t: Transfer) -> str:
    return json.dumps(t.metadata) if t.metadata else ""


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
        _meta(t),
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


def _marks(first: int, count: int) -> str:
    return ",".join(f"?{first + i}" for i in range(count))


@functools.lru_cache(maxsize=PARAMS_MAX)
def _ids_sql(ids: int) -> str:
    # records by id (?1 the tenant number, ?2 its first key, ?3 past its last, then the ids): the entered ones
    # through the id table, the rest (fewer than STATEMENT_BLOCK) by key range
    marks = _marks(4, ids)
    return (
        f"SELECT {_RECORD_COLUMNS} FROM ledger_ids i JOIN ledger_records r ON r.k = i.k"
        f" WHERE i.tn=?1 AND i.id IN ({marks})"
        f" UNION ALL {_SELECT} WHERE k > {_UNENTERED} AND k<?3 AND id IN ({marks})"
    )


_ENTERED_ONE = "SELECT 1 FROM ledger_ids WHERE tn=? AND id=?"


@functools.lru_cache(maxsize=PARAMS_MAX)
def _entered_sql(ids: int, tail: bool) -> str:
    # whether any of the ids ?4... of tenant number ?1 is in the id table, or (with `tail`) among its records with
    # keys in (?2, ?3], the ones not entered yet
    marks = _marks(4, ids)
    entered = f"SELECT 1 FROM ledger_ids WHERE tn=?1 AND id IN ({marks})"
    if tail:
        entered += f" UNION ALL SELECT 1 FROM ledger_records WHERE k>?2 AND k<=?3 AND id IN ({marks})"
    return entered + " LIMIT 1"


@functools.lru_cache(maxsize=ACCOUNTS_PER_SELECT + 1)
def _probe_sql(accounts: int) -> str:
    # the probe, then the accounts as in _accounts_sql: ?4 the tenant, then each account's owner and currency
    rows = [
        f"{_SELECT_ACCOUNTS} WHERE tenant=?4 AND owner=?{5 + 2 * i} AND currency=?{6 + 2 * i}" for i in range(accounts)
    ]
    return " UNION ALL ".join([_PROBE, *rows])


def _chunks(items: Sequence[T], size: int = PARAMS_MAX) -> Iterable[Sequence[T]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _account_keys(requests: Sequence[TransferRequest], holds: dict[str, Transfer]) -> set[AccountKey]:
    if len(requests) == 1 and not holds:  # the usual batch, without the loops
        r = requests[0]
        return {(r.debit, r.currency), (r.credit, r.currency)} if r.kind in ("posted", "pending") else set()
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
    """Ledger primitives as SQLite transactions (see :class:`~sos_kernel.backends.sqlite_engine.SQLiteEngine`)."""

    audits_writes: bool = True

    def __init__(self, engine: Any) -> None:
        self._db = engine
        # tenant slug -> number; only numbers read back from a committed row are kept, and a number never changes
        self._tenant_numbers: dict[str, int] = {}
        # tenant slug -> what this connection knows of it, current while the file's data version is _version;
        # changed only by _write
        self._states: dict[str, _TenantState] = {}
        self._version: int | None = None

    # -- transactions -------------------------------------------------------------------------------------------

    async def _write(
        self, tenant: str, fn: Callable[[sqlite3.Connection, _TenantState | None], tuple[T, Staged | None]]
    ) -> T:
        """The one way this store writes, and the one place the kept tenant state changes.

        The tenant's kept state is taken out before the transaction and handed to ``fn``, so a transaction that
        fails leaves none; the state ``fn`` returns is kept once the transaction has committed, and None leaves
        none (the next transaction reads the tenant from the file).
        """
        kept = self._states.pop(tenant, None)

        def tx(c: sqlite3.Connection) -> tuple[T, Staged | None]:
            result, staged = fn(c, kept)
            if staged is not None:  # the last write of the transaction: the commit changes no row
                staged[1].changes = c.total_changes
            return result, staged

        result, staged = await self._db.write(tx)
        if staged is not None:  # committed, and nothing ran on this connection since (no await in between)
            self._install(tenant, staged)
        return cast(T, result)

    def _write_plain(self, tenant: str, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """:meth:`_write` for a transaction that keeps no tenant state."""
        return self._write(tenant, lambda c, _kept: (fn(c), None))

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        result: Awaitable[T] = self._db.read(fn)
        return result

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
    def _load_accounts(c: sqlite3.Connection, tenant: str, keys: set[AccountKey]) -> dict[AccountKey, _Account | None]:
        out: dict[AccountKey, _Account | None] = dict.fromkeys(keys)
        for part in _chunks(list(keys), ACCOUNTS_PER_SELECT):
            args = [value for owner, currency in part for value in (tenant, owner, currency)]
            for owner, currency, neg, dp, cp, dpend, cpend, last, n in c.execute(_accounts_sql(len(part)), args):
                out[(owner, currency)] = _Account(bool(neg), dp, cp, dpend, cpend, last, n)
        return out

    @staticmethod
    def _save_accounts(c: sqlite3.Connection, tenant: str, accounts: dict[AccountKey, _Account | None]) -> None:
        # the statement's head moves with the balance, in the same row write
        c.executemany(
            "UPDATE ledger_accounts SET dp=?, cp=?, dpend=?, cpend=?, last_seq=?, n_records=?"
            " WHERE tenant=? AND owner=? AND currency=?",
            [
                (
                    s.debits_posted,
                    s.credits_posted,
                    s.debits_pending,
                    s.credits_pending,
                    s.last_seq,
                    s.n_records,
                    tenant,
                    o,
                    cur,
                )
                for (o, cur), s in accounts.items()
                if s is not None
            ],
        )

    @staticmethod
    def _get(c: sqlite3.Connection, tn: int, ids: Sequence[str]) -> dict[str, Transfer]:
        out: dict[str, Transfer] = {}
        base = tn << SEQ_BITS
        for part in _chunks(ids, PARAMS_MAX - 3):
            rows = c.execute(_ids_sql(len(part)), (tn, base, base + SEQ_SPAN, *part))
            out.update((t.id, t) for t in map(_row_transfer, rows))
        return out

    @classmethod
    def _read_state(cls, c: sqlite3.Connection, tenant: str, tn: int, keys: set[AccountKey]) -> _TenantState:
        """The tenant's state read from the file (without its unentered ids), with the accounts ``keys`` name."""
        base = tn << SEQ_BITS
        ordered = list(keys)
        args: list[Any] = [tn, base, base + SEQ_SPAN]
        if ordered:
            args.append(tenant)
        for owner, currency in ordered[:ACCOUNTS_PER_SELECT]:
            args += (owner, currency)
        state = None
        accounts: dict[AccountKey, _Account] = {}
        for owner, currency, neg, dp, cp, dpend, cpend, last, n in c.execute(
            _probe_sql(min(len(ordered), ACCOUNTS_PER_SELECT)), args
        ):
            if owner is None:
                last, due, head = neg, dp, genesis(tenant) if cp is None else bytes(cp)
                state = _TenantState(
                    0 if last is None else last - base, math.inf if due is None else due, None, {}, head
                )
            else:
                accounts[(owner, currency)] = _Account(bool(neg), dp, cp, dpend, cpend, last, n)
        if state is None:
            raise InvariantViolation("the ledger probe returned no row")
        for key, value in cls._load_accounts(c, tenant, set(ordered[ACCOUNTS_PER_SELECT:])).items():
            if value is not None:
                accounts[key] = value
        state.accounts = accounts
        return state

    def _state(
        self, c: sqlite3.Connection, tenant: str, tn: int, keys: set[AccountKey], state: _TenantState | None
    ) -> tuple[int, _TenantState]:
        """The tenant's state as of now, and the file's data version it is current at: the kept ``state`` when no
        other connection has committed since it was kept, else read from the file (with the accounts ``keys``
        name, in the same statement)."""
        version: int = self._db.cursor.execute("PRAGMA data_version").fetchone()[0]
        if state is None or version != self._version:
            state = self._read_state(c, tenant, tn, keys)
        elif state.changes != c.total_changes:  # written on this connection since: an audit record, perhaps
            state.audit = None
        return version, state

    def _recorded(self, c: sqlite3.Connection, tn: int, state: _TenantState, ids: Sequence[str]) -> bool:
        """Whether any of ``ids`` is recorded: among the records not entered yet, or in the id table."""
        tail, cursor = state.tail, self._db.cursor
        if tail is not None:
            if len(ids) == 1:  # the usual case, without the chunking
                return ids[0] in tail or cursor.execute(_ENTERED_ONE, (tn, ids[0])).fetchone() is not None
            if not tail.isdisjoint(ids):
                return True
        base = tn << SEQ_BITS
        bounds = (tn, base + state.last - state.last % STATEMENT_BLOCK, base + state.last)
        sql = functools.partial(_entered_sql, tail=tail is None)
        return any(c.execute(sql(len(part)), (*bounds, *part)).fetchone() for part in _chunks(ids, PARAMS_MAX - 3))

    def _accounts(
        self, c: sqlite3.Connection, tenant: str, state: _TenantState, keys: Iterable[AccountKey]
    ) -> dict[AccountKey, _Account | None]:
        """The accounts ``keys`` name (None for one that does not exist), read from the file if not known."""
        known = state.accounts
        out: dict[AccountKey, _Account | None] = {}
        missing: set[AccountKey] = set()
        for key in keys:
            out[key] = value = known.pop(key, None)
            if value is None:
                missing.add(key)
            else:  # the most recently used last: the memo forgets from the front
                known[key] = value
        if missing:
            for key, value in self._load_accounts(c, tenant, missing).items():
                if value is not None:
                    out[key] = known[key] = value
        return out

    def _install(self, tenant: str, staged: Staged) -> None:
        """Keep a committed transaction's tenant state (see :class:`_TenantState`), within the bounds."""
        version, state = staged
        accounts = state.accounts
        if len(accounts) > ACCOUNT_MEMO_MAX:  # forgetting the least recent only costs reading them again
            # an eighth more than the excess, so the forgetting is not paid on every batch
            for key in list(itertools.islice(accounts, len(accounts) - ACCOUNT_MEMO_MAX + ACCOUNT_MEMO_MAX // 8)):
                del accounts[key]
        if version != self._version:
            self._states.clear()
            self._version = version
        if len(self._states) >= TENANT_STATES_MAX:  # a state is popped when used: the first is the least recent
            del self._states[next(iter(self._states))]
        kept = len(accounts) + sum(len(s.accounts) for s in self._states.values())
        while kept > ACCOUNTS_KEPT_MAX and self._states:
            kept -= len(self._states.pop(next(iter(self._states))).accounts)
        self._states[tenant] = state

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

    def _apply(
        self,
        c: sqlite3.Connection,
        kept: _TenantState | None,
        tenant: str,
        requests: Sequence[TransferRequest],
        now: float,
    ) -> tuple[Applied, Staged]:
        tn = self._tenant_number(c, tenant, create=True)
        if tn is None:
            raise InvariantViolation(f"tenant {tenant!r} has no ledger number")
        base = tn << SEQ_BITS
        keys = _account_keys(requests, {})
        version, state = self._state(c, tenant, tn, keys, kept)
        if state.due_at <= now:
            self._expire(c, tenant, tn, now)
            tail, state = state.tail, self._read_state(c, tenant, tn, keys)  # as the expiry left them
            state.tail = tail
        if not requests:
            return Applied([], {}), (version, state)
        ids = [r.id for r in requests]
        if self._recorded(c, tn, state, ids):  # nothing is written: the service compares with what is recorded
            return Applied([], self._get(c, tn, ids)), (version, state)
        first = state.last + 1
        if first + len(requests) >= SEQ_SPAN:
            raise LimitExceeded(f"tenant {tenant!r} has recorded {SEQ_SPAN - 1} transfers, the SQLite ledger's most")
        pending_ids = [r.pending_id for r in requests if r.pending_id]
        holds = self._get(c, tn, pending_ids) if pending_ids else {}
        if holds:  # a settlement moves its hold's accounts
            keys = _account_keys(requests, holds)
        accounts = self._accounts(c, tenant, state, keys)
        result = evaluate(requests, accounts, holds, now, first)
        digests = link(state.head, result.transfers, accounts)
        links, anchors = _statement_links(base, result.transfers, accounts)
        state.head = digests[-1]
        audit = None
        if self.audits_writes:  # the batch's audit record commits with it, in its last row: never one without it
            entered = base + state.last - state.last % STATEMENT_BLOCK
            audit, state.audit = _ledger_audit(
                self._db.cursor, tenant, state.audit, entered, base + SEQ_SPAN, result.transfers
            )
        else:  # the service records the batch on its own: the head is read again
            state.audit = None
        _insert(self._db.cursor, tn, base, result.transfers, digests, links, now, audit)
        if anchors:
            c.executemany(_ANCHOR, anchors)
        if result.holds:
            self._update_holds(c, base, result.holds.values())
        if result.failure is None:
            self._save_accounts(c, tenant, accounts)
        state.last = last = first + len(requests) - 1
        # the batch completed a block if a multiple of STATEMENT_BLOCK is among its sequences (first..last)
        if last % STATEMENT_BLOCK < len(requests) and self._enter_blocks(c, tenant, base, first - 1, last):
            # the records not entered now are this batch's last ones
            state.tail = set(ids[len(ids) - last % STATEMENT_BLOCK :]) if last % STATEMENT_BLOCK else set()
        elif state.tail is not None:
            state.tail.update(ids)
        for t in result.transfers:
            if t.expires_at is not None and t.state == "pending":
                state.due_at = min(state.due_at, t.expires_at.timestamp())
        return Applied(result.transfers, {}), (version, state)

    @staticmethod
    def _enter_blocks(c: sqlite3.Connection, tenant: str, base: int, before: int, last: int) -> bool:
        # the batch took the tenant's last sequence from `before` to `last`: the blocks it completed are entered
        # in the id table (and anchored for the audit chain's pages), in one write of a few pages for that many
        # records, instead of a page per record. Returns whether it entered any.
        entered, entering = before - before % STATEMENT_BLOCK, last - last % STATEMENT_BLOCK
        if entering <= entered:
            return False
        try:
            c.execute(_ENTER_IDS, (base + entered, base + entering))
        except sqlite3.IntegrityError as exc:
            raise InvariantViolation(f"the SQLite ledger recorded an id twice: {exc}") from exc
        try:
            c.execute(_ANCHOR_BLOCKS, (base + entered, base + entering, base >> SEQ_BITS))
        except sqlite3.IntegrityError as exc:
            # two blocks starting at one sequence: the chain was forked or edited
            raise InvariantViolation(f"the audit records of {tenant!r} could not be anchored: {exc}") from exc
        return True

    # -- primitives -----------------------------------------------------------------------------------------

    async def open_account(
        self, tenant: str, owner: str, currency: str, allow_negative: bool, now: float
    ) -> tuple[Account, bool]:
        digest = bytes.fromhex(account_digest(tenant, owner, currency, allow_negative))

        def tx(c: sqlite3.Connection) -> tuple[Account, bool]:
            cur = c.execute(
                "INSERT OR IGNORE INTO ledger_accounts (tenant, owner, currency, allow_negative, dp, cp, dpend, cpend,"
                " created, digest) VALUES (?,?,?,?,0,0,0,0,?,?)",
                (tenant, owner, currency, int(allow_negative), now, digest),
            )
            row = c.execute(
                "SELECT allow_negative, created FROM ledger_accounts WHERE tenant=? AND owner=? AND currency=?",
                (tenant, owner, currency),
            ).fetchone()
            return Account(owner, currency, bool(row[0]), _at(row[1])), cur.rowcount > 0

        return await self._write_plain(tenant, tx)

    async def balance(self, tenant: str, owner: str, currency: str, now: float) -> Balance | None:
        def tx(c: sqlite3.Connection) -> Balance | None:
            tn = self._tenant_number(c, tenant, create=False)
            if tn is not None:  # the expiry may change the tenant's holds and accounts: _write drops the kept state
                self._expire(c, tenant, tn, now)
            row = c.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE tenant=? AND owner=? AND currency=?",
                (tenant, owner, currency),
            ).fetchone()
            return _row_balance(row) if row else None

        return await self._write_plain(tenant, tx)

    async def apply(self, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        return await self._write(tenant, lambda c, kept: self._apply(c, kept, tenant, requests, now))

    @property
    def engine(self) -> Any:
        """The engine this store writes through (stores on one engine can share a transaction)."""
        return self._db

    async def apply_then(
        self,
        tenant: str,
        requests: Sequence[TransferRequest],
        now: float,
        then: Callable[[sqlite3.Connection, Applied], T],
    ) -> tuple[Applied, T]:
        """:meth:`apply`, then ``then`` in the same transaction: both commit, or (if ``then`` raises) neither."""

        def tx(c: sqlite3.Connection, kept: _TenantState | None) -> tuple[tuple[Applied, T], Staged | None]:
            applied, staged = self._apply(c, kept, tenant, requests, now)
            return (applied, then(c, applied)), staged

        return await self._write(tenant, tx)

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
            # the first anchor with at least `limit` of the account's records from the cursor to it
            skip = (limit + STATEMENT_ANCHOR_EVERY - 2) // STATEMENT_ANCHOR_EVERY
            args = (owner, base, base + SEQ_SPAN, currency, base + after_seq, limit, skip, tenant)
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

        return await self._write_plain(tenant, tx)

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

        await self._write_plain(tenant, tx)

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

    async def set_rate(self, tenant: str, rate: Rate) -> None:
        row = (tenant, rate.from_currency, rate.to_currency, rate_key(rate), rate_record(rate))

        def tx(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO ledger_rates VALUES (?,?,?,?,?)", row)

        await self._write_plain(tenant, tx)

    async def rates(self, tenant: str, from_currency: str, to_currency: str) -> list[Rate]:
        def tx(c: sqlite3.Connection) -> list[Rate]:
            rows = c.execute(
                "SELECT record FROM ledger_rates WHERE tenant=? AND from_currency=? AND to_currency=?",
                (tenant, from_currency, to_currency),
            ).fetchall()
            return [load_rate(from_currency, to_currency, r[0]) for r in rows]

        return await self._read(tx)

    async def chain(self, tenant: str, after_seq: int, limit: int) -> list[tuple[Transfer, str]]:
        def tx(c: sqlite3.Connection) -> list[tuple[Transfer, str]]:
            tn = self._tenant_number(c, tenant, create=False)
            if tn is None:
                return []
            bounds = ((tn << SEQ_BITS) + after_seq, (tn + 1) << SEQ_BITS, limit)
            rows = c.execute(
                f"SELECT {_COLUMNS}, digest FROM ledger_records WHERE k>? AND k<? ORDER BY k LIMIT ?", bounds
            )
            return [(_row_transfer(r[:-1]), _hex(r[-1])) for r in rows]

        return await self._read(tx)

    async def account_digests(self, tenant: str) -> dict[tuple[str, str], str]:
        def tx(c: sqlite3.Connection) -> dict[tuple[str, str], str]:
            rows = c.execute("SELECT owner, currency, digest FROM ledger_accounts WHERE tenant=?", (tenant,))
            return {(owner, currency): _hex(digest) for owner, currency, digest in rows}

        return await self._read(tx)


def _hex(digest: Any) -> str:
    # a digest as stored; anything but bytes (an edit of the file) cannot match
    return digest.hex() if isinstance(digest, bytes) else repr(digest)
