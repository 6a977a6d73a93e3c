"""The HTTP plumbing shared by every route: the session dependency, JSON answers, idempotency keys, the error
envelope for every failure (SOS errors, validation errors, unknown routes) and the request size limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any, cast

import anyio
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidArgument, LimitExceeded, MethodNotAllowed, NotFound, SchemaViolation, SOSError
from ..session import Session
from ..wire import encode, json_bytes
from ._state import Idempotency, ServerState, error_bytes

__all__ = [
    "BEARER",
    "BodyLimit",
    "SessionDep",
    "answer",
    "bearer_token",
    "envelope_response",
    "http_error",
    "keyed",
    "sos_error",
    "state_of",
    "validation_error",
]

JSON = "application/json"
BEARER = HTTPBearer(auto_error=False, description="A token issued by the kernel: 'Authorization: Bearer sk-...'")


def state_of(request: Request) -> ServerState:
    """The server state of the app handling ``request``."""
    return cast(ServerState, request.app.state.sos)


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    return credentials.credentials if credentials is not None else None


async def current_session(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Session:
    """The caller's session (SOS-5001..5006 when the token does not give one)."""
    return await state_of(request).sessions.get(bearer_token(credentials))


SessionDep = Annotated[Session, Depends(current_session)]


def answer(value: Any, status: int = 200) -> Response:
    """A JSON answer of ``value`` in its wire form."""
    return Response(json_bytes(encode(value)), status_code=status, media_type=JSON)


async def keyed(
    request: Request, session: Session, compute: Callable[[], Awaitable[Any]], status: int = 200
) -> Response:
    """Run ``compute`` once per ``Idempotency-Key`` (when the header is sent) and answer its result."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return answer(await compute(), status)
    # per token, not per agent: a stored answer is replayed only to the credential that made the call, never to
    # another token of the same agent that may lack the call's scope or the right it was made with
    principal = session.principal.token_id
    scope = (session.tenant, principal, f"{request.method} {request.url.path} {Idempotency.check_key(key)}")

    async def run() -> tuple[int, bytes]:
        return status, json_bytes(encode(await compute()))

    code, body, replayed = await state_of(request).idempotency.run(scope, await request.body(), run)
    headers = {"idempotent-replayed": "true"} if replayed else None
    return Response(body, status_code=code, media_type=JSON, headers=headers)


def envelope_response(error: SOSError, status: int | None = None) -> Response:
    """The SOS error envelope with the error's HTTP status."""
    headers = {"www-authenticate": "Bearer"} if (status or error.http_status) == 401 else None
    return Response(error_bytes(error), status_code=status or error.http_status, media_type=JSON, headers=headers)


async def sos_error(request: Request, exc: Exception) -> Response:
    """Every SOSError becomes its envelope."""
    return envelope_response(cast(SOSError, exc))


def _errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(str(part) for part in e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e["type"])}
        for e in exc.errors()[:50]
    ]


