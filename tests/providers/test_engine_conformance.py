"""The provider matrix and the engine, on every backend and through the remote client, against local HTTP servers
that speak each provider's wire format."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
    SchemaViolation,
    SettlementRejected,
    WalletNotFound,
)
from sos_kernel.providers.runtime import CALLS_PER_PRINCIPAL_MAX
from sos_kernel.providers.service import (
    CHAT_MESSAGES_MAX,
    MAX_TOKENS_MAX,
    PROVIDERS_PER_TENANT_MAX,
    usage_event_id,
)

from ..conftest import Api, Connect
from .conftest import card
from .fake_providers import USAGE, Fakes, free_port

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]
USD = "USD"


@pytest.mark.live
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_each_wire_format_answers_with_its_usage_mapped(
    api: Api, kernel: sos_kernel.Kernel, fakes: Fakes, kind: str, stream: bool
) -> None:
    await api.providers.register(card(fakes, "p1", kind))
    if stream:
        chat = await api.engine.chat([{"role": "system", "content": "be brief"}, *HI], stream=True)
        pieces = [piece async for piece in chat]
        reply = chat.reply
        assert "".join(pieces) == "hello from p1"
    else:
        reply = await api.engine.chat([{"role": "system", "content": "be brief"}, *HI])
    assert reply is not None
    assert (reply.text, reply.provider, reply.model) == ("hello from p1", "p1", f"{kind}-model")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == USAGE[kind]
    (event,) = await kernel.ledger.usage()
    assert (event.provider, event.input_tokens, event.output_tokens) == ("p1", *USAGE[kind])
    name, _, body = fakes.requests[-1]
    assert name == "p1"
    assert "be brief" in str(body)


async def test_the_matrix_lists_in_selection_order_and_starts_closed(api: Api, fakes: Fakes) -> None:
    await api.providers.register(card(fakes, "zz", tier="primary"))
    await api.providers.register(card(fakes, "aa", tier="fallback"))
    await api.providers.register(card(fakes, "loc", tier="local", backend="local", endpoint="local://echo"))
    assert [c.id for c in await api.providers.list()] == ["zz", "aa", "loc"]
    assert [c.id for c in await api.providers.list(tier="fallback")] == ["aa"]
    health = await api.providers.health()
    assert {k: v.state for k, v in health.items()} == {"zz": "closed", "aa": "closed", "loc": "closed"}
    await api.providers.remove("aa")
    assert [c.id for c in await api.providers.list()] == ["zz", "loc"]
    with pytest.raises(ProviderNotFound):
        await api.providers.remove("aa")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"tier": "gold"}, SchemaViolation),
        ({"id": "Bad_Id"}, SchemaViolation),
        ({"api_key": "sk-secret"}, SchemaViolation),
        ({"timeout_seconds": 0}, SchemaViolation),
        ({"backend": "langgraph"}, InvalidArgument),
        ({"endpoint": "http://10.0.0.7/v1"}, InvalidArgument),
        ({"endpoint": "http://user:pw@127.0.0.1/v1"}, InvalidArgument),
        ({"endpoint": "file:///etc/passwd"}, InvalidArgument),
        ({"health_probe_url": "http://169.254.169.254/latest"}, InvalidArgument),
        ({"backend": "local", "endpoint": "http://127.0.0.1/v1"}, InvalidArgument),
    ],
)
async def test_a_bad_card_is_refused_and_nothing_is_written(
    api: Api, fakes: Fakes, change: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await api.providers.register({**card(fakes, "p1"), **change})
    assert await api.providers.list() == []


async def test_the_matrix_is_bounded_per_tenant(kernel: sos_kernel.Kernel, api: Api, fakes: Fakes) -> None:
    for i in range(PROVIDERS_PER_TENANT_MAX):
        await kernel.providers.register(card(fakes, f"p{i}"))
    with pytest.raises(LimitExceeded):
        await api.providers.register(card(fakes, "one-more"))
    await api.providers.register(card(fakes, "p0", tier="cheap"))  # replacing one is not adding one
    assert len(await api.providers.list()) == PROVIDERS_PER_TENANT_MAX


async def test_a_failing_primary_trips_after_the_threshold_and_calls_fail_over(api: Api, fakes: Fakes) -> None:
    await api.providers.register(card(fakes, "main", circuit_breaker={"failure_threshold": 2}))
    await api.providers.register(card(fakes, "spare", "anthropic", tier="fallback"))
    fakes.modes["main"] = "500"
    for _ in range(3):
        reply = await api.engine.chat(HI)
        assert reply.provider == "spare"
    assert reply.tried == ("spare",)  # the third call skipped the open breaker
    assert fakes.calls("main") == 2
    health = await api.providers.health()
    assert (health["main"].state, health["main"].failures) == ("open", 2)
    assert health["spare"].state == "closed"


async def test_half_open_lets_one_probe_through_and_closes_on_success(api: Api, fakes: Fakes) -> None:
    breaker = {"failure_threshold": 1, "recovery_window_seconds": 1}
    await api.providers.register(card(fakes, "main", circuit_breaker=breaker))
    await api.providers.register(card(fakes, "spare", tier="fallback"))
    fakes.modes["main"] = "500"
    assert (await api.engine.chat(HI)).provider == "spare"
    assert (await api.providers.health())["main"].state == "open"
    await anyio.sleep(1.1)
    fakes.modes["main"] = "ok"
    reply = await api.engine.chat(HI)
    assert (reply.provider, reply.tried) == ("main", ("main",))
    assert (await api.providers.health())["main"].state == "closed"


async def test_a_failed_probe_opens_the_breaker_again(api: Api, fakes: Fakes) -> None:
    breaker = {"failure_threshold": 1, "recovery_window_seconds": 1}
    await api.providers.register(card(fakes, "main", circuit_breaker=breaker))
    fakes.modes["main"] = "500"
    with pytest.raises(ProviderUnavailable):
        await api.engine.chat(HI)
    await anyio.sleep(1.1)
    with pytest.raises(ProviderUnavailable):
        await api.engine.chat(HI)  # the probe
    assert fakes.calls("main") == 2
    with pytest.raises(ProviderUnavailable) as info:
        await api.engine.chat(HI)  # open again: not called
    assert fakes.calls("main") == 2
    assert info.value.details["reasons"] == {"main": "breaker open"}


@pytest.mark.parametrize("mode", ["400", "401", "429"])
async def test_4xx_answers_never_trip_the_breaker(api: Api, fakes: Fakes, mode: str) -> None:
    await api.providers.register(card(fakes, "main", circuit_breaker={"failure_threshold": 1}))
    await api.providers.register(card(fakes, "spare", tier="fallback"))
    fakes.modes["main"] = mode
    if mode == "400":  # the request's own fault: raised at once, no failover
        with pytest.raises(ProviderRejected):
            await api.engine.chat(HI)
        assert fakes.calls("spare") == 0
    else:  # the provider's refusal (a key, a quota): the next one answers
        assert (await api.engine.chat(HI)).provider == "spare"
    health = await api.providers.health()
    assert (health["main"].state, health["main"].failures) == ("closed", 0)


async def test_timeouts_refused_connections_and_garbage_count_as_failures(api: Api, fakes: Fakes) -> None:
    one = {"failure_threshold": 1}
    await api.providers.register(card(fakes, "slow", timeout_seconds=1, circuit_breaker=one))
    dead = {"endpoint": f"http://127.0.0.1:{free_port()}/v1", "circuit_breaker": one}
    await api.providers.register(card(fakes, "dead", tier="fallback", **dead))
    await api.providers.register(card(fakes, "junk", tier="cheap", circuit_breaker=one))
    await api.providers.register(card(fakes, "ok", tier="local"))
    fakes.modes.update(slow="slow", junk="garbage")
    start = time.monotonic()
    reply = await api.engine.chat(HI)
    assert time.monotonic() - start < 2.5
    assert (reply.provider, reply.tried) == ("ok", ("slow", "dead", "junk", "ok"))
    states = {k: v.state for k, v in (await api.providers.health()).items()}
    assert states == {"slow": "open", "dead": "open", "junk": "open", "ok": "closed"}


async def test_every_provider_failing_is_sos_6041_with_each_reason(api: Api, fakes: Fakes) -> None:
    await api.providers.register(card(fakes, "a"))
    await api.providers.register(card(fakes, "b", tier="fallback"))
    fakes.modes.update(a="500", b="500")
    with pytest.raises(ProviderUnavailable) as info:
        await api.engine.chat(HI)
    assert info.value.details["tried"] == ["a", "b"]
    assert info.value.retryable


async def test_model_and_tier_select_and_nothing_matching_is_sos_6040(api: Api, fakes: Fakes) -> None:
    await api.providers.register(card(fakes, "a"))
    await api.providers.register(card(fakes, "g", "gemini", tier="cheap"))
    assert (await api.engine.chat(HI, model="gemini-model")).provider == "g"
    assert (await api.engine.chat(HI, tier="cheap")).provider == "g"
    assert (await api.engine.chat(HI, model="a")).provider == "a"
    with pytest.raises(ProviderNotFound):
        await api.engine.chat(HI, model="nope")
    with pytest.raises(ProviderNotFound):
        await api.engine.chat(HI, tier="premium")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"messages": []}, InvalidArgument),
        ({"messages": [{"role": "robot", "content": "x"}]}, InvalidArgument),
        ({"messages": [{"role": "user", "content": 5}]}, InvalidArgument),
        ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, InvalidArgument),
        ({"messages": HI * (CHAT_MESSAGES_MAX + 1)}, LimitExceeded),
        ({"messages": [{"role": "user", "content": "x" * (256 * 1024 + 1)}]}, LimitExceeded),
        ({"messages": HI, "max_tokens": MAX_TOKENS_MAX + 1}, InvalidArgument),
        ({"messages": HI, "max_tokens": 0}, InvalidArgument),
        ({"messages": HI, "tier": "gold"}, InvalidArgument),
        ({"messages": HI, "id": "x" * 129}, InvalidArgument),
    ],
)
async def test_bad_chats_are_refused_before_any_call(
    api: Api, kernel: sos_kernel.Kernel, fakes: Fakes, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    await api.providers.register(card(fakes, "a"))
    with pytest.raises(error):
        await api.engine.chat(**kwargs)
    assert fakes.calls("a") == 0
    assert await kernel.ledger.usage() == []


# -- money ------------------------------------------------------------------------------------------------------


async def _agent(kernel: sos_kernel.Kernel, connect: Connect, funds: int) -> Any:
    """A session of ``agent:bob`` in tenant acme, holding ``funds`` USD micros."""
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    await view.ledger.open_account("agent:bob", USD)
    if funds:
        await view.ledger.transfer(id="seed", debit="system:treasury", credit="agent:bob", amount=funds, currency=USD)
    return await connect((await view.tokens.issue(agent="agent:bob")).secret)


async def test_retries_with_the_same_id_charge_once_and_only_the_answering_provider(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.providers.register(card(fakes, "spare", "anthropic", tier="fallback"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    await view.ledger.set_price("spare", "anthropic-model", input_per_mtok_micros=3 * 10**5)
    fakes.modes["main"] = "500"
    first = await bob.engine.chat(HI, id="call-1")
    again = await bob.engine.chat(HI, id="call-1")
    assert (first.provider, first.cost_micros, first.tried) == ("spare", 4, ("main", "spare"))  # 13 * 0.3, rounded up
    assert again.replayed
    assert (again.text, again.cost_micros, again.id) == (first.text, 4, first.id)
    assert first.id == "bob/call-1"
    assert fakes.calls("spare") == 1
    assert (await view.ledger.balance("agent:bob", USD)).posted == 10_000 - 4
    assert (await view.ledger.balance("system:usage", USD)).posted == 4
    (event,) = await view.ledger.usage()
    assert (event.provider, event.cost_micros, event.metadata) == (
        "spare",
        4,
        {"call_id": "bob/call-1", "agent": "agent:bob"},
    )
    streamed = await bob.engine.chat(HI, id="call-2", stream=True)
    assert (await streamed.collect_reply()).cost_micros == 4
    replay = await bob.engine.chat(HI, id="call-2", stream=True)
    assert (await replay.collect_reply()).replayed
    assert (await view.ledger.balance("agent:bob", USD)).posted == 10_000 - 8
    await view.ledger.check()


async def test_a_wallet_that_cannot_cover_the_estimate_is_refused_before_calling(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 5)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=6))
    with pytest.raises(InsufficientFunds):
        await bob.engine.chat(HI, id="c")
    with pytest.raises(InsufficientFunds):
        await bob.engine.chat(HI, id="c", stream=True)
    assert fakes.calls("main") == 0
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=5))
    reply = await bob.engine.chat(HI, id="c")  # no price set: the estimate is the cost
    assert reply.cost_micros == 5
    assert (await view.ledger.balance("agent:bob", USD)).posted == 0


async def test_an_agent_without_a_wallet_is_refused_before_calling(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    carol = await connect((await view.tokens.issue(agent="agent:carol")).secret)
    with pytest.raises(WalletNotFound):
        await carol.engine.chat(HI)
    assert fakes.calls("main") == 0


async def test_an_agent_chats_only_on_its_own_wallet_and_cannot_change_the_matrix(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 100)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    with pytest.raises(Forbidden):
        await bob.engine.chat(HI, agent="agent:alice")
    with pytest.raises(Forbidden):
        await bob.providers.register(card(fakes, "mine"))
    with pytest.raises(Forbidden):
        await bob.providers.remove("main")
    with pytest.raises(Forbidden):
        await bob.providers.probe()
    assert [c.id for c in await bob.providers.list()] == ["main"]
    assert set(await bob.providers.health()) == {"main"}
    tenant_wide = await connect((await view.tokens.issue(scopes=["engine:chat"])).secret)
    with pytest.raises(Forbidden):
        await tenant_wide.engine.chat(HI)
    assert fakes.calls("main") == 0


async def test_health_probes_trip_and_close_breakers(api: Api, fakes: Fakes) -> None:
    probe = {"health_probe_url": f"{fakes.base}/main/health", "circuit_breaker": {"failure_threshold": 1}}
    await api.providers.register(card(fakes, "main", **probe))
    await api.providers.register(card(fakes, "quiet"))
    fakes.modes["main"] = "500"
    assert (await api.providers.probe())["main"].state == "open"
    fakes.modes["main"] = "ok"
    health = await api.providers.probe()
    assert {k: v.state for k, v in health.items()} == {"main": "closed", "quiet": "closed"}
    assert fakes.calls("quiet") == 0


async def test_the_local_provider_needs_no_network(api: Api, kernel: sos_kernel.Kernel) -> None:
    local = {"schema_version": "1", "name": "L", "backend": "local", "model": "echo"}
    await api.providers.register({**local, "id": "broken", "tier": "primary", "endpoint": "local://fail"})
    await api.providers.register({**local, "id": "echo", "tier": "local"})
    reply = await api.engine.chat([{"role": "user", "content": "say this back"}])
    assert (reply.text, reply.provider, reply.tried) == ("say this back", "echo", ("broken", "echo"))
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (3, 3)


async def test_streams_closed_or_dropped_unread_give_back_their_slot_and_their_id(
    kernel: sos_kernel.Kernel, fakes: Fakes
) -> None:
    await kernel.providers.register(card(fakes, "main"))
    for _ in range(CALLS_PER_PRINCIPAL_MAX + 1):
        stream = await kernel.engine.chat(HI, id="same", stream=True)
        await stream.aclose()
    for _ in range(CALLS_PER_PRINCIPAL_MAX + 1):
        await kernel.engine.chat(HI, stream=True)  # dropped without a close
    reply = await kernel.engine.chat(HI, id="same")
    assert (reply.replayed, reply.text) == (False, "hello from main")
    assert kernel.provider_runtime.running == {}
    assert await kernel.ledger.usage() != []


async def test_a_finished_call_is_answered_again_after_its_wallet_ran_dry(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 10)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=10))
    first = await bob.engine.chat(HI, id="paid")
    assert (await view.ledger.balance("agent:bob", USD)).available == 0
    again = await bob.engine.chat(HI, id="paid")
    assert again.replayed
    assert again.text == first.text
    with pytest.raises(InsufficientFunds):
        await bob.engine.chat(HI, id="new")
    assert fakes.calls("main") == 1


async def test_half_open_lets_exactly_one_of_concurrent_calls_probe(api: Api, fakes: Fakes) -> None:
    breaker = {"failure_threshold": 1, "recovery_window_seconds": 1}
    await api.providers.register(card(fakes, "main", timeout_seconds=10, circuit_breaker=breaker))
    await api.providers.register(card(fakes, "spare", tier="fallback"))
    fakes.modes["main"] = "500"
    await api.engine.chat(HI)
    await anyio.sleep(1.1)
    fakes.modes["main"] = "slow"  # the probe answers, after the others have come and gone
    providers: list[str] = []

    async def one() -> None:
        providers.append((await api.engine.chat(HI)).provider)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert sorted(providers) == ["main", "spare", "spare", "spare"]
    assert fakes.calls("main") == 2  # the trip, then the one probe
    assert (await api.providers.health())["main"].state == "closed"


# -- paid before delivered ------------------------------------------------------------------------------------


async def _settled(view: Any, account: str) -> Any:
    """The account's balance once no hold of it is pending (a server settles a closed stream on its own time)."""
    for _ in range(100):
        balance = await view.ledger.balance(account, USD)
        if balance.pending == 0:
            return balance
        await anyio.sleep(0.02)
    return balance


