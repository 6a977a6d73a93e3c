"""``Idempotency-Key`` records on every backend: bounded per tenant and per principal, durable where the store is,
and one run for concurrent duplicates. The server runs in-process (ASGI) over a kernel on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.replies import ReplyBounds
from sos_kernel.server import create_app

from ..conftest import requires

pytestmark = pytest.mark.anyio

BASE_URL = "http://sos.test"
SMALL = ReplyBounds(principal_keys_max=3, tenant_keys_max=5, ttl_s=3600.0, running_s=60.0)


@asynccontextmanager
async def served(kernel: sos_kernel.Kernel, bounds: ReplyBounds = SMALL) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(kernel, idempotency=bounds)
    async with httpx.AsyncClient(base_url=BASE_URL, transport=httpx.ASGITransport(app)) as http:
        try:
            yield http
        finally:
            await app.state.sos.aclose()


async def _tokens(kernel: sos_kernel.Kernel, tenant: str, *agents: str) -> list[str]:
    await kernel.tenants.create(tenant, "scale")
    tokens = kernel.tenant(tenant).tokens
    return [(await tokens.issue(agent=f"agent:{a}")).secret for a in agents]


async def send(http: httpx.AsyncClient, token: str, source: str, key: str, text: str = "once") -> httpx.Response:
    body = {"source": f"agent:{source}", "target": "agent:inbox", "text": text}
    headers = {"authorization": f"Bearer {token}", "idempotency-key": key}
    return await http.post("/v1/bus/send", json=body, headers=headers)


async def delivered(kernel: sos_kernel.Kernel, tenant: str) -> int:
    return len(await kernel.tenant(tenant).bus.history("agent:inbox"))


async def test_another_tenants_keyed_requests_never_evict_yours(kernel: sos_kernel.Kernel) -> None:
    (alice,) = await _tokens(kernel, "acme", "alice")
    (mallory,) = await _tokens(kernel, "evil", "mallory")
    async with served(kernel) as http:
        first = await send(http, alice, "alice", "pay-1")
        for i in range(4 * SMALL.tenant_keys_max):
            assert (await send(http, mallory, "mallory", f"flood-{i}")).status_code == 200
        retry = await send(http, alice, "alice", "pay-1")
    assert retry.headers.get("idempotent-replayed") == "true"
    assert retry.json() == first.json()
    assert await delivered(kernel, "acme") == 1


async def test_another_agents_keyed_requests_never_evict_yours(kernel: sos_kernel.Kernel) -> None:
    """An agent's flood drops only its own oldest keys (the principal bound keeps it under the tenant bound)."""
    alice, bob = await _tokens(kernel, "acme", "alice", "bob")
    async with served(kernel) as http:
        await send(http, alice, "alice", "pay-1")
        for i in range(4 * SMALL.tenant_keys_max):
            await send(http, bob, "bob", f"flood-{i}")
        retry = await send(http, alice, "alice", "pay-1")
        assert retry.headers.get("idempotent-replayed") == "true"
        # bob's own oldest keys went: his first key runs again, his latest is still replayed
        assert (await send(http, bob, "bob", "flood-0")).headers.get("idempotent-replayed") is None
        latest = await send(http, bob, "bob", f"flood-{4 * SMALL.tenant_keys_max - 1}")
        assert latest.headers.get("idempotent-replayed") == "true"


async def test_past_the_tenant_bound_the_tenants_oldest_key_goes(kernel: sos_kernel.Kernel) -> None:
    tokens = await _tokens(kernel, "acme", *(f"a{i}" for i in range(SMALL.tenant_keys_max + 1)))
    async with served(kernel) as http:
        for i, token in enumerate(tokens):
            await send(http, token, f"a{i}", "k")
        assert (await send(http, tokens[-1], f"a{len(tokens) - 1}", "k")).headers.get("idempotent-replayed")
        assert (await send(http, tokens[0], "a0", "k")).headers.get("idempotent-replayed") is None
    assert await delivered(kernel, "acme") == len(tokens) + 1


async def test_a_retry_after_a_server_restart_is_replayed(kernel_url: str, implements: Implements) -> None:
    requires(implements, durable=True)
    async with sos_kernel.open(kernel_url) as kernel:
        (alice,) = await _tokens(kernel, "acme", "alice")
        async with served(kernel) as http:
            first = await send(http, alice, "alice", "pay-1")
    async with sos_kernel.open(kernel_url) as kernel, served(kernel) as http:
        retry = await send(http, alice, "alice", "pay-1")
        conflict = await send(http, alice, "alice", "pay-1", text="other")
        assert (retry.status_code, retry.json()) == (200, first.json())
        assert retry.headers.get("idempotent-replayed") == "true"
        assert conflict.json()["error"]["code"] == "SOS-4009"
        assert await delivered(kernel, "acme") == 1


async def _at_once(*calls: Any) -> list[httpx.Response]:
    answers: list[httpx.Response] = []

    async def one(call: Any) -> None:
        answers.append(await call())

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(one, call)
    return answers


async def test_identical_keyed_requests_at_once_deliver_once(kernel: sos_kernel.Kernel) -> None:
    (alice,) = await _tokens(kernel, "acme", "alice")
    async with served(kernel) as http:
        answers = await _at_once(*(lambda: send(http, alice, "alice", "pay-1") for _ in range(5)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert sorted(a.headers.get("idempotent-replayed", "") for a in answers) == ["", *["true"] * 4]
    assert await delivered(kernel, "acme") == 1


async def test_two_servers_on_one_store_share_the_keys(kernel_url: str, implements: Implements) -> None:
    """Requests with one key sent at once to two servers (two kernels on one store) run once."""
    requires(implements, multi_process=True)
    async with sos_kernel.open(kernel_url) as one, sos_kernel.open(kernel_url) as two:
        (alice,) = await _tokens(one, "acme", "alice")
        async with served(one) as first, served(two) as second:
            answers = await _at_once(
                *(lambda http=http: send(http, alice, "alice", "pay-1") for http in (first, second, first, second))
            )
        assert len({(a.status_code, a.text) for a in answers}) == 1
        assert await delivered(one, "acme") == 1


async def test_a_replay_is_answered_only_to_a_token_that_may_make_the_call(kernel: sos_kernel.Kernel) -> None:
    (alice,) = await _tokens(kernel, "acme", "alice")
    tokens = kernel.tenant("acme").tokens
    reader = await tokens.issue(agent="agent:alice", scopes=["bus:read"])
    async with served(kernel) as http:
        assert (await send(http, alice, "alice", "pay-1")).status_code == 200
        refused = await send(http, reader.secret, "alice", "pay-1")  # the same agent, without bus:write
        assert refused.status_code == 403
        assert "idempotent-replayed" not in refused.headers
        await tokens.revoke(next(t.id for t in await tokens.list() if t.id != reader.id and t.agent == "agent:alice"))
        revoked = await send(http, alice, "alice", "pay-1")
        assert revoked.status_code == 401
        assert revoked.json()["error"]["code"] == "SOS-5002"
    assert await delivered(kernel, "acme") == 1
