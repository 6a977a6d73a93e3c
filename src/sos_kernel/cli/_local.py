"""Commands that need no target: ``catalogue``, ``errors``, ``parse``, ``schemas``; and ``demo``, which opens its
own embedded kernel."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import anyio

from ..contracts import DEFAULT_CATALOGUE, parse_message
from ..contracts import schemas as _schemas
from ..demo import demo
from ..errors import InvalidArgument, all_error_classes
from ._target import Context, is_remote

__all__ = ["add_commands"]

PARSE_BYTES_MAX = 64 * 1024 * 1024
"""The largest file ``parse`` reads: a whole 16 MiB message with room to spare; more is refused, not truncated."""


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _plain(doc: str) -> str:
    """A docstring line as plain text: reST roles and double back-quotes dropped."""
    return _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], doc).replace("``", "")


def _catalogue(ctx: Context) -> int:
    rows = []
    for name in DEFAULT_CATALOGUE.names:
        model = DEFAULT_CATALOGUE.get(name)
        doc = _plain((model.__doc__ or "").strip().splitlines()[0])
        rows.append({"type": name, "model": model.__name__, "summary": doc})
    if ctx.out.json_mode:
        ctx.out.document(rows)
    else:
        ctx.out.table(["type", "summary"], [(r["type"], r["summary"]) for r in rows], empty="no types")
    return 0


def _errors(ctx: Context) -> int:
    rows = [
        {"code": c.code, "class": c.__name__, "http_status": c.http_status, "retryable": c.retryable}
        for c in all_error_classes()
    ]
    if ctx.out.json_mode:
        ctx.out.document(rows)
        return 0
    table = [(r["code"], r["http_status"], "retry" if r["retryable"] else "", r["class"]) for r in rows]
    ctx.out.table(["code", "http", "retryable", "class"], table, empty="no errors")
    return 0


def _read(name: str) -> bytes:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(PARSE_BYTES_MAX + 1)
        else:
            with Path(name).open("rb") as f:
                data = f.read(PARSE_BYTES_MAX + 1)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {name}: {exc.strerror or exc}", details={"file": name}) from exc
    if len(data) > PARSE_BYTES_MAX:
        raise InvalidArgument(f"{name} is larger than {PARSE_BYTES_MAX} bytes", details={"max": PARSE_BYTES_MAX})
    return data


def _parse(ctx: Context) -> int:
    message = parse_message(_read(ctx.args.file))
    ctx.out.document(message.to_wire())
    return 0


def _schemas_command(ctx: Context) -> int:
    return _schemas.main([ctx.args.action, ctx.args.dir])


def _demo(ctx: Context) -> int:
    url = ctx.url
    if is_remote(url):
        raise InvalidArgument(
            f"the demo runs on an embedded kernel (memory://, sqlite:///…, redis://…), not on {url}",
            details={"url": url},
        )
    report = anyio.run(demo, url, ctx.out.progress)
    if ctx.out.json_mode:
        ctx.out.document(report.to_json())
    else:
        for line in report.lines():
            ctx.out.line(line)
    return 0 if report.ok else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], output: argparse.ArgumentParser) -> None:
    """Register ``demo``, ``catalogue``, ``errors``, ``parse`` and ``schemas``."""
    demo_parser = sub.add_parser(
        "demo", parents=[output], help="a tenant, three agents, messages, a paid skill and the wallets"
    )
    demo_parser.add_argument("--url", default=argparse.SUPPRESS, help="an embedded kernel URL (default: $SOS_URL)")
    demo_parser.set_defaults(func=_demo)
    cat = sub.add_parser("catalogue", parents=[output], help="list the message types the kernel accepts")
    cat.set_defaults(func=_catalogue)
    err = sub.add_parser("errors", parents=[output], help="list every error code")
    err.set_defaults(func=_errors)
    parse = sub.add_parser(
        "parse", parents=[output], help="validate one wire message (a file, or - for stdin); print it normalised"
    )
    parse.add_argument("file")
    parse.set_defaults(func=_parse)
    sch = sub.add_parser("schemas", parents=[output], help="export or check the JSON Schema files")
    sch.add_argument("action", choices=["export", "check"])
    sch.add_argument("dir", nargs="?", default="schemas")
    sch.set_defaults(func=_schemas_command)
