"""``sos mcp``: the kernel's MCP tools for one token, served on stdin/stdout (for Claude Code, Codex, Cursor...).

``--url`` (else ``$SOS_URL``) is an embedded kernel (``sqlite:///…``, ``redis://…``: opened in this process) or a
server (``http(s)://…``, reached through ``MumegaClient``); ``--token`` (else ``$SOS_TOKEN``) is whose rights every
tool runs with, in both cases. stdout carries only the protocol; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os

import anyio

from ..errors import InvalidArgument, MissingDependency, MissingToken
from ..kernel import open as open_kernel
from ._target import Context, _check_exists, is_remote

__all__ = ["add_commands"]


def _token(ctx: Context) -> str:
    token: str | None = ctx.args.token or os.environ.get("SOS_TOKEN") or None
    if token is None:
        raise MissingToken(f"sos mcp acts as one token's agent: pass --token or set SOS_TOKEN (for {ctx.url})")
    if ctx.args.tenant or getattr(ctx.args, "admin_token", None):
        raise InvalidArgument("sos mcp takes --url and --token only: the token chooses the tenant")
    return token


async def _serve(ctx: Context, token: str) -> None:
    try:
        from ..mcp import create_server, serve_stdio
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise MissingDependency(
            f"sos mcp needs the 'mcp' extra ({exc.name} is missing)", details={"pip": "pip install 'sos-kernel[mcp]'"}
        ) from exc
    url = ctx.url
    if is_remote(url):
        from mumega_sdk import MumegaClient

        async with MumegaClient(url, token) as client:
            ctx.out.progress(f"serving {client.agent or 'a tenant-wide token'} of {url} on stdio")
            await serve_stdio(create_server(client, catalogue=client.catalogue))
        return
    _check_exists(url, writes=False)  # no token is valid on a kernel that does not exist: create none
    async with open_kernel(url) as kernel:
        session = await kernel.session(token)
        ctx.out.progress(f"serving {session.agent or 'a tenant-wide token'} of {kernel.url} on stdio")
        await serve_stdio(create_server(session, catalogue=kernel.catalogue))


def _run(ctx: Context) -> int:
    anyio.run(_serve, ctx, _token(ctx))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``mcp``."""
    mcp = sub.add_parser(
        "mcp",
        parents=[options],
        help="serve the kernel's MCP tools on stdio, as the agent of --token (embedded or http(s) --url)",
    )
    mcp.set_defaults(func=_run)
