"""``examples/notebook.ipynb`` runs top to bottom in a real Jupyter kernel (ipykernel, driven by nbclient): top-level
``await`` on the async API and the blocking API side by side. Any error fails the test, and so does a hang: each
cell has ``CELL_S`` and the whole run ``NOTEBOOK_S``."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"
CELL_S = 60
"""The longest one cell may run."""
NOTEBOOK_S = 110
"""The longest the whole notebook may take, start-up and shut-down included (under the suite's per-test 120 s)."""


@pytest.mark.timeout(NOTEBOOK_S)
def test_the_notebook_runs_in_a_jupyter_kernel(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on an error in any cell, CellTimeoutError on a hang
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "review task t-1?" in text
    assert "money is never a float" in text
    assert list(tmp_path.iterdir()) == []  # the notebook writes to its own temporary directory
