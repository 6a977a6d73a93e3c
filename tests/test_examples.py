"""Every program under ``examples/`` runs to completion: exit status 0 and something on stdout, a second time in
the same directory too, leaving nothing behind there.

The list is a glob, so a new example is tested as soon as it is added. Each runs in a fresh interpreter from an
empty temporary directory, so an example cannot lean on the repository's working directory.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
NEEDS = {"crewai_crew.py": "crewai"}
"""Examples whose framework is too heavy for the default environment: run by ``nox -s crewai`` (and ``.ci/run``)."""
EXAMPLES = sorted(
    path for path in EXAMPLES_DIR.glob("*.py") if path.name not in NEEDS or importlib.util.find_spec(NEEDS[path.name])
)
EXAMPLE_TIMEOUT_S = 60


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(example: Path, tmp_path: Path) -> None:
    for run in ("first", "second"):
        result = subprocess.run(
            [sys.executable, str(example)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"{example.name} exited {result.returncode} on its {run} run\n{result.stderr}"
        assert result.stdout.strip(), f"{example.name} printed nothing"
    assert list(tmp_path.iterdir()) == [], f"{example.name} left files behind"
