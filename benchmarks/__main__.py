"""Run the benchmarks: ``python -m benchmarks`` runs every ``bench_*.py``; ``python -m benchmarks contracts`` one.

Each module's ``main()`` prints its own table, with the raw floor measured in the same run and the ratio to it.
Nothing here asserts on timings: these machines are noisy, and the numbers are for reading, not for CI.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "bench_"


def available() -> list[str]:
    """The short names of every benchmark module, sorted (``contracts`` for ``bench_contracts.py``)."""
    here = Path(__file__).resolve().parent
    return sorted(path.stem.removeprefix(PREFIX) for path in here.glob(f"{PREFIX}*.py"))


def _resolve(names: Sequence[str]) -> list[str]:
    known = available()
    wanted = [name.removeprefix(PREFIX).removesuffix(".py") for name in names] or known
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"no benchmark named {', '.join(unknown)}; known: {', '.join(known)}")
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (all when none is named), one after the other."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in {"-h", "--help"}:
        print(f"usage: python -m benchmarks [NAME ...]   (names: {', '.join(available())})")
        return 0
    names = _resolve(args)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}")
    for name in names:
        module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
        print(f"\n=== {name} " + "=" * (72 - len(name)))
        started = time.perf_counter()
        module.main()
        print(f"({name}: {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
