"""The SQLite bus store's own statements: acks that drop a nack reason with its pending row (one statement, no
trigger), publishes that dedup and number exactly, and claims whose payloads go over ``INLINE_BYTES_MAX`` taken off
the event loop in order. (SQLite only: the statements are that engine's own.)"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import sqlite as sqlite_backend
from sos_kernel.backends.sqlite import (
    CLAIM_IDLE_SCAN_MAX,
    CLAIM_SCAN_MAX,
    INLINE_BYTES_MAX,
    SCHEMA_VERSION,
    SQLiteBackend,
    SQLiteBusStore,
)
from sos_kernel.bus.store import Appended, Entry, NackReason, Retention
from sos_kernel.contracts import SendMessage, SendPayload, new_message_id
from sos_kernel.errors import BackendFailure

pytestmark = pytest.mark.anyio

KEEP = Retention(count_max=10_000, age_s=3600.0, dedup_window_s=60.0)
TRIM_BATCH = 1000  # TRIM_EVERY_APPENDS: an address is trimmed by count once per this many appends
T, A, G = "default", "agent:x", "inbox"


def triggers(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as c:
        return {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as c:
        return {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_an_ack_drops_the_nack_reason_with_its_pending_row_in_one_statement(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    try:
        assert "bus_nack_reasons" not in tables(path)
        assert "bus_pending_forget" not in triggers(path)
        bus = backend.bus
        await bus.ensure_group(T, A, G, "earliest")
        [first] = await bus.append(T, [(A, Entry("m1", b"{}"))], KEEP)
        [claimed] = await bus.claim(T, A, G, "c", 1, 30_000)
        assert await bus.nack(T, A, G, claimed.position, 1, 0, 30_000, reason="bad input")
        assert await bus.nack_reason(T, A, G, first.position) == NackReason(1, "bad input")
        [again] = await bus.claim(T, A, G, "c", 1, 30_000)
        assert (again.position, again.attempt) == (first.position, 2)
        assert await bus.nack_reason(T, A, G, first.position) == NackReason(1, "bad input")  # kept on redelivery
        statements: list[str] = []
        backend.engine.conn.set_trace_callback(statements.append)
        try:
            assert await bus.ack(T, A, G, again.position, 2)
        finally:
            backend.engine.conn.set_trace_callback(None)
        assert [" ".join(s.split()[:3]) for s in statements] == ["BEGIN IMMEDIATE", "DELETE FROM bus_pending", "COMMIT"]
        assert await bus.nack_reason(T, A, G, first.position) is None
        assert not await bus.ack(T, A, G, again.position, 2)
    finally:
        await backend.aclose()


async def test_publishes_number_each_address_on_and_dedup_within_a_batch_and_across(tmp_path: Path) -> None:
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        bus = backend.bus
        out = await bus.append(
            T,
            [
                (A, Entry("a", b"1")),
                ("agent:y", Entry("b", b"2")),
                (A, Entry("a", b"1")),  # repeated in the batch: the first one's position
                (A, Entry("c", b"3")),
                (A, Entry("", b"4", only_group=G)),  # a group-only entry is never deduplicated
            ],
            KEEP,
        )
        assert [(o.position, o.duplicate) for o in out] == [
            ("1", False),
            ("1", False),
            ("1", True),
            ("2", False),
            ("3", False),
        ]
        again = await bus.append(T, [(A, Entry("c", b"3")), (A, Entry("d", b"5"))], KEEP)
        assert [(o.position, o.duplicate) for o in again] == [("2", True), ("4", False)]
    finally:
        await backend.aclose()


async def test_claims_over_the_inline_bound_are_taken_whole_and_in_order(tmp_path: Path) -> None:
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    big = b"x" * (INLINE_BYTES_MAX + 1)
    try:
        bus = backend.bus
        await bus.ensure_group(T, A, G, "earliest")
        items = [(A, Entry(f"m{i}", data)) for i, data in enumerate([b"a", b"b", big, b"c", big, big])]
        await bus.append(T, items, KEEP)
        taken: list[bytes] = []
        claims: list[int] = []
        while batch := await bus.claim(T, A, G, "c", 10, 30_000):
            claims.append(len(batch))
            taken += [c.data for c in batch]
        assert taken == [data for _, (_, data, *_) in items]
        assert claims == [2, 4]  # on the loop up to the first row over the bound, then the rest off it
        # a due retry over the bound is taken again whole
        assert await bus.nack(T, A, G, "3", 1, 0, 30_000)
        [retry] = await bus.claim(T, A, G, "c", 10, 30_000)
        assert (retry.position, retry.data, retry.attempt) == ("3", big, 2)
    finally:
        await backend.aclose()


# the bus tables as layout 1 made them (layout 2 is the same without bus_entries_created)
LAYOUT_1 = """
CREATE TABLE bus_address_positions (
    tenant TEXT NOT NULL, address TEXT NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (tenant, address)) WITHOUT ROWID;
