"""A2A tasks: the A2A endpoint's task store kept in the kernel, per tenant (see :mod:`.service`)."""

from .service import (
    A2A_RUNNING_TASKS_PER_CALLER_MAX,
    A2A_TASK_BYTES_MAX,
    A2A_TASK_ID_CHARS_MAX,
    A2A_TASK_OWNER_CHARS_MAX,
    A2A_TASK_RUNNING_S,
    A2A_TASKS_PER_CALLER_MAX,
    A2ATasks,
)
from .store import A2ATaskBounds, A2ATaskStore

__all__ = ["A2A_TASK_BYTES_MAX", "A2A_TASK_ID_CHARS_MAX", "A2A_TASK_OWNER_CHARS_MAX", "A2ATaskStore", "A2ATasks"]
__all__ += ["A2A_RUNNING_TASKS_PER_CALLER_MAX", "A2A_TASKS_PER_CALLER_MAX", "A2A_TASK_RUNNING_S", "A2ATaskBounds"]
