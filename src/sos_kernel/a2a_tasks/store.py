"""The A2A task store seam: the a2a-sdk's tasks of the A2A endpoint, kept per tenant and owner as opaque bytes.

A record is keyed by ``(tenant, owner, task id)``; the owner is who may see it (the endpoint's served agent and
caller), so one owner never reads another's task even when the ids are equal. Every method is one atomic step in
its engine, so several server processes over one store share the tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["A2ATaskStore"]


class A2ATaskStore(ABC):
    """Primitive A2A task operations; each is atomic."""

    @abstractmethod
    async def put(self, tenant: str, owner: str, task_id: str, data: bytes, finished: bool, tasks_max: int) -> bool:
        """Insert or replace the record. A new record in a tenant that already has ``tasks_max`` first drops the
        tenant's oldest finished record (by first insertion); False, nothing written, when none is finished."""

    @abstractmethod
    async def get(self, tenant: str, owner: str, task_id: str) -> bytes | None:
        """The record's bytes, or None."""

    @abstractmethod
    async def owned(self, tenant: str, owner: str, limit: int) -> list[bytes]:
        """Up to ``limit`` records of the owner, oldest first."""

    @abstractmethod
    async def delete(self, tenant: str, owner: str, task_id: str) -> None:
        """Drop the record if it is there."""
