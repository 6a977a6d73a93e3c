"""Streamable HTTP at ``/mcp`` of the HTTP server: each request acts as the session of its own bearer token.

The transport is stateless (no MCP session is kept between requests): a request's ``Authorization: Bearer`` token
selects its session (the server's cache of sessions by token digest; every tool call re-validates the token, so a
revocation applies at once), and a request without a token, or with one that gives no session, is answered with
its SOS error before any MCP handler runs: the HTTP status of the error, and a JSON-RPC error whose message starts
with the SOS code and whose ``data`` is the SOS error envelope.

What one tenant can hold: at most ``MCP_REQUESTS_PER_TENANT_MAX`` requests in flight (an ``ask`` or an ``inbox``
wait holds one), of which ``MCP_REQUESTS_PER_PRINCIPAL_MAX`` for one token; one more is refused at once with
SOS-4010.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..api import SessionAPI
from ..errors import InvalidArgument, LimitExceeded, SOSError
from ..server._jsonrpc import refuse_repeated_keys
from ..server._state import ServerState
from ..wire import json_bytes
from ._server import build_server

__all__ = ["MCP_PATH", "MCP_REQUESTS_PER_PRINCIPAL_MAX", "MCP_REQUESTS_PER_TENANT_MAX", "McpEndpoint", "mount"]

MCP_PATH = "/mcp"
MCP_REQUESTS_PER_TENANT_MAX = 32
"""MCP requests one tenant may have in flight on the server."""
MCP_REQUESTS_PER_PRINCIPAL_MAX = 8
"""Of those, how many one token may have."""
JSONRPC_REFUSED = -32001
"""The JSON-RPC error code of a request refused before it reached the MCP server (its SOS code is in ``data``)."""
_SESSION_KEY = "sos.session"


def refusal(error: SOSError) -> Response:
    """``error`` as a JSON-RPC error (the MCP client surfaces its message) with the error's HTTP status."""
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": JSONRPC_REFUSED, "message": str(error), "data": error.to_wire()},
    }
    headers = {"www-authenticate": "Bearer"} if error.http_status == 401 else None
    status = 429 if isinstance(error, LimitExceeded) else error.http_status
    return Response(json_bytes(body), status_code=status, media_type="application/json", headers=headers)


async def _resolve(ctx: ServerRequestContext[Any]) -> SessionAPI:
    request = ctx.request
    session = request.scope.get(_SESSION_KEY) if isinstance(request, Request) else None
    if session is None:  # only reachable if the endpoint is bypassed: refuse rather than act as anyone
        raise InvalidArgument("this MCP request carries no session")
    return session  # type: ignore[no-any-return]


class McpEndpoint:
    """The ASGI endpoint at ``/mcp``: authenticates, bounds, then hands the request to the MCP transport."""

    def __init__(
        self,
        state: ServerState,
        *,
        tenant_max: int = MCP_REQUESTS_PER_TENANT_MAX,
        principal_max: int = MCP_REQUESTS_PER_PRINCIPAL_MAX,
    ) -> None:
        self.state = state
        self.tenant_max = tenant_max
        self.principal_max = principal_max
        self.manager = StreamableHTTPSessionManager(
            build_server(_resolve, state.kernel.catalogue), stateless=True, json_response=True
        )
        self._held: dict[str, int] = {}

    def _take(self, *keys: tuple[str, int]) -> None:
        for key, limit in keys:
            if self._held.get(key, 0) >= limit:
                name = "mcp_requests_per_tenant_max" if key.startswith("t:") else "mcp_requests_per_principal_max"
                raise LimitExceeded(
                    f"{limit} MCP requests already in flight ({name}); retry when one has finished",
                    details={"limit": name, "max": limit},
                )
        for key, _ in keys:
            self._held[key] = self._held.get(key, 0) + 1

    def _give(self, *keys: str) -> None:
        for key in keys:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        kind, _, token = header.partition(" ")
        try:
            session = await self.state.sessions.get(token.strip() if kind.lower() == "bearer" else None)
            principal = await session.refresh()
            keys = (f"t:{principal.tenant}", f"p:{principal.tenant}:{principal.token_id}")
            self._take((keys[0], self.tenant_max), (keys[1], self.principal_max))
        except SOSError as exc:
            await refusal(exc)(scope, receive, send)
            return
        try:
            try:  # a body repeating a key is refused before the MCP library reads it: 400, as for bad JSON
                checked = await refuse_repeated_keys(
                    scope, receive, send, status=400, bytes_max=self.state.request_bytes_max
                )
            except SOSError as exc:
                await refusal(exc)(scope, receive, send)
                return
            if checked is not None:
                await self.manager.handle_request({**scope, _SESSION_KEY: session}, checked, send)
        finally:
            self._give(*keys)


def mount(app: Any, **limits: int) -> McpEndpoint:
    """Serve MCP at ``/mcp`` of ``app`` (from :func:`sos_kernel.server.create_app`): the route, and the MCP
    transport's lifespan run inside the app's. ``limits``: ``tenant_max``, ``principal_max``."""
    endpoint = McpEndpoint(app.state.sos, **limits)
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with endpoint.manager.run(), inner(a) as value:
            yield value

    app.router.lifespan_context = lifespan
    return endpoint
