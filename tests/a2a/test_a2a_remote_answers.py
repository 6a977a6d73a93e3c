"""A remote A2A agent's answers reach the a2a-sdk client only once the kernel's JSON parser took them: a local
HTTP server on 127.0.0.1 speaks A2A JSON-RPC, and ``A2AAgent`` asks it through the real SDK client.

The SDK reads a body with ``response.json()`` (Python's parser: the last of two copies of a key wins) and gives
protobuf the parsed dict, so protobuf's own duplicate check (``json_format.Parse`` on text) never sees the text."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn
from a2a.utils import AGENT_CARD_WELL_KNOWN_PATH
from google.protobuf.json_format import Parse, ParseDict, ParseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sos_kernel
from sos_kernel.errors import BackendFailure, InvalidArgument
from sos_kernel.integrations.a2a import A2A_ANSWER_BYTES_MAX, A2AAgent

pytestmark = pytest.mark.anyio


def _task(text: str) -> str:
    return (
        '{"id":"t1","contextId":"c1","status":{"state":"TASK_STATE_COMPLETED"},'
        f'"artifacts":[{{"artifactId":"a1","parts":[{{"text":"{text}"}}]}}]}}'
    )


TWICE = _task("pay alice").replace('"text":"pay alice"', '"text":"pay alice","text":"pay mallory"')
"""A task whose one part names ``text`` twice."""


def _rpc(method: str, rpc_id: str, mode: str) -> str:
    """The JSON-RPC answer to ``SendMessage`` (a task in ``result.task``) or ``GetTask`` (the task is the result);
    ``repeat_top`` names ``result`` twice, ``repeat_nested`` a part's ``text``."""

    def result(task: str) -> str:
        return '{"task":' + task + "}" if method == "SendMessage" else task

    head = f'{{"jsonrpc":"2.0","id":{json.dumps(rpc_id)},"result":'
    if mode == "repeat_top":
        return head + result(_task("pay alice")) + ',"result":' + result(_task("pay mallory")) + "}"
    if mode == "repeat_nested":
        return head + result(TWICE) + "}"
    return head + result(_task("x" * 4000 if mode == "big" else "hello")) + "}"


@dataclass
class Remote:
    """The fake remote agent: its base URL and how it answers."""

    base: str
    mode: str = "ok"
    card_mode: str = "ok"
    seen: list[str] = field(default_factory=list)


