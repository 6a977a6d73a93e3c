"""The a2a-sdk ``TaskStore`` of the A2A endpoint, kept in the kernel (``kernel.tenant(t).a2a_tasks``).

A task is stored (protobuf bytes) under its tenant and owner (served agent and caller), so a restarted server, or
another server process on the same SQLite file or Redis, finds it; another owner's ``tasks/get`` of the same id
finds nothing. A tenant keeps at most ``tasks_max`` tasks and one caller ``caller_tasks_max``, of which at most
``caller_running_max`` running; a task not saved within ``running_s`` is stale. A new task past a bound drops
the oldest finished or stale task (the caller's own first), or is refused with SOS-4010
(see :mod:`sos_kernel.a2a_tasks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task

from ...a2a_tasks import A2A_RUNNING_TASKS_PER_CALLER_MAX, A2A_TASK_RUNNING_S, A2A_TASKS_PER_CALLER_MAX
from ._served import FINISHED, served

if TYPE_CHECKING:
    from ...kernel import Kernel

__all__ = ["KernelTaskStore"]


def _task(data: bytes) -> Task:
    task = Task()
    task.ParseFromString(data)
    return task


class KernelTaskStore(TaskStore):
    """The A2A endpoint's tasks in the kernel's store, at most ``tasks_max`` per tenant and ``caller_tasks_max``
    (``caller_running_max`` running) per caller."""

    def __init__(
        self,
        kernel: Kernel,
        tasks_max: int,
        *,
        caller_tasks_max: int = A2A_TASKS_PER_CALLER_MAX,
        caller_running_max: int = A2A_RUNNING_TASKS_PER_CALLER_MAX,
        running_s: float = A2A_TASK_RUNNING_S,
    ) -> None:
        self._kernel = kernel
        self.tasks_max = tasks_max
        self.caller_tasks_max = caller_tasks_max
        self.caller_running_max = caller_running_max
        self.running_s = running_s

    async def save(self, task: Task, context: ServerCallContext) -> None:
        who = served(context)
        store = self._kernel.tenant(who.tenant).a2a_tasks
        finished = task.status.state in FINISHED
        await store.put(
            who.owner,
            task.id,
            task.SerializeToString(),
            finished=finished,
            tasks_max=self.tasks_max,
            caller=who.caller,
            caller_tasks_max=self.caller_tasks_max,
            caller_running_max=self.caller_running_max,
            running_s=self.running_s,
        )

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        who = served(context)
        data = await self._kernel.tenant(who.tenant).a2a_tasks.get(who.owner, task_id)
        return None if data is None else _task(data)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        # the SDK's own filtering and paging, over this owner's tasks (at most tasks_max)
        who = served(context)
        page = InMemoryTaskStore()
        for data in await self._kernel.tenant(who.tenant).a2a_tasks.owned(who.owner, self.tasks_max):
            await page.save(_task(data), context)
        return await page.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        who = served(context)
        await self._kernel.tenant(who.tenant).a2a_tasks.delete(who.owner, task_id)
