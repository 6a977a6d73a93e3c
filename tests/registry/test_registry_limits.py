"""Bounds of an agent card in the registry, on every backend and through the remote client: free-text fields, the
skills and squads lists, and the bytes of one registration; a refused card is SOS-4010 and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import AgentNotFound, LimitExceeded
from sos_kernel.registry import (
    AGENT_CARD_BYTES_MAX,
    AGENT_CARD_FIELD_CHARS_MAX,
    AGENT_CARD_LIST_ITEM_CHARS_MAX,
    AGENT_CARD_LIST_ITEMS_MAX,
)

from ..conftest import Connect

pytestmark = pytest.mark.anyio

BASE = {
    "agent_card_version": "1.0.0",
    "name": "bob",
    "tool": "sdk",
    "type": "service",
    "role": "executor",
    "registered_at": "2026-12-07T00:00:00Z",
    "last_seen": "2026-12-07T00:00:00Z",
}

TOO_BIG: list[tuple[dict[str, Any], str]] = [
    ({"model": "m" * (AGENT_CARD_FIELD_CHARS_MAX + 1)}, "AGENT_CARD_FIELD_CHARS_MAX"),
    ({"cwd": "/" + "d" * AGENT_CARD_FIELD_CHARS_MAX}, "AGENT_CARD_FIELD_CHARS_MAX"),
    ({"skills": [f"s{i}" for i in range(AGENT_CARD_LIST_ITEMS_MAX + 1)]}, "AGENT_CARD_LIST_ITEMS_MAX"),
    ({"squads": [f"q{i}" for i in range(AGENT_CARD_LIST_ITEMS_MAX + 1)]}, "AGENT_CARD_LIST_ITEMS_MAX"),
    ({"skills": ["s" * (AGENT_CARD_LIST_ITEM_CHARS_MAX + 1)]}, "AGENT_CARD_LIST_ITEM_CHARS_MAX"),
    (
        {
            **{f: "x" * AGENT_CARD_FIELD_CHARS_MAX for f in ("model", "session", "project", "host", "cwd")},
            "skills": [f"skill-{i:03}-{'k' * 110}" for i in range(AGENT_CARD_LIST_ITEMS_MAX)],
            "squads": [f"squad-{i:03}-{'q' * 50}" for i in range(AGENT_CARD_LIST_ITEMS_MAX)],
        },
        "AGENT_CARD_BYTES_MAX",
    ),
]


@pytest.fixture
async def bob(kernel: sos_kernel.Kernel, connect: Connect) -> Any:
    await kernel.tenants.create("acme", plan="growth")
    return await connect((await kernel.tenant("acme").tokens.issue(agent="agent:bob")).secret)


async def test_a_card_past_a_bound_is_refused_and_writes_nothing(bob: Any, kernel: sos_kernel.Kernel) -> None:
    for extra, limit in TOO_BIG:
        with pytest.raises(LimitExceeded) as info:
            await bob.registry.register({**BASE, **extra})
        assert info.value.code == "SOS-4010"
        assert info.value.details["limit"] == limit, extra.keys()
        assert "nothing was written" in str(info.value)
        with pytest.raises(AgentNotFound):
            await kernel.tenant("acme").registry.get("bob")


async def test_endpoints_count_toward_the_registration_bytes(bob: Any, kernel: sos_kernel.Kernel) -> None:
    endpoints = [{"url": "https://example.org/" + "p" * (AGENT_CARD_BYTES_MAX // 8)} for _ in range(8)]
    with pytest.raises(LimitExceeded):
        await bob.registry.register(BASE, endpoints=endpoints)
    with pytest.raises(AgentNotFound):
        await kernel.tenant("acme").registry.get("bob")


async def test_a_card_as_sos_writes_it_fits_with_room(bob: Any) -> None:
    card = {
        **BASE,
        "model": "sonnet-4.6",
        "session": "bob-main",
        "skills": [f"skill-{i}" for i in range(AGENT_CARD_LIST_ITEMS_MAX)],
        "squads": ["core", "ops"],
        "project": "acme",
        "host": "worker-17.internal",
        "cwd": "/home/bob/" + "w" * 3000,
        "summary": "s" * 280,
    }
    registered = await bob.registry.register(card)
    assert registered.card.cwd == card["cwd"]
