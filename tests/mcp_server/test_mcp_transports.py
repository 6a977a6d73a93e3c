"""The MCP server over its real transports, with the MCP SDK's own client: ``sos mcp`` on stdio (embedded on a
SQLite file, and against a remote server), and streamable HTTP at ``/mcp`` of a uvicorn server on 127.0.0.1 (and
of ``sos serve``), where each request's bearer token selects its session."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import PARSE_ERROR, JSONRPCError, jsonrpc_message_adapter
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import sos_kernel
from sos_kernel.identity.service import TOKEN_CACHE_TTL_S
from sos_kernel.mcp import MCP_PATH

from ..live_server import running_server
from .conftest import USD, ok, refused, seed

pytestmark = pytest.mark.anyio

SERVE_START_S = 30.0


@asynccontextmanager
async def over_stdio(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    """A ClientSession with ``sos mcp --url URL --token TOKEN`` as a subprocess."""
    args = ["-m", "sos_kernel", "mcp", "--url", url, *(["--token", token] if token else [])]
    params = StdioServerParameters(command=sys.executable, args=args)
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield session
        finally:
            errlog.seek(0)
            over_stdio.errors = errlog.read()  # type: ignore[attr-defined]


@asynccontextmanager
async def over_http(base_url: str, token: str | None) -> AsyncIterator[ClientSession]:
    """A ClientSession over streamable HTTP at ``/mcp`` of ``base_url``, sending ``token`` as the bearer."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(base_url + MCP_PATH, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def refusal(info: pytest.ExceptionInfo[BaseException]) -> MCPError:
    """The MCPError a client raised (on its own, or out of the transport's task group)."""
    found: BaseException = info.value
    while isinstance(found, BaseExceptionGroup) and len(found.exceptions) == 1:
        found = found.exceptions[0]
    assert isinstance(found, MCPError), repr(info.value)
    return found


@pytest.fixture
async def sqlite_kernel(tmp_path: Path) -> AsyncIterator[sos_kernel.Kernel]:
    async with sos_kernel.open(f"sqlite:///{tmp_path}/sos.db") as kernel:
        yield kernel


@pytest.fixture
def served(sqlite_kernel: sos_kernel.Kernel) -> Iterator[str]:
    with running_server(sqlite_kernel.url, mcp={"principal_max": 2}) as base_url:
        yield base_url


async def _names(session: ClientSession) -> set[str]:
    tools = (await session.list_tools()).tools
    assert all(t.input_schema["type"] == "object" for t in tools)
    return {t.name for t in tools}


async def _send_and_check(session: ClientSession, kernel: sos_kernel.Kernel) -> None:
    assert {"send", "inbox", "peers", "status"} <= await _names(session)
    sent = ok(await session.call_tool("send", {"to": "bob", "text": "over the wire"}))
    assert ok(await session.call_tool("status", {}))["agent"] == "agent:alice"
    history = await kernel.tenant("acme").bus.history("agent:bob")
    assert [(m.message_id, m.source) for m in history] == [(sent["message_id"], "agent:alice")]


async def test_sos_mcp_on_stdio_over_a_sqlite_file(sqlite_kernel: sos_kernel.Kernel) -> None:
    _, tokens = await seed(sqlite_kernel)
    async with over_stdio(sqlite_kernel.url, tokens["alice"]) as alice:
        await _send_and_check(alice, sqlite_kernel)
        refused(await alice.call_tool("bus_history", {"address": "agent:bob"}), "SOS-5004")


async def test_sos_mcp_on_stdio_against_a_remote_server(sqlite_kernel: sos_kernel.Kernel, served: str) -> None:
    _, tokens = await seed(sqlite_kernel)
    async with over_stdio(served, tokens["alice"]) as alice:
        await _send_and_check(alice, sqlite_kernel)
        pay = ok(await alice.call_tool("transfer", {"id": "p1", "to": "bob", "amount_micros": 5}))
    assert pay["id"] == "alice/p1"
    assert (await sqlite_kernel.tenant("acme").ledger.balance("agent:bob", USD)).credits_posted == 105


@pytest.mark.parametrize("token", [None, "sk-acme-00000000000000000000000000000000"])
def test_sos_mcp_refuses_a_missing_or_bad_token_before_serving(tmp_path: Path, token: str | None) -> None:
    url = f"sqlite:///{tmp_path}/sos.db"

    async def seeded() -> None:
        async with sos_kernel.open(url) as kernel:
            await seed(kernel)

    anyio.run(seeded)
    args = [sys.executable, "-m", "sos_kernel", "mcp", "--url", url]
    found = subprocess.run([*args, *(["--token", token] if token else [])], capture_output=True, text=True, timeout=60)
    assert found.returncode == 2
    assert found.stdout == ""
    assert found.stderr.startswith("SOS-5001" if token is None else "SOS-5002"), found.stderr


