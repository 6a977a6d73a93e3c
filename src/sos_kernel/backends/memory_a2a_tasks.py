"""A2A tasks in memory: per tenant, records in first-insertion order; each primitive runs without awaiting."""

from __future__ import annotations

from collections import OrderedDict

from ..a2a_tasks.store import A2ATaskStore

__all__ = ["MemoryA2ATaskStore"]

_Key = tuple[str, str]  # owner, task id


class MemoryA2ATaskStore(A2ATaskStore):
    """A2A task primitives on dicts."""

    def __init__(self) -> None:
        self._tenants: dict[str, OrderedDict[_Key, tuple[bool, bytes]]] = {}

    async def put(self, tenant: str, owner: str, task_id: str, data: bytes, finished: bool, tasks_max: int) -> bool:
        records = self._tenants.setdefault(tenant, OrderedDict())
        key = (owner, task_id)
        if key not in records and len(records) >= tasks_max:
            oldest = next((k for k, (done, _) in records.items() if done), None)
            if oldest is None:
                return False
            del records[oldest]
        records[key] = (finished, bytes(data))
        return True

    async def get(self, tenant: str, owner: str, task_id: str) -> bytes | None:
        found = self._tenants.get(tenant, OrderedDict()).get((owner, task_id))
        return None if found is None else found[1]

    async def owned(self, tenant: str, owner: str, limit: int) -> list[bytes]:
        records = self._tenants.get(tenant, OrderedDict())
        return [data for (o, _), (_, data) in records.items() if o == owner][:limit]

    async def delete(self, tenant: str, owner: str, task_id: str) -> None:
        self._tenants.get(tenant, OrderedDict()).pop((owner, task_id), None)
