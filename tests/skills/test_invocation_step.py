"""An invocation's writes are one step: its binding, its charge, its count and its ``sos.skill_executed`` message.

On every backend and remotely: a counted invocation has exactly one message, a failed charge or a refused id has
none, and a retry adds nothing. On SQLite the four are one transaction, so a failure (or a killed process) at any
point leaves all of them or none.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.errors import BackendFailure, IdempotencyConflict, InsufficientFunds, InvalidArgument, NotFound
from sos_kernel.skills import SKILL_EVENT_TYPE, Skills

from ..conftest import Api
from .test_invocation_atomic import CARD, FUNDS

pytestmark = pytest.mark.anyio

FREE = {**CARD, "id": "free", "name": "Free", "commerce": None}
WORKER = str(Path(__file__).with_name("_invoke_worker.py"))
KILLS = 8
PAGE = 1000


async def _prepare(api: Any, funds: int = FUNDS) -> Skills:
    led = api.ledger
    await led.open_account("system:treasury", "USD", allow_negative=True)
    await led.open_account("agent:caller", "USD")
    await led.transfer(id="fund", debit="system:treasury", credit="agent:caller", amount=funds, currency="USD")
    skills: Skills = api.skills
    await skills.publish(CARD)
    await skills.publish({k: v for k, v in FREE.items() if v is not None})
    return skills


async def _messages(api: Any) -> list[Any]:
    """Every skill message of the channel, read page by page."""
    out: list[Any] = []
    after = None
    while page := await api.bus.history_entries("sos:channel:skills", after=after, limit=PAGE):
        out += [m for _, m in page if m.type == SKILL_EVENT_TYPE]
        after = page[-1][0]
    return out


async def _charged(api: Any) -> set[str]:
    """The invocation ids whose charge is on the caller's account, read page by page."""
    out: set[str] = set()
    after = 0
    while page := await api.ledger.history("agent:caller", "USD", after=after, limit=PAGE):
        out |= {t.id.split(":")[1] for t in page if t.id.startswith("skill:")}
        after = page[-1].sequence
    return out


async def _counts(skills: Skills) -> int:
    total = 0
    for skill_id in ("paid", "free"):
        earnings = (await skills.get(skill_id)).earnings
        total += (earnings.total_invocations or 0) if earnings else 0
    return total


async def test_each_counted_invocation_has_one_message_and_a_failed_or_refused_one_none(api: Api) -> None:
    skills = await _prepare(api, funds=2_500)  # two paid calls of 1,000, then the third cannot pay
    calls = [("paid", "a"), ("free", "b"), ("paid", "a"), ("paid", "c"), ("free", "b"), ("paid", "d")]
    for skill_id, invocation_id in calls:
        try:
            await skills.record_invocation(
                skill_id, caller="agent:caller", tenant="default", invocation_id=invocation_id
            )
        except InsufficientFunds:
            assert invocation_id == "d"
    with pytest.raises(IdempotencyConflict):  # a reused id for another skill
        await skills.record_invocation("free", caller="agent:caller", tenant="default", invocation_id="a")
    messages = await _messages(api)
    assert sorted(m.payload.invocation_id for m in messages) == ["a", "b", "c"]
    assert await _counts(skills) == 3
    assert (await api.ledger.balance("agent:caller", "USD")).posted == 500
    first = next(m for m in messages if m.payload.invocation_id == "a")
    assert (first.source, first.target) == ("agent:kernel", "sos:channel:skills")
    payload = first.payload
    assert (payload.skill_id, payload.version, payload.caller, payload.tenant) == (
        "paid",
        "1.0.0",
        "agent:caller",
        "default",
    )
    assert (payload.price_micros, payload.currency) == (1_000, "USD")
    await api.ledger.check()


def sql(path: Path, statement: str) -> None:
    with closing(sqlite3.connect(path)) as c:
        c.execute(statement)
        c.commit()


@pytest.mark.parametrize("skill_id", ["paid", "free"])
async def test_sqlite_a_failure_in_the_message_leaves_no_charge_no_count_and_no_binding(
    tmp_path: Path, skill_id: str
) -> None:
    path = tmp_path / "sos.db"
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        skills = await _prepare(kernel)
        sql(path, "CREATE TRIGGER no_entries BEFORE INSERT ON bus_entries BEGIN SELECT RAISE(ABORT, 'full'); END")
        with pytest.raises(BackendFailure):
            await skills.record_invocation(skill_id, caller="agent:caller", tenant="default", invocation_id="i1")
        assert (await kernel.ledger.balance("agent:caller", "USD")).posted == FUNDS
        with pytest.raises(NotFound):
            await kernel.ledger.get_transfer("skill:i1:author")
        assert await _counts(skills) == 0
        sql(path, "DROP TRIGGER no_entries")
        # nothing bound the id: it may now be used for another skill
        other = "free" if skill_id == "paid" else "paid"
        await skills.record_invocation(other, caller="agent:caller", tenant="default", invocation_id="i1")
        assert [m.payload.skill_id for m in await _messages(kernel)] == [other]
        assert await _counts(skills) == 1
        await kernel.ledger.check()


