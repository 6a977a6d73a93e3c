"""What a command acts on: an embedded kernel (trusted) or a remote server (a session by bearer token).

``--url`` (else ``$SOS_URL``, else ``sqlite:///sos.db``) picks it. ``memory://``, ``sqlite:///…`` and ``redis://…``
open the kernel in this process: commands act as the trusted kernel on ``--tenant`` (default ``default``).
``http://`` and ``https://`` reach a server through :class:`mumega_sdk.MumegaClient` with the token of ``--token``
(else ``$SOS_TOKEN``): the token decides the tenant and what is allowed, exactly as for any remote client.

Both sides satisfy the small protocols below, so each command is written once. A flag that cannot apply to the
chosen kind of URL (``--token`` on an embedded kernel, a ``--tenant`` the token does not belong to) is refused
rather than silently ignored; environment variables that do not apply are not consulted.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

import anyio

from ..bus import PublishReceipt
from ..contracts import Message, SkillCard
from ..errors import (
    BackendFailure,
    BackendUnavailable,
    InvalidArgument,
    MissingToken,
    SOSError,
    from_wire,
)
from ..identity.models import IssuedToken, Tenant, TokenInfo
from ..kernel import DEFAULT_TENANT, DEFAULT_URL, Kernel
from ..kernel import open as open_kernel
from ..ledger import Account, Balance, Transfer
from ..registry import AgentStatus, RegisteredAgent
from ..server import wire
from ._output import Output

if TYPE_CHECKING:
    import httpx

    from mumega_sdk.client import MumegaClient

__all__ = ["REMOTE_SCHEMES", "Admin", "Context", "Services", "Target", "is_remote", "open_target"]

REMOTE_SCHEMES = ("http://", "https://")
ERROR_BODY_CHARS_MAX = 500
"""How much of a non-SOS error answer is kept in the error's details."""
_TOKEN_TENANT = re.compile(r"^sk-([a-z][a-z0-9-]{1,62})-[0-9a-f]{32}$")


def is_remote(url: str) -> bool:
    """Whether ``url`` names a server rather than an engine."""
    return url.lower().startswith(REMOTE_SCHEMES)


def token_tenant(token: str) -> str | None:
    """The tenant a bearer token belongs to (tokens read ``sk-<tenant>-<32 hex>``), None if it is not one."""
    found = _TOKEN_TENANT.match(token)
    return found.group(1) if found else None


# -- the surface commands use: satisfied by TenantView, Session and MumegaClient alike --------------------------


class DeliveryApi(Protocol):
    @property
    def message(self) -> Message: ...
    @property
    def position(self) -> str: ...
    async def ack(self) -> bool: ...


class SubscriptionApi(Protocol):
    async def __aenter__(self) -> SubscriptionApi: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def receive(self, timeout_s: float | None = None) -> DeliveryApi | None: ...


class BusApi(Protocol):
    async def send(self, source: str, target: str, text: str) -> PublishReceipt: ...
    async def history_entries(
        self, address: str, *, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, Message]]: ...
    def subscribe(
        self, address: str, *, group: str | None = None, start: Literal["earliest", "latest"] | None = None
    ) -> SubscriptionApi: ...


