"""The A2A endpoint of a real uvicorn server on 127.0.0.1, exercised by the a2a-sdk's own client, on SQLite and
Redis: the card at the well-known path, send, stream, get task, timeouts, tokens, opt-in, tenant isolation,
bounds, and the reverse client (a kernel agent asking a remote A2A agent through ``A2AAgent``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_artifact_text, get_data_parts, get_message_text, new_text_message
from a2a.server.jsonrpc_models import JSONParseError
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.utils import AGENT_CARD_WELL_KNOWN_PATH
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, VERSION_HEADER
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

import sos_kernel
from sos_kernel.contracts import AgentCard
from sos_kernel.errors import AskTimeout, BackendFailure, BackendUnavailable
from sos_kernel.integrations.a2a import A2A_PATH, TASK_HEADER, TASK_KEY, A2AAgent

from ..live_server import running_server

pytestmark = pytest.mark.anyio

LIMITS = {"requests_max": 2, "asks_max": 2, "tasks_max": 4}
SERVE_START_S = 30.0


def card(name: str) -> AgentCard:
    return AgentCard(name=name, tool="sdk", type="service", role="specialist", summary=f"{name} answers")


@dataclass
class Deployment:
    kernel: sos_kernel.Kernel
    base: str
    tokens: dict[str, str]

    def url(self, agent: str, tenant: str = "acme") -> str:
        return f"{self.base}{A2A_PATH}/{tenant}/{agent}/"


@pytest.fixture(params=["sqlite", "redis"])
async def kernel_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sos.db"
    import redis

    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
async def kernel(kernel_url: str) -> AsyncIterator[sos_kernel.Kernel]:
    async with sos_kernel.open(kernel_url) as k:
        yield k


@pytest.fixture
def served(kernel: sos_kernel.Kernel) -> Iterator[str]:
    with running_server(kernel.url, a2a=LIMITS) as base:
        yield base


@pytest.fixture
async def deployed(kernel: sos_kernel.Kernel, served: str) -> Deployment:
    return await seed(kernel, served)


async def seed(kernel: sos_kernel.Kernel, served: str) -> Deployment:
    """Tenant acme: bob and dave serve A2A, carol did not opt in, alice calls; tenant globex: eve."""
    tokens: dict[str, str] = {}
    for slug, names in (("acme", ("alice", "bob", "carol", "dave")), ("globex", ("eve",))):
        _, tokens[f"{slug}-admin"] = await kernel.tenants.create(slug, plan="scale")
        view = kernel.tenant(slug)
        for name in names:
            tokens[name] = (await view.tokens.issue(agent=f"agent:{name}")).secret
    acme = kernel.tenant("acme")
    await acme.registry.register(card("bob"), a2a=True)
    await acme.registry.register(card("dave"), a2a=True)
    await acme.registry.register(card("carol"))
    await kernel.tenant("globex").registry.register(card("bob"), a2a=True)  # same name, other tenant
    return Deployment(kernel, served, tokens)


async def answering(kernel: sos_kernel.Kernel, agent: str, tenant: str = "acme") -> None:
    """``agent`` answers every ask in its inbox with ``<agent> says: <question>``."""
    bus = kernel.tenant(tenant).bus
    async with bus.subscribe(f"agent:{agent}") as subscription:
        async for delivery in subscription:
            message = delivery.message
            await bus.reply(message, f"{agent} says: {message.payload.question}", source=f"agent:{agent}")
            await delivery.ack()


@asynccontextmanager
async def a2a_client(
    url: str, token: str | None, *, streaming: bool = False, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Client]:
    """The a2a-sdk client of the agent at ``url``, from its card, sending ``token`` as the bearer (over
    ``transport`` when given, e.g. an app in process)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers, timeout=60, transport=transport) as http:
        agent_card = await A2ACardResolver(http, url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(agent_card)
        try:
            yield client
        finally:
            await client.close()


def request(text: str, *, timeout_s: float | None = None, wait: bool = True) -> SendMessageRequest:
    metadata = Struct()
    if timeout_s is not None:
        metadata.update({"timeout_s": timeout_s})
    return SendMessageRequest(
        message=new_text_message(text, role=Role.ROLE_USER),
        configuration=SendMessageConfiguration(return_immediately=not wait),
        metadata=metadata,
    )


async def final_task(client: Client, req: SendMessageRequest) -> tuple[Task, list[Any]]:
    events = [event async for event in client.send_message(req)]
    tasks = [e.task for e in events if e.HasField("task")]
    assert tasks, events
    return tasks[-1], events


async def test_the_card_is_at_the_well_known_path_of_the_agents_base(deployed: Deployment) -> None:
    url = deployed.url("bob")
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {deployed.tokens['alice']}"}) as http:
        answer = await http.get(url.rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH)
        assert answer.status_code == 200, answer.text
        agent_card = await A2ACardResolver(http, url).get_agent_card()
    assert agent_card.name == "bob"
    assert agent_card.description == "bob answers"
    assert [(i.url, i.protocol_binding) for i in agent_card.supported_interfaces] == [(url, "JSONRPC")]
    assert agent_card.capabilities.streaming
    assert agent_card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert "tenant" not in json.dumps(answer.json()["capabilities"])  # local details never exported
    # built from the request's Host: no cache may keep it, or hand it to a client that used another Host
    assert (answer.headers["cache-control"], answer.headers["vary"]) == ("no-store", "Host, Authorization")


async def test_with_a_public_url_the_card_ignores_the_requests_host(kernel: sos_kernel.Kernel) -> None:
    with running_server(kernel.url, a2a={**LIMITS, "public_url": "https://agents.example.com/"}) as base:
        deployed = await seed(kernel, base)
        headers = {"authorization": f"Bearer {deployed.tokens['alice']}", "host": "evil.example.net"}
        async with httpx.AsyncClient(headers=headers) as http:
            answer = await http.get(deployed.url("bob").rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH)
    assert answer.status_code == 200, answer.text
    urls = [i["url"] for i in answer.json()["supportedInterfaces"]]
    assert urls == [f"https://agents.example.com{A2A_PATH}/acme/bob/"]
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("url", ["agents.example.com", "ftp://agents.example.com", "https://a.example.com/?x=1"])
def test_a_public_url_must_be_an_absolute_http_url(url: str) -> None:
    from fastapi import FastAPI

    from sos_kernel.errors import InvalidArgument
    from sos_kernel.integrations.a2a import mount

    app = FastAPI()
    app.state.sos = None
    with pytest.raises(InvalidArgument, match="public_url"):
        mount(app, public_url=url)
    assert not [r for r in app.router.routes if A2A_PATH in getattr(r, "path", "")]  # nothing mounted


async def test_send_is_an_ask_from_the_callers_agent_answered_with_the_reply(deployed: Deployment) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(answering, deployed.kernel, "bob")
        async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as client:
            task, _ = await final_task(client, request("what is 6 x 7?"))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert [get_artifact_text(a) for a in task.artifacts] == ["bob says: what is 6 x 7?"]
            assert get_message_text(task.status.message) == "bob says: what is 6 x 7?"
            fetched = await client.get_task(GetTaskRequest(id=task.id))
            assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
            assert [get_artifact_text(a) for a in fetched.artifacts] == ["bob says: what is 6 x 7?"]
        tg.cancel_scope.cancel()
    asks = [m for m in await deployed.kernel.tenant("acme").bus.history("agent:bob") if m.type == "ask"]
    assert [(m.source, m.payload.question) for m in asks] == [("agent:alice", "what is 6 x 7?")]


async def test_stream_reports_the_task_working_then_completed_with_the_reply(deployed: Deployment) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(answering, deployed.kernel, "bob")
        async with a2a_client(deployed.url("bob"), deployed.tokens["alice"], streaming=True) as client:
            events = [event async for event in client.send_message(request("stream it"))]
        tg.cancel_scope.cancel()
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert states[0] == TaskState.TASK_STATE_WORKING
    assert states[-1] == TaskState.TASK_STATE_COMPLETED
    artifacts = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
    assert [get_artifact_text(a) for a in artifacts] == ["bob says: stream it"]


async def test_no_reply_in_time_fails_the_task_with_the_timeout_reason(deployed: Deployment) -> None:
    async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as client:
        task, _ = await final_task(client, request("anyone?", timeout_s=0.3))
        assert task.status.state == TaskState.TASK_STATE_FAILED
        assert get_message_text(task.status.message).startswith("SOS-6004")
        too_long, _ = await final_task(client, request("wait a day", timeout_s=86_400))
        assert too_long.status.state == TaskState.TASK_STATE_REJECTED
        assert get_message_text(too_long.status.message).startswith("SOS-4005")
        assert "timeout_s" in get_message_text(too_long.status.message)


@pytest.mark.parametrize("token", [None, "sk-not-a-token"])
async def test_a_missing_or_bad_token_gets_401_with_the_sos_code(deployed: Deployment, token: str | None) -> None:
    url = deployed.url("bob")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers) as http:
        got = await http.get(url.rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH)
        posted = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}})
    code = "SOS-5001" if token is None else "SOS-5002"
    assert (got.status_code, got.json()["error"]["code"]) == (401, code)
    assert posted.status_code == 401
    assert posted.json()["error"]["data"]["error"]["code"] == code
    assert posted.json()["error"]["message"].startswith(code)
    with pytest.raises(A2AClientError):
        async with a2a_client(url, token):
            pass


