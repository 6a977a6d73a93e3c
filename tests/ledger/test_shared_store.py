"""Two kernels on one store (one SQLite file, one Redis) take turns writing one ledger: each must act on what the
other committed, at once, as if it had written it itself — balances, holds, recorded ids and sequences. On SQLite
each kernel is its own connection and keeps what it knows between transactions, so this is where a stale memory
would show."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.backends.sqlite_ledger import STATEMENT_BLOCK
from sos_kernel.errors import IdempotencyConflict, InsufficientFunds, InvalidArgument

from ..conftest import requires

pytestmark = pytest.mark.anyio

USD = "USD"
Pair = tuple[sos_kernel.Kernel, sos_kernel.Kernel]


@pytest.fixture
async def pair(kernel_url: str, implements: Implements) -> AsyncIterator[Pair]:
    requires(implements, multi_process=True)
    async with sos_kernel.open(kernel_url) as a, sos_kernel.open(kernel_url) as b:
        led = a.ledger
        await led.open_account("system:mint", USD, allow_negative=True)
        for owner in ("agent:alice", "agent:bob"):
            await led.open_account(owner, USD)
        await led.transfer(id="fund", debit="system:mint", credit="agent:alice", amount=100, currency=USD)
        yield a, b
        await a.ledger.check()
        await b.ledger.check()


async def test_a_debit_by_one_kernel_limits_the_other_at_once(pair: Pair) -> None:
    a, b = pair
    leg = {"debit": "agent:alice", "credit": "agent:bob", "currency": USD}
    await a.ledger.transfer(id="a0", amount=10, **leg)  # a has written alice's balance of 90 (and may keep it)
    await b.ledger.transfer(id="b1", amount=60, **leg)
    with pytest.raises(InsufficientFunds):
        await a.ledger.transfer(id="a1", amount=40, **leg)
    t = await a.ledger.transfer(id="a2", amount=30, **leg)
    assert t.sequence == 5  # fund, a0, b1, a1 (failed), a2: one sequence, whoever wrote
    for kernel in pair:
        assert (await kernel.ledger.balance("agent:alice", USD)).posted == 0
        assert (await kernel.ledger.balance("agent:bob", USD)).posted == 100


async def test_an_id_recorded_by_one_kernel_is_a_replay_for_the_other(pair: Pair) -> None:
    a, b = pair
    leg = {"debit": "agent:alice", "credit": "agent:bob", "currency": USD}
    # past a block, so some of b's ids are entered (SQLite's id table) and the last ones are not yet
    for i in range(STATEMENT_BLOCK + 3):
        await b.ledger.transfer(id=f"b{i}", amount=1, **leg)
        if i == 2:
            await a.ledger.transfer(id="a-between", amount=1, **leg)  # a keeps a state from before the block
    for tid in ("b0", f"b{STATEMENT_BLOCK - 2}", f"b{STATEMENT_BLOCK + 2}"):
        again = await a.ledger.transfer(id=tid, amount=1, **leg)
        assert again.replayed
        with pytest.raises(IdempotencyConflict):
            await a.ledger.transfer(id=tid, amount=2, **leg)
    assert (await a.ledger.balance("agent:bob", USD)).posted == STATEMENT_BLOCK + 4
    # and the other way round: a's id, recorded after b's last write, is a replay for b
    await a.ledger.transfer(id="a-last", amount=1, **leg)
    assert (await b.ledger.transfer(id="a-last", amount=1, **leg)).replayed
    assert (await b.ledger.get_transfer("a-between")).amount == 1


async def test_a_hold_placed_by_one_kernel_counts_and_resolves_on_the_other(pair: Pair) -> None:
    a, b = pair
    await a.ledger.transfer(id="warm", debit="agent:alice", credit="agent:bob", amount=1, currency=USD)
    await b.ledger.hold(id="h", debit="agent:alice", credit="agent:bob", amount=90, currency=USD, timeout_s=600)
    with pytest.raises(InsufficientFunds):
        await a.ledger.transfer(id="over", debit="agent:alice", credit="agent:bob", amount=10, currency=USD)
    captured = await a.ledger.capture("h", 50)
    assert captured.amount == 50
    alice = await b.ledger.balance("agent:alice", USD)
    assert (alice.posted, alice.pending, alice.available) == (49, 0, 49)
    with pytest.raises(Exception, match="already posted"):
        await b.ledger.void("h")


async def test_a_refused_batch_on_one_kernel_moves_nothing_for_the_other(pair: Pair) -> None:
    a, b = pair
    leg = {"debit": "agent:alice", "credit": "agent:bob", "currency": USD}
    with pytest.raises(InvalidArgument):
        await b.ledger.transfer_many([{"id": "x1", "amount": 5, **leg}, {"id": "x1", "amount": 5, **leg}])
    with pytest.raises(InsufficientFunds):
        await b.ledger.transfer_many([{"id": "y1", "amount": 60, **leg}, {"id": "y2", "amount": 60, **leg}])
    assert (await a.ledger.balance("agent:alice", USD)).available == 100
    with pytest.raises(InsufficientFunds):  # recorded as failed by b: fails the same way on a
        await a.ledger.transfer_many([{"id": "y1", "amount": 60, **leg}, {"id": "y2", "amount": 60, **leg}])
    await a.ledger.transfer(id="x1", amount=5, **leg)
    assert (await b.ledger.balance("agent:bob", USD)).posted == 5
