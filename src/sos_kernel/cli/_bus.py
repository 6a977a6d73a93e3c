"""``sos send``, ``sos history`` and ``sos tail``: the bus from a shell.

``history`` and ``tail`` print one message per line under a header; with ``--json``, one JSON object per line
(``{"position", "message"}``), so both can be piped the same way.

``tail`` watches: it reads the address's history and polls it for what comes next, so it consumes nothing and
the agent whose inbox it watches still receives every message. ``tail --take`` consumes instead: it subscribes in
the address's group (an agent's shared ``inbox``), acknowledges what it prints, and the agent no longer gets it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio

from ..api import BusAPI
from ..contracts import Message
from ..errors import InvalidArgument
from ._output import Output
from ._target import Context, Target

__all__ = ["add_commands"]

HISTORY_LIMIT = 100
"""Messages ``history`` prints by default (the bus caps a page at its ``history_limit_max``)."""
TAIL_PAGE = 100
"""Messages ``tail`` reads per history call."""
TAIL_POLL_S = 0.25
"""How often a watching ``tail`` asks for new messages."""
PREVIEW_CHARS_MAX = 200
"""The most of a message's text one line shows (``--json`` has it whole)."""
_HEADER = f"{'POSITION':>20}  {'TYPE':<12} {'SOURCE':<16} -> {'TARGET':<24} TEXT"


def _summary(wire: dict[str, Any]) -> str:
    """The text a line shows: a message's text or question, what a receipt acknowledges, a chunk's place."""
    payload = wire.get("payload")
    if not isinstance(payload, dict):
        return ""
    if wire.get("type") == "receipt":
        return f"{payload.get('kind', '?')} receipt for {str(payload.get('message_id', '?'))[:8]}"
    if wire.get("type") == "chunk":
        return f"part {payload.get('seq')} of {payload.get('total')} of {str(payload.get('group_id', '?'))[:8]}"
    text = payload.get("text", payload.get("question"))
    if text is None:
        text = ", ".join(f"{k}={v}" for k, v in payload.items() if isinstance(v, str | int | float | bool))
    text = " ".join(str(text).split())
    return text if len(text) <= PREVIEW_CHARS_MAX else text[: PREVIEW_CHARS_MAX - 1] + "…"


def _print_message(out: Output, position: str, message: Message) -> None:
    wire = message.to_wire()
    if out.json_mode:
        out.json_line({"position": position, "message": wire})
        return
    line = f"{position:>20}  {wire['type']:<12} {wire['source']:<16} -> {wire['target']:<24} {_summary(wire)}"
    out.line(line.rstrip())


def _header(out: Output) -> None:
    if not out.json_mode:
        out.line(_HEADER)


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
    found = await target.services.bus.history_entries(a.address, after=a.after, limit=a.limit)
    if not found and not ctx.out.json_mode:
        ctx.out.line("(no messages)")
        return 0
    _header(ctx.out)
    for position, message in found:
        _print_message(ctx.out, position, message)
    return 0


async def _end(bus: BusAPI, address: str) -> str | None:
    """The position of the address's last retained message (None when there is none)."""
    after: str | None = None
    while page := await bus.history_entries(address, after=after, limit=TAIL_PAGE):
        after = page[-1][0]
        if len(page) < TAIL_PAGE:
            break
    return after


async def _watch(target: Target, ctx: Context) -> int:
    a = ctx.args
    bus = target.services.bus
    start = a.start or ("earliest" if a.address.startswith("agent:") else "latest")
    after = await _end(bus, a.address) if start == "latest" else None
    _header(ctx.out)
    seen, idle_since = 0, time.monotonic()
    while a.count is None or seen < a.count:
        limit = TAIL_PAGE if a.count is None else min(TAIL_PAGE, a.count - seen)
        page = await bus.history_entries(a.address, after=after, limit=limit)
        for position, message in page:
            _print_message(ctx.out, position, message)
            after, seen = position, seen + 1
        if page:
            idle_since = time.monotonic()
            continue
        idle_s = time.monotonic() - idle_since
        if a.timeout is not None and idle_s >= a.timeout:
            break
        await anyio.sleep(TAIL_POLL_S if a.timeout is None else min(TAIL_POLL_S, a.timeout - idle_s))
    return 0


async def _take(target: Target, ctx: Context) -> int:
    a = ctx.args
    _header(ctx.out)
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


async def _tail(target: Target, ctx: Context) -> int:
    if ctx.args.group is not None and not ctx.args.take:
        raise InvalidArgument("--group is for tail --take (which consumes); a watching tail uses no group")
    return await (_take if ctx.args.take else _watch)(target, ctx)


def add_commands(sub: Any, kernel_options: argparse.ArgumentParser) -> None:
    """Register ``send``, ``history`` and ``tail``."""
    send = sub.add_parser("send", parents=[kernel_options], help="send a text message")
    send.add_argument("source", help="agent:<name> sending (over http(s): the token's own agent)")
    send.add_argument("target", help="agent:<name> or sos:channel:<name>")
    send.add_argument("text")
    send.set_defaults(func=lambda ctx: ctx.run(_send), writes=True)
    hist = sub.add_parser(
        "history", parents=[kernel_options], help="print an address's retained messages without consuming them"
    )
    hist.add_argument("address")
    hist.add_argument("--after", default=None, help="a position or message_id to start after")
    hist.add_argument("--limit", type=int, default=HISTORY_LIMIT, help=f"at most this many (default {HISTORY_LIMIT})")
    hist.set_defaults(func=lambda ctx: ctx.run(_history))
    tail = sub.add_parser(
        "tail",
        parents=[kernel_options],
        help="watch an address: print what arrives, consuming nothing (--take consumes)",
    )
    tail.add_argument("address")
    tail.add_argument(
        "--take", action="store_true", help="consume instead: receive in the address's group and ack what is printed"
    )
    tail.add_argument("--group", default=None, help="with --take: the consumer group (default: the address's)")
    tail.add_argument(
        "--start",
        choices=["earliest", "latest"],
        default=None,
        help="default: earliest for agents, latest for channels",
    )
    tail.add_argument("--count", type=int, default=None, help="stop after this many messages")
    tail.add_argument("--timeout", type=float, default=None, help="stop after this many idle seconds")
    tail.set_defaults(func=lambda ctx: ctx.run(_tail))
