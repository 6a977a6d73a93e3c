"""A2A tasks in memory: per tenant, records in first-insertion order; each primitive runs without awaiting."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..a2a_tasks.store import A2ATaskBounds, A2ATaskStore

__all__ = ["MemoryA2ATaskStore"]

_Key = tuple[str, str]  # owner, task id


@dataclass(slots=True)
class _Record:
    caller: str
    live_until: float
    data: bytes


def _evict(records: OrderedDict[_Key, _Record], now: float, caller: str | None) -> bool:
    """Drop the oldest finished or stale record (of ``caller`` if given); False when there is none."""
    for key, record in records.items():
        if record.live_until <= now and (caller is None or record.caller == caller):
            del records[key]
            return True
    return False


class MemoryA2ATaskStore(A2ATaskStore):
    """A2A task primitives on dicts."""

    def __init__(self) -> None:
        self._tenants: dict[str, OrderedDict[_Key, _Record]] = {}

    async def put(
        self,
        tenant: str,
        owner: str,
        caller: str,
        task_id: str,
        data: bytes,
        live_until: float,
        now: float,
        bounds: A2ATaskBounds,
    ) -> str:
        records = self._tenants.setdefault(tenant, OrderedDict())
        key = (owner, task_id)
        if key in records:
            records[key].live_until, records[key].data = live_until, bytes(data)
            return ""
        mine = [r for r in records.values() if r.caller == caller]
        if live_until > now and sum(r.live_until > now for r in mine) >= bounds.caller_running_max:
            return "a2a_running_tasks_per_caller_max"
        # a caller past its own bound makes room among its own records first, so it never evicts another's
        if len(mine) >= bounds.caller_tasks_max and not _evict(records, now, caller):
            return "a2a_tasks_per_caller_max"
        if len(records) >= bounds.tasks_max and not _evict(records, now, None):
            return "a2a_tasks_per_tenant_max"
        records[key] = _Record(caller, live_until, bytes(data))
        return ""

    async def get(self, tenant: str, owner: str, task_id: str) -> bytes | None:
        found = self._tenants.get(tenant, OrderedDict()).get((owner, task_id))
        return None if found is None else found.data

    async def owned(self, tenant: str, owner: str, limit: int) -> list[bytes]:
        records = self._tenants.get(tenant, OrderedDict())
        return [r.data for (o, _), r in records.items() if o == owner][:limit]

    async def delete(self, tenant: str, owner: str, task_id: str) -> None:
        self._tenants.get(tenant, OrderedDict()).pop((owner, task_id), None)
