"""``sos top``: a live view of agents, queues, dead letters and alerts, refreshing; ``--once`` prints one view.

Queues are the ``--address`` values given, with their group's pending deliveries (``bus.pending``) and dead
letters, embedded or over HTTP alike. Alerts are the episodes still firing on ``sos:channel:alerts``. ``--json``
prints one JSON object per view.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio

from ..contracts import AlertMessage
from ..ops.watch import ALERTS_CHANNEL, ALERTS_REPLAY_MAX, DEAD_LETTERS_SCAN_MAX
from ._target import Context, Target

__all__ = ["add_command", "snapshot"]

TOP_INTERVAL_S = 2.0
AGENTS_SHOWN_MAX = 50
_CLEAR = "\x1b[H\x1b[2J"


async def _alerts(api: Any) -> list[dict[str, Any]]:
    firing: dict[str, AlertMessage] = {}
    after: str | None = None
    read = 0
    while read < ALERTS_REPLAY_MAX:
        page = await api.bus.history_entries(ALERTS_CHANNEL, after=after, limit=500)
        for position, message in page:
            after = position
            if isinstance(message, AlertMessage):
                if message.payload.state == "fired":
                    firing[message.payload.alert_id] = message
                else:
                    firing.pop(message.payload.alert_id, None)
        read += len(page)
        if len(page) < 500:
            break
    return [
        {"severity": m.payload.severity, "rule": m.payload.rule, "subject": m.payload.subject, "text": m.payload.text}
        for m in firing.values()
    ]


async def _queue(api: Any, address: str, group: str) -> dict[str, Any]:
    dead = await api.bus.dead_letters(address, group=group, limit=DEAD_LETTERS_SCAN_MAX)
    pending = await api.bus.pending(address, group=group)
    return {"address": address, "group": group, "pending": pending, "dead_letters": len(dead)}


async def snapshot(api: Any, addresses: list[str], group: str) -> dict[str, Any]:
    """One view: agents (status, seconds since last heartbeat), queues and the alerts firing."""
    now = time.time()
    agents = [
        {"agent": a.address, "status": a.status, "silent_s": int(max(0.0, now - a.last_seen.timestamp()))}
        for a in await api.registry.find()
    ]
    return {
        "agents": agents,
        "queues": [await _queue(api, address, group) for address in addresses],
        "alerts": await _alerts(api),
    }


def _render(view: dict[str, Any]) -> list[str]:
    out = [f"AGENTS ({len(view['agents'])})", f"  {'AGENT':<32} {'STATUS':<8} SILENT"]
    for a in view["agents"][:AGENTS_SHOWN_MAX]:
        out.append(f"  {a['agent']:<32} {a['status']:<8} {a['silent_s']} s")
    out += ["", "QUEUES", f"  {'ADDRESS':<32} {'GROUP':<12} {'PENDING':>8} {'DEAD':>6}"]
    for q in view["queues"]:
        out.append(f"  {q['address']:<32} {q['group']:<12} {q['pending']:>8} {q['dead_letters']:>6}")
    out += ["", f"ALERTS FIRING ({len(view['alerts'])})"]
    for alert in view["alerts"]:
        out.append(f"  {alert['severity']:<8} {alert['rule']:<16} {alert['text']}")
    return out


async def _top(target: Target, ctx: Context) -> int:
    a = ctx.args
    addresses = list(a.address or [])
    while True:
        view = await snapshot(target.services, addresses, a.group)
        if ctx.out.json_mode:
            ctx.out.json_line(view)
        else:
            if not a.once and sys.stdout.isatty():
                sys.stdout.write(_CLEAR)
            for line in _render(view):
                ctx.out.line(line)
        if a.once:
            return 0
        await anyio.sleep(a.interval)


def add_command(sub: Any, kernel_options: argparse.ArgumentParser) -> None:
    """Register ``top``."""
    top = sub.add_parser("top", parents=[kernel_options], help="a live view of agents, queues, dead letters and alerts")
    top.add_argument("--address", action="append", default=None, help="a queue to show (repeat for several)")
    top.add_argument("--group", default="inbox", help="the consumer group of the queues shown (default inbox)")
    top.add_argument(
        "--interval", type=float, default=TOP_INTERVAL_S, help=f"refresh seconds (default {TOP_INTERVAL_S})"
    )
    top.add_argument("--once", action="store_true", help="print one view and exit (for scripts)")
    top.set_defaults(func=lambda ctx: ctx.run(_top))
