"""The A2A task store seam: the a2a-sdk's tasks of the A2A endpoint, kept per tenant and owner as opaque bytes.

A record is keyed by ``(tenant, owner, task id)``; the owner is who may see it (the endpoint's served agent and
caller), so one owner never reads another's task even when the ids are equal. A record also names its caller (who
is bounded) and when it stops running (``live_until``, wall-clock seconds; 0 for a finished task): a running
record nobody saves again by then is stale, and can be forgotten like a finished one. Every method is one atomic
step in its engine, so several server processes over one store share the tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["A2ATaskBounds", "A2ATaskStore"]


@dataclass(frozen=True, slots=True)
class A2ATaskBounds:
    """How many records a tenant keeps, and how many of them one caller may keep and have running."""

    tasks_max: int
    caller_tasks_max: int
    caller_running_max: int


class A2ATaskStore(ABC):
    """Primitive A2A task operations; each is atomic."""

    @abstractmethod
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
        """Replace the record, or insert a new one: refused (returns the bound's name, nothing written) when it
        runs and the caller already has ``caller_running_max`` running records; a caller with ``caller_tasks_max``
        records first drops its oldest evictable one (finished, or stale at ``now``), then a tenant with
        ``tasks_max`` its oldest evictable one (by first insertion); refused when there is none. "" when written."""

    @abstractmethod
    async def get(self, tenant: str, owner: str, task_id: str) -> bytes | None:
        """The record's bytes, or None."""

    @abstractmethod
    async def owned(self, tenant: str, owner: str, limit: int) -> list[bytes]:
        """Up to ``limit`` records of the owner, oldest first."""

    @abstractmethod
    async def delete(self, tenant: str, owner: str, task_id: str) -> None:
        """Drop the record if it is there."""
