"""The skills store seam: immutable card versions, verification state and invocation counters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import IdempotencyConflict
from ..ledger.models import TransferRequest
from ..ledger.store import Applied, LedgerStore

__all__ = ["SkillDemand", "SkillRecord", "SkillStats", "SkillStore", "charged"]


@dataclass(frozen=True, slots=True)
class SkillStats:
    """Invocation counters of one skill version (maintained by the kernel, never by the author)."""

    total_invocations: int = 0
    total_earned_micros: int = 0
    last_invocation_at: float | None = None
    invocations_by_tenant: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SkillDemand:
    """Who other than its author has invoked a skill (any version): distinct callers, and how many of them paid."""

    callers: int = 0
    paying_callers: int = 0


@dataclass(frozen=True, slots=True)
class SkillRecord:
    """One published version: the author's card JSON, its digest, the verification JSON and the counters."""

    skill_id: str
    version: str
    card: bytes
    digest: str
    verification: bytes
    stats: SkillStats
    published_at: float


class SkillStore(ABC):
    """Primitive skill operations; each is atomic.

    ``audits_writes``: a write given ``audit`` (an :class:`~sos_kernel.audit.AuditDraft`) appends it to the tenant's
    audit chain in the same step as its effect, only when it writes; a store that does not declare it ignores it."""

    audits_writes: bool = False

    @abstractmethod
    async def put_version(self, tenant: str, record: SkillRecord, author: str) -> tuple[SkillRecord | None, str]:
        """In one atomic step: the first ``author`` to put a skill id owns it; a put by anyone else writes nothing.
        Otherwise insert the version unless ``(skill_id, version)`` exists. Returns ``(existing record or None when
        inserted, the id's owner)``; nothing is written when the owner is not ``author``."""

    @abstractmethod
    async def get_version(self, tenant: str, skill_id: str, version: str) -> SkillRecord | None:
        """One version, or None."""

    @abstractmethod
    async def versions(self, tenant: str, skill_id: str) -> list[str]:
        """Every published version string of a skill (any order)."""

    @abstractmethod
    async def skill_ids(self, tenant: str) -> list[str]:
        """Every skill id of the tenant, sorted."""

    @abstractmethod
    async def set_verification(
        self, tenant: str, skill_id: str, version: str, verification: bytes, audit: Any = None
    ) -> bool:
        """Replace a version's verification JSON; False if the version is unknown."""

    @abstractmethod
    async def record_invocation(
        self,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
    ) -> bool:
        """Count an invocation once per ``invocation_id`` (atomically with the counters); False if already
        counted."""

    @abstractmethod
    async def bind_invocation(self, tenant: str, invocation_id: str, binding: str) -> str:
        """In one atomic step: bind ``invocation_id`` to ``binding`` (the outcome it names) unless it is bound
        already. Returns the binding on record (``binding`` itself when this call bound it); a binding never
        changes."""

    @abstractmethod
    async def counted(self, tenant: str, invocation_id: str) -> bool:
        """Whether ``invocation_id`` is counted."""

    async def invoke(
        self,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
        ledger: LedgerStore,
        charge: Sequence[TransferRequest],
    ) -> tuple[Applied, bool]:
        """Apply the linked batch ``charge`` through ``ledger`` (the tenant's ledger store) and, if it applied now and
        succeeded, count the invocation as :meth:`record_invocation` does. Returns what the ledger did and whether
        the invocation was counted: a failed batch, or one already recorded (a replay, for the caller to compare and
        then count), counts nothing.

        This default takes two atomic steps, the charge and then the count, so a crash between them leaves the money
        moved and the invocation uncounted until it is retried. An engine that can make them one transaction (SQLite,
        when both stores share its connection) overrides it: then it is all or nothing.

        An id counted already moves no money: its recorded charge is returned as a replay (for the caller to
        compare), and SOS-4009 is raised if it has none (an id counted without this charge)."""
        if await self.counted(tenant, invocation_id):
            existing = await ledger.transfers(tenant, [r.id for r in charge])
            if len(existing) != len(charge):
                raise IdempotencyConflict(
                    f"invocation id {invocation_id!r} was already used", details={"invocation_id": invocation_id}
                )
            return Applied([], existing), False
        applied = await ledger.apply(tenant, charge, now)
        if not charged(applied):
            return applied, False
        return applied, await self.record_invocation(
            tenant, skill_id, version, invocation_id, caller_tenant, price, now
        )

    @abstractmethod
    async def note_caller(self, tenant: str, skill_id: str, caller: str, paid: bool) -> None:
        """Remember that ``caller`` invoked ``skill_id`` (and whether it paid, once is enough): idempotent, so a
        caller counts once however often it calls."""

    @abstractmethod
    async def demand(self, tenant: str) -> dict[str, SkillDemand]:
        """Every noted skill of the tenant and its distinct callers (a skill never noted is absent)."""


def charged(applied: Applied) -> bool:
    """Whether a paid invocation's batch applied just now, and succeeded (the case in which it is counted)."""
    return bool(applied.transfers) and applied.transfers[0].ok