async def test_a_priced_call_the_wallet_cannot_hold_for_is_refused_before_any_provider_is_called(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 100)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    for stream in (False, True):
        with pytest.raises(InsufficientFunds):
            await bob.engine.chat(HI, id=f"c-{stream}", stream=stream)  # 2 bytes + 16 + 1024 tokens > 100
    assert fakes.calls("main") == 0
    reply = await bob.engine.chat(HI, id="small", max_tokens=50)  # holds 2 + 16 + 50 = 68, posts 11 + 7
    assert reply.cost_micros == 18
    balance = await view.ledger.balance("agent:bob", USD)
    assert (balance.posted, balance.pending) == (100 - 18, 0)
    await view.ledger.check()


@pytest.mark.live
async def test_a_stream_closed_early_pays_for_what_it_delivered_and_a_retry_pays_again(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    stream = await bob.engine.chat(HI, id="early", stream=True)
    first = await stream.__anext__()
    assert first
    await stream.aclose()
    paid = 10_000 - (await _settled(view, "agent:bob")).posted
    assert 0 < paid <= 2 + 16 + 1024  # at least the first piece, never more than the hold
    again = await bob.engine.chat(HI, id="early", stream=True)
    replayed = (await again.collect_reply()).replayed  # a server may have read the whole answer before the close
    now_paid = 10_000 - (await _settled(view, "agent:bob")).posted
    assert now_paid == paid if replayed else now_paid > paid  # a retry that delivers again pays again
    await view.ledger.check()


async def test_no_recorder_can_take_the_usage_id_of_another_agents_call(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.ledger.open_account("agent:alice", USD)
    alice = await connect((await view.tokens.issue(agent="agent:alice")).secret)
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=7))

    def forged(call_id: str) -> dict[str, Any]:
        return {
            "schema_version": "1",
            "id": usage_event_id("acme", call_id),
            "tenant": "acme",
            "provider": "main",
            "model": "openai-model",
            "cost_micros": 0,
            "cost_currency": USD,
            "occurred_at": "2026-12-07T09:00:00Z",
            "metadata": {"call_id": call_id, "agent": "agent:alice"},
        }

    squat = await alice.ledger.record_usage(forged("bob/incident-42"))
    assert squat.id != usage_event_id("acme", "bob/incident-42")  # stored in alice's own id space
    assert (await alice.ledger.record_usage(forged("bob/incident-42"))).id == squat.id  # a retry meets it
    await view.ledger.record_usage(forged("bob/incident-43"))  # an admin may write any id
    await bob.engine.chat(HI, id="incident-42")
    await bob.engine.chat(HI, id="incident-43")
    events = {e.id: e for e in await view.ledger.usage()}
    mine = events[usage_event_id("acme", "bob/incident-42")]
    assert (mine.metadata["agent"], mine.cost_micros) == ("agent:bob", 7)
    kept = [e for e in events.values() if e.metadata.get("call_id") == "bob/incident-43"]
    assert sorted((e.metadata["agent"], e.cost_micros) for e in kept) == [("agent:alice", 0), ("agent:bob", 7)]


