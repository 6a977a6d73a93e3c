"""The kernel's tools for MCP clients (coding agents): one server per session, over stdio or streamable HTTP.

``create_server(session)`` builds an MCP server (the ``mcp`` package's) whose every tool runs as ``session``'s
principal (a ``Session`` or a ``MumegaClient``): the same guard, the same SOS codes (in the tool error's text and
structured content), the same idempotency (tools take the ids of the operations they call). Its tools are a few
curated conversational ones (``send``, ``inbox``, ``ask``, ``broadcast``, ``peers``, ``status``,
``wallet_balance``, ``transfer``, ``skills_find``, ``skill_invoke``) and one per declared operation of every
served service, derived from its declaration (named ``<service>_<name>`` unless the declaration names it with
``tool=``), so a new service's tools need no glue. A tool is listed to a principal that holds its scope; calling it
anyway is refused by the guard, as any call is. Resource ``sos://inbox``; prompt ``onboard``.

``sos mcp`` serves stdio; :func:`mount` adds streamable HTTP at ``/mcp`` of the HTTP server (``sos serve`` does).
Needs the ``mcp`` extra: ``pip install 'sos-kernel[mcp]'``.
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependency

try:
    import mcp.server.stdio  # noqa: F401  (the SDK, not this package: imports here are absolute)
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        f"the MCP server needs the 'mcp' extra ({exc.name} is missing)",
        details={"pip": "pip install 'sos-kernel[mcp]'"},
    ) from exc

from ..tools import ASK_TIMEOUT_S_MAX, INBOX_LIMIT_MAX, INBOX_WAIT_S_MAX, STATUS_CURRENCIES, STATUS_TASKS_MAX
from ._http import MCP_PATH, MCP_REQUESTS_PER_PRINCIPAL_MAX, MCP_REQUESTS_PER_TENANT_MAX, McpEndpoint, mount
from ._server import INBOX_RESOURCE_MESSAGES_MAX, INBOX_URI, create_server

__all__ = [
    "ASK_TIMEOUT_S_MAX",
    "INBOX_LIMIT_MAX",
    "INBOX_RESOURCE_MESSAGES_MAX",
    "INBOX_URI",
    "INBOX_WAIT_S_MAX",
    "MCP_PATH",
    "MCP_REQUESTS_PER_PRINCIPAL_MAX",
    "MCP_REQUESTS_PER_TENANT_MAX",
    "STATUS_CURRENCIES",
    "STATUS_TASKS_MAX",
    "McpEndpoint",
    "create_server",
    "mount",
    "serve_stdio",
]


async def serve_stdio(server: Any) -> None:
    """Serve ``server`` (from :func:`create_server`) on this process's stdin and stdout until stdin closes."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
