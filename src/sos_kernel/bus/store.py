"""The bus store seam: the few primitive, atomic operations an engine must provide.

Semantics (validation, chunk reassembly, receipts, dead-lettering after ``max_deliveries``, ask/reply) live once
in :class:`~sos_kernel.bus.service.Bus`. A store keeps bytes and makes each primitive atomic in its engine: a
SQLite transaction, one Redis Lua script, one critical section in memory.

Model, per tenant: an *address* is an append-only stream of entries with increasing positions. A *group* on an
address has a cursor (entries at or before it were handed out) and a pending set (position → consumer, attempts,
visible-again deadline). A *claim* hands out due pending entries first (redelivery), then new entries after the
cursor, in stream order. An entry may be meant for one group only (``only_group``, used by dead-letter replay);
other groups skip it.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

from ..errors import InvalidArgument

__all__ = [
    "LOCATE_SCAN_MAX",
    "POISON_RAW_BYTES_MAX",
    "REPLY_CHANNEL_PREFIX",
    "REPLY_CHANNEL_TTL_S",
    "Appended",
    "BusStore",
    "ChunkPart",
    "ChunkPut",
    "ChunkQuota",
    "Claimed",
    "Entry",
    "HistoryEntry",
    "NackReason",
    "Retention",
    "StoredDeadLetter",
    "capped_raw",
    "foreign_fields",
    "is_reply_channel",
    "locate_refused",
]

LOCATE_SCAN_MAX = 101_000
"""The retained entries of one address a store that finds a message id by scanning (memory, SQLite) reads, from
the oldest, to resolve ``history(after=<message_id>)``; past it the id is refused (SOS-4005) and the reader resumes
after a position. The most an address holds under the default ``BusLimits.retention_count_max`` (100 000) and
SQLite's trimming lag (1000), so it bites only on raised retention. Worst case on SQLite: ~35 ms of CPU."""
POISON_RAW_BYTES_MAX = 4096
"""The bytes of an unreadable entry its dead letter keeps; the rest is cut (the reason says how much)."""
REPLY_CHANNEL_PREFIX = "sos:channel:reply-"
"""An ask's private reply channel is this prefix and 32 lowercase hex digits (see :func:`is_reply_channel`)."""
REPLY_CHANNEL_TTL_S = 60.0
"""How long a store that expires reply channels (``BusStore.expires_reply_channels``) keeps one after the last
entry written to it: an answered ask's channel is gone this long after its reply, without a command of its own."""
_REPLY_CHANNEL_RE = re.compile(r"^sos:channel:reply-[0-9a-f]{32}$")


def locate_refused(address: str, message_id: str) -> InvalidArgument:
    """The error of a ``locate`` that would read more than ``LOCATE_SCAN_MAX`` entries of ``address``."""
    scan_max = LOCATE_SCAN_MAX  # read when raised: tests lower it
    return InvalidArgument(
        f"message {message_id} is not among the oldest {scan_max} entries of {address}: resume after a"
        " position (a PublishReceipt's or one from history_entries) instead of a message id",
        details={"after": message_id, "address": address, "scan_max": scan_max},
    )


def is_reply_channel(address: str) -> bool:
    """Whether ``address`` is named like an ask's reply channel (``sos:channel:reply-<32 hex>``)."""
    return address.startswith(REPLY_CHANNEL_PREFIX) and _REPLY_CHANNEL_RE.fullmatch(address) is not None


def capped_raw(data: bytes) -> bytes:
    """The first ``POISON_RAW_BYTES_MAX`` bytes of an unreadable entry, what its dead letter keeps."""
    return data[:POISON_RAW_BYTES_MAX]


def foreign_fields(fields: object) -> bytes:
    """An entry that has no message of ours (fields another program wrote) as ``{"unreadable_fields": {...}}``.

    ``fields`` is a mapping or a flat list of names and values, as an engine returns them; the result is JSON
    that no message type accepts, so the reader dead-letters it with the fields kept for inspection.
    """
    pairs: list[tuple[object, object]]
    if isinstance(fields, dict):
        pairs = list(fields.items())
    elif isinstance(fields, list | tuple):
        pairs = list(zip(fields[0::2], fields[1::2], strict=False))
    else:
        pairs = [("value", fields)]
    text = {_text(k): _text(v) for k, v in pairs}
    return json.dumps({"unreadable_fields": text}, ensure_ascii=False).encode()


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


