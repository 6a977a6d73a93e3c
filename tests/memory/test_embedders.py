"""Embedders: the OpenAI-compatible adapter against a real HTTP server on 127.0.0.1, a namespace's embedder kept
across kernels, and the local-model adapters when their packages are installed."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import BackendFailure, BackendUnavailable, InvalidArgument, MissingDependency
from sos_kernel.memory import FastEmbedEmbedder, LexicalEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder

pytestmark = pytest.mark.anyio

REFERENCE = LexicalEmbedder(16)


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Handler.requests.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
        model = body["model"]
        if model.startswith("status-"):
            self._send(int(model.removeprefix("status-")), {"error": {"message": "nope"}})
            return
        size = 15 if model == "short" else 16
        data = [
            {"index": i, "object": "embedding", "embedding": REFERENCE.embed_one(text)[:size]}
            for i, text in reversed(list(enumerate(body["input"])))  # out of order: the index decides
        ]
        self._send(200, {"object": "list", "data": data, "model": model})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_the_openai_adapter_embeds_over_http(endpoint: str) -> None:
    embedder = OpenAIEmbedder(endpoint, "mini", 16, api_key="sk-test", batch_max=2)
    try:
        texts = ["one text", "another text", "a third"]
        assert await embedder.embed(texts) == [REFERENCE.embed_one(t) for t in texts]
        assert [r["body"]["input"] for r in _Handler.requests] == [texts[:2], texts[2:]]
        assert _Handler.requests[0]["path"] == "/v1/embeddings"
        assert _Handler.requests[0]["auth"] == "Bearer sk-test"
        assert embedder.name == "openai:mini:16"
    finally:
        await embedder.aclose()


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("status-500", BackendUnavailable, 500),
        ("status-429", BackendUnavailable, 429),
        ("status-400", BackendFailure, 400),
    ],
)
async def test_an_error_status_is_a_clear_sos_error(endpoint: str, model: str, error: type, status: int) -> None:
    embedder = OpenAIEmbedder(endpoint, model, 16)
    try:
        with pytest.raises(error) as info:
            await embedder.embed(["x"])
        assert info.value.details["status"] == status
        assert "nope" in info.value.details["body"]
    finally:
        await embedder.aclose()


async def test_malformed_answers_and_an_absent_server_are_clear_errors(endpoint: str) -> None:
    short = OpenAIEmbedder(endpoint, "short", 16)
    gone = OpenAIEmbedder("http://127.0.0.1:9/v1", "mini", 16, timeout_s=2)
    try:
        with pytest.raises(BackendFailure, match="16 dimensions"):
            await short.embed(["x"])
        with pytest.raises(BackendUnavailable):
            await gone.embed(["x"])
    finally:
        await short.aclose()
        await gone.aclose()


async def test_a_kernel_remembers_with_the_adapter_and_namespaces_keep_their_embedder(
    endpoint: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/sos.db"
    embedder = OpenAIEmbedder(endpoint, "mini", 16)
    try:
        async with sos_kernel.open(url, embedder=embedder) as kernel:
            await kernel.memory.remember("remote-embedded", "the invoice is overdue", id="inv")
            await kernel.memory.remember("remote-embedded", "the cat sat on the mat", id="cat")
            hits = await kernel.memory.recall("remote-embedded", "overdue invoices")
            assert [h.id for h in hits] == ["inv", "cat"]
        async with sos_kernel.open(url) as kernel:  # the default lexical embedder now
            with pytest.raises(InvalidArgument, match="openai:mini:16") as info:
                await kernel.memory.recall("remote-embedded", "overdue invoices")
            assert info.value.code == "SOS-4005"
            with pytest.raises(InvalidArgument):
                await kernel.memory.remember("remote-embedded", "mixing embedders")
            assert len(await kernel.memory.recall("remote-embedded", REFERENCE.embed_one("overdue"))) == 2
    finally:
        await embedder.aclose()


async def test_a_failing_embedder_writes_nothing(endpoint: str) -> None:
    failing = OpenAIEmbedder(endpoint, "status-503", 16)
    try:
        async with sos_kernel.open("memory://", embedder=failing) as kernel:
            with pytest.raises(BackendUnavailable):
                await kernel.memory.remember("n", "x")
            assert await kernel.memory.namespaces() == []
    finally:
        await failing.aclose()


def test_bad_kernel_options_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        sos_kernel.open("memory://", embedder=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        sos_kernel.open("memory://", memory=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        LexicalEmbedder(3)


@pytest.mark.skipif(importlib.util.find_spec("fastembed") is not None, reason="fastembed is installed")
def test_fastembed_without_its_extra_names_the_pip_command() -> None:
    with pytest.raises(MissingDependency, match=r"sos-kernel\[fastembed\]"):
        FastEmbedEmbedder()


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None, reason="installed")
def test_sentence_transformers_without_its_extra_names_the_pip_command() -> None:
    with pytest.raises(MissingDependency, match=r"sos-kernel\[sentence-transformers\]"):
        SentenceTransformerEmbedder()


@pytest.mark.skipif(importlib.util.find_spec("fastembed") is None, reason="fastembed is not installed")
async def test_fastembed_embeds_when_installed() -> None:
    embedder = FastEmbedEmbedder()
    [vector] = await embedder.embed(["a sentence"])
    assert len(vector) == embedder.dimensions