CREATE TABLE bus_entries (
    tenant TEXT NOT NULL, pos INTEGER NOT NULL, address TEXT NOT NULL, message_id TEXT NOT NULL,
    data BLOB NOT NULL, receipts INTEGER NOT NULL, only_group TEXT, created REAL NOT NULL);
CREATE INDEX bus_entries_addr ON bus_entries (tenant, address, pos);
CREATE INDEX bus_entries_created ON bus_entries (tenant, address, created);
CREATE TABLE bus_dedup (
    tenant TEXT NOT NULL, message_id TEXT NOT NULL, address TEXT NOT NULL, pos INTEGER NOT NULL,
    expires REAL NOT NULL, PRIMARY KEY (tenant, message_id)) WITHOUT ROWID;
CREATE INDEX bus_dedup_expires ON bus_dedup (expires);
CREATE TABLE bus_groups (
    tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL, cursor INTEGER NOT NULL,
    PRIMARY KEY (tenant, address, grp)) WITHOUT ROWID;
CREATE TABLE bus_pending (
    tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL, pos INTEGER NOT NULL,
    consumer TEXT NOT NULL, due REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (tenant, address, grp, pos)) WITHOUT ROWID;
CREATE INDEX bus_pending_due ON bus_pending (tenant, address, grp, due);
CREATE TABLE bus_nack_reasons (
    tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL, pos INTEGER NOT NULL,
    attempt INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (tenant, address, grp, pos)) WITHOUT ROWID;
CREATE TABLE bus_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL,
    pos INTEGER NOT NULL, data BLOB NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL, dead_at REAL NOT NULL);
CREATE UNIQUE INDEX bus_dead_pos ON bus_dead (tenant, address, grp, pos);
CREATE TRIGGER bus_pending_forget AFTER DELETE ON bus_pending BEGIN
    DELETE FROM bus_nack_reasons WHERE tenant=OLD.tenant AND address=OLD.address AND grp=OLD.grp AND pos=OLD.pos; END;
"""
Y = "agent:y"
# what layout 3 changed (layout 4 changed ledger tables only): dedup ids on their entries
LAYOUT_3 = (
    "ALTER TABLE bus_entries ADD COLUMN expires REAL",
    "UPDATE bus_entries SET expires=(SELECT d.expires FROM bus_dedup d WHERE d.tenant=bus_entries.tenant"
    " AND d.message_id=bus_entries.message_id AND d.address=bus_entries.address AND d.pos=bus_entries.pos)"
    " WHERE only_group IS NULL",
    "CREATE UNIQUE INDEX bus_entries_dedup ON bus_entries (tenant, message_id) WHERE expires IS NOT NULL",
    "DELETE FROM bus_dedup WHERE EXISTS (SELECT 1 FROM bus_entries e WHERE e.tenant=bus_dedup.tenant"
    " AND e.message_id=bus_dedup.message_id AND e.expires IS NOT NULL)",
)


def old_file(path: Path, layout: int) -> None:
    """A file of ``layout`` (1 to 4) holding entries, positions, dedup ids, a group, pending entries, a nack
    reason and a dead letter, as that layout's code wrote them."""
    now = time.time()
    with closing(sqlite3.connect(path)) as c:
        c.executescript(LAYOUT_1)
        if layout >= 2:
            c.execute("DROP INDEX bus_entries_created")
        c.executemany("INSERT INTO bus_address_positions VALUES (?,?,?)", [(T, A, 5), (T, Y, 2)])
        c.executemany(
            "INSERT INTO bus_entries VALUES (?,?,?,?,?,?,?,?)",
            [
                (T, 3, A, "m3", b"three", 0, None, now),
                (T, 4, A, "m4", b"four", 1, None, now),
                (T, 5, A, "", b"revived", 0, G, now),  # a revived dead letter, for the group only
                (T, 1, Y, "y1", b"y-one", 0, None, now),
                (T, 2, Y, "y2", b"y-two", 0, None, now),
            ],
        )
        c.executemany(
            "INSERT INTO bus_dedup VALUES (?,?,?,?,?)",
            [
                (T, "m1", A, 1, now + 3600),  # its entry was trimmed; its window is open
                (T, "m3", A, 3, now + 3600),
                (T, "m4", A, 4, now + 3600),
                (T, "y1", Y, 1, now - 1),  # past its window, its entry still kept
                (T, "y2", Y, 2, now + 3600),
            ],
        )
        c.execute("INSERT INTO bus_groups VALUES (?,?,?,?)", (T, A, G, 4))
        c.executemany(
            "INSERT INTO bus_pending VALUES (?,?,?,?,?,?,?)",
            [(T, A, G, 3, "c", now - 1, 1), (T, A, G, 4, "c", now + 3600, 2)],
        )
        c.execute("INSERT INTO bus_nack_reasons VALUES (?,?,?,?,?,?)", (T, A, G, 3, 1, "bad input"))
        c.execute(
            "INSERT INTO bus_dead (tenant, address, grp, pos, data, reason, attempts, dead_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (T, A, G, 2, b"two", "poison", 3, now),
        )
        for statement in LAYOUT_3 if layout >= 3 else ():
            c.execute(statement)
        c.execute(f"PRAGMA user_version = {layout}")
        c.commit()


