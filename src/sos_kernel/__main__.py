"""``python -m sos_kernel``: the ``sos`` command line (see :mod:`sos_kernel.cli` and docs/cli.md)."""

from __future__ import annotations

from .cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
