"""The HTTP server: a kernel's sessions over versioned JSON routes (``pip install 'sos-kernel[server]'``).

``create_app(kernel)`` is an ASGI app (FastAPI) to run with uvicorn or to mount in-process with
``httpx.ASGITransport``; ``mumega_sdk.MumegaClient`` is its client with the session interface. What it promises:

- **One session per bearer token.** ``Authorization: Bearer <token>`` → ``kernel.session(token)``, cached per
  token digest for the app's life; every call is still checked by the session (scopes, own agent, revocation).
- **The SOS error envelope, always.** Every failure answers ``{"error": {"code", "message", "details"}}`` with the
  code's HTTP status: kernel errors as raised; a body that is not a JSON object SOS-4001 (422); a bad argument in
  the body, the query or the path SOS-4005 (400), as the same argument is refused in-process; an unknown route
  SOS-4040 (404); a wrong method SOS-4050 (405); a body over ``request_bytes_max`` SOS-4010 (413).
- **Retries are safe.** Writes that carry their own id (``publish`` by message_id, ledger writes by transfer id,
  usage by event id, skill versions, invocations) are idempotent in the kernel. The others (``send``, ``announce``,
  ``wake``, ``ask``, ``reply``, ``replay``, ``deregister``, ``verify``, ``resolve_dispute``, token issue) honour an
  ``Idempotency-Key`` header: the first answer to a key is replayed to a retry by the same principal for 24 h, from
  the kernel's store (durable on SQLite and Redis), within bounds per principal and per tenant that no other
  tenant's traffic can exhaust; the same key with another body is SOS-4009.
- **Subscriptions are Server-Sent Events** with ack and nack by ``(address, group, position)``; see
  :mod:`sos_kernel.server._streams` for how a disconnected client resumes and why nothing is lost.

Routes (all JSON; ``GET`` arguments are query parameters, ``POST`` arguments a JSON body named as the session
method's)::

    GET  /health   GET /openapi.json      POST /usage (SOS v0.4.1: answers 201 {id, received_at})
    GET  /metrics (Prometheus text; the operator only: loopback, or the metrics token)
    GET  /v1/session (who the token is: {tenant, agent, scopes, token_id}, re-validated)
    POST /v1/tenants (server admin)       POST /v1/tokens  GET /v1/tokens  DELETE /v1/tokens/{id} (tenant admin)
    POST /v1/bus/{publish,publish_many,send,announce,wake,ask,reply,split,replay,ack,nack}
    GET  /v1/bus/{history,dead_letters,pending}   GET  /v1/bus/subscribe (SSE)    DELETE /v1/bus/subscriptions/{id}
    POST /v1/registry/{register,heartbeat,deregister}            GET /v1/registry/{get,status,find}
    POST /v1/ledger/{open_account,transfer,transfer_many,hold,capture,void,transmute,set_rate,check,set_price,
                    record_usage}
    GET  /v1/ledger/{balance,balances,get_transfer,history,rate,price,usage,usage_summary}
    POST /v1/skills/{publish,verify,resolve_dispute,record_invocation}
    GET  /v1/skills/{get,versions,find,marketplace,ancestors,descendants}
    GET  /ui/ ... (HTML: the operator dashboard, a tenant admin's sign-in; see :mod:`sos_kernel.server.ui`)
    GET  /marketplace  /marketplace.json  /marketplace/{tenant}/{skill_id} (HTML and JSON, public: listed skills)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MissingDependency
from ._limits import (
    BODY_READ_S_MAX,
    LARGE_BODIES_MAX,
    LARGE_BODIES_PER_TENANT_MAX,
    LARGE_BODY_BYTES_MIN,
    LINGER_S,
    PING_S,
    REQUEST_BYTES_MAX,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..kernel import Kernel
    from ..replies import ReplyBounds

__all__ = [
    "BODY_READ_S_MAX",
    "LARGE_BODIES_MAX",
    "LARGE_BODIES_PER_TENANT_MAX",
    "LARGE_BODY_BYTES_MIN",
    "LINGER_S",
    "PING_S",
    "REQUEST_BYTES_MAX",
    "create_app",
]


def create_app(
    kernel: Kernel,
    *,
    request_bytes_max: int = REQUEST_BYTES_MAX,
    admin_token: str | None = None,
    linger_s: float = LINGER_S,
    ping_s: float = PING_S,
    idempotency: ReplyBounds | None = None,
    large_bodies_max: int = LARGE_BODIES_MAX,
    large_bodies_per_tenant_max: int = LARGE_BODIES_PER_TENANT_MAX,
    body_read_s_max: float = BODY_READ_S_MAX,
    metrics: bool | None = None,
    metrics_token: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``kernel`` (which the caller opens and closes).

    ``admin_token`` enables ``POST /v1/tenants`` for whoever presents it (no token: tenant creation is refused).
    ``idempotency`` bounds the ``Idempotency-Key`` records (default ``_state.IDEMPOTENCY_BOUNDS``: 1,000 keys per
    principal, 10,000 per tenant, kept 24 h). At most ``large_bodies_max`` request bodies of
    ``LARGE_BODY_BYTES_MIN`` (1 MiB) or more are read and answered at once, at most
    ``LARGE_BODIES_PER_TENANT_MAX`` of them for one tenant, and only for a token that gives a session; the next
    waits, unread, for a turn. ``GET /metrics`` is served when ``metrics`` is True, or by default when
    ``prometheus-client`` is installed (False: never); it is readable from the loopback interface only, or, given
    ``metrics_token``, by its bearer and the server admin token only. Raises SOS-6032 when the ``server`` extra
    is not installed.
    """
    try:
        from ._app import build_app
    except ImportError as exc:
        raise MissingDependency(
            f"the HTTP server needs the 'server' extra ({exc.name} is missing)",
            details={"pip": "pip install 'sos-kernel[server]'"},
        ) from exc
    return build_app(
        kernel,
        admin_token=admin_token,
        request_bytes_max=request_bytes_max,
        linger_s=linger_s,
        ping_s=ping_s,
        idempotency=idempotency,
        large_bodies_max=large_bodies_max,
        large_bodies_per_tenant_max=large_bodies_per_tenant_max,
        body_read_s_max=body_read_s_max,
        metrics=metrics,
        metrics_token=metrics_token,
    )
