"""MCP test helpers: a tenant with agents and money, and the MCP SDK's client over a server built from a session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

import sos_kernel
from sos_kernel.mcp import create_server

from ..conftest import Connect

USD = "USD"
SKILL = {
    "schema_version": "1",
    "id": "skill-a",
    "name": "A",
    "version": "1.0.0",
    "author_agent": "agent:carol",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "a.py"},
    "commerce": {"price_per_call_micros": 10, "currency": "USD", "marketplace_listed": True},
}


@dataclass
class Acme:
    kernel: sos_kernel.Kernel
    view: Any
    tokens: dict[str, str]
    sessions: dict[str, Any]


async def seed(kernel: sos_kernel.Kernel, slug: str = "acme") -> tuple[Any, dict[str, str]]:
    """Tenant ``slug`` with agents alice, bob and carol (100 USD micros each) and one priced skill; their tokens
    (and ``admin``'s)."""
    _, admin_token = await kernel.tenants.create(slug, plan="scale")
    view = kernel.tenant(slug)
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    tokens = {"admin": admin_token}
    for name in ("alice", "bob", "carol"):
        await view.ledger.open_account(f"agent:{name}", USD)
        await view.ledger.transfer(
            id=f"seed-{name}", debit="system:treasury", credit=f"agent:{name}", amount=100, currency=USD
        )
        tokens[name] = (await view.tokens.issue(agent=f"agent:{name}")).secret
    await view.skills.publish(SKILL)
    return view, tokens


@pytest.fixture
async def acme(kernel: sos_kernel.Kernel, connect: Connect) -> Acme:
    view, tokens = await seed(kernel)
    sessions = {name: await connect(token) for name, token in tokens.items()}
    return Acme(kernel, view, tokens, sessions)


@asynccontextmanager
async def mcp_client(session: Any, kernel: sos_kernel.Kernel) -> AsyncIterator[Client]:
    """The MCP SDK's client connected (in memory) to ``create_server(session)``."""
    async with Client(create_server(session, catalogue=kernel.catalogue)) as client:
        yield client


def ok(result: types.CallToolResult) -> Any:
    """A tool's result (its structured content, equal to its JSON text)."""
    text = result.content[0].text if isinstance(result.content[0], types.TextContent) else ""
    assert not result.is_error, text
    assert result.structured_content is not None
    assert json.loads(text) == result.structured_content["result"]
    return result.structured_content["result"]


def refused(result: types.CallToolResult, code: str) -> str:
    """The message of a tool error, checked to carry SOS ``code`` in its text and structured content."""
    assert result.is_error
    text = result.content[0].text if isinstance(result.content[0], types.TextContent) else ""
    assert text.startswith(code), text
    assert result.structured_content is not None
    assert result.structured_content["error"]["code"] == code
    return str(result.structured_content["error"]["message"])
