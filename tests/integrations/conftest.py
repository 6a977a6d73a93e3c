"""Integration test helpers: tenant ``acme`` (alice, bob, carol with 100 USD micros each) reached through the
target under test (a kernel session on each backend, or a ``MumegaClient``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import sos_kernel

from ..conftest import Connect
from ..tenants import seed


@dataclass
class Acme:
    kernel: sos_kernel.Kernel
    view: Any
    tokens: dict[str, str]
    sessions: dict[str, Any]


@pytest.fixture
async def acme(kernel: sos_kernel.Kernel, connect: Connect) -> Acme:
    view, tokens = await seed(kernel)
    sessions = {name: await connect(token) for name, token in tokens.items()}
    return Acme(kernel, view, tokens, sessions)