def layout(path: Path) -> tuple[int, set[str]]:
    with closing(sqlite3.connect(path)) as c:
        version = int(c.execute("PRAGMA user_version").fetchone()[0])
        indexes = {
            n
            for (n,) in c.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name IN ('bus_entries', 'bus_pending')"
                " AND name NOT LIKE 'sqlite_autoindex%'"
            )
        }
        return version, indexes


@pytest.mark.parametrize("old", [1, 2, 3, 4])
async def test_a_file_of_an_earlier_layout_is_migrated_on_open_and_keeps_every_message(
    tmp_path: Path, old: int
) -> None:
    path = tmp_path / "old.db"
    old_file(path, old)
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    try:
        assert layout(path) == (SCHEMA_VERSION, {"bus_entries_addr", "bus_entries_dedup"})
        with closing(sqlite3.connect(path)) as c:  # the group's cursor moved beside its pending entries
            assert c.execute("SELECT name FROM sqlite_master WHERE name='bus_groups'").fetchall() == []
        bus = backend.bus
        assert [(h.position, h.data) for h in await bus.history(T, A, None, 10)] == [("3", b"three"), ("4", b"four")]
        assert [(h.position, h.data) for h in await bus.history(T, Y, None, 10)] == [("1", b"y-one"), ("2", b"y-two")]
        # dedup ids: on their entries, or left behind by a trimmed one; one past its window is forgotten
        assert await bus.lookup(T, "", "m1") == Appended("1", True)
        assert await bus.lookup(T, "", "m4") == Appended("4", True)
        assert await bus.lookup(T, "", "y1") is None
        out = await bus.append(T, [(A, Entry("m1", b"x")), (A, Entry("m4", b"x")), (Y, Entry("y1", b"y"))], KEEP)
        assert out == [Appended("1", True), Appended("4", True), Appended("3", False)]
        assert await bus.lookup(T, "", "y1") == Appended("3", True)
        # the group, its pending entries, the nack reason and the dead letter
        assert await bus.pending_count(T, A, G) == 2
        assert await bus.nack_reason(T, A, G, "3") == NackReason(1, "bad input")
        claimed = await bus.claim(T, A, G, "c", 10, 30_000)
        assert [(c.position, c.data, c.attempt, c.receipts) for c in claimed] == [
            ("3", b"three", 2, False),
            ("5", b"revived", 1, False),
        ]
        [dead] = await bus.dead_letters(T, A, G, 10)
        assert (dead.position, dead.data, dead.reason, dead.attempts) == ("2", b"two", "poison", 3)
        [new] = await bus.append(T, [(A, Entry("m6", b"six"))], KEEP)
        assert new.position == "6"  # positions go on from the file's counter
    finally:
        await backend.aclose()
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")  # and it opens again as it is
    try:
        assert await backend.bus.lookup(T, "", "m6") == Appended("6", True)
    finally:
        await backend.aclose()