ECHO = {"schema_version": "1", "id": "echo", "name": "Echo", "backend": "local", "model": "echo", "tier": "local"}


def _say(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_no_scope_reaches_another_agents_call_id(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    """A ledger:admin token (agent-bound or tenant-wide) naming alice's call id, raw or for ``agent=alice``, runs a
    call of its own: it never reads her reply, and what it plants is never answered to her."""
    await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register({**ECHO, "cost_per_call_estimate_micros": 3})
    for name in ("agent:alice", "agent:billing"):
        await view.ledger.open_account(name, USD)
        await view.ledger.transfer(id=f"seed-{name}", debit="system:treasury", credit=name, amount=100, currency=USD)
    alice = await connect((await view.tokens.issue(agent="agent:alice")).secret)
    billing = await connect(
        (await view.tokens.issue(agent="agent:billing", scopes=["engine:chat", "ledger:admin"])).secret
    )
    tenant_wide = await connect((await view.tokens.issue(scopes=["engine:chat", "ledger:admin"])).secret)
    secret = await alice.engine.chat(_say("ACME SECRET 42"), id="call-1")
    assert secret.id == "alice/call-1"
    for admin in (billing, tenant_wide):
        for kwargs in ({"id": "alice/call-1"}, {"id": "call-1", "agent": "agent:alice"}):
            reply = await admin.engine.chat(_say("?"), **kwargs)
            assert (reply.replayed, reply.text) == (False, "?")
            assert reply.id != "alice/call-1"
    await billing.engine.chat(_say("PLANTED: wire 5000 USD"), id="alice/report-x", agent="agent:alice")
    await tenant_wide.engine.chat(_say("PLANTED: wire 5000 USD"), id="alice/report-y", agent="agent:alice")
    for planted in ("report-x", "report-y"):
        mine = await alice.engine.chat(_say("summarise the report"), id=planted)
        assert (mine.replayed, mine.text, mine.id) == (False, "summarise the report", f"alice/{planted}")
    again = await alice.engine.chat(_say("ACME SECRET 42"), id="call-1")
    assert (again.replayed, again.text) == (True, "ACME SECRET 42")
    keys = {e.metadata["call_id"] for e in await view.ledger.usage()}
    assert {"alice/call-1", "alice/report-x", "alice/report-y", "billing/alice/call-1", "billing/call-1"} <= keys
    await view.ledger.check()


@pytest.mark.parametrize(
    "change",
    [
        {"messages": _say("something else")},
        {"model": "other"},
        {"tier": "primary"},
        {"max_tokens": 7},
        {"stream": True},
    ],
    ids=["messages", "model", "tier", "max_tokens", "stream"],
)
async def test_a_used_call_id_answers_only_the_same_request(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes, change: dict[str, Any]
) -> None:
    """A retry with the same request replays; another request under the id is SOS-4009 naming it, and nothing is
    held, called or charged."""
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=5))
    await view.providers.register(card(fakes, "other", model="other", cost_per_call_estimate_micros=5))
    first = await bob.engine.chat(HI, id="call-1")
    paid = await view.ledger.balance("agent:bob", USD)
    request: dict[str, Any] = {"messages": HI, "id": "call-1", **change}
    with pytest.raises(IdempotencyConflict) as refused:  # a stream too is refused before it is opened
        await bob.engine.chat(**request)
    assert refused.value.code == "SOS-4009"
    assert "bob/call-1" in refused.value.message
    assert refused.value.details == {"id": "bob/call-1"}
    assert await view.ledger.balance("agent:bob", USD) == paid
    assert fakes.calls("main") + fakes.calls("other") == 1
    again = await bob.engine.chat(HI, id="call-1")
    assert (again.replayed, again.text, again.cost_micros) == (True, first.text, 5)
    assert len(await view.ledger.usage()) == 1