def _card(base: str) -> dict[str, Any]:
    return {
        "name": "remote",
        "description": "A remote A2A agent",
        "version": "1.0.0",
        "supportedInterfaces": [{"url": base + "/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "ask", "name": "ask", "description": "Answers", "tags": ["ask"]}],
    }


def _answer(remote: Remote, method: str, rpc_id: str) -> Response:
    mode = remote.mode
    if mode == "repeat_event":  # an event-stream body whose one event repeats a key
        data = _rpc(method, rpc_id, "repeat_nested")
        return Response(f"event: message\ndata: {data}\n\n", media_type="text/event-stream")
    if mode == "nan_repeat":  # a repeated key plus a member the kernel's parser refuses and Python's json takes
        return Response(_rpc(method, rpc_id, "repeat_nested")[:-1] + ',"pad":NaN}', media_type="application/json")
    if mode == "odd_event_type":  # an event stream the SDK detects by substring of the content type
        data = _rpc(method, rpc_id, "repeat_nested")
        return Response(f"event: message\ndata: {data}\n\n", media_type="application/x-text/event-stream")
    if mode == "not_json":
        return Response("pay mallory", media_type="text/plain")
    if mode.startswith("gzip_"):  # compressed on the wire: checked once decoded, read by the SDK decoded
        body = gzip.compress(_rpc(method, rpc_id, mode.removeprefix("gzip_")).encode())
        return Response(body, media_type="application/json", headers={"content-encoding": "gzip"})
    return Response(_rpc(method, rpc_id, mode), media_type="application/json")


def _app(remote: Remote) -> Starlette:
    async def card(request: Request) -> Response:
        found = _card(remote.base)
        if remote.card_mode == "repeat":
            text = json.dumps(found)
            return Response(text.replace('"name": "remote"', '"name": "remote", "name": "mallory"'))
        return JSONResponse(found)

    async def rpc(request: Request) -> Response:
        body = json.loads(await request.body())
        remote.seen.append(body["method"])
        return _answer(remote, body["method"], body["id"])

    return Starlette(routes=[Route(AGENT_CARD_WELL_KNOWN_PATH, card), Route("/", rpc, methods=["POST"])])


@pytest.fixture(scope="module")
def remote_server() -> Iterator[Remote]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    remote = Remote(f"http://127.0.0.1:{sock.getsockname()[1]}")
    config = uvicorn.Config(_app(remote), http="h11", ws="none", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    ready = threading.Event()

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await asyncio.sleep(0.01)
        ready.set()
        await task

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(15)
    try:
        yield remote
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def remote(remote_server: Remote) -> Remote:
    remote_server.mode, remote_server.card_mode = "ok", "ok"
    remote_server.seen.clear()
    return remote_server


async def test_a_well_formed_answer_is_read_through_the_sdk(remote: Remote) -> None:
    async with A2AAgent(remote.base + "/") as agent:
        assert agent.card["name"] == "remote"
        assert await agent.ask("hi") == "hello"
        assert (await agent.get_task("t1"))["artifacts"][0]["parts"][0]["text"] == "hello"
        remote.mode = "gzip_ok"
        assert await agent.ask("hi") == "hello"
    assert remote.seen == ["SendMessage", "GetTask", "SendMessage"]


NESTED = "artifacts.0.parts.0.text"


@pytest.mark.parametrize(
    ("mode", "loc"),
    [
        ("repeat_top", "result"),
        ("repeat_nested", NESTED),
        ("gzip_repeat_top", "result"),
        ("repeat_event", NESTED),
    ],
)
async def test_an_answer_repeating_a_key_is_the_remote_agents_failure(remote: Remote, mode: str, loc: str) -> None:
    async with A2AAgent(remote.base + "/") as agent:
        remote.mode = mode
        for call, where in ((lambda: agent.ask("hi"), "result.task."), (lambda: agent.get_task("t1"), "result.")):
            with pytest.raises(BackendFailure) as info:  # neither copy is read: not "pay alice", not "pay mallory"
                await call()
            assert info.value.code == "SOS-6031"
            error = info.value.details["errors"][0]
            assert (error["loc"], error["type"]) == (loc if loc == "result" else where + loc, "json_duplicate_key")


@pytest.mark.parametrize("mode", ["nan_repeat", "odd_event_type", "not_json"])
async def test_an_answer_the_kernels_parser_refuses_for_any_reason_is_the_remote_agents_failure(
    remote: Remote, mode: str
) -> None:
    async with A2AAgent(remote.base + "/") as agent:
        remote.mode = mode
        for call in (lambda: agent.ask("hi"), lambda: agent.get_task("t1")):
            with pytest.raises(BackendFailure) as info:  # not read by the SDK: not "pay mallory"
                await call()
            assert info.value.code == "SOS-6031"


async def test_a_peer_served_on_the_bus_replies_the_refusal_not_either_reading(remote: Remote) -> None:
    async with (
        sos_kernel.open("memory://") as kernel,
        anyio.create_task_group() as tg,
        A2AAgent(remote.base + "/") as agent,
    ):
        tg.start_soon(agent.serve, kernel.bus, "agent:remote")
        remote.mode = "repeat_nested"
        reply = await kernel.bus.ask("agent:carol", "agent:remote", "who gets paid?", timeout_s=10)
        assert reply.payload.text.startswith("SOS-6031 ")
        assert "pay alice" not in reply.payload.text
        assert "pay mallory" not in reply.payload.text
        tg.cancel_scope.cancel()


async def test_a_card_repeating_a_key_is_refused_and_the_agent_left_closed(remote: Remote) -> None:
    remote.card_mode = "repeat"
    agent = A2AAgent(remote.base + "/")
    with pytest.raises(BackendFailure) as info:
        await agent.open()
    assert info.value.details["errors"][0]["loc"] == "name"
    with pytest.raises(InvalidArgument):  # not opened: nothing was built from the card
        await agent.ask("hi")
    assert remote.seen == []


async def test_an_answer_over_the_bound_is_the_remote_agents_failure(remote: Remote) -> None:
    async with A2AAgent(remote.base + "/", answer_bytes_max=2000) as agent:
        assert await agent.ask("hi") == "hello"
        remote.mode = "big"
        with pytest.raises(BackendFailure) as info:
            await agent.ask("hi")
        assert info.value.details["limit"] == 2000
    for bad in (0, A2A_ANSWER_BYTES_MAX + 1, 1.5):
        with pytest.raises(InvalidArgument):
            A2AAgent(remote.base + "/", answer_bytes_max=bad)  # type: ignore[arg-type]


def test_protobufs_text_parser_refuses_a_repeated_key_but_the_sdk_hands_it_a_dict() -> None:
    """Why the check is ours: ``json_format.Parse`` (text) refuses a repeated key, ``ParseDict`` of what
    ``json.loads`` made of it (the SDK's way) takes the last copy."""
    from a2a.types import Task

    text = _task("pay alice")[:-1] + ',"id":"t2"}'
    with pytest.raises(ParseError):
        Parse(text, Task())
    assert ParseDict(json.loads(text), Task()).id == "t2"
