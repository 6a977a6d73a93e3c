"""Edges of the derived operations found under attack: values that read one way to a check and another to the
service, keyed replays across tokens, and requests that must be refused with an SOS error, never a 500."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import sos_kernel
from sos_kernel.contracts import AgentCard
from sos_kernel.errors import SOSError

from .conftest import TENANT, Remote

pytestmark = pytest.mark.anyio

USD = "USD"


class TwoFaced(Mapping[str, Any]):
    """A mapping whose ``get`` shows one value and whose items show another."""

    def __init__(self, shown: dict[str, Any], real: dict[str, Any]) -> None:
        self._shown, self._real = shown, real

    def get(self, key: str, default: Any = None) -> Any:
        return self._shown.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._real[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)


class AlwaysEqual(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


async def _fund(kernel: sos_kernel.Kernel) -> Any:
    ledger = kernel.tenant(TENANT).ledger
    await ledger.open_account("system:mint", USD, allow_negative=True)
    for name in ("alice", "bob"):
        await ledger.open_account(f"agent:{name}", USD)
        await ledger.transfer(id=f"seed-{name}", debit="system:mint", credit=f"agent:{name}", amount=100, currency=USD)
    return ledger


async def test_a_batch_item_is_checked_as_it_is_used(remote: Remote) -> None:
    ledger = await _fund(remote.kernel)
    alice = await remote.kernel.session(remote.alice)
    item = TwoFaced(
        {"debit": "agent:alice"},
        {"id": "t", "debit": "agent:bob", "credit": "agent:alice", "amount": 50, "currency": USD},
    )
    with pytest.raises(SOSError, match="SOS-5004"):
        await alice.ledger.transfer_many([item])
    assert (await ledger.balance("agent:bob", USD)).posted == 100


async def test_a_card_is_checked_as_it_is_used(remote: Remote) -> None:
    registry = remote.kernel.tenant(TENANT).registry
    bobs = AgentCard(name="bob", tool="sdk", type="service", role="executor").to_wire()
    await registry.register(bobs)
    alice = await remote.kernel.session(remote.alice)
    card = TwoFaced({"name": "alice"}, {**bobs, "role": "reviewer"})
    with pytest.raises(SOSError, match="SOS-5004"):
        await alice.registry.register(card)
    assert (await registry.get("bob")).card.role == "executor"


async def test_a_publisher_that_only_compares_equal_is_refused(remote: Remote) -> None:
    alice = await remote.kernel.session(remote.alice)
    card = {
        "schema_version": "1",
        "id": "bobs",
        "name": "Bob's",
        "version": "1.0.0",
        "author_agent": "agent:bob",
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": "b.py"},
    }
    with pytest.raises(SOSError, match="SOS-5004"):
        await alice.skills.publish(card, publisher=AlwaysEqual("agent:bob"))


async def test_a_subscriptions_address_is_fixed(remote: Remote) -> None:
    alice = await remote.kernel.session(remote.alice)
    sub = alice.bus.subscribe("agent:alice")
    with pytest.raises(AttributeError):
        sub.address = "agent:bob"  # type: ignore[misc]


async def test_a_stored_answer_is_replayed_only_to_the_token_that_made_the_call(remote: Remote) -> None:
    tokens = remote.kernel.tenant(TENANT).tokens
    wide = (await tokens.issue(agent="agent:alice", scopes=["admin"])).secret
    body = {"source": "agent:bob", "target": "agent:carol", "text": "as bob"}
    key = {"idempotency-key": "k-1"}
    first = await remote.http.post("/v1/bus/send", json=body, headers={**remote.auth(wide), **key})
    assert first.status_code == 200
    again = await remote.http.post("/v1/bus/send", json=body, headers={**remote.auth(remote.alice), **key})
    assert again.status_code == 403
    assert "idempotent-replayed" not in again.headers


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/v1/bus/announce", {"source": "agent:alice", "self": 1}),
        ("POST", "/v1/bus/announce", {"source": "agent:alice", "not an identifier": 1}),
        ("POST", "/v1/bus/publish_many", {"messages": None}),
        ("POST", "/v1/bus/publish_many", {"messages": 5}),
        ("POST", "/v1/bus/publish_many", {"messages": ""}),
        ("POST", "/v1/bus/wake", {"source": "agent:alice", "target": 5, "text": "hi"}),
        ("POST", "/v1/bus/reply", {"to": None, "text": "hi"}),
        ("GET", "/v1/bus/history", {"address": "agent:alice", "after": str(2**64)}),
        ("GET", "/v1/bus/history", {"address": "agent:alice", "after": "x1"}),
        ("GET", "/v1/ledger/history", {"owner": "agent:alice", "currency": USD, "after": 2**64}),
        (
            "POST",
            "/v1/ledger/transfer",
            {"id": "", "debit": "agent:alice", "credit": "agent:bob", "amount": 1, "currency": USD},
        ),
    ],
)
async def test_bad_arguments_are_sos_errors_never_a_500(
    remote: Remote, method: str, path: str, payload: dict[str, Any]
) -> None:
    await _fund(remote.kernel)
    if method == "GET":
        response = await remote.http.get(path, params=payload, headers=remote.auth(remote.alice))
    else:
        response = await remote.http.post(path, json=payload, headers=remote.auth(remote.alice))
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"].startswith("SOS-4")
