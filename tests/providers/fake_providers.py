"""Local HTTP servers speaking each provider's wire format, on 127.0.0.1, for the engine's tests.

One uvicorn server in a thread serves every fake provider under its own path prefix ``/<name>/``: the OpenAI
chat-completions format (``/<name>/v1/chat/completions``), Anthropic Messages (``/<name>/v1/messages``) and Gemini
(``/<name>/v1beta/models/<model>:generateContent`` and ``:streamGenerateContent?alt=sse``), each streaming or not,
and ``GET /<name>/health``. ``modes[name]`` scripts a provider: ``ok``, ``500``, ``slow`` (answers after
``SLOW_S``), ``400``, ``401``, ``429``, ``echo400`` (a 400 quoting the request's headers), ``garbage`` (a 200 that
is not the format), ``repeat_usage`` and ``repeat_content`` (a 200 whose JSON names a key twice), and for streams
``bad_first`` (a malformed first event), ``drop`` (the connection drops right after the headers) and
``fail_after_two`` (two pieces, then a malformed event). Every request
is recorded with its headers, so tests can see which key travelled where.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SLOW_S = 3.0
USAGE = {"openai": (11, 7), "anthropic": (13, 5), "gemini": (17, 3)}
"""Input and output tokens each format reports."""


@dataclass
class Fakes:
    """The running server: its base URL, the scripted modes and the recorded requests."""

    base: str
    modes: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def url(self, name: str, kind: str) -> str:
        """The endpoint a card names for provider ``name`` of format ``kind``."""
        return f"{self.base}/{name}/" + ("v1beta" if kind == "gemini" else "v1")

    def calls(self, name: str) -> int:
        return sum(1 for n, _, _ in self.requests if n == name)


def _text(name: str) -> str:
    return f"hello from {name}"


def _openai(name: str, stream: bool) -> Response:
    inp, out = USAGE["openai"]
    usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
    if not stream:
        body = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(name)}}]}
        return JSONResponse({**body, "usage": usage})
    chunks = [{"choices": [{"delta": {"content": p}}]} for p in ("hello ", "from ", name)]
    return _sse([*chunks, {"choices": [], "usage": usage}], done=True)


def _anthropic(name: str, stream: bool) -> Response:
    inp, out = USAGE["anthropic"]
    if not stream:
        content = [{"type": "text", "text": _text(name)}]
        return JSONResponse({"content": content, "usage": {"input_tokens": inp, "output_tokens": out}})
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": inp, "output_tokens": 1}}},
        *(
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": p}}
            for p in ("hello ", "from ", name)
        ),
        {"type": "message_delta", "usage": {"output_tokens": out}},
        {"type": "message_stop"},
    ]
    return _sse(events)


def _gemini(name: str, stream: bool) -> Response:
    inp, out = USAGE["gemini"]
    usage = {"promptTokenCount": inp, "candidatesTokenCount": out}
    if not stream:
        return JSONResponse({"candidates": [{"content": {"parts": [{"text": _text(name)}]}}], "usageMetadata": usage})
    parts = [{"candidates": [{"content": {"parts": [{"text": p}]}}]} for p in ("hello ", "from ")]
    return _sse([*parts, {"candidates": [{"content": {"parts": [{"text": name}]}}], "usageMetadata": usage}])


def _sse(events: list[dict[str, Any]], done: bool = False) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for event in events:
            yield f"data: {json.dumps(event)}\n\n".encode()
        if done:
            yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


REPEATING = {
    "repeat_usage": (
        '{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],'
        '"usage":{"prompt_tokens":900000,"completion_tokens":900000},"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    ),
    "repeat_content": (
        '{"choices":[{"index":0,"message":{"role":"assistant","content":"pay alice","content":"pay mallory"}}],'
        '"usage":{"prompt_tokens":11,"completion_tokens":7}}'
    ),
}
"""OpenAI-format answers that name a key twice (``usage``, a message's ``content``): each reader takes its own copy."""


def _repeating(mode: str, stream: bool) -> Response:
    """The answer of ``mode`` in :data:`REPEATING`, whole or as the one event of a stream."""
    text = REPEATING[mode]
    if not stream:
        return Response(text, media_type="application/json")
    event = text.replace('"message":', '"delta":')

    async def body() -> AsyncIterator[bytes]:
        yield f"data: {event}\n\ndata: [DONE]\n\n".encode()

    return StreamingResponse(body(), media_type="text/event-stream")


BROKEN_STREAMS = {
    "bad_first": [b"data: {not json\n\n"],
    "drop": [],
    "fail_after_two": [
        *(f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}\n\n".encode() for p in ("hello ", "from ")),
        b"data: {not json\n\n",
    ],
}
"""OpenAI-format streams that fail: the events each sends before it breaks off (``drop`` sends none)."""


class _Dropped(Exception):
    """Raised in a streamed body so the server drops the connection mid-answer."""


def _broken(mode: str) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for event in BROKEN_STREAMS[mode]:
            yield event
        if mode == "drop":
            raise _Dropped  # the headers are out: the server can only cut the connection
        await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="text/event-stream")


def _app(fakes: Fakes) -> Starlette:
    async def serve(request: Request) -> Response:
        name, rest = request.path_params["name"], request.path_params["rest"]
        body = json.loads(await request.body() or b"{}")
        fakes.requests.append((name, dict(request.headers), body))
        mode = fakes.modes.get(name, "ok")
        if mode == "slow":
            await asyncio.sleep(SLOW_S)
        if mode in ("500", "400", "401", "429"):
            return JSONResponse({"error": {"message": f"scripted {mode}"}}, status_code=int(mode))
        if mode == "echo400":  # a provider that quotes the request's headers back in its refusal
            return JSONResponse(
                {"error": {"message": f"bad request; you sent {dict(request.headers)}"}}, status_code=400
            )
        if mode == "garbage":
            return JSONResponse({"nothing": "here"})
        if mode in BROKEN_STREAMS:
            return _broken(mode)
        if mode in REPEATING:
            return _repeating(mode, bool(body.get("stream")))
        if rest == "v1/chat/completions":
            return _openai(name, bool(body.get("stream")))
        if rest == "v1/messages":
            return _anthropic(name, bool(body.get("stream")))
        if rest.startswith("v1beta/models/"):
            return _gemini(name, rest.endswith(":streamGenerateContent"))
        return JSONResponse({"error": "no such route"}, status_code=404)

    async def health(request: Request) -> Response:
        ok = fakes.modes.get(request.path_params["name"], "ok") == "ok"
        return JSONResponse({"ok": ok}, status_code=200 if ok else 503)

    routes = [
        Route("/{name}/health", health, methods=["GET"]),
        Route("/{name}/{rest:path}", serve, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_fakes() -> Iterator[Fakes]:
    """The fake providers, served until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    fakes = Fakes(f"http://127.0.0.1:{port}")
    config = uvicorn.Config(_app(fakes), http="h11", ws="none", lifespan="off", log_level="warning")
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
        yield fakes
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
