"""The SQLite backend: ``sqlite:///path/to/file.db`` — the embedded default.

Durable and shared by several processes on one host through one file. The database runs in WAL mode with
``synchronous=NORMAL`` by default: a committed write survives a process crash; an operating-system crash or power
loss may drop the last few commits (pass ``synchronous="FULL"`` to fsync every commit, about 8x slower).

Every primitive is one transaction (``BEGIN IMMEDIATE`` for writes). Transactions of small, bounded rows run on
the event loop's thread: they take microseconds. Those whose rows may be megabytes (history, chunks, dead letters,
an append or a claim over ``INLINE_BYTES_MAX`` of payload, idempotency replies) run in the engine's worker thread,
so one large request never holds the loop; the two take turns on the one connection. A claim runs on the loop up
to the first entry that would take it over the bound (whose payload it does not read), and only a claim whose
first entry is over it runs again in the thread. A lock held by another process is
never waited for on the loop — the busy timeout is a few milliseconds, after which the transaction is retried
with a back-off, up to ``lock_timeout_s`` (then SOS-6030). Readers blocked in :meth:`SQLiteBusStore.wait` are
woken at once by writes from this process and within ``poll_interval_s`` by writes from other processes
(``PRAGMA data_version``).

Bus positions count per address of a tenant, so a position reveals nothing of other tenants' or other addresses'
traffic. A new entry takes the position after both the address's newest entry and its row in
``bus_address_positions``, which records the newest position whenever that entry is removed: positions are never
reused, even once every entry is trimmed, and a publish does not write the counter.

A claim looks for due retries among at most ``CLAIM_SCAN_MAX`` of the group's pending entries, by position from where
this process's previous claim of the group stopped (no index on their due times, which every claim and ack would write):
a claim's cost does not grow with the pending set, and retries within a window go in position order. A claim that finds
no due retry in its window and no new entry goes on through the next windows, up to ``CLAIM_IDLE_SCAN_MAX`` pending
entries in all, at most once per ``CLAIM_IDLE_SCAN_INTERVAL_S`` per group in this process (other idle claims look
through their one window, on the event loop): a due retry anywhere among that many is taken by the first claim that has
nothing else to take once the interval has passed, however the windows fell, and a loop of empty claims costs one window
each, not ``CLAIM_IDLE_SCAN_MAX`` entries. A group's cursor is its row at position -1 of ``bus_pending`` (its
``attempts``; no position is negative), beside its pending entries: a claim writes one B-tree. A pending entry's nack
reason is kept in its own row, so whatever removes the entry (an ack above all) removes the reason in the same row
write.

The file records its layout in ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). A file of an earlier layout this
version knows is migrated when it is opened, in the opening transaction (every entry, position, pending entry
and dead letter kept); a file with a later or unknown layout, or with these tables and no layout recorded, is
refused with SOS-6031 and left as it is.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import unquote

import anyio

from ..bus import store as bus_store
from ..bus.store import (
    Appended,
    BusStore,
    ChunkPart,
    ChunkPut,
    ChunkQuota,
    Claimed,
    Entry,
    HistoryEntry,
    NackReason,
    Retention,
    StoredDeadLetter,
    locate_refused,
)
from ..errors import BackendFailure, InvalidArgument, InvalidURL
from . import Backend, Implements, check_url
from .sqlite_a2a_tasks import A2A_TASKS_SCHEMA, SQLiteA2ATaskStore
from .sqlite_checkpoints import CHECKPOINTS_SCHEMA, SQLiteCheckpointStore
from .sqlite_engine import SQLiteEngine
from .sqlite_governance import GOVERNANCE_SCHEMA, SQLiteAuditStore, SQLiteGovernanceStore
from .sqlite_identity import IDENTITY_SCHEMA, SQLiteIdentityStore, SQLiteRegistryStore
from .sqlite_ledger import LEDGER_SCHEMA, SQLiteLedgerStore, upgrade_ledger
from .sqlite_memory import MEMORY_SCHEMA, MEMORY_UPGRADE_TO_6, SQLiteMemoryStore
from .sqlite_providers import PROVIDERS_SCHEMA, SQLiteProviderStore
from .sqlite_replies import REPLIES_SCHEMA, SQLiteReplyStore
from .sqlite_skills import SKILLS_SCHEMA, SKILLS_UPGRADE_TO_6, SQLiteSkillStore
from .sqlite_tasks import TASKS_SCHEMA, SQLiteTaskStore

__all__ = ["SQLiteBackend", "SQLiteBusStore", "SQLiteEngine"]

LOCK_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.02
TRIM_EVERY_APPENDS = 1000
ADDRESS_MEMO_MAX = 10_000
INLINE_BYTES_MAX = 64 * 1024
"""An append or a claim of at most this many payload bytes runs on the event loop; a larger one in the worker
thread."""
POSITION_MAX = 2**63 - 1
"""The largest position SQLite can hold (a signed 64-bit integer)."""
CLAIM_SCAN_MAX = 256
"""A claim looks for due retries among at most this many of the group's pending entries (by position, from where
its last claim in this process left off): a claim's cost does not grow with the pending set."""
LEGACY_SOURCE = "*"
"""The source of a removed entry's id carried over from layout 5 (no message left to read it from): it holds the
id for every source until its window ends. No message's source is ``*``."""
CLAIM_IDLE_SCAN_MAX = 32 * CLAIM_SCAN_MAX
"""A claim whose first window holds no due retry and that finds no new entry looks through at most this many of the
group's pending entries (8192, in windows of ``CLAIM_SCAN_MAX``, wrapping to the front once): its cost stays
bounded, and a due retry is waited for one idle claim per this many pending entries (and at most one such claim per
``CLAIM_IDLE_SCAN_INTERVAL_S`` per group), not one per window."""
CLAIM_IDLE_SCAN_INTERVAL_S = 1.0
"""The longer scan of an idle claim (through ``CLAIM_IDLE_SCAN_MAX`` entries) runs at most once per this many seconds
per group in this process; the idle claims between look through one window each, so the loop's time a group's empty
claims take is bounded (~3 ms of scan per second at 9 000 pending entries) however often they come."""
SCHEMA_VERSION = 6
"""The file layout, kept in ``PRAGMA user_version``. 2: no ``(tenant, address, created)`` index on bus entries (age
trimming walks positions). 3: a message id's dedup window is kept on its entry (``expires``, under a partial
unique index); ``bus_dedup`` holds only the ids of entries removed while their window is open;
``bus_address_positions`` holds an address's last position only once its newest entry is removed. 4: a ledger
batch's audit record is kept in its last ledger row (the nullable ``audit_*`` columns). 5: an account's statement
is a chain of links through its ledger rows (``dprev``/``cprev``, the account row's ``last_seq``/``n_records``),
with an anchor in ``ledger_statements`` every ``STATEMENT_ANCHOR_EVERY`` records; a ledger batch's audit record
stays in its row for good (anchored per block in ``audit_ledger_blocks``); no ``due`` index on pending bus entries
(claims scan a bounded window of them by position); a group's cursor is its row at position -1 of ``bus_pending``
(``attempts`` holds it), so a claim writes one B-tree. 6: an invocation id's binding and its counted mark are one
row of ``skill_invocations`` (``binding``, ``counted``), so a paid invocation writes one B-tree for them; a message id's
dedup window is per source (the ``source`` column of ``bus_entries`` and ``bus_dedup``, in the unique index and the
key); a pending entry's nack reason and the attempt it was given at are columns of its ``bus_pending`` row
(``nack_attempt``, ``nack_reason``; no ``bus_nack_reasons`` table and no trigger on every ack); each memory owner
group's count and bytes are kept in ``memory_groups`` (summed from ``memory_items`` on upgrade). Files of layouts 1
to 5 are migrated on open; any other (or tables with none recorded) is refused."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_address_positions (
    tenant TEXT NOT NULL, address TEXT NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (tenant, address)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_entries (
    tenant TEXT NOT NULL, pos INTEGER NOT NULL, address TEXT NOT NULL, message_id TEXT NOT NULL,
    data BLOB NOT NULL, receipts INTEGER NOT NULL, only_group TEXT, created REAL NOT NULL, expires REAL,
    source TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS bus_entries_addr ON bus_entries (tenant, address, pos);
CREATE UNIQUE INDEX IF NOT EXISTS bus_entries_dedup ON bus_entries (tenant, message_id, source)
    WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS bus_dedup (
    tenant TEXT NOT NULL, message_id TEXT NOT NULL, address TEXT NOT NULL, pos INTEGER NOT NULL,
    expires REAL NOT NULL, source TEXT NOT NULL, PRIMARY KEY (tenant, message_id, source)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bus_dedup_expires ON bus_dedup (expires);
CREATE TABLE IF NOT EXISTS bus_pending (
    tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL, pos INTEGER NOT NULL,
    consumer TEXT NOT NULL, due REAL NOT NULL, attempts INTEGER NOT NULL, nack_attempt INTEGER, nack_reason TEXT,
    PRIMARY KEY (tenant, address, grp, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL,
    pos INTEGER NOT NULL, data BLOB NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL, dead_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS bus_dead_pos ON bus_dead (tenant, address, grp, pos);
DROP TABLE IF EXISTS bus_chunks;
CREATE TABLE IF NOT EXISTS bus_chunk_groups (
    tenant TEXT NOT NULL, source TEXT NOT NULL, group_id TEXT NOT NULL, meta TEXT NOT NULL, total INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL, received INTEGER NOT NULL, held INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (tenant, source, group_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bus_chunk_groups_expires ON bus_chunk_groups (expires);
CREATE TABLE IF NOT EXISTS bus_chunk_parts (
    tenant TEXT NOT NULL, source TEXT NOT NULL, group_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (tenant, source, group_id, seq));
"""
_TRIGGERS = (
    # an entry removed (trimmed, its address dropped) while its message id's dedup window is open leaves the id
    # behind, so a publish of that id stays a duplicate for the whole window
    "CREATE TRIGGER IF NOT EXISTS bus_entries_forget AFTER DELETE ON bus_entries"
    " WHEN OLD.expires > (julianday('now') - 2440587.5) * 86400.0 BEGIN"
    " INSERT OR REPLACE INTO bus_dedup VALUES (OLD.tenant, OLD.message_id, OLD.address, OLD.pos, OLD.expires,"
    " OLD.source); END",
    # removing an address's newest entry records its position, which a later entry of the address must pass
    "CREATE TRIGGER IF NOT EXISTS bus_entries_floor AFTER DELETE ON bus_entries WHEN NOT EXISTS (SELECT 1"
    " FROM bus_entries WHERE tenant=OLD.tenant AND address=OLD.address AND pos>OLD.pos) BEGIN"
    " INSERT INTO bus_address_positions VALUES (OLD.tenant, OLD.address, OLD.pos)"
    " ON CONFLICT (tenant, address) DO UPDATE SET last=max(last, excluded.last); END",
)
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # layout 1 -> 2: age trimming walks positions from the oldest entry; its index is dropped
    1: ("DROP INDEX IF EXISTS bus_entries_created",),
    # layout 2 -> 3: each live dedup id moves onto its entry; ids whose entry is gone stay in bus_dedup
    2: (
        "ALTER TABLE bus_entries ADD COLUMN expires REAL",
        "UPDATE bus_entries SET expires=(SELECT d.expires FROM bus_dedup d WHERE d.tenant=bus_entries.tenant"
        " AND d.message_id=bus_entries.message_id AND d.address=bus_entries.address AND d.pos=bus_entries.pos)"
        " WHERE only_group IS NULL",
        "CREATE UNIQUE INDEX bus_entries_dedup ON bus_entries (tenant, message_id) WHERE expires IS NOT NULL",
        "DELETE FROM bus_dedup WHERE EXISTS (SELECT 1 FROM bus_entries e WHERE e.tenant=bus_dedup.tenant"
        " AND e.message_id=bus_dedup.message_id AND e.expires IS NOT NULL)",
    ),
    # layout 3 -> 4: the ledger rows' audit columns, added after the schema by upgrade_ledger (guarded ALTERs)
    3: (),
    # layout 4 -> 5: claims find due retries in a bounded window by position (every claim and ack wrote this
    # index); the statements' links and the ledger rows keeping their audit records for good follow in upgrade_ledger
    4: (
        "DROP INDEX IF EXISTS bus_pending_due",
        # a group's cursor moves into its row at position -1 of bus_pending, beside its pending entries (a file
        # whose bus tables were made without bus_groups has no cursor to move)
        "CREATE TABLE IF NOT EXISTS bus_groups (tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL,"
        " cursor INTEGER NOT NULL, PRIMARY KEY (tenant, address, grp)) WITHOUT ROWID",
        "INSERT OR REPLACE INTO bus_pending SELECT tenant, address, grp, -1, '', 0, cursor FROM bus_groups",
        "DROP TABLE bus_groups",
    ),
    # layout 5 -> 6
    5: (
        # -- skills: an invocation id's binding and counted mark become one row (sqlite_skills.SKILLS_UPGRADE_TO_6)
        *SKILLS_UPGRADE_TO_6,
        # -- end of skills
        # -- memory: each owner group's count and bytes (sqlite_memory.MEMORY_UPGRADE_TO_6)
        *MEMORY_UPGRADE_TO_6,
        # -- end of memory
    ),
}
# layout 5 -> 6, dedup per source: a message id is held per (tenant, message_id, source). A kept entry's source is
# read from its message; a removed entry's id (in bus_dedup) has none to read, so it holds the id for every source
# (LEGACY_SOURCE) until its window ends. Run on a file of an earlier layout whose bus entries lack the column.
_BUS_DEDUP_PER_SOURCE = (
    "DROP TRIGGER IF EXISTS bus_entries_forget",
    "DROP INDEX IF EXISTS bus_entries_dedup",
    "ALTER TABLE bus_entries ADD COLUMN source TEXT NOT NULL DEFAULT ''",
    "UPDATE bus_entries SET source=coalesce(json_extract(CAST(data AS TEXT), '$.source'), '')"
    " WHERE expires IS NOT NULL AND json_valid(CAST(data AS TEXT))",
    "ALTER TABLE bus_dedup RENAME TO bus_dedup_layout5",
    "CREATE TABLE bus_dedup (tenant TEXT NOT NULL, message_id TEXT NOT NULL, address TEXT NOT NULL,"
    " pos INTEGER NOT NULL, expires REAL NOT NULL, source TEXT NOT NULL,"
    " PRIMARY KEY (tenant, message_id, source)) WITHOUT ROWID",
    "INSERT INTO bus_dedup SELECT tenant, message_id, address, pos, expires, '*' FROM bus_dedup_layout5",
    "DROP TABLE bus_dedup_layout5",
)
# layout 5 -> 6, bus_pending: a pending entry's nack reason moves into its own row (the attempt it was given at with
# it); the separate table and the trigger that every ack ran to clear it go. Run on a file of an earlier layout whose
# pending rows lack the columns.
_BUS_PENDING_NACK_REASON = (
    "ALTER TABLE bus_pending ADD COLUMN nack_attempt INTEGER",
    "ALTER TABLE bus_pending ADD COLUMN nack_reason TEXT",
    "CREATE TABLE IF NOT EXISTS bus_nack_reasons (tenant TEXT NOT NULL, address TEXT NOT NULL,"
    " grp TEXT NOT NULL, pos INTEGER NOT NULL, attempt INTEGER NOT NULL, reason TEXT NOT NULL,"
    " PRIMARY KEY (tenant, address, grp, pos)) WITHOUT ROWID",
    "UPDATE bus_pending SET (nack_attempt, nack_reason) = (SELECT r.attempt, r.reason FROM bus_nack_reasons r"
    " WHERE r.tenant=bus_pending.tenant AND r.address=bus_pending.address AND r.grp=bus_pending.grp"
    " AND r.pos=bus_pending.pos) WHERE pos>=0",
    "DROP TRIGGER IF EXISTS bus_pending_forget",
    "DROP TABLE bus_nack_reasons",
)
_BUS_UPGRADES_TO_6 = (
    ("bus_entries", "source", _BUS_DEDUP_PER_SOURCE),
    ("bus_pending", "nack_attempt", _BUS_PENDING_NACK_REASON),
)
_ALL_SCHEMA = (
    _SCHEMA
    + LEDGER_SCHEMA
    + IDENTITY_SCHEMA
    + SKILLS_SCHEMA
    + REPLIES_SCHEMA
    + PROVIDERS_SCHEMA
    + TASKS_SCHEMA
    + MEMORY_SCHEMA
    + GOVERNANCE_SCHEMA
    + CHECKPOINTS_SCHEMA
    + A2A_TASKS_SCHEMA
)


