"""A2A tasks: the A2A endpoint's tasks kept in the kernel, per tenant (the a2a-sdk ``TaskStore`` of
:mod:`sos_kernel.integrations.a2a` is built on it).

Guarantees: a tenant reads and writes only its own records, and an owner only its own; every bound below is
checked before anything is written (``LimitExceeded`` or ``InvalidArgument``). A task is *running* until it is
saved finished, or until ``running_s`` after its last save (a task nobody follows any more, its follow timed out
or its server gone, goes stale and counts as finished for eviction). One caller (the agent that made the task)
keeps at most ``caller_tasks_max`` tasks, a new one dropping its own oldest finished or stale task, and has at
most ``caller_running_max`` running; a tenant keeps at most ``tasks_max``, a new task dropping the tenant's oldest
finished or stale task. A new task past a bound with nothing to drop is refused (SOS-4010, the bound named in
``details.limit``). So one caller never holds more than ``caller_tasks_max`` of the tenant's tasks, nor keeps
more than ``caller_running_max`` of them from being forgotten.
"""

from __future__ import annotations

import time

from ..errors import InvalidArgument, LimitExceeded
from .store import A2ATaskBounds, A2ATaskStore

__all__ = ["A2A_TASK_BYTES_MAX", "A2A_TASK_ID_CHARS_MAX", "A2A_TASK_OWNER_CHARS_MAX", "A2ATasks"]
__all__ += ["A2A_RUNNING_TASKS_PER_CALLER_MAX", "A2A_TASKS_PER_CALLER_MAX", "A2A_TASK_RUNNING_S"]

A2A_TASK_BYTES_MAX = 1024 * 1024
"""The largest serialized A2A task (its history and artifacts included)."""
A2A_TASK_ID_CHARS_MAX = 256
"""The longest A2A task id."""
A2A_TASK_OWNER_CHARS_MAX = 1024
"""The longest owner (served agent and caller) of an A2A task."""
A2A_TASKS_PER_CALLER_MAX = 100
"""A2A tasks one caller keeps in its tenant by default; past this its own oldest finished or stale one goes."""
A2A_RUNNING_TASKS_PER_CALLER_MAX = 16
"""A2A tasks one caller may have running (neither finished nor stale) in its tenant by default."""
A2A_TASK_RUNNING_S = 360.0
"""How long a running task stays running after its last save by default (the longest A2A timeout, 300 s, plus a
minute): a task not saved again by then is stale."""


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

    async def put(
        self,
        owner: str,
        task_id: str,
        data: bytes,
        *,
        finished: bool,
        tasks_max: int,
        caller: str | None = None,
        caller_tasks_max: int = A2A_TASKS_PER_CALLER_MAX,
        caller_running_max: int = A2A_RUNNING_TASKS_PER_CALLER_MAX,
        running_s: float = A2A_TASK_RUNNING_S,
    ) -> None:
        """Store the task (``caller``: who is bounded, the owner itself by default); SOS-4010 when it is new and
        past a bound with nothing to drop (see the module)."""
        _name("owner", owner, A2A_TASK_OWNER_CHARS_MAX)
        _name("id", task_id, A2A_TASK_ID_CHARS_MAX)
        _name("caller", owner if caller is None else caller, A2A_TASK_OWNER_CHARS_MAX)
        for name, value in (("tasks_max", tasks_max), ("caller_running_max", caller_running_max)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(caller_tasks_max, bool) or not isinstance(caller_tasks_max, int):
            raise InvalidArgument(f"caller_tasks_max must be an int, got {caller_tasks_max!r}")
        if caller_tasks_max <= caller_running_max:  # a caller at its running bound can still make room
            raise InvalidArgument("caller_tasks_max must exceed caller_running_max")
        if isinstance(running_s, bool) or not isinstance(running_s, int | float) or not running_s > 0:
            raise InvalidArgument(f"running_s must be a number > 0, got {running_s!r}")
        if len(data) > A2A_TASK_BYTES_MAX:
            raise LimitExceeded(
                f"an A2A task of {len(data)} bytes is more than {A2A_TASK_BYTES_MAX}",
                details={"limit": "a2a_task_bytes_max", "max": A2A_TASK_BYTES_MAX},
            )
        now = time.time()  # wall clock: server processes sharing the store agree on when a task went stale
        bounds = A2ATaskBounds(tasks_max, caller_tasks_max, caller_running_max)
        who = owner if caller is None else caller
        refused = await self.store.put(
            self.tenant, owner, who, task_id, data, 0.0 if finished else now + running_s, now, bounds
        )
        if refused:
            high = {"a2a_tasks_per_tenant_max": tasks_max, "a2a_tasks_per_caller_max": caller_tasks_max}
            limit = high.get(refused, caller_running_max)
            what = f"tenant {self.tenant!r}" if refused == "a2a_tasks_per_tenant_max" else "this caller"
            raise LimitExceeded(
                f"{limit} A2A tasks of {what} are all running ({refused}); retry when one finishes",
                details={"limit": refused, "max": limit},
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
