"""The governance store: policies, window counters and approvals, each primitive one atomic step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

APPROVALS_DECIDED_KEPT_S = 7 * 86_400
"""How long a decided (or expired) approval is kept past its deadline; the store drops older ones when the next
approval is requested."""
APPROVALS_PURGE_MAX = 1000
"""The most old approvals one request drops (the rest go with the next ones), so one request's work is bounded."""

__all__ = ["Charge", "GovernanceStore"]


@dataclass(frozen=True, slots=True)
class Charge:
    """Add ``amount`` to counter ``key`` (which lives until ``expires_at``, epoch seconds) unless it would pass
    ``maximum``."""

    key: str
    amount: int
    maximum: int
    expires_at: float


class GovernanceStore(ABC):
    """Per tenant: one policy document (JSON) with its revision, budget counters and approvals.

    ``audits_writes``: the writes that take ``audit`` (an :class:`~sos_kernel.audit.AuditDraft`) append it to the
    tenant's audit chain in the same step as their effect, only when they write it (``put_policy`` adds the new
    ``revision`` to its details); a store that does not declare it ignores ``audit``."""

    audits_writes: bool = False

    @abstractmethod
    async def get_policy(self, tenant: str) -> tuple[int, str] | None:
        """``(revision, document)``, or ``None`` when the tenant has no policy."""

    @abstractmethod
    async def put_policy(self, tenant: str, document: str, audit: Any = None) -> int:
        """Replace the tenant's policy; returns its new revision (one more than any before, never reused)."""

    @abstractmethod
    async def delete_policy(self, tenant: str, audit: Any = None) -> bool:
        """Remove the tenant's policy (its revision counter stays); False if it had none."""

    @abstractmethod
    async def consume(self, tenant: str, charges: Sequence[Charge], now: float) -> int:
        """Apply every charge, or none: the index of the first that would pass its maximum, else -1.

        Check and count are one atomic step, so processes racing never overspend. A negative amount (giving back
        part of what a call held) never passes a maximum."""

    @abstractmethod
    async def put_approval(
        self, tenant: str, id: str, document: str, expires_at: float, pending_max: int, now: float, audit: Any = None
    ) -> bool:
        """Record a pending approval; False when the tenant already has ``pending_max`` pending, unexpired ones
        (expired ones are dropped here, and, up to ``APPROVALS_PURGE_MAX``, decided ones whose deadline is more than
        ``APPROVALS_DECIDED_KEPT_S`` past)."""

    @abstractmethod
    async def get_approval(self, tenant: str, id: str) -> str | None:
        """An approval's document."""

    @abstractmethod
    async def decide_approval(self, tenant: str, id: str, document: str, audit: Any = None) -> bool:
        """Replace a *pending* approval's document with its decision; False if it is not pending (any more)."""

    @abstractmethod
    async def list_approvals(self, tenant: str, now: float) -> list[str]:
        """Every pending approval's document whose deadline has not passed, oldest first."""