async def _refusals(deployed: Deployment, token: str, url: str) -> tuple[httpx.Response, httpx.Response]:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as http:
        got = await http.get(url.rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH)
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}}
        posted = await http.post(url, json=body)
    return got, posted


@pytest.mark.parametrize("agent", ["carol", "nobody"])
async def test_an_agent_that_did_not_opt_in_has_no_endpoint(deployed: Deployment, agent: str) -> None:
    got, posted = await _refusals(deployed, deployed.tokens["alice"], deployed.url(agent))
    assert (got.status_code, got.json()["error"]["code"]) == (404, "SOS-4040")
    assert (posted.status_code, posted.json()["error"]["data"]["error"]["code"]) == (404, "SOS-4040")
    assert await deployed.kernel.tenant("acme").bus.history("agent:carol") == []


async def test_opting_out_by_re_registering_removes_the_endpoint(deployed: Deployment) -> None:
    await deployed.kernel.tenant("acme").registry.register(card("bob"))
    got, _ = await _refusals(deployed, deployed.tokens["alice"], deployed.url("bob"))
    assert got.status_code == 404


async def test_tenant_b_gets_nothing_of_tenant_a(deployed: Deployment) -> None:
    eve = deployed.tokens["eve"]
    got, posted = await _refusals(deployed, eve, deployed.url("bob", tenant="acme"))
    assert (got.status_code, posted.status_code) == (404, 404)
    unknown, _ = await _refusals(deployed, deployed.tokens["alice"], deployed.url("nobody"))
    assert got.json()["error"]["code"] == unknown.json()["error"]["code"] == "SOS-4040"  # the same answer
    assert await deployed.kernel.tenant("acme").bus.history("agent:bob") == []
    async with a2a_client(deployed.url("bob", tenant="globex"), eve) as client:  # globex's own bob is served
        task, _ = await final_task(client, request("hi", timeout_s=0.2))
        assert task.status.state == TaskState.TASK_STATE_FAILED


