"""Ledger value types. Every amount is an ``int`` of micros (1e-6 of a currency unit); there are no floats."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "AMOUNT_MICROS_MAX",
    "OWNER_PATTERN",
    "Account",
    "Balance",
    "Price",
    "Rate",
    "Transfer",
    "TransferKind",
    "TransferRequest",
    "Transmutation",
    "UsageSummaryRow",
]

AMOUNT_MICROS_MAX = 2**53 - 1
"""The largest amount or balance field, in micros (about 9 billion units): every engine, Redis's Lua included,
represents it exactly. A transfer that would push a balance past it fails with SOS-4010."""

# Python patterns end in \Z, not $: with re.match, $ also matches before a trailing newline.
OWNER_PATTERN = r"^(agent:[a-z][a-z0-9-]*|tenant:[a-z][a-z0-9-]*|system:[a-z][a-z0-9:_-]*)\Z"
"""Account owners: an agent, a tenant, or a system account (``system:treasury``, ``system:exchange``...)."""
TRANSFER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,199}\Z"
CURRENCY_RE = re.compile(r"^[A-Z0-9]{2,10}\Z")

REQUEST_FIELDS = (
    "kind",
    "debit",
    "credit",
    "currency",
    "amount",
    "pending_id",
    "timeout_s",
    "code",
    "reason",
    "metadata",
)
"""What a transfer request is made of: a replay must repeat every one of them."""

TransferKind = Literal["posted", "pending", "post_pending", "void_pending", "expire_pending"]


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


@dataclass(frozen=True, slots=True)
class Account:
    """An account: one owner, one currency. ``allow_negative`` marks an issuer that may mint."""

    owner: str
    currency: str
    allow_negative: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance, all in micros.

    ``posted`` = credits_posted - debits_posted. ``pending`` = the amount held out of the account by open holds
    (debits_pending). ``available`` = posted - pending: what a new transfer or hold may still take from a
    must-not-overdraw account. ``incoming`` = credits_pending: what open holds would credit.
    """

    owner: str
    currency: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    allow_negative: bool

    @property
    def posted(self) -> int:
        """Credits minus debits, posted."""
        return self.credits_posted - self.debits_posted

    @property
    def pending(self) -> int:
        """Held out of this account by open holds."""
        return self.debits_pending

    @property
    def incoming(self) -> int:
        """What open holds would credit to this account."""
        return self.credits_pending

    @property
    def available(self) -> int:
        """Posted minus held: what may still be moved out."""
        return self.posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """One step of a batch, as validated by the service and applied atomically by a store.

    ``kind``: ``posted`` (move money now), ``pending`` (a hold: reserve now, resolve later), ``post_pending``
    (capture a hold, ``amount`` ≤ held; 0 means all), ``void_pending`` (release a hold).
    """

    id: str
    kind: TransferKind
    debit: str
    credit: str
    currency: str
    amount: int
    pending_id: str | None = None
    timeout_s: int = 0
    code: int = 0
    reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The fields that make two requests with the same id the same request."""
        return {name: getattr(self, name) for name in REQUEST_FIELDS}


@dataclass(frozen=True, slots=True)
class Transfer:
    """An applied (or refused) transfer, as the ledger recorded it under its ``id``.

    ``status`` is ``"ok"`` or ``"failed"`` (then ``error_code`` / ``error_message`` say why, and a retry with the
    same id fails the same way). For a hold, ``state`` tracks it: ``pending`` → ``posted`` / ``voided`` /
    ``expired``, and ``captured`` is the amount posted. ``timestamp`` is when the ledger applied it;
    ``sequence`` orders the tenant's ledger. ``replayed`` is True when this call found the id already recorded.
    """

    id: str
    kind: TransferKind
    debit: str
    credit: str
    currency: str
    amount: int
    pending_id: str | None
    timeout_s: int
    code: int
    reason: str
    metadata: dict[str, Any]
    timestamp: datetime
    sequence: int
    status: Literal["ok", "failed"]
    error_code: str | None = None
    error_message: str | None = None
    state: str | None = None
    captured: int = 0
    expires_at: datetime | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """True when the transfer was applied."""
        return self.status == "ok"

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict (timestamps as epoch seconds) for storing."""
        return {
            "id": self.id,
            "kind": self.kind,
            "debit": self.debit,
            "credit": self.credit,
            "currency": self.currency,
            "amount": self.amount,
            "pending_id": self.pending_id,
            "timeout_s": self.timeout_s,
            "code": self.code,
            "reason": self.reason,
            "metadata": self.metadata,
            "ts": self.timestamp.timestamp(),
            "seq": self.sequence,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "state": self.state,
            "captured": self.captured,
            "expires_at": self.expires_at.timestamp() if self.expires_at else None,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any], *, replayed: bool = False) -> Transfer:
        """Rebuild from :meth:`to_record` output."""
        return cls(
            id=rec["id"],
            kind=rec["kind"],
            debit=rec["debit"],
            credit=rec["credit"],
            currency=rec["currency"],
            amount=int(rec["amount"]),
            pending_id=rec.get("pending_id") or None,
            timeout_s=int(rec.get("timeout_s") or 0),
            code=int(rec.get("code") or 0),
            reason=rec.get("reason") or "",
            metadata=dict(rec.get("metadata") or {}),
            timestamp=_at(float(rec["ts"])),
            sequence=int(rec["seq"]),
            status=rec["status"],
            error_code=rec.get("error_code") or None,
            error_message=rec.get("error_message") or None,
            state=rec.get("state") or None,
            captured=int(rec.get("captured") or 0),
            expires_at=_at(float(rec["expires_at"])) if rec.get("expires_at") else None,
            replayed=replayed,
        )

    def request_fields(self) -> dict[str, Any]:
        """The request fields this transfer was recorded with (see :meth:`TransferRequest.fields`)."""
        return {name: getattr(self, name) for name in REQUEST_FIELDS}


