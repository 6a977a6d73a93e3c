"""The ``sos`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .contracts import DEFAULT_CATALOGUE, parse_message
from .contracts import schemas as _schemas
from .errors import SOSError, all_error_classes


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sos`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