class RegistryApi(Protocol):
    async def find(
        self,
        *,
        skill: str | None = None,
        role: str | None = None,
        squad: str | None = None,
        tool: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[RegisteredAgent]: ...


class LedgerApi(Protocol):
    async def open_account(self, owner: str, currency: str, allow_negative: bool = False) -> Account: ...
    async def balance(self, owner: str, currency: str) -> Balance: ...
    async def balances(self) -> list[Balance]: ...
    async def transfer(
        self, *, debit: str, id: str, credit: str, amount: int, currency: str, reason: str = ""
    ) -> Transfer: ...
    async def history(self, owner: str, currency: str, *, after: int = 0, limit: int = 100) -> list[Transfer]: ...


class SkillsApi(Protocol):
    async def get(self, skill_id: str, version: str | None = None) -> SkillCard: ...
    async def versions(self, skill_id: str) -> list[str]: ...
    async def find(
        self,
        *,
        tag: str | None = None,
        backend: str | None = None,
        author: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[SkillCard]: ...
    async def marketplace(self, *, limit: int = 50, offset: int = 0) -> list[SkillCard]: ...


class Services(Protocol):
    """``.bus``, ``.registry``, ``.ledger``, ``.skills`` of one tenant."""

    @property
    def bus(self) -> BusApi: ...
    @property
    def registry(self) -> RegistryApi: ...
    @property
    def ledger(self) -> LedgerApi: ...
    @property
    def skills(self) -> SkillsApi: ...


class Admin(Protocol):
    """Tenants and tokens: the trusted kernel's ``tenants``/``tokens``, or the server's admin routes."""

    async def create_tenant(self, slug: str, plan: str, seats: int | None) -> tuple[Tenant, str]: ...
    async def issue_token(
        self, *, agent: str | None, scopes: Sequence[str] | None, expires_in_s: int | None, label: str
    ) -> IssuedToken: ...
    async def list_tokens(self) -> list[TokenInfo]: ...
    async def revoke_token(self, token_id: str) -> None: ...


# -- the two kinds of target -----------------------------------------------------------------------------------


class EmbeddedAdmin:
    """Tenants and tokens on the trusted kernel."""

    def __init__(self, kernel: Kernel, tenant: str) -> None:
        self._kernel = kernel
        self._tenant = tenant

    async def create_tenant(self, slug: str, plan: str, seats: int | None) -> tuple[Tenant, str]:
        return await self._kernel.tenants.create(slug, plan, seats=seats)

    async def issue_token(
        self, *, agent: str | None, scopes: Sequence[str] | None, expires_in_s: int | None, label: str
    ) -> IssuedToken:
        tokens = self._kernel.tenant(self._tenant).tokens
        return await tokens.issue(agent=agent, scopes=scopes, expires_in_s=expires_in_s, label=label)

    async def list_tokens(self) -> list[TokenInfo]:
        return await self._kernel.tenant(self._tenant).tokens.list()

    async def revoke_token(self, token_id: str) -> None:
        await self._kernel.tenant(self._tenant).tokens.revoke(token_id)


def _failure(response: httpx.Response) -> SOSError:
    """The server's SOS error, or an error of the tree for an answer without the envelope (a proxy, a crash)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return from_wire(body)
    details = {"status": response.status_code, "body": response.text[:ERROR_BODY_CHARS_MAX]}
    if response.status_code in (502, 503, 504):
        return BackendUnavailable(f"the server answered HTTP {response.status_code}", details=details)
    return BackendFailure(f"the server answered HTTP {response.status_code} without an SOS error", details=details)


class RemoteAdmin:
    """Tenants (``POST /v1/tenants``, server admin token) and tokens (``/v1/tokens``, the tenant's admin token)."""

    def __init__(self, client: MumegaClient, admin_token: str | None) -> None:
        self._http = client.http
        self._url = client.base_url
        self._admin_token = admin_token

    async def _call(self, method: str, path: str, *, body: Any = None, token: str | None = None) -> Any:
        import httpx

        headers = {"authorization": f"Bearer {token}"} if token else None
        try:
            response = await self._http.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach {self._url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise _failure(response)
        return None if response.status_code == 204 or not response.content else response.json()

    async def create_tenant(self, slug: str, plan: str, seats: int | None) -> tuple[Tenant, str]:
        if not self._admin_token:
            raise MissingToken(
                f"creating a tenant on {self._url} needs the server's admin token: pass --admin-token or set "
                "SOS_ADMIN_TOKEN"
            )
        body = {"slug": slug, "plan": plan, **({"seats": seats} if seats is not None else {})}
        found = await self._call("POST", "/v1/tenants", body=body, token=self._admin_token)
        return wire.load_tenant(found["tenant"]), str(found["admin_token"])

    async def issue_token(
        self, *, agent: str | None, scopes: Sequence[str] | None, expires_in_s: int | None, label: str
    ) -> IssuedToken:
        asked = {"agent": agent, "scopes": list(scopes) if scopes is not None else None, "expires_in_s": expires_in_s}
        body = {**{k: v for k, v in asked.items() if v is not None}, "label": label}
        return wire.load_issued_token(await self._call("POST", "/v1/tokens", body=body))

    async def list_tokens(self) -> list[TokenInfo]:
        return [wire.load_token_info(t) for t in await self._call("GET", "/v1/tokens")]

    async def revoke_token(self, token_id: str) -> None:
        await self._call("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")


@dataclass(frozen=True)
class Target:
    """An opened target: its URL, the tenant's services and its admin operations."""

    url: str
    services: Services
    admin: Admin


@dataclass(frozen=True)
class Context:
    """One invocation: the parsed arguments and where output goes."""

    args: argparse.Namespace
    out: Output

    @property
    def url(self) -> str:
        """``--url``, else ``$SOS_URL``, else the embedded default."""
        return str(self.args.url or os.environ.get("SOS_URL") or DEFAULT_URL)

    def run(self, command: Callable[[Target, Context], Awaitable[int]]) -> int:
        """Run an async ``command(target, ctx)`` on the opened target."""

        async def main() -> int:
            async with open_target(self) as target:
                return await command(target, self)

        return anyio.run(main)


def _embedded_flags(ctx: Context) -> None:
    if ctx.args.token:
        raise InvalidArgument(
            f"--token is for http(s) URLs; {ctx.url} is an embedded kernel, which is trusted (use --tenant)"
        )
    if getattr(ctx.args, "admin_token", None):
        raise InvalidArgument(f"--admin-token is for http(s) URLs; {ctx.url} is an embedded kernel, which is trusted")


def _remote_token(ctx: Context) -> str | None:
    token: str | None = ctx.args.token or os.environ.get("SOS_TOKEN") or None
    owner = token_tenant(token) if token else None
    if ctx.args.tenant and owner and ctx.args.tenant != owner:
        raise InvalidArgument(
            f"--tenant {ctx.args.tenant} does not match the token, which belongs to tenant {owner}: over http(s) the "
            "token chooses the tenant",
            details={"tenant": ctx.args.tenant, "token_tenant": owner},
        )
    if token is None and not getattr(ctx.args, "admin_only", False):
        raise MissingToken(f"no token for {ctx.url}: pass --token or set SOS_TOKEN")
    return token


@asynccontextmanager
async def open_target(ctx: Context) -> AsyncIterator[Target]:
    """Open what ``--url`` names for one command, and close it afterwards."""
    url = ctx.url
    if not is_remote(url):
        _embedded_flags(ctx)
        tenant = ctx.args.tenant or DEFAULT_TENANT
        async with open_kernel(url) as kernel:
            view = kernel.tenant(tenant)
            yield Target(kernel.url, view, EmbeddedAdmin(kernel, tenant))
        return
    token = _remote_token(ctx)
    from mumega_sdk import MumegaClient

    admin_token = getattr(ctx.args, "admin_token", None) or os.environ.get("SOS_ADMIN_TOKEN") or None
    client = MumegaClient(url, token)
    if getattr(ctx.args, "admin_only", False):
        # Server-admin routes carry their own token: there is no session to open (and check) first.
        async with aclosing(client):
            yield Target(url, client, RemoteAdmin(client, admin_token))
        return
    async with client:
        yield Target(url, client, RemoteAdmin(client, admin_token))