async def test_a_running_call_id_refuses_another_request(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    """While a call runs (a stream not yet read), another request under its id is SOS-4009, not a wait."""
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=5))
    stream = await bob.engine.chat(HI, id="run", stream=True)
    with pytest.raises(IdempotencyConflict):
        await bob.engine.chat(_say("something else"), id="run", stream=True)
    assert (await stream.collect_reply()).text == "hello from main"
    assert fakes.calls("main") == 1
    assert (await view.ledger.balance("agent:bob", USD)).posted == 10_000 - 5


# -- governance budgets -----------------------------------------------------------------------------------------


CHAT_BUDGETS = {
    "name": "chat-budgets",
    "rules": [{"id": "chat", "effect": "allow", "actions": ["engine.chat"]}],
    "limits": [
        {"id": "chat-spend", "actions": ["engine.chat"], "window_s": 3600, "spend_micros_max": 200},
        {"id": "chat-tokens", "actions": ["engine.chat"], "window_s": 3600, "tokens_max": 150},
    ],
}


async def test_spend_and_token_budgets_refuse_a_chat_before_any_provider_is_called(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    """A chat holds its worst case (price over its input bound and max_tokens; that many tokens) against the
    policy's budgets before calling, then counts what it used: 11 + 7 tokens at 1 micro each here."""
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    await view.governance.set_policy("acme", CHAT_BUDGETS)
    assert (await bob.engine.chat(HI, id="a", max_tokens=50)).cost_micros == 18  # held 68, counts 18
    streamed = await bob.engine.chat(HI, id="b", max_tokens=50, stream=True)
    assert (await streamed.collect_reply()).cost_micros == 18  # 36 spent, 36 tokens
    for stream in (False, True):
        with pytest.raises(Forbidden) as refused:  # 36 + 2 + 16 + 100 tokens > 150
            await bob.engine.chat(HI, id=f"c-{stream}", max_tokens=100, stream=stream)
        assert (refused.value.code, refused.value.details["rule"]) == ("SOS-5004", "chat-tokens")
        with pytest.raises(Forbidden) as refused:  # 36 + 218 micros > 200
            await bob.engine.chat(HI, id=f"d-{stream}", max_tokens=200, stream=stream)
        assert (refused.value.details["rule"], refused.value.details["limit"]) == ("chat-spend", "spend")
    assert fakes.calls("main") == 2
    balance = await view.ledger.balance("agent:bob", USD)
    assert (balance.posted, balance.pending) == (10_000 - 36, 0)  # nothing held by the refused calls
    assert (await bob.engine.chat(HI, id="e", max_tokens=50)).cost_micros == 18  # 36 + 68 fits: the actual counted
    denials = await view.audit.events("acme", kind="denial")
    assert [d.details["rule"] for d in denials] == ["chat-tokens", "chat-spend"] * 2
    await view.ledger.check()


async def _engine_hold(view: Any) -> Any:
    """The hold the engine placed last on agent:bob's wallet (a server may have settled it already)."""
    holds = [t for t in await view.ledger.history("agent:bob", USD) if t.kind == "pending"]
    assert holds[-1].id.startswith("engine:")
    return holds[-1]


@pytest.mark.parametrize("meddle", ["void", "capture-1"])
async def test_a_chat_whose_hold_is_settled_under_it_is_charged_in_full_metered_and_counted(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes, meddle: str
) -> None:
    """The payer may not settle the engine's hold; if it is settled anyway (an admin, mid-stream), the text
    delivered is still charged in full (from the agent's wallet), metered and counted against the budgets."""
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    await view.governance.set_policy(
        "acme", {**CHAT_BUDGETS, "rules": [{"id": "all", "effect": "allow", "actions": ["*"]}]}
    )
    for n in range(2):
        stream = await bob.engine.chat(HI, id=f"s{n}", max_tokens=50, stream=True)
        assert await stream.__anext__()
        hold = await _engine_hold(view)
        for settle in (bob.ledger.void(hold.id), bob.ledger.capture(hold.id, 1)):
            with pytest.raises(Forbidden):
                await settle
        with contextlib.suppress(SettlementRejected):  # a server may have settled the whole answer already
            await (view.ledger.void(hold.id) if meddle == "void" else view.ledger.capture(hold.id, 1))
        assert (await stream.collect_reply()).cost_micros == 18
    balance = await _settled(view, "agent:bob")
    assert (balance.posted, balance.pending) == (10_000 - 36, 0)
    assert [e.cost_micros for e in await view.ledger.usage()] == [18, 18]
    with pytest.raises(Forbidden) as refused:  # both calls count: 36 + 2 + 16 + 100 tokens > 150
        await bob.engine.chat(HI, id="over", max_tokens=100)
    assert refused.value.details["rule"] == "chat-tokens"
    early = await bob.engine.chat(HI, id="early", max_tokens=10, stream=True)
    assert await early.__anext__()
    with contextlib.suppress(SettlementRejected):
        await view.ledger.void((await _engine_hold(view)).id)
    await early.aclose()
    for _ in range(100):  # a server settles a closed stream on its own time
        if (await view.ledger.balance("agent:bob", USD)).posted < 10_000 - 36:
            break
        await anyio.sleep(0.02)
    assert (await view.ledger.balance("agent:bob", USD)).posted < 10_000 - 36  # what it delivered is paid
    await view.ledger.check()


# -- answers that name a key twice ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "loc"), [("repeat_usage", "usage"), ("repeat_content", "choices.0.message.content")])
async def test_an_answer_repeating_a_key_is_a_provider_failure_and_nothing_is_charged(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes, mode: str, loc: str
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", circuit_breaker={"failure_threshold": 1}))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    fakes.modes["main"] = mode
    with pytest.raises(ProviderUnavailable) as info:
        await bob.engine.chat(HI, id="twice")
    assert info.value.details["reasons"] == {"main": f"a malformed answer (repeated key at {loc})"}
    assert (await view.providers.health())["main"].state == "open"  # counted against the provider
    balance = await _settled(view, "agent:bob")
    assert (balance.posted, balance.pending) == (10_000, 0)
    assert await view.ledger.usage() == []
    await view.ledger.check()


@pytest.mark.parametrize(("mode", "loc"), [("repeat_usage", "usage"), ("repeat_content", "choices.0.delta.content")])
async def test_a_streamed_event_repeating_a_key_fails_the_stream_and_its_usage_is_not_read(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes, mode: str, loc: str
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    fakes.modes["main"] = mode
    with pytest.raises(ProviderUnavailable) as info:  # its first event: the stream never started
        await bob.engine.chat(HI, id="twice", stream=True)
    assert info.value.details["reasons"] == {"main": f"a malformed event (repeated key at {loc})"}
    balance = await _settled(view, "agent:bob")
    assert (balance.posted, balance.pending) == (10_000, 0)  # unpriced, no estimate, nothing delivered
    assert await view.ledger.usage() == []
    await view.ledger.check()


# -- a stream is committed to a provider by its first piece ------------------------------------------------------


@pytest.mark.parametrize("priced", [True, False], ids=["priced", "estimate"])
@pytest.mark.parametrize("mode", ["bad_first", "drop"])
async def test_a_stream_failing_before_its_first_piece_is_charged_nothing_and_its_hold_is_voided(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes, mode: str, priced: bool
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=500))
    if priced:
        await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    fakes.modes["main"] = mode
    with pytest.raises(ProviderUnavailable) as info:
        await bob.engine.chat(HI, id="nothing", stream=True)
    assert (info.value.details["tried"], list(info.value.details["reasons"])) == (["main"], ["main"])
    balance = await _settled(view, "agent:bob")
    assert (balance.posted, balance.pending) == (10_000, 0)
    hold = await view.ledger.get_transfer((await _engine_hold(view)).id)
    assert (hold.state, hold.captured) == ("voided", 0)
    assert await view.ledger.usage() == []
    assert (await view.providers.health())["main"].failures == 1  # a failure of that provider
    await view.ledger.check()


async def test_a_stream_failing_before_its_first_piece_fails_over_and_only_the_answering_provider_pays(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main", cost_per_call_estimate_micros=500))
    await view.providers.register(card(fakes, "spare", "anthropic", tier="fallback", cost_per_call_estimate_micros=7))
    fakes.modes["main"] = "bad_first"
    stream = await bob.engine.chat(HI, id="over", stream=True)
    assert (stream.provider, stream.tried) == ("spare", ("main", "spare"))
    reply = await stream.collect_reply()
    assert (reply.text, reply.provider, reply.tried, reply.cost_micros) == (
        "hello from spare",
        "spare",
        ("main", "spare"),
        7,
    )
    balance = await _settled(view, "agent:bob")
    assert (balance.posted, balance.pending) == (10_000 - 7, 0)
    assert [(e.provider, e.cost_micros) for e in await view.ledger.usage()] == [("spare", 7)]
    health = await view.providers.health()
    assert (health["main"].failures, health["spare"].failures) == (1, 0)
    await view.ledger.check()


async def test_a_stream_failing_after_two_pieces_pays_for_them_and_does_not_fail_over(
    kernel: sos_kernel.Kernel, connect: Connect, fakes: Fakes
) -> None:
    bob = await _agent(kernel, connect, 10_000)
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.providers.register(card(fakes, "spare", tier="fallback"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    fakes.modes["main"] = "fail_after_two"
    stream = await bob.engine.chat(HI, id="cut", stream=True)
    pieces = [await stream.__anext__(), await stream.__anext__()]
    assert pieces == ["hello ", "from "]
    with pytest.raises(ProviderUnavailable) as info:
        await stream.__anext__()
    assert "failed mid-stream: a malformed event" in info.value.message
    balance = await _settled(view, "agent:bob")
    assert (balance.posted, balance.pending) == (10_000 - (2 + 16 + 11), 0)  # input bound + 11 bytes delivered
    assert fakes.calls("spare") == 0
    assert (await view.providers.health())["main"].failures == 1
    await view.ledger.check()
