"""Fixtures for remote use: a SQLite kernel with one tenant, its app, and MumegaClients over the ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel.server import create_app

TENANT = "acme"
SERVER_ADMIN = "server-admin-secret"
BASE_URL = "http://sos.test"


@dataclass
class Remote:
    """One in-process deployment: the kernel, its app, tokens, and a factory of clients closed at teardown."""

    kernel: sos_kernel.Kernel
    app: FastAPI
    admin: str
    alice: str
    bob: str
    client: Callable[[str | None], MumegaClient]
    http: httpx.AsyncClient

    def auth(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    async with sos_kernel.open(f"sqlite:///{tmp_path}/sos.db") as kernel:
        _, admin = await kernel.tenants.create(TENANT, "scale")
        tokens = kernel.tenant(TENANT).tokens
        alice = await tokens.issue(agent="agent:alice")
        bob = await tokens.issue(agent="agent:bob")
        app = create_app(kernel, admin_token=SERVER_ADMIN, linger_s=5.0)
        transport = httpx.ASGITransport(app)
        clients: list[MumegaClient] = []

        def client(token: str | None) -> MumegaClient:
            made = MumegaClient(BASE_URL, token, transport=transport, retries=2)
            clients.append(made)
            return made

        http = httpx.AsyncClient(base_url=BASE_URL, transport=transport)
        try:
            yield Remote(kernel, app, admin, alice.secret, bob.secret, client, http)
        finally:
            await http.aclose()
            for made in clients:
                await made.aclose()
            await app.state.sos.aclose()
