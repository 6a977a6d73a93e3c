"""The task store seam: one record per task, written by compare-and-set on its revision.

The service decides every transition (one table, in Python, written once); a store makes the decision atomic:
:meth:`TaskStore.swap` writes the new record only if the stored revision is still the one the decision was made
on, so two processes deciding on the same task at once cannot both win. Time comes from the store (``load``
returns the store's clock with the record) so leases mean the same thing to every process.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskRecord", "TaskStore", "created_by"]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A stored task: its id, revision (1 when created, +1 per write), status, creation time and JSON state."""

    id: str
    rev: int
    status: str
    created_at: float
    data: bytes


class TaskStore(ABC):
    """Primitive task operations; each is atomic.

    ``audits_writes``: a write given ``audit`` (an :class:`~sos_kernel.audit.AuditDraft`) appends it to the tenant's
    audit chain in the same step as its effect, only when it writes; a store that does not declare it ignores it."""

    audits_writes: bool = False

    @abstractmethod
    async def insert(
        self, tenant: str, record: TaskRecord, open_max: int, creator: str | None = None, creator_open_max: int = 0
    ) -> tuple[TaskRecord | None, bool]:
        """Insert ``record`` unless its id exists or the tenant already has ``open_max`` open tasks, or (with
        ``creator_open_max``) ``creator`` already has that many open tasks it created (:func:`created_by`).

        Returns ``(the existing record or None, inserted)``; ``(None, False)`` means the tenant or the creator's
        share is full."""

    @abstractmethod
    async def load(self, tenant: str, task_id: str) -> tuple[TaskRecord | None, float]:
        """The record (or None) and the store's clock (Unix seconds), read together."""

    @abstractmethod
    async def swap(self, tenant: str, expected: TaskRecord, record: TaskRecord, audit: Any = None) -> bool:
        """Replace the task's record ``expected`` with ``record`` if the stored revision is still ``expected.rev``;
        False otherwise."""

    @abstractmethod
    async def records(self, tenant: str, status: str | None, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` records (of one status, or all), oldest first (by creation time, then id)."""

    @abstractmethod
    async def open_count(self, tenant: str) -> int:
        """How many of the tenant's tasks are not finished (done, failed, canceled)."""

    @abstractmethod
    async def delete(self, tenant: str, expected: TaskRecord) -> bool:
        """Remove the task if its stored revision is still ``expected.rev``; False otherwise."""

    @abstractmethod
    async def finished_count(self, tenant: str) -> int:
        """How many of the tenant's tasks are finished (done, failed, canceled)."""

    @abstractmethod
    async def now(self) -> float:
        """The store's clock (Unix seconds)."""


def created_by(record: TaskRecord) -> str | None:
    """The agent a stored task names as its creator (``created_by``), if any."""
    found = json.loads(record.data).get("task", {}).get("created_by")
    return found if isinstance(found, str) else None