class _Claim:
    """What one claim took so far, and how many payload bytes it may still take."""

    __slots__ = ("left", "out", "stopped")

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.out: list[Claimed] = []
        self.stopped = False

    def fits(self, size: int, data: object) -> bool:
        """Take a row of ``size`` bytes if the budget allows (its data was read); else stop the claim here."""
        if data is None or size > self.left:
            self.stopped = True
            return False
        self.left -= size
        return True


class SQLiteBusStore(BusStore):
    """Bus primitives as SQLite transactions."""

    def __init__(self, engine: SQLiteEngine, *, poll_interval_s: float) -> None:
        self._db = engine
        # rows that may hold payloads (claims, history, chunks, dead letters) are read and written off the loop
        self._big = engine.offloading()
        self._poll_interval_s = poll_interval_s
        self._events: dict[tuple[str, str], anyio.Event] = {}
        self._seen_version = engine.data_version()
        self._appends_since_trim: dict[tuple[str, str], int] = {}
        # per address, a time no later than its oldest entry's: age trimming is skipped while that is within age
        # (entries only join at the end, and leave from the front, so the oldest only grows younger)
        self._oldest: dict[tuple[str, str], float] = {}
        # notifications per address, and how many there had been when its last claim began: a claim runs in the
        # worker thread, so a notification can land between it and the wait that follows, and must not be lost
        self._notified: dict[tuple[str, str], int] = {}
        self._claimed: dict[tuple[str, str], int] = {}
        # per group, the position after which its next claim looks for due retries (a scan hint, never a rule)
        self._due_from: dict[tuple[str, str, str], int] = {}
        # per group, when this process's last idle claim looked further than its window (time.monotonic())
        self._idle_scanned: dict[tuple[str, str, str], float] = {}
        # whether the file holds removed ids carried over from layout 5 (read at the first append): only then does
        # a publish probe for them; they are made only by the migration, when a file is opened
        self._legacy_ids: bool | None = None

    def _notify(self, tenant: str, address: str) -> None:
        if len(self._notified) >= ADDRESS_MEMO_MAX:  # bounded; a reset only wakes a waiter early
            self._notified.clear()
            self._claimed.clear()
        self._notified[(tenant, address)] = self._notified.get((tenant, address), 0) + 1
        event = self._events.pop((tenant, address), None)
        if event is not None:
            event.set()

    async def append(self, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention) -> list[Appended]:
        size = sum(len(entry.data) for _, entry in items)
        result = await (self._db if size <= INLINE_BYTES_MAX else self._big).write(
            lambda c: self.append_in(c, tenant, items, retention)
        )
        self.appended(tenant, {a for a, _ in items})
        return result

    @property
    def engine(self) -> SQLiteEngine:
        """The engine this store writes through (stores on one engine share a transaction: see :meth:`append_in`)."""
        return self._db

    def append_in(
        self, c: sqlite3.Connection, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention
    ) -> list[Appended]:
        """``append`` inside a write transaction the caller opened (``BEGIN IMMEDIATE``) and commits; once it has
        committed, the caller calls :meth:`appended` with the addresses so waiting consumers wake."""
        now = time.time()  # read under the write lock: entries' times never decrease along positions
        if len(items) == 1 and items[0][1].only_group is None:
            fresh = self._append_fresh(c, tenant, items[0], retention, now)
            if fresh is not None:
                return [fresh]
        known, stale = self._known_ids(
            c, tenant, [(e.source, e.message_id) for _, e in items if e.only_group is None], now
        )
        # Under BEGIN IMMEDIATE nobody else can insert: each address's new entries follow its last position, and
        # the rows go in with one executemany (the floor trigger keeps positions unique forever).
        added = _new_per_address(items, known)
        next_pos = {a: _last_position(c, tenant, a) + 1 for a in added}
        out: list[Appended] = []
        rows: list[tuple[Any, ...]] = []
        expires = now + retention.dedup_window_s
        for address, entry in items:
            key = (entry.source, entry.message_id)
            if entry.only_group is None and key in known:
                out.append(Appended(str(known[key]), True))
                continue
            pos = next_pos[address]
            next_pos[address] = pos + 1
            dedup = None if entry.only_group is not None else expires
            mid, receipts = entry.message_id, int(entry.receipts)
            rows.append((tenant, pos, address, mid, entry.data, receipts, entry.only_group, now, dedup, entry.source))
            if dedup is not None:
                known[key] = pos
            out.append(Appended(str(pos), False))
        if stale:  # an id past its window, republished: its old entry stops holding it
            c.executemany(
                "UPDATE bus_entries SET expires=NULL WHERE tenant=? AND message_id=? AND source=?"
                " AND expires IS NOT NULL",
                [(tenant, mid, source) for source, mid in stale if (source, mid) in known],
            )
        c.executemany(_INSERT_ENTRY, rows)
        self._trim_some(c, tenant, added, retention, now)
        return out

    def _append_fresh(
        self, c: sqlite3.Connection, tenant: str, item: tuple[str, Entry], retention: Retention, now: float
    ) -> Appended | None:
        """One entry whose message id holds no open window, in one statement (the position, the dedup checks and
        the row); None, with nothing written, when the id is held (a duplicate, or a kept entry past its window)."""
        address, entry = item
        if self._legacy_ids is None:
            found = c.execute("SELECT 1 FROM bus_dedup WHERE source=? LIMIT 1", (LEGACY_SOURCE,)).fetchone()
            self._legacy_ids = found is not None
        row = c.execute(
            _INSERT_FRESH_LEGACY if self._legacy_ids else _INSERT_FRESH,
            (
                tenant,
                address,
                entry.message_id,
                entry.data,
                int(entry.receipts),
                now,
                now + retention.dedup_window_s,
                entry.source,
            ),
        ).fetchall()
        if not row:
            return None
        self._trim_some(c, tenant, {address: 1}, retention, now)
        return Appended(str(row[0][0]), False)

    def appended(self, tenant: str, addresses: set[str]) -> None:
        """Wake this process's consumers of ``addresses`` after a committed :meth:`append_in`."""
        for address in addresses:
            self._notify(tenant, address)

    @staticmethod
    def _known_ids(
        c: sqlite3.Connection, tenant: str, keys: list[tuple[str, str]], now: float
    ) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
        """The ``(source, message_id)`` keys among ``keys`` within their dedup window, with their positions; and
        the keys an entry still holds past its window (one statement per 500 ids: the entries' partial index, then
        removed entries' ids; a removed id of ``LEGACY_SOURCE`` holds it for every source)."""
        wanted = set(keys)
        message_ids = sorted({mid for _, mid in wanted})
        known: dict[tuple[str, str], int] = {}
        stale: set[tuple[str, str]] = set()
        for i in range(0, len(message_ids), 500):  # SQLite's bound-parameter limit is 999 on old builds
            part = message_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            for source, mid, pos, expires, kept in c.execute(
                f"SELECT source, message_id, pos, expires, 1 FROM bus_entries WHERE tenant=? AND expires IS NOT NULL"
                f" AND message_id IN ({marks}) UNION ALL SELECT source, message_id, pos, expires, 0 FROM bus_dedup"
                f" WHERE tenant=? AND expires>? AND message_id IN ({marks})",
                (tenant, *part, tenant, now, *part),
            ):
                held = [k for k in wanted if k[1] == mid] if source == LEGACY_SOURCE else [(source, mid)]
                for key in held:
                    if key not in wanted:
                        continue  # another source's entry of this id: not this batch's duplicate
                    if expires > now:
                        known.setdefault(key, int(pos))
                    elif kept:
                        stale.add(key)
        return known, stale

    def _trim_some(
        self, c: sqlite3.Connection, tenant: str, added: dict[str, int], retention: Retention, now: float
    ) -> None:
        # Age trimming removes the oldest entries from the front (positions go with time), and only runs while
        # the address's oldest entry may be older than the cut. Count trimming is amortised: once every
        # TRIM_EVERY_APPENDS messages per address (counted by message, so batches trim as often as single
        # publishes), so an address holds at most count_max + TRIM_EVERY_APPENDS.
        cut = now - retention.age_s
        for address, count in added.items():
            key = (tenant, address)
            oldest = self._oldest.get(key)
            if oldest is None or oldest < cut:
                if len(self._oldest) >= ADDRESS_MEMO_MAX:  # bounded; a reset only reads the oldest again
                    self._oldest.clear()
                # kept only from a read that removed nothing: a rollback cannot bring back an older entry
                found = _trim_age(c, tenant, address, cut)
                if found is None:
                    self._oldest.pop(key, None)
                else:
                    self._oldest[key] = found
            if len(self._appends_since_trim) >= ADDRESS_MEMO_MAX:  # bounded; a reset only trims sooner
                self._appends_since_trim.clear()
            # an address not counted yet is trimmed at once
            since = self._appends_since_trim.get(key, TRIM_EVERY_APPENDS) + count
            if since < TRIM_EVERY_APPENDS:
                self._appends_since_trim[key] = since
                continue
            self._appends_since_trim[key] = 0
            row = c.execute(
                "SELECT pos FROM bus_entries WHERE tenant=? AND address=? ORDER BY pos DESC LIMIT 1 OFFSET ?",
                (tenant, address, retention.count_max),
            ).fetchone()
            if row is not None:
                c.execute("DELETE FROM bus_entries WHERE tenant=? AND address=? AND pos<=?", (tenant, address, row[0]))
            c.execute("DELETE FROM bus_dedup WHERE expires<=?", (now,))

    async def ensure_group(self, tenant: str, address: str, group: str, start: Literal["earliest", "latest"]) -> None:
        def tx(c: sqlite3.Connection) -> None:
            cursor = 0
            if start == "latest":
                row = c.execute(
                    "SELECT MAX(pos) FROM bus_entries WHERE tenant=? AND address=?", (tenant, address)
                ).fetchone()
                cursor = int(row[0] or 0)
            # the group's cursor is its row at position -1 of bus_pending (no position is negative)
            c.execute(
                "INSERT OR IGNORE INTO bus_pending VALUES (?,?,?,-1,'',0,?,NULL,NULL)", (tenant, address, group, cursor)
            )

        await self._db.write(tx)

    async def delete_group(self, tenant: str, address: str, group: str) -> None:
        def tx(c: sqlite3.Connection) -> None:
            for table in ("bus_pending", "bus_dead"):  # bus_pending holds the cursor and the nack reasons
                c.execute(f"DELETE FROM {table} WHERE tenant=? AND address=? AND grp=?", (tenant, address, group))

        await self._db.write(tx)

    async def drop_address(self, tenant: str, address: str) -> None:
        def tx(c: sqlite3.Connection) -> None:
            for table in ("bus_entries", "bus_pending", "bus_dead"):
                c.execute(f"DELETE FROM {table} WHERE tenant=? AND address=?", (tenant, address))

        await self._db.write(tx)
        for memo in (self._notified, self._claimed):
            memo.pop((tenant, address), None)

    async def claim(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int
    ) -> list[Claimed]:
        """Claims of at most ``INLINE_BYTES_MAX`` payload bytes run on the event loop; when the first row due
        is larger, the claim runs again in the worker thread with no byte bound."""
        now = time.time()
        due_at = now + visibility_ms / 1000
        key = (tenant, address, group)

        def tx(c: sqlite3.Connection, budget: int) -> _Claim:
            taken = _Claim(budget)
            first = self._due_from.get(key, 0)
            start = self._claim_due(c, key, consumer, now, due_at, count, taken, first)
            room = count - len(taken.out)
            if room > 0 and not taken.stopped:
                self._claim_new(c, key, consumer, due_at, room, taken)
            if not taken.out and not taken.stopped and self._idle_scan_due(key):  # look further for a due retry
                start = self._claim_due_further(c, key, consumer, now, due_at, count, taken, first, start)
            if len(self._due_from) >= ADDRESS_MEMO_MAX:  # bounded; a reset only starts a scan from the front
                self._due_from.clear()
            self._due_from[key] = start
            self._seen_version = self._db.data_version()
            return taken

        notified = self._notified.get((tenant, address), 0)
        taken = await self._db.write(lambda c: tx(c, INLINE_BYTES_MAX))
        if taken.stopped and not taken.out:  # the next row alone is over the bound: off the loop
            taken = await self._big.write(lambda c: tx(c, POSITION_MAX))
        self._claimed[(tenant, address)] = notified
        return taken.out

    def _idle_scan_due(self, key: tuple[str, str, str]) -> bool:
        """Whether an idle claim of this group may look past its window now (then noted as done)."""
        at = time.monotonic()
        if at - self._idle_scanned.get(key, -math.inf) < CLAIM_IDLE_SCAN_INTERVAL_S:
            return False
        if len(self._idle_scanned) >= ADDRESS_MEMO_MAX:  # bounded; a reset only lets one more scan run
            self._idle_scanned.clear()
        self._idle_scanned[key] = at
        return True

    @staticmethod
    def _claim_due(
        c: sqlite3.Connection,
        key: tuple[str, str, str],
        consumer: str,
        now: float,
        due_at: float,
        count: int,
        taken: _Claim,
        start: int,
    ) -> int:
        """Take due retries, in position order, from the window of at most ``CLAIM_SCAN_MAX`` pending entries past
        ``start``; where the next claim's window starts (0, the front, once this one reached the end)."""
        scanned, last, due = 0, 0, []
        for pos, attempts, kind in c.execute(_DUE_WINDOW, (*key, start, CLAIM_SCAN_MAX, now)):
            if kind is None:
                scanned, last = pos, attempts  # the window's size and its last position
            else:
                due.append((pos, attempts))
        after = 0 if scanned < CLAIM_SCAN_MAX else last
        due.sort()
        for pos, attempts in due[:count]:
            # a payload over the byte bound is not read (length() of a blob skips its overflow pages)
            row = c.execute(_DUE_ENTRY, (*key[:2], pos, taken.left)).fetchone()
            if row is None:  # trimmed by retention while pending (its nack reason goes with its row)
                c.execute("DELETE FROM bus_pending WHERE tenant=? AND address=? AND grp=? AND pos=?", (*key, pos))
                continue
            size, data, receipts = row
            if not taken.fits(size, data):
                return start  # the rest of this window is looked at again next time
            c.execute(
                "UPDATE bus_pending SET consumer=?, due=?, attempts=? WHERE tenant=? AND address=? AND grp=? AND pos=?",
                (consumer, due_at, attempts + 1, *key, pos),
            )
            taken.out.append(Claimed(str(pos), _blob(data), attempts + 1, bool(receipts)))
        return start if len(due) > count else after

    @classmethod
    def _claim_due_further(
        cls,
        c: sqlite3.Connection,
        key: tuple[str, str, str],
        consumer: str,
        now: float,
        due_at: float,
        count: int,
        taken: _Claim,
        first: int,
        start: int,
    ) -> int:
        """Go on from ``start`` (past the window that began at ``first``) through the next windows, wrapping to the
        front once, until one holds a due retry or ``CLAIM_IDLE_SCAN_MAX`` entries were looked at; where the next
        claim's window starts."""
        wrapped = False
        for _ in range(CLAIM_IDLE_SCAN_MAX // CLAIM_SCAN_MAX - 1):
            if start == 0:  # the last window reached the end
                if wrapped or first == 0:
                    break
                wrapped = True
            elif wrapped and start >= first:  # back where this claim began
                break
            start = cls._claim_due(c, key, consumer, now, due_at, count, taken, start)
            if taken.out or taken.stopped:
                break
        return start

    @staticmethod
    def _claim_new(
        c: sqlite3.Connection, key: tuple[str, str, str], consumer: str, due_at: float, room: int, taken: _Claim
    ) -> None:
        # the group's cursor (its row at position -1) is read in the same statement as the entries past it
        rows = c.execute(
            "SELECT pos, length(data), CASE WHEN length(data)<=?5 THEN data END, receipts FROM bus_entries"
            " WHERE tenant=?1 AND address=?2 AND pos>COALESCE("
            "(SELECT attempts FROM bus_pending WHERE tenant=?1 AND address=?2 AND grp=?3 AND pos=-1), 0)"
            " AND (only_group IS NULL OR only_group=?3) ORDER BY pos LIMIT ?4",
            (*key, room, taken.left),
        ).fetchall()
        new: list[int] = []
        for pos, size, data, receipts in rows:
            if not taken.fits(size, data):
                break
            new.append(pos)
            taken.out.append(Claimed(str(pos), _blob(data), 1, bool(receipts)))
        if not new:
            return
        # the entries and the cursor's row are neighbours in one B-tree: one statement, mostly one page
        c.executemany(
            "INSERT OR REPLACE INTO bus_pending VALUES (?,?,?,?,?,?,?,NULL,NULL)",
            [*((*key, p, consumer, due_at, 1) for p in new), (*key, -1, "", 0.0, new[-1])],
        )

    async def append_ack(
        self,
        tenant: str,
        items: Sequence[tuple[str, Entry]],
        retention: Retention,
        address: str,
        group: str,
        position: str,
        attempt: int,
    ) -> tuple[list[Appended], bool]:
        """One ``BEGIN IMMEDIATE`` transaction: the ack (the entry still pending with delivery count ``attempt``),
        then the append; both commit, or neither (not held: nothing is appended)."""
        pos = _position(position)
        size = sum(len(entry.data) for _, entry in items)

        def tx(c: sqlite3.Connection) -> tuple[list[Appended], bool]:
            # the entry's nack reason goes with its row, as in ack
            cur = c.execute(
                "DELETE FROM bus_pending WHERE tenant=? AND address=? AND grp=? AND pos=? AND attempts=?",
                (tenant, address, group, pos, attempt),
            )
            if cur.rowcount == 0:
                return [], False
            return self.append_in(c, tenant, items, retention), True

        appended, acked = await (self._db if size <= INLINE_BYTES_MAX else self._big).write(tx)
        if acked:
            self.appended(tenant, {a for a, _ in items})
        return appended, acked

    async def ack(self, tenant: str, address: str, group: str, position: str, attempt: int) -> bool:
        pos = _position(position)

        def tx(c: sqlite3.Connection) -> bool:
            # one statement, the hold's check in it: the entry's nack reason goes with its row
            cur = c.execute(
                "DELETE FROM bus_pending WHERE tenant=? AND address=? AND grp=? AND pos=? AND attempts=?",
                (tenant, address, group, pos, attempt),
            )
            return cur.rowcount > 0

        return await self._db.write(tx)

    async def nack(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        attempt: int,
        delay_ms: int,
        visibility_ms: int,
        reason: str | None = None,
    ) -> bool:
        pos, due = _position(position), time.time() + delay_ms / 1000
        key = (tenant, address, group)

        def tx(c: sqlite3.Connection) -> bool:
            # the reason (None forgets an earlier one) is written in the same row, tagged with the hand-out's attempt
            cur = c.execute(
                "UPDATE bus_pending SET due=?, nack_attempt=?, nack_reason=?"
                " WHERE tenant=? AND address=? AND grp=? AND pos=? AND attempts=?",
                (due, None if reason is None else attempt, reason, *key, pos, attempt),
            )
            return cur.rowcount > 0

        done = await self._db.write(tx)
        self._notify(tenant, address)
        return done

    async def nack_reason(self, tenant: str, address: str, group: str, position: str) -> NackReason | None:
        pos = _position(position)

        def tx(c: sqlite3.Connection) -> NackReason | None:
            row = c.execute(
                "SELECT nack_attempt, nack_reason FROM bus_pending WHERE tenant=? AND address=? AND grp=? AND pos=?"
                " AND pos>=0 AND nack_reason IS NOT NULL",
                (tenant, address, group, pos),
            ).fetchone()
            return None if row is None else NackReason(int(row[0]), str(row[1]))

        return await self._db.read(tx)

    async def bury(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        reason: str,
        attempts: int,
        data: bytes | None = None,
    ) -> bool:
        pos = _position(position)

        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "DELETE FROM bus_pending WHERE tenant=? AND address=? AND grp=? AND pos=?",
                (tenant, address, group, pos),
            )
            row = c.execute(
                "SELECT data FROM bus_entries WHERE tenant=? AND address=? AND pos=?", (tenant, address, pos)
            ).fetchone()
            if cur.rowcount == 0 or row is None:
                return False
            c.execute(
                "INSERT INTO bus_dead (tenant, address, grp, pos, data, reason, attempts, dead_at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (tenant, address, group, pos, row[0] if data is None else data, reason, attempts, time.time()),
            )
            return True

        return await self._big.write(tx)

    async def dead_letters(self, tenant: str, address: str, group: str, limit: int) -> list[StoredDeadLetter]:
        def tx(c: sqlite3.Connection) -> list[StoredDeadLetter]:
            rows = c.execute(
                "SELECT pos, data, reason, attempts, dead_at FROM bus_dead WHERE tenant=? AND address=?"
                " AND grp=? ORDER BY id LIMIT ?",
                (tenant, address, group, limit),
            ).fetchall()
            # the dead letter's id is its position: an id counted across tenants would reveal their volume
            return [StoredDeadLetter(str(p), address, group, str(p), _blob(d), r, a, t) for p, d, r, a, t in rows]

        return await self._big.read(tx)

    async def revive(self, tenant: str, address: str, group: str, dead_id: str) -> Appended | None:
        def tx(c: sqlite3.Connection) -> Appended | None:
            row = c.execute(
                "SELECT id, data FROM bus_dead WHERE tenant=? AND address=? AND grp=? AND pos=?",
                (tenant, address, group, _position(dead_id)),
            ).fetchone()
            if row is None:
                return None
            c.execute("DELETE FROM bus_dead WHERE id=?", (row[0],))
            pos = _last_position(c, tenant, address) + 1
            c.execute(_INSERT_ENTRY, (tenant, pos, address, "", row[1], 0, group, time.time(), None, ""))
            return Appended(str(pos), False)

        result = await self._big.write(tx)
        self._notify(tenant, address)
        return result

    async def lookup(self, tenant: str, source: str, message_id: str) -> Appended | None:
        def tx(c: sqlite3.Connection) -> Appended | None:
            now = time.time()
            row = c.execute(
                "SELECT pos FROM bus_entries WHERE tenant=?1 AND message_id=?2 AND source=?3 AND expires>?4"
                " UNION ALL SELECT pos FROM bus_dedup WHERE tenant=?1 AND message_id=?2 AND source IN (?3, ?5)"
                " AND expires>?4 LIMIT 1",
                (tenant, message_id, source, now, LEGACY_SOURCE),
            ).fetchone()
            return Appended(str(row[0]), True) if row else None

        return await self._db.read(tx)

    async def locate(self, tenant: str, address: str, message_id: str) -> str | None:
        """The earliest of the id's entries in their window (trimmed or not, by the dedup indexes) and its retained
        entries: one ``ORDER BY pos LIMIT 1`` over the (tenant, address, pos) index from the oldest entry, which
        reads at most ``LOCATE_SCAN_MAX`` rows (the worst case: the id is absent, or only near the newest end)."""

        def tx(c: sqlite3.Connection) -> tuple[str | None, bool]:
            window = c.execute(
                "SELECT min(pos) FROM (SELECT pos FROM bus_entries WHERE tenant=?1 AND message_id=?2 AND address=?3"
                " AND expires>?4 UNION ALL SELECT pos FROM bus_dedup WHERE tenant=?1 AND message_id=?2"
                " AND address=?3 AND expires>?4)",
                (tenant, message_id, address, time.time()),
            ).fetchone()[0]
            edge = c.execute(  # the first entry past the bound, read on the index alone
                "SELECT pos FROM bus_entries WHERE tenant=? AND address=? ORDER BY pos LIMIT 1 OFFSET ?",
                (tenant, address, bus_store.LOCATE_SCAN_MAX),
            ).fetchone()
            beyond = None if edge is None else int(edge[0])
            end = min(p for p in (beyond, None if window is None else window + 1, 1 << 62) if p is not None)
            row = c.execute(
                "SELECT pos FROM bus_entries INDEXED BY bus_entries_addr WHERE tenant=? AND address=? AND pos<?"
                " AND message_id=? AND only_group IS NULL ORDER BY pos LIMIT 1",
                (tenant, address, end, message_id),
            ).fetchone()
            if row is not None:
                return str(row[0]), False
            if window is not None and (beyond is None or window < beyond):
                return str(window), False
            return None, beyond is not None  # past the bound: the id may be on an unread entry

        found, refused = await self._db.read(tx)
        if refused:
            raise locate_refused(address, message_id)
        return found

    async def history(self, tenant: str, address: str, after: str | None, limit: int) -> list[HistoryEntry]:
        start = _position(after) if after else 0

        def tx(c: sqlite3.Connection) -> list[HistoryEntry]:
            rows = c.execute(
                "SELECT pos, data FROM bus_entries WHERE tenant=? AND address=? AND pos>? AND only_group IS NULL"
                " ORDER BY pos LIMIT ?",
                (tenant, address, start, limit),
            ).fetchall()
            self._seen_version = self._db.data_version()
            return [HistoryEntry(str(p), _blob(d)) for p, d in rows]

        return await self._big.read(tx)

    async def pending_count(self, tenant: str, address: str, group: str) -> int:
        def tx(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT COUNT(*) FROM bus_pending WHERE tenant=? AND address=? AND grp=? AND pos>=0",
                (tenant, address, group),
            ).fetchone()
            return int(row[0])

        return await self._db.read(tx)

    async def wait(self, tenant: str, address: str, timeout_s: float) -> None:
        key = (tenant, address)
        if self._notified.get(key, 0) != self._claimed.get(key, 0):
            self._claimed[key] = self._notified.get(key, 0)
            return  # notified since the last claim began
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        deadline = anyio.current_time() + timeout_s
        while True:
            if self._db.data_version() != self._seen_version:
                return  # another process committed since our last read
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            with anyio.move_on_after(min(self._poll_interval_s, remaining)):
                await event.wait()
                return

    async def put_chunk(self, tenant: str, part: ChunkPart, quota: ChunkQuota) -> ChunkPut:
        now = time.time()
        key = (tenant, part.source, part.group_id)

        def tx(c: sqlite3.Connection) -> ChunkPut:
            _sweep_chunks(c, now, tenant)
            row = c.execute(
                "SELECT meta, received, held FROM bus_chunk_groups WHERE tenant=? AND source=? AND group_id=?", key
            ).fetchone()
            if row is None:
                refused = quota.refusal(*_chunk_use(c, tenant, part.source), part.size_bytes)
                if refused is not None:
                    return ChunkPut(refused=refused)
                row = (part.meta, 0, 0)
                c.execute(
                    "INSERT INTO bus_chunk_groups VALUES (?,?,?,?,?,?,0,0,?)",
                    (*key, part.meta, part.total, part.size_bytes, now + quota.ttl_s),
                )
            if row[0] != part.meta:
                return ChunkPut(refused="conflict")
            old = c.execute(
                "SELECT length(data) FROM bus_chunk_parts WHERE tenant=? AND source=? AND group_id=? AND seq=?",
                (*key, part.seq),
            ).fetchone()
            held = int(row[2]) - (int(old[0]) if old else 0) + len(part.data)
            if held > part.size_bytes:
                return ChunkPut(refused="size_bytes")
            received = int(row[1]) + (0 if old else 1)
            c.execute("INSERT OR REPLACE INTO bus_chunk_parts VALUES (?,?,?,?,?)", (*key, part.seq, part.data))
            c.execute(
                "UPDATE bus_chunk_groups SET received=?, held=? WHERE tenant=? AND source=? AND group_id=?",
                (received, held, *key),
            )
            return _take_group(c, key) if received == part.total else ChunkPut()

        return await self._big.write(tx)

    async def sweep_chunks(self) -> int:
        now = time.time()

        def due(c: sqlite3.Connection) -> bool:
            return c.execute("SELECT 1 FROM bus_chunk_groups WHERE expires<=? LIMIT 1", (now,)).fetchone() is not None

        if not await self._db.read(due):  # a read first: an idle sweep takes no write lock
            return 0
        return await self._db.write(lambda c: _sweep_chunks(c, now, None))

    async def chunk_usage(self, tenant: str) -> tuple[int, int]:
        def tx(c: sqlite3.Connection) -> tuple[int, int]:
            row = c.execute(
                "SELECT COUNT(DISTINCT source || ' ' || group_id), COALESCE(SUM(length(data)), 0)"
                " FROM bus_chunk_parts WHERE tenant=?",
                (tenant,),
            ).fetchone()
            return int(row[0]), int(row[1])

        return await self._db.read(tx)


