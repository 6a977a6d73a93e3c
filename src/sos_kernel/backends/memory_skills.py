"""In-process skill store (the reference for the other engines)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..skills.store import SkillBounds, SkillDemand, SkillRecord, SkillStats, SkillStore, bound_exceeded

__all__ = ["MemorySkillStore"]


class MemorySkillStore(SkillStore):
    """Dicts; every method runs without awaiting, so it is atomic on one event loop. Given an audit log
    (``audit``), a verification given a record appends it in the same step."""

    def __init__(self, audit: Any = None) -> None:
        self.audit = audit
        self.audits_writes = audit is not None
        self._records: dict[tuple[str, str, str], SkillRecord] = {}
        self._invocations: set[tuple[str, str]] = set()
        self._owners: dict[tuple[str, str], str] = {}
        self._bindings: dict[tuple[str, str], str] = {}
        self._callers: dict[tuple[str, str], dict[str, bool]] = {}  # (tenant, skill) -> caller -> paid

    async def put_version(
        self, tenant: str, record: SkillRecord, author: str, bounds: SkillBounds | None = None
    ) -> tuple[SkillRecord | None, str]:
        owner = self._owners.get((tenant, record.skill_id), author)
        key = (tenant, record.skill_id, record.version)
        if owner != author or key in self._records:
            return self._records.get(key), owner
        if bounds is not None:
            self._check(tenant, record.skill_id, author, bounds)
        self._owners[(tenant, record.skill_id)] = owner
        self._records[key] = record
        return None, owner

    def _check(self, tenant: str, skill_id: str, author: str, bounds: SkillBounds) -> None:
        if (tenant, skill_id) in self._owners:
            if sum(1 for (t, s, _) in self._records if t == tenant and s == skill_id) >= bounds.versions_max:
                raise bound_exceeded("versions", bounds, skill_id)
            return
        owners = [a for (t, _), a in self._owners.items() if t == tenant]
        if len(owners) >= bounds.skills_max:
            raise bound_exceeded("skills", bounds, skill_id)
        if owners.count(author) >= bounds.author_skills_max:
            raise bound_exceeded("author", bounds, skill_id)

    async def get_version(self, tenant: str, skill_id: str, version: str) -> SkillRecord | None:
        return self._records.get((tenant, skill_id, version))

    async def versions(self, tenant: str, skill_id: str) -> list[str]:
        return [v for (t, s, v) in self._records if t == tenant and s == skill_id]

    async def skill_ids(self, tenant: str) -> list[str]:
        return sorted({s for (t, s, _) in self._records if t == tenant})

    async def set_verification(
        self, tenant: str, skill_id: str, version: str, verification: bytes, audit: Any = None
    ) -> bool:
        key = (tenant, skill_id, version)
        if key not in self._records:
            return False
        if audit is not None and self.audit is not None:  # before the effect: a failed append leaves none
            self.audit.append_now(tenant, audit)
        self._records[key] = replace(self._records[key], verification=verification)
        return True

    async def bind_invocation(self, tenant: str, invocation_id: str, binding: str) -> str:
        return self._bindings.setdefault((tenant, invocation_id), binding)

    async def counted(self, tenant: str, invocation_id: str) -> bool:
        return (tenant, invocation_id) in self._invocations

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
        if (tenant, invocation_id) in self._invocations:
            return False
        key = (tenant, skill_id, version)
        record = self._records[key]
        stats = record.stats
        by_tenant = dict(stats.invocations_by_tenant)
        by_tenant[caller_tenant] = by_tenant.get(caller_tenant, 0) + 1
        self._records[key] = replace(
            record,
            stats=SkillStats(stats.total_invocations + 1, stats.total_earned_micros + price, now, by_tenant),
        )
        self._invocations.add((tenant, invocation_id))
        return True

    async def note_caller(self, tenant: str, skill_id: str, caller: str, paid: bool) -> None:
        callers = self._callers.setdefault((tenant, skill_id), {})
        callers[caller] = callers.get(caller, False) or paid

    async def demand(self, tenant: str) -> dict[str, SkillDemand]:
        return {
            skill: SkillDemand(len(callers), sum(callers.values()))
            for (t, skill), callers in self._callers.items()
            if t == tenant
        }
