"""Bus value types and limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..contracts import Message

__all__ = ["BusLimits", "DeadLetter", "PublishReceipt"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class BusLimits:
    """Every bound the bus enforces; exceeding one raises :class:`~sos_kernel.errors.LimitExceeded` (SOS-4010).

    - ``message_bytes_max``: one message as stored or sent over a transport (its JSON). Larger messages are
      split into ``chunk`` messages when chunking is on, refused when it is off.
    - ``payload_bytes_max``: the largest whole message after reassembly.
    - ``batch_max``: messages per ``publish_many``.
    - ``prefetch_max``: deliveries a subscription buffers per claim.
    - ``in_flight_max``: unacked deliveries one subscription may hold before it waits.
    - ``history_limit_max``: entries one ``history`` call returns.
    - ``max_deliveries_max``: the highest ``max_deliveries`` a subscriber may ask for.
    - ``retention_count_max`` / ``retention_age_s``: entries kept per address (older ones are trimmed, acked or
      not: retention bounds durability).
    - ``dedup_window_s``: how long a ``message_id`` is remembered for idempotent publish.
    - ``reconnect_s_max``: how long a subscription keeps trying, with backoff, to reach a store (in-process) or a
      server (remote) that became unreachable before it raises SOS-6030: a restart within it is ridden out.
    - ``chunk_ttl_s``: how long the parts of an unfinished chunk group are kept after its first part arrived;
      expired groups are swept every ``chunk_sweep_interval_s`` (or ``chunk_ttl_s`` if shorter) and whenever a
      part of the tenant arrives.
    - ``chunk_part_bytes_max``: the decoded data of one chunk (its message, like any other, is also bounded by
      ``message_bytes_max``); ``chunk_parts_max``: parts per group.
    - ``agent_chunk_bytes_max`` / ``tenant_chunk_bytes_max``: the declared sizes of the unfinished chunk groups one
      source (one agent) / one tenant may hold; ``agent_chunk_groups_max`` / ``tenant_chunk_groups_max``: how many.
    - ``agent_asks_pending_max`` / ``tenant_asks_pending_max``: ``ask`` calls one source / one tenant may have
      waiting for a reply at once, counted per kernel process (the one serving them).
    """

    message_bytes_max: int = 64 * KIB
    payload_bytes_max: int = 16 * MIB
    batch_max: int = 1000
    prefetch_max: int = 1000
    in_flight_max: int = 10_000
    history_limit_max: int = 10_000
    max_deliveries_max: int = 100
    visibility_timeout_s_max: float = 12 * 3600.0
    retention_count_max: int = 100_000
    retention_age_s: float = 7 * 24 * 3600.0
    dedup_window_s: float = 24 * 3600.0
    chunk_ttl_s: float = 600.0
    reconnect_s_max: float = 10.0
    chunk_part_bytes_max: int = 48 * KIB
    chunk_parts_max: int = 1024
    agent_chunk_bytes_max: int = 32 * MIB
    tenant_chunk_bytes_max: int = 256 * MIB
    agent_chunk_groups_max: int = 16
    tenant_chunk_groups_max: int = 256
    chunk_sweep_interval_s: float = 60.0
    agent_asks_pending_max: int = 32
    tenant_asks_pending_max: int = 256

    @property
    def chunk_data_bytes(self) -> int:
        """Raw bytes per chunk: base64 grows them by 4/3 and the envelope needs about 1 KiB; at most
        ``chunk_part_bytes_max``."""
        return max(1, min(self.chunk_part_bytes_max, (self.message_bytes_max - 2 * KIB) * 3 // 4))


@dataclass(frozen=True, slots=True)
class PublishReceipt:
    """What ``publish`` did.

    ``position`` is the message's place in its address's stream (an opaque, ordered cursor; ``None`` for a chunk
    whose group is not complete yet). ``duplicate`` is True when the message's source had already published its
    message id: nothing was written and the first position is returned. ``chunks`` is how many chunk messages it
    splits into (0 when it fits in one message).
    """

    message_id: str
    address: str
    position: str | None
    duplicate: bool
    chunks: int = 0

    @property
    def complete(self) -> bool:
        """False only for a chunk whose group still misses parts."""
        return self.position is not None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a group gave up on after ``attempts`` deliveries; ``replay`` delivers it to that group again.

    An entry the bus could not read (not a message of its catalogue: garbage, or fields another program wrote
    into the stream) is dead-lettered at once with ``message=None``, its reason, and ``raw``: the start of its
    bytes as text, at most ``POISON_RAW_BYTES_MAX`` bytes. Such a dead letter cannot be replayed.
    """

    id: str
    address: str
    group: str
    position: str
    message: Message | None
    reason: str
    attempts: int
    dead_at: datetime
    raw: str | None = None

    @staticmethod
    def at(epoch_s: float) -> datetime:
        """A store's epoch seconds as an aware UTC datetime."""
        return datetime.fromtimestamp(epoch_s, UTC)