# the bus_pending and bus_nack_reasons tables and the trigger as layout 5 made them (their text in sqlite_master)
LAYOUT_5_PENDING = """
CREATE TABLE bus_pending (
    tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL, pos INTEGER NOT NULL,
    consumer TEXT NOT NULL, due REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (tenant, address, grp, pos)) WITHOUT ROWID;
CREATE TABLE bus_nack_reasons (
    tenant TEXT NOT NULL, address TEXT NOT NULL, grp TEXT NOT NULL, pos INTEGER NOT NULL,
    attempt INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (tenant, address, grp, pos)) WITHOUT ROWID;
CREATE TRIGGER bus_pending_forget AFTER DELETE ON bus_pending BEGIN DELETE FROM bus_nack_reasons WHERE
    tenant=OLD.tenant AND address=OLD.address AND grp=OLD.grp AND pos=OLD.pos; END;
"""


async def test_a_layout_5_file_keeps_a_pending_entrys_nack_reason_which_becomes_its_dead_letters_reason(
    tmp_path: Path,
) -> None:
    # what layout 5 wrote for an entry delivered once (max_deliveries=1) and nacked with a reason, and a second entry
    # acked since (the trigger dropped its reason)
    path, now = tmp_path / "old.db", time.time()
    message = SendMessage(source="agent:alice", target=A, payload=SendPayload(text="fails"))
    with closing(sqlite3.connect(path)) as c:
        c.executescript(LAYOUT_1.split("CREATE TABLE bus_groups")[0] + LAYOUT_5_PENDING)
        for statement in LAYOUT_3:
            c.execute(statement)
        c.execute(
            "INSERT INTO bus_entries VALUES (?,?,?,?,?,?,?,?,?)",
            (T, 1, A, str(message.message_id), message.to_json(), 0, None, now, now + 3600),
        )
        c.executemany(
            "INSERT INTO bus_pending VALUES (?,?,?,?,?,?,?)",
            [(T, A, G, -1, "", 0.0, 2), (T, A, G, 1, "c-1", now - 1, 1), (T, A, G, 2, "c-1", now + 3600, 1)],
        )
        c.execute("INSERT INTO bus_nack_reasons VALUES (?,?,?,?,?,?)", (T, A, G, 1, 1, "exit status 3"))
        c.execute("DELETE FROM bus_pending WHERE pos=2")  # acked
        c.execute("PRAGMA user_version = 5")
        c.commit()
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        assert await kernel.bus.store.nack_reason(T, A, G, "1") == NackReason(1, "exit status 3")
        async with kernel.bus.subscribe(A, max_deliveries=1) as sub:
            assert await sub.receive(timeout_s=0.3) is None  # its next hand-out is past max_deliveries: buried
        [dead] = await kernel.bus.dead_letters(A, group=G)
        assert (dead.message, dead.reason, dead.attempts) == (message, "exit status 3", 1)
    assert "bus_nack_reasons" not in tables(path)
    assert "bus_pending_forget" not in triggers(path)
    assert layout(path)[0] == SCHEMA_VERSION == 6


async def test_a_publish_writes_its_entry_only(tmp_path: Path) -> None:
    # a statement plan: no dedup table, no counter, no age-trim delete while the oldest entry is within age
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        bus = backend.bus
        await bus.append(T, [(A, Entry("m1", b"{}"))], KEEP)
        statements: list[str] = []
        backend.engine.conn.set_trace_callback(statements.append)
        try:
            await bus.append(T, [(A, Entry("m2", b"{}"))], KEEP)
        finally:
            backend.engine.conn.set_trace_callback(None)
    finally:
        await backend.aclose()
    # one statement takes the position, checks the id's window and inserts the row
    assert [" ".join(s.split()[:3]) for s in statements] == ["BEGIN IMMEDIATE", "INSERT INTO bus_entries", "COMMIT"]


def wal_frames(conn: sqlite3.Connection, path: Path) -> int:
    """Pages written to the WAL since the last call (automatic checkpoints are off, so it keeps every one)."""
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    size = Path(f"{path}-wal").stat().st_size
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return max(size - 32, 0) // (page + 24)