async def _stats(path: Path) -> tuple[int, int, int]:
    """Charged invocations (ledger), counted invocations, and messages, read from the file."""
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        charged = await _charged(kernel)
        skills = kernel.skills
        paid = (await skills.get("paid")).earnings
        free = [m for m in await _messages(kernel) if m.payload.skill_id == "free"]
        free_count = (await skills.get("free")).earnings
        messages = await _messages(kernel)
        await kernel.ledger.check()
        assert len(free) == (free_count.total_invocations or 0 if free_count else 0)
        return len(charged), (paid.total_invocations or 0) if paid else 0, len(messages) - len(free)


async def test_sqlite_a_process_killed_mid_stream_leaves_charges_counts_and_messages_equal(tmp_path: Path) -> None:
    path = tmp_path / "sos.db"
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        await _prepare(kernel, funds=10**12)
    for round_ in range(KILLS):
        command = [sys.executable, WORKER, f"sqlite:///{path}", f"k{round_}"]
        async with await anyio.open_process(command, stderr=None) as proc:
            assert proc.stdout is not None
            with anyio.fail_after(60):
                assert (await proc.stdout.receive()).startswith(b"GO")
            await anyio.sleep(0.3 + 0.07 * round_)  # mid-stream, at a different point each round
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        charged, counted, messages = await _stats(path)
        assert charged == counted == messages, (round_, charged, counted, messages)
    assert charged > 0


async def test_memory_an_invocation_is_one_step_of_the_event_loop() -> None:
    async with sos_kernel.open("memory://") as kernel:
        skills = await _prepare(kernel)
        with anyio.CancelScope() as scope:
            scope.cancel()  # any checkpoint inside the invocation would raise here
            for skill_id, invocation_id in (("paid", "m1"), ("free", "m2"), ("paid", "m1")):
                await skills.record_invocation(
                    skill_id, caller="agent:caller", tenant="default", invocation_id=invocation_id
                )
        assert not scope.cancelled_caught
        assert sorted(m.payload.invocation_id for m in await _messages(kernel)) == ["m1", "m2"]
        assert await _counts(skills) == 2
        assert (await kernel.ledger.balance("agent:caller", "USD")).posted == FUNDS - 1_000


async def test_an_invocation_with_a_non_string_id_caller_or_tenant_writes_nothing(kernel: sos_kernel.Kernel) -> None:
    skills = await _prepare(kernel)
    bad: list[dict[str, Any]] = [
        {"caller": "agent:caller", "tenant": "default", "invocation_id": 7},
        {"caller": "agent:caller", "tenant": "default", "invocation_id": ""},
        {"caller": ["agent:caller"], "tenant": "default", "invocation_id": "x"},
        {"caller": "agent:caller", "tenant": None, "invocation_id": "x"},
    ]
    for skill_id in ("free", "paid"):
        for arguments in bad:
            with pytest.raises(InvalidArgument) as caught:
                await skills.record_invocation(skill_id, **arguments)
            assert caught.value.code == "SOS-4005"
    assert await _counts(skills) == 0
    assert await _messages(kernel) == []
    assert (await kernel.ledger.balance("agent:caller", "USD")).posted == FUNDS


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
async def test_invocations_are_counted_per_caller_tenant_whatever_its_name(tmp_path: Path, scheme: str) -> None:
    # the per-tenant counts are a JSON object in a stored row: names that look like JSON paths or hold quotes are
    # keys like any other (the in-process handle names any caller tenant; a remote token only its own)
    url = "memory://" if scheme == "memory" else f"sqlite:///{tmp_path / 'k.db'}"
    async with sos_kernel.open(url) as kernel:
        await kernel.skills.publish({k: v for k, v in FREE.items() if v is not None})
        names = ["default", "$.x", 'a"b', "a.b", "default", "$"]
        for i, name in enumerate(names):
            await kernel.skills.record_invocation("free", caller="agent:caller", tenant=name, invocation_id=f"t{i}")
        card = await kernel.skills.get("free")
    assert card.earnings is not None
    assert card.earnings.total_invocations == len(names)
    assert card.earnings.invocations_by_tenant == {"default": 2, "$.x": 1, 'a"b': 1, "a.b": 1, "$": 1}


async def test_a_paid_invocation_on_sqlite_writes_its_message_its_binding_and_count_in_one_statement_each(
    tmp_path: Path,
) -> None:
    # inside the invocation's transaction the message is one insert (its id is fresh: no separate dedup probe or
    # position read) and the count one update (the caller tenant's count moves inside the row)
    async with sos_kernel.open(f"sqlite:///{tmp_path / 'k.db'}") as kernel:
        skills = await _prepare(kernel)
        await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="warm")
        statements: list[str] = []
        kernel.backend.engine.conn.set_trace_callback(statements.append)
        try:
            await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="i1")
        finally:
            kernel.backend.engine.conn.set_trace_callback(None)
        assert len(await _messages(kernel)) == 2
    assert [" ".join(s.split()[:3]) for s in statements if "bus_" in s] == ["INSERT INTO bus_entries"]
    # the id's binding and its counted mark: one row, one statement
    assert [" ".join(s.split()[:3]) for s in statements if "skill_invocation" in s] == ["INSERT INTO skill_invocations"]
    assert [" ".join(s.split()[:2]) for s in statements if "skill_versions" in s] == [
        "SELECT version",  # the version list (resolution)
        "UPDATE skill_versions",
    ]
