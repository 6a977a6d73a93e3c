"""The ``sos`` command line (``sos …`` or ``python -m sos_kernel …``); see docs/cli.md.

Exit codes: 0 success; 1 a check the command makes failed (``demo``'s verdict, stale ``schemas``); 2 an SOS error
(printed as ``SOS-xxxx message`` on stderr, or as the error envelope with ``--json``) or a usage error; 130
interrupted (Ctrl-C); 141 stdout closed early (``sos … | head``). A user error never prints a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import SOSError
from . import _admin, _bridge, _bus, _governance, _local, _mcp, _memory, _ops, _providers, _serve, _services, _tasks
from ._output import Output
from ._target import Context

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_ERROR", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def _output_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--json", action="store_true", default=default, help="machine-readable output on stdout (see docs/cli.md)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress lines on stderr")


def _kernel_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--url",
        default=default,
        help="memory://, sqlite:///FILE, redis://HOST:PORT/DB or http(s)://SERVER "
        "(default: $SOS_URL, else sqlite:///sos.db)",
    )
    parser.add_argument("--token", default=default, help="bearer token for http(s) URLs (default: $SOS_TOKEN)")
    parser.add_argument("--tenant", default=default, help="tenant slug of an embedded kernel (default: default)")
    parser.add_argument("--admin-token", default=default, help=_admin.ADMIN_TOKEN_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sos``. Global options go before or after the command (``sos --json agents`` and
    ``sos agents --json`` are the same); a subcommand's copy is suppressed unless given, so it never resets a
    value given before the command."""
    parser = argparse.ArgumentParser(prog="sos", description="sos-kernel: the coordination kernel from a shell")
    parser.add_argument("--version", action="version", version=f"sos-kernel {__version__}")
    _output_options(parser, False)
    _kernel_options(parser, None)
    output = argparse.ArgumentParser(add_help=False)
    _output_options(output, argparse.SUPPRESS)
    options = argparse.ArgumentParser(add_help=False, parents=[output])
    _kernel_options(options, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _local.add_commands(sub, output)
    _serve.add_commands(sub, output)
    _bus.add_commands(sub, options)
    _admin.add_commands(sub, options)
    _services.add_commands(sub, options)
    _mcp.add_commands(sub, options)
    _bridge.add_commands(sub, options)
    _providers.add_commands(sub, options)
    _tasks.add_commands(sub, options)
    _ops.add_commands(sub, options)
    _memory.add_commands(sub, options)
    _governance.add_commands(sub, options)
    return parser


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested groups (a task group's failure), or None when there are several."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found


def _broken_pipe() -> int:
    # Whoever read stdout has gone (``| head``): point it at devnull so the interpreter's final flush is quiet.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def _outcome(exc: BaseException, out: Output) -> int | None:
    """The exit code for an exception the command line answers itself; None for a bug, which keeps its traceback."""
    if isinstance(exc, BaseExceptionGroup):
        leaf = _leaf(exc)
        return None if leaf is None else _outcome(leaf, out)
    if isinstance(exc, SOSError):
        out.error(exc)
        return EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt):
        out.progress("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return _broken_pipe()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sos`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    out = Output(json=args.json, quiet=args.quiet)
    try:
        code: int = args.func(Context(args, out))
    except (Exception, KeyboardInterrupt) as exc:
        outcome = _outcome(exc, out)
        if outcome is None:
            raise
        return outcome
    return code
