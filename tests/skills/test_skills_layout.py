"""Invocation ids in the SQLite file: a file of layout 5 (an id's binding and its counted mark in two tables) is
upgraded on open to one row per id, and every id keeps its binding and its count. (SQLite only: the layout is that
engine's own.)

``skills_layout_5.sql`` is the dump (``Connection.iterdump``, then the file's ``user_version``) of a file written by
:func:`fill` running on the layout-5 release (``SCHEMA_VERSION = 5``); to write it again, run this module with that
release's ``src`` first on ``PYTHONPATH``: ``python tests/skills/test_skills_layout.py <dump.sql>``.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends.sqlite import SCHEMA_VERSION
from sos_kernel.errors import IdempotencyConflict, InsufficientFunds

pytestmark = pytest.mark.anyio

LAYOUT_5 = Path(__file__).with_name("skills_layout_5.sql")
FUNDS = 1_000_000
PRICE = 1_000
PAID = {
    "schema_version": "1",
    "id": "paid",
    "name": "Paid",
    "version": "1.0.0",
    "author_agent": "agent:author",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "paid.py"},
    "commerce": {
        "price_per_call_micros": PRICE,
        "currency": "USD",
        "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
    },
}
FREE = {k: v for k, v in PAID.items() if k != "commerce"} | {"id": "free", "name": "Free"}


async def fill(url: str) -> None:
    """The state the layout-5 file holds: ids bound and counted (paid, free), one bound and not counted (its
    charge failed), and one counted with no binding (as a release that kept none left it)."""
    async with sos_kernel.open(url) as kernel:
        led, skills = kernel.ledger, kernel.skills
        await led.open_account("system:treasury", "USD", allow_negative=True)
        for owner in ("agent:caller", "agent:poor"):
            await led.open_account(owner, "USD")
        await led.transfer(id="fund", debit="system:treasury", credit="agent:caller", amount=FUNDS, currency="USD")
        await skills.publish(PAID)
        await skills.publish(FREE)
        await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="paid1")
        await skills.record_invocation("free", caller="agent:caller", tenant="default", invocation_id="free1")
        with suppress(InsufficientFunds):  # bound, not counted
            await skills.record_invocation("paid", caller="agent:poor", tenant="default", invocation_id="short")
        await kernel.backend.skills.record_invocation("default", "free", "1.0.0", "old", "default", 0, 1.0)


def _rows(path: Path) -> dict[str, tuple[bool, int]]:
    """Each invocation id's row: whether it holds a binding, and its counted mark."""
    with closing(sqlite3.connect(path)) as c:
        sql = "SELECT invocation_id, binding IS NOT NULL, counted FROM skill_invocations WHERE tenant='default'"
        return {i: (bool(b), int(n)) for i, b, n in c.execute(sql)}


def _load(dump: Path, path: Path) -> None:
    with closing(sqlite3.connect(path)) as c:
        c.executescript(dump.read_text())


def _layout(path: Path) -> tuple[int, set[str]]:
    with closing(sqlite3.connect(path)) as c:
        tables = {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return c.execute("PRAGMA user_version").fetchone()[0], tables


async def _counters(skills: Any) -> dict[str, tuple[int, int]]:
    out = {}
    for skill_id in ("paid", "free"):
        e = (await skills.get(skill_id)).earnings
        out[skill_id] = (e.total_invocations or 0, e.total_earned_micros or 0) if e else (0, 0)
    return out


async def test_a_layout_5_file_keeps_every_binding_and_count_and_counts_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _load(LAYOUT_5, path)
    version, tables = _layout(path)
    assert version == 5
    assert {"skill_invocations", "skill_invocation_bindings"} <= tables
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        led, skills, store = kernel.ledger, kernel.skills, kernel.backend.skills
        assert [await store.counted("default", i) for i in ("paid1", "free1", "short", "old", "new")] == [
            True,
            True,
            False,
            True,
            False,
        ]
        before = await _counters(skills)
        assert before == {"paid": (1, PRICE), "free": (2, 0)}
        # counted before the upgrade: replayed, not counted again
        for skill_id, invocation_id in (("paid", "paid1"), ("free", "free1")):
            again = await skills.record_invocation(
                skill_id, caller="agent:caller", tenant="default", invocation_id=invocation_id
            )
            assert again.replayed, invocation_id
        # bound before the upgrade: another skill, caller or price is refused
        for skill_id, caller, invocation_id in (
            ("free", "agent:caller", "paid1"),
            ("paid", "agent:caller", "free1"),
            ("free", "agent:other", "free1"),
            ("paid", "agent:caller", "short"),
        ):
            with pytest.raises(IdempotencyConflict):
                await skills.record_invocation(skill_id, caller=caller, tenant="default", invocation_id=invocation_id)
        with pytest.raises(InsufficientFunds):  # its recorded failure, bound to the same outcome
            await skills.record_invocation("paid", caller="agent:poor", tenant="default", invocation_id="short")
        with pytest.raises(IdempotencyConflict):  # counted with no binding: a charge on it moves nothing
            await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="old")
        assert await _counters(skills) == before
        assert (await led.balance("agent:caller", "USD")).posted == FUNDS - PRICE
        new = await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="new")
        assert not new.replayed
        assert await _counters(skills) == {"paid": (2, 2 * PRICE), "free": (2, 0)}
        assert [await store.counted("default", i) for i in ("short", "old", "new")] == [False, True, True]
        await led.check()
    version, tables = _layout(path)
    assert version == SCHEMA_VERSION
    assert "skill_invocation_bindings" not in tables
    assert _rows(path) == {
        "paid1": (True, 1),
        "free1": (True, 1),
        "short": (True, 0),
        "old": (False, 1),  # the refused call's binding was rolled back with it
        "new": (True, 1),
    }


def _write(dump: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.db"
        anyio.run(fill, f"sqlite:///{path}")
        with closing(sqlite3.connect(path)) as c:
            (version,) = c.execute("PRAGMA user_version").fetchone()
            dump.write_text("\n".join([*c.iterdump(), f"PRAGMA user_version = {version};", ""]))


if __name__ == "__main__":  # writes the layout-5 file with the release on PYTHONPATH (see the module docstring)
    _write(Path(sys.argv[1]))
