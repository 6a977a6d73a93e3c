"""The providers' store seam: cards, breaker states (versioned, swapped atomically) and engine call records.

Every method is one atomic step in its engine, so several processes share the matrix, its breakers and the calls
in flight.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from .breaker import BreakerState

__all__ = ["CallClaim", "ProviderStore"]


@dataclass(frozen=True, slots=True)
class CallClaim:
    """What claiming a call id found: ``claimed`` (go ahead), ``running`` (another attempt holds it) or ``done``
    (its stored ``reply``); for ``running`` and ``done``, the ``token`` that claimed it (the engine writes the
    request's digest into it, so a retry tells the same request from another)."""

    outcome: Literal["claimed", "running", "done"]
    reply: bytes | None = None
    token: str | None = None


class ProviderStore(ABC):
    """Primitive provider operations; each is atomic."""

    @abstractmethod
    async def put_card(self, tenant: str, provider_id: str, card: bytes, count_max: int) -> bool:
        """Insert or replace a card; False (nothing written) when it is new and the tenant has ``count_max``."""

    @abstractmethod
    async def remove_card(self, tenant: str, provider_id: str) -> bool:
        """Delete a card and its breaker; False if there was none."""

    @abstractmethod
    async def cards(self, tenant: str) -> list[bytes]:
        """Every card of the tenant (JSON), in provider id order."""

    @abstractmethod
    async def breaker(self, tenant: str, provider_id: str) -> tuple[BreakerState, int]:
        """The breaker's state and version (``(CLOSED, 0)`` when none was stored)."""

    @abstractmethod
    async def swap_breaker(self, tenant: str, provider_id: str, version: int, state: BreakerState) -> bool:
        """Store ``state`` as version ``version + 1`` if the stored version is still ``version``."""

    @abstractmethod
    async def claim_call(self, tenant: str, call_id: str, token: str, now: float, lease_s: float) -> CallClaim:
        """Claim ``call_id`` for ``lease_s`` unless it is done or claimed by a live lease (then say which, with the
        token that holds it)."""

    @abstractmethod
    async def finish_call(self, tenant: str, call_id: str, token: str, reply: bytes, now: float, keep_s: float) -> None:
        """Record the call's reply (kept ``keep_s``) if ``token`` still holds its claim."""

    @abstractmethod
    async def release_call(self, tenant: str, call_id: str, token: str) -> None:
        """Drop the claim held by ``token`` (the call failed; a retry may run it)."""
