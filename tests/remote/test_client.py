"""MumegaClient over the in-process ASGI transport: the same results, classes and errors as a kernel session."""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mumega_sdk import MumegaClient
from sos_kernel import Kernel
from sos_kernel.bus import NACK_REASON_CHARS_MAX, UNHELD_REPLY
from sos_kernel.contracts import AgentCard, SendMessage, SendPayload
from sos_kernel.errors import (
    BackendFailure,
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    InvalidToken,
    NotFound,
    SchemaViolation,
)
from sos_kernel.server import create_app

from .conftest import BASE_URL, TENANT, Remote

pytestmark = pytest.mark.anyio

SKILL = {
    "schema_version": "1",
    "id": "summarise",
    "name": "Summarise",
    "version": "1.0.0",
    "author_agent": "agent:alice",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "summarise.py"},
    "commerce": {"price_per_call_micros": 1_000, "currency": "USD", "marketplace_listed": True},
}


def note(text: str = "hi", source: str = "agent:alice", target: str = "agent:bob") -> SendMessage:
    return SendMessage(source=source, target=target, payload=SendPayload(text=text))


async def test_publish_and_history(remote: Remote) -> None:
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    message = note()
    receipt = await alice.bus.publish(message)
    assert receipt.message_id == message.message_id
    assert receipt.address == "agent:bob"
    assert receipt.duplicate is False
    again = await alice.bus.publish(message.to_wire())
    assert again.duplicate is True
    assert again.position == receipt.position
    assert await bob.bus.history("agent:bob") == [message]
    assert await bob.bus.history_entries("agent:bob") == [(receipt.position, message)]
    local = await remote.kernel.tenant(TENANT).bus.history("agent:bob")
    assert local == [message]


async def test_send_announce_and_publish_many(remote: Remote) -> None:
    alice = remote.client(remote.alice)
    sent = await alice.bus.send("agent:alice", "agent:bob", "hello", content_type="text/markdown")
    announced = await alice.bus.announce("agent:alice", "here", tool="pytest")
    many = await alice.bus.publish_many([note("1"), note("2")])
    assert sent.address == "agent:bob"
    assert announced.address == "sos:channel:global"
    assert [r.duplicate for r in many] == [False, False]
    texts = [m.payload.text for m in await remote.client(remote.bob).bus.history("agent:bob")]  # type: ignore[union-attr]
    assert texts == ["hello", "1", "2"]


async def test_subscribe_ack_and_redelivery(remote: Remote) -> None:
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    first, second = note("one"), note("two")
    await alice.bus.publish_many([first, second])
    async with bob.bus.subscribe("agent:bob", visibility_timeout_s=0.5) as sub:
        with anyio.fail_after(5):
            d1 = await sub.receive()
            d2 = await sub.receive()
        assert d1 is not None
        assert d2 is not None
        assert (d1.message, d1.attempt) == (first, 1)
        assert (d2.message, d2.attempt) == (second, 1)
        assert await d1.ack() is True
        assert await d1.ack() is False
        # d2 is not acked: it comes back after the visibility timeout, same position, next attempt
        again = await sub.receive(timeout_s=5)
        assert again is not None
        assert (again.message, again.position, again.attempt) == (second, d2.position, 2)
        assert await again.ack() is True
        assert await sub.receive(timeout_s=1.0) is None
    assert await remote.kernel.tenant(TENANT).bus.store.pending_count(TENANT, "agent:bob", "inbox") == 0


async def test_nack_redelivers_at_once(remote: Remote) -> None:
    await remote.client(remote.alice).bus.publish(note("again"))
    async with remote.client(remote.bob).bus.subscribe("agent:bob") as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        assert await delivery.nack() is True
        retry = await sub.receive(timeout_s=5)
        assert retry is not None
        assert (retry.position, retry.attempt) == (delivery.position, 2)
        assert await retry.ack() is True


