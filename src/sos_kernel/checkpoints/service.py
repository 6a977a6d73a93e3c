"""Checkpoints: where graph frameworks keep their state in the kernel, per tenant (LangGraph's ``KernelSaver``).

Guarantees: a tenant reads and writes only its own threads; every limit below is enforced before anything is
written (``LimitExceeded``), except the per-thread one, which keeps the newest ``CHECKPOINTS_PER_THREAD_MAX``
checkpoints of a thread and namespace and drops older ones with their writes (as bus retention does).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidArgument, LimitExceeded
from .store import CheckpointRow, CheckpointStore, WriteRow

__all__ = [
    "CHECKPOINTS_PER_THREAD_MAX",
    "CHECKPOINT_BYTES_MAX",
    "CHECKPOINT_ID_CHARS_MAX",
    "CHECKPOINT_THREADS_PER_TENANT_MAX",
    "CHECKPOINT_WRITES_PER_CALL_MAX",
    "Checkpoints",
]

CHECKPOINT_THREADS_PER_TENANT_MAX = 10_000
"""The most threads (graph runs kept) one tenant stores; a new thread beyond it is refused."""
CHECKPOINTS_PER_THREAD_MAX = 1_000
"""The newest checkpoints kept per thread and namespace; older ones are dropped with their writes."""
CHECKPOINT_BYTES_MAX = 4 * 1024 * 1024
"""The largest serialized checkpoint, metadata or single write."""
CHECKPOINT_WRITES_PER_CALL_MAX = 1_000
"""The most writes one ``put_writes`` stores."""
CHECKPOINT_ID_CHARS_MAX = 256
"""The longest thread id, namespace, checkpoint id, task id, channel or task path."""


def _name(what: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}", details={"argument": what})
    if len(value) > CHECKPOINT_ID_CHARS_MAX or "\x00" in value:
        raise InvalidArgument(
            f"{what} must be at most {CHECKPOINT_ID_CHARS_MAX} characters with no NUL", details={"argument": what}
        )
    return value


def _sized(what: str, value: bytes) -> bytes:
    if len(value) > CHECKPOINT_BYTES_MAX:
        raise LimitExceeded(
            f"{what} is {len(value)} bytes, more than {CHECKPOINT_BYTES_MAX}",
            details={"limit": "checkpoint_bytes_max", "max": CHECKPOINT_BYTES_MAX},
        )
    return value


class Checkpoints:
    """One tenant's checkpoints over a :class:`CheckpointStore` (the kernel's, on memory, SQLite or Redis)."""

    def __init__(self, store: CheckpointStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    async def put(self, row: CheckpointRow) -> None:
        """Store ``row``; SOS-4010 when its thread is new and the tenant is at its thread limit."""
        for what in ("thread", "checkpoint_id"):
            _name(what, getattr(row, what))
        _name("ns", row.ns, empty=True)
        _name("parent_id", row.parent_id, empty=True)
        _sized("checkpoint", row.state)
        _sized("checkpoint metadata", row.metadata)
        stored = await self.store.put(self.tenant, row, CHECKPOINT_THREADS_PER_TENANT_MAX, CHECKPOINTS_PER_THREAD_MAX)
        if not stored:
            raise LimitExceeded(
                f"tenant {self.tenant!r} already keeps {CHECKPOINT_THREADS_PER_TENANT_MAX} checkpoint threads: "
                "delete finished ones (delete_thread)",
                details={"limit": "checkpoint_threads_per_tenant_max", "max": CHECKPOINT_THREADS_PER_TENANT_MAX},
            )

    async def put_writes(self, thread: str, ns: str, checkpoint_id: str, writes: Sequence[WriteRow]) -> None:
        """Store a task's pending writes (see :meth:`CheckpointStore.put_writes`)."""
        if len(writes) > CHECKPOINT_WRITES_PER_CALL_MAX:
            raise LimitExceeded(
                f"{len(writes)} writes in one call, more than {CHECKPOINT_WRITES_PER_CALL_MAX}",
                details={"limit": "checkpoint_writes_per_call_max", "max": CHECKPOINT_WRITES_PER_CALL_MAX},
            )
        for w in writes:
            _name("task_id", w.task_id)
            _name("channel", w.channel)
            _name("task_path", w.task_path, empty=True)
            _sized("a write", w.value)
        await self.store.put_writes(
            self.tenant, _name("thread", thread), _name("ns", ns, empty=True), checkpoint_id, writes
        )

    async def get(self, thread: str, ns: str, checkpoint_id: str | None) -> CheckpointRow | None:
        """A checkpoint of this tenant, or the latest of a thread; None when there is none."""
        return await self.store.get(self.tenant, thread, ns, checkpoint_id)

    async def find(
        self, thread: str | None, ns: str | None, before: str | None, limit: int | None
    ) -> list[CheckpointRow]:
        """This tenant's checkpoints, newest first (see :meth:`CheckpointStore.list`)."""
        return await self.store.find(self.tenant, thread, ns, before, limit)

    async def writes(self, thread: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        """A checkpoint's pending writes."""
        return await self.store.writes(self.tenant, thread, ns, checkpoint_id)

    async def delete_thread(self, thread: str) -> None:
        """Drop a thread of this tenant."""
        await self.store.delete_thread(self.tenant, thread)
