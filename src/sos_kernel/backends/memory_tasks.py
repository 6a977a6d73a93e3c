"""In-process task store (the reference for the other engines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..tasks.store import TaskRecord, TaskStore, created_by
from ..tasks.transitions import TERMINAL

__all__ = ["MemoryTaskStore"]


class MemoryTaskStore(TaskStore):
    """Dicts; every method runs without awaiting, so it is atomic on one event loop. ``clock`` is the store's
    clock (replaceable in tests that move time). Given an audit log (``audit``), a swap given a record appends it in
    the same step."""

    def __init__(self, audit: Any = None) -> None:
        self._tasks: dict[str, dict[str, TaskRecord]] = {}
        self.clock: Callable[[], float] = time.time
        self.audit = audit
        self.audits_writes = audit is not None

    async def insert(
        self, tenant: str, record: TaskRecord, open_max: int, creator: str | None = None, creator_open_max: int = 0
    ) -> tuple[TaskRecord | None, bool]:
        tasks = self._tasks.setdefault(tenant, {})
        if record.id in tasks:
            return tasks[record.id], False
        open_ = [r for r in tasks.values() if r.status not in TERMINAL]
        if len(open_) >= open_max:
            return None, False
        # the creator's share can be full only when the tenant holds that many open tasks at all
        shared = creator is not None and 0 < creator_open_max <= len(open_)
        if shared and sum(1 for r in open_ if created_by(r) == creator) >= creator_open_max:
            return None, False
        tasks[record.id] = record
        return None, True

    async def load(self, tenant: str, task_id: str) -> tuple[TaskRecord | None, float]:
        return self._tasks.get(tenant, {}).get(task_id), self.clock()

    async def swap(self, tenant: str, expected: TaskRecord, record: TaskRecord, audit: Any = None) -> bool:
        tasks = self._tasks.get(tenant, {})
        current = tasks.get(record.id)
        if current is None or current.rev != expected.rev:
            return False
        if audit is not None and self.audit is not None:  # before the effect: a failed append leaves none
            self.audit.append_now(tenant, audit)
        tasks[record.id] = record
        return True

    async def records(self, tenant: str, status: str | None, limit: int) -> list[TaskRecord]:
        found = [r for r in self._tasks.get(tenant, {}).values() if status is None or r.status == status]
        return sorted(found, key=lambda r: (r.created_at, r.id))[:limit]

    async def open_count(self, tenant: str) -> int:
        return sum(1 for r in self._tasks.get(tenant, {}).values() if r.status not in TERMINAL)

    async def delete(self, tenant: str, expected: TaskRecord) -> bool:
        tasks = self._tasks.get(tenant, {})
        current = tasks.get(expected.id)
        if current is None or current.rev != expected.rev:
            return False
        del tasks[expected.id]
        return True

    async def finished_count(self, tenant: str) -> int:
        return sum(1 for r in self._tasks.get(tenant, {}).values() if r.status in TERMINAL)

    async def now(self) -> float:
        return self.clock()
