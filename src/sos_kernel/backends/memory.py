"""The in-process backend: for tests, notebooks and single-process apps. Not durable.

Every primitive runs without awaiting inside, so on one event loop each is atomic. The reference the other
backends are compared against.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import anyio
import anyio.lowlevel

from ..bus import store as bus_store
from ..bus.store import (
    Appended,
    BusStore,
    ChunkPart,
    ChunkPut,
    ChunkQuota,
    Claimed,
    Entry,
    HistoryEntry,
    NackReason,
    Retention,
    StoredDeadLetter,
    locate_refused,
)
from ..errors import InvalidArgument
from . import Backend, Implements
from .memory_a2a_tasks import MemoryA2ATaskStore
from .memory_checkpoints import MemoryCheckpointStore
from .memory_governance import MemoryAuditStore, MemoryGovernanceStore
from .memory_identity import MemoryIdentityStore, MemoryRegistryStore
from .memory_ledger import MemoryLedgerStore
from .memory_memory import MemoryMemoryStore
from .memory_providers import MemoryProviderStore
from .memory_replies import MemoryReplyStore
from .memory_skills import MemorySkillStore
from .memory_tasks import MemoryTaskStore

__all__ = ["KEPT_MESSAGES_MAX", "MemoryBackend", "MemoryBusStore"]

KEPT_MESSAGES_MAX = 1024
"""The newest entries whose validated message object the store keeps for delivery (older ones are parsed from
their bytes): a consumer that keeps up skips parsing, while the objects the collector must track stay bounded
whatever the streams retain."""


@dataclass(slots=True)
class _Row:
    message_id: str
    data: bytes
    receipts: bool
    only_group: str | None
    created: float
    message: object = None  # the validated message itself: deliveries skip parsing ``data`` again


@dataclass(slots=True)
class _Pending:
    consumer: str
    due: float
    attempts: int
    why: NackReason | None = None


@dataclass(slots=True)
class _Group:
    cursor: int
    pending: dict[int, _Pending] = field(default_factory=dict)
    dead: OrderedDict[str, StoredDeadLetter] = field(default_factory=OrderedDict)
    due_min: float = math.inf
    """No pending entry falls due before this (a lower bound): a claim scans the pending set only past it."""

    def mark_due(self, due: float) -> None:
        self.due_min = min(self.due_min, due)


@dataclass(slots=True)
class _ChunkGroup:
    meta: str
    total: int
    size_bytes: int
    expires: float
    parts: dict[int, bytes] = field(default_factory=dict)
    held: int = 0


@dataclass(slots=True)
class _Stream:
    """Positions are consecutive: the retained rows are ``first`` to ``last``, so every read indexes the dict and
    every trim drops from the front in O(1) per row, whatever the stream holds."""

    rows: dict[int, _Row] = field(default_factory=dict)
    first: int = 1
    last: int = 0

    def add(self, row: _Row) -> int:
        self.last += 1
        self.rows[self.last] = row
        return self.last


class MemoryBusStore(BusStore):
    """Bus primitives over dicts and lists. Keeps each entry's validated message object beside its bytes
    (``keeps_messages``), so a delivery or a history read hands back the object the publisher's bus checked."""

    keeps_messages: ClassVar[bool] = True
    read_wait_bounded: ClassVar[bool] = True  # its wait's timer is bounded by the timeout it is given
    ends_reply_channels_at_once: ClassVar[bool] = True  # dropping an address awaits nothing

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._groups: dict[tuple[str, str, str], _Group] = {}
        self._group_names: dict[tuple[str, str], set[str]] = {}  # so dropping an address reads only its groups
        # (tenant, source, message_id) -> (address, position, expires), oldest first
        self._dedup: OrderedDict[tuple[str, str, str], tuple[str, int, float]] = OrderedDict()
        self._id_sources: dict[tuple[str, str], list[str]] = {}  # (tenant, message_id) -> sources holding it
        self._dedup_next = math.inf  # the oldest dedup entry's expiry: nothing is pruned before it
        self._events: dict[tuple[str, str], anyio.Event] = {}
        self._chunks: dict[str, dict[tuple[str, str], _ChunkGroup]] = {}
        self._kept: deque[_Row] = deque()  # rows holding a message object, newest last

    # -- helpers --------------------------------------------------------------------------------------------

    def _stream(self, tenant: str, address: str) -> _Stream:
        key = (tenant, address)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        return stream

    def _notify(self, tenant: str, address: str) -> None:
        event = self._events.pop((tenant, address), None)
        if event is not None:
            event.set()

    def _keep(self, row: _Row) -> None:
        self._kept.append(row)
        if len(self._kept) > KEPT_MESSAGES_MAX:
            self._kept.popleft().message = None

    def _prune_dedup(self, now: float) -> None:
        if now < self._dedup_next:  # the common case: nothing has expired, nothing is read
            return
        dedup = self._dedup
        while dedup:
            (tenant, source, message_id), (_, _, expires) = next(iter(dedup.items()))
            if expires > now:
                self._dedup_next = expires
                return
            dedup.popitem(last=False)
            sources = self._id_sources.get((tenant, message_id))
            if sources is not None:
                sources.remove(source)
                if not sources:
                    del self._id_sources[(tenant, message_id)]
        self._dedup_next = math.inf

    @staticmethod
    def _trim(stream: _Stream, retention: Retention, now: float) -> None:
        rows, oldest_ok = stream.rows, now - retention.age_s
        while stream.first <= stream.last and (
            stream.last - stream.first >= retention.count_max or rows[stream.first].created < oldest_ok
        ):
            del rows[stream.first]
            stream.first += 1

    def _add_group(self, tenant: str, address: str, group: str, cursor: int) -> _Group:
        found = self._groups[(tenant, address, group)] = _Group(cursor=cursor)
        self._group_names.setdefault((tenant, address), set()).add(group)
        return found

    def _group(self, tenant: str, address: str, group: str) -> _Group:
        found = self._groups.get((tenant, address, group))
        if found is None:
            # A group used before ensure_group (e.g. after delete) starts from the earliest retained entry.
            found = self._add_group(tenant, address, group, 0)
        return found

    # -- primitives -----------------------------------------------------------------------------------------

    async def append(self, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention) -> list[Appended]:
        return self._append(tenant, items, retention)

    async def append_ack(
        self,
        tenant: str,
        items: Sequence[tuple[str, Entry]],
        retention: Retention,
        address: str,
        group: str,
        position: str,
        attempt: int,
    ) -> tuple[list[Appended], bool]:
        """The check, the append and the ack with no await between them: one step for this event loop."""
        grp = self._groups.get((tenant, address, group))
        pend = grp.pending.get(int(position)) if grp is not None else None
        if grp is None or pend is None or pend.attempts != attempt:
            return [], False
        appended = self._append(tenant, items, retention)
        del grp.pending[int(position)]
        return appended, True

    def _append(self, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention) -> list[Appended]:
        now = time.time()
        self._prune_dedup(now)
        dedup, expires = self._dedup, now + retention.dedup_window_s
        out: list[Appended] = []
        batch_ids: dict[tuple[str, str], Appended] = {}
        for address, entry in items:
            message_id, shared = entry.message_id, entry.only_group is None
            key = (tenant, entry.source, message_id)
            if shared:  # a duplicate of a stored entry or of one earlier in the batch takes no position
                known = dedup.get(key)
                if known is not None:
                    out.append(Appended(str(known[1]), True))
                    continue
                earlier = batch_ids.get((entry.source, message_id))
                if earlier is not None:
                    out.append(Appended(earlier.position, True))
                    continue
            stream = self._stream(tenant, address)
            row = _Row(message_id, entry.data, entry.receipts, entry.only_group, now, entry.message)
            pos = stream.add(row)
            if row.message is not None:
                self._keep(row)
            if shared:
                dedup[key] = (address, pos, expires)
                self._id_sources.setdefault((tenant, message_id), []).append(entry.source)
                if expires < self._dedup_next:
                    self._dedup_next = expires
            out.append(appended := Appended(str(pos), False))
            batch_ids[(entry.source, message_id)] = appended
            self._trim(stream, retention, now)
            self._notify(tenant, address)
        return out

    async def ensure_group(self, tenant: str, address: str, group: str, start: Literal["earliest", "latest"]) -> None:
        key = (tenant, address, group)
        if key not in self._groups:
            self._add_group(tenant, address, group, self._stream(tenant, address).last if start == "latest" else 0)

    async def delete_group(self, tenant: str, address: str, group: str) -> None:
        self._groups.pop((tenant, address, group), None)
        names = self._group_names.get((tenant, address))
        if names is not None:
            names.discard(group)
            if not names:
                del self._group_names[(tenant, address)]

    async def drop_address(self, tenant: str, address: str) -> None:
        self._streams.pop((tenant, address), None)
        self._notify(tenant, address)  # its wake-up event goes too (a timed-out ask's wait left one)
        for group in self._group_names.pop((tenant, address), ()):
            del self._groups[(tenant, address, group)]

    async def claim(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int
    ) -> list[Claimed]:
        return self._claim(tenant, address, group, consumer, count, visibility_ms)

    async def claim_wait(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int, timeout_s: float
    ) -> list[Claimed]:
        """``claim``; when nothing is there, :meth:`wait` for news up to ``timeout_s`` (a publisher of this event
        loop that appends during its first yield is read without arming a timer) and claim once more."""
        claimed = self._claim(tenant, address, group, consumer, count, visibility_ms)
        if claimed or timeout_s <= 0:
            return claimed
        await self.wait(tenant, address, timeout_s)
        return self._claim(tenant, address, group, consumer, count, visibility_ms)

    def _claim(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int
    ) -> list[Claimed]:
        now = time.monotonic()
        stream = self._stream(tenant, address)
        grp = self._group(tenant, address, group)
        due = now + visibility_ms / 1000
        out = self._redeliver(stream, grp, consumer, count, now, due) if grp.due_min <= now else []
        for pos in range(max(grp.cursor + 1, stream.first), stream.last + 1):
            if len(out) >= count:
                break
            grp.cursor = pos
            row = stream.rows[pos]
            if row.only_group is not None and row.only_group != group:
                continue
            grp.pending[pos] = _Pending(consumer, due, 1)
            out.append(Claimed(str(pos), row.data, 1, row.receipts, row.message))
        if out:
            grp.mark_due(due)
        return out

    @staticmethod
    def _redeliver(stream: _Stream, grp: _Group, consumer: str, count: int, now: float, due: float) -> list[Claimed]:
        """The due pending entries (up to ``count``, in stream order), claimed again; ``due_min`` made exact."""
        out: list[Claimed] = []
        for pos in sorted(p for p, pend in grp.pending.items() if pend.due <= now):
            if len(out) >= count:
                break
            row = stream.rows.get(pos)
            pend = grp.pending[pos]
            if row is None:  # trimmed by retention while pending
                del grp.pending[pos]
                continue
            pend.consumer, pend.due, pend.attempts = consumer, due, pend.attempts + 1
            out.append(Claimed(str(pos), row.data, pend.attempts, row.receipts, row.message))
        grp.due_min = min((pend.due for pend in grp.pending.values()), default=math.inf)
        return out

    async def ack(self, tenant: str, address: str, group: str, position: str, attempt: int) -> bool:
        grp = self._groups.get((tenant, address, group))
        pend = grp.pending.get(int(position)) if grp is not None else None
        if grp is None or pend is None or pend.attempts != attempt:  # no await between this check and the removal
            return False
        del grp.pending[int(position)]
        return True

    async def nack(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        attempt: int,
        delay_ms: int,
        visibility_ms: int,
        reason: str | None = None,
    ) -> bool:
        grp = self._groups.get((tenant, address, group))
        pend = grp.pending.get(int(position)) if grp else None
        if grp is None or pend is None or pend.attempts != attempt:
            return False
        pend.due = time.monotonic() + delay_ms / 1000
        grp.mark_due(pend.due)
        pend.why = None if reason is None else NackReason(pend.attempts, reason)
        self._notify(tenant, address)
        return True

    async def nack_reason(self, tenant: str, address: str, group: str, position: str) -> NackReason | None:
        grp = self._groups.get((tenant, address, group))
        pend = grp.pending.get(int(position)) if grp else None
        return None if pend is None else pend.why

    async def bury(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        reason: str,
        attempts: int,
        data: bytes | None = None,
    ) -> bool:
        grp = self._groups.get((tenant, address, group))
        pend = grp.pending.pop(int(position), None) if grp else None
        row = self._stream(tenant, address).rows.get(int(position))
        if grp is None or pend is None or row is None:
            return False
        dead_id = position  # a position is buried at most once per group; a global counter would leak volume
        kept = row.data if data is None else data
        grp.dead[dead_id] = StoredDeadLetter(dead_id, address, group, position, kept, reason, attempts, time.time())
        return True

    async def dead_letters(self, tenant: str, address: str, group: str, limit: int) -> list[StoredDeadLetter]:
        grp = self._groups.get((tenant, address, group))
        return list(grp.dead.values())[:limit] if grp else []

    async def revive(self, tenant: str, address: str, group: str, dead_id: str) -> Appended | None:
        grp = self._groups.get((tenant, address, group))
        dead = grp.dead.pop(dead_id, None) if grp else None
        if dead is None:
            return None
        stream = self._stream(tenant, address)
        pos = stream.add(_Row("", dead.data, False, group, time.time()))
        self._notify(tenant, address)
        return Appended(str(pos), False)

    async def lookup(self, tenant: str, source: str, message_id: str) -> Appended | None:
        self._prune_dedup(time.time())
        known = self._dedup.get((tenant, source, message_id))
        return Appended(str(known[1]), True) if known else None

    async def locate(self, tenant: str, address: str, message_id: str) -> str | None:
        """The earliest of the id's entries in their window (trimmed or not) and its retained entries, found by
        reading the stream's rows from the oldest: at most ``LOCATE_SCAN_MAX`` of them, O(retained) per call."""
        self._prune_dedup(time.time())
        found = [self._dedup[(tenant, s, message_id)] for s in self._id_sources.get((tenant, message_id), ())]
        window = min((pos for at, pos, _ in found if at == address), default=None)
        stream = self._streams.get((tenant, address))
        if stream is None:
            return None if window is None else str(window)
        beyond = stream.first + bus_store.LOCATE_SCAN_MAX  # the first row not read
        end = min(stream.last + 1, beyond, math.inf if window is None else window)
        for pos in range(stream.first, int(end)):
            row = stream.rows[pos]
            if row.message_id == message_id and row.only_group is None:
                return str(pos)
        if window is not None and window < beyond:
            return str(window)
        if beyond <= stream.last:
            raise locate_refused(address, message_id)
        return None

    async def history(self, tenant: str, address: str, after: str | None, limit: int) -> list[HistoryEntry]:
        stream = self._stream(tenant, address)
        out: list[HistoryEntry] = []
        for pos in range(max(_position(after) + 1 if after else 0, stream.first), stream.last + 1):
            if len(out) >= limit:
                break
            row = stream.rows[pos]
            if row.only_group is None:
                out.append(HistoryEntry(str(pos), row.data, row.message))
        return out

    async def pending_count(self, tenant: str, address: str, group: str) -> int:
        grp = self._groups.get((tenant, address, group))
        return len(grp.pending) if grp else 0

    async def wait(self, tenant: str, address: str, timeout_s: float) -> None:
        """Until news on ``address`` or ``timeout_s``. The waiter is registered first, then yields once: news from
        a task of this event loop meanwhile (the answer to an ask, a producer's next batch) ends the wait without
        arming a timer; only then does it wait with one."""
        key = (tenant, address)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        await anyio.lowlevel.checkpoint()
        if event.is_set():
            return
        with anyio.move_on_after(timeout_s):
            await event.wait()

    def _sweep_chunks_of(self, tenant: str, now: float) -> int:
        groups = self._chunks.get(tenant, {})
        expired = [key for key, group in groups.items() if group.expires <= now]
        for key in expired:
            del groups[key]
        if not groups:
            self._chunks.pop(tenant, None)
        return len(expired)

    async def put_chunk(self, tenant: str, part: ChunkPart, quota: ChunkQuota) -> ChunkPut:
        now = time.monotonic()
        self._sweep_chunks_of(tenant, now)
        groups = self._chunks.get(tenant, {})
        key = (part.source, part.group_id)
        group = groups.get(key)
        if group is None:
            mine = [g for (source, _), g in groups.items() if source == part.source]
            refused = quota.refusal(
                len(mine),
                sum(g.size_bytes for g in mine),
                len(groups),
                sum(g.size_bytes for g in groups.values()),
                part.size_bytes,
            )
            if refused is not None:
                return ChunkPut(refused=refused)
            group = _ChunkGroup(part.meta, part.total, part.size_bytes, now + quota.ttl_s)
        elif group.meta != part.meta:
            return ChunkPut(refused="conflict")
        held = group.held - len(group.parts.get(part.seq, b"")) + len(part.data)
        if held > group.size_bytes:
            return ChunkPut(refused="size_bytes")
        group.parts[part.seq], group.held = part.data, held
        self._chunks.setdefault(tenant, groups)[key] = group
        if len(group.parts) < group.total:
            return ChunkPut()
        del groups[key]
        if not groups:
            del self._chunks[tenant]
        return ChunkPut(parts=[group.parts[i] for i in range(group.total)])

    async def sweep_chunks(self) -> int:
        now = time.monotonic()
        return sum(self._sweep_chunks_of(tenant, now) for tenant in list(self._chunks))

    async def chunk_usage(self, tenant: str) -> tuple[int, int]:
        groups = self._chunks.get(tenant, {})
        return len(groups), sum(len(data) for g in groups.values() for data in g.parts.values())