async def test_a_claim_writes_one_page_and_keeps_its_group_cursor_beside_its_pending_entries(tmp_path: Path) -> None:
    # the group's cursor and its pending entries are one B-tree: a claim of a new entry writes one leaf page
    path = tmp_path / "k.db"
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    try:
        bus, conn = backend.bus, backend.engine.conn
        await bus.ensure_group(T, A, G, "earliest")
        await bus.append(T, [(A, Entry(f"m{i}", b"{}")) for i in range(4)], KEEP)
        [first] = await bus.claim(T, A, G, "c", 1, 30_000)
        assert await bus.ack(T, A, G, first.position, 1)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        wal_frames(conn, path)
        [second] = await bus.claim(T, A, G, "c", 1, 30_000)
        claimed = wal_frames(conn, path)
        assert await bus.ack(T, A, G, second.position, 1)
        acked = wal_frames(conn, path)
        assert (first.position, second.position, claimed, acked) == ("1", "2", 1, 1)
        assert await bus.pending_count(T, A, G) == 0  # the cursor's row is no pending entry
        assert not await bus.ack(T, A, G, "0", 1)
        await bus.delete_group(T, A, G)
        await bus.ensure_group(T, A, G, "latest")
        assert await bus.claim(T, A, G, "c", 1, 30_000) == []  # a group made again starts where it is told
    finally:
        await backend.aclose()


async def test_a_single_publish_of_a_held_id_is_a_duplicate_or_releases_an_id_past_its_window(tmp_path: Path) -> None:
    # the one-statement publish gives way to the full lookup whenever the id is held, and burns no position
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    short = Retention(count_max=1, age_s=3600.0, dedup_window_s=0.3)
    try:
        bus = backend.bus
        assert await bus.append(T, [(A, Entry("a", b"1"))], short) == [Appended("1", False)]
        assert await bus.append(T, [(A, Entry("a", b"1"))], short) == [Appended("1", True)]  # its entry holds it
        assert await bus.append(T, [(A, Entry("b", b"2"))], short) == [Appended("2", False)]
        await bus.append(T, [(A, Entry(f"c{i}", b"3")) for i in range(TRIM_BATCH)], short)  # a trimmed away
        assert [h.position for h in await bus.history(T, A, None, 10)] == [str(2 + TRIM_BATCH)]
        assert await bus.append(T, [(A, Entry("a", b"1"))], short) == [Appended("1", True)]  # bus_dedup holds it
        await anyio.sleep(0.35)  # every window closed; b's entry is kept past its window
        assert await bus.append(T, [(A, Entry("z", b"z"))], KEEP) == [Appended(str(3 + TRIM_BATCH), False)]
        assert await bus.append(T, [(A, Entry("z", b"z"))], KEEP) == [Appended(str(3 + TRIM_BATCH), True)]
    finally:
        await backend.aclose()


