"""The checkpoints' store seam: a graph's saved states (opaque bytes) per tenant, thread and namespace, and the
pending writes of each. Every method is one atomic step in its engine, so several processes share a graph."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CheckpointRow", "CheckpointStore", "WriteRow"]


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One stored checkpoint: its id, its parent's (``""`` for none) and its serialized state and metadata."""

    thread: str
    ns: str
    checkpoint_id: str
    parent_id: str
    state: bytes
    metadata: bytes


@dataclass(frozen=True, slots=True)
class WriteRow:
    """One pending write of a task against a checkpoint; ``idx < 0`` marks a special write (error, interrupt...)
    that replaces an earlier one, ``idx >= 0`` a regular write kept first-wins."""

    task_id: str
    idx: int
    channel: str
    value: bytes
    task_path: str


class CheckpointStore(ABC):
    """Primitive checkpoint operations; each is atomic. Checkpoint ids sort in time order (LangGraph's are)."""

    @abstractmethod
    async def put(self, tenant: str, row: CheckpointRow, threads_max: int, per_thread_max: int) -> bool:
        """Insert or replace ``row``; then drop the oldest checkpoints (and their writes) of its thread and
        namespace beyond ``per_thread_max``. False, nothing written, when its thread is new and the tenant already
        has ``threads_max`` threads."""

    @abstractmethod
    async def put_writes(
        self, tenant: str, thread: str, ns: str, checkpoint_id: str, writes: Sequence[WriteRow]
    ) -> None:
        """Add ``writes``: a regular one (``idx >= 0``) only if its ``(task_id, idx)`` is not there yet, a special
        one replacing any."""

    @abstractmethod
    async def get(self, tenant: str, thread: str, ns: str, checkpoint_id: str | None) -> CheckpointRow | None:
        """The checkpoint ``checkpoint_id``, or the latest of the thread and namespace when it is None."""

    @abstractmethod
    async def find(
        self, tenant: str, thread: str | None, ns: str | None, before: str | None, limit: int | None
    ) -> list[CheckpointRow]:
        """Checkpoints newest first (by thread, then id), optionally of one thread and one namespace, with ids
        below ``before``, at most ``limit``."""

    @abstractmethod
    async def writes(self, tenant: str, thread: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        """The pending writes of a checkpoint, ordered by task id, then index."""

    @abstractmethod
    async def delete_thread(self, tenant: str, thread: str) -> None:
        """Drop every checkpoint and write of the thread, in every namespace."""
