"""``sos send``, ``sos history`` and ``sos tail``: the bus from a shell.

``history`` and ``tail`` print one message per line; with ``--json``, one JSON object per line
(``{"position", "message"}``), so both can be piped the same way.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..contracts import Message
from ._output import Output
from ._target import Context, Target

__all__ = ["add_commands"]

HISTORY_LIMIT = 100
"""Messages ``history`` prints by default (the bus caps a page at its ``history_limit_max``)."""


def _print_message(out: Output, position: str, message: Message) -> None:
    wire = message.to_wire()
    if out.json_mode:
        out.json_line({"position": position, "message": wire})
        return
    payload = wire.get("payload")
    text = payload.get("text", payload.get("question", "")) if isinstance(payload, dict) else ""
    out.line(f"{position:>20}  {wire['type']:<12} {wire['source']:<16} -> {wire['target']:<24} {text}")


async def _send(target: Target, ctx: Context) -> int:
    a = ctx.args
    receipt = await target.services.bus.send(a.source, a.target, a.text)
    if ctx.out.json_mode:
        ctx.out.document(receipt)
    else:
        ctx.out.line(f"sent {receipt.message_id} at {receipt.position}" + (" (duplicate)" if receipt.duplicate else ""))
    return 0


async def _history(target: Target, ctx: Context) -> int:
    a = ctx.args
    for position, message in await target.services.bus.history_entries(a.address, after=a.after, limit=a.limit):
        _print_message(ctx.out, position, message)
    return 0


async def _tail(target: Target, ctx: Context) -> int:
    a = ctx.args
    async with target.services.bus.subscribe(a.address, group=a.group, start=a.start) as sub:
        seen = 0
        while a.count is None or seen < a.count:
            delivery = await sub.receive(timeout_s=a.timeout)
            if delivery is None:
                break
            _print_message(ctx.out, delivery.position, delivery.message)
            await delivery.ack()
            seen += 1
    return 0


def add_commands(sub: Any, kernel_options: argparse.ArgumentParser) -> None:
    """Register ``send``, ``history`` and ``tail``."""
    send = sub.add_parser("send", parents=[kernel_options], help="send a text message")
    send.add_argument("source", help="agent:<name> sending (over http(s): the token's own agent)")
    send.add_argument("target", help="agent:<name> or sos:channel:<name>")
    send.add_argument("text")
    send.set_defaults(func=lambda ctx: ctx.run(_send))
    hist = sub.add_parser(
        "history", parents=[kernel_options], help="print an address's retained messages without consuming them"
    )
    hist.add_argument("address")
    hist.add_argument("--after", default=None, help="a position or message_id to start after")
    hist.add_argument("--limit", type=int, default=HISTORY_LIMIT, help=f"at most this many (default {HISTORY_LIMIT})")
    hist.set_defaults(func=lambda ctx: ctx.run(_history))
    tail = sub.add_parser("tail", parents=[kernel_options], help="follow an address, acking what it prints")
    tail.add_argument("address")
    tail.add_argument("--group", default=None, help="consumer group (default: the address's default)")
    tail.add_argument("--start", choices=["earliest", "latest"], default=None)
    tail.add_argument("--count", type=int, default=None, help="stop after this many messages")
    tail.add_argument("--timeout", type=float, default=None, help="stop after this many idle seconds")
    tail.set_defaults(func=lambda ctx: ctx.run(_tail))
