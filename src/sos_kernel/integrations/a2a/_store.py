"""The a2a-sdk ``TaskStore`` of the A2A endpoint, kept in the kernel (``kernel.tenant(t).a2a_tasks``).

A task is stored (protobuf bytes) under its tenant and owner (served agent and caller), so a restarted server, or
another server process on the same SQLite file or Redis, finds it; another owner's ``tasks/get`` of the same id
finds nothing. A tenant keeps at most ``tasks_max`` tasks: a new one drops the tenant's oldest finished task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task

from ._served import FINISHED, served

if TYPE_CHECKING:
    from ...kernel import Kernel

__all__ = ["KernelTaskStore"]


def _task(data: bytes) -> Task:
    task = Task()
    task.ParseFromString(data)
    return task


class KernelTaskStore(TaskStore):
    """The A2A endpoint's tasks in the kernel's store, at most ``tasks_max`` per tenant."""

    def __init__(self, kernel: Kernel, tasks_max: int) -> None:
        self._kernel = kernel
        self.tasks_max = tasks_max

    async def save(self, task: Task, context: ServerCallContext) -> None:
        who = served(context)
        store = self._kernel.tenant(who.tenant).a2a_tasks
        finished = task.status.state in FINISHED
        await store.put(who.owner, task.id, task.SerializeToString(), finished=finished, tasks_max=self.tasks_max)

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
