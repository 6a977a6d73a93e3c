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
from ..tenants import SKILL, USD, seed

__all__ = ["SKILL", "USD", "Acme", "acme", "mcp_client", "ok", "refused", "seed"]


@dataclass
class Acme:
    kernel: sos_kernel.Kernel
    view: Any
    tokens: dict[str, str]
    sessions: dict[str, Any]


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
