"""The ledger conformance suite: every rule on every backend; ``check()`` runs after each test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends.sqlite_ledger import STATEMENT_BLOCK
from sos_kernel.contracts import UsageEvent
from sos_kernel.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    SchemaViolation,
    SettlementRejected,
    WalletNotFound,
)
from sos_kernel.ledger import AMOUNT_MICROS_MAX, Ledger, Transfer

from ..conftest import Api

pytestmark = pytest.mark.anyio

USD = "USD"


@pytest.fixture
async def ledger(api: Api) -> AsyncIterator[Ledger]:
    led = api.ledger
    await led.open_account("system:treasury", USD, allow_negative=True)
    for name in ("alice", "bob", "carol"):
        await led.open_account(f"agent:{name}", USD)
    await led.transfer(id="seed-alice", debit="system:treasury", credit="agent:alice", amount=1_000, currency=USD)
    yield led
    await led.check()


async def bal(led: Ledger, owner: str) -> tuple[int, int, int]:
    b = await led.balance(owner, USD)
    return b.posted, b.pending, b.available


async def test_open_account_is_idempotent_and_flags_must_match(ledger: Ledger) -> None:
    first = await ledger.open_account("agent:dave", USD)
    again = await ledger.open_account("agent:dave", USD)
    assert first == again
    with pytest.raises(IdempotencyConflict):
        await ledger.open_account("agent:dave", USD, allow_negative=True)
    b = await ledger.balance("agent:dave", USD)
    assert (b.posted, b.pending, b.available, b.debits_posted, b.credits_posted) == (0, 0, 0, 0, 0)


@pytest.mark.live
async def test_transfer_moves_exact_integers_double_entry(ledger: Ledger) -> None:
    t = await ledger.transfer(
        id="t1",
        debit="agent:alice",
        credit="agent:bob",
        amount=250,
        currency=USD,
        code=7,
        reason="lunch",
        metadata={"k": "v"},
    )
    assert (t.ok, t.amount, t.debit, t.credit, t.replayed) == (True, 250, "agent:alice", "agent:bob", False)
    assert await bal(ledger, "agent:alice") == (750, 0, 750)
    assert await bal(ledger, "agent:bob") == (250, 0, 250)
    assert await bal(ledger, "system:treasury") == (-1000, 0, -1000)


@pytest.mark.live
async def test_replay_returns_first_outcome_and_moves_nothing(ledger: Ledger) -> None:
    first = await ledger.transfer(id="t1", debit="agent:alice", credit="agent:bob", amount=100, currency=USD)
    again = await ledger.transfer(id="t1", debit="agent:alice", credit="agent:bob", amount=100, currency=USD)
    assert again.replayed is True
    assert (again.sequence, again.timestamp) == (first.sequence, first.timestamp)
    assert await bal(ledger, "agent:bob") == (100, 0, 100)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 101}, "amount"),
        ({"credit": "agent:carol"}, "credit"),
        ({"reason": "x"}, "reason"),
        ({"code": 1}, "code"),
        ({"metadata": {"a": 1}}, "metadata"),
    ],
)
async def test_replay_with_different_fields_names_the_field(ledger: Ledger, change: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"id": "t1", "debit": "agent:alice", "credit": "agent:bob", "amount": 100, "currency": USD}
    await ledger.transfer(**base)
    with pytest.raises(IdempotencyConflict) as info:
        await ledger.transfer(**{**base, **change})
    assert info.value.details["field"] == field
    assert await bal(ledger, "agent:bob") == (100, 0, 100)


async def test_failed_id_fails_forever_even_after_funding(ledger: Ledger) -> None:
    with pytest.raises(InsufficientFunds) as info:
        await ledger.transfer(id="big", debit="agent:alice", credit="agent:bob", amount=5_000, currency=USD)
    assert info.value.code == "SOS-7001"
    await ledger.transfer(id="topup", debit="system:treasury", credit="agent:alice", amount=10_000, currency=USD)
    with pytest.raises(InsufficientFunds) as again:
        await ledger.transfer(id="big", debit="agent:alice", credit="agent:bob", amount=5_000, currency=USD)
    assert again.value.details["replayed"] is True
    assert await bal(ledger, "agent:bob") == (0, 0, 0)
    recorded = await ledger.get_transfer("big")
    assert (recorded.status, recorded.error_code) == ("failed", "SOS-7001")


async def test_missing_account_is_wallet_not_found(ledger: Ledger) -> None:
    with pytest.raises(WalletNotFound):
        await ledger.transfer(id="t", debit="agent:alice", credit="agent:nobody", amount=1, currency=USD)
    with pytest.raises(WalletNotFound):
        await ledger.transfer(id="t2", debit="agent:alice", credit="agent:bob", amount=1, currency="MIND")
    with pytest.raises(WalletNotFound):
        await ledger.balance("agent:nobody", USD)
    assert await bal(ledger, "agent:alice") == (1000, 0, 1000)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"amount": 0}, InvalidArgument),
        ({"amount": -5}, InvalidArgument),
        ({"amount": 1.5}, InvalidArgument),
        ({"amount": True}, InvalidArgument),
        ({"amount": AMOUNT_MICROS_MAX + 1}, LimitExceeded),
        ({"currency": "usd"}, InvalidArgument),
        ({"debit": "alice"}, InvalidArgument),
        ({"credit": "agent:alice"}, InvalidArgument),
        ({"id": ""}, InvalidArgument),
        ({"id": "has space"}, InvalidArgument),
        ({"metadata": {"x": [1]}}, InvalidArgument),
        ({"reason": "r" * 501}, InvalidArgument),
    ],
)
async def test_bad_input_writes_nothing(ledger: Ledger, kwargs: dict[str, Any], error: type[Exception]) -> None:
    base: dict[str, Any] = {"id": "bad", "debit": "agent:alice", "credit": "agent:bob", "amount": 10, "currency": USD}
    with pytest.raises(error):
        await ledger.transfer(**{**base, **kwargs})
    with pytest.raises(NotFound):
        await ledger.get_transfer("bad")
    # the id is still free: bad input was never recorded
    ok = await ledger.transfer(**base)
    assert ok.ok


async def test_linked_batch_is_all_or_nothing(ledger: Ledger) -> None:
    batch = [
        {"id": "b1", "debit": "agent:alice", "credit": "agent:bob", "amount": 600, "currency": USD},
        {"id": "b2", "debit": "agent:alice", "credit": "agent:carol", "amount": 600, "currency": USD},
    ]
    with pytest.raises(InsufficientFunds):
        await ledger.transfer_many(batch)
    assert await bal(ledger, "agent:alice") == (1000, 0, 1000)
    assert await bal(ledger, "agent:bob") == (0, 0, 0)
    assert (await ledger.get_transfer("b1")).status == "failed"
    ok = await ledger.transfer_many([{**batch[0], "id": "c1"}, {**batch[1], "id": "c2", "amount": 400}])
    assert [t.ok for t in ok] == [True, True]
    assert await bal(ledger, "agent:alice") == (0, 0, 0)
    replay = await ledger.transfer_many([{**batch[0], "id": "c1"}, {**batch[1], "id": "c2", "amount": 400}])
    assert all(t.replayed for t in replay)
    with pytest.raises(IdempotencyConflict):
        await ledger.transfer_many([{**batch[0], "id": "c1"}, {**batch[1], "id": "new"}])
    with pytest.raises(InvalidArgument):
        await ledger.transfer_many([batch[0], batch[0]])


async def test_hold_capture_partial_releases_the_rest(ledger: Ledger) -> None:
    hold = await ledger.hold(id="h1", debit="agent:alice", credit="agent:bob", amount=400, currency=USD, timeout_s=60)
    assert (hold.state, hold.kind) == ("pending", "pending")
    assert await bal(ledger, "agent:alice") == (1000, 400, 600)
    assert (await ledger.balance("agent:bob", USD)).incoming == 400
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(id="t", debit="agent:alice", credit="agent:carol", amount=700, currency=USD)
    captured = await ledger.capture("h1", 250)
    assert (captured.kind, captured.amount) == ("post_pending", 250)
    assert await bal(ledger, "agent:alice") == (750, 0, 750)
    assert await bal(ledger, "agent:bob") == (250, 0, 250)
    assert (await ledger.get_transfer("h1")).state == "posted"
    again = await ledger.capture("h1", 250)
    assert again.replayed
    with pytest.raises(SettlementRejected):
        await ledger.void("h1")
    with pytest.raises(SettlementRejected):
        await ledger.capture("h1", 100, id="other-capture")


async def test_hold_void_and_capture_limits(ledger: Ledger) -> None:
    await ledger.hold(id="h", debit="agent:alice", credit="agent:bob", amount=300, currency=USD, timeout_s=60)
    with pytest.raises(SettlementRejected):
        await ledger.capture("h", 301)
    # the failed capture owns the default capture id for good; another amount under it is a conflict
    with pytest.raises(IdempotencyConflict):
        await ledger.capture("h")
    voided = await ledger.void("h")
    assert voided.kind == "void_pending"
    assert await bal(ledger, "agent:alice") == (1000, 0, 1000)
    with pytest.raises(SettlementRejected):
        await ledger.capture("h", id="h:capture-2")
    with pytest.raises(SettlementRejected):
        await ledger.capture("no-such-hold")
    await ledger.hold(id="h2", debit="agent:alice", credit="agent:bob", amount=1000, currency=USD, timeout_s=60)
    full = await ledger.capture("h2")
    assert full.amount == 1000
    assert await bal(ledger, "agent:bob") == (1000, 0, 1000)


async def test_expired_hold_releases_and_cannot_be_captured(ledger: Ledger) -> None:
    await ledger.hold(id="h", debit="agent:alice", credit="agent:bob", amount=500, currency=USD, timeout_s=1)
    assert await bal(ledger, "agent:alice") == (1000, 500, 500)
    await anyio.sleep(1.1)  # a hold's timeout is wall-clock time
    assert await bal(ledger, "agent:alice") == (1000, 0, 1000)
    assert (await ledger.get_transfer("h")).state == "expired"
    with pytest.raises(SettlementRejected) as info:
        await ledger.capture("h")
    assert "expired" in info.value.message


async def test_transmute_converts_with_floor_and_keeps_remainder(ledger: Ledger) -> None:
    await ledger.open_account("agent:alice", "MIND")
    for currency in (USD, "MIND"):
        await ledger.open_account("system:exchange", currency, allow_negative=True)
    result = await ledger.transmute(
        id="x1", owner="agent:alice", amount=1000, from_currency=USD, to_currency="MIND", rate_num=10, rate_den=3
    )
    assert (result.converted, result.remainder_num) == (3333, 1)
    assert (await ledger.balance("agent:alice", "MIND")).posted == 3333
    assert await bal(ledger, "agent:alice") == (0, 0, 0)
    assert (await ledger.balance("system:exchange", USD)).posted == 1000
    assert (await ledger.balance("system:exchange", "MIND")).posted == -3333
    again = await ledger.transmute(
        id="x1", owner="agent:alice", amount=1000, from_currency=USD, to_currency="MIND", rate_num=10, rate_den=3
    )
    assert all(leg.replayed for leg in again.legs)
    with pytest.raises(InsufficientFunds):
        await ledger.transmute(
            id="x2", owner="agent:alice", amount=1, from_currency=USD, to_currency="MIND", rate_num=1, rate_den=1
        )
    assert (await ledger.balance("agent:alice", "MIND")).posted == 3333


async def test_history_pages_by_sequence(ledger: Ledger) -> None:
    for i in range(5):
        await ledger.transfer(id=f"h{i}", debit="agent:alice", credit="agent:bob", amount=10, currency=USD)
    first = await ledger.history("agent:bob", USD, limit=3)
    rest = await ledger.history("agent:bob", USD, after=first[-1].sequence)
    assert [t.id for t in first + rest] == [f"h{i}" for i in range(5)]
    alice = await ledger.history("agent:alice", USD)
    assert [t.id for t in alice] == ["seed-alice"] + [f"h{i}" for i in range(5)]


async def test_history_is_exact_across_many_transfers(ledger: Ledger) -> None:
    # several of the blocks in which SQLite enters ids (so pages span entered and not yet entered records),
    # with failures, which take a sequence but are in no history, and a hold that is placed and later captured
    expected: dict[str, list[str]] = {"agent:alice": ["seed-alice"], "agent:bob": [], "agent:carol": []}
    for i in range(3 * STATEMENT_BLOCK + 7):
        credit = "agent:bob" if i % 3 else "agent:carol"
        if i == STATEMENT_BLOCK:
            hold = {"debit": "agent:alice", "credit": "agent:bob", "amount": 5, "currency": USD}
            await ledger.hold(id="s-hold", timeout_s=600, **hold)
            expected["agent:alice"].append("s-hold")
            expected["agent:bob"].append("s-hold")
        if i == 2 * STATEMENT_BLOCK:
            await ledger.capture("s-hold", 3)
            expected["agent:alice"].append("s-hold:capture")
            expected["agent:bob"].append("s-hold:capture")
        try:
            await ledger.transfer(
                id=f"s{i}", debit="agent:alice", credit=credit, amount=1 if i % 5 else 10_000, currency=USD
            )
        except InsufficientFunds:
            continue
        expected["agent:alice"].append(f"s{i}")
        expected[credit].append(f"s{i}")
    # linked batches longer than a block: one applied, one failed (recorded, in no history)
    leg = {"debit": "agent:alice", "credit": "agent:carol", "amount": 1, "currency": USD}
    batch = [{"id": f"b{i}", **leg} for i in range(STATEMENT_BLOCK + 5)]
    await ledger.transfer_many(batch)
    expected["agent:alice"] += [t["id"] for t in batch]
    expected["agent:carol"] += [t["id"] for t in batch]
    with pytest.raises(InsufficientFunds):
        await ledger.transfer_many([{**t, "id": f"f{t['id']}", "amount": 10_000} for t in batch])
    for owner, ids in expected.items():
        seen: list[str] = []
        after = 0
        while page := await ledger.history(owner, USD, after=after, limit=10):
            seen += [t.id for t in page]
            after = page[-1].sequence
        assert seen == ids
    assert [t.id for t in await ledger.history("agent:bob", USD, limit=1000)] == expected["agent:bob"]


STATEMENT_RECORDS = 4 * STATEMENT_BLOCK - 10  # over 200 records for alice and bob: several anchors of SQLite's


async def test_history_pages_exactly_from_every_offset(ledger: Ledger) -> None:
    # long statements in two currencies, interleaved with failed transfers (a sequence, in no statement), holds
    # left pending, voided and captured, and linked batches moving both ways between the same two accounts; every
    # page, from every cursor, is the applied records touching the account after it, oldest first
    await ledger.open_account("system:treasury", "EUR", allow_negative=True)
    for owner in ("agent:alice", "agent:bob"):
        await ledger.open_account(owner, "EUR")
    seed = {"debit": "system:treasury", "credit": "agent:alice", "amount": 10**6, "currency": "EUR"}
    recorded: list[Transfer] = [await ledger.transfer(id="seed-eur", **seed)]
    hold = {"debit": "agent:alice", "credit": "agent:bob", "amount": 1, "currency": USD}
    for i in range(STATEMENT_RECORDS):
        if i % 9 == 0:  # the same two accounts on both sides of one batch
            both = {"amount": 1, "currency": USD}
            recorded += await ledger.transfer_many(
                [
                    {"id": f"ab{i}", "debit": "agent:alice", "credit": "agent:bob", **both},
                    {"id": f"ba{i}", "debit": "agent:bob", "credit": "agent:alice", **both},
                ]
            )
        elif i % 11 == 0:
            recorded.append(await ledger.hold(id=f"h{i}", timeout_s=600, **hold))
            if i % 3 == 0:
                recorded.append(await ledger.void(f"h{i}"))
            elif i % 3 == 1:
                recorded.append(await ledger.capture(f"h{i}", 1))
        elif i % 13 == 0:
            with pytest.raises(InsufficientFunds):
                await ledger.transfer(id=f"f{i}", debit="agent:carol", credit="agent:bob", amount=10**6, currency=USD)
        elif i % 4 == 0:
            recorded.append(
                await ledger.transfer(id=f"e{i}", debit="agent:alice", credit="agent:bob", amount=1, currency="EUR")
            )
        else:
            credit = "agent:carol" if i % 7 == 0 else "agent:bob"
            recorded.append(
                await ledger.transfer(id=f"u{i}", debit="agent:alice", credit=credit, amount=1, currency=USD)
            )
    statements: dict[tuple[str, str], list[int]] = {}
    for t in await ledger.history("agent:alice", USD, limit=1):  # the seed, before this test's records
        statements[("agent:alice", USD)] = [t.sequence]
    for t in recorded:
        if t.ok:
            for owner in (t.debit, t.credit):
                statements.setdefault((owner, t.currency), []).append(t.sequence)
    assert len(statements[("agent:alice", USD)]) > 200
    assert len(statements[("agent:bob", USD)]) > 200
    last = max(t.sequence for t in recorded)
    for (owner, currency), sequences in statements.items():
        # alice's from every offset of the ledger, listed or not; the others' from each of their own
        cursors = list(range(last + 2)) if (owner, currency) == ("agent:alice", USD) else [0, *sequences]
        for after in cursors:
            page = await ledger.history(owner, currency, after=after, limit=3)
            assert [t.sequence for t in page] == [s for s in sequences if s > after][:3], (owner, currency, after)
        for limit in (1, STATEMENT_BLOCK - 1, STATEMENT_BLOCK, STATEMENT_BLOCK + 1, 1000):
            seen: list[int] = []
            after = 0
            while page := await ledger.history(owner, currency, after=after, limit=limit):
                assert len(page) <= limit
                seen += [t.sequence for t in page]
                after = page[-1].sequence
            assert seen == sequences, (owner, currency, limit)
    by_id = {t.id: t for t in await ledger.history("agent:bob", USD, limit=1000)}
    assert {by_id[f"h{i}"].state for i in range(0, STATEMENT_RECORDS, 11) if i % 9} == {"pending", "voided", "posted"}


async def test_tenants_have_separate_ledgers(kernel: sos_kernel.Kernel, ledger: Ledger) -> None:
    other = kernel.tenant("acme").ledger
    with pytest.raises(WalletNotFound):
        await other.balance("agent:alice", USD)
    await other.open_account("agent:alice", USD)
    assert (await other.balance("agent:alice", USD)).posted == 0
    # the same transfer id is independent per tenant
    with pytest.raises(WalletNotFound):
        await other.transfer(id="seed-alice", debit="system:treasury", credit="agent:alice", amount=1, currency=USD)
    await other.check()


def usage(tenant: str = "default", **kw: Any) -> dict[str, Any]:
    base = {
        "schema_version": "1",
        "id": "0b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e",
        "tenant": tenant,
        "provider": "anthropic",
        "model": "m1",
        "occurred_at": "2026-11-01T10:00:00Z",
        "input_tokens": 1500,
        "output_tokens": 500,
    }
    return {**base, **kw}


async def test_usage_is_idempotent_priced_and_settled_once(ledger: Ledger) -> None:
    await ledger.set_price("anthropic", "m1", input_per_mtok_micros=3_000_000, output_per_mtok_micros=15_000_000)
    await ledger.open_account("tenant:default", USD)
    await ledger.transfer(id="fund", debit="system:treasury", credit="tenant:default", amount=100_000, currency=USD)
    stored = await ledger.record_usage(usage(), settle=True)
    # 1500 * 3 + 500 * 15 = 12000 micros
    assert stored.cost_micros == 12_000
    assert stored.received_at is not None
    again = await ledger.record_usage(usage(), settle=True)
    assert again.received_at == stored.received_at
    assert (await ledger.balance("tenant:default", USD)).posted == 100_000 - 12_000
    assert (await ledger.balance("system:usage", USD)).posted == 12_000
    with pytest.raises(IdempotencyConflict):
        await ledger.record_usage(usage(input_tokens=1))
    with pytest.raises(Forbidden):
        await ledger.record_usage(usage(tenant="other", id="1b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e"))
    with pytest.raises(SchemaViolation):
        await ledger.record_usage(usage(input_tokens=-1, id="2b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e"))
    assert len(await ledger.usage()) == 1


async def test_usage_listing_and_aggregation(ledger: Ledger) -> None:
    day = datetime(2026, 11, 1, tzinfo=UTC)
    events = [
        UsageEvent(
            tenant="default",
            provider="openai",
            model="a",
            occurred_at=day + timedelta(hours=h),
            input_tokens=10 * h,
            output_tokens=1,
            cost_micros=100 * h,
        )
        for h in range(1, 5)
    ] + [
        UsageEvent(
            tenant="default",
            provider="google",
            model="b",
            occurred_at=day + timedelta(days=1),
            input_tokens=5,
            cost_micros=7,
        )
    ]
    for e in events:
        await ledger.record_usage(e)
    assert len(await ledger.usage(provider="openai")) == 4
    assert len(await ledger.usage(since=day + timedelta(hours=3))) == 3
    rows = await ledger.usage_summary(group_by=["provider"])
    assert [(r.key, r.events, r.input_tokens, r.cost_micros) for r in rows] == [
        ({"provider": "google"}, 1, 5, 7),
        ({"provider": "openai"}, 4, 100, 1000),
    ]
    daily = await ledger.usage_summary(group_by=["model"], window="day")
    assert [(r.key["window"], r.events) for r in daily] == [("2026-11-01T00:00:00Z", 4), ("2026-11-02T00:00:00Z", 1)]
    with pytest.raises(InvalidArgument):
        await ledger.usage_summary(group_by=["colour"])


async def test_concurrent_transfers_never_overdraw(ledger: Ledger) -> None:
    results: list[bool] = []

    async def spend(i: int) -> None:
        try:
            await ledger.transfer(id=f"c{i}", debit="agent:alice", credit="agent:bob", amount=100, currency=USD)
            results.append(True)
        except InsufficientFunds:
            results.append(False)

    async with anyio.create_task_group() as tg:
        for i in range(25):
            tg.start_soon(spend, i)
    assert results.count(True) == 10
    assert await bal(ledger, "agent:alice") == (0, 0, 0)


async def test_a_settlement_prepared_before_its_hold_existed_stays_no_hold(kernel: sos_kernel.Kernel) -> None:
    """The race a capture of another party's hold can lose: it read "no hold", the hold was placed, then it was
    submitted. It must fail as "no hold" (never capture), and its retry must get that first outcome back."""
    from sos_kernel.ledger.models import TransferRequest

    led = kernel.ledger
    await led.open_account("system:treasury", USD, allow_negative=True)
    for owner in ("agent:alice", "agent:bob"):
        await led.open_account(owner, USD)
    await led.transfer(id="seed", debit="system:treasury", credit="agent:alice", amount=1_000, currency=USD)
    await led.hold(id="late", debit="agent:alice", credit="agent:bob", amount=300, currency=USD, timeout_s=60)
    stale = TransferRequest("c1", "post_pending", "", "", "", 0, "late")  # what capture() builds when no hold is seen
    with pytest.raises(SettlementRejected):
        await led._submit([stale])
    with pytest.raises(SettlementRejected):
        await led.capture("late", id="c1")  # a retry: the first outcome, not SOS-4009
    b = await led.balance("agent:alice", USD)
    assert (b.posted, b.pending) == (1_000, 300)
    assert (await led.capture("late")).amount == 300
    await led.check()


@pytest.mark.parametrize(
    "extra",
    [{}, {"code": 7}, {"reason": "lunch"}, {"metadata": {"k": "v", "n": 3}}],
    ids=["bare", "code", "reason", "metadata"],
)
async def test_a_transfer_is_recorded_as_it_was_returned(ledger: Ledger, extra: dict[str, Any]) -> None:
    # what get_transfer, history and a replay read back is exactly what transfer returned, every field
    t = await ledger.transfer(id="t-rec", debit="agent:alice", credit="agent:bob", amount=3, currency=USD, **extra)
    assert (t.code, t.reason, t.metadata) == (extra.get("code", 0), extra.get("reason", ""), extra.get("metadata", {}))
    assert await ledger.get_transfer("t-rec") == t
    assert [h for h in await ledger.history("agent:bob", USD) if h.id == "t-rec"] == [t]
    again = await ledger.transfer(id="t-rec", debit="agent:alice", credit="agent:bob", amount=3, currency=USD, **extra)
    assert again.replayed
    assert dataclasses.replace(again, replayed=False) == t


async def test_records_of_every_length_and_any_text_are_chained_alike(ledger: Ledger) -> None:
    # the fixture's check() recomputes every digest: on Redis they were computed by the ledger script, so its
    # SHA-256 and encoding must agree with the kernel's for every padding case (64 lengths) and for UTF-8 text
    for n in range(20, 84):
        await ledger.transfer(
            id=f"len-{n}", debit="agent:alice", credit="agent:bob", amount=1, currency=USD, reason="é" * (n // 2)
        )
    await ledger.transfer(
        id="meta", debit="agent:alice", credit="agent:bob", amount=1, currency=USD, metadata={"z": "ü", "a": None}
    )
    await ledger.hold(id="h", debit="agent:alice", credit="agent:bob", amount=5, currency=USD, timeout_s=60)
    await ledger.capture("h", 2)
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(id="too-much", debit="agent:carol", credit="agent:bob", amount=1, currency=USD)
    await ledger.check()
