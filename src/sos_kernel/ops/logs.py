"""Structured logs: stdlib ``logging`` with a JSON formatter, one event per line.

Every record becomes ``{"ts", "level", "logger", "event", ...fields}`` where the fields are the record's extras
named in :data:`LOG_FIELDS` (tenant, agent, operation, message id, trace id, outcome...). Anything else a caller
attaches is dropped, so message text, payloads and tokens never reach a log line by accident; bearer tokens and
``sk-...`` secrets that slip into an event's words are masked too. The kernel's own loggers live under
``sos_kernel``; :func:`configure_logging` sends them to a stream in this format.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["LOG_FIELDS", "JsonFormatter", "configure_logging", "redact"]

LOG_FIELDS = (
    "tenant",
    "agent",
    "operation",
    "outcome",
    "message_id",
    "message_type",
    "trace_id",
    "attempt",
    "exit_status",
    "duration_ms",
    "code",
)
"""The record extras a log line carries; nothing else a caller attaches is written."""
EVENT_CHARS_MAX = 2000
_SECRETS = re.compile(r"sk-[A-Za-z0-9-]{1,80}-[0-9a-f]{32}|(?i:bearer)\s+\S+")


def redact(text: str) -> str:
    """``text`` with bearer tokens and ``sk-…`` secrets masked."""
    return _SECRETS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for what it carries and what it never does."""

    def __init__(self, fields: tuple[str, ...] = LOG_FIELDS) -> None:
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage())[:EVENT_CHARS_MAX],
        }
        for name in self.fields:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value if isinstance(value, int | float | bool) else redact(str(value))[:500]
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__  # the type only: an exception's words may quote input
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


class _ConfiguredHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs, known by its type so a second call replaces it."""


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None, *, json_lines: bool = True) -> None:
    """Send the ``sos_kernel`` loggers to ``stream`` (stderr) at ``level``, as JSON lines (or plain text)."""
    logger = logging.getLogger("sos_kernel")
    handler = _ConfiguredHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    for old in [h for h in logger.handlers if isinstance(h, _ConfiguredHandler)]:
        logger.removeHandler(old)  # configuring again replaces this function's handler, never the application's
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
