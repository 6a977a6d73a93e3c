"""Checkpoints in memory: dicts per tenant; each primitive runs without awaiting, so it is atomic."""

from __future__ import annotations

from collections.abc import Sequence

from ..checkpoints.store import CheckpointRow, CheckpointStore, WriteRow

__all__ = ["MemoryCheckpointStore"]

_Key = tuple[str, str, str]  # tenant, thread, namespace


class MemoryCheckpointStore(CheckpointStore):
    """Checkpoint primitives on dicts."""

    def __init__(self) -> None:
        self._rows: dict[_Key, dict[str, CheckpointRow]] = {}
        self._writes: dict[tuple[str, str, str, str], dict[tuple[str, int], WriteRow]] = {}

    def _threads(self, tenant: str) -> set[str]:
        return {thread for (t, thread, _), rows in self._rows.items() if t == tenant and rows}

    async def put(self, tenant: str, row: CheckpointRow, threads_max: int, per_thread_max: int) -> bool:
        threads = self._threads(tenant)
        if row.thread not in threads and len(threads) >= threads_max:
            return False
        key = (tenant, row.thread, row.ns)
        rows = self._rows.setdefault(key, {})
        rows[row.checkpoint_id] = row
        for old in sorted(rows)[: max(0, len(rows) - per_thread_max)]:
            del rows[old]
            self._writes.pop((*key, old), None)
        return True

    async def put_writes(
        self, tenant: str, thread: str, ns: str, checkpoint_id: str, writes: Sequence[WriteRow]
    ) -> None:
        kept = self._writes.setdefault((tenant, thread, ns, checkpoint_id), {})
        for w in writes:
            if w.idx < 0 or (w.task_id, w.idx) not in kept:
                kept[(w.task_id, w.idx)] = w

    async def get(self, tenant: str, thread: str, ns: str, checkpoint_id: str | None) -> CheckpointRow | None:
        rows = self._rows.get((tenant, thread, ns), {})
        if checkpoint_id is None:
            return rows[max(rows)] if rows else None
        return rows.get(checkpoint_id)

    async def find(
        self, tenant: str, thread: str | None, ns: str | None, before: str | None, limit: int | None
    ) -> list[CheckpointRow]:
        found = [
            row
            for (t, th, n), rows in self._rows.items()
            if t == tenant and thread in (None, th) and ns in (None, n)
            for row in rows.values()
            if before is None or row.checkpoint_id < before
        ]
        found.sort(key=lambda r: (r.thread, r.checkpoint_id), reverse=True)
        return found if limit is None else found[:limit]

    async def writes(self, tenant: str, thread: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        kept = self._writes.get((tenant, thread, ns, checkpoint_id), {})
        return [kept[k] for k in sorted(kept)]

    async def delete_thread(self, tenant: str, thread: str) -> None:
        for key in [k for k in self._rows if k[:2] == (tenant, thread)]:
            del self._rows[key]
        for wkey in [k for k in self._writes if k[:2] == (tenant, thread)]:
            del self._writes[wkey]