class Entry(NamedTuple):
    """One message to append: its idempotency key, its wire bytes and its delivery options.

    The idempotency key is ``(source, message_id)`` within a tenant: the same id from another source is another
    message, so no agent can make a peer's message a duplicate by publishing its id first.

    A named tuple rather than a frozen dataclass: one is built for every message published, and building a frozen
    dataclass costs several times as much.
    """

    message_id: str
    data: bytes
    receipts: bool = False
    only_group: str | None = None
    message: object = None
    """The deeply immutable message the bus validated into ``data`` (else None): a store that keeps objects
    (``BusStore.keeps_messages``) hands it back in ``Claimed``/``HistoryEntry`` so it is not parsed again."""
    source: str = ""
    """The message's ``source``: its message id is deduplicated among that source's messages only."""


class Appended(NamedTuple):
    """Where an entry landed; ``duplicate`` when its source had already stored its message id (nothing was
    written)."""

    position: str
    duplicate: bool


class Claimed(NamedTuple):
    """An entry handed to a consumer; ``attempt`` counts deliveries to this group, starting at 1.

    ``message`` is the entry's ``Entry.message`` when the store kept it, else None (the bus parses ``data``).
    A named tuple, like ``Entry``: one is built per delivery.
    """

    position: str
    data: bytes
    attempt: int
    receipts: bool
    message: object = None


class NackReason(NamedTuple):
    """Why a pending entry was last given back, and the delivery (``attempt``) that nack ended."""

    attempt: int
    reason: str


class HistoryEntry(NamedTuple):
    """An entry read without consuming it; ``message`` as in :class:`Claimed`."""

    position: str
    data: bytes
    message: object = None


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A message a group gave up on, kept with why and how often it was tried."""

    id: str
    address: str
    group: str
    position: str
    data: bytes
    reason: str
    attempts: int
    dead_at: float


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of each address a store keeps: at most ``count_max`` entries and none older than ``age_s``.

    ``dedup_window_s`` is how long a message id is remembered for idempotent publish.
    """

    count_max: int
    age_s: float
    dedup_window_s: float


class ChunkPart(NamedTuple):
    """One part of a chunk group. A group is keyed by ``(source, group_id)``: parts from another source never
    join it. ``meta`` is what every part of the group must repeat (opaque to the store); ``size_bytes`` is the
    group's declared size, reserved against the quotas when the group opens and never exceeded by its parts."""

    source: str
    group_id: str
    meta: str
    total: int
    size_bytes: int
    seq: int
    data: bytes


class ChunkQuota(NamedTuple):
    """Bounds on the unfinished chunk groups of one tenant and of one source within it (see ``BusLimits``)."""

    ttl_s: float
    tenant_groups_max: int
    tenant_bytes_max: int
    agent_groups_max: int
    agent_bytes_max: int

    def refusal(
        self, agent_groups: int, agent_bytes: int, tenant_groups: int, tenant_bytes: int, size_bytes: int
    ) -> str | None:
        """The name of the limit a new group of ``size_bytes`` would break, given the live groups; None if none."""
        if agent_groups + 1 > self.agent_groups_max:
            return "agent_chunk_groups_max"
        if agent_bytes + size_bytes > self.agent_bytes_max:
            return "agent_chunk_bytes_max"
        if tenant_groups + 1 > self.tenant_groups_max:
            return "tenant_chunk_groups_max"
        if tenant_bytes + size_bytes > self.tenant_bytes_max:
            return "tenant_chunk_bytes_max"
        return None


class ChunkPut(NamedTuple):
    """What ``put_chunk`` did: ``parts`` (in order) when this part completed its group, which is then gone;
    ``refused`` names why nothing was written (a quota's name, ``"conflict"`` for a part whose ``meta`` differs
    from its group's, ``"size_bytes"`` for parts that would outgrow the declared size)."""

    parts: list[bytes] | None = None
    refused: str | None = None