def _sweep_chunks(c: sqlite3.Connection, now: float, tenant: str | None) -> int:
    """Delete expired chunk groups (of ``tenant``, or of all tenants) and their parts; how many groups."""
    where = "expires<=?" + ("" if tenant is None else " AND tenant=?")
    args = (now,) if tenant is None else (now, tenant)
    c.execute(
        "DELETE FROM bus_chunk_parts WHERE (tenant, source, group_id) IN"
        f" (SELECT tenant, source, group_id FROM bus_chunk_groups WHERE {where})",
        args,
    )
    return c.execute(f"DELETE FROM bus_chunk_groups WHERE {where}", args).rowcount


def _chunk_use(c: sqlite3.Connection, tenant: str, source: str) -> tuple[int, int, int, int]:
    """Live groups and declared bytes of ``source``, then of the whole tenant."""
    mine = c.execute(
        "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM bus_chunk_groups WHERE tenant=? AND source=?",
        (tenant, source),
    ).fetchone()
    every = c.execute(
        "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM bus_chunk_groups WHERE tenant=?", (tenant,)
    ).fetchone()
    return int(mine[0]), int(mine[1]), int(every[0]), int(every[1])


def _take_group(c: sqlite3.Connection, key: tuple[str, str, str]) -> ChunkPut:
    """Every part of a complete group, in order, each read once; the group is deleted."""
    where = "WHERE tenant=? AND source=? AND group_id=?"
    parts = [bytes(r[0]) for r in c.execute(f"SELECT data FROM bus_chunk_parts {where} ORDER BY seq", key)]
    c.execute(f"DELETE FROM bus_chunk_parts {where}", key)
    c.execute(f"DELETE FROM bus_chunk_groups {where}", key)
    return ChunkPut(parts=parts)


