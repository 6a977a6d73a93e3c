"""A real uvicorn server on 127.0.0.1 (a thread with its own event loop and its own kernel on a SQLite file)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import Forbidden, InvalidToken

from ..live_server import running_server
from .conftest import TENANT

pytestmark = pytest.mark.anyio


@dataclass
class Live:
    url: str
    alice: str
    bob: str
    admin: str = ""
    bob_id: str = ""
    db_url: str = ""


async def _seed(db_url: str) -> tuple[str, str, str, str]:
    async with sos_kernel.open(db_url) as kernel:
        _, admin = await kernel.tenants.create(TENANT, "scale")
        tokens = kernel.tenant(TENANT).tokens
        alice = await tokens.issue(agent="agent:alice")
        bob = await tokens.issue(agent="agent:bob")
        return alice.secret, bob.secret, admin, bob.id


@contextmanager
def serve_in_thread(db_url: str, **app_options: Any) -> Iterator[Live]:
    """A real server over a seeded kernel on ``db_url`` (see ``tests/live_server.py``)."""
    alice, bob, admin, bob_id = anyio.run(_seed, db_url)
    with running_server(db_url, app_options=app_options) as url:
        yield Live(url, alice, bob, admin, bob_id, db_url)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with serve_in_thread(f"sqlite:///{tmp_path}/live.db") as found:
        yield found


async def test_publish_and_history_over_a_real_server(live: Live) -> None:
    message = SendMessage(source="agent:alice", target="agent:bob", payload=SendPayload(text="over TCP"))
    async with MumegaClient(live.url, live.alice) as alice, MumegaClient(live.url, live.bob) as bob:
        receipt = await alice.bus.publish(message)
        assert receipt.message_id == message.message_id
        assert await bob.bus.history_entries("agent:bob") == [(receipt.position, message)]
        with pytest.raises(Forbidden):
            await alice.bus.history("agent:bob")


async def test_a_stream_delivers_as_it_happens(live: Live) -> None:
    async with MumegaClient(live.url, live.alice) as alice, MumegaClient(live.url, live.bob) as bob:
        assert bob.streaming
        async with bob.bus.subscribe("agent:bob", visibility_timeout_s=5) as sub:
            receipt = await alice.bus.send("agent:alice", "agent:bob", "live")
            with anyio.fail_after(5):
                delivery = await sub.receive()
            assert delivery is not None
            assert (delivery.message.message_id, delivery.position) == (receipt.message_id, receipt.position)
            assert await delivery.ack() is True
            assert await sub.receive(timeout_s=1.2) is None  # idle across a keep-alive ping


class DropsTheFirstStream(httpx.AsyncBaseTransport):
    """A real network transport whose first subscription stream breaks right after its first delivery event."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.streams = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/v1/bus/subscribe":
            return response
        self.streams += 1
        if self.streams > 1:
            return response
        inner = response.stream
        if not isinstance(inner, httpx.AsyncByteStream):
            raise TypeError("expected an async stream")

        class Cut(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                seen = b""
                async for chunk in inner:
                    yield chunk
                    seen += chunk
                    if b"event: delivery" in seen:
                        raise httpx.ReadError("the connection dropped")

            async def aclose(self) -> None:
                await inner.aclose()

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut(), request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_dropped_stream_reconnects_from_its_last_position(live: Live) -> None:
    """The client reconnects (same lease, Last-Event-ID) and every message arrives once: nothing lost."""
    transport = DropsTheFirstStream()
    async with (
        MumegaClient(live.url, live.alice) as alice,
        MumegaClient(live.url, live.bob, transport=transport) as bob,
    ):
        sent = [(await alice.bus.send("agent:alice", "agent:bob", f"m{i}")).message_id for i in range(3)]
        got: list[str] = []
        async with bob.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
            with anyio.fail_after(10):
                while len(got) < len(sent):
                    delivery = await sub.receive()
                    assert delivery is not None
                    got.append(delivery.message.message_id)
                    assert await delivery.ack() is True
            assert await sub.receive(timeout_s=0.5) is None
        assert got == sent
        assert transport.streams == 2


STREAM_PREFETCH = 4


@pytest.fixture
def live_slow_ping(tmp_path: Path) -> Iterator[Live]:
    """A live server whose idle streams ping once a minute: only the token timer can end a stream sooner."""
    with serve_in_thread(f"sqlite:///{tmp_path}/live.db", ping_s=60.0) as found:
        yield found


async def _stream_after_revocation(live: Live, revoke: Any, *, busy: bool) -> int:
    """Deliveries bob's stream gives after ``revoke()`` returns, until the stream ends with SOS-5002."""
    after = 0
    async with (
        MumegaClient(live.url, live.alice) as alice,
        MumegaClient(live.url, live.bob) as bob,
        anyio.create_task_group() as tg,
    ):

        async def flow() -> None:
            while True:
                await alice.bus.send("agent:alice", "agent:bob", "busy")
                await anyio.sleep(0.005)

        async with bob.bus.subscribe("agent:bob", visibility_timeout_s=30, prefetch=STREAM_PREFETCH) as sub:
            if busy:
                tg.start_soon(flow)
                for _ in range(20):  # the stream is flowing
                    with anyio.fail_after(5):
                        assert await sub.receive() is not None
            await revoke()
            with anyio.fail_after(5):
                while True:
                    try:
                        if await sub.receive() is None:
                            pytest.fail("the stream ended without the token's error")
                    except InvalidToken:
                        break
                    after += 1
            tg.cancel_scope.cancel()
    return after


async def test_a_busy_stream_stops_delivering_once_its_token_is_revoked(live_slow_ping: Live) -> None:
    """Revoked through the server: the stream's next delivery check fails; only what was already in flight to the
    client (its prefetch buffer and the socket) still arrives."""
    live = live_slow_ping

    async def revoke() -> None:
        async with MumegaClient(live.url, live.admin) as admin:
            await admin.tokens.revoke(live.bob_id)

    after = await _stream_after_revocation(live, revoke, busy=True)
    assert after <= 2 * STREAM_PREFETCH + 2, after


async def test_an_idle_stream_ends_within_the_token_cache_ttl_of_a_revocation_elsewhere(
    live_slow_ping: Live,
) -> None:
    """Revoked by another process on the same file, with no traffic and no ping due for a minute: the stream's
    timer re-checks the token within TOKEN_CACHE_TTL_S and ends it."""
    live = live_slow_ping

    async def revoke() -> None:
        async with sos_kernel.open(live.db_url) as kernel:
            await kernel.tenant(TENANT).tokens.revoke(live.bob_id)

    assert await _stream_after_revocation(live, revoke, busy=False) == 0


def test_a_deeply_nested_body_is_a_clear_refusal_on_every_json_route(live: Live) -> None:
    from sos_kernel.server._bodies import JSON_DEPTH_MAX

    deep = [("[" * n + "]" * n).encode() for n in (JSON_DEPTH_MAX + 1, 5000)]
    deep.append(('{"a":' * 5000 + "1" + "}" * 5000).encode())
    with httpx.Client(base_url=live.url, timeout=30) as client:
        paths = client.get("/openapi.json").json()["paths"]
        posts = [p for p, ops in paths.items() if "post" in ops and "{" not in p]
        assert "/v1/engine/chat/stream" in posts
        assert "/v1/ledger/transfer" in posts
        headers = {"Authorization": f"Bearer {live.admin}", "content-type": "application/json"}
        for path in posts:
            for body in deep:
                answer = client.post(path, content=body, headers=headers)
                assert answer.status_code < 500, (path, answer.status_code, answer.text[:200])
                assert "error" in answer.json(), (path, answer.text[:200])
        for body in deep:  # the kernel's own parse answers with its own code
            error = client.post("/v1/ledger/transfer", content=body, headers=headers).json()["error"]
            assert error["code"] == "SOS-4001"
            assert str(JSON_DEPTH_MAX) in error["message"]
