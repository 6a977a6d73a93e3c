"""Request bodies of the HTTP API: strict (no coercion, unknown fields refused, SOS-4001 on any fault).

They check only the shape; the services check the meaning (addresses, ids, amounts, scopes) and raise the same
errors as in-process. Messages and cards travel as JSON objects and are validated by the kernel's own contracts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AckIn", "ErrorBody", "ErrorEnvelope", "NackIn", "TenantIn", "TokenIn"]

LEASE_TOKEN_CHARS_MAX = 64
"""The longest lease token an ack or nack may carry (the server's are 22 characters)."""

JsonObject = dict[str, Any]
ContentType = Literal["text/plain", "text/markdown"]


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