async def test_a_task_is_seen_only_by_the_agent_that_made_it(deployed: Deployment) -> None:
    async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as alice:
        task, _ = await final_task(alice, request("mine", timeout_s=0.2))
    for token, agent in ((deployed.tokens["carol"], "bob"), (deployed.tokens["alice"], "dave")):
        async with a2a_client(deployed.url(agent), token) as other:
            with pytest.raises(TaskNotFoundError):
                await other.get_task(GetTaskRequest(id=task.id))


async def test_asks_and_kept_tasks_are_bounded_per_tenant(deployed: Deployment) -> None:
    async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as client:
        waiting = [await final_task(client, request("hold", timeout_s=2, wait=False)) for _ in range(2)]
        refused, _ = await final_task(client, request("one more", timeout_s=2))
        assert refused.status.state == TaskState.TASK_STATE_REJECTED
        assert "a2a_asks_per_tenant_max" in get_message_text(refused.status.message)
        with anyio.fail_after(10):
            for task, _ in waiting:
                failed = TaskState.TASK_STATE_FAILED
                while (await client.get_task(GetTaskRequest(id=task.id))).status.state != failed:  # noqa: ASYNC110
                    await anyio.sleep(0.1)  # the protocol offers polling or a stream, no event to wait on
        done = [(await final_task(client, request(f"n{i}", timeout_s=0.1)))[0] for i in range(LIMITS["tasks_max"])]
        with pytest.raises(TaskNotFoundError):  # the oldest finished tasks made room
            await client.get_task(GetTaskRequest(id=waiting[0][0].id))
        assert (await client.get_task(GetTaskRequest(id=done[-1].id))).id == done[-1].id


