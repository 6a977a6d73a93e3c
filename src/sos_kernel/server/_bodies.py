"""Request bodies of the HTTP API: strict (no coercion, unknown fields refused, SOS-4001 on any fault).

They check only the shape; the services check the meaning (addresses, ids, amounts, scopes) and raise the same
errors as in-process. Messages and cards travel as JSON objects and are validated by the kernel's own contracts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AckIn",
    "AnnounceIn",
    "AskIn",
    "CaptureIn",
    "DeadLetterIn",
    "ErrorBody",
    "ErrorEnvelope",
    "HoldIn",
    "InvocationIn",
    "NackIn",
    "NameIn",
    "OpenAccountIn",
    "PublishIn",
    "PublishManyIn",
    "PublishSkillIn",
    "RecordUsageIn",
    "RegisterIn",
    "ReplayIn",
    "ReplyIn",
    "ResolveDisputeIn",
    "SendIn",
    "SetPriceIn",
    "SetRateIn",
    "SplitIn",
    "TenantIn",
    "TokenIn",
    "TransferIn",
    "TransferManyIn",
    "TransmuteIn",
    "VerifyIn",
    "VoidIn",
    "WakeIn",
]

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


class PublishIn(Body):
    message: JsonObject | str
    receipts: bool = False
    chunking: bool = True


class PublishManyIn(Body):
    messages: list[JsonObject | str]
    receipts: bool = False


class SendIn(Body):
    source: str
    target: str
    text: str
    content_type: ContentType = "text/plain"
    reply_to: str | None = None
    correlation_id: str | None = None
    headers: dict[str, str] | None = None
    trace_id: str | None = None
    receipts: bool = False


class AnnounceIn(Body):
    source: str
    text: str | None = None
    target: str = "sos:channel:global"
    tool: str | None = None
    pid: int | None = None
    tty: str | None = None
    cwd: str | None = None


class WakeIn(Body):
    source: str
    target: str
    text: str
    priority: Literal["critical", "high", "normal", "low"] = "normal"
    ref_message_id: str | None = None


class AskIn(Body):
    source: str
    target: str
    question: str
    timeout_s: float = 30.0
    correlation_id: str | None = None


class ReplyIn(Body):
    to: JsonObject
    text: str
    source: str | None = None
    content_type: ContentType = "text/plain"


class SplitIn(Body):
    message: JsonObject


class DeadLetterIn(Body):
    id: str
    address: str
    group: str
    position: str
    message: JsonObject
    reason: str
    attempts: int
    dead_at: str


class ReplayIn(Body):
    dead_letter: DeadLetterIn


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


class RegisterIn(Body):
    card: JsonObject
    public_key: str | None = Field(default=None, description="Ed25519 public key, 64 hex digits")
    endpoints: list[dict[str, str]] = Field(default_factory=list)
    signature: str | None = None


class NameIn(Body):
    name: str


# -- ledger -----------------------------------------------------------------------------------------------------


class OpenAccountIn(Body):
    owner: str
    currency: str
    allow_negative: bool = False


class TransferIn(Body):
    id: str
    debit: str
    credit: str
    amount: int
    currency: str
    code: int = 0
    reason: str = ""
    metadata: JsonObject | None = None


class TransferManyIn(Body):
    transfers: list[TransferIn]


class HoldIn(TransferIn):
    timeout_s: int


class CaptureIn(Body):
    hold_id: str
    amount: int | None = None
    id: str | None = None


class VoidIn(Body):
    hold_id: str
    id: str | None = None


class TransmuteIn(Body):
    id: str
    owner: str
    amount: int
    from_currency: str
    to_currency: str
    rate_num: int | None = None
    rate_den: int | None = None
    exchange: str | None = None


class SetRateIn(Body):
    from_currency: str
    to_currency: str
    rate_num: int
    rate_den: int
    valid_from: str | None = Field(default=None, description="ISO 8601 with its offset; null: always")
    valid_until: str | None = Field(default=None, description="ISO 8601 with its offset; null: open-ended")
    exchange: str = "system:exchange"


class SetPriceIn(Body):
    provider: str
    model: str
    input_per_mtok_micros: int
    output_per_mtok_micros: int = 0
    per_image_micros: int = 0
    currency: str = "USD"


class RecordUsageIn(Body):
    event: JsonObject
    settle: bool = False


# -- skills -----------------------------------------------------------------------------------------------------


class PublishSkillIn(Body):
    card: JsonObject
    publisher: str | None = None
    capability: list[JsonObject] | None = None


class VerifyIn(Body):
    skill_id: str
    version: str
    verifier: str
    status: Literal["auto_verified", "human_verified", "disputed"]
    reason: str | None = None
    sample_output_refs: list[str] = Field(default_factory=list)


class ResolveDisputeIn(Body):
    skill_id: str
    version: str
    verifier: str
    status: Literal["auto_verified", "human_verified"]


class InvocationIn(Body):
    skill_id: str
    version: str | None = None
    caller: str
    tenant: str
    invocation_id: str


# -- administration ---------------------------------------------------------------------------------------------


class TenantIn(Body):
    slug: str
    plan: str = "starter"
    seats: int | None = None


class TokenIn(Body):
    agent: str | None = None
    scopes: list[str] | None = None
    expires_in_s: int | None = None
    label: str = ""
