"""JSON-RPC bodies read once by the kernel's parser before a protocol library reads them (``/mcp``, ``/a2a``).

The MCP and A2A libraries parse their request bodies themselves, and a body that names a key twice
(``{"id": 1, "id": 2}``, or a repeated ``params`` key) would mean one thing to them and another to any other
reader. :func:`refuse_repeated_keys` reads the body (already bounded by the app's ``BodyLimit``, and by
``bytes_max`` here too), and refuses one that repeats a key with a JSON-RPC parse error whose message is the
SOS-4001 refusal and whose ``data`` its envelope; any other body, JSON or not, goes on to the library unchanged.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._json import loads
from ..errors import LimitExceeded, SchemaViolation
from ..wire import json_bytes
from ._http import _replay

__all__ = ["JSONRPC_PARSE_ERROR", "parse_error", "refuse_repeated_keys"]

JSONRPC_PARSE_ERROR = -32700
"""The JSON-RPC 2.0 code for a body the server could not parse as JSON."""


def parse_error(error: SchemaViolation, status: int) -> Response:
    """``error`` as a JSON-RPC parse error (``id`` null: no reading of the body is trusted) with HTTP ``status``."""
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": JSONRPC_PARSE_ERROR, "message": str(error), "data": error.to_wire()},
    }
    return Response(json_bytes(body), status_code=status, media_type="application/json")


async def _body(receive: Receive, bytes_max: int) -> bytes | None:
    """The whole request body, or None when the client left before sending it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > bytes_max:  # the app's BodyLimit refuses it first; this holds for any other mount
            raise LimitExceeded(
                f"request body of {size}+ bytes; this server takes at most {bytes_max}",
                details={"limit": "request_bytes_max", "max": bytes_max, "size": size},
            )
        if not message.get("more_body", False):
            return b"".join(chunks)


async def refuse_repeated_keys(
    scope: Scope, receive: Receive, send: Send, *, status: int, bytes_max: int
) -> Receive | None:
    """Read the body: when it is JSON that repeats a key, answer the parse error with HTTP ``status`` and return
    None (the library never sees it); else return a ``receive`` that hands the same body to the library.
    None too when the client left. ``LimitExceeded`` when the body is over ``bytes_max``."""
    if scope["method"] != "POST":
        return receive
    body = await _body(receive, bytes_max)
    if body is None:
        return None
    try:
        loads(body, allow_nan=True)
    except SchemaViolation as exc:
        await parse_error(exc, status)(scope, receive, send)
        return None
    except ValueError:  # not JSON: the library answers it as it always has
        pass
    return _replay(body, receive)
