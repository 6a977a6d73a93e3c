"""The ledger store seam: atomic steps over accounts, transfers and usage.

A store's :meth:`LedgerStore.apply` is the whole atomic step of a batch: expire due holds, refuse to touch any id
already recorded, evaluate the rules (:mod:`sos_kernel.ledger.rules`) and record the outcome of every id, each
record with its link of the tenant's chain (:mod:`sos_kernel.ledger.chain`), in one engine transaction.
Idempotency comparisons, validation and the public API live in the service.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .models import Account, Balance, Price, Transfer, TransferRequest

__all__ = ["Applied", "LedgerStore", "UsageQuery"]


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
    """Primitive, atomic ledger operations for one engine."""

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
    async def chain(self, tenant: str, after_seq: int, limit: int) -> list[tuple[Transfer, str]]:
        """Every recorded transfer of the tenant with the digest stored for it (hex), by sequence."""

    @abstractmethod
    async def account_digests(self, tenant: str) -> dict[tuple[str, str], str]:
        """The digest stored with each account of the tenant (hex), by (owner, currency)."""
