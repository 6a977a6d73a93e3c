"""Ledger ids an agent chooses live in its own namespace: no other agent can squat them or learn they exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import NotFound, SettlementRejected, SOSError
from sos_kernel.ledger.usage import recorded_usage_id

from ..conftest import Connect

pytestmark = pytest.mark.anyio

USD = "USD"
SKILL = {
    "schema_version": "1",
    "id": "skill-c",
    "name": "C",
    "version": "1.0.0",
    "author_agent": "agent:carol",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "c.py"},
    "commerce": {"price_per_call_micros": 10, "currency": USD, "marketplace_listed": True},
}


@dataclass
class Tenant:
    kernel: sos_kernel.Kernel
    alice: Any
    bob: Any
    admin: Any


@pytest.fixture
async def acme(kernel: sos_kernel.Kernel, connect: Connect) -> Tenant:
    _, admin_token = await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    for name in ("alice", "bob", "carol"):
        await view.ledger.open_account(f"agent:{name}", USD)
        await view.ledger.transfer(
            id=f"seed-{name}", debit="system:treasury", credit=f"agent:{name}", amount=100, currency=USD
        )
    await view.skills.publish(SKILL)
    tokens = view.tokens
    alice = await connect((await tokens.issue(agent="agent:alice")).secret)
    bob = await connect((await tokens.issue(agent="agent:bob")).secret)
    return Tenant(kernel, alice, bob, await connect(admin_token))


async def _refusal(call: Any) -> tuple[str, str, Any]:
    with pytest.raises(SOSError) as info:
        await call
    return info.value.code, info.value.message, info.value.details


async def test_an_agent_cannot_squat_another_agents_ids(acme: Tenant) -> None:
    pay = {"credit": "agent:carol", "amount": 1, "currency": USD}
    squat = await acme.bob.ledger.transfer(id="t1", debit="agent:bob", **pay)
    await acme.bob.ledger.hold(id="h1", debit="agent:bob", timeout_s=60, **pay)
    await acme.bob.ledger.transfer(id="usage:evt-1", debit="agent:bob", **pay)
    mine = await acme.alice.ledger.transfer(id="t1", debit="agent:alice", **pay)
    held = await acme.alice.ledger.hold(id="h1", debit="agent:alice", timeout_s=60, **pay)
    assert (squat.id, mine.id, held.id) == ("bob/t1", "alice/t1", "alice/h1")
    again = await acme.alice.ledger.transfer(id="t1", debit="agent:alice", **pay)
    assert again.replayed
    assert again.id == "alice/t1"
    assert (await acme.alice.ledger.capture("h1")).ok
    assert (await acme.alice.ledger.get_transfer("t1")).debit == "agent:alice"
    assert (await acme.alice.ledger.get_transfer("alice/t1")).debit == "agent:alice"
    assert (await acme.bob.ledger.get_transfer("t1")).debit == "agent:bob"
    # an id in the agent's own namespace stays one id, whether given short or whole
    assert (await acme.alice.ledger.transfer(id="alice/t1", debit="agent:alice", **pay)).replayed
    # the kernel's own ids (usage settlement) are out of an agent's reach
    assert (await acme.admin.ledger.transfer(id="usage:evt-1", debit="agent:alice", **pay)).id == "usage:evt-1"


async def test_a_non_party_learns_nothing_from_an_id(acme: Tenant) -> None:
    pay = {"credit": "agent:carol", "amount": 1, "currency": USD}
    await acme.alice.ledger.transfer(id="secret", debit="agent:alice", **pay)
    await acme.alice.ledger.hold(id="hold", debit="agent:alice", timeout_s=60, **pay)
    for existing, missing in (("alice/secret", "alice/nothing"), ("alice/hold", "alice/none")):
        code, message, details = await _refusal(acme.bob.ledger.get_transfer(existing))
        assert (code, message, details) == ("SOS-4040", f"no transfer {existing}", {"id": existing})
        assert await _refusal(acme.bob.ledger.get_transfer(missing)) == (
            "SOS-4040",
            f"no transfer {missing}",
            {"id": missing},
        )
        for settle in (acme.bob.ledger.capture, acme.bob.ledger.void):
            for asked in (existing, missing):
                assert await _refusal(settle(asked)) == ("SOS-7020", f"no hold {asked}", {"hold_id": asked})
    with pytest.raises(NotFound):
        await acme.bob.ledger.get_transfer("seed-alice")  # the admin's ids too, where bob is no party
    assert (await acme.alice.ledger.get_transfer("seed-alice")).credit == "agent:alice"
    assert (await acme.kernel.tenant("acme").ledger.get_transfer("alice/hold")).state == "pending"
    with pytest.raises(SettlementRejected):
        await acme.bob.ledger.capture("hold")


async def test_invocation_ids_are_the_callers_own(acme: Tenant) -> None:
    first = await acme.bob.skills.record_invocation("skill-c", caller="agent:bob", tenant="acme", invocation_id="i1")
    mine = await acme.alice.skills.record_invocation("skill-c", caller="agent:alice", tenant="acme", invocation_id="i1")
    assert (first.replayed, mine.replayed) == (False, False)
    assert [t.id for t in mine.transfers] == ["skill:alice/i1:author"]
    assert (await acme.kernel.tenant("acme").ledger.balance("agent:alice", USD)).posted == 90
    again = await acme.alice.skills.record_invocation(
        "skill-c", caller="agent:alice", tenant="acme", invocation_id="i1"
    )
    assert again.replayed
    assert (await acme.kernel.tenant("acme").ledger.balance("agent:alice", USD)).posted == 90
    await acme.kernel.tenant("acme").ledger.check()


async def test_no_agent_can_record_the_id_that_settles_a_hold(acme: Tenant) -> None:
    # An escrow: alice's hold for bob, released by the admin. Were alice able to record "<hold>:capture" first,
    # the admin's capture would conflict with it and the release would fail forever.
    hold = await acme.alice.ledger.hold(
        id="job", debit="agent:alice", credit="agent:bob", amount=10, currency=USD, timeout_s=60
    )
    for id in (f"{hold.id}:capture", "job:capture", "job:void", f"{hold.id}:void"):
        code, message, _ = await _refusal(
            acme.alice.ledger.transfer(id=id, debit="agent:alice", credit="agent:bob", amount=1, currency=USD)
        )
        assert code == "SOS-4005", id
        assert "reserves" in message
    captured = await acme.admin.ledger.capture(hold.id)
    assert captured.id == f"{hold.id}:capture"
    assert (await acme.kernel.tenant("acme").ledger.balance("agent:bob", USD)).posted == 110


async def test_a_str_that_only_claims_to_be_the_callers_is_refused(kernel: sos_kernel.Kernel) -> None:
    # In-process a caller can pass a str subclass that compares equal to its own agent once and reads otherwise
    # (JSON carries no such thing, so this is an in-process session's test, on every backend).
    class Shifty(str):
        seen = 0

        def __eq__(self, other: object) -> bool:
            Shifty.seen += 1
            return Shifty.seen == 1 or str.__eq__(self, other)

        __hash__ = str.__hash__

    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    for name in ("alice", "bob"):
        await view.ledger.open_account(f"agent:{name}", USD)
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    await view.ledger.transfer(id="seed", debit="system:treasury", credit="agent:bob", amount=100, currency=USD)
    alice = await kernel.session((await view.tokens.issue(agent="agent:alice")).secret)
    for debit in (Shifty("agent:bob"), Shifty("system:treasury")):
        Shifty.seen = 0
        with pytest.raises(SOSError, match="SOS-5004"):
            await alice.ledger.transfer(id="x", debit=debit, credit="agent:alice", amount=50, currency=USD)
    Shifty.seen = 0
    with pytest.raises(SOSError, match="SOS-5004"):
        await alice.bus.send(Shifty("agent:bob"), "agent:alice", "from bob?")
    assert (await view.ledger.balance("agent:bob", USD)).posted == 100
    assert (await view.ledger.balance("agent:alice", USD)).posted == 0


async def test_a_recorder_records_usage_in_its_own_id_space_and_conflicts_only_with_itself(acme: Tenant) -> None:
    event = {
        "schema_version": "1",
        "id": "0b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e",
        "tenant": "acme",
        "provider": "secret-provider",
        "model": "secret-model",
        "input_tokens": 1234,
        "occurred_at": "2026-11-01T00:00:00Z",
    }
    alices = await acme.alice.ledger.record_usage(event)
    assert alices.id == recorded_usage_id("acme", "agent:alice", event["id"])
    guess = {**event, "provider": "p", "model": "m", "input_tokens": 1}
    bobs = await acme.bob.ledger.record_usage(guess)  # the same submitted id is bob's own: no conflict, no leak
    assert bobs.id not in (alices.id, event["id"])
    code, message, details = await _refusal(acme.alice.ledger.record_usage(guess))
    assert (code, details) == ("SOS-4009", {"id": alices.id})
    assert message == f"usage event {alices.id} was recorded with different content"
    stored = {e.id: e.provider for e in await acme.admin.ledger.usage()}
    assert stored == {alices.id: "secret-provider", bobs.id: "p"}  # nothing recorded twice
