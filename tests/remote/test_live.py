"""A real uvicorn server on 127.0.0.1 (a thread with its own event loop and its own kernel on a SQLite file)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import uvicorn

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import Forbidden
from sos_kernel.server import create_app

from .conftest import TENANT

pytestmark = pytest.mark.anyio


@dataclass
class Live:
    url: str
    alice: str
    bob: str


async def _seed(db_url: str) -> tuple[str, str]:
    async with sos_kernel.open(db_url) as kernel:
        await kernel.tenants.create(TENANT, "scale")
        tokens = kernel.tenant(TENANT).tokens
        alice = await tokens.issue(agent="agent:alice")
        bob = await tokens.issue(agent="agent:bob")
        return alice.secret, bob.secret


class ServerThread(threading.Thread):
    """uvicorn serving ``create_app`` over its own kernel, until ``stop()``."""

    def __init__(self, db_url: str, sock: socket.socket) -> None:
        super().__init__(name="sos-live-server", daemon=True)
        self.db_url = db_url
        self.sock = sock
        self.server: uvicorn.Server | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        async with sos_kernel.open(self.db_url) as kernel:
            app = create_app(kernel, ping_s=0.5)
            config = uvicorn.Config(app, http="h11", ws="none", lifespan="on", log_level="warning")
            self.server = uvicorn.Server(config)
            serving = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
            while not self.server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
                await asyncio.sleep(0.01)
            self.ready.set()
            await serving

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.join(15)


@contextmanager
def serve_in_thread(db_url: str) -> Iterator[Live]:
    """A real uvicorn server on a free loopback port over a seeded kernel on ``db_url``, stopped on exit."""
    alice, bob = anyio.run(_seed, db_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = ServerThread(db_url, sock)
    thread.start()
    try:
        assert thread.ready.wait(15), "the server did not start"
        if thread.error is not None:
            raise thread.error
        yield Live(f"http://127.0.0.1:{port}", alice, bob)
    finally:
        thread.stop()
        sock.close()
    assert not thread.is_alive()
    if thread.error is not None:
        raise thread.error


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