async def test_a_claim_reads_a_bounded_window_of_pending_entries_however_many_are_due(tmp_path: Path) -> None:
    # pending entries abandoned by a consumer all fall due; a claim of one must not read them all
    steps: dict[int, int] = {}
    count = [0]

    def step() -> int:  # SQLite's progress handler: called every 100 virtual machine instructions
        count[0] += 1
        return 0

    for pending in (CLAIM_SCAN_MAX // 2, 20 * CLAIM_SCAN_MAX):
        backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / f'k{pending}.db'}")
        try:
            bus = backend.bus
            await bus.ensure_group(T, A, G, "earliest")
            await bus.append(T, [(A, Entry(f"m{i}", b"x")) for i in range(pending)], KEEP)
            assert len(await bus.claim(T, A, G, "gone", pending, 1)) == pending
            await anyio.sleep(0.01)  # every one of them due again
            count[0] = 0
            backend.engine.conn.set_progress_handler(step, 100)
            [retry] = await bus.claim(T, A, G, "c", 1, 30_000)
            backend.engine.conn.set_progress_handler(None, 0)
            steps[pending] = count[0]
            assert (retry.position, retry.attempt) == ("1", 2)
        finally:
            await backend.aclose()
    assert steps[20 * CLAIM_SCAN_MAX] < 2 * steps[CLAIM_SCAN_MAX // 2] + 10, steps


async def claims_until_taken(bus: SQLiteBusStore, position: str, claims_max: int) -> int:
    """How many claims (of one entry each, by a consumer with nothing else to take) it takes to get ``position``."""
    for n in range(1, claims_max + 1):
        taken = await bus.claim(T, A, G, "c", 1, 60_000)
        if taken:
            assert [t.position for t in taken] == [position]
            return n
    return claims_max + 1


async def test_a_due_retry_behind_5000_pending_entries_is_taken_by_the_next_claim(tmp_path: Path) -> None:
    # the retry falls due just behind where the scan stands, so every window of the pending set is before it;
    # one window a claim took ceil(5000 / CLAIM_SCAN_MAX) = 20 claims, each a wait of the subscriber's
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    pending = 5000
    try:
        bus = backend.bus
        await bus.ensure_group(T, A, G, "earliest")
        await bus.append(T, [(A, Entry(f"m{i}", b"x")) for i in range(pending)], KEEP)
        assert len(await bus.claim(T, A, G, "c", pending, 60_000)) == pending  # all in flight, none due
        assert await bus.nack(T, A, G, "1", 1, 0, 60_000)
        assert [c.position for c in await bus.claim(T, A, G, "c", 1, 60_000)] == ["1"]  # the scan is past 1 now
        behind = str(CLAIM_SCAN_MAX - 1)
        assert await bus.nack(T, A, G, behind, 1, 0, 60_000)
        assert await claims_until_taken(bus, behind, pending) == 1
    finally:
        await backend.aclose()


async def test_a_claim_with_nothing_to_take_looks_through_a_bounded_number_of_pending_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its cost is the same with CLAIM_IDLE_SCAN_MAX pending entries and with three times as many; a due retry at
    # the far end of the larger set is reached by the third such claim (one per CLAIM_IDLE_SCAN_MAX entries), each
    # once the interval between a group's longer scans has passed
    monkeypatch.setattr(sqlite_backend, "CLAIM_IDLE_SCAN_INTERVAL_S", 0.05)
    steps: dict[int, int] = {}
    count = [0]
    KEEP_ALL = Retention(count_max=4 * CLAIM_IDLE_SCAN_MAX, age_s=3600.0, dedup_window_s=60.0)

    def step() -> int:  # SQLite's progress handler: called every 100 virtual machine instructions
        count[0] += 1
        return 0

    for pending in (CLAIM_IDLE_SCAN_MAX, 3 * CLAIM_IDLE_SCAN_MAX):
        backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / f'k{pending}.db'}")
        try:
            bus = backend.bus
            await bus.ensure_group(T, A, G, "earliest")
            await bus.append(T, [(A, Entry(f"m{i}", b"x")) for i in range(pending)], KEEP_ALL)
            assert len(await bus.claim(T, A, G, "c", pending, 60_000)) == pending
            count[0] = 0
            backend.engine.conn.set_progress_handler(step, 100)
            assert await bus.claim(T, A, G, "c", 1, 60_000) == []
            backend.engine.conn.set_progress_handler(None, 0)
            steps[pending] = count[0]
            if pending > CLAIM_IDLE_SCAN_MAX:
                assert await bus.nack(T, A, G, str(pending), 1, 0, 60_000)
                await anyio.sleep(0.06)
                assert await bus.claim(T, A, G, "c", 1, 60_000) == []  # the second
                await anyio.sleep(0.06)
                assert [c.position for c in await bus.claim(T, A, G, "c", 1, 60_000)] == [str(pending)]
        finally:
            await backend.aclose()
    assert steps[3 * CLAIM_IDLE_SCAN_MAX] < 1.2 * steps[CLAIM_IDLE_SCAN_MAX] + 10, steps


