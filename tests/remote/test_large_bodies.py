"""Large request bodies on a SQLite-backed server: they do not hold up small calls, and only so many run at once."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import anyio
import httpx
import pytest

from sos_kernel.contracts import AnnounceMessage, AnnouncePayload
from sos_kernel.server import LARGE_BODY_BYTES_MIN, create_app

from .conftest import BASE_URL, Remote

pytestmark = pytest.mark.anyio

LARGE_TEXT_BYTES = 8 * 1024 * 1024


def large_publish() -> dict[str, Any]:
    """A publish body of LARGE_TEXT_BYTES: an announce's text has no bound of its own, so it travels in chunks."""
    payload = AnnouncePayload(text="x" * LARGE_TEXT_BYTES)
    message = AnnounceMessage(source="agent:alice", target="agent:bob", payload=payload).to_wire()
    return {"message": {**message, "message_id": str(uuid.uuid4())}}


async def _until(check: Any) -> None:
    # the server's limiter has no event to wait on: look again every millisecond
    with anyio.fail_after(30):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.001)


async def test_a_large_publish_stores_off_the_event_loop_while_small_calls_complete(remote: Remote) -> None:
    # Another connection holds the file's write lock, so the large publish's store work waits where it runs: in the
    # engine's worker thread, with the event loop free to answer others meanwhile.
    engine = remote.kernel.backend.engine  # type: ignore[attr-defined]
    auth = remote.auth(remote.alice)
    large_done = anyio.Event()

    async def large() -> None:
        response = await remote.http.post("/v1/bus/publish", json=large_publish(), headers=auth, timeout=120)
        assert response.status_code == 200, response.text
        large_done.set()

    holder = sqlite3.connect(engine.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(large)
            await _until(lambda: engine.thread_busy)  # the large append waits for the lock in the worker thread
            for _ in range(3):
                small = await remote.http.get("/health")
                assert small.status_code == 200
            assert not large_done.is_set()
            holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert large_done.is_set()


async def test_past_large_bodies_max_a_large_body_waits_its_turn(remote: Remote) -> None:
    app = create_app(remote.kernel, large_bodies_max=1, large_bodies_per_tenant_max=2)
    large_bodies = app.state.sos.large_bodies
    auth = remote.auth(remote.alice)
    finished: list[int] = []
    try:
        async with (
            httpx.AsyncClient(base_url=BASE_URL, transport=httpx.ASGITransport(app), timeout=120) as http,
            anyio.create_task_group() as tg,
        ):

            async def publish(n: int) -> None:
                response = await http.post("/v1/bus/publish", json=large_publish(), headers=auth)
                assert response.status_code == 200, response.text
                finished.append(n)

            tg.start_soon(publish, 1)
            await _until(lambda: large_bodies.borrowed_tokens == 1)
            tg.start_soon(publish, 2)
            await _until(lambda: large_bodies.statistics().tasks_waiting == 1)
            assert finished == []  # one is processed, the other waits unread
            small = await http.get("/v1/session", headers=auth)  # a small body never waits for a turn
            assert small.status_code == 200
            assert finished == []
    finally:
        await app.state.sos.aclose()
    assert finished == [1, 2]
    assert LARGE_BODY_BYTES_MIN < LARGE_TEXT_BYTES


async def test_one_tenant_holds_at_most_its_share_of_the_large_body_turns(remote: Remote) -> None:
    _, other_admin = await remote.kernel.tenants.create("globex", "scale")
    app = create_app(remote.kernel, large_bodies_max=4, large_bodies_per_tenant_max=1)
    large_bodies = app.state.sos.large_bodies
    statuses: list[int] = []
    try:
        async with (
            httpx.AsyncClient(base_url=BASE_URL, transport=httpx.ASGITransport(app), timeout=120) as http,
            anyio.create_task_group() as tg,
        ):

            async def publish(token: str, source: str) -> None:
                body = large_publish()
                body["message"]["source"] = source
                response = await http.post("/v1/bus/publish", json=body, headers=remote.auth(token))
                statuses.append(response.status_code)

            tg.start_soon(publish, remote.alice, "agent:alice")
            await _until(lambda: large_bodies.borrowed_tokens == 1)
            tg.start_soon(publish, remote.bob, "agent:bob")  # the same tenant: waits for its tenant's turn
            await anyio.sleep(0.05)
            assert large_bodies.borrowed_tokens == 1
            tg.start_soon(publish, other_admin, "agent:carol")  # another tenant: a server turn is left for it
            await _until(lambda: large_bodies.borrowed_tokens == 2 or len(statuses) > 0)
    finally:
        await app.state.sos.aclose()
    assert statuses == [200, 200, 200]


async def test_a_large_body_is_read_only_for_a_token_that_gives_a_session(remote: Remote) -> None:
    app = create_app(remote.kernel)
    large_bodies = app.state.sos.large_bodies
    try:
        async with httpx.AsyncClient(base_url=BASE_URL, transport=httpx.ASGITransport(app), timeout=60) as http:
            for headers in ({}, {"authorization": "Bearer sk-nobody-00000000000000000000000000000000"}):
                response = await http.post("/v1/bus/publish", json=large_publish(), headers=headers)
                assert response.status_code == 401, response.text
                assert response.json()["error"]["code"] in ("SOS-5001", "SOS-5002")
            assert large_bodies.borrowed_tokens == 0
    finally:
        await app.state.sos.aclose()


async def test_a_large_body_that_does_not_arrive_in_time_gives_its_turn_back(remote: Remote) -> None:
    app = create_app(remote.kernel, body_read_s_max=0.2)
    large_bodies = app.state.sos.large_bodies
    size = LARGE_BODY_BYTES_MIN * 2

    async def trickle() -> Any:
        yield b"x" * (LARGE_BODY_BYTES_MIN + 1)  # large from here on: a turn is taken
        await anyio.sleep(1.0)
        yield b"x" * (size - LARGE_BODY_BYTES_MIN - 1)

    try:
        async with httpx.AsyncClient(base_url=BASE_URL, transport=httpx.ASGITransport(app), timeout=60) as http:
            headers = {**remote.auth(remote.alice), "content-type": "application/json"}
            response = await http.post("/v1/bus/publish", content=trickle(), headers=headers)
        assert response.status_code == 408
        assert response.json()["error"]["details"]["limit"] == "body_read_s_max"
        assert large_bodies.borrowed_tokens == 0
    finally:
        await app.state.sos.aclose()
