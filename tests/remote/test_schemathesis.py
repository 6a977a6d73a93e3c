"""The OpenAPI document, checked by generated requests: every operation, inputs from its schema (valid and not).

With a tenant admin token the routes do real work on a SQLite kernel (schemathesis re-sends each success without
the token and with a wrong one, which must be refused); with no token or a bad one every operation refuses.
Whatever the input, nothing answers 5xx (but an ask nobody answers: 504 SOS-6004), every answer conforms to the
document, and every error is exactly the SOS error envelope with a code whose HTTP status is the response's.
Generation is derandomized and writes no example database, so a run is the same everywhere.
"""

from __future__ import annotations

import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import AuthContext, Case, CheckContext, Response
from starlette.types import Receive, Scope, Send

import sos_kernel
from sos_kernel.errors import error_class
from sos_kernel.server import create_app

from .conftest import SERVER_ADMIN, TENANT

EXAMPLES_MAX = 15
"""Generated requests per operation with the admin token (valid and invalid inputs, about half each)."""
UNAUTHENTICATED_EXAMPLES_MAX = 3
"""Generated requests per operation without a valid token."""
ASK_TIMEOUT_S = 0.05
"""Nobody answers an ``ask`` here: its generated timeout is capped so the call ends at once (504 SOS-6004)."""
PUBLIC = {"GET /health"}
"""Operations that need no token."""

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all"},
        # The coverage phase (every wrong type of every field, unexpected methods: some 2,000 requests here) would
        # take most of a minute; test_http.py pins what it found. The stateful phase is not part of pytest's.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        # The document gives the shape of each input; the kernel checks its meaning (addresses, ids, amounts, who
        # may act) and refuses a well-shaped request with a 4xx, so schema-valid input is not expected to succeed.
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "operations": [
            # An ask nobody answers times out: 504 SOS-6004 is its answer, not a server error.
            {
                "include-name": "POST /v1/bus/ask",
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 504]}},
            }
        ],
    }
)

SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    # The deployment fixture is meant to be shared by an operation's inputs; generating nested JSON bodies is
    # slow on a loaded machine, which is not a failure of the test.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Deployment:
    """An ASGI app whose lifespan opens a fresh SQLite kernel with one tenant and serves it with ``create_app``.

    The kernel is opened by the lifespan because its objects belong to the event loop that serves the requests,
    and schemathesis serves an in-process app from an event loop of its own. It ends the lifespan after each test,
    so every operation is tested on a kernel of its own.
    """

    def __init__(self) -> None:
        self._app: FastAPI | None = None
        self.admin = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._app is None:
            raise RuntimeError("the deployment's lifespan has not started")
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            db = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sos.db"
            kernel = await stack.enter_async_context(sos_kernel.open(f"sqlite:///{db}"))
            _, self.admin = await kernel.tenants.create(TENANT, "scale")
            self._app = app = create_app(kernel, admin_token=SERVER_ADMIN)
            stack.push_async_callback(app.state.sos.aclose)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            self._app = None
        await send({"type": "lifespan.shutdown.complete"})


DEPLOYMENT = Deployment()
schema = schemathesis.openapi.from_asgi("/openapi.json", DEPLOYMENT, config=CONFIG)


@pytest.fixture
def deployment() -> Deployment:
    """The deployment, started for this test: its admin token is minted when its lifespan starts."""
    health = schema["/health"]["GET"].Case().call()
    assert health.status_code == 200, health.text
    return DEPLOYMENT


def sos_envelope(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error is exactly ``{"error": {"code", "message", "details"}}`` with a code of the response's status."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"an error answer that is not JSON: {response.text[:200]!r}") from None
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str), body
    assert error["code"].startswith("SOS-"), body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], dict), body
    status = error_class(error["code"]).http_status
    assert response.status_code == status, f"{error['code']} is HTTP {status}, answered {response.status_code}"
    return None


def bounded(case: Case) -> None:
    """Inputs that would make a call wait: a subscription streams until ``poll_s``, an ask until its timeout."""
    if case.operation.label == "GET /v1/bus/subscribe":
        case.query = {**(case.query or {}), "poll_s": 0}
    if case.operation.label == "POST /v1/bus/ask" and isinstance(case.body, dict):
        timeout_s = case.body.get("timeout_s")
        if isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and timeout_s > ASK_TIMEOUT_S:
            case.body["timeout_s"] = ASK_TIMEOUT_S


class AdminToken:
    """The tenant admin token of the running deployment, as schemathesis's auth (so its auth checks know it)."""

    def get(self, case: Case, ctx: AuthContext) -> str:
        return DEPLOYMENT.admin

    def set(self, case: Case, data: str, ctx: AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def test_the_document_is_valid_and_documents_the_envelope() -> None:
    schema.validate()
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for path, operations in schema.raw_schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}: FastAPI's validation error is not what is answered"
            for band in ("4XX", "5XX"):
                assert responses[band]["content"] == envelope, f"{method} {path} {band}"


@schema.auth(AdminToken, refresh_interval=None)  # a token per deployment: never cached across tests
@schema.parametrize()
@settings(SETTINGS, max_examples=EXAMPLES_MAX)
def test_every_operation_as_tenant_admin(case: Case, deployment: Deployment) -> None:
    bounded(case)
    case.call_and_validate(additional_checks=[sos_envelope])


@schema.parametrize()
@schema.given(token=st.sampled_from([None, "", "nope", f"sk-{TENANT}-" + "0" * 32]))
@settings(SETTINGS, max_examples=UNAUTHENTICATED_EXAMPLES_MAX)
def test_every_operation_refuses_a_missing_or_bad_token(case: Case, token: str | None, deployment: Deployment) -> None:
    bounded(case)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    response = case.call_and_validate(headers=headers, additional_checks=[sos_envelope])
    if case.operation.label not in PUBLIC:
        assert response.status_code >= 400, response.text