async def test_a_delivery_left_unacked_by_a_closed_client_is_redelivered(remote: Remote) -> None:
    message = note("not lost")
    await remote.client(remote.alice).bus.publish(message)
    first_client = remote.client(remote.bob)
    async with first_client.bus.subscribe("agent:bob", visibility_timeout_s=0.5) as sub:
        taken = await sub.receive(timeout_s=5)
        assert taken is not None
    await first_client.aclose()
    async with remote.client(remote.bob).bus.subscribe("agent:bob", visibility_timeout_s=0.5) as sub:
        again = await sub.receive(timeout_s=5)
        assert again is not None
        assert (again.message, again.attempt) == (message, 2)
        assert await again.ack() is True


async def test_channel_fan_out_to_every_subscriber(remote: Remote) -> None:
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    async with alice.bus.subscribe("sos:channel:news") as sub_a, bob.bus.subscribe("sos:channel:news") as sub_b:
        await alice.bus.send("agent:alice", "sos:channel:news", "extra")
        got_a, got_b = await sub_a.receive(timeout_s=5), await sub_b.receive(timeout_s=5)
        assert got_a is not None
        assert got_b is not None
        assert got_a.message == got_b.message
        assert got_a.group != got_b.group


async def test_sending_as_another_agent_is_forbidden_as_in_process(remote: Remote) -> None:
    alice = remote.client(remote.alice)
    with pytest.raises(Forbidden) as remote_error:
        await alice.bus.send("agent:bob", "agent:carol", "spoofed")
    session = await remote.kernel.session(remote.alice)
    with pytest.raises(Forbidden) as local_error:
        await session.bus.send("agent:bob", "agent:carol", "spoofed")
    assert remote_error.value.code == local_error.value.code == "SOS-5004"
    assert remote_error.value.details == local_error.value.details
    with pytest.raises(Forbidden):
        async with alice.bus.subscribe("agent:bob"):
            pass
    assert await remote.kernel.tenant(TENANT).bus.history("agent:carol") == []


async def test_bad_input_raises_the_kernel_error(remote: Remote) -> None:
    alice = remote.client(remote.alice)
    wire = note().to_wire()
    del wire["payload"]
    with pytest.raises(SchemaViolation) as error:
        await alice.bus.publish(wire)
    assert error.value.code == "SOS-4001"
    with pytest.raises(InvalidToken):
        await remote.client("sk-acme-" + "0" * 32).bus.history("agent:bob")


async def _funded(remote: Remote, owner: str = "agent:alice", amount: int = 10_000) -> MumegaClient:
    admin = remote.client(remote.admin)
    await admin.ledger.open_account("system:treasury", "USD", allow_negative=True)
    for who in ("agent:alice", "agent:bob"):
        await admin.ledger.open_account(who, "USD")
    await admin.ledger.transfer(
        id=f"mint-{owner}", debit="system:treasury", credit=owner, amount=amount, currency="USD"
    )
    return admin


async def test_ledger_transfer_replay_and_insufficient_funds(remote: Remote) -> None:
    await _funded(remote)
    alice = remote.client(remote.alice)
    done = await alice.ledger.transfer(id="t-1", debit="agent:alice", credit="agent:bob", amount=2_500, currency="USD")
    assert (done.status, done.amount, done.replayed) == ("ok", 2_500, False)
    replay = await alice.ledger.transfer(
        id="t-1", debit="agent:alice", credit="agent:bob", amount=2_500, currency="USD"
    )
    assert replay.replayed is True
    assert replay == await remote.kernel.tenant(TENANT).ledger.transfer(
        id="alice/t-1", debit="agent:alice", credit="agent:bob", amount=2_500, currency="USD"
    )  # an agent's ids live in its namespace
    with pytest.raises(IdempotencyConflict):
        await alice.ledger.transfer(id="t-1", debit="agent:alice", credit="agent:bob", amount=1, currency="USD")
    with pytest.raises(InsufficientFunds) as remote_error:
        await alice.ledger.transfer(id="t-2", debit="agent:alice", credit="agent:bob", amount=10**6, currency="USD")
    assert type(remote_error.value) is InsufficientFunds
    assert remote_error.value.code == "SOS-7001"
    balance = await alice.ledger.balance("agent:alice", "USD")
    assert balance == await remote.kernel.tenant(TENANT).ledger.balance("agent:alice", "USD")
    assert balance.available == 7_500
    trusted = remote.kernel.tenant(TENANT).ledger
    assert await alice.ledger.get_transfer("t-1") == await trusted.get_transfer("alice/t-1")
    assert [t.id for t in await alice.ledger.history("agent:alice", "USD")] == ["mint-agent:alice", "alice/t-1"]
    with pytest.raises(Forbidden):
        await alice.ledger.transfer(id="t-3", debit="agent:bob", credit="agent:alice", amount=1, currency="USD")
    await remote.client(remote.admin).ledger.check()


