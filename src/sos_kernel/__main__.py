"""The ``sos`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import anyio

from .contracts import DEFAULT_CATALOGUE, parse_message
from .contracts import schemas as _schemas
from .demo import run_demo
from .errors import SOSError, all_error_classes
from .kernel import open as open_kernel


def _cmd_catalogue(args: argparse.Namespace) -> int:
    rows = []
    for name in DEFAULT_CATALOGUE.names:
        model = DEFAULT_CATALOGUE.get(name)
        doc = (model.__doc__ or "").strip().splitlines()[0]
        rows.append({"type": name, "model": model.__name__, "summary": doc})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["type"]) for r in rows)
    for r in rows:
        print(f"{r['type']:<{width}}  {r['summary']}")
    return 0


def _cmd_errors(args: argparse.Namespace) -> int:
    rows = [
        {"code": c.code, "class": c.__name__, "http_status": c.http_status, "retryable": c.retryable}
        for c in all_error_classes()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['code']}  {r['http_status']}  {'retry' if r['retryable'] else '     '}  {r['class']}")
    return 0


def _cmd_parse(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()  # noqa: SIM115
    try:
        message = parse_message(data)
    except SOSError as exc:
        print(json.dumps(exc.to_wire(), indent=2), file=sys.stderr)
        return 1
    print(json.dumps(message.to_wire(), indent=2))
    return 0


def _cmd_schemas(args: argparse.Namespace) -> int:
    return _schemas.main([args.action, args.dir])


def _cmd_demo(args: argparse.Namespace) -> int:
    return anyio.run(run_demo, args.url)


def _cmd_send(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with open_kernel(args.url) as kernel:
            bus = kernel.tenant(args.tenant).bus
            receipt = await bus.send(args.source, args.target, args.text)
            row = {"message_id": receipt.message_id, "position": receipt.position, "duplicate": receipt.duplicate}
            print(json.dumps(row) if args.json else f"sent {receipt.message_id} at {receipt.position}")
            return 0

    return anyio.run(run)


def _cmd_history(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with open_kernel(args.url) as kernel:
            bus = kernel.tenant(args.tenant).bus
            for position, message in await bus.history_entries(args.address, after=args.after, limit=args.limit):
                _print_message(position, message.to_wire(), args.json)
            return 0

    return anyio.run(run)


def _cmd_tail(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with open_kernel(args.url) as kernel:
            bus = kernel.tenant(args.tenant).bus
            async with bus.subscribe(args.address, group=args.group, start=args.start) as sub:
                seen = 0
                while args.count is None or seen < args.count:
                    delivery = await sub.receive(timeout_s=args.timeout)
                    if delivery is None:
                        break
                    _print_message(delivery.position, delivery.message.to_wire(), args.json)
                    await delivery.ack()
                    seen += 1
            return 0

    return anyio.run(run)


def _print_message(position: str, wire: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"position": position, "message": wire}), flush=True)
        return
    payload = wire.get("payload")
    text = payload.get("text", payload.get("question", "")) if isinstance(payload, dict) else ""
    print(f"{position:>20}  {wire['type']:<12} {wire['source']:<16} -> {wire['target']:<24} {text}", flush=True)


def _kernel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="kernel URL (default: $SOS_URL, else sqlite:///sos.db)")
    parser.add_argument("--tenant", default="default", help="tenant slug (default: default)")
    parser.add_argument("--json", action="store_true", help="machine-readable output, one JSON object per line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sos``."""
    parser = argparse.ArgumentParser(prog="sos", description="sos-kernel command line")
    sub = parser.add_subparsers(dest="command", required=True)
    cat = sub.add_parser("catalogue", help="list the message types the kernel accepts")
    cat.add_argument("--json", action="store_true", help="machine-readable output")
    cat.set_defaults(func=_cmd_catalogue)
    err = sub.add_parser("errors", help="list every error code")
    err.add_argument("--json", action="store_true", help="machine-readable output")
    err.set_defaults(func=_cmd_errors)
    parse = sub.add_parser("parse", help="validate one wire message (a file or - for stdin)")
    parse.add_argument("file")
    parse.set_defaults(func=_cmd_parse)
    sch = sub.add_parser("schemas", help="export or check the JSON Schema files")
    sch.add_argument("action", choices=["export", "check"])
    sch.add_argument("dir", nargs="?", default="schemas")
    sch.set_defaults(func=_cmd_schemas)
    demo = sub.add_parser("demo", help="a tenant, three agents, messages, a paid skill and the wallets")
    demo.add_argument("--url", default=None, help="kernel URL (default: $SOS_URL, else sqlite:///sos.db)")
    demo.set_defaults(func=_cmd_demo)
    send = sub.add_parser("send", help="send a text message")
    send.add_argument("source", help="agent:<name> sending")
    send.add_argument("target", help="agent:<name> or sos:channel:<name>")
    send.add_argument("text")
    _kernel_options(send)
    send.set_defaults(func=_cmd_send)
    hist = sub.add_parser("history", help="print an address's retained messages without consuming them")
    hist.add_argument("address")
    hist.add_argument("--after", default=None, help="a position or message_id to start after")
    hist.add_argument("--limit", type=int, default=100)
    _kernel_options(hist)
    hist.set_defaults(func=_cmd_history)
    tail = sub.add_parser("tail", help="follow an address, acking what it prints")
    tail.add_argument("address")
    tail.add_argument("--group", default=None, help="consumer group (default: the address's default)")
    tail.add_argument("--start", choices=["earliest", "latest"], default=None)
    tail.add_argument("--count", type=int, default=None, help="stop after this many messages")
    tail.add_argument("--timeout", type=float, default=None, help="stop after this many idle seconds")
    _kernel_options(tail)
    tail.set_defaults(func=_cmd_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sos`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SOSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