async def test_a_due_retry_past_the_claim_window_is_reached_by_the_next_claims(tmp_path: Path) -> None:
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    pending = 3 * CLAIM_SCAN_MAX + 5
    try:
        bus = backend.bus
        await bus.ensure_group(T, A, G, "earliest")
        await bus.append(T, [(A, Entry(f"m{i}", b"x")) for i in range(pending)], KEEP)
        assert len(await bus.claim(T, A, G, "c", pending, 60_000)) == pending  # all in flight, none due
        for position in (str(pending), "2", "1"):
            assert await bus.nack(T, A, G, position, 1, 0, 60_000)
        taken: list[str] = []
        for _ in range(pending // CLAIM_SCAN_MAX + 2):  # one window per claim at most
            taken += [c.position for c in await bus.claim(T, A, G, "c", 10, 60_000)]
        assert taken == ["1", "2", str(pending)]  # position order within a window
        assert await bus.claim(T, A, G, "c", 10, 60_000) == []
        assert await bus.pending_count(T, A, G) == pending
    finally:
        await backend.aclose()


async def test_age_trimming_removes_the_oldest_entries_and_no_younger_one(tmp_path: Path) -> None:
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    short = Retention(count_max=10_000, age_s=0.3, dedup_window_s=60.0)
    try:
        bus = backend.bus
        await bus.append(T, [(A, Entry("a", b"a")), (A, Entry("b", b"b"))], short)
        await anyio.sleep(0.2)
        await bus.append(T, [(A, Entry("c", b"c"))], short)
        await anyio.sleep(0.2)  # a and b are past the age now, c is not
        await bus.append(T, [(A, Entry("d", b"d"))], short)
        assert [h.data for h in await bus.history(T, A, None, 10)] == [b"c", b"d"]
        await anyio.sleep(0.35)
        await bus.append(T, [(A, Entry("e", b"e"))], short)
        assert [h.data for h in await bus.history(T, A, None, 10)] == [b"e"]
        assert await bus.lookup(T, "", "a") == Appended("1", True)  # trimmed, still within its window
    finally:
        await backend.aclose()


async def test_positions_go_on_past_every_removed_entry(tmp_path: Path) -> None:
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    one = Retention(count_max=1, age_s=3600.0, dedup_window_s=60.0)
    try:
        bus = backend.bus
        await bus.append(T, [(A, Entry(f"a{i}", b"a")) for i in range(3)], KEEP)
        await bus.drop_address(T, A)  # every entry gone, the newest among them
        [after_drop] = await bus.append(T, [(A, Entry("b", b"b"))], KEEP)
        assert after_drop.position == "4"
        await bus.append(T, [(Y, Entry(f"y{i}", b"y")) for i in range(5)], one)  # trimmed to the newest one
        [kept] = await bus.history(T, Y, None, 10)
        assert kept.position == "5"
        await bus.drop_address(T, Y)
        await bus.ensure_group(T, Y, G, "earliest")
        [after_trim] = await bus.append(T, [(Y, Entry("z", b"z"))], one)
        assert after_trim.position == "6"
        [claimed] = await bus.claim(T, Y, G, "c", 10, 30_000)
        assert claimed.position == "6"
    finally:
        await backend.aclose()


async def test_an_append_that_rolls_back_leaves_age_trimming_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store remembers each address's oldest entry time to skip age trimming; a transaction that trimmed and
    # then failed must not leave it believing the old entries gone
    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    short = Retention(count_max=10_000, age_s=0.3, dedup_window_s=60.0)
    try:
        bus = backend.bus
        await bus.append(T, [(A, Entry("a", b"a")), (A, Entry("b", b"b"))], short)
        await anyio.sleep(0.4)
        trim = SQLiteBusStore._trim_some

        def disk_fails(self: SQLiteBusStore, c: sqlite3.Connection, *args: Any) -> None:
            trim(self, c, *args)
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(SQLiteBusStore, "_trim_some", disk_fails)
        with pytest.raises(BackendFailure):
            await bus.append(T, [(A, Entry("c", b"c"))], short)
        monkeypatch.setattr(SQLiteBusStore, "_trim_some", trim)
        assert [h.data for h in await bus.history(T, A, None, 10)] == [b"a", b"b"]  # rolled back
        await bus.append(T, [(A, Entry("d", b"d"))], short)
        assert [h.data for h in await bus.history(T, A, None, 10)] == [b"d"]
    finally:
        await backend.aclose()


# layout 5 as its code wrote the bus's dedup: one window per (tenant, message_id), whatever the source
AS_LAYOUT_5 = """
DROP TRIGGER bus_entries_forget;
DROP INDEX bus_entries_dedup;
ALTER TABLE bus_entries DROP COLUMN source;
CREATE UNIQUE INDEX bus_entries_dedup ON bus_entries (tenant, message_id) WHERE expires IS NOT NULL;
CREATE TABLE bus_dedup_5 (tenant TEXT NOT NULL, message_id TEXT NOT NULL, address TEXT NOT NULL,
    pos INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (tenant, message_id)) WITHOUT ROWID;
INSERT INTO bus_dedup_5 SELECT tenant, message_id, address, pos, expires FROM bus_dedup;
DROP TABLE bus_dedup;
ALTER TABLE bus_dedup_5 RENAME TO bus_dedup;
CREATE INDEX bus_dedup_expires ON bus_dedup (expires);
CREATE TRIGGER bus_entries_forget AFTER DELETE ON bus_entries WHEN OLD.expires > (julianday('now') - 2440587.5)
    * 86400.0 BEGIN INSERT OR REPLACE INTO bus_dedup VALUES (OLD.tenant, OLD.message_id, OLD.address, OLD.pos,
    OLD.expires); END;
PRAGMA user_version = 5;
"""


def message(source: str, message_id: str) -> Entry:
    sent = SendMessage(source=source, target=A, message_id=message_id, payload=SendPayload(text="x"))
    return Entry(message_id, sent.to_json(), source=source)


async def test_a_layout_5_file_keeps_each_ids_window_for_its_source_after_the_upgrade(tmp_path: Path) -> None:
    path, alice, mallory = tmp_path / "five.db", "agent:alice", "agent:mallory"
    kept, removed, fresh = new_message_id(), new_message_id(), new_message_id()
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    try:
        await backend.bus.append(T, [(A, message(alice, kept))], KEEP)
        await backend.bus.append(T, [("agent:y", message(alice, removed))], KEEP)
        await backend.bus.drop_address(T, "agent:y")  # its id stays behind in bus_dedup, within its window
    finally:
        await backend.aclose()
    with closing(sqlite3.connect(path)) as c:
        c.executescript(AS_LAYOUT_5)
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    try:
        bus = backend.bus
        assert layout(path) == (SCHEMA_VERSION, {"bus_entries_addr", "bus_entries_dedup"})
        # a kept entry's id holds for the source its message names, and for no other
        assert await bus.lookup(T, alice, kept) == Appended("1", True)
        assert await bus.lookup(T, mallory, kept) is None
        assert await bus.append(T, [(A, message(alice, kept))], KEEP) == [Appended("1", True)]
        assert await bus.append(T, [(A, message(mallory, kept))], KEEP) == [Appended("2", False)]
        assert await bus.locate(T, A, kept) == "1"  # the earliest of the two
        # a removed entry's id has no message left to name its source: it holds for every source until it ends
        for source in (alice, mallory):
            assert await bus.lookup(T, source, removed) == Appended("1", True)
            assert await bus.append(T, [(A, message(source, removed))], KEEP) == [Appended("1", True)]
        assert await bus.locate(T, "agent:y", removed) == "1"
        assert await bus.locate(T, A, removed) is None
        assert await bus.append(T, [(A, message(mallory, fresh))], KEEP) == [Appended("3", False)]
    finally:
        await backend.aclose()


async def test_empty_claims_look_past_their_window_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a loop of empty claims on a group with many entries in flight: the first looks through CLAIM_IDLE_SCAN_MAX
    # entries, the others within CLAIM_IDLE_SCAN_INTERVAL_S one window each (their cost that of a small group's)
    monkeypatch.setattr(sqlite_backend, "CLAIM_IDLE_SCAN_INTERVAL_S", 0.3)
    count = [0]

    def step() -> int:  # SQLite's progress handler: called every 100 virtual machine instructions
        count[0] += 1
        return 0

    backend = await SQLiteBackend.connect(f"sqlite:///{tmp_path / 'k.db'}")
    pending = CLAIM_IDLE_SCAN_MAX + CLAIM_SCAN_MAX
    try:
        bus = backend.bus
        await bus.ensure_group(T, A, G, "earliest")
        await bus.append(T, [(A, Entry(f"m{i}", b"x")) for i in range(pending)], KEEP)
        assert len(await bus.claim(T, A, G, "gone", pending, 3_600_000)) == pending
        steps = []
        backend.engine.conn.set_progress_handler(step, 100)
        for _ in range(11):
            count[0] = 0
            assert await bus.claim(T, A, G, "c", 1, 60_000) == []
            steps.append(count[0])
        backend.engine.conn.set_progress_handler(None, 0)
        assert max(steps[1:]) * 10 < steps[0], steps  # the ten after the first: one window each
        assert await bus.nack(T, A, G, str(pending // 2), 1, 0, 60_000)
        await anyio.sleep(0.35)
        assert [c.position for c in await bus.claim(T, A, G, "c", 1, 60_000)] == [str(pending // 2)]
    finally:
        await backend.aclose()
