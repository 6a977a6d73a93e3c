"""The rate table and transmute: rates set by ``ledger:admin``, used by everyone else, on every backend and remotely."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

import sos_kernel
from sos_kernel.errors import (
    Forbidden,
    IdempotencyConflict,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    WalletNotFound,
)
from sos_kernel.ledger import RATE_TERM_MAX, RATES_PER_PAIR_MAX, Ledger

from ..conftest import Api, Connect

pytestmark = pytest.mark.anyio

USD, MIND = "USD", "MIND"
NOW = datetime.now(UTC)


@pytest.fixture
async def ledger(api: Api) -> AsyncIterator[Ledger]:
    led = api.ledger
    await led.open_account("system:treasury", USD, allow_negative=True)
    for currency in (USD, MIND):
        await led.open_account("agent:alice", currency)
    await led.transfer(id="seed", debit="system:treasury", credit="agent:alice", amount=1_000, currency=USD)
    yield led
    await led.check()


async def test_set_rate_opens_the_exchange_and_rate_reads_the_one_in_force(ledger: Ledger) -> None:
    assert await ledger.rate(USD, MIND) is None
    always = await ledger.set_rate(USD, MIND, rate_num=2, rate_den=1)
    later = await ledger.set_rate(USD, MIND, rate_num=3, rate_den=1, valid_from=NOW + timedelta(days=1))
    window = await ledger.set_rate(
        USD, MIND, rate_num=5, rate_den=2, valid_from=NOW - timedelta(days=2), valid_until=NOW - timedelta(days=1)
    )
    assert await ledger.rate(USD, MIND) == always
    assert await ledger.rate(USD, MIND, at=NOW + timedelta(days=2)) == later
    assert await ledger.rate(USD, MIND, at=NOW - timedelta(days=1, hours=12)) == window
    assert await ledger.rate(MIND, USD) is None
    for currency in (USD, MIND):
        exchange = await ledger.balance("system:exchange", currency)
        assert (exchange.allow_negative, exchange.posted) == (True, 0)
    replaced = await ledger.set_rate(USD, MIND, rate_num=7, rate_den=1)
    assert await ledger.rate(USD, MIND) == replaced


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rate_num": 0, "rate_den": 1}, InvalidArgument),
        ({"rate_num": RATE_TERM_MAX + 1, "rate_den": 1}, InvalidArgument),
        ({"rate_num": True, "rate_den": 1}, InvalidArgument),
        ({"rate_num": 2, "rate_den": 1, "exchange": "agent:alice"}, InvalidArgument),
        ({"rate_num": 2, "rate_den": 1, "valid_from": NOW, "valid_until": NOW}, InvalidArgument),
        ({"rate_num": 2, "rate_den": 1, "valid_from": datetime(2026, 1, 1)}, InvalidArgument),
    ],
)
async def test_bad_rates_write_nothing(ledger: Ledger, kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        await ledger.set_rate(USD, MIND, **kwargs)  # type: ignore[arg-type]
    assert await ledger.rate(USD, MIND) is None
    with pytest.raises(WalletNotFound):
        await ledger.balance("system:exchange", USD)


async def test_a_pair_holds_a_bounded_number_of_entries(ledger: Ledger) -> None:
    for day in range(RATES_PER_PAIR_MAX):
        await ledger.set_rate(USD, MIND, rate_num=2, rate_den=1, valid_from=NOW + timedelta(days=day))
    with pytest.raises(LimitExceeded):
        await ledger.set_rate(USD, MIND, rate_num=2, rate_den=1)
    await ledger.set_rate(USD, MIND, rate_num=9, rate_den=1, valid_from=NOW)  # replacing one is fine


async def test_transmute_uses_the_rate_in_force_and_states_it(ledger: Ledger) -> None:
    await ledger.set_rate(USD, MIND, rate_num=10, rate_den=3)
    result = await ledger.transmute(id="x1", owner="agent:alice", amount=100, from_currency=USD, to_currency=MIND)
    assert (result.converted, result.remainder_num, result.rate_num, result.rate_den) == (333, 1, 10, 3)
    assert result.exchange == "system:exchange"
    assert all(leg.metadata == {"rate_num": 10, "rate_den": 3} for leg in result.legs)
    await ledger.set_rate(USD, MIND, rate_num=1, rate_den=1)  # a retry after the rate changed still replays
    again = await ledger.transmute(id="x1", owner="agent:alice", amount=100, from_currency=USD, to_currency=MIND)
    assert all(leg.replayed for leg in again.legs)
    assert again.converted == 333
    assert (await ledger.balance("agent:alice", MIND)).posted == 333


async def test_transmute_without_a_rate_or_an_exchange_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(NotFound) as info:
        await ledger.transmute(id="x1", owner="agent:alice", amount=100, from_currency=USD, to_currency=MIND)
    assert "set_rate" in info.value.message
    with pytest.raises(WalletNotFound):  # explicit terms, but no exchange accounts: transmute opens none
        await ledger.transmute(
            id="x2", owner="agent:alice", amount=100, from_currency=USD, to_currency=MIND, rate_num=1, rate_den=1
        )
    with pytest.raises(InvalidArgument):
        await ledger.transmute(
            id="x3", owner="agent:alice", amount=100, from_currency=USD, to_currency=MIND, rate_num=2
        )
    await ledger.open_account("system:plain", USD)
    await ledger.open_account("system:plain", MIND)
    with pytest.raises(InvalidArgument):  # an exchange must be allowed to go negative
        await ledger.transmute(
            id="x4",
            owner="agent:alice",
            amount=100,
            from_currency=USD,
            to_currency=MIND,
            rate_num=1,
            rate_den=1,
            exchange="system:plain",
        )
    for id in ("x1", "x2", "x3", "x4"):
        for leg in ("in", "out"):
            with pytest.raises(NotFound):
                await ledger.get_transfer(f"{id}:{leg}")
    with pytest.raises(WalletNotFound):
        await ledger.balance("system:exchange", USD)
    assert (await ledger.balance("agent:alice", USD)).posted == 1_000


async def test_an_agent_converts_only_at_the_admins_rate(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    _, admin_token = await kernel.tenants.create("acme", plan="scale")
    trusted = kernel.tenant("acme").ledger
    await trusted.open_account("system:treasury", USD, allow_negative=True)
    await trusted.open_account("agent:bob", USD)
    await trusted.open_account("agent:bob", MIND)
    await trusted.transfer(id="seed", debit="system:treasury", credit="agent:bob", amount=1, currency=USD)
    bob = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:bob")).secret)
    admin = await connect(admin_token)
    attack = {"owner": "agent:bob", "amount": 1, "from_currency": USD, "to_currency": MIND}
    with pytest.raises(Forbidden):  # the reported attack: 1 micro into 9e15 at a rate of the caller's choosing
        await bob.ledger.transmute(id="a1", **attack, rate_num=9 * 10**15, rate_den=1)
    with pytest.raises(Forbidden):
        await bob.ledger.transmute(id="a2", **attack, exchange="system:bobbank")
    with pytest.raises(Forbidden):
        await bob.ledger.set_rate(USD, MIND, rate_num=RATE_TERM_MAX, rate_den=1)
    with pytest.raises(NotFound):
        await bob.ledger.transmute(id="a3", **attack)
    assert await bob.ledger.rate(USD, MIND) is None
    await admin.ledger.set_rate(USD, MIND, rate_num=3, rate_den=1)
    assert (await bob.ledger.rate(USD, MIND)) == await admin.ledger.rate(USD, MIND)
    done = await bob.ledger.transmute(id="a4", **attack)
    assert (done.converted, done.rate_num, done.rate_den) == (3, 3, 1)
    assert sorted(b.owner for b in await trusted.balances() if b.allow_negative) == [
        "system:exchange",
        "system:exchange",
        "system:treasury",
    ]
    assert (await trusted.balance("agent:bob", MIND)).posted == 3
    await trusted.check()


async def test_replays_tell_true_from_1_and_5_0_from_5(ledger: Ledger) -> None:
    await ledger.open_account("agent:bob", USD)
    base = {"debit": "agent:alice", "credit": "agent:bob", "amount": 1, "currency": USD}
    await ledger.transfer(id="b1", **base, metadata={"flag": True})
    await ledger.transfer(id="n1", **base, metadata={"n": 1})
    for id, metadata in (("b1", {"flag": 1}), ("n1", {"n": True})):
        with pytest.raises(IdempotencyConflict) as info:
            await ledger.transfer(id=id, **base, metadata=metadata)
        assert info.value.details["field"] == "metadata"
    assert (await ledger.transfer(id="b1", **base, metadata={"flag": True})).replayed


def test_the_replay_comparison_is_type_exact() -> None:
    from sos_kernel.ledger.service import _first_difference

    assert _first_difference({"amount": 5.0}, {"amount": 5}) == "amount"
    assert _first_difference({"metadata": {"k": [1, True]}}, {"metadata": {"k": [1, 1]}}) == "metadata"
    assert _first_difference({"metadata": {"k": 1}}, {"metadata": {"k": 1}}) is None