async def validation_error(request: Request, exc: Exception) -> Response:
    """A body that is not a JSON object is SOS-4001; a bad argument in it (a wrong type, a missing or unknown
    field) or a bad query, path or header parameter is SOS-4005, as the same argument is refused in-process."""
    errors = _errors(cast(RequestValidationError, exc))
    whole_body = any(e["loc"] == "body" or e["type"] == "json_invalid" for e in errors)
    first = errors[0] if errors else {"loc": "?", "msg": "invalid"}
    text = f"{first['loc']}: {first['msg']}"
    error: SOSError = (
        SchemaViolation(f"the request body must be a JSON object ({text})", details={"errors": errors})
        if whole_body
        else InvalidArgument(f"bad argument {text}", details={"errors": errors})
    )
    return envelope_response(error)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    # Starlette answers 405 with the methods of the first route of the path alone; a path served by several routes
    # (GET and POST /v1/tokens) takes the methods of them all.
    routes = request.app.router.routes
    return [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes (404), wrong methods (405) and other framework refusals, as the envelope."""
    http = cast(StarletteHTTPException, exc)
    if http.status_code == 404:
        return envelope_response(NotFound(f"no route {request.method} {request.url.path}"))
    if http.status_code == 405:
        allowed = _allowed_methods(request)
        message = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
        response = envelope_response(MethodNotAllowed(message, details={"allow": allowed}))
        response.headers["allow"] = ", ".join(allowed)
        return response
    error = InvalidArgument(str(http.detail), details={"status": http.status_code})
    response = envelope_response(error, http.status_code)
    response.headers.update(http.headers or {})
    return response


class BodyLimit:
    """Refuses a request body over ``bytes_max`` with SOS-4010 (413) before the app sees it, whether the size is
    declared (``Content-Length``) or only discovered while reading a chunked body.

    A body of ``large_bytes_min`` or more is large. Before one is read, its bearer token must give a session (else
    the refusal is answered at once, unread); it then takes one of its tenant's ``per_tenant`` turns and one of
    ``large``'s turns until its answer is sent, waiting unread for them, so one tenant holds at most
    ``per_tenant`` of the server's turns. A large body must arrive within ``read_s_max`` seconds of its turn (408
    otherwise). Small requests never wait for a turn.
    """

    def __init__(
        self,
        app: ASGIApp,
        bytes_max: int,
        large: anyio.CapacityLimiter,
        large_bytes_min: int,
        tenant_of: Callable[[str | None], Awaitable[str]],
        per_tenant: int,
        read_s_max: float,
    ) -> None:
        self.app = app
        self.bytes_max = bytes_max
        self.large = large
        self.large_bytes_min = large_bytes_min
        self.tenant_of = tenant_of
        self.per_tenant = per_tenant
        self.read_s_max = read_s_max
        self._tenants: dict[str, anyio.CapacityLimiter] = {}

    def _too_large(self, size: int) -> LimitExceeded:
        return LimitExceeded(
            f"request body of {size}+ bytes; this server takes at most {self.bytes_max}",
            details={"limit": "request_bytes_max", "max": self.bytes_max, "size": size},
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        await envelope_response(self._too_large(size))(scope, receive, send)

    async def _turn(self, scope: Scope, stack: AsyncExitStack) -> None:
        """Take the caller's tenant's turn, then the server's (SOSError if the token gives no session)."""
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        tenant = await self.tenant_of(token.strip() if scheme.lower() == "bearer" else None)
        limiter = self._tenants.get(tenant)
        if limiter is None:
            limiter = self._tenants[tenant] = anyio.CapacityLimiter(self.per_tenant)
        await stack.enter_async_context(limiter)
        await stack.enter_async_context(self.large)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        size = int(declared) if declared is not None and declared.isdigit() else 0
        if size > self.bytes_max:
            await self._refuse(scope, receive, send, size)
            return
        async with AsyncExitStack() as stack:
            try:
                held = size >= self.large_bytes_min
                if held:
                    await self._turn(scope, stack)
                body = await self._read(scope, receive, send, stack if not held else None)
            except SOSError as exc:
                await envelope_response(exc)(scope, receive, send)
                return
            if body is not None:
                await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive, send: Send, stack: AsyncExitStack | None) -> bytes | None:
        """The whole body, or None when it was refused or the client left; once the body is large, a turn is taken
        into ``stack`` (None when one is held already), and the rest must arrive within ``read_s_max``."""
        chunks: list[bytes] = []
        size = 0
        deadline = anyio.current_time() + self.read_s_max if stack is None else None
        while True:
            with anyio.move_on_after(self.read_s_max if deadline is None else deadline - anyio.current_time()):
                message = await receive()
                if message["type"] != "http.request":
                    return None  # the client left before sending its body
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.bytes_max:
                    await self._refuse(scope, receive, send, size)
                    return None
                if stack is not None and size >= self.large_bytes_min:
                    await self._turn(scope, stack)
                    stack = None
                    deadline = anyio.current_time() + self.read_s_max
                if not message.get("more_body", False):
                    return b"".join(chunks)
                continue
            error = LimitExceeded(
                f"the request body did not arrive within {self.read_s_max} s",
                details={"limit": "body_read_s_max", "max": self.read_s_max, "size": size},
            )
            await envelope_response(error, 408)(scope, receive, send)
            return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
