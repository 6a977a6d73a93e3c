"""Request bodies of the HTTP API: strict (no coercion, unknown fields refused, SOS-4001 on any fault).

They check only the shape; the services check the meaning (addresses, ids, amounts, scopes) and raise the same
errors as in-process. Messages and cards travel as JSON objects and are validated by the kernel's own contracts.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from .._json import loads
from ..errors import SchemaViolation

__all__ = [
    "JSON_DEPTH_MAX",
    "UNIQUE_KEYS",
    "AckIn",
    "ErrorBody",
    "ErrorEnvelope",
    "NackIn",
    "TenantIn",
    "TokenIn",
    "parse_json",
]

JSON_DEPTH_MAX = 64
"""The deepest nesting of arrays and objects a request body may have (SOS-4001 beyond)."""

LEASE_TOKEN_CHARS_MAX = 64
"""The longest lease token an ack or nack may carry (the server's are 22 characters)."""

JsonObject = dict[str, Any]
ContentType = Literal["text/plain", "text/markdown"]


def parse_json(raw: bytes) -> Any:
    """The body as JSON (``{}`` when empty); SOS-4001 when it is not JSON, repeats a key in an object or nests
    deeper than JSON_DEPTH_MAX."""
    try:
        body = loads(raw, allow_nan=True) if raw.strip() else {}  # NaN: the argument's own refusal
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise SchemaViolation("the request body must be a JSON object (it is not JSON)") from None
    stack = [(body, 1)]
    while stack:  # iterative: a deep body must not exhaust the stack here either
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > JSON_DEPTH_MAX:
                raise _too_deep()
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return body


async def _unique_keys(request: Request) -> None:
    # FastAPI reads a model's body with a parser that keeps a repeated key's last copy: check the same bytes first
    raw = await request.body()
    if raw.strip():
        with contextlib.suppress(ValueError):  # not JSON: FastAPI refused it already
            loads(raw, allow_nan=True)


UNIQUE_KEYS = Depends(_unique_keys)
"""The dependency of every router whose routes take a body FastAPI reads: SOS-4001 for a repeated key."""


def _too_deep() -> SchemaViolation:
    return SchemaViolation(
        f"the request body nests arrays and objects deeper than {JSON_DEPTH_MAX} levels",
        details={"limit": JSON_DEPTH_MAX},
    )


class Body(BaseModel):
    """Base of every request body (JSON has no NaN or Infinity, though Python's JSON parser reads them)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ErrorBody(Body):
    """The inside of the SOS error envelope."""

    code: str = Field(examples=["SOS-4004"])
    message: str
    details: JsonObject = Field(default_factory=dict)


class ErrorEnvelope(Body):
    """Every error answer: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorBody


# -- bus --------------------------------------------------------------------------------------------------------


class AckIn(Body):
    address: str
    group: str
    position: str
    lease_token: str = Field(
        min_length=1, max_length=LEASE_TOKEN_CHARS_MAX, description="The delivery event's lease_token"
    )


class NackIn(AckIn):
    delay_s: float = Field(default=0.0, ge=0)
    reason: str | None = Field(default=None, description="Why (kept as the dead letter's reason); checked by the bus")


class ReplyAckIn(AckIn):
    text: str
    source: str | None = None
    content_type: str = Field(default="text/plain", description="text/plain or text/markdown; checked by the bus")


# -- registry ---------------------------------------------------------------------------------------------------


class TenantIn(Body):
    slug: str
    plan: str = "starter"
    seats: int | None = None


class TokenIn(Body):
    agent: str | None = None
    scopes: list[str] | None = None
    expires_in_s: int | None = None
    label: str = ""
