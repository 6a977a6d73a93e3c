"""Governance and audit stores in this process (``memory://``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..audit.chain import chained
from ..audit.models import AuditDraft, AuditRecord, Checkpoint
from ..audit.store import AuditStore
from ..governance import store as _store
from ..governance.store import Charge, GovernanceStore

__all__ = ["MemoryAuditStore", "MemoryGovernanceStore"]


class MemoryGovernanceStore(GovernanceStore):
    """Dicts; every primitive runs without an await in between, so it is atomic on the event loop. Given an audit
    log (``audit``, set by the memory backend), a write given a record appends it in the same step."""

    def __init__(self, audit: Any = None) -> None:
        self.audit = audit
        self.audits_writes = audit is not None
        self._policies: dict[str, tuple[int, str]] = {}
        self._revisions: dict[str, int] = {}
        self._counters: dict[tuple[str, str], tuple[int, float]] = {}
        self._approvals: dict[tuple[str, str], tuple[str, float, bool]] = {}

    async def get_policy(self, tenant: str) -> tuple[int, str] | None:
        return self._policies.get(tenant)

    def _record(self, tenant: str, draft: Any) -> None:
        """Append ``draft`` (an ``AuditDraft``) before the effect, in its step: a failed append leaves none."""
        if draft is not None and self.audit is not None:
            self.audit.append_now(tenant, draft)

    async def put_policy(self, tenant: str, document: str, audit: Any = None) -> int:
        revision = self._revisions.get(tenant, 0) + 1
        if audit is not None:
            self._record(tenant, audit.model_copy(update={"details": {**audit.details, "revision": revision}}))
        self._revisions[tenant] = revision
        self._policies[tenant] = (revision, document)
        return revision

    async def delete_policy(self, tenant: str, audit: Any = None) -> bool:
        if tenant not in self._policies:
            return False
        self._record(tenant, audit)
        del self._policies[tenant]
        return True

    async def consume(self, tenant: str, charges: Sequence[Charge], now: float) -> int:
        counts = []
        for i, c in enumerate(charges):
            count, expires = self._counters.get((tenant, c.key), (0, 0.0))
            count = count if expires > now else 0
            if count + c.amount > c.maximum:
                return i
            counts.append(count)
        for c, count in zip(charges, counts, strict=True):
            self._counters[(tenant, c.key)] = (count + c.amount, c.expires_at)
        for key in [k for k, (_, exp) in self._counters.items() if k[0] == tenant and exp <= now]:
            del self._counters[key]
        return -1

    async def put_approval(
        self, tenant: str, id: str, document: str, expires_at: float, pending_max: int, now: float, audit: Any = None
    ) -> bool:
        mine = [k for k in self._approvals if k[0] == tenant]
        kept = now - _store.APPROVALS_DECIDED_KEPT_S
        for key in mine:
            _, exp, pending = self._approvals[key]
            if exp <= (now if pending else kept):
                del self._approvals[key]
        if sum(1 for k, v in self._approvals.items() if k[0] == tenant and v[2]) >= pending_max:
            return False
        self._record(tenant, audit)
        self._approvals[(tenant, id)] = (document, expires_at, True)
        return True

    async def get_approval(self, tenant: str, id: str) -> str | None:
        found = self._approvals.get((tenant, id))
        return None if found is None else found[0]

    async def decide_approval(self, tenant: str, id: str, document: str, audit: Any = None) -> bool:
        found = self._approvals.get((tenant, id))
        if found is None or not found[2]:
            return False
        self._record(tenant, audit)
        self._approvals[(tenant, id)] = (document, found[1], False)
        return True

    async def list_approvals(self, tenant: str, now: float) -> list[str]:
        return [d for (t, _), (d, exp, pending) in self._approvals.items() if t == tenant and pending and exp > now]


class MemoryAuditStore(AuditStore):
    """A list of records per tenant."""

    def __init__(self) -> None:
        self._records: dict[str, list[AuditRecord]] = {}
        self._checkpoints: dict[str, dict[int, Checkpoint]] = {}

    async def append(self, tenant: str, draft: AuditDraft) -> AuditRecord:
        return self.append_now(tenant, draft)

    def append_now(self, tenant: str, draft: AuditDraft) -> AuditRecord:
        """:meth:`append` without awaiting: the memory ledger records a batch in the step that applies it."""
        records = self._records.setdefault(tenant, [])
        last = records[-1] if records else None
        record = chained(tenant, last.digest if last else None, last.seq if last else 0, draft)
        records.append(record)
        return record

    async def page(self, tenant: str, after: int, limit: int) -> list[AuditRecord]:
        records = self._records.get(tenant, [])
        start = next((i for i, r in enumerate(records) if r.seq > after), len(records))
        return records[start : start + limit]

    async def head(self, tenant: str) -> tuple[int, str | None]:
        records = self._records.get(tenant)
        return (records[-1].seq, records[-1].digest) if records else (0, None)

    async def count(self, tenant: str) -> int:
        return len(self._records.get(tenant, []))

    async def put_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._checkpoints.setdefault(checkpoint.tenant, {}).setdefault(checkpoint.seq, checkpoint)

    async def checkpoints(self, tenant: str) -> list[Checkpoint]:
        return [cp for _, cp in sorted(self._checkpoints.get(tenant, {}).items())]