def test_sos_mcp_on_a_missing_kernel_file_creates_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing.db"
    args = [sys.executable, "-m", "sos_kernel", "mcp", "--url", url, "--token", "sk-acme-" + "0" * 32]
    found = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert found.returncode == 2
    assert found.stderr.startswith("SOS-4040"), found.stderr
    assert not (tmp_path / "missing.db").exists()


async def test_streamable_http_acts_as_each_requests_token(sqlite_kernel: sos_kernel.Kernel, served: str) -> None:
    _, tokens = await seed(sqlite_kernel)
    async with over_http(served, tokens["alice"]) as alice:
        await _send_and_check(alice, sqlite_kernel)
        forged = {"source": "agent:bob", "target": "agent:carol", "text": "as bob"}
        refused(await alice.call_tool("bus_announce", forged), "SOS-5004")
    async with over_http(served, tokens["bob"]) as bob:
        read = ok(await bob.call_tool("inbox", {"limit": 10}))
        assert [m["message"]["payload"]["text"] for m in read["messages"]] == ["over the wire"]
        assert ok(await bob.call_tool("status", {}))["agent"] == "agent:bob"


async def test_a_request_of_the_stateless_protocol_era_acts_as_its_token(
    sqlite_kernel: sos_kernel.Kernel, served: str
) -> None:
    _, tokens = await seed(sqlite_kernel)
    version = max(MODERN_PROTOCOL_VERSIONS)
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "status", "arguments": {}}}
    body["params"]["_meta"] = meta  # type: ignore[index]
    headers = {
        "authorization": f"Bearer {tokens['bob']}",
        "mcp-protocol-version": version,
        "accept": "application/json, text/event-stream",
        "mcp-method": "tools/call",
        "mcp-name": "status",
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(served + MCP_PATH, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["structuredContent"]["result"]["agent"] == "agent:bob"


async def test_tenant_b_sees_nothing_of_tenant_a_over_http(sqlite_kernel: sos_kernel.Kernel, served: str) -> None:
    _, a_tokens = await seed(sqlite_kernel)
    _, b_tokens = await seed(sqlite_kernel, "beta")
    async with over_http(served, a_tokens["alice"]) as a_alice:
        ok(await a_alice.call_tool("send", {"to": "bob", "text": "acme only"}))
    async with over_http(served, b_tokens["bob"]) as b_bob:
        assert ok(await b_bob.call_tool("inbox", {"peek": True}))["messages"] == []
        assert ok(await b_bob.call_tool("status", {}))["tenant"] == "beta"
    assert len(await sqlite_kernel.tenant("acme").bus.history("agent:bob")) == 1


@pytest.mark.parametrize(("token", "code"), [(None, "SOS-5001"), ("sk-acme-" + "0" * 32, "SOS-5002")])
async def test_a_missing_or_bad_token_is_refused_before_any_tool_runs(
    sqlite_kernel: sos_kernel.Kernel, served: str, token: str | None, code: str
) -> None:
    await seed(sqlite_kernel)
    with pytest.raises(BaseException) as info:  # noqa: PT011 (an MCPError, maybe in the client's task group)
        async with over_http(served, token):
            pass
    error = refusal(info).error
    assert str(error.message).startswith(code)
    assert error.data["error"]["code"] == code
    # the same refusal as plain HTTP: 401 with the SOS envelope in the JSON-RPC error's data
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "status", "arguments": {}}}
    headers = {"accept": "application/json, text/event-stream"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as http:
        answer = await http.post(served + MCP_PATH, json=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["data"]["error"]["code"] == code


async def test_a_revoked_token_is_refused_at_its_next_request(sqlite_kernel: sos_kernel.Kernel, served: str) -> None:
    view, tokens = await seed(sqlite_kernel)
    async with over_http(served, tokens["alice"]) as alice:
        ok(await alice.call_tool("status", {}))
        info = next(t for t in await view.tokens.list() if t.agent == "agent:alice")
        await view.tokens.revoke(info.id)
        await anyio.sleep(TOKEN_CACHE_TTL_S + 0.2)  # the server's kernel caches a token this long
        with pytest.raises(BaseException) as refused_call:  # noqa: PT011
            await alice.call_tool("status", {})
    assert str(refusal(refused_call).error.message).startswith("SOS-5002")


async def test_one_token_holds_a_bounded_number_of_requests(sqlite_kernel: sos_kernel.Kernel, served: str) -> None:
    _, tokens = await seed(sqlite_kernel)
    outcomes: list[Any] = []

    async def waiting_ask() -> None:
        async with over_http(served, tokens["alice"]) as alice:
            outcomes.append(await alice.call_tool("ask", {"to": "carol", "text": "?", "timeout_s": 3}))

    async with anyio.create_task_group() as tg:
        for _ in range(2):  # principal_max=2 on this server: both asks wait
            tg.start_soon(waiting_ask)
        await anyio.sleep(1.0)
        with pytest.raises(BaseException) as info:  # noqa: PT011
            async with over_http(served, tokens["alice"]) as alice:
                await alice.call_tool("status", {})
    error = refusal(info).error
    assert str(error.message).startswith("SOS-4010")
    assert error.data["error"]["details"]["limit"] == "mcp_requests_per_principal_max"
    assert [refused(o, "SOS-6004") for o in outcomes]  # the asks ran out their own time
    async with over_http(served, tokens["bob"]) as bob:  # another token of the tenant is not held up
        ok(await bob.call_tool("status", {}))


def test_sos_serve_mounts_mcp(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/served.db"

    async def seeded() -> str:
        async with sos_kernel.open(db) as kernel:
            return (await seed(kernel))[1]["alice"]

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
        base_url = json.loads(out.read_text().splitlines()[0])["listening"]

        async def call() -> Any:
            async with over_http(base_url, token) as alice:
                return ok(await alice.call_tool("status", {}))

        assert anyio.run(call)["agent"] == "agent:alice"
    finally:
        proc.terminate()
        proc.wait(30)


# -- a body that names a key twice ------------------------------------------------------------------------------

SEND_CALL = (
    '{{"jsonrpc":"2.0",{ids}"method":"tools/call",{params}}}',
    '"params":{{"name":"send","arguments":{{"to":"bob",{text}}},"_meta":{meta}}}',
)
REPEATED_BODIES = [
    ("id", '"id":1,"id":2,', '"text":"hi"', "(root)", "id"),
    ("params", '"id":1,', '"text":"hi"', "(root)", "params"),
    ("arguments", '"id":1,', '"text":"pay 1","text":"pay 1000000"', "params.arguments", "text"),
]


def _mcp_body(ids: str, text: str, meta: dict[str, Any], twice: bool) -> str:
    params = SEND_CALL[1].format(text=text, meta=json.dumps(meta))
    return SEND_CALL[0].format(ids=ids, params=f"{params},{params}" if twice else params)


@pytest.mark.parametrize(("case", "ids", "text", "where", "key"), REPEATED_BODIES, ids=[b[0] for b in REPEATED_BODIES])
async def test_a_body_repeating_a_key_is_a_parse_error_and_no_tool_runs(
    sqlite_kernel: sos_kernel.Kernel, served: str, case: str, ids: str, text: str, where: str, key: str
) -> None:
    _, tokens = await seed(sqlite_kernel)
    version = max(MODERN_PROTOCOL_VERSIONS)
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "authorization": f"Bearer {tokens['alice']}",
        "content-type": "application/json",
        "mcp-protocol-version": version,
        "accept": "application/json, text/event-stream",
        "mcp-method": "tools/call",
        "mcp-name": "send",
    }
    async with httpx.AsyncClient() as http:
        body = _mcp_body(ids, text, meta, twice=case == "params")
        answer = await http.post(served + MCP_PATH, content=body.encode(), headers=headers)
        not_json = await http.post(served + MCP_PATH, content=b'{"jsonrpc":', headers=headers)
        assert answer.status_code == not_json.status_code == 400, answer.text  # as the transport answers bad JSON
        assert not_json.json()["error"]["code"] == PARSE_ERROR
        parsed = jsonrpc_message_adapter.validate_json(answer.content, by_name=False)  # as the MCP client reads it
        assert isinstance(parsed, JSONRPCError)
        assert (parsed.id, parsed.error.code) == (None, PARSE_ERROR)
        assert parsed.error.message.startswith(f"SOS-4001 the object at {where} repeats the key {key!r}")
        assert parsed.error.data["error"]["details"]["errors"][0]["type"] == "json_duplicate_key"
        assert await sqlite_kernel.tenant("acme").bus.history("agent:bob") == []
        # the same call without the repeat goes through the check to the tool
        plain = await http.post(
            served + MCP_PATH, content=_mcp_body('"id":1,', '"text":"hi"', meta, False).encode(), headers=headers
        )
    assert plain.status_code == 200, plain.text
    assert len(await sqlite_kernel.tenant("acme").bus.history("agent:bob")) == 1
