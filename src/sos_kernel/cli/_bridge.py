"""``sos bridge``: a kernel tenant and a running SOS v0.4.1 deployment's Redis, both ways (see docs/sos.md).

``--url`` names the kernel as for every command (embedded with ``--tenant``, or a server with the tenant's admin
token); ``--sos-redis`` names SOS's Redis. It runs until interrupted, printing the bridge's status every
``STATUS_EVERY_S`` seconds (one JSON line each with ``--json``); ``--once`` runs one round and prints its status.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import anyio

from ..bridge import SOSBridge
from ..errors import InvalidArgument
from ..kernel import DEFAULT_TENANT
from ._target import Context, Target, token_tenant

__all__ = ["add_commands"]

STATUS_EVERY_S = 10.0
"""How often a running bridge prints its status."""
SOS_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _tenant(target: Target, ctx: Context) -> str:
    if target.tenant is not None:
        return target.tenant
    token = ctx.args.token or os.environ.get("SOS_TOKEN") or ""
    return ctx.args.tenant or token_tenant(token) or DEFAULT_TENANT


def _print(ctx: Context, status: Any) -> None:
    if ctx.out.json_mode:
        ctx.out.json_line(status)
        return
    ctx.out.line(
        f"bridge {status.tenant} {status.scope}: rounds {status.rounds} in {status.bridged_in} "
        f"out {status.bridged_out} loops {status.loops_skipped} refused {status.refused} "
        f"lag {status.lag_s:.3f}s sos agents {len(status.sos_agents)} kernel agents {len(status.kernel_agents)}"
    )
    for error in status.errors[-3:]:
        ctx.out.progress(error)


async def _bridge(target: Target, ctx: Context) -> int:
    a = ctx.args
    if not str(a.sos_redis).lower().startswith(SOS_REDIS_SCHEMES):
        raise InvalidArgument(f"--sos-redis must be a redis://HOST:PORT/DB URL, got {a.sos_redis!r}")
    tenant = _tenant(target, ctx)
    async with SOSBridge(target.services, a.sos_redis, tenant=tenant, project=a.project, peers=a.peer) as bridge:
        if a.once:
            _print(ctx, await bridge.sync_once())
            return 0
        ctx.out.progress(f"bridging tenant {tenant} ({bridge.scope}) with {a.sos_redis}; Ctrl-C stops")
        async with anyio.create_task_group() as tg:
            tg.start_soon(bridge.run)
            while True:
                await anyio.sleep(STATUS_EVERY_S)
                _print(ctx, bridge.status())
    return 0  # pragma: no cover - the loop above ends by interruption


def add_commands(sub: Any, kernel_options: argparse.ArgumentParser) -> None:
    """Register ``bridge``."""
    bridge = sub.add_parser(
        "bridge", parents=[kernel_options], help="bridge a kernel tenant with a running SOS deployment's Redis"
    )
    bridge.add_argument("--sos-redis", required=True, help="SOS's Redis: redis://HOST:PORT/DB")
    bridge.add_argument("--project", default=None, help="bridge only SOS's project-scoped streams of this project")
    bridge.add_argument(
        "--peer", action="append", default=[], help="an SOS agent to bridge before it appears in SOS's registry"
    )
    bridge.add_argument("--once", action="store_true", help="run one round, print its status and exit")
    bridge.set_defaults(func=lambda ctx: ctx.run(_bridge), writes=True)
