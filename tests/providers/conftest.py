"""The fake providers, one server for the whole session; each test starts with every provider answering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .fake_providers import Fakes, running_fakes

KIND_BACKEND = {"openai": "openai-adapter", "anthropic": "claude-adapter", "gemini": "gemini-adapter"}


@pytest.fixture(scope="session")
def fake_server() -> Iterator[Fakes]:
    with running_fakes() as fakes:
        yield fakes


@pytest.fixture
def fakes(fake_server: Fakes) -> Fakes:
    fake_server.modes.clear()
    fake_server.requests.clear()
    return fake_server


def card(fakes: Fakes, id: str, kind: str = "openai", tier: str = "primary", **extra: Any) -> dict[str, Any]:
    """A ProviderCard v1 for fake provider ``id`` speaking ``kind``."""
    found = {
        "schema_version": "1",
        "id": id,
        "name": id.title(),
        "backend": KIND_BACKEND[kind],
        "tier": tier,
        "model": f"{kind}-model",
        "endpoint": fakes.url(id, kind),
        "timeout_seconds": 2,
    }
    return {**found, **extra}