async def test_requests_in_flight_are_bounded_per_tenant(deployed: Deployment) -> None:
    statuses: list[int] = []

    async def blocking_send() -> None:
        async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as client:
            await final_task(client, request("hold", timeout_s=5))

    async def asks_to_bob() -> int:
        return len([m for m in await deployed.kernel.tenant("acme").bus.history("agent:bob") if m.type == "ask"])

    async with anyio.create_task_group() as tg:
        for _ in range(LIMITS["requests_max"]):
            tg.start_soon(blocking_send)
        with anyio.fail_after(10):
            while await asks_to_bob() < LIMITS["requests_max"]:  # noqa: ASYNC110 (another process's bus: polled)
                await anyio.sleep(0.05)  # both sends are now waiting on bob
        for token in ("alice", "carol"):  # any token of the tenant
            headers = {"authorization": f"Bearer {deployed.tokens[token]}"}
            async with httpx.AsyncClient(headers=headers) as http:
                got = await http.get(deployed.url("dave").rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH)
            statuses.append(got.status_code)
            assert got.json()["error"]["details"]["limit"] == "a2a_requests_per_tenant_max"
        async with a2a_client(deployed.url("bob", tenant="globex"), deployed.tokens["eve"]):
            pass  # another tenant is not held up
    assert statuses == [429, 429]


async def test_a_token_of_no_agent_reads_the_card_but_cannot_send(deployed: Deployment) -> None:
    got, posted = await _refusals(deployed, deployed.tokens["acme-admin"], deployed.url("bob"))
    assert (got.status_code, got.json()["name"]) == (200, "bob")
    assert (posted.status_code, posted.json()["error"]["data"]["error"]["code"]) == (403, "SOS-5004")


