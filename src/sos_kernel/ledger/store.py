"""The ledger store seam: atomic steps over accounts, transfers and usage.

A store's :meth:`LedgerStore.apply` is the whole atomic step of a batch: expire due holds, refuse to touch any id
already recorded, evaluate the rules (:mod:`sos_kernel.ledger.rules`) and record the outcome of every id, each
record with its link of the tenant's chain (:mod:`sos_kernel.ledger.chain`), in one engine transaction.
Idempotency comparisons, validation and the public API live in the service.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .models import Account, Balance, Price, Rate, Transfer, TransferRequest

__all__ = ["Applied", "LedgerStore", "UsageQuery", "load_rate", "rate_key", "rate_record"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _micros(at: datetime | None) -> int | None:
    # exact to the microsecond, where a float timestamp may not be
    return None if at is None else (at - _EPOCH) // _MICRO


def _at(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + micros * _MICRO


def rate_key(rate: Rate) -> str:
    """The key of a rate's entry within its pair: its ``valid_from`` in epoch micros ("" when unbounded)."""
    start = _micros(rate.valid_from)
    return "" if start is None else str(start)


def rate_record(rate: Rate) -> str:
    """A rate's terms as stored by every engine (JSON text)."""
    return json.dumps(
        [rate.rate_num, rate.rate_den, rate.exchange, _micros(rate.valid_from), _micros(rate.valid_until)]
    )


def load_rate(from_currency: str, to_currency: str, record: str | bytes) -> Rate:
    """The :class:`Rate` :func:`rate_record` stored."""
    num, den, exchange, start, end = json.loads(record)
    return Rate(from_currency, to_currency, num, den, exchange, _at(start), _at(end))


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`LedgerStore.apply` did.

    ``existing`` maps every request id that was already recorded to its record; when it is not empty nothing was
    applied and ``transfers`` is empty. Otherwise ``transfers`` has one new record per request (all ``ok``, or all
    ``failed`` for a failed batch).
    """

    transfers: list[Transfer]
    existing: dict[str, Transfer]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Filters for usage events; ``None`` means any. Times are epoch seconds, ``since`` inclusive."""

    provider: str | None = None
    model: str | None = None
    since: float | None = None
    until: float | None = None


class LedgerStore(ABC):
    """Primitive, atomic ledger operations for one engine.

    ``audits_writes``: the store appends the audit record of every applied batch in the batch's own transaction
    (kind ``ledger.write``); otherwise the ledger service records it right after the batch applied.
    """

    audits_writes: bool = False

    @abstractmethod
    async def open_account(
        self, tenant: str, owner: str, currency: str, allow_negative: bool, now: float
    ) -> tuple[Account, bool]:
        """Create the account if missing; returns it and whether it was created (an existing one is unchanged)."""

    @abstractmethod
    async def balance(self, tenant: str, owner: str, currency: str, now: float) -> Balance | None:
        """Expire due holds, then read the account's balance; None if it does not exist."""

    @abstractmethod
    async def apply(self, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        """Expire due holds, then apply the batch atomically unless one of its ids is already recorded.

        An empty batch only expires due holds.
        """

    @abstractmethod
    async def transfers(self, tenant: str, ids: Sequence[str]) -> dict[str, Transfer]:
        """The recorded transfers among ``ids``."""

    @abstractmethod
    async def history(self, tenant: str, owner: str, currency: str, after_seq: int, limit: int) -> list[Transfer]:
        """Applied transfers touching the account, by sequence, after ``after_seq``."""

    @abstractmethod
    async def balances(self, tenant: str) -> list[Balance]:
        """Every account of the tenant."""

    @abstractmethod
    async def all_transfers(self, tenant: str, after_seq: int, limit: int) -> list[Transfer]:
        """Every recorded transfer of the tenant (ok and failed), by sequence."""

    @abstractmethod
    async def put_usage(self, tenant: str, event_id: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a usage record unless its id exists; returns the stored record and whether it was new."""

    @abstractmethod
    async def usage(self, tenant: str, query: UsageQuery, limit: int) -> list[dict[str, Any]]:
        """Usage records matching ``query``, oldest first."""

    @abstractmethod
    async def set_price(self, tenant: str, price: Price) -> None:
        """Create or replace the price of ``(provider, model)``."""

    @abstractmethod
    async def price(self, tenant: str, provider: str, model: str) -> Price | None:
        """The price of ``(provider, model)``, or None."""

    @abstractmethod
    async def set_rate(self, tenant: str, rate: Rate) -> None:
        """Create or replace the entry of ``(from_currency, to_currency, valid_from)`` in the rate table."""

    @abstractmethod
    async def rates(self, tenant: str, from_currency: str, to_currency: str) -> list[Rate]:
        """Every entry of the rate table for the pair, in any order."""

    @abstractmethod
    async def chain(self, tenant: str, after_seq: int, limit: int) -> list[tuple[Transfer, str]]:
        """Every recorded transfer of the tenant with the digest stored for it (hex), by sequence."""

    @abstractmethod
    async def account_digests(self, tenant: str) -> dict[tuple[str, str], str]:
        """The digest stored with each account of the tenant (hex), by (owner, currency)."""
