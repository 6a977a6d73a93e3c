"""What the command line writes: results on stdout (tables, or JSON with ``--json``), progress and errors on stderr.

stdout carries only results, so ``sos … --json | jq`` always reads valid JSON; progress lines (``sos: …``) and
errors go to stderr, where a pipe does not see them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from ..errors import SOSError
from ..wire import encode

__all__ = [
    "CELL_CHARS_MAX",
    "DETAILS_CHARS_MAX",
    "Output",
    "when",
]

CELL_CHARS_MAX = 48
"""The widest a table cell is printed; longer values end with an ellipsis (``--json`` has them whole)."""
DETAILS_CHARS_MAX = 300
"""How much of an error's details the human error line shows."""


def when(value: datetime | None) -> str:
    """A timestamp for a human: UTC, to the second; ``-`` for none."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = " ".join(text.split())  # one line per row, whatever the value holds
    return text if len(text) <= CELL_CHARS_MAX else text[: CELL_CHARS_MAX - 1] + "…"


class Output:
    """Where a command writes. ``json`` selects machine output; ``quiet`` silences progress lines."""

    def __init__(
        self, *, json: bool = False, quiet: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.json_mode = json
        self.quiet = quiet
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr

    def line(self, text: str = "") -> None:
        """One line of human output on stdout."""
        print(text, file=self._out, flush=True)

    def write(self, text: str) -> None:
        """Text on stdout as it comes, without a newline (a streamed answer)."""
        print(text, end="", file=self._out, flush=True)

    def progress(self, text: str) -> None:
        """A progress or status line on stderr (``sos: …``), unless ``--quiet``."""
        if not self.quiet:
            print(f"sos: {text}", file=self._err, flush=True)

    def document(self, value: Any) -> None:
        """One JSON document on stdout (results of every kind go through :func:`~sos_kernel.wire.encode`,
        so they have the same form as the HTTP API's answers)."""
        print(json.dumps(encode(value), indent=2, ensure_ascii=False), file=self._out, flush=True)

    def json_line(self, value: Any) -> None:
        """One compact JSON object per line (for streams: ``history``, ``tail``, ``serve``)."""
        print(json.dumps(encode(value), ensure_ascii=False), file=self._out, flush=True)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str) -> None:
        """Aligned columns under upper-case headers; ``empty`` is printed when there are no rows."""
        cells = [[_cell(v) for v in row] for row in rows]
        if not cells:
            self.line(f"({empty})")
            return
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
        for row in [[h.upper() for h in headers], *cells]:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def fields(self, pairs: Sequence[tuple[str, object]]) -> None:
        """``name  value`` lines, names aligned (one record, for ``show``-like commands)."""
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            self.line(f"{name:<{width}}  {'-' if value is None or value == '' else value}")

    def error(self, exc: SOSError) -> None:
        """``SOS-xxxx message`` on stderr (its details on a second line), or the error envelope with ``--json``."""
        if self.json_mode:
            print(json.dumps(exc.to_wire(), ensure_ascii=False, default=str), file=self._err, flush=True)
            return
        print(str(exc), file=self._err, flush=True)
        if exc.details:
            details = json.dumps(exc.details, ensure_ascii=False, default=str)
            if len(details) > DETAILS_CHARS_MAX:
                details = details[: DETAILS_CHARS_MAX - 1] + "…"
            print(f"  details: {details}", file=self._err, flush=True)
