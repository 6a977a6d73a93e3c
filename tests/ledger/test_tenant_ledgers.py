"""Tenants sharing one engine keep separate ledgers: their own sequences, statements, records and holds.

Every engine keeps all tenants in the same tables or keyspace (the SQLite store, for one, keys every tenant's
records into one table by tenant number and sequence), so these run the same ids and owners in two tenants,
interleaved, on every backend.
"""

from __future__ import annotations

import anyio
import pytest

import sos_kernel
from sos_kernel.errors import InsufficientFunds, SettlementRejected
from sos_kernel.ledger import Ledger

pytestmark = pytest.mark.anyio

USD = "USD"
TENANTS = ("north", "south")


async def opened(kernel: sos_kernel.Kernel, slug: str) -> Ledger:
    ledger = kernel.tenant(slug).ledger
    await ledger.open_account("system:mint", USD, allow_negative=True)
    for owner in ("agent:alice", "agent:bob"):
        await ledger.open_account(owner, USD)
    return ledger


async def test_the_same_ids_and_owners_in_two_tenants_stay_apart(kernel: sos_kernel.Kernel) -> None:
    north, south = [await opened(kernel, slug) for slug in TENANTS]
    for i in range(6):  # interleaved, same ids, different amounts
        for scale, ledger in ((1, north), (10, south)):
            await ledger.transfer(id=f"mint-{i}", debit="system:mint", credit="agent:alice", amount=scale, currency=USD)
    await south.transfer_many(
        [
            {"id": f"pay-{j}", "debit": "agent:alice", "credit": "agent:bob", "amount": 5, "currency": USD}
            for j in (0, 1)
        ]
    )
    with pytest.raises(InsufficientFunds):  # north's alice holds 6 (south's, 50)
        await north.transfer(id="pay-0", debit="agent:alice", credit="agent:bob", amount=50, currency=USD)

    assert [t.sequence for t in await north.store.all_transfers(north.tenant, 0, 100)] == list(range(1, 8))
    assert [t.sequence for t in await south.store.all_transfers(south.tenant, 0, 100)] == list(range(1, 9))
    assert (await north.get_transfer("mint-3")).amount == 1
    assert (await south.get_transfer("mint-3")).amount == 10
    assert (await north.get_transfer("pay-0")).status == "failed"
    assert (await south.get_transfer("pay-0")).ok
    assert [t.id for t in await north.history("agent:bob", USD)] == []
    assert [t.id for t in await south.history("agent:bob", USD)] == ["pay-0", "pay-1"]
    alice = await south.history("agent:alice", USD, after=3, limit=4)
    assert [(t.id, t.sequence) for t in alice] == [("mint-3", 4), ("mint-4", 5), ("mint-5", 6), ("pay-0", 7)]
    assert (await north.balance("agent:alice", USD)).posted == 6
    assert (await south.balance("agent:alice", USD)).posted == 50
    for ledger in (north, south):
        await ledger.check()


async def test_a_hold_expires_in_its_own_tenant_only(kernel: sos_kernel.Kernel) -> None:
    north, south = [await opened(kernel, slug) for slug in TENANTS]
    for ledger in (north, south):
        await ledger.transfer(id="mint", debit="system:mint", credit="agent:alice", amount=100, currency=USD)
    await north.hold(id="h", debit="agent:alice", credit="agent:bob", amount=40, currency=USD, timeout_s=1)
    await south.hold(id="h", debit="agent:alice", credit="agent:bob", amount=30, currency=USD, timeout_s=3600)
    await anyio.sleep(1.1)
    assert (await north.balance("agent:alice", USD)).available == 100
    assert (await north.get_transfer("h")).state == "expired"
    assert (await south.get_transfer("h")).state == "pending"
    assert (await south.balance("agent:alice", USD)).available == 70
    with pytest.raises(SettlementRejected):
        await north.capture("h")
    assert (await south.capture("h", 20)).amount == 20
    assert (await south.balance("agent:alice", USD)).posted == 80
    for ledger in (north, south):
        await ledger.check()