async def test_holds_and_batches(remote: Remote) -> None:
    await _funded(remote)
    alice = remote.client(remote.alice)
    held = await alice.ledger.hold(
        id="h-1", debit="agent:alice", credit="agent:bob", amount=1_000, currency="USD", timeout_s=60
    )
    assert held.state == "pending"
    captured = await alice.ledger.capture("h-1", 400)
    assert captured.amount == 400
    batch = await alice.ledger.transfer_many(
        [
            {"id": "b-1", "debit": "agent:alice", "credit": "agent:bob", "amount": 1, "currency": "USD"},
            {"id": "b-2", "debit": "agent:alice", "credit": "agent:bob", "amount": 2, "currency": "USD"},
        ]
    )
    assert [t.id for t in batch] == ["alice/b-1", "alice/b-2"]
    assert (await alice.ledger.balance("agent:alice", "USD")).available == 10_000 - 400 - 3


async def test_registry_register_and_get(remote: Remote) -> None:
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    card = AgentCard(name="alice", tool="sdk", type="service", role="executor", skills=["summarise"])
    registered = await alice.registry.register(card)
    assert registered.address == "agent:alice"
    assert registered.status == "online"
    found = await bob.registry.get("alice")
    assert found == await remote.kernel.tenant(TENANT).registry.get("alice")
    assert [a.card.name for a in await bob.registry.find(skill="summarise")] == ["alice"]
    assert await bob.registry.status("alice") == "online"
    with pytest.raises(Forbidden):
        await bob.registry.register(AgentCard(name="alice", tool="sdk", type="service", role="executor"))
    await alice.registry.deregister("alice")
    assert await bob.registry.status("alice") is None


async def test_skills_publish_get_and_record_invocation(remote: Remote) -> None:
    await _funded(remote, owner="agent:bob")
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    published = await alice.skills.publish(SKILL)
    assert (published.id, published.version) == ("summarise", "1.0.0")
    assert await bob.skills.get("summarise") == await remote.kernel.tenant(TENANT).skills.get("summarise")
    assert await bob.skills.versions("summarise") == ["1.0.0"]
    invocation_id = str(uuid.uuid4())
    paid = await bob.skills.record_invocation(
        "summarise", caller="agent:bob", tenant=TENANT, invocation_id=invocation_id
    )
    assert (paid.price_micros, paid.replayed, paid.payouts["author"]) == (1_000, False, 1_000)
    again = await bob.skills.record_invocation(
        "summarise", caller="agent:bob", tenant=TENANT, invocation_id=invocation_id
    )
    assert again.replayed is True
    card = await bob.skills.get("summarise")
    assert card.earnings is not None
    assert card.earnings.total_invocations == 1
    assert [c.id for c in await bob.skills.marketplace()] == ["summarise"]
    assert (await alice.ledger.balance("agent:alice", "USD")).available == 1_000