class MemoryBackend(Backend):
    """``memory://``: everything in this process, gone when it exits."""

    name: ClassVar[str] = "memory"
    implements: ClassVar[Implements] = Implements(
        durable=False, multi_process=False, multi_host=False, push_wakeups=True, trio=True
    )

    def __init__(self) -> None:
        self.bus = MemoryBusStore()
        self.audit = MemoryAuditStore()
        self.ledger = MemoryLedgerStore(self.audit)
        self.identity = MemoryIdentityStore(self.audit)
        self.registry = MemoryRegistryStore()
        self.skills = MemorySkillStore(self.audit)
        self.providers = MemoryProviderStore()
        self.checkpoints = MemoryCheckpointStore()
        self.a2a_tasks = MemoryA2ATaskStore()
        self.replies = MemoryReplyStore()
        self.tasks = MemoryTaskStore(self.audit)
        self.memory = MemoryMemoryStore()
        self.governance = MemoryGovernanceStore(self.audit)

    @classmethod
    async def connect(cls, url: str, **options: Any) -> MemoryBackend:
        return cls()

    async def aclose(self) -> None:
        return None


def _position(value: str) -> int:
    """A position of this bus (a count), else SOS-4005."""
    if not isinstance(value, str) or not value.isdigit() or not value.isascii():
        raise InvalidArgument(f"{value!r} is not a position of this bus (an integer for memory://)")
    return int(value)
