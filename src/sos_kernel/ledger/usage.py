"""Usage events (UsageEvent v1): record idempotently, price, settle, list and aggregate."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..contracts import UsageEvent, parse_card
from ..errors import Forbidden, IdempotencyConflict, InvalidArgument
from .models import UsageSummaryRow
from .store import UsageQuery

if TYPE_CHECKING:
    from .models import Price
    from .store import LedgerStore

__all__ = ["USAGE_ACCOUNT", "list_usage", "record_usage", "recorded_usage_id", "summarise_usage", "usage_query"]

USAGE_ACCOUNT = "system:usage"
"""Where settled usage is credited."""
USAGE_LIMIT_MAX = 10_000
GROUP_KEYS = ("tenant", "provider", "model", "currency")
WINDOWS = {"hour": "%Y-%m-%dT%H:00:00Z", "day": "%Y-%m-%dT00:00:00Z", "month": "%Y-%m-01T00:00:00Z"}


class UsageLedger(Protocol):
    """What usage needs of :class:`~sos_kernel.ledger.service.Ledger` (structural, so the service can import this)."""

    tenant: str

    @property
    def store(self) -> LedgerStore: ...

    async def price(self, provider: str, model: str) -> Price | None: ...

    async def open_account(self, owner: str, currency: str) -> object: ...

    async def transfer(
        self, *, id: str, debit: str, credit: str, amount: int, currency: str, reason: str
    ) -> object: ...


def recorded_usage_id(tenant: str, recorder: str | None, id: str) -> str:
    """The id a usage event submitted as ``id`` by a recorder without ``ledger:admin`` is stored under: a UUID derived
    from the tenant, the recorder (its agent, or ``-`` for a tenant-wide token) and ``id``, in a derivation of its
    own, so such a recorder can never write an id the engine (or another recorder) derives."""
    digest = hashlib.sha256(f"recorded\x00{tenant}\x00{recorder or '-'}\x00{id}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _parse_event(event: UsageEvent | Mapping[str, Any]) -> UsageEvent:
    return parse_card(UsageEvent, event, "usage event")


def _digest(wire: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def record_usage(ledger: UsageLedger, event: UsageEvent | Mapping[str, Any], *, settle: bool) -> UsageEvent:
    """See :meth:`Ledger.record_usage`."""
    parsed = _parse_event(event)
    if parsed.tenant != ledger.tenant:
        raise Forbidden(
            f"a session of tenant {ledger.tenant!r} cannot record usage for tenant {parsed.tenant!r}",
            details={"tenant": parsed.tenant},
        )
    submitted = parsed.model_dump(mode="json", exclude_none=True, exclude={"received_at"})
    cost = parsed.cost_micros
    if cost is None:
        price = await ledger.price(parsed.provider, parsed.model)
        if price is not None and price.currency == parsed.cost_currency:
            cost = price.cost_micros(parsed.input_tokens or 0, parsed.output_tokens or 0, parsed.image_count or 0)
    stored_event = parsed.model_copy(update={"cost_micros": cost, "received_at": datetime.now(UTC)})
    record = {
        "event": stored_event.to_wire(),
        "digest": _digest(submitted),
        "provider": parsed.provider,
        "model": parsed.model,
        "occurred_ts": parsed.occurred_at.timestamp(),
    }
    kept, _ = await ledger.store.put_usage(ledger.tenant, parsed.id, record)
    if kept["digest"] != record["digest"]:
        raise IdempotencyConflict(
            f"usage event {parsed.id} was recorded with different content", details={"id": parsed.id}
        )
    result = UsageEvent.from_wire(kept["event"])
    if settle and result.cost_micros:
        await ledger.open_account(USAGE_ACCOUNT, result.cost_currency)
        await ledger.transfer(
            id=f"usage:{result.id}",
            debit=f"tenant:{ledger.tenant}",
            credit=USAGE_ACCOUNT,
            amount=result.cost_micros,
            currency=result.cost_currency,
            reason=f"usage {result.provider}/{result.model}",
        )
    return result


def usage_query(provider: str | None, model: str | None, since: datetime | None, until: datetime | None) -> UsageQuery:
    """The store's filter for these arguments (SOS-4005 for a time without its zone)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidArgument(f"{name} must be a timezone-aware datetime")
    return UsageQuery(provider, model, since.timestamp() if since else None, until.timestamp() if until else None)


async def list_usage(ledger: UsageLedger, query: UsageQuery, limit: int) -> list[UsageEvent]:
    """See :meth:`Ledger.usage`."""
    if not isinstance(limit, int) or not 1 <= limit <= USAGE_LIMIT_MAX:
        raise InvalidArgument(f"limit must be 1..{USAGE_LIMIT_MAX}")
    records = await ledger.store.usage(ledger.tenant, query, limit)
    return [UsageEvent.from_wire(r["event"]) for r in records]


async def summarise_usage(
    ledger: UsageLedger, query: UsageQuery, group_by: Sequence[str], window: str | None
) -> list[UsageSummaryRow]:
    """See :meth:`Ledger.usage_summary`. Rows are ordered by their keys."""
    unknown = [k for k in group_by if k not in GROUP_KEYS]
    if unknown or (window is not None and window not in WINDOWS):
        raise InvalidArgument(f"group_by takes {GROUP_KEYS}; window takes {tuple(WINDOWS)}")
    rows: dict[tuple[str, ...], list[int]] = {}
    records = await ledger.store.usage(ledger.tenant, query, USAGE_LIMIT_MAX * 100)
    for record in records:
        event = record["event"]
        key = [str(event.get("cost_currency" if k == "currency" else k, "")) for k in group_by]
        if window is not None:
            key.append(datetime.fromtimestamp(float(record["occurred_ts"]), UTC).strftime(WINDOWS[window]))
        sums = rows.setdefault(tuple(key), [0, 0, 0, 0, 0])
        sums[0] += 1
        sums[1] += int(event.get("input_tokens", 0))
        sums[2] += int(event.get("output_tokens", 0))
        sums[3] += int(event.get("image_count", 0))
        sums[4] += int(event.get("cost_micros", 0))
    names = [*group_by, *(["window"] if window else [])]
    return [UsageSummaryRow(dict(zip(names, key, strict=True)), *sums) for key, sums in sorted(rows.items())]
