"""The SQLite bus store's own statements: acks that drop nack reasons through the file's trigger (also in a file
made before the trigger existed), publishes that dedup and number exactly, and claims whose payloads go over
``INLINE_BYTES_MAX`` taken off the event loop in order. (SQLite only: the statements are that engine's own.)"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from sos_kernel.backends.sqlite import INLINE_BYTES_MAX, SQLiteBackend
from sos_kernel.bus.store import Entry, Retention

pytestmark = pytest.mark.anyio

KEEP = Retention(count_max=10_000, age_s=3600.0, dedup_window_s=60.0)
T, A, G = "default", "agent:x", "inbox"


def reasons(path: Path) -> int:
    with closing(sqlite3.connect(path)) as c:
        return int(c.execute("SELECT count(*) FROM bus_nack_reasons").fetchone()[0])


def triggers(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as c:
        return {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}


async def test_a_file_made_before_the_ack_trigger_gains_it_on_open_and_acks_drop_nack_reasons(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    await backend.aclose()
    with closing(sqlite3.connect(path)) as c:  # the layout as files were made before the trigger
        c.execute("DROP TRIGGER bus_pending_forget")
        c.commit()
    assert "bus_pending_forget" not in triggers(path)
    backend = await SQLiteBackend.connect(f"sqlite:///{path}")
    try:
        assert "bus_pending_forget" in triggers(path)
        bus = backend.bus
        await bus.ensure_group(T, A, G, "earliest")
        [first] = await bus.append(T, [(A, Entry("m1", b"{}"))], KEEP)
        [claimed] = await bus.claim(T, A, G, "c", 1, 30_000)
        assert await bus.nack(T, A, G, claimed.position, 0, 30_000, reason="bad input")
        assert (await bus.nack_reason(T, A, G, first.position)) is not None
        [again] = await bus.claim(T, A, G, "c", 1, 30_000)
        assert (again.position, again.attempt) == (first.position, 2)
        assert await bus.ack(T, A, G, again.position)
        assert await bus.nack_reason(T, A, G, first.position) is None
        assert reasons(path) == 0
        assert not await bus.ack(T, A, G, again.position)
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
        assert await bus.nack(T, A, G, "3", 0, 30_000)
        [retry] = await bus.claim(T, A, G, "c", 10, 30_000)
        assert (retry.position, retry.data, retry.attempt) == ("3", big, 2)
    finally:
        await backend.aclose()
