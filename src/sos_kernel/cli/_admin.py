"""``sos tenant create`` and ``sos token issue|list|revoke``: who may act.

A secret (a tenant's first admin token, an issued token) is printed once, on stdout, and never again: the kernel
keeps only its digest. Over http(s), tenant creation presents the server's admin token (``--admin-token`` or
``$SOS_ADMIN_TOKEN``) and token commands the tenant admin token given by ``--token``/``$SOS_TOKEN``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ..identity.models import DEFAULT_AGENT_SCOPES, PLAN_SEATS, IssuedToken, Tenant, TokenInfo
from ._output import Output, when
from ._target import Context, Target

__all__ = ["ADMIN_TOKEN_HELP", "add_commands"]

ADMIN_TOKEN_HELP = "tenant create over http(s): the server's admin token (default: $SOS_ADMIN_TOKEN)"


def _scopes(scopes: tuple[str, ...]) -> str:
    return "(agent defaults)" if scopes == DEFAULT_AGENT_SCOPES else ",".join(scopes)


def _state(info: TokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    return "live" if info.live(now) else "expired"


def _print_tenant(out: Output, tenant: Tenant, admin_token: str) -> None:
    seats = "unlimited" if tenant.seats_max is None else str(tenant.seats_max)
    out.fields(
        [
            ("tenant", tenant.slug),
            ("plan", tenant.plan),
            ("seats", seats),
            ("status", tenant.status),
            ("created", when(tenant.created_at)),
            ("admin token", admin_token),
        ]
    )
    out.progress("the admin token is shown once; store it now (the kernel keeps only its digest)")


async def _tenant_create(target: Target, ctx: Context) -> int:
    a = ctx.args
    tenant, admin_token = await target.admin.create_tenant(a.slug, a.plan, a.seats)
    if ctx.out.json_mode:
        ctx.out.document({"tenant": tenant, "admin_token": admin_token})
    else:
        _print_tenant(ctx.out, tenant, admin_token)
    return 0


def _print_issued(out: Output, issued: IssuedToken) -> None:
    out.fields(
        [
            ("id", issued.id),
            ("tenant", issued.tenant),
            ("agent", issued.agent),
            ("scopes", _scopes(issued.scopes)),
            ("expires", when(issued.expires_at) if issued.expires_at else "never"),
            ("secret", issued.secret),
        ]
    )
    out.progress("the secret is shown once; store it now (the kernel keeps only its digest)")


async def _token_issue(target: Target, ctx: Context) -> int:
    a = ctx.args
    issued = await target.admin.issue_token(
        agent=a.agent, scopes=a.scope, expires_in_s=a.expires_in_s, label=a.label or ""
    )
    if ctx.out.json_mode:
        ctx.out.document(issued)
    else:
        _print_issued(ctx.out, issued)
    return 0


async def _token_list(target: Target, ctx: Context) -> int:
    tokens = await target.admin.list_tokens()
    if ctx.out.json_mode:
        ctx.out.document(tokens)
        return 0
    now = datetime.now(UTC)
    rows = [
        (t.id, t.agent, _state(t, now), _scopes(t.scopes), when(t.created_at), when(t.expires_at), t.label)
        for t in tokens
    ]
    ctx.out.table(["id", "agent", "state", "scopes", "created", "expires", "label"], rows, empty="no tokens")
    return 0


async def _token_revoke(target: Target, ctx: Context) -> int:
    await target.admin.revoke_token(ctx.args.id)
    if ctx.out.json_mode:
        ctx.out.document({"revoked": ctx.args.id})
    else:
        ctx.out.line(f"revoked {ctx.args.id}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``tenant`` and ``token``."""
    tenant = sub.add_parser("tenant", help="create tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", parents=[options], help="create a tenant; prints its first admin token (once)")
    create.add_argument("slug", help="2-63 lower-case letters, digits or dashes, starting with a letter")
    create.add_argument("--plan", choices=sorted(PLAN_SEATS), default="starter", help="default: starter")
    create.add_argument("--seats", type=int, default=None, help="agent seats (default: the plan's)")
    create.set_defaults(func=lambda ctx: ctx.run(_tenant_create), admin_only=True, writes=True)

    token = sub.add_parser("token", help="issue, list and revoke bearer tokens").add_subparsers(
        dest="action", required=True
    )
    issue = token.add_parser("issue", parents=[options], help="issue a token; prints its secret (once)")
    issue.add_argument("--agent", default=None, help="bind it to agent:<name> (takes a seat)")
    issue.add_argument(
        "--scope",
        action="append",
        default=None,
        metavar="SCOPE",
        help="a scope (admin, bus:read, ledger:admin…); repeat for several (default: the agent scopes)",
    )
    issue.add_argument("--expires-in-s", type=int, default=None, help="lifetime in seconds (default: no expiry)")
    issue.add_argument("--label", default="", help="a note kept with the token")
    issue.set_defaults(func=lambda ctx: ctx.run(_token_issue), writes=True)
    listing = token.add_parser("list", parents=[options], help="the tenant's tokens (never their secrets)")
    listing.set_defaults(func=lambda ctx: ctx.run(_token_list))
    revoke = token.add_parser("revoke", parents=[options], help="revoke a token by id")
    revoke.add_argument("id", help="the token id (tok_…)")
    revoke.set_defaults(func=lambda ctx: ctx.run(_token_revoke), writes=True)