# a group's pending entries past a position, at most a bound of them: the window's size and last position (a row
# whose third column is NULL), then its due entries
_DUE_WINDOW = (
    "WITH w AS (SELECT pos, attempts, due FROM bus_pending WHERE tenant=?1 AND address=?2 AND grp=?3 AND pos>?4"
    " ORDER BY pos LIMIT ?5) SELECT count(*), max(pos), NULL FROM w UNION ALL SELECT pos, attempts, 1 FROM w"
    " WHERE due<=?6"
)
_DUE_ENTRY = (
    "SELECT length(data), CASE WHEN length(data)<=?4 THEN data END, receipts FROM bus_entries"
    " WHERE tenant=?1 AND address=?2 AND pos=?3"
)
# one entry at the next position of its address, unless its source's message id is held: by an entry (the partial
# unique index: the conflict target) or by a removed entry's row in bus_dedup while its window is open
_INSERT_FRESH = (
    "INSERT INTO bus_entries (tenant, pos, address, message_id, data, receipts, only_group, created, expires, source)"
    " SELECT ?1, max(coalesce((SELECT max(pos) FROM bus_entries WHERE tenant=?1 AND address=?2), 0),"
    " coalesce((SELECT last FROM bus_address_positions WHERE tenant=?1 AND address=?2), 0)) + 1,"
    " ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8"
    " WHERE NOT EXISTS (SELECT 1 FROM bus_dedup WHERE tenant=?1 AND message_id=?3 AND source=?8 AND expires>?6)"
    " ON CONFLICT (tenant, message_id, source) WHERE expires IS NOT NULL DO NOTHING RETURNING pos"
)
# the same in a file migrated from layout 5: a removed entry's id carried over holds for every source
_INSERT_FRESH_LEGACY = _INSERT_FRESH.replace("source=?8 AND expires", f"source IN (?8, '{LEGACY_SOURCE}') AND expires")
_INSERT_ENTRY = (
    "INSERT INTO bus_entries (tenant, pos, address, message_id, data, receipts, only_group, created, expires, source)"
    " VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _trim_age(c: sqlite3.Connection, tenant: str, address: str, cut: float) -> float | None:
    """Remove ``address``'s entries from its oldest on while they were made before ``cut``; the oldest entry's
    time when none was (None when some were, or the address has none)."""
    first = c.execute(
        "SELECT pos, created FROM bus_entries WHERE tenant=? AND address=? ORDER BY pos LIMIT 1", (tenant, address)
    ).fetchone()
    if first is None or first[1] >= cut:
        return None if first is None else float(first[1])
    # the walk reads only the entries it removes and the first one it keeps
    young = c.execute(
        "SELECT pos, created FROM bus_entries WHERE tenant=? AND address=? AND pos>? AND created>=?"
        " ORDER BY pos LIMIT 1",
        (tenant, address, first[0], cut),
    ).fetchone()
    end = POSITION_MAX if young is None else int(young[0]) - 1
    c.execute("DELETE FROM bus_entries WHERE tenant=? AND address=? AND pos<=?", (tenant, address, end))
    return None


def _new_per_address(items: Sequence[tuple[str, Entry]], known: dict[tuple[str, str], int]) -> dict[str, int]:
    """How many of ``items`` each address gets: every entry but a (source, message id) already known or repeated."""
    seen: set[tuple[str, str]] = set()
    added: dict[str, int] = {}
    for address, entry in items:
        if entry.only_group is None:
            key = (entry.source, entry.message_id)
            if key in known or key in seen:
                continue
            seen.add(key)
        added[address] = added.get(address, 0) + 1
    return added


def _last_position(c: sqlite3.Connection, tenant: str, address: str) -> int:
    """The last position ``address`` has used: its newest entry's, or the one recorded when that was removed."""
    row = c.execute(
        "SELECT max(coalesce((SELECT max(pos) FROM bus_entries WHERE tenant=?1 AND address=?2), 0),"
        " coalesce((SELECT last FROM bus_address_positions WHERE tenant=?1 AND address=?2), 0))",
        (tenant, address),
    ).fetchone()
    return int(row[0])


def _columns(c: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in c.execute(f"PRAGMA table_info({table})")}


def _create_schema(c: sqlite3.Connection, path: str) -> None:
    """Make the tables in a new file, or check an existing file's layout: any other is refused (SOS-6031)."""
    version = c.execute("PRAGMA user_version").fetchone()[0]
    ours = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _ALL_SCHEMA)
    marks = ",".join("?" * len(ours))
    found = [r[0] for r in c.execute(f"SELECT name FROM sqlite_master WHERE type='table' AND name IN ({marks})", ours)]
    # a layout this version does not know is never guessed at, never rewritten
    if version != SCHEMA_VERSION and version not in _MIGRATIONS and (version != 0 or found):
        layout = f"layout {version}" if version else "no recorded layout"
        raise BackendFailure(
            f"SQLite database {path!r} holds tables in {layout}, not this version's layout {SCHEMA_VERSION},"
            " which it does not migrate: open a new file",
            details={"layout": version, "expected": SCHEMA_VERSION, "tables": sorted(found)},
        )
    # an earlier layout is brought forward one step at a time, in this (the opening) transaction
    for step in range(version, SCHEMA_VERSION) if version else ():
        for statement in _MIGRATIONS[step]:
            c.execute(statement)
    # layout 5 -> 6's bus statements run on the tables that lack their columns (a file's tables may be of
    # different layouts when only some of them were made by an earlier version)
    for table, column, statements in _BUS_UPGRADES_TO_6 if version and version < 6 else ():
        columns = _columns(c, table)
        if columns and column not in columns:
            for statement in statements:
                c.execute(statement)
    for statement in _ALL_SCHEMA.split(";"):
        if statement.strip():
            c.execute(statement)
    for trigger in _TRIGGERS:
        c.execute(trigger)
    if version and version < 5:  # layouts 3 -> 4 -> 5: the ledger rows' audit columns, statement links, record copies
        upgrade_ledger(c)
    if version != SCHEMA_VERSION:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _blob(value: object) -> bytes:
    """A row's data as bytes, whatever was written into the column (a row another program wrote may hold text
    or a number: its reader dead-letters it rather than failing)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", errors="replace")


def _position(value: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{value!r} is not a position of this bus (an integer for SQLite)") from None
    if not 0 <= number <= POSITION_MAX:
        raise InvalidArgument(f"{value!r} is not a position of this bus")
    return number


def sqlite_path(url: str) -> str:
    """The file path in ``sqlite:///relative.db`` or ``sqlite:////absolute.db``; ``:memory:`` is refused."""
    parts = check_url(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidURL(f"{url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        raise InvalidURL(f"{url!r} names no file; use memory:// for an in-process kernel")
    return path


class SQLiteBackend(Backend):
    """``sqlite:///path/to/file.db``: durable, several processes on one host."""

    name: ClassVar[str] = "sqlite"
    implements: ClassVar[Implements] = Implements(
        durable=True, multi_process=True, multi_host=False, push_wakeups=False, trio=True
    )

    def __init__(self, engine: SQLiteEngine, *, poll_interval_s: float) -> None:
        self.engine = engine
        self.bus = SQLiteBusStore(engine, poll_interval_s=poll_interval_s)
        self.ledger = SQLiteLedgerStore(engine)
        self.identity = SQLiteIdentityStore(engine)
        self.registry = SQLiteRegistryStore(engine)
        self.skills = SQLiteSkillStore(engine)
        self.providers = SQLiteProviderStore(engine)
        self.checkpoints = SQLiteCheckpointStore(engine)
        self.a2a_tasks = SQLiteA2ATaskStore(engine)
        self.replies = SQLiteReplyStore(engine.offloading())  # whole answers, up to megabytes
        self.tasks = SQLiteTaskStore(engine)
        self.memory = SQLiteMemoryStore(engine)
        self.governance = SQLiteGovernanceStore(engine)
        self.audit = SQLiteAuditStore(engine)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        synchronous: str = "NORMAL",
        poll_interval_s: float = POLL_INTERVAL_S,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        **options: Any,
    ) -> SQLiteBackend:
        if options:
            raise InvalidArgument(f"unknown sqlite option(s): {', '.join(sorted(options))}")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidArgument(f"synchronous must be NORMAL, FULL, EXTRA or OFF, got {synchronous!r}")
        if not 0 < poll_interval_s <= 1:
            raise InvalidArgument(f"poll_interval_s must be in (0, 1], got {poll_interval_s!r}")
        path = sqlite_path(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = SQLiteEngine(path, synchronous=synchronous.upper(), lock_timeout_s=lock_timeout_s)
        try:
            await engine.write(lambda c: _create_schema(c, path))
        except BaseException:
            engine.close()
            raise
        return cls(engine, poll_interval_s=poll_interval_s)

    async def aclose(self) -> None:
        self.engine.close()
