"""The dashboard and marketplace over the ASGI app, on every backend: two seeded tenants and a browser-like client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import sos_kernel
from sos_kernel.server import create_app
from sos_kernel.server.ui import Marketplace

from .seed import Seeded, seed

BASE_URL = "http://sos.test"


@dataclass
class World:
    kernel: sos_kernel.Kernel
    app: Any
    acme: Seeded
    rival: Seeded

    def client(self, base_url: str = BASE_URL) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=base_url)

    @property
    def secrets(self) -> list[str]:
        return [t for s in (self.acme, self.rival) for t in (s.admin_token, *s.tokens.values())]


@pytest.fixture
async def world(kernel: sos_kernel.Kernel) -> AsyncIterator[World]:
    acme = await seed(kernel, "acme", ("alice", "bob"), prefix="a-")
    rival = await seed(kernel, "rival", ("zed",), prefix="r-")
    app = create_app(kernel)
    app.state.ui.marketplace = Marketplace(kernel, cache_s=0.0)  # suspensions seen at once in tests
    try:
        yield World(kernel, app, acme, rival)
    finally:
        await app.state.sos.aclose()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    if found is None:
        raise AssertionError("no CSRF field in the page")
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/ui/signin")
    return await client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": token})
