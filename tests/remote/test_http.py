"""The HTTP surface itself: the error envelope everywhere, POST /usage, health, OpenAPI, idempotency keys, admin."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from sos_kernel.errors import InvalidArgument, InvalidToken
from sos_kernel.ledger.usage import recorded_usage_id
from sos_kernel.server import create_app
from sos_kernel.server._state import error_bytes

from .conftest import SERVER_ADMIN, TENANT, Remote

pytestmark = pytest.mark.anyio


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return dict(body["error"])


def usage_event(tenant: str = TENANT) -> dict[str, Any]:
    return {
        "schema_version": "1",
        "id": str(uuid.uuid4()),
        "tenant": tenant,
        "provider": "anthropic",
        "model": "claude",
        "occurred_at": "2026-11-01T10:00:00Z",
        "input_tokens": 1000,
        "cost_micros": 42,
    }


async def test_post_usage_answers_201_with_id_and_received_at(remote: Remote) -> None:
    event = usage_event()
    response = await remote.http.post("/usage", json=event, headers=remote.auth(remote.alice))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "received_at"}
    assert body["id"] == recorded_usage_id(TENANT, "agent:alice", event["id"])  # an agent records in its own ids
    again = await remote.http.post("/usage", json=event, headers=remote.auth(remote.alice))
    assert again.json() == body  # idempotent by the event id
    other = await remote.http.post("/usage", json=usage_event("globex"), headers=remote.auth(remote.alice))
    assert_envelope(other, 403, "SOS-5004")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/v1/nowhere", {}, 404, "SOS-4040"),
        ("GET", "/v1/bus/publish", {}, 405, "SOS-4050"),
        ("POST", "/v1/bus/publish", {"json": {"messages": []}}, 400, "SOS-4005"),
        (
            "POST",
            "/v1/bus/publish",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "SOS-4001",
        ),
        (
            "POST",
            "/v1/ledger/transfer",
            {"json": {"id": "x", "debit": "agent:alice", "credit": "agent:bob", "amount": "5", "currency": "USD"}},
            400,
            "SOS-4005",
        ),
        ("GET", "/v1/bus/history", {"params": {"address": "agent:alice", "limit": "many"}}, 400, "SOS-4005"),
        ("GET", "/v1/bus/history", {}, 400, "SOS-4005"),
        ("GET", "/v1/bus/history", {"params": {"address": "sos:channel:Not A Name"}}, 400, "SOS-4005"),
        ("POST", "/v1/bus/publish", {"json": {"message": {"type": "sned", "source": "agent:alice"}}}, 422, "SOS-4004"),
        ("GET", "/v1/ledger/balance", {"params": {"owner": "agent:alice", "currency": "USD"}}, 404, "SOS-7002"),
        ("GET", "/v1/skills/get", {"params": {"skill_id": "nothing"}}, 404, "SOS-6020"),
        ("GET", "/v1/registry/get", {"params": {"name": "nobody"}}, 404, "SOS-6002"),
        ("GET", "/v1/ledger/balances", {}, 403, "SOS-5004"),
        ("POST", "/v1/tokens", {"json": {}}, 403, "SOS-5004"),
        # A timestamp is ISO 8601 text, never Unix seconds (2026 would be 1970-01-01T00:33:46Z).
        ("GET", "/v1/ledger/usage", {"params": {"until": "2026"}}, 400, "SOS-4005"),
        # JSON has no NaN or Infinity; Python's parser reads them, the server refuses them.
        (
            "GET",
            "/v1/bus/subscribe",
            {"params": {"address": "agent:alice", "visibility_timeout_s": "nan"}},
            400,
            "SOS-4005",
        ),
        (
            "POST",
            "/v1/bus/ask",
            {
                "content": b'{"source": "agent:alice", "target": "agent:bob", "question": "?", "timeout_s": NaN}',
                "headers": {"content-type": "application/json"},
            },
            400,
            "SOS-4005",
        ),
    ],
)
async def test_every_error_is_the_envelope(
    remote: Remote, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    headers = {**remote.auth(remote.alice), **kwargs.pop("headers", {})}
    response = await remote.http.request(method, path, headers=headers, **kwargs)
    assert_envelope(response, status, code)


async def test_a_wrong_method_is_answered_with_every_method_of_the_path(remote: Remote) -> None:
    response = await remote.http.request("OPTIONS", "/v1/tokens", headers=remote.auth(remote.alice))
    error = assert_envelope(response, 405, "SOS-4050")
    assert response.headers["allow"] == "GET, POST"
    assert error["details"]["allow"] == ["GET", "POST"]


def test_an_error_quoting_a_non_finite_number_is_still_json() -> None:
    wire = json.loads(error_bytes(InvalidArgument("bad", details={"timeout_s": float("nan"), "at": [float("-inf")]})))
    assert wire["error"]["details"] == {"timeout_s": "nan", "at": ["-inf"]}


async def test_auth_errors_are_envelopes(remote: Remote) -> None:
    missing = await remote.http.get("/v1/bus/history", params={"address": "agent:alice"})
    assert_envelope(missing, 401, "SOS-5001")
    assert missing.headers["www-authenticate"] == "Bearer"
    unknown = await remote.http.get(
        "/v1/bus/history", params={"address": "agent:alice"}, headers=remote.auth("sk-acme-" + "0" * 32)
    )
    assert_envelope(unknown, 401, "SOS-5002")
    malformed = await remote.http.get("/v1/bus/history", params={"address": "a"}, headers=remote.auth("nope"))
    assert_envelope(malformed, 401, "SOS-5002")


async def test_a_body_over_the_limit_is_refused_with_413(remote: Remote) -> None:
    app = create_app(remote.kernel, request_bytes_max=1024)
    async with httpx.AsyncClient(base_url="http://sos.test", transport=httpx.ASGITransport(app)) as http:
        big = {"message": {"type": "send", "text": "x" * 2000}}
        declared = await http.post("/v1/bus/publish", json=big, headers=remote.auth(remote.alice))
        assert_envelope(declared, 413, "SOS-4010")

        async def chunks() -> Any:
            for _ in range(4):
                yield b"x" * 512

        streamed = await http.post("/v1/bus/publish", content=chunks(), headers=remote.auth(remote.alice))
        error = assert_envelope(streamed, 413, "SOS-4010")
        assert error["details"]["limit"] == "request_bytes_max"
    await app.state.sos.aclose()


async def test_health_and_openapi(remote: Remote) -> None:
    health = await remote.http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    doc = (await remote.http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/bus/publish", "/v1/bus/subscribe", "/v1/bus/ack", "/v1/ledger/transfer", "/usage", "/health"):
        assert path in doc["paths"], path
    subscribe = doc["paths"]["/v1/bus/subscribe"]["get"]["responses"]
    assert "text/event-stream" in subscribe["200"]["content"]
    assert set(subscribe["4XX"]["content"]) == {"application/json"}  # a refusal comes before the stream
    assert "ErrorEnvelope" in doc["components"]["schemas"]


async def test_idempotency_key_replays_the_first_answer(remote: Remote) -> None:
    body = {"source": "agent:alice", "target": "agent:bob", "text": "once"}
    headers = {**remote.auth(remote.alice), "idempotency-key": "k-1"}
    first = await remote.http.post("/v1/bus/send", json=body, headers=headers)
    second = await remote.http.post("/v1/bus/send", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert len(await remote.kernel.tenant(TENANT).bus.history("agent:bob")) == 1
    other = await remote.http.post("/v1/bus/send", json={**body, "text": "twice"}, headers=headers)
    assert_envelope(other, 409, "SOS-4009")
    # keys belong to a principal: bob's k-1 is his own
    bob_body = {"source": "agent:bob", "target": "agent:alice", "text": "mine"}
    bob = await remote.http.post(
        "/v1/bus/send", json=bob_body, headers={**remote.auth(remote.bob), "idempotency-key": "k-1"}
    )
    assert bob.status_code == 200
    refused = {**body, "source": "agent:bob"}
    denied = await remote.http.post("/v1/bus/send", json=refused, headers={**headers, "idempotency-key": "k-2"})
    replayed = await remote.http.post("/v1/bus/send", json=refused, headers={**headers, "idempotency-key": "k-2"})
    assert_envelope(denied, 403, "SOS-5004")
    assert replayed.json() == denied.json()


async def test_tenants_and_tokens_over_http(remote: Remote) -> None:
    refused = await remote.http.post("/v1/tenants", json={"slug": "globex"}, headers=remote.auth(remote.admin))
    assert_envelope(refused, 403, "SOS-5004")
    created = await remote.http.post(
        "/v1/tenants", json={"slug": "globex", "plan": "growth"}, headers=remote.auth(SERVER_ADMIN)
    )
    assert created.status_code == 201, created.text
    admin = created.json()["admin_token"]
    assert created.json()["tenant"]["slug"] == "globex"
    issued = await remote.http.post("/v1/tokens", json={"agent": "agent:zed"}, headers=remote.auth(admin))
    assert issued.status_code == 201, issued.text
    token = issued.json()
    assert token["secret"].startswith("sk-globex-")
    zed = remote.client(token["secret"])
    await zed.bus.send("agent:zed", "agent:zed", "note to self")
    listed = await remote.http.get("/v1/tokens", headers=remote.auth(admin))
    assert {t["id"] for t in listed.json()} >= {token["id"]}
    assert all("secret" not in t for t in listed.json())
    revoked = await remote.http.delete(f"/v1/tokens/{token['id']}", headers=remote.auth(admin))
    assert revoked.status_code == 204
    with pytest.raises(InvalidToken):
        await zed.bus.history("agent:zed")
