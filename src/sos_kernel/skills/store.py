"""The skills store seam: immutable card versions, verification state and invocation counters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bus.store import BusStore, Entry, Retention
from ..errors import IdempotencyConflict, LimitExceeded
from ..ledger.models import TransferRequest
from ..ledger.store import Applied, LedgerStore

__all__ = [
    "InvocationStep",
    "Invoked",
    "SkillBounds",
    "SkillDemand",
    "SkillRecord",
    "SkillStats",
    "SkillStore",
    "bound_exceeded",
    "charged",
    "paid",
]


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


@dataclass(frozen=True, slots=True)
class SkillBounds:
    """The counts a new version is checked against, in the same atomic step as its insert: versions of its skill,
    skill ids of the tenant, skill ids of its author. Each is the name of its constant and its value."""

    versions_max: int
    skills_max: int
    author_skills_max: int


_BOUND_NAMES = {
    "versions": ("SKILL_VERSIONS_MAX", "versions of one skill"),
    "skills": ("SKILLS_PER_TENANT_MAX", "skills of the tenant"),
    "author": ("SKILLS_PER_AUTHOR_MAX", "skills of one author"),
}


def bound_exceeded(which: str, bounds: SkillBounds, skill_id: str) -> LimitExceeded:
    """The SOS-4010 a store raises when a new version would pass bound ``which`` (versions, skills, author)."""
    name, what = _BOUND_NAMES[which]
    value = {"versions": bounds.versions_max, "skills": bounds.skills_max, "author": bounds.author_skills_max}[which]
    return LimitExceeded(
        f"publishing {skill_id} would pass {name} ({value} {what}); nothing was written",
        details={"limit": name, "value": value, "skill_id": skill_id},
    )


class SkillStore(ABC):
    """Primitive skill operations; each is atomic.

    ``audits_writes``: a write given ``audit`` (an :class:`~sos_kernel.audit.AuditDraft`) appends it to the tenant's
    audit chain in the same step as its effect, only when it writes; a store that does not declare it ignores it."""

    audits_writes: bool = False
    checks_choice: bool = False
    """Whether :meth:`invoke` honours ``InvocationStep.chosen_from``: it reads the skill's versions inside the step
    and, if they are not that list, writes nothing and returns ``Invoked.stale``. A store that does not declare it
    is never given one (the service reads the versions first)."""

    @abstractmethod
    async def put_version(
        self, tenant: str, record: SkillRecord, author: str, bounds: SkillBounds | None = None
    ) -> tuple[SkillRecord | None, str]:
        """In one atomic step: the first ``author`` to put a skill id owns it; a put by anyone else writes nothing.
        Otherwise insert the version unless ``(skill_id, version)`` exists. Returns ``(existing record or None when
        inserted, the id's owner)``; nothing is written when the owner is not ``author``. With ``bounds``, a
        version that would be inserted but pass one raises :func:`bound_exceeded` and writes nothing (an existing
        version is still returned: a replay is never refused)."""

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

    @abstractmethod
    async def note_caller(self, tenant: str, skill_id: str, caller: str, paid: bool) -> None:
        """Remember that ``caller`` invoked ``skill_id`` (and whether it paid, once is enough): idempotent, so a
        caller counts once however often it calls."""

    @abstractmethod
    async def demand(self, tenant: str) -> dict[str, SkillDemand]:
        """Every noted skill of the tenant and its distinct callers (a skill never noted is absent)."""

    async def invoke(self, step: InvocationStep, ledger: LedgerStore, bus: BusStore, retention: Retention) -> Invoked:
        """One invocation's writes: bind ``step.invocation_id`` to ``step.binding``; if it was bound to another one,
        nothing else (the caller raises SOS-4009). Else apply the linked batch ``step.charge`` (if any) through
        ``ledger`` (the tenant's ledger store) and, if it applied now and succeeded (or there is no charge), count the
        invocation as :meth:`record_invocation` does, and append ``step.message`` through ``bus`` when it is counted.

        A failed batch counts and announces nothing. A batch recorded already is a replay: it is returned for the
        caller to compare, and counted now if it was not (an interrupted two-step engine); an id counted already
        whose charge is missing raises SOS-4009 and moves no money.

        This default takes up to four atomic steps (binding, charge, count, message), so a crash between them
        leaves a later one undone until the invocation is retried (``Invoked.announces`` is False: the caller
        appends the message after the step when it counted). An engine
        that can make them one transaction overrides it (SQLite: all or nothing; memory: one step of the loop;
        Redis: the binding, charge and count in one script)."""
        bound = await self.bind_invocation(step.tenant, step.invocation_id, step.binding)
        if bound != step.binding:
            return Invoked(bound, None, False, False)
        count = step.count_args()
        if not step.charge:
            return Invoked(bound, None, await self.record_invocation(*count), False)
        if await self.counted(step.tenant, step.invocation_id):
            existing = await ledger.transfers(step.tenant, [r.id for r in step.charge])
            if len(existing) != len(step.charge):
                raise IdempotencyConflict(
                    f"invocation id {step.invocation_id!r} was already used",
                    details={"invocation_id": step.invocation_id},
                )
            return Invoked(bound, Applied([], existing), False, False)
        applied = await ledger.apply(step.tenant, step.charge, step.now)
        if not paid(applied):
            return Invoked(bound, applied, False, False)
        return Invoked(bound, applied, await self.record_invocation(*count), False)


@dataclass(frozen=True, slots=True)
class InvocationStep:
    """What one invocation writes: its binding, its charge (a checked linked batch; empty when free), its count and
    its ``sos.skill_executed`` message as ``(address, entry)``."""

    tenant: str
    skill_id: str
    version: str
    invocation_id: str
    caller_tenant: str
    price: int
    now: float
    binding: str
    charge: Sequence[TransferRequest]
    message: tuple[str, Entry]
    chosen_from: list[str] | None = None
    """The skill's versions (as :meth:`SkillStore.versions` lists them) ``version`` was chosen from without a read
    of them for this call, for a store that ``checks_choice``; None when they were read for it."""

    def count_args(self) -> tuple[str, str, str, str, str, int, float]:
        """The arguments of :meth:`SkillStore.record_invocation` for this invocation."""
        return (self.tenant, self.skill_id, self.version, self.invocation_id, self.caller_tenant, self.price, self.now)


@dataclass(frozen=True, slots=True)
class Invoked:
    """What :meth:`SkillStore.invoke` did: the binding on record, the ledger's outcome (None when nothing was
    charged), whether the invocation was counted now, and whether the step appends the message whenever it counts
    (else the caller appends it right after the step)."""

    bound: str
    applied: Applied | None
    counted: bool
    announces: bool
    stale: bool = False
    """The skill's versions were not ``InvocationStep.chosen_from``: nothing was written (choose again)."""


def charged(applied: Applied) -> bool:
    """Whether a paid invocation's batch applied just now, and succeeded (the case in which it is counted)."""
    return bool(applied.transfers) and applied.transfers[0].ok


def paid(applied: Applied) -> bool:
    """Whether a paid invocation's batch succeeded, now or before (a replay). A replay under the same binding is
    the same batch (ids, accounts and amounts follow from the bound skill version, caller and price), so it may be
    counted before the service compares it field by field."""
    if applied.existing:
        return all(t.ok for t in applied.existing.values())
    return charged(applied)
