"""The memory store seam: atomic writes of memories per tenant and namespace, and exact search over a snapshot.

A store keeps bytes: a memory's text, canonical metadata JSON and its vector (``float32``, little-endian,
L2-normalised by the service). Its writes are each one atomic step (quota checks and the namespace's space
included); every write bumps the namespace's version, so :class:`SnapshotCache` rebuilds a namespace's in-process
matrix only when it changed. :meth:`MemoryStore.search` is exact by default (numpy over the snapshot); an engine
with its own index (pgvector) overrides it and says it is approximate.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "LOG_VERSIONS_MAX",
    "MemoryStore",
    "PutOutcome",
    "Quota",
    "Snapshot",
    "SnapshotCache",
    "Space",
    "StoredMemory",
    "exact_top_k",
    "group_of",
    "in_group",
]

LOG_VERSIONS_MAX = 1_000
"""How many of a namespace's latest writes the engines log (which ids each changed), so a process whose snapshot
is at most this many writes behind refreshes only what changed; further behind, it reloads the namespace."""

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Space:
    """The vector space of a namespace: the embedder that filled it (``""``: vectors from callers) and its size."""

    embedder: str
    dimensions: int

    def encode(self) -> str:
        return f"{self.dimensions}\t{self.embedder}"

    @classmethod
    def decode(cls, text: str) -> Space:
        dims, _, embedder = text.partition("\t")
        return cls(embedder, int(dims))


@dataclass(frozen=True, slots=True)
class StoredMemory:
    """One memory as stored: ``metadata`` is canonical JSON text, ``vector`` float32 bytes; ``created`` and
    ``expires`` are epoch seconds (``expires`` None: kept until forgotten)."""

    id: str
    text: str
    metadata: str
    vector: bytes
    digest: str
    created: float
    expires: float | None

    @property
    def size_bytes(self) -> int:
        """What it counts against the tenant's ``bytes_max``: text and metadata (UTF-8) and the vector."""
        return len(self.text.encode()) + len(self.metadata.encode()) + len(self.vector)

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def blob(self) -> bytes:
        """One byte string (JSON header, newline, vector bytes) for engines that keep a memory as one value."""
        head = json.dumps([self.text, self.metadata, self.digest, self.created, self.expires], ensure_ascii=False)
        return head.encode() + b"\n" + self.vector

    @classmethod
    def from_blob(cls, id: str, blob: bytes) -> StoredMemory:
        head, _, vector = blob.partition(b"\n")
        text, metadata, digest, created, expires = json.loads(head)
        return cls(id, text, metadata, vector, digest, created, expires)


@dataclass(frozen=True, slots=True)
class Quota:
    """A tenant's bounds that a write is checked against, atomically with the write."""

    memories_max: int
    bytes_max: int
    namespaces_max: int
    group: str = ""
    """The owner of the namespace written (``agent:<name>``), or ``""`` for a shared namespace."""
    group_namespaces_max: int = 0
    """The most namespaces of ``group`` (see :func:`in_group`) the tenant may hold when a write creates one; 0: no
    such bound. So one agent cannot take the namespaces every other agent needs."""
    group_memories_max: int = 0
    """The most memories the namespaces of ``group`` may hold together after a write; 0: no such bound."""
    group_bytes_max: int = 0
    """The most bytes (:attr:`StoredMemory.size_bytes`) the namespaces of ``group`` may hold together; 0: none."""


def group_of(namespace: str) -> str:
    """The group ``namespace`` counts against (see :func:`in_group`): ``agent:<name>`` for an agent's own, ``""``
    for a shared one. The stores keep each group's memory count and bytes by this key."""
    return namespace.split("/", 1)[0] if namespace.startswith("agent:") else ""


def in_group(namespace: str, group: str) -> bool:
    """Whether ``namespace`` counts against ``group``: the agent's own (``agent:<name>`` or under it), or for
    ``""`` a shared one (any name not starting ``agent:``)."""
    if group:
        return namespace == group or namespace.startswith(group + "/")
    return not namespace.startswith("agent:")


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """What a batch write did: ``refused`` names the bound it would have crossed (nothing was written), or
    ``space`` when the namespace has another space now, or ``conflict`` when a live id holds another digest (then
    ``existing`` holds it); otherwise ``existing`` holds the ids already stored and live, which were not written
    again."""

    refused: Literal[
        "", "memories", "bytes", "namespaces", "group", "group_memories", "group_bytes", "space", "conflict"
    ] = ""
    existing: dict[str, StoredMemory] = field(default_factory=dict)
    space: Space | None = None


