"""Memories in this process: a dict per namespace and its numpy snapshot, both updated by every write.

Every primitive runs without awaiting inside, so on one event loop each is atomic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..memory.store import MemoryStore, PutOutcome, Quota, Snapshot, Space, StoredMemory, group_of, in_group

__all__ = ["MemoryMemoryStore"]


@dataclass(slots=True)
class _Namespace:
    space: Space
    rows: dict[str, StoredMemory] = field(default_factory=dict)
    index: Snapshot | None = None

    def __post_init__(self) -> None:
        self.index = Snapshot(self.space)


@dataclass(slots=True)
class _Tenant:
    namespaces: dict[str, _Namespace] = field(default_factory=dict)
    count: int = 0
    bytes: int = 0
    expiring: dict[tuple[str, str], float] = field(default_factory=dict)
    """(namespace, id) -> expiry of every row with a TTL, so a purge does not scan the rest."""
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    """group (:func:`group_of`) -> (count, bytes) of its namespaces' memories."""


class MemoryMemoryStore(MemoryStore):
    """Memory primitives over dicts (the reference the other engines are compared against)."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    def _tenant(self, tenant: str) -> _Tenant:
        return self._tenants.setdefault(tenant, _Tenant())

    async def space(self, tenant: str, namespace: str) -> Space | None:
        found = self._tenant(tenant).namespaces.get(namespace)
        return found.space if found is not None else None

    async def put_many(
        self, tenant: str, namespace: str, space: Space, memories: Sequence[StoredMemory], quota: Quota, now: float
    ) -> PutOutcome:
        t = self._tenant(tenant)
        ns = t.namespaces.get(namespace)
        if ns is not None and ns.space != space:
            return PutOutcome("space", space=ns.space)
        if ns is None and len(t.namespaces) >= quota.namespaces_max:
            return PutOutcome("namespaces")
        if ns is None and quota.group_namespaces_max:
            held = sum(in_group(n, quota.group) for n in t.namespaces)
            if held >= quota.group_namespaces_max:
                return PutOutcome("group")
        rows = ns.rows if ns is not None else {}
        existing, replaced, fresh = {}, [], []
        for m in memories:
            old = rows.get(m.id)
            if old is not None and old.live(now):
                if old.digest != m.digest:
                    return PutOutcome("conflict", {m.id: old})
                existing[m.id] = old
                continue
            if old is not None:
                replaced.append(old)
            fresh.append(m)
        count = t.count - len(replaced) + len(fresh)
        size = t.bytes - sum(o.size_bytes for o in replaced) + sum(m.size_bytes for m in fresh)
        if count > quota.memories_max:
            return PutOutcome("memories")
        if size > quota.bytes_max:
            return PutOutcome("bytes")
        group = group_of(namespace)
        held, held_bytes = t.groups.get(group, (0, 0))
        held += count - t.count
        held_bytes += size - t.bytes
        if quota.group_memories_max and held > quota.group_memories_max:
            return PutOutcome("group_memories")
        if quota.group_bytes_max and held_bytes > quota.group_bytes_max:
            return PutOutcome("group_bytes")
        if ns is None:
            ns = t.namespaces[namespace] = _Namespace(space)
        for m in fresh:
            ns.rows[m.id] = m
            if m.expires is not None:
                t.expiring[(namespace, m.id)] = m.expires
            else:
                t.expiring.pop((namespace, m.id), None)
        t.count, t.bytes = count, size
        t.groups[group] = (held, held_bytes)
        if fresh and ns.index is not None:
            ns.index.apply(fresh, ())
        return PutOutcome(existing=existing)

    async def get(self, tenant: str, namespace: str, id: str) -> StoredMemory | None:
        ns = self._tenant(tenant).namespaces.get(namespace)
        return ns.rows.get(id) if ns is not None else None

    async def delete(self, tenant: str, namespace: str, ids: Sequence[str]) -> int:
        t = self._tenant(tenant)
        ns = t.namespaces.get(namespace)
        if ns is None:
            return 0
        removed = [m for m in (ns.rows.pop(i, None) for i in dict.fromkeys(ids)) if m is not None]
        for m in removed:
            t.expiring.pop((namespace, m.id), None)
        freed = sum(m.size_bytes for m in removed)
        t.count -= len(removed)
        t.bytes -= freed
        group = group_of(namespace)
        held, held_bytes = t.groups.get(group, (0, 0))
        t.groups[group] = (held - len(removed), held_bytes - freed)
        if removed and ns.index is not None:
            ns.index.apply((), [m.id for m in removed])
        if not ns.rows:
            del t.namespaces[namespace]
        return len(removed)

    async def page(self, tenant: str, namespace: str, after: str | None, limit: int) -> list[StoredMemory]:
        ns = self._tenant(tenant).namespaces.get(namespace)
        if ns is None:
            return []
        ids = sorted(i for i in ns.rows if after is None or i > after)[:limit]
        return [ns.rows[i] for i in ids]

    async def namespaces(self, tenant: str) -> list[tuple[str, Space, int]]:
        found = self._tenant(tenant).namespaces
        return [(name, found[name].space, len(found[name].rows)) for name in sorted(found)]

    async def expired(self, tenant: str, now: float, limit: int) -> list[tuple[str, str]]:
        due = (key for key, expires in self._tenant(tenant).expiring.items() if expires <= now)
        return list(itertools.islice(due, limit))

    async def snapshot(self, tenant: str, namespace: str) -> Snapshot | None:
        ns = self._tenant(tenant).namespaces.get(namespace)
        return ns.index if ns is not None else None
