"""Identity plane conformance: tenants, tokens, sessions and the registry, on every backend."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import sos_kernel
from sos_kernel.contracts import AgentCard, AgentJoinedMessage, SendMessage, SendPayload
from sos_kernel.errors import (
    AgentNotFound,
    AgentOffline,
    Forbidden,
    IdempotencyConflict,
    InvalidArgument,
    InvalidToken,
    LimitExceeded,
    MissingToken,
    SchemaViolation,
    TenantInactive,
    TokenExpired,
)
from sos_kernel.identity import AgentKey
from sos_kernel.registry import sign_card

from ..conftest import Api, Connect, OpenApi

pytestmark = pytest.mark.anyio


def card(name: str, **kw: Any) -> AgentCard:
    return AgentCard(name=name, tool="sdk", type="service", role="executor", **kw)


@pytest.fixture
async def acme(kernel: sos_kernel.Kernel) -> tuple[sos_kernel.Kernel, str]:
    tenant, admin = await kernel.tenants.create("acme", plan="growth")
    assert tenant.status == "active"
    return kernel, admin


async def test_create_tenant_returns_admin_token_once_and_sets_up_channels(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    tenant, admin = await kernel.tenants.create("acme")
    assert admin.startswith("sk-acme-")
    assert len(admin) == len("sk-acme-") + 32
    assert (tenant.plan, tenant.seats_max) == ("starter", 1)
    assert "sos:channel:system:events" in tenant.channels
    events = await kernel.tenant("acme").bus.history("sos:channel:system:events")
    assert "sprouted" in events[0].payload.text  # type: ignore[attr-defined]
    with pytest.raises(IdempotencyConflict):
        await kernel.tenants.create("acme")
    with pytest.raises(InvalidArgument):
        await kernel.tenants.create("acme2", plan="platinum")
    session = await connect(admin)
    assert (session.tenant, session.agent, session.principal.admin) == ("acme", None, True)
    assert [t.slug for t in await kernel.tenants.list()] == ["acme"]


@pytest.mark.live
async def test_bad_tokens_fail_closed_with_their_codes(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    kernel, _ = acme
    with pytest.raises(MissingToken):
        await connect(None)
    with pytest.raises(MissingToken):
        await connect("")
    with pytest.raises(InvalidToken):
        await connect("not-a-token")
    with pytest.raises(InvalidToken):
        await connect("sk-acme-" + "0" * 32)
    good = await kernel.tenant("acme").tokens.issue(agent="agent:alice")
    await connect(good.secret)  # cached now: the cache must not let a variant of it through
    for variant in (good.secret.upper(), good.secret + "0", good.secret[:-1] + "g"):
        with pytest.raises(InvalidToken):
            await connect(variant)
    for variant in (good.secret + "\n", " " + good.secret, good.secret + "0" * 100_000):
        with pytest.raises(InvalidToken):  # what no HTTP header can carry, checked where the token is read
            await kernel.session(variant)
    issued = await kernel.tenant("acme").tokens.issue(agent="agent:alice", expires_in_s=1)
    assert (await connect(issued.secret)).agent == "agent:alice"
    await anyio.sleep(1.1)  # token expiry is wall-clock time
    kernel._auth.forget_token(issued.id)
    with pytest.raises(TokenExpired):
        await connect(issued.secret)


async def test_revoked_token_is_refused_at_once(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    kernel, _ = acme
    issued = await kernel.tenant("acme").tokens.issue(agent="agent:alice")
    session = await connect(issued.secret)
    await session.bus.send("agent:alice", "agent:bob", "before")
    await kernel.tenant("acme").tokens.revoke(issued.id)
    with pytest.raises(InvalidToken):
        await session.bus.send("agent:alice", "agent:bob", "after")
    with pytest.raises(InvalidToken):
        await connect(issued.secret)
    assert "secret" not in repr(issued)
    assert issued.secret not in repr(issued)


async def test_a_lookup_in_flight_during_a_revoke_does_not_keep_the_token_alive(kernel: sos_kernel.Kernel) -> None:
    """A token lookup that started before a revoke and ends after it is not cached: the revoke holds at once."""
    await kernel.tenants.create("acme", plan="growth")
    tokens = kernel.tenant("acme").tokens
    for _ in range(20):
        issued = await tokens.issue(scopes=["bus:read"])
        async with anyio.create_task_group() as tg:
            for _ in range(3):  # lookups reading before, during and after the revoke's write
                tg.start_soon(_session_or_refusal, kernel, issued.secret)
                await anyio.lowlevel.checkpoint()
            tg.start_soon(tokens.revoke, issued.id)
            for _ in range(3):
                tg.start_soon(_session_or_refusal, kernel, issued.secret)
                await anyio.lowlevel.checkpoint()
        with pytest.raises(InvalidToken):
            await kernel.session(issued.secret)


async def _session_or_refusal(kernel: sos_kernel.Kernel, token: str) -> None:
    with contextlib.suppress(InvalidToken):
        await kernel.session(token)


async def test_suspended_tenant_is_refused_and_keeps_its_data(
    acme: tuple[sos_kernel.Kernel, str], connect: Connect
) -> None:
    kernel, admin = acme
    session = await connect(admin)
    await session.bus.send("agent:alice", "agent:bob", "kept")
    await kernel.tenants.suspend("acme")
    with pytest.raises(TenantInactive) as info:
        await session.bus.history("agent:bob")
    assert info.value.code == "SOS-5006"
    with pytest.raises(TenantInactive):
        await connect(admin)
    await kernel.tenants.activate("acme")
    assert len(await (await connect(admin)).bus.history("agent:bob")) == 1


async def test_seats_are_enforced_per_plan(kernel: sos_kernel.Kernel) -> None:
    await kernel.tenants.create("solo", plan="starter")
    tokens = kernel.tenant("solo").tokens
    first = await tokens.issue(agent="agent:one")
    await tokens.issue(agent="agent:one")  # the same agent keeps its seat
    await tokens.issue(scopes=["admin"])  # admin tokens take no seat
    with pytest.raises(LimitExceeded):
        await tokens.issue(agent="agent:two")
    await tokens.revoke(first.id)
    with pytest.raises(LimitExceeded):  # agent:one still holds a live token
        await tokens.issue(agent="agent:two")
    for info in await tokens.list():
        if info.agent == "agent:one" and info.revoked_at is None:
            await tokens.revoke(info.id)
    assert (await tokens.issue(agent="agent:two")).agent == "agent:two"


async def test_session_sends_only_as_its_agent(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    kernel, _ = acme
    alice = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:alice")).secret)
    await alice.bus.send("agent:alice", "agent:bob", "hi")
    with pytest.raises(Forbidden):
        await alice.bus.send("agent:mallory", "agent:bob", "spoofed")
    spoof = SendMessage(source="agent:bob", target="agent:alice", payload=SendPayload(text="x"))
    with pytest.raises(Forbidden):
        await alice.bus.publish(spoof)
    with pytest.raises(Forbidden):
        await alice.bus.publish_many([spoof])
    assert alice.denials == 3
    assert kernel.denials["acme"] == 3
    assert len(await kernel.tenant("acme").bus.history("agent:alice")) == 0


async def test_session_reads_only_its_inbox_and_channels(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    kernel, _ = acme
    alice = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:alice")).secret)
    await kernel.tenant("acme").bus.send("agent:bob", "agent:alice", "for alice")
    assert len(await alice.bus.history("agent:alice")) == 1
    assert await alice.bus.history("sos:channel:global") == []
    with pytest.raises(Forbidden):
        await alice.bus.history("agent:bob")
    with pytest.raises(Forbidden):
        async with alice.bus.subscribe("agent:bob"):
            pass
    async with alice.bus.subscribe("agent:alice") as sub:
        d = await sub.receive(timeout_s=5)
        assert d is not None
        await d.ack()


@pytest.mark.live
async def test_scopes_limit_what_a_token_does(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    kernel, _ = acme
    reader = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:alice", scopes=["bus:read"])).secret)
    await reader.bus.history("agent:alice")
    with pytest.raises(Forbidden):
        await reader.bus.send("agent:alice", "agent:bob", "no write scope")
    with pytest.raises(Forbidden):
        await reader.registry.find()
    with pytest.raises(Forbidden):
        await reader.ledger.balance("agent:alice", "USD")


@pytest.mark.live
async def test_ledger_sessions_move_only_their_own_money(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    kernel, admin_token = acme
    admin = await connect(admin_token)
    await admin.ledger.open_account("system:treasury", "USD", allow_negative=True)
    alice = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:alice")).secret)
    await alice.ledger.open_account("agent:alice", "USD")
    await admin.ledger.open_account("agent:bob", "USD")
    with pytest.raises(Forbidden):  # minting is a system operation
        await alice.ledger.open_account("agent:alice", "MIND", allow_negative=True)
    with pytest.raises(Forbidden):
        await alice.ledger.transfer(id="m", debit="system:treasury", credit="agent:alice", amount=5, currency="USD")
    await admin.ledger.transfer(id="mint", debit="system:treasury", credit="agent:alice", amount=50, currency="USD")
    await alice.ledger.transfer(id="pay", debit="agent:alice", credit="agent:bob", amount=20, currency="USD")
    with pytest.raises(Forbidden):
        await alice.ledger.transfer(id="steal", debit="agent:bob", credit="agent:alice", amount=20, currency="USD")
    with pytest.raises(Forbidden):
        await alice.ledger.balance("agent:bob", "USD")
    assert (await alice.ledger.balance("agent:alice", "USD")).posted == 30
    with pytest.raises(Forbidden):
        await alice.ledger.check()
    await admin.ledger.check()


async def test_registry_sessions_register_only_themselves(
    acme: tuple[sos_kernel.Kernel, str], connect: Connect
) -> None:
    kernel, _ = acme
    alice = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:alice")).secret)
    await alice.registry.register(card("alice"))
    with pytest.raises(Forbidden):
        await alice.registry.register(card("bob"))
    await alice.registry.heartbeat("alice")
    with pytest.raises(Forbidden):
        await alice.registry.heartbeat("bob")
    assert [a.card.name for a in await alice.registry.find()] == ["alice"]


async def test_no_session_reaches_another_tenants_data(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    _, admin_a = await kernel.tenants.create("tenant-a", plan="scale")
    _, admin_b = await kernel.tenants.create("tenant-b", plan="scale")
    a, b = await connect(admin_a), await connect(admin_b)
    await a.bus.send("agent:x", "agent:y", "a's secret")
    await a.registry.register(card("xa"))
    await a.ledger.open_account("agent:x", "USD")
    # every read path of tenant B sees nothing of tenant A, even with admin rights in B
    assert await b.bus.history("agent:y") == []
    assert await b.registry.find() == []
    with pytest.raises(AgentNotFound):
        await b.registry.get("xa")
    assert await b.ledger.balances() == []
    with pytest.raises(Exception, match="SOS-7002"):
        await b.ledger.balance("agent:x", "USD")
    with pytest.raises(Forbidden):
        await b.ledger.record_usage(
            {
                "schema_version": "1",
                "id": "0b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e",
                "tenant": "tenant-a",
                "provider": "p",
                "model": "m",
                "occurred_at": "2026-11-01T10:00:00Z",
            }
        )


async def test_registry_status_find_and_agent_joined_once(open_api: OpenApi) -> None:
    async with open_api(registry_ttl_s=0.3) as api:
        reg = api.registry
        await reg.register(card("alice", skills=["python", "review"], squads=["core"]))
        await reg.register(card("bob", skills=["python"]))
        await reg.register(card("alice", skills=["python", "review"], squads=["core"], summary="again"))
        joined = [m for m in await api.bus.history("sos:channel:system:events") if isinstance(m, AgentJoinedMessage)]
        assert [m.payload.agent_name for m in joined] == ["alice", "bob"]
        assert joined[0].payload.tenant_id == "default"
        assert (await reg.get("alice")).card.summary == "again"
        assert [a.card.name for a in await reg.find(skill="review")] == ["alice"]
        assert [a.card.name for a in await reg.find(skill="python", squad="core")] == ["alice"]
        assert (await reg.get("agent:bob")).status == "online"
        await anyio.sleep(0.5)  # heartbeat expiry is wall-clock time
        assert (await reg.get("bob")).status == "stale"
        await reg.heartbeat("bob")
        assert (await reg.get("bob")).status == "online"
        assert [a.card.name for a in await reg.find(status="online")] == ["bob"]
        await anyio.sleep(1.0)
        assert (await reg.get("alice")).status == "offline"
        with pytest.raises(AgentOffline):
            await api.bus.wake("agent:bob", "agent:alice", "wake up")
        with pytest.raises(AgentNotFound):
            await api.bus.wake("agent:bob", "agent:nobody", "wake up")
        await reg.heartbeat("alice")
        await api.bus.wake("agent:bob", "agent:alice", "wake up")
        await reg.deregister("bob")
        with pytest.raises(AgentNotFound):
            await reg.get("bob")
        with pytest.raises(AgentNotFound):
            await reg.heartbeat("bob")
        with pytest.raises(SchemaViolation):
            await reg.register({"name": "x", "tool": "sdk"})


async def test_signed_cards_verify_with_the_public_key(api: Api) -> None:
    key, other = AgentKey.generate(), AgentKey.generate()
    c = card("signer")
    entry = await api.registry.register(
        c, public_key=key.public, signature=sign_card(c, key), endpoints=[{"url": "https://signer.example/a2a"}]
    )
    assert entry.public_key == key.public
    with pytest.raises(Forbidden):
        await api.registry.register(card("forged"), public_key=key.public, signature=sign_card(c, other))
    a2a = entry.to_a2a()
    assert a2a["name"] == "signer"


async def test_a2a_opt_in_is_stored_with_the_card_and_a_registration_replaces_it(
    acme: tuple[sos_kernel.Kernel, str], connect: Connect
) -> None:
    kernel, _ = acme
    alice = await connect((await kernel.tenant("acme").tokens.issue(agent="agent:alice")).secret)
    assert (await alice.registry.register(card("alice"))).a2a is False
    assert (await alice.registry.register(card("alice"), a2a=True)).a2a is True
    assert (await alice.registry.get("alice")).a2a is True
    assert [a.a2a for a in await alice.registry.find()] == [True]
    assert (await alice.registry.heartbeat("alice")).a2a is True  # a heartbeat keeps it
    assert (await alice.registry.register(card("alice"))).a2a is False  # a registration is whole: off again
    assert (await kernel.tenant("acme").registry.get("alice")).a2a is False
    with pytest.raises(InvalidArgument):
        await alice.registry.register(card("alice"), a2a="yes")  # type: ignore[arg-type]
    assert (await alice.registry.get("alice")).a2a is False


async def test_the_kernels_own_agent_is_reserved(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    """No token is issued for ``agent:kernel`` (the source of the kernel's own messages) and no registry card takes
    its name, whoever asks: the tenant's admin in-process or over HTTP, or the trusted handle; nothing is written."""
    from sos_kernel.contracts import KERNEL_AGENT

    kernel, admin = acme
    session = await connect(admin)
    issuers = [kernel.tenant("acme").tokens]
    if hasattr(session, "tokens"):  # the remote client issues through POST /v1/tokens
        issuers.append(session.tokens)
    before = len(await kernel.tenant("acme").tokens.list())
    for tokens in issuers:
        with pytest.raises(InvalidArgument) as refused:
            await tokens.issue(agent=KERNEL_AGENT)
        assert refused.value.code == "SOS-4005"
        assert "reserved" in refused.value.message
        assert refused.value.details == {"agent": KERNEL_AGENT}
    assert len(await kernel.tenant("acme").tokens.list()) == before
    for registry in (session.registry, kernel.tenant("acme").registry):
        with pytest.raises(InvalidArgument) as refused:
            await registry.register(card("kernel"))
        assert "reserved" in refused.value.message
    assert await session.registry.find() == []
    assert (await kernel.tenant("acme").tokens.issue(agent="agent:kernels")).agent == "agent:kernels"


async def test_no_session_speaks_as_the_kernel(acme: tuple[sos_kernel.Kernel, str], connect: Connect) -> None:
    """Whatever its scopes, no session sends a message, or acts in a record, as ``agent:kernel``: the tenant's admin
    (which may otherwise speak as any agent) is refused SOS-4005 by every operation naming who speaks, nothing is
    written; the trusted in-process handle still speaks as the kernel."""
    from sos_kernel.contracts import KERNEL_AGENT

    kernel, admin = acme
    trusted = kernel.tenant("acme")
    session = await connect(admin)
    events = "sos:channel:system:events"
    before = [m.message_id for m in await trusted.bus.history(events)]
    forged = SendMessage(source=KERNEL_AGENT, target=events, payload=SendPayload(text="task_done"))
    asked = await session.bus.send("agent:alice", "agent:bob", "hi")  # an admin speaks as any other agent
    to = (await trusted.bus.history("agent:bob"))[-1]
    assert to.message_id == asked.message_id
    attempts: list[Any] = [
        lambda: session.bus.publish(forged),
        lambda: session.bus.publish(forged.model_dump(mode="json", exclude_none=True)),
        lambda: session.bus.publish_many([forged]),
        lambda: session.bus.send(KERNEL_AGENT, events, "task_done"),
        lambda: session.bus.announce(KERNEL_AGENT, "up"),
        lambda: session.bus.wake(KERNEL_AGENT, "agent:bob", "wake"),
        lambda: session.bus.ask(KERNEL_AGENT, "agent:bob", "?", timeout_s=0.5),
        lambda: session.bus.reply(to, "done", source=KERNEL_AGENT),
        lambda: session.registry.heartbeat("kernel"),
        lambda: session.tasks.create("t", reviewers=["agent:rev"], created_by=KERNEL_AGENT),
        lambda: session.engine.chat([{"role": "user", "content": "hi"}], agent=KERNEL_AGENT),
        lambda: session.skills.record_invocation("s", caller=KERNEL_AGENT, tenant="acme", invocation_id="i"),
        lambda: session.skills.verify("s", "1.0.0", verifier=KERNEL_AGENT, status="auto_verified"),
        lambda: session.governance.approve("a", reviewer=KERNEL_AGENT),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgument) as refused:
            await attempt()
        assert refused.value.code == "SOS-4005"
        assert "reserved" in refused.value.message
        assert refused.value.details == {"agent": KERNEL_AGENT}
    assert [m.message_id for m in await trusted.bus.history(events)] == before
    assert [m.message_id for m in await trusted.bus.history("agent:bob")] == [asked.message_id]
    assert await trusted.tasks.list() == []
    spoken = await trusted.bus.send(KERNEL_AGENT, events, "the kernel's own")
    assert (await trusted.bus.history(events))[-1].message_id == spoken.message_id
