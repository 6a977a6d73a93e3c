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
import difflib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from .. import wire
from ..api import ServicesAPI
from ..backends import KERNEL_URLS, resolve_backend
from ..errors import (
    InvalidArgument,
    MissingToken,
    NotFound,
)
from ..identity.models import IssuedToken, Tenant, TokenInfo
from ..kernel import DEFAULT_TENANT, DEFAULT_URL, Kernel, check_tenant
from ..kernel import open as open_kernel
from ..refusals import bad_url
from ._output import Output

if TYPE_CHECKING:
    from mumega_sdk.client import MumegaClient

__all__ = ["REMOTE_SCHEMES", "Admin", "Context", "Target", "is_remote", "open_target"]

REMOTE_SCHEMES = ("http://", "https://")
TENANTS_SHOWN_MAX = 5
"""How many other tenants an empty listing names."""
_TOKEN_TENANT = re.compile(r"^sk-([a-z][a-z0-9-]{1,62})-[0-9a-f]{32}$")


def is_remote(url: str) -> bool:
    """Whether ``url`` names a server rather than an engine."""
    return url.lower().startswith(REMOTE_SCHEMES)


def token_tenant(token: str) -> str | None:
    """The tenant a bearer token belongs to (tokens read ``sk-<tenant>-<32 hex>``), None if it is not one."""
    found = _TOKEN_TENANT.fullmatch(token)
    return found.group(1) if found else None


# -- the surface commands use: ``ServicesAPI`` (sos_kernel.api), satisfied by TenantView and MumegaClient ---------


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


class RemoteAdmin:
    """Tenants (``POST /v1/tenants``, with the server admin token) and the tenant's tokens (``client.tokens``)."""

    def __init__(self, client: MumegaClient, admin_token: str | None) -> None:
        self._client = client
        self._admin_token = admin_token

    async def create_tenant(self, slug: str, plan: str, seats: int | None) -> tuple[Tenant, str]:
        if not self._admin_token:
            raise MissingToken(
                f"creating a tenant on {self._client.base_url} needs the server's admin token: pass --admin-token or "
                "set SOS_ADMIN_TOKEN"
            )
        body = {"slug": slug, "plan": plan, **({"seats": seats} if seats is not None else {})}
        headers = {"authorization": f"Bearer {self._admin_token}"}
        found = await self._client.call("POST", "/v1/tenants", body=body, headers=headers)
        return wire.load_tenant(found["tenant"]), str(found["admin_token"])

    async def issue_token(
        self, *, agent: str | None, scopes: Sequence[str] | None, expires_in_s: int | None, label: str
    ) -> IssuedToken:
        return await self._client.tokens.issue(agent=agent, scopes=scopes, expires_in_s=expires_in_s, label=label)

    async def list_tokens(self) -> list[TokenInfo]:
        return await self._client.tokens.list()

    async def revoke_token(self, token_id: str) -> None:
        await self._client.tokens.revoke(token_id)


@dataclass(frozen=True)
class Target:
    """An opened target: its URL, the tenant's services and its admin operations; embedded, ``tenant`` is the
    tenant acted on and ``others`` the other tenants of the kernel (for hints when this one is empty)."""

    url: str
    services: ServicesAPI
    admin: Admin
    tenant: str | None = None
    others: tuple[str, ...] = ()

    def empty_hint(self, out: Output, what: str) -> None:
        """Say where the data is when tenant ``default`` shows nothing and other tenants exist."""
        if self.others:
            shown = ", ".join(self.others[:TENANTS_SHOWN_MAX])
            out.progress(f"tenant {self.tenant!r} has no {what}; this kernel also has: {shown} (pick one: --tenant)")


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


def _admin_token_applies(ctx: Context) -> None:
    if getattr(ctx.args, "admin_token", None) and not getattr(ctx.args, "admin_only", False):
        raise InvalidArgument("--admin-token is for tenant create; other commands use --token")


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


_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}(/.*)?$")


def _check_scheme(url: str) -> None:
    # ``host:port`` means a server: say so, rather than that it is not a kernel URL
    if "://" not in url and _HOST_PORT.fullmatch(url):
        raise bad_url("URL", url, f"a kernel or server URL: {KERNEL_URLS}, or http(s)://host:port", f"http://{url}")


def _check_exists(url: str, writes: bool) -> None:
    """A command that only reads never creates a SQLite file (nor its directories): a missing one is SOS-4040."""
    if writes or not url.lower().startswith("sqlite:"):
        return
    resolve_backend(url)  # a malformed URL is refused as it is everywhere, before its file is looked for
    from ..backends.sqlite import sqlite_path

    path = sqlite_path(url)
    if not Path(path).exists():
        raise NotFound(
            f"no kernel at {url}: {path} does not exist, and a command that only reads never creates one; check "
            "--url, or create it with a command that writes (sos demo, sos tenant create, sos wallet open)",
            details={"url": url, "path": path},
        )


async def _check_tenant(kernel: Kernel, slug: str, writes: bool) -> tuple[str, ...]:
    """The kernel's other tenants; SOS-4040 with the closest one if ``slug`` (other than ``default``) is unknown."""
    check_tenant(slug)
    known = sorted(t.slug for t in await kernel.tenants.list())
    if slug != DEFAULT_TENANT and slug not in known:
        close = difflib.get_close_matches(slug, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        create = f" (create it: sos tenant create {slug})" if writes or not close else ""
        raise NotFound(
            f"no tenant {slug!r}{hint}{create}", details={"tenant": slug, "closest": close[0] if close else None}
        )
    return tuple(t for t in known if t != slug)


@asynccontextmanager
async def open_target(ctx: Context) -> AsyncIterator[Target]:
    """Open what ``--url`` names for one command, and close it afterwards.

    Embedded, a command that only reads never creates a file, and a ``--tenant`` that does not exist is SOS-4040
    (with the closest existing one) for every command, instead of acting on an empty tenant."""
    url = ctx.url
    _admin_token_applies(ctx)
    if not is_remote(url):
        _check_scheme(url)
        _embedded_flags(ctx)
        writes = bool(getattr(ctx.args, "writes", False))
        _check_exists(url, writes)
        tenant = ctx.args.tenant or DEFAULT_TENANT
        async with open_kernel(url) as kernel:
            others = await _check_tenant(kernel, tenant, writes)
            view = kernel.tenant(tenant)
            yield Target(kernel.url, view, EmbeddedAdmin(kernel, tenant), tenant, others)
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