async def test_cancel_abandons_the_wait(deployed: Deployment) -> None:
    async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as client:
        task, _ = await final_task(client, request("never answered", timeout_s=30, wait=False))
        canceled = await client.cancel_task(CancelTaskRequest(id=task.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        assert (await client.get_task(GetTaskRequest(id=task.id))).status.state == TaskState.TASK_STATE_CANCELED


async def test_a2a_agent_round_trip_kernel_to_a2a_to_kernel(deployed: Deployment) -> None:
    """carol (a kernel agent) asks 'remote' on the bus; A2AAgent serves that address by asking bob over A2A; bob
    (a kernel agent behind the A2A endpoint) answers; the answer comes back to carol as the reply."""
    acme = deployed.kernel.tenant("acme")
    async with anyio.create_task_group() as tg, A2AAgent(deployed.url("bob"), token=deployed.tokens["alice"]) as bob:
        assert bob.card["name"] == "bob"
        tg.start_soon(answering, deployed.kernel, "bob")
        assert await bob.ask("direct?") == "bob says: direct?"
        task_id = await bob.send("later?")
        with anyio.fail_after(10):
            while (await bob.get_task(task_id))["status"]["state"] != "TASK_STATE_COMPLETED":  # noqa: ASYNC110
                await anyio.sleep(0.05)  # the protocol offers polling or a stream, no event to wait on
        tg.start_soon(bob.serve, acme.bus, "agent:remote")
        reply = await acme.bus.ask("agent:carol", "agent:remote", "round trip?", timeout_s=20)
        assert reply.payload.text == "bob says: round trip?"
        assert reply.source == "agent:remote"
        tg.cancel_scope.cancel()


async def test_a2a_agent_errors_are_sos_errors(deployed: Deployment) -> None:
    async with A2AAgent(deployed.url("bob"), token=deployed.tokens["alice"], timeout_s=0.3) as bob:
        with pytest.raises(AskTimeout):
            await bob.ask("nobody answers")
    with pytest.raises(BackendFailure, match="404"):
        await A2AAgent(deployed.url("carol"), token=deployed.tokens["alice"]).open()
    with pytest.raises(BackendUnavailable):
        await A2AAgent("http://127.0.0.1:9/a2a/acme/bob/").open()


def test_sos_serve_serves_opted_in_agents(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/served.db"

    async def seeded() -> str:
        async with sos_kernel.open(db) as k:
            await k.tenants.create("acme", plan="scale")
            await k.tenant("acme").registry.register(card("bob"), a2a=True)
            return (await k.tenant("acme").tokens.issue(agent="agent:alice")).secret

    token = anyio.run(seeded)
    out = tmp_path / "serve.out"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sos_kernel", "--json", "serve", "--url", db, "--port", "0"],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + SERVE_START_S
        while not out.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        base = json.loads(out.read_text().splitlines()[0])["listening"]
        url = f"{base}{A2A_PATH}/acme/bob"
        card_url = url + AGENT_CARD_WELL_KNOWN_PATH
        answer = httpx.get(card_url, headers={"authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()["name"]) == (200, "bob")
        assert answer.json()["supportedInterfaces"][0]["url"] == url + "/"
        assert httpx.get(f"{base}{A2A_PATH}/acme/carol{AGENT_CARD_WELL_KNOWN_PATH}").status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)


# -- task mode: A2A tasks backed by kernel tasks ---------------------------------------------------------------


async def fund(kernel: sos_kernel.Kernel, agent: str, amount: int) -> None:
    ledger = kernel.tenant("acme").ledger
    await ledger.open_account("system:treasury", "USD", allow_negative=True)
    for name in (agent, "bob"):
        await ledger.open_account(f"agent:{name}", "USD")
    seed = {"id": f"seed-{agent}", "amount": amount, "currency": "USD"}
    await ledger.transfer(debit="system:treasury", credit=f"agent:{agent}", **seed)


async def balance(kernel: sos_kernel.Kernel, agent: str) -> int:
    return (await kernel.tenant("acme").ledger.balance(f"agent:{agent}", "USD")).available


async def working(kernel: sos_kernel.Kernel, agent: str) -> None:
    """``agent`` claims every kernel task its inbox is told of (the ``sos-task-id`` header) and submits a result."""
    view = kernel.tenant("acme")
    async with view.bus.subscribe(f"agent:{agent}") as subscription:
        async for delivery in subscription:
            message = delivery.message
            task_id = (getattr(message, "headers", None) or {}).get(TASK_HEADER)
            if task_id:
                claim = await view.tasks.claim(task_id, agent=f"agent:{agent}")
                await view.tasks.submit(task_id, claim.token, result={"answer": f"{agent} did: {message.payload.text}"})
            await delivery.ack()


async def approving(kernel: sos_kernel.Kernel, reviewer: str) -> None:
    """``reviewer`` approves every task in review (the kernel's own API, as the requester would)."""
    tasks = kernel.tenant("acme").tasks
    while True:
        for task in await tasks.list("review"):
            await tasks.review(task.id, reviewer=f"agent:{reviewer}", verdict="approve")
        await anyio.sleep(0.05)


def task_request(text: str, spec: dict[str, Any], *, timeout_s: float = 20, wait: bool = True) -> SendMessageRequest:
    req = request(text, timeout_s=timeout_s, wait=wait)
    req.metadata.update({TASK_KEY: spec})
    return req


async def test_task_mode_runs_a_kernel_task_funded_by_the_caller_and_streams_its_states(deployed: Deployment) -> None:
    await fund(deployed.kernel, "alice", 1_000_000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(working, deployed.kernel, "bob")
        tg.start_soon(approving, deployed.kernel, "alice")
        async with a2a_client(deployed.url("bob"), deployed.tokens["alice"], streaming=True) as client:
            events = [e async for e in client.send_message(task_request("summarise", {"bounty": 300_000}))]
            updates = [e.status_update for e in events if e.HasField("status_update")]
            fetched = await client.get_task(GetTaskRequest(id=updates[-1].task_id))
        tg.cancel_scope.cancel()
    statuses = [u.metadata["sos_task_status"] for u in updates]
    lifecycle = ["queued", "claimed", "in_progress", "review", "done"]  # bob may be faster than a poll
    assert statuses == sorted(statuses, key=lifecycle.index)
    assert statuses[-1] == "done"
    assert [u.status.state for u in updates][-1] == TaskState.TASK_STATE_COMPLETED
    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
    assert fetched.metadata["sos_task_id"] == fetched.id  # the kernel task has the A2A task's id
    [result] = [a for a in fetched.artifacts if a.name == "result"]
    assert get_data_parts(result.parts) == [{"answer": "bob did: summarise"}]
    task = await deployed.kernel.tenant("acme").tasks.get(fetched.id)
    assert (task.status, task.created_by, task.funded_by, task.reviewers) == (
        "done",
        "agent:alice",
        "agent:alice",
        ["agent:alice"],
    )
    assert (await balance(deployed.kernel, "alice"), await balance(deployed.kernel, "bob")) == (700_000, 300_000)


async def test_task_mode_get_follows_the_kernel_task_and_cancel_is_the_callers_right(deployed: Deployment) -> None:
    kernel = deployed.kernel
    await fund(kernel, "alice", 1_000)
    async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as alice:
        task, _ = await final_task(alice, task_request("later", {"bounty": 1_000}, timeout_s=0.3))
        assert (task.status.state, task.metadata["sos_task_status"]) == (TaskState.TASK_STATE_SUBMITTED, "queued")
        await kernel.tenant("acme").tasks.claim(task.id, agent="agent:bob")  # after the A2A wait ended
        fetched = await alice.get_task(GetTaskRequest(id=task.id))
        assert (fetched.status.state, fetched.metadata["sos_task_status"]) == (TaskState.TASK_STATE_WORKING, "claimed")
        async with a2a_client(deployed.url("bob"), deployed.tokens["dave"]) as dave:
            attached, _ = await final_task(dave, task_request("me too", {"id": task.id}, timeout_s=0.3))
            assert attached.metadata["sos_task_id"] == task.id
            with pytest.raises(TaskNotCancelableError, match="SOS-5004"):  # neither its creator nor its funder
                await dave.cancel_task(CancelTaskRequest(id=attached.id))
        assert (await kernel.tenant("acme").tasks.get(task.id)).status == "claimed"
        canceled = await alice.cancel_task(CancelTaskRequest(id=task.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    assert (await kernel.tenant("acme").tasks.get(task.id)).status == "canceled"
    assert await balance(kernel, "alice") == 1_000  # refunded
    headers = [m.headers for m in await kernel.tenant("acme").bus.history("agent:bob") if m.type == "send"]
    assert headers == [{TASK_HEADER: task.id}, {TASK_HEADER: task.id}]


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"bogus": 1}, "SOS-4005"),
        ({"bounty": 500, "funded_by": "agent:carol"}, "SOS-4005"),  # only the caller's own account pays
        ({"id": "no-such-task"}, "SOS-6011"),
        ({"bounty": 10**12}, "SOS-7001"),
    ],
)
async def test_task_mode_refusals_reject_the_task_and_move_nothing(
    deployed: Deployment, spec: dict[str, Any], code: str
) -> None:
    await fund(deployed.kernel, "alice", 1_000)
    await fund(deployed.kernel, "carol", 1_000)
    async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as alice:
        task, _ = await final_task(alice, task_request("pay me", spec))
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert get_message_text(task.status.message).startswith(code)
    assert await deployed.kernel.tenant("acme").tasks.list() == []
    assert (await balance(deployed.kernel, "alice"), await balance(deployed.kernel, "carol")) == (1_000, 1_000)
    assert await deployed.kernel.tenant("acme").bus.history("agent:bob") == []


async def test_shutdown_ends_the_follows_and_asks_in_flight_and_leaves_no_task(kernel: sos_kernel.Kernel) -> None:
    """The app's shutdown cancels and awaits what its A2A endpoint still runs (a follow polling its kernel task, an
    ask waiting for a reply), so nothing reads the kernel after the server is gone."""
    from sos_kernel.integrations.a2a import A2A_TASK_POLL_S, mount
    from sos_kernel.server import create_app

    deployed = await seed(kernel, "http://testserver")
    await fund(kernel, "alice", 1_000)
    app = create_app(kernel)
    mount(app, **LIMITS)
    before = asyncio.all_tasks()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with a2a_client(deployed.url("bob"), deployed.tokens["alice"], transport=transport) as client:
            followed, _ = await final_task(client, task_request("later", {"bounty": 1_000}, timeout_s=60, wait=False))
            await final_task(client, request("anyone?", timeout_s=60, wait=False))
        await anyio.sleep(3 * A2A_TASK_POLL_S)  # the follow polls, the ask waits
        assert len(asyncio.all_tasks() - before) > 1
    assert asyncio.all_tasks() - before == set()  # none outlives the server
    assert (await kernel.tenant("acme").tasks.get(followed.id)).status == "queued"  # the kernel task stays


async def test_a_task_outlives_its_server_and_is_found_by_another(tmp_path: Path) -> None:
    """Servers with their own kernels on one SQLite file: a task made on one is found by the other while both run,
    and by a third started after both stopped."""
    db = f"sqlite:///{tmp_path}/sos.db"
    async with sos_kernel.open(db) as kernel:
        deployment = await seed(kernel, "")
        alice, eve = deployment.tokens["alice"], deployment.tokens["eve"]
        with running_server(db, a2a=LIMITS) as first, running_server(db, a2a=LIMITS) as second:
            async with anyio.create_task_group() as tg:
                tg.start_soon(answering, kernel, "bob")
                async with a2a_client(f"{first}{A2A_PATH}/acme/bob/", alice) as client:
                    task, _ = await final_task(client, request("still there?"))
                tg.cancel_scope.cancel()
            async with a2a_client(f"{second}{A2A_PATH}/acme/bob/", alice) as client:
                seen = await client.get_task(GetTaskRequest(id=task.id))
        with running_server(db, a2a=LIMITS) as base:
            async with a2a_client(f"{base}{A2A_PATH}/acme/bob/", alice) as client:
                found = await client.get_task(GetTaskRequest(id=task.id))
                with pytest.raises(TaskNotFoundError):
                    await client.get_task(GetTaskRequest(id="no-such-task"))
            async with a2a_client(f"{base}{A2A_PATH}/globex/bob/", eve) as other:
                with pytest.raises(TaskNotFoundError):  # another tenant: the same answer as an unknown id
                    await other.get_task(GetTaskRequest(id=task.id))
    for fetched in (seen, found):
        assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
        assert [get_artifact_text(a) for a in fetched.artifacts] == ["bob says: still there?"]


async def test_one_callers_attaches_cannot_fill_the_tenant_and_are_refused_cleanly(kernel: sos_kernel.Kernel) -> None:
    limits = {"requests_max": 4, "asks_max": 2, "tasks_max": 8}  # a caller keeps at most tasks_max - 1 running
    with running_server(kernel.url, a2a=limits) as base:
        deployed = await seed(kernel, base)
        await kernel.tenant("acme").tasks.create("a queued task", id="queued-1", reviewers=["agent:alice"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(answering, kernel, "dave")
            async with a2a_client(deployed.url("bob"), deployed.tokens["carol"]) as carol:
                answers = []
                for _ in range(30):  # no money, no kernel task: only A2A tasks attached to one queued task
                    req = task_request("attach", {"id": "queued-1"}, timeout_s=0.05)
                    answers += [event async for event in carol.send_message(req)]
            async with a2a_client(deployed.url("bob"), deployed.tokens["carol"], streaming=True) as carol:
                req = task_request("attach", {"id": "queued-1"}, timeout_s=0.05)
                streamed = [event async for event in carol.send_message(req)]
            async with a2a_client(deployed.url("dave"), deployed.tokens["alice"]) as alice:
                asked, _ = await final_task(alice, request("still there?", timeout_s=10))
            async with a2a_client(deployed.url("bob"), deployed.tokens["alice"]) as alice:
                attached, _ = await final_task(alice, task_request("me too", {"id": "queued-1"}, timeout_s=0.05))
            tg.cancel_scope.cancel()
    tasks = [e.task for e in answers if e.HasField("task")]
    refusals = [e.message for e in answers if e.HasField("message")]
    assert (len(tasks), len(refusals)) == (7, 23)
    assert {t.status.state for t in tasks} == {TaskState.TASK_STATE_SUBMITTED}
    assert [e.HasField("message") for e in streamed] == [True]  # a stream's only event
    for refusal in [
        *refusals,
        streamed[0].message,
    ]:  # no task: the agent's answer is the SOS refusal, its envelope in the metadata
        assert get_message_text(refusal).startswith("SOS-4010")
        error = MessageToDict(refusal.metadata)["sos_error"]
        assert (error["code"], error["details"]["limit"]) == ("SOS-4010", "a2a_running_tasks_per_caller_max")
    assert (asked.status.state, get_artifact_text(asked.artifacts[0])) == (
        TaskState.TASK_STATE_COMPLETED,
        "dave says: still there?",
    )
    assert (attached.status.state, attached.metadata["sos_task_id"]) == (TaskState.TASK_STATE_SUBMITTED, "queued-1")
    sends = [m for m in await kernel.tenant("acme").bus.history("agent:bob") if m.type == "send"]
    assert len(sends) == 7 + 1  # a refused attach told the served agent nothing


# -- a body that names a key twice ------------------------------------------------------------------------------


def _a2a_body(case: str) -> str:
    """A ``SendMessage`` call (returning at once) whose JSON repeats the key of ``case`` (none for ``plain``)."""
    params = json.dumps(MessageToDict(request("hi", wait=False)))
    if case == "text":
        params = params.replace('"text": "hi"', '"text": "hi", "text": "pay mallory"')
    ids = '"id":1,"id":2' if case == "id" else '"id":1'
    twice = f',"params":{params}' if case == "params" else ""
    return f'{{"jsonrpc":"2.0",{ids},"method":"SendMessage","params":{params}{twice}}}'


REPEATED = [("id", "(root)", "id"), ("params", "(root)", "params"), ("text", "params.message.parts.0", "text")]


@pytest.mark.parametrize(("case", "where", "key"), REPEATED, ids=[r[0] for r in REPEATED])
async def test_a_body_repeating_a_key_is_a_parse_error_and_nothing_is_sent(
    deployed: Deployment, case: str, where: str, key: str
) -> None:
    headers = {"authorization": f"Bearer {deployed.tokens['alice']}", "content-type": "application/json"}
    headers[VERSION_HEADER] = PROTOCOL_VERSION_CURRENT
    inbox = deployed.kernel.tenant("acme").bus
    async with httpx.AsyncClient(timeout=60) as http:
        not_json = await http.post(deployed.url("bob"), content=b'{"jsonrpc":', headers=headers)
        answer = await http.post(deployed.url("bob"), content=_a2a_body(case).encode(), headers=headers)
        assert answer.status_code == not_json.status_code == 200, answer.text  # as the A2A handler answers bad JSON
        found = answer.json()
        assert (found["id"], found["error"]["code"]) == (None, JSONParseError().code) == (None, -32700)
        assert not_json.json()["error"]["code"] == JSONParseError().code
        assert found["error"]["message"].startswith(f"SOS-4001 the object at {where} repeats the key {key!r}")
        assert found["error"]["data"]["error"]["details"]["errors"][0]["type"] == "json_duplicate_key"
        assert await inbox.history("agent:bob") == []
        plain = await http.post(deployed.url("bob"), content=_a2a_body("plain").encode(), headers=headers)
    assert plain.status_code == 200, plain.text
    assert "result" in plain.json(), plain.text  # the check hands a plain body on to the A2A handler
    for _ in range(100):
        if await inbox.history("agent:bob"):
            break
        await anyio.sleep(0.05)
    assert [m.source for m in await inbox.history("agent:bob")] == ["agent:alice"]
