"""A2A tasks: the A2A endpoint's tasks kept in the kernel, per tenant (the a2a-sdk ``TaskStore`` of
:mod:`sos_kernel.integrations.a2a` is built on it).

Guarantees: a tenant reads and writes only its own records, and an owner only its own; every bound below is
checked before anything is written (``LimitExceeded`` or ``InvalidArgument``). A tenant keeps at most the
``tasks_max`` its caller names: a new task past it drops the tenant's oldest finished task, and is refused
(SOS-4010) when every kept task is still running.
"""

from __future__ import annotations

from ..errors import InvalidArgument, LimitExceeded
from .store import A2ATaskStore

__all__ = ["A2A_TASK_BYTES_MAX", "A2A_TASK_ID_CHARS_MAX", "A2A_TASK_OWNER_CHARS_MAX", "A2ATasks"]

A2A_TASK_BYTES_MAX = 1024 * 1024
"""The largest serialized A2A task (its history and artifacts included)."""
A2A_TASK_ID_CHARS_MAX = 256
"""The longest A2A task id."""
A2A_TASK_OWNER_CHARS_MAX = 1024
"""The longest owner (served agent and caller) of an A2A task."""


def _name(what: str, value: object, high: int) -> str:
    if not isinstance(value, str) or not value or len(value) > high or "\x00" in value:
        raise InvalidArgument(
            f"an A2A task's {what} must be a string of 1-{high} characters with no NUL, got {value!r:.80}",
            details={"field": what, "max": high},
        )
    return value


class A2ATasks:
    """One tenant's A2A tasks over an :class:`A2ATaskStore` (the kernel's, on memory, SQLite or Redis)."""

    def __init__(self, store: A2ATaskStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    async def put(self, owner: str, task_id: str, data: bytes, *, finished: bool, tasks_max: int) -> None:
        """Store the task; SOS-4010 when it is new and the tenant keeps ``tasks_max`` tasks, none finished."""
        _name("owner", owner, A2A_TASK_OWNER_CHARS_MAX)
        _name("id", task_id, A2A_TASK_ID_CHARS_MAX)
        if isinstance(tasks_max, bool) or not isinstance(tasks_max, int) or tasks_max < 1:
            raise InvalidArgument(f"tasks_max must be an int >= 1, got {tasks_max!r}")
        if len(data) > A2A_TASK_BYTES_MAX:
            raise LimitExceeded(
                f"an A2A task of {len(data)} bytes is more than {A2A_TASK_BYTES_MAX}",
                details={"limit": "a2a_task_bytes_max", "max": A2A_TASK_BYTES_MAX},
            )
        if not await self.store.put(self.tenant, owner, task_id, data, finished, tasks_max):
            raise LimitExceeded(
                f"{tasks_max} A2A tasks of tenant {self.tenant!r} are all running (a2a_tasks_per_tenant_max)",
                details={"limit": "a2a_tasks_per_tenant_max", "max": tasks_max},
            )

    async def get(self, owner: str, task_id: str) -> bytes | None:
        """The owner's task, or None (another owner's task of the same id is None too)."""
        return await self.store.get(self.tenant, _name("owner", owner, A2A_TASK_OWNER_CHARS_MAX), task_id)

    async def owned(self, owner: str, limit: int) -> list[bytes]:
        """Up to ``limit`` of the owner's tasks, oldest first."""
        return await self.store.owned(self.tenant, _name("owner", owner, A2A_TASK_OWNER_CHARS_MAX), limit)

    async def delete(self, owner: str, task_id: str) -> None:
        """Forget the owner's task (nothing when there is none)."""
        await self.store.delete(self.tenant, _name("owner", owner, A2A_TASK_OWNER_CHARS_MAX), task_id)