async def test_retries_reuse_the_idempotency_key(remote: Remote) -> None:
    """A response lost after the server acted: the retry (same key) gets the first answer, nothing twice."""

    class LosesFirstResponse(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner
            self.lost = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.url.path == "/v1/bus/send" and not self.lost:
                self.lost += 1
                raise httpx.ReadError("connection reset", request=request)
            return response

    flaky = LosesFirstResponse(httpx.ASGITransport(remote.app))
    async with MumegaClient(BASE_URL, remote.alice, transport=flaky) as alice:
        receipt = await alice.bus.send("agent:alice", "agent:bob", "once")
    assert flaky.lost == 1
    history = await remote.kernel.tenant(TENANT).bus.history("agent:bob")
    assert [m.message_id for m in history] == [receipt.message_id]


def test_the_blocking_client_is_the_async_client_behind_a_portal(tmp_path: Path) -> None:
    """SyncMumegaClient over a real server: same results, same errors, blocking subscribe with ack."""
    from mumega_sdk import SyncMumegaClient

    from .test_live import serve_in_thread

    with serve_in_thread(f"sqlite:///{tmp_path}/sos.db") as live:
        with pytest.raises(InvalidToken):
            SyncMumegaClient(live.url, "sk-acme-" + "0" * 32)
        with SyncMumegaClient(live.url, live.alice) as alice, SyncMumegaClient(live.url, live.bob) as bob:
            assert (alice.tenant, alice.agent) == ("acme", "agent:alice")
            receipt = alice.bus.send("agent:alice", "agent:bob", "blocking hello")
            with pytest.raises(Forbidden):
                alice.bus.send("agent:bob", "agent:alice", "spoofed")
            with bob.bus.subscribe("agent:bob", visibility_timeout_s=5) as sub:
                delivery = sub.receive(timeout_s=5)
                assert delivery is not None
                assert delivery.message.message_id == receipt.message_id
                assert delivery.ack() is True
            assert [m.message_id for m in bob.bus.history("agent:bob")] == [receipt.message_id]


async def test_a_retried_ack_gets_the_first_answer(remote: Remote) -> None:
    """An ack whose answer was lost is retried with the same Idempotency-Key: it answers True again, once applied."""
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    await alice.bus.send("agent:alice", "agent:bob", "ack me")
    async with bob.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        key = {
            "address": "agent:bob",
            "group": delivery.group,
            "position": delivery.position,
            "lease_token": delivery.lease_token,
        }
        headers = {**remote.auth(remote.bob), "idempotency-key": "ack-1"}
        first = await remote.http.post("/v1/bus/ack", json=key, headers=headers)
        retry = await remote.http.post("/v1/bus/ack", json=key, headers=headers)
        assert first.json() == retry.json() == {"acked": True}
        assert retry.headers["idempotent-replayed"] == "true"
        other = await remote.http.post("/v1/bus/ack", json=key, headers={**headers, "idempotency-key": "ack-2"})
        assert other.json() == {"acked": False}  # a new request: the delivery is no longer pending
        assert await sub.receive(timeout_s=0.3) is None


async def test_a_bad_nack_reason_is_refused_by_the_server_as_in_process(remote: Remote) -> None:
    """A raw nack whose reason is too long or holds a control character gets the in-process error, nothing settled."""
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    await alice.bus.send("agent:alice", "agent:bob", "nack me")
    async with bob.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        key = {
            "address": "agent:bob",
            "group": delivery.group,
            "position": delivery.position,
            "lease_token": delivery.lease_token,
        }
        headers = remote.auth(remote.bob)
        for reason, code in (("x" * (NACK_REASON_CHARS_MAX + 1), "SOS-4010"), ("a\nb", "SOS-4005"), ("", "SOS-4005")):
            answer = await remote.http.post("/v1/bus/nack", json={**key, "reason": reason}, headers=headers)
            assert answer.json()["error"]["code"] == code
        assert (
            await remote.kernel.tenant(TENANT).bus.store.nack_reason(
                TENANT, "agent:bob", delivery.group, delivery.position
            )
            is None
        )
        assert await delivery.ack() is True  # still pending, still this stream's


async def test_tokens_through_the_client(remote: Remote) -> None:
    """The tenant admin issues, lists and revokes tokens remotely; agents may not; a revoked token stops at once."""
    admin = await remote.client(remote.admin).connect()
    issued = await admin.tokens.issue(agent="agent:carol", scopes=["bus:read", "bus:write"], label="ci")
    assert issued.secret.startswith(f"sk-{TENANT}-")
    carol = await remote.client(issued.secret).connect()
    assert (carol.agent, carol.scopes) == ("agent:carol", frozenset({"bus:read", "bus:write"}))
    listed = {t.id: t for t in await admin.tokens.list()}
    assert listed[issued.id].label == "ci"
    assert issued.secret not in repr(listed)
    with pytest.raises(Forbidden):
        await carol.tokens.issue(agent="agent:carol")
    await admin.tokens.revoke(issued.id)
    with pytest.raises(InvalidToken):
        await carol.bus.history("agent:carol")
    with pytest.raises(NotFound):
        await admin.tokens.revoke(issued.id)


async def test_only_the_stream_that_received_a_delivery_settles_it(kernel: Kernel) -> None:
    """Another agent of the tenant on the same channel group names the delivery's (address, group, position): with
    no lease token it is refused, with a guessed one it settles nothing and is answered as for a delivery that is
    not pending; the delivery comes back to its holder after the visibility timeout. On every backend."""
    await kernel.tenants.create(TENANT, "scale")
    tokens = kernel.tenant(TENANT).tokens
    alice, bob = (await tokens.issue(agent="agent:alice")).secret, (await tokens.issue(agent="agent:bob")).secret
    app = create_app(kernel)
    transport, bearer = httpx.ASGITransport(app), {"authorization": f"Bearer {bob}"}
    address = "sos:channel:team"
    try:
        async with (
            MumegaClient(BASE_URL, alice, transport=transport) as holder,
            httpx.AsyncClient(base_url=BASE_URL, transport=transport, headers=bearer) as other,
            holder.bus.subscribe(address, group="workers", start="earliest", visibility_timeout_s=0.5) as sub,
        ):
            await holder.bus.send("agent:alice", address, "job")
            delivery = await sub.receive(timeout_s=5)
            assert delivery is not None
            key = {"address": address, "group": "workers", "position": delivery.position}
            refused = await other.post("/v1/bus/ack", json=key)
            assert refused.json()["error"]["code"] == "SOS-4005"
            unknown = {**key, "position": str(int(delivery.position.split("-")[0]) + 1), "lease_token": "x"}
            assert (await other.post("/v1/bus/ack", json=unknown)).json() == {"acked": False}
            for guess in ("x", secrets.token_urlsafe(16), delivery.lease_token[:-1]):
                acked = await other.post("/v1/bus/ack", json={**key, "lease_token": guess})
                nacked = await other.post("/v1/bus/nack", json={**key, "lease_token": guess})
                assert (acked.json(), nacked.json()) == ({"acked": False}, {"nacked": False})
            assert await kernel.tenant(TENANT).bus.store.pending_count(TENANT, address, "workers") == 1
            again = await sub.receive(timeout_s=5)
            assert again is not None
            assert (again.message, again.attempt) == (delivery.message, 2)
            assert again.lease_token != delivery.lease_token
            assert await delivery.ack() is False  # a stale hand-out's token settles nothing either
            assert await again.ack() is True
            assert await kernel.tenant(TENANT).bus.store.pending_count(TENANT, address, "workers") == 0
    finally:
        await app.state.sos.aclose()


@pytest.mark.parametrize("route", ["ack", "nack"])
async def test_a_stale_hand_out_settles_nothing_over_http_even_with_its_own_lease_token(
    kernel: Kernel, route: str
) -> None:
    """A stream's delivery whose lease expired, handed out again elsewhere: its ack (or nack) through the server,
    with the stream's own lease token, is answered False and changes nothing; the new holder acks it. The server
    settles through the same hand-out check as in-process. On every backend."""
    await kernel.tenants.create(TENANT, "scale")
    bob = (await kernel.tenant(TENANT).tokens.issue(agent="agent:bob")).secret
    app = create_app(kernel)
    view = kernel.tenant(TENANT)
    try:
        async with httpx.AsyncClient(
            base_url=BASE_URL, transport=httpx.ASGITransport(app), headers={"authorization": f"Bearer {bob}"}
        ) as http:
            await view.bus.send("agent:alice", "agent:bob", "taken over")
            params = {"address": "agent:bob", "visibility_timeout_s": 0.3, "poll_s": 0, "max_events": 1}
            streamed = await http.get("/v1/bus/subscribe", params=params)  # one delivery; the lease lingers
            [line] = [x for x in streamed.text.splitlines() if x.startswith("data: ") and '"lease_token"' in x]
            first = json.loads(line.removeprefix("data: "))
            async with view.bus.subscribe("agent:bob", consumer="b", visibility_timeout_s=2) as b:
                with anyio.fail_after(5):
                    held = await b.receive()
                assert held is not None
                assert (held.position, held.attempt, first["attempt"]) == (first["position"], 2, 1)
                key = {k: first[k] for k in ("position", "lease_token")} | {"address": "agent:bob", "group": "inbox"}
                answer = await http.post(f"/v1/bus/{route}", json=key)
                assert answer.json() == {f"{route}ed": False}
                assert await view.bus.pending("agent:bob", group="inbox") == 1
                assert await b.receive(timeout_s=0.5) is None  # not made due again under b's feet
                assert await held.ack() is True
    finally:
        await app.state.sos.aclose()


def _reply_key(delivery: Any, text: str) -> dict[str, str]:
    return {
        "address": delivery.address,
        "group": delivery.group,
        "position": delivery.position,
        "lease_token": delivery.lease_token,
        "text": text,
    }


async def test_a_delivery_reply_is_one_call_stored_and_acked_together_or_not_at_all(
    remote: Remote, tmp_path: Path
) -> None:
    """RemoteDelivery.reply is POST /v1/bus/reply-ack: refused with nothing stored when the delivery is no longer
    held, nothing stored and still pending when the engine fails inside the step, one reply when two race."""
    alice, bob = remote.client(remote.alice), remote.client(remote.bob)
    headers = remote.auth(remote.bob)
    trusted = remote.kernel.tenant(TENANT).bus
    for text in ("acked elsewhere", "engine fails", "raced"):
        await alice.bus.send("agent:alice", "agent:bob", text)
    async with bob.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        acked, failing, raced = [await sub.receive(timeout_s=5) for _ in range(3)]
        assert acked is not None
        assert failing is not None
        assert raced is not None
        elsewhere = {k: v for k, v in _reply_key(acked, "").items() if k != "text"}
        assert (await remote.http.post("/v1/bus/ack", json=elsewhere, headers=headers)).json() == {"acked": True}
        with pytest.raises(InvalidArgument) as info:
            await acked.reply("late")
        assert (info.value.code, info.value.message) == ("SOS-4005", UNHELD_REPLY)

        with sqlite3.connect(tmp_path / "sos.db") as c:
            c.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON bus_entries WHEN NEW.address = 'agent:alice'"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with pytest.raises(BackendFailure):
            await failing.reply("not stored")
        assert await trusted.pending("agent:bob", group=sub.group) == 2
        with sqlite3.connect(tmp_path / "sos.db") as c:
            c.execute("DROP TRIGGER refuse")
        assert await trusted.history("agent:alice") == []
        assert (await failing.reply("stored")).address == "agent:alice"  # still held: one call answers and acks

        async def post(text: str) -> httpx.Response:
            return await remote.http.post("/v1/bus/reply-ack", json=_reply_key(raced, text), headers=headers)

        answers: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            for text in ("one", "two"):
                tg.start_soon(lambda t=text: _append(answers, post(t)))
        assert sorted(a.status_code for a in answers) == [200, 400]
        assert await trusted.pending("agent:bob", group=sub.group) == 0
    texts = [m.payload.text for m in await trusted.history("agent:alice")]  # type: ignore[attr-defined]
    assert sorted(texts) in (["one", "stored"], ["stored", "two"])


async def _append(out: list[Any], awaitable: Any) -> None:
    out.append(await awaitable)
