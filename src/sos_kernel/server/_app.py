"""The FastAPI application over one kernel (see :func:`sos_kernel.server.create_app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InvalidArgument, SOSError
from ..identity.models import Principal
from ..identity.service import token_digest
from ..kernel import Kernel
from ..replies import ReplyBounds
from ._bodies import ErrorEnvelope
from ._http import BodyLimit, http_error, sos_error, validation_error
from ._limits import LARGE_BODY_BYTES_MIN, METRICS_TOKEN_CHARS_MIN
from ._routes_admin import router as admin
from ._routes_bus import router as bus
from ._routes_engine import router as engine
from ._routes_metrics import router as metrics_routes
from ._routes_ops import operations_router
from ._routes_services import usage
from ._state import IDEMPOTENCY_BOUNDS, ServerState
from .ui import Marketplace, UIState
from .ui import router as ui_routes

__all__ = ["build_app"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "The SOS error envelope (bad input, auth, economy)"},
    "5XX": {"model": ErrorEnvelope, "description": "The SOS error envelope (runtime)"},
}


def build_app(
    kernel: Kernel,
    *,
    admin_token: str | None,
    request_bytes_max: int,
    linger_s: float,
    ping_s: float,
    idempotency: ReplyBounds | None = None,
    large_bodies_max: int,
    large_bodies_per_tenant_max: int,
    body_read_s_max: float,
    metrics: bool | None = None,
    metrics_token: str | None = None,
) -> FastAPI:
    """The app; ``app.state.sos`` holds its :class:`ServerState` (closed by the lifespan, or by ``aclose()``)."""
    if not isinstance(large_bodies_per_tenant_max, int) or large_bodies_per_tenant_max < 1:
        raise InvalidArgument(f"large_bodies_per_tenant_max must be an int >= 1, got {large_bodies_per_tenant_max!r}")
    if not isinstance(body_read_s_max, int | float) or not body_read_s_max > 0:
        raise InvalidArgument(f"body_read_s_max must be a number > 0, got {body_read_s_max!r}")
    state = ServerState(
        kernel,
        admin_token=admin_token,
        request_bytes_max=request_bytes_max,
        linger_s=linger_s,
        ping_s=ping_s,
        idempotency=idempotency or IDEMPOTENCY_BOUNDS,
        large_bodies_max=large_bodies_max,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    app = FastAPI(
        title="sos-kernel",
        version=__version__,
        summary="The coordination kernel over HTTP: bus, registry, ledger and skills of one tenant per token.",
        responses=_ERRORS,
        lifespan=lifespan,
    )
    app.state.sos = state
    app.state.ui = UIState(Marketplace(kernel))
    _forget_ends_sessions(kernel, app)
    app.add_exception_handler(SOSError, sos_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    definitions: dict[str, Any] = {}
    _metrics(state, kernel, metrics, metrics_token)
    for router in (admin, bus, operations_router(definitions), usage, engine, metrics_routes, ui_routes):
        app.include_router(router)
    _add_definitions(app, definitions)

    async def tenant_of(token: str | None) -> str:
        return (await (await state.sessions.get(token)).refresh()).tenant

    app.add_middleware(
        BodyLimit,
        bytes_max=request_bytes_max,
        large=state.large_bodies,
        large_bytes_min=LARGE_BODY_BYTES_MIN,
        tenant_of=tenant_of,
        per_tenant=large_bodies_per_tenant_max,
        read_s_max=body_read_s_max,
    )
    return app


def _forget_ends_sessions(kernel: Kernel, app: FastAPI) -> None:
    """A revocation or a tenant status change through ``kernel`` ends this app's cached sessions and dashboard
    sessions of it at once (not at their next check); the hook leaves the kernel when the app closes."""
    state: ServerState = app.state.sos

    def forgotten(ended: Callable[[Principal], bool]) -> None:
        state.sessions.forget(ended)
        app.state.ui.sessions.forget(ended)

    async def detach() -> None:
        if forgotten in kernel.on_forget:
            kernel.on_forget.remove(forgotten)

    kernel.on_forget.append(forgotten)
    state.on_close(detach)


def _metrics(state: ServerState, kernel: Kernel, wanted: bool | None, token: str | None) -> None:
    """Serve ``GET /metrics`` when asked (``True``), or by default when ``prometheus-client`` is installed."""
    if wanted is False:
        return
    from ..ops.metrics import Metrics, metrics_available

    if wanted is None and not metrics_available():
        return
    state.metrics = Metrics().attach(kernel)
    if token is not None:
        if len(token) < METRICS_TOKEN_CHARS_MIN:
            raise InvalidArgument(f"the metrics token must be at least {METRICS_TOKEN_CHARS_MIN} characters")
        state.metrics_digest = token_digest(token)


def _add_definitions(app: FastAPI, definitions: dict[str, Any]) -> None:
    """Add the derived routes' JSON Schema definitions to the OpenAPI document's components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in definitions.items():
                schemas.setdefault(name, definition)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