class Snapshot:
    """A namespace's memories as rows of one normalised matrix, updated in place as memories come and go.

    ``apply`` upserts and removes rows (a removed row is marked dead and reused by compaction), so a store that
    learns what changed since its last look refreshes in time proportional to the change, not to the namespace.
    """

    def __init__(self, space: Space) -> None:
        self.space = space
        self.matrix: Vector = np.zeros((0, space.dimensions), dtype=np.float32)
        self.size = 0
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.metadata_json: list[str] = []
        self.expires: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)
        self.alive: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.rows: dict[str, int] = {}
        self.dead = 0
        self.expiring = False
        """Whether any row has (or had) a TTL; else no row can be filtered out by time."""
        self._metadata: dict[int, dict[str, Any]] = {}

    @classmethod
    def build(cls, memories: Sequence[StoredMemory], space: Space) -> Snapshot:
        snapshot = cls(space)
        snapshot.apply(memories, ())
        return snapshot

    def __len__(self) -> int:
        return self.size - self.dead

    def metadata(self, row: int) -> dict[str, Any]:
        found = self._metadata.get(row)
        if found is None:
            found = self._metadata[row] = json.loads(self.metadata_json[row])
        return found

    def apply(self, upserts: Sequence[StoredMemory], removed: Sequence[str]) -> None:
        """Upsert ``upserts`` (by id) and drop the ids in ``removed``."""
        for id in removed:
            row = self.rows.pop(id, None)
            if row is not None:
                self.alive[row] = False
                self.texts[row] = self.metadata_json[row] = ""
                self._metadata.pop(row, None)
                self.dead += 1
        fresh: dict[str, StoredMemory] = {}
        for m in upserts:
            row = self.rows.get(m.id)
            if row is None:
                fresh[m.id] = m
            else:
                self._set(row, m)
                self.matrix[row] = np.frombuffer(m.vector, dtype="<f4")
        self._append(list(fresh.values()))
        if self.dead > max(1024, self.size // 2):
            self._compact()

    def _set(self, row: int, m: StoredMemory) -> None:
        self.texts[row], self.metadata_json[row] = m.text, m.metadata
        self.expires[row] = np.inf if m.expires is None else m.expires
        self._metadata.pop(row, None)
        self.expiring = self.expiring or m.expires is not None

    def _append(self, fresh: list[StoredMemory]) -> None:
        if not fresh:
            return
        start, end = self.size, self.size + len(fresh)
        if end > len(self.matrix):
            self._grow(max(end, 2 * len(self.matrix)))
        joined = b"".join(m.vector for m in fresh)
        self.matrix[start:end] = np.frombuffer(joined, dtype="<f4").reshape(len(fresh), self.space.dimensions)
        self.alive[start:end] = True
        self.ids += [m.id for m in fresh]
        self.texts += [""] * len(fresh)
        self.metadata_json += [""] * len(fresh)
        for i, m in enumerate(fresh):
            self.rows[m.id] = start + i
            self._set(start + i, m)
        self.size = end

    def _grow(self, capacity: int) -> None:
        matrix = np.zeros((capacity, self.space.dimensions), dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        expires = np.full(capacity, np.inf)
        expires[: self.size] = self.expires[: self.size]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self.size] = self.alive[: self.size]
        self.matrix, self.expires, self.alive = matrix, expires, alive

    def _compact(self) -> None:
        keep = np.flatnonzero(self.alive[: self.size])
        self.matrix = np.ascontiguousarray(self.matrix[keep])
        self.expires, self.alive = self.expires[keep], self.alive[keep]
        self.ids = [self.ids[i] for i in keep]
        self.texts = [self.texts[i] for i in keep]
        self.metadata_json = [self.metadata_json[i] for i in keep]
        self.rows = {id: row for row, id in enumerate(self.ids)}
        self.size, self.dead, self._metadata = len(keep), 0, {}


def exact_top_k(
    snapshot: Snapshot,
    query: Vector,
    k: int,
    now: float,
    matcher: Callable[[Mapping[str, Any]], bool] | None,
    min_score: float | None,
) -> list[tuple[int, float]]:
    """The ``k`` best live rows as ``(row, score)``: cosine (a dot product of normalised vectors), best first,
    ties by id; rows failing ``matcher`` or under ``min_score`` are never candidates."""
    n = snapshot.size
    if n == 0:
        return []
    scores = snapshot.matrix[:n] @ query
    if matcher is None and min_score is None and not snapshot.expiring and not snapshot.dead:
        masked, live = scores, n  # every row is a candidate: no mask to build
    else:
        allowed = snapshot.alive[:n] & (snapshot.expires[:n] > now)
        if matcher is not None:
            rows = np.flatnonzero(allowed)
            allowed[rows] = np.fromiter((matcher(snapshot.metadata(int(i))) for i in rows), dtype=bool, count=len(rows))
        if min_score is not None:
            allowed &= scores >= np.float32(min_score)
        masked = np.where(allowed, scores, -np.inf)
        live = int(np.count_nonzero(allowed))
    take = min(k, live)
    if take == 0:
        return []
    if take < n:
        # every row tied with the k-th score is a candidate, so the id order decides among them
        kth = np.partition(masked, n - take)[n - take]
        candidates = np.flatnonzero(masked >= kth)
    else:
        candidates = np.flatnonzero(masked > -np.inf)
    ids = snapshot.ids
    best = sorted(candidates.tolist(), key=lambda row: (-masked[row], ids[row]))[:take]
    return [(row, float(masked[row])) for row in best]


class SnapshotCache:
    """Snapshots per (tenant, namespace), rebuilt only when the namespace's version moved."""

    def __init__(self, entries_max: int = 1_024) -> None:
        self._entries: dict[tuple[str, str], tuple[Any, Snapshot]] = {}
        self.entries_max = entries_max

    def get(self, tenant: str, namespace: str, version: Any) -> Snapshot | None:
        found = self._entries.get((tenant, namespace))
        return found[1] if found is not None and found[0] == version else None

    def latest(self, tenant: str, namespace: str) -> tuple[Any, Snapshot] | None:
        """The cached version and snapshot, whatever the version (to bring up to date), or None."""
        return self._entries.get((tenant, namespace))

    def put(self, tenant: str, namespace: str, version: Any, snapshot: Snapshot) -> Snapshot:
        if len(self._entries) >= self.entries_max and (tenant, namespace) not in self._entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest: a bounded cache
        self._entries[(tenant, namespace)] = (version, snapshot)
        return snapshot


class MemoryStore(ABC):
    """Primitive memory operations; each write is atomic (see the module docstring)."""

    exact: ClassVar[bool] = True
    """Whether :meth:`search` returns exactly the brute-force top k (False for an approximate index)."""

    @abstractmethod
    async def space(self, tenant: str, namespace: str) -> Space | None:
        """The namespace's space, or None when it holds nothing."""

    @abstractmethod
    async def put_many(
        self, tenant: str, namespace: str, space: Space, memories: Sequence[StoredMemory], quota: Quota, now: float
    ) -> PutOutcome:
        """In one atomic step: create the namespace with ``space`` if absent (within ``namespaces_max``), refuse
        if it has another space; keep ids already stored and live (returned in ``existing``); replace expired
        ones; refuse the whole batch if a live id holds another digest, or if the tenant's count or bytes, or those of
        the namespace's group (:func:`group_of`, kept by every write and delete), would pass the quota."""

    @abstractmethod
    async def get(self, tenant: str, namespace: str, id: str) -> StoredMemory | None:
        """One memory (expired or not), or None."""

    @abstractmethod
    async def delete(self, tenant: str, namespace: str, ids: Sequence[str]) -> int:
        """Remove these ids; how many existed, their count and bytes given back to the tenant and to the
        namespace's group. A namespace left empty is removed (its space with it)."""

    @abstractmethod
    async def page(self, tenant: str, namespace: str, after: str | None, limit: int) -> list[StoredMemory]:
        """Up to ``limit`` memories with ids above ``after``, by id (expired ones included)."""

    @abstractmethod
    async def namespaces(self, tenant: str) -> list[tuple[str, Space, int]]:
        """Every namespace of the tenant with its space and count, by name."""

    @abstractmethod
    async def expired(self, tenant: str, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (namespace, id) pairs expired at ``now``."""

    @abstractmethod
    async def snapshot(self, tenant: str, namespace: str) -> Snapshot | None:
        """The namespace's current snapshot (cached until its version moves), or None when it holds nothing."""

    async def search(
        self,
        tenant: str,
        namespace: str,
        query: Vector,
        k: int,
        now: float,
        matcher: Callable[[Mapping[str, Any]], bool] | None,
        min_score: float | None,
    ) -> tuple[Space | None, list[tuple[StoredMemory, float]]]:
        """The namespace's space (None: it holds nothing) and, when ``query`` has its dimensions, the best ``k``
        live memories for the normalised ``query`` (exact; see :func:`exact_top_k`). One look at the namespace's
        version when its snapshot is current."""
        snap = await self.snapshot(tenant, namespace)
        if snap is None:
            return None, []
        if len(query) != snap.space.dimensions:
            return snap.space, []
        out = []
        for row, score in exact_top_k(snap, query, k, now, matcher, min_score):
            expires = None if snap.expires[row] == np.inf else float(snap.expires[row])  # a finite expiry
            memory = StoredMemory(snap.ids[row], snap.texts[row], snap.metadata_json[row], b"", "", 0.0, expires)
            out.append((memory, score))
        return snap.space, out

    async def aclose(self) -> None:
        """Release what the store holds of its own (an engine of its own). Idempotent."""
        return None