class BusStore(ABC):
    """Primitive bus operations for one engine. Every method is atomic; none interprets message content."""

    keeps_messages: ClassVar[bool] = False
    expires_reply_channels: ClassVar[bool] = False
    """True for a store whose every append to a reply channel (:func:`is_reply_channel`) sets the channel to expire
    ``REPLY_CHANNEL_TTL_S`` later, in the same atomic step: an answered ask's channel then needs no drop of its own
    (see :meth:`end_reply_channel`)."""
    """True for a store that keeps ``Entry.message`` beside the bytes (in this process) and returns it; the bus
    then skips building the objects for stores that would drop them."""
    read_wait_bounded: ClassVar[bool] = False
    """True for a store whose :meth:`read_wait` returns within its ``timeout_s`` (a timer of its own, armed only
    when it has to wait): an ask then needs no timeout scope around its reads."""
    ends_reply_channels_at_once: ClassVar[bool] = False
    """True for a store whose :meth:`end_reply_channel` never suspends: it completes even in a cancelled task, so
    an ask ends its channel without a shielded scope."""

    @abstractmethod
    async def append(self, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention) -> list[Appended]:
        """Append ``(address, entry)`` pairs, all or none; an entry whose ``(source, message_id)`` is stored is a
        duplicate (the same id from another source is not).

        Entries with ``only_group`` set bypass the duplicate check (they re-deliver a known message).
        """

    @abstractmethod
    async def ensure_group(self, tenant: str, address: str, group: str, start: Literal["earliest", "latest"]) -> None:
        """Create the group if missing, its cursor before the first retained entry or at the current end."""

    @abstractmethod
    async def delete_group(self, tenant: str, address: str, group: str) -> None:
        """Forget a group, its cursor, pending set and dead letters."""

    @abstractmethod
    async def drop_address(self, tenant: str, address: str) -> None:
        """Forget an address: its retained entries, groups and pending sets (a finished ask's reply channel, which
        no group consumes). Idempotent."""

    @abstractmethod
    async def claim(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int
    ) -> list[Claimed]:
        """Hand out up to ``count`` entries: due redeliveries first, then new ones in stream order.

        Each claimed entry becomes pending for ``consumer`` until ``visibility_ms`` from now, and its attempt
        count goes up by one. Entries removed by retention while pending are dropped from the pending set.
        """

    async def claim_wait(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int, timeout_s: float
    ) -> list[Claimed]:
        """``claim``, and when nothing is there, wait up to ``timeout_s`` for news and claim once more.

        An empty list is allowed even before ``timeout_s`` (callers loop). An engine with a blocking read that
        hands an entry to exactly one waiting consumer overrides this, so one append wakes one consumer.
        """
        claimed = await self.claim(tenant, address, group, consumer, count, visibility_ms)
        if claimed or timeout_s <= 0:
            return claimed
        await self.wait(tenant, address, timeout_s)
        return await self.claim(tenant, address, group, consumer, count, visibility_ms)

    @abstractmethod
    async def ack(self, tenant: str, address: str, group: str, position: str, attempt: int) -> bool:
        """Remove a pending entry, only while the hand-out that settles it still holds it: pending, its delivery
        count still ``attempt`` (a redelivery, to any consumer, counts one more). False, with nothing changed, when
        it is not held (acked, dead-lettered, or handed out again); the check and the removal are one step."""

    @abstractmethod
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
        """Make a pending entry due again after ``delay_ms``, only while the hand-out of delivery count ``attempt``
        still holds it (as :meth:`ack`); False, with nothing changed, when it is not held.

        In the same step, ``reason`` is kept with the entry, tagged with its current attempt (``None`` forgets an
        earlier one); it lives until the entry is acked, buried, trimmed or its group deleted.
        """

    @abstractmethod
    async def nack_reason(self, tenant: str, address: str, group: str, position: str) -> NackReason | None:
        """The reason the pending entry's last nack kept, with that delivery's attempt; None when there is none."""

    @abstractmethod
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
        """Move a pending entry to the group's dead letters; False when it was not pending.

        ``data``, when given, is kept instead of the entry's own bytes (an unreadable entry's capped raw form).
        """

    @abstractmethod
    async def dead_letters(self, tenant: str, address: str, group: str, limit: int) -> list[StoredDeadLetter]:
        """The group's dead letters, oldest first."""

    @abstractmethod
    async def revive(self, tenant: str, address: str, group: str, dead_id: str) -> Appended | None:
        """Remove a dead letter and append its message again for that group only; None if it is gone."""

    @abstractmethod
    async def lookup(self, tenant: str, source: str, message_id: str) -> Appended | None:
        """Where ``source`` stored a message id (``duplicate=True``), or None if it is unknown or past its window."""

    @abstractmethod
    async def locate(self, tenant: str, address: str, message_id: str) -> str | None:
        """The earliest position on ``address`` of an entry with this message id, whichever source published it and
        whatever its age: among the retained entries and those still in their dedup window (trimmed or not; a
        trimmed position resumes at the first retained entry after it). None if there is none. A reader resuming
        after the id then never skips an entry, even after its window closed and a peer re-used the id.

        Raises ``InvalidArgument`` when the store would have to read more than ``LOCATE_SCAN_MAX`` entries."""

    @abstractmethod
    async def history(self, tenant: str, address: str, after: str | None, limit: int) -> list[HistoryEntry]:
        """Retained entries after ``after`` (from the start when None), oldest first, skipping replays."""

    @abstractmethod
    async def pending_count(self, tenant: str, address: str, group: str) -> int:
        """How many entries of the group are pending (claimed, not yet acked)."""

    @abstractmethod
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
        """``append`` the entries and ``ack`` the pending ``position`` of ``group`` on ``address`` (a reply and the
        delivery it answers) as one step, only while that hand-out still holds the entry: it is pending and its
        delivery count is still ``attempt`` (a redelivery, to any consumer, counts one more).

        ``([], False)`` with nothing written when the entry is not held (acked, buried, or handed out again);
        otherwise the appended entries and True. A failure inside the step writes neither: an engine implements it
        as one step of its own (a transaction, a script, code with no await between the check and the writes).
        """

    async def read_wait(
        self, tenant: str, address: str, after: str | None, limit: int, timeout_s: float
    ) -> list[HistoryEntry]:
        """``history`` after ``after``; when it finds nothing, wait up to ``timeout_s`` for news and read once more.

        No entry appended after the call began is missed: the wait starts where the read ended. An engine with a
        blocking read that starts at a given position overrides this with that one read.
        """
        entries = await self.history(tenant, address, after, limit)
        if entries or timeout_s <= 0:
            return entries
        await self.wait(tenant, address, timeout_s)
        return await self.history(tenant, address, after, limit)

    async def end_reply_channel(self, tenant: str, address: str, answered: bool) -> None:
        """The ask waiting on ``address`` (its reply channel) ended, ``answered`` or not: forget the channel.

        Dropped at once (``drop_address``), except by a store that ``expires_reply_channels`` when the ask was
        answered: the reply's own append set the channel to expire, so no command is spent on it.
        """
        await self.drop_address(tenant, address)

    @abstractmethod
    async def wait(self, tenant: str, address: str, timeout_s: float) -> None:
        """Return when the address may have news (an append, a nack), or after ``timeout_s``.

        Spurious returns are allowed; a missed append is not (callers re-claim after every return).
        """

    @abstractmethod
    async def put_chunk(self, tenant: str, part: ChunkPart, quota: ChunkQuota) -> ChunkPut:
        """Store one part, all or nothing, after dropping the tenant's expired groups.

        A new group must fit the quota (counting the tenant's live groups and their declared sizes) and expires
        ``quota.ttl_s`` after it opened. A part replaces an earlier part of the same ``seq``. When the last missing
        part arrives, the parts are returned in order and the group is removed in the same step; each part is
        read once.
        """

    @abstractmethod
    async def sweep_chunks(self) -> int:
        """Drop the expired chunk groups of every tenant this store tracks; how many were dropped."""

    @abstractmethod
    async def chunk_usage(self, tenant: str) -> tuple[int, int]:
        """The chunk groups the engine still holds for ``tenant`` and their parts' bytes, expired ones included
        until swept (for diagnostics and tests)."""