@dataclass(frozen=True, slots=True)
class Transmutation:
    """A currency conversion: ``amount`` of ``from_currency`` in, ``converted`` of ``to_currency`` out.

    ``converted = amount * rate_num // rate_den`` (rounded down); ``remainder_num / rate_den`` of a micro of
    ``to_currency`` stayed with the exchange. Both legs are transfers, applied together or not at all; each records
    the rate used in its metadata (``rate_num``, ``rate_den``), and ``exchange`` is the account that converted.
    """

    id: str
    legs: tuple[Transfer, Transfer]
    amount: int
    converted: int
    remainder_num: int
    rate_num: int
    rate_den: int
    exchange: str


@dataclass(frozen=True, slots=True)
class Rate:
    """An exchange rate that ``ledger:admin`` set: ``rate_num / rate_den`` micros of ``to_currency`` per micro of
    ``from_currency``, through the ``exchange`` system account, in force from ``valid_from`` (``None``: always)
    until ``valid_until`` (``None``: open-ended)."""

    from_currency: str
    to_currency: str
    rate_num: int
    rate_den: int
    exchange: str
    valid_from: datetime | None
    valid_until: datetime | None

    def in_force(self, at: datetime) -> bool:
        """Whether ``at`` falls in ``[valid_from, valid_until)``."""
        started = self.valid_from is None or self.valid_from <= at
        return started and (self.valid_until is None or at < self.valid_until)


@dataclass(frozen=True, slots=True)
class Price:
    """Micros charged per million input and output tokens and per image, for one provider and model."""

    provider: str
    model: str
    input_per_mtok_micros: int
    output_per_mtok_micros: int
    per_image_micros: int
    currency: str

    def cost_micros(self, input_tokens: int, output_tokens: int, images: int) -> int:
        """The cost, rounded up to a whole micro so no fraction is ever given away."""
        numerator = input_tokens * self.input_per_mtok_micros + output_tokens * self.output_per_mtok_micros
        return -(-numerator // 1_000_000) + images * self.per_image_micros


@dataclass(frozen=True, slots=True)
class UsageSummaryRow:
    """One group of a usage aggregation: the group's keys, and sums over its events."""

    key: dict[str, str]
    events: int
    input_tokens: int
    output_tokens: int
    image_count: int
    cost_micros: int
