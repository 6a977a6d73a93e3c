"""The bus: typed messages between agents, with one semantics on every backend.

Guarantees:

- **Validated.** ``publish`` accepts a contract model or wire data and validates it with the kernel's type
  catalogue; bad input raises the SOS-40xx error and nothing is stored.
- **Idempotent by message_id, per source.** A source re-publishing one of its message ids within the dedup window
  (24 h by default) writes nothing, delivers nothing twice and returns the first receipt with ``duplicate=True``.
  The same id from another source is another message: no agent can suppress a peer's message by taking its id.
- **At-least-once.** A delivery stays pending until acked; unacked deliveries are redelivered after the
  subscription's visibility timeout (or a nack's delay) with ``attempt`` one higher; after ``max_deliveries``
  attempts the message moves to the group's dead letters, from where it can be listed and replayed. A consumer
  may therefore see a message more than once, always with the same ``message_id``.
- **Ordered per address.** First deliveries within a group follow the address's stream order; redeliveries come
  when they fall due.
- **Queues and fan-out.** Agent inboxes (``agent:<name>``) default to one shared group per address, so each
  message goes to one consumer. Channels (``sos:channel:<name>``) default to a private group per subscription,
  so every subscriber sees every message. Naming a ``group`` gives either behaviour explicitly.
- **Nothing truncated.** A message larger than ``message_bytes_max`` travels as ``chunk`` messages and is
  reassembled, size- and SHA-256-checked, before it is stored and delivered; with chunking off it is refused.
  The reassembled message passes every check a whole one does and must come from its chunks' source; a chunk
  group is keyed by that source, bounded per source and per tenant, and dropped ``chunk_ttl_s`` after it opened.
- **Bounded.** Every size, count and wait has a named limit in :class:`BusLimits`.
- **Unreadable entries are never fatal.** An entry the bus cannot read back as a message of its catalogue
  (garbage in a row, fields another program wrote into a stream) is dead-lettered by the first subscription that
  meets it, at once, with the reason and its first ``POISON_RAW_BYTES_MAX`` bytes (``DeadLetter.message`` is None,
  ``DeadLetter.raw`` holds them); ``history`` leaves it out and reads on. The entries around it are delivered and
  acked as usual; each one met is counted in ``Bus.unreadable_entries`` and logged on ``sos_kernel.bus``.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import logging
import math
import re
import secrets
import types
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import anyio
import anyio.lowlevel
from pydantic import AwareDatetime, BaseModel, NaiveDatetime

from .. import _trace
from .._observe import Events
from ..contracts import (
    ADDRESS_PATTERN,
    AnnounceMessage,
    AskMessage,
    ChunkMessage,
    ChunkPayload,
    Message,
    ReceiptMessage,
    ReceiptPayload,
    SendMessage,
    TypeCatalogue,
    WakeMessage,
    build_message,
    new_message_id,
)
from ..errors import (
    AgentNotFound,
    AgentOffline,
    AskTimeout,
    BackendUnavailable,
    ChunkIntegrityError,
    Forbidden,
    InvalidArgument,
    InvalidSource,
    KernelClosed,
    LimitExceeded,
    MissingType,
    NotFound,
    SchemaViolation,
    SOSError,
    UnknownType,
)
from ..guard import guard
from ..operations import Wire, operation, service
from ..refusals import bad_address
from .models import BusLimits, DeadLetter, PublishReceipt
from .store import REPLY_CHANNEL_PREFIX, Appended, BusStore, ChunkPart, ChunkQuota, Entry, Retention, capped_raw

if TYPE_CHECKING:
    from ..guard import Caller

__all__ = [
    "NACK_REASON_CHARS_MAX",
    "PUBLISHES_PER_YIELD_MAX",
    "SETTLED_REPLY",
    "Bus",
    "Delivery",
    "Subscription",
    "SubscriptionSpec",
    "check_nack_delay",
    "check_nack_reason",
    "resolve_subscription",
    "split_message",
]

_ADDRESS_RE = re.compile(ADDRESS_PATTERN)
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
KERNEL_SOURCE = "agent:kernel"
DEFAULT_INBOX_GROUP = "inbox"
LEASE_TOKEN_BYTES = 16
"""Random bytes in a delivery's lease token (128 bits: not guessable)."""
_PUBLISH = (SchemaViolation, MissingType, InvalidSource, UnknownType, LimitExceeded, ChunkIntegrityError)
WAIT_CAP_S = 1.0
"""Longest a subscriber sleeps before checking for due redeliveries (engines wake it sooner on new messages)."""
RECONNECT_BACKOFF_S = 0.05
"""A subscription's first wait after its store became unreachable; each further one doubles, up to the max."""
RECONNECT_BACKOFF_MAX_S = 1.0
PUBLISHES_PER_YIELD_MAX = 32
"""The most single publishes a bus stores before it lets the event loop run other tasks (a checkpoint): a producer
in a loop never starves a consumer of its event loop, which then takes what came meanwhile in one claim."""
SETTLED_REPLY = "this delivery was acked or nacked already; answer its message with bus.reply(message, text)"
"""The SOS-4005 message of ``Delivery.reply`` on a settled delivery (the same in-process and from the client)."""
UNHELD_REPLY = (
    "this delivery is no longer held (acked elsewhere, or handed out again after its visibility timeout); "
    "no reply was stored; answer its message with bus.reply(message, text)"
)
"""The SOS-4005 message of ``Delivery.reply`` when the store finds the delivery no longer held: nothing stored."""
NACK_REASON_CHARS_MAX = 500
"""The longest reason a nack may give (it becomes the dead letter's reason; a status line, not output)."""
log = logging.getLogger("sos_kernel.bus")


@dataclass(slots=True)
class _HeldReply:
    """A session's ``Delivery.reply`` on its way through the guard: the trusted ``Bus.reply`` it reaches stores the
    reply and acks the delivery in one store step, and notes how that ended."""

    sub: Subscription
    delivery: Delivery
    acked: bool = False
    unheld: bool = False


_HELD_REPLY: contextvars.ContextVar[_HeldReply | None] = contextvars.ContextVar("sos_held_reply", default=None)


def check_address(address: str) -> str:
    """``address`` if it is ``agent:<name>`` or ``sos:channel:<name>``, else SOS-4005."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        raise bad_address("address", address, pattern=ADDRESS_PATTERN)
    return address


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidArgument(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
            details={what: repr(value)[:200]},
        )
    return value


def _check_positive(value: float, what: str, maximum: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= maximum:
        raise InvalidArgument(f"{what} must be a number in (0, {maximum}], got {value!r}", details={what: value})
    return float(value)


def split_message(message: Message, limits: BusLimits) -> list[ChunkMessage]:
    """The ``chunk`` messages that carry ``message``, ``limits.chunk_data_bytes`` of its JSON each, with the
    SHA-256 of the whole; chunk message ids derive from its ``message_id``. Pure: the kernel and the remote client
    cut the same chunks."""
    data = message.to_json()
    digest = hashlib.sha256(data).hexdigest()
    step = limits.chunk_data_bytes
    total = max(1, math.ceil(len(data) / step))
    group = uuid.UUID(message.message_id)
    return [
        ChunkMessage(
            source=message.source,
            target=message.target,
            message_id=str(uuid.uuid5(group, str(seq))),
            trace_id=message.trace_id,
            payload=ChunkPayload(
                group_id=message.message_id,
                seq=seq,
                total=total,
                sha256=digest,
                size_bytes=len(data),
                data=base64.b64encode(data[seq * step : (seq + 1) * step]).decode(),
                inner_type=message.type,
            ),
        )
        for seq in range(total)
    ]


def _chunk_limit(part: ChunkPayload, name: str, value: int, maximum: int) -> None:
    if value > maximum:
        raise LimitExceeded(
            f"chunk {part.seq} of {part.group_id}: {value} is over {name}={maximum}",
            details={"limit": name, "max": maximum, "size": value, "group_id": part.group_id},
        )


_FIXED_VALUES = (str, int, float, bool, bytes, type(None), datetime, date, timedelta, Decimal, uuid.UUID, Enum)
_FIXED_TYPES = frozenset(_FIXED_VALUES)  # exact types first: isinstance over the tuple is slow for a model
_FIXED_MARKERS = (AwareDatetime, NaiveDatetime)  # pydantic's datetime annotations: the value is a datetime
_open_fields: dict[type[BaseModel], tuple[str, ...] | None] = {}


def _fixed(value: object) -> bool:
    """Whether ``value`` cannot change once validated: a frozen model of such values, a tuple of them, or a scalar.

    A message that passes is handed to every delivery and history read as the one object the bus validated (by a
    store that keeps objects); one holding a dict or list (``headers``, label lists) is parsed per delivery, so
    no consumer can change what another receives.
    """
    if type(value) in _FIXED_TYPES:
        return True
    if isinstance(value, BaseModel):
        names = _model_open_fields(type(value))
        if names is None or value.model_extra:
            return False
        for name in names:
            field = getattr(value, name)
            if type(field) not in _FIXED_TYPES and not _fixed(field):
                return False
        return True
    if isinstance(value, tuple | frozenset):
        return all(_fixed(v) for v in value)
    return isinstance(value, _FIXED_VALUES)


def _model_open_fields(cls: type[BaseModel]) -> tuple[str, ...] | None:
    """The fields of ``cls`` whose type admits a value that could change (None: ``cls`` is not frozen); per class,
    once, so :func:`_fixed` reads only those."""
    if cls not in _open_fields:
        frozen = bool(cls.model_config.get("frozen"))
        fields = cls.model_fields.items()
        _open_fields[cls] = tuple(n for n, f in fields if not _fixed_type(f.annotation)) if frozen else None
    return _open_fields[cls]


def _fixed_type(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _fixed_type(get_args(annotation)[0])
    if origin is Literal:
        return True
    if origin is Union or origin is types.UnionType:
        return all(_fixed_type(arg) for arg in get_args(annotation))
    if annotation in _FIXED_MARKERS:
        return True
    return isinstance(annotation, type) and issubclass(annotation, _FIXED_VALUES)


def check_nack_delay(delay_s: float) -> float:
    """``delay_s`` if it is a finite number >= 0 (a nack's redelivery delay), else SOS-4005."""
    if not isinstance(delay_s, int | float) or isinstance(delay_s, bool) or not math.isfinite(delay_s) or delay_s < 0:
        raise InvalidArgument(f"delay_s must be a finite number >= 0, got {delay_s!r}")
    return float(delay_s)


def check_nack_reason(reason: str | None) -> str | None:
    """``reason`` if it is None or 1..``NACK_REASON_CHARS_MAX`` characters without control characters.

    SOS-4010 when longer, SOS-4005 when empty, not text or holding a control character (a reason is one line of
    status for an operator's listing; refused rather than cleaned, so what is stored is what was given).
    """
    if reason is None:
        return None
    if not isinstance(reason, str) or not reason:
        raise InvalidArgument(f"reason must be a non-empty string or None, got {type(reason).__name__}")
    if len(reason) > NACK_REASON_CHARS_MAX:
        raise LimitExceeded(
            f"a nack reason is {len(reason)} characters; at most {NACK_REASON_CHARS_MAX}",
            details={"limit": "nack_reason_chars_max", "max": NACK_REASON_CHARS_MAX, "size": len(reason)},
        )
    bad = next((i for i, ch in enumerate(reason) if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise InvalidArgument(
            f"a nack reason may not hold control characters (U+{ord(reason[bad]):04X} at {bad})",
            details={"index": bad},
        )
    return reason


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A subscription's checked arguments with their defaults filled in (see :meth:`Bus.subscribe`)."""

    address: str
    group: str
    consumer: str
    visibility_timeout_s: float
    max_deliveries: int
    prefetch: int
    start: Literal["earliest", "latest"]
    temporary: bool


def resolve_subscription(
    address: str,
    limits: BusLimits,
    *,
    group: str | None = None,
    consumer: str | None = None,
    visibility_timeout_s: float = 30.0,
    max_deliveries: int = 5,
    prefetch: int = 16,
    start: Literal["earliest", "latest"] | None = None,
) -> SubscriptionSpec:
    """Check :meth:`Bus.subscribe`'s arguments (SOS-4005 on any fault) and fill in its defaults.

    Pure: the in-process bus and the remote client both call it, so both refuse the same arguments and name
    default groups and consumers the same way.
    """
    check_address(address)
    _check_positive(visibility_timeout_s, "visibility_timeout_s", limits.visibility_timeout_s_max)
    if not isinstance(max_deliveries, int) or not 1 <= max_deliveries <= limits.max_deliveries_max:
        raise InvalidArgument(f"max_deliveries must be 1..{limits.max_deliveries_max}, got {max_deliveries!r}")
    if not isinstance(prefetch, int) or not 1 <= prefetch <= limits.prefetch_max:
        raise InvalidArgument(f"prefetch must be 1..{limits.prefetch_max}, got {prefetch!r}")
    if start not in (None, "earliest", "latest"):
        raise InvalidArgument(f"start must be 'earliest' or 'latest', got {start!r}")
    is_agent = address.startswith("agent:")
    temporary = group is None and not is_agent
    if group is None:
        group = DEFAULT_INBOX_GROUP if is_agent else f"tmp-{uuid.uuid4().hex}"
    if consumer is None:
        consumer = f"c-{uuid.uuid4().hex[:12]}"
    return SubscriptionSpec(
        address,
        _check_name(group, "group"),
        _check_name(consumer, "consumer"),
        float(visibility_timeout_s),
        max_deliveries,
        prefetch,
        start or ("earliest" if is_agent else "latest"),
        temporary,
    )


# The access rules that are not declarations (see sos_kernel.operations): they run as the guard's last step.
# A session publishes only as its own agent, whatever built the message: the bus applies an ``admit`` check to
# every parsed message (and to one reassembled from chunks); a subscription is checked when it opens.


def _admit(caller: Caller) -> Any:
    admin = caller.principal.admin

    def admit(message: Message) -> None:
        if not admin:
            caller.own("source", "source", message.source)
        caller.unreserved("source", "source", message.source)  # not even an admin speaks as the kernel

    return admit


async def _publish_rule(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> PublishReceipt:
    """Every message stored is from the caller's agent (admin: any but a reserved one)."""
    a = arguments
    return await bus._publish(a["message"], a.get("receipts", False), a.get("chunking", True), _admit(caller))


async def _publish_many_rule(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> list[PublishReceipt]:
    """Every message of the batch is from the caller's agent (admin: any but a reserved one)."""
    return await bus._publish_many(arguments["messages"], arguments.get("receipts", False), _admit(caller))


async def _reply_rule(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> PublishReceipt:
    """A reply is sent as the caller's agent; an admin token without an agent replies as the kernel does."""
    principal = caller.principal
    sender = arguments.get("source") or principal.agent
    if sender is not None:
        if not principal.admin:
            caller.own("source", "source", sender)
        caller.unreserved("source", "source", sender)
    elif not principal.admin:
        caller.deny("a token without an agent must name the reply's source")
    options = {k: v for k, v in arguments.items() if k not in ("to", "text", "source")}
    return await bus.reply(arguments["to"], arguments["text"], source=sender, **options)


async def _replay_rule(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> PublishReceipt:
    """A dead letter of the caller's own inbox or of a channel."""
    dead_letter = arguments["dead_letter"]
    if not caller.principal.admin:
        caller.own("inbox", "address", getattr(dead_letter, "address", None))
    return await bus.replay(dead_letter)


def _subscribe_rule(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> Subscription:
    """Checked when it opens (``bus:read``; the caller's own inbox or a channel), not when it is made."""
    address = arguments["address"]

    async def check() -> None:
        principal = await caller.need("bus:read")
        if not principal.admin:
            caller.own("inbox", "address", address)

    options = {k: v for k, v in arguments.items() if k != "address"}
    sub = bus._subscribe(address, check=check, **options)
    sub._caller = caller  # its deliveries' replies go through the session's guarded reply
    return sub


@service("bus")
class Bus:
    """The bus API of one tenant. Obtain it as ``kernel.bus`` or ``kernel.tenant(slug).bus``."""

    def __init__(
        self,
        store: BusStore,
        tenant: str,
        catalogue: TypeCatalogue,
        limits: BusLimits,
        *,
        closed: anyio.Event | None = None,
    ) -> None:
        self._store = store
        self._keeps_messages = store.keeps_messages
        self.tenant = tenant
        self._catalogue = catalogue
        self.limits = limits
        self._closed = closed or anyio.Event()
        self._retention = Retention(limits.retention_count_max, limits.retention_age_s, limits.dedup_window_s)
        self._chunk_quota = ChunkQuota(
            limits.chunk_ttl_s,
            limits.tenant_chunk_groups_max,
            limits.tenant_chunk_bytes_max,
            limits.agent_chunk_groups_max,
            limits.agent_chunk_bytes_max,
        )
        self._asks_pending: dict[str, int] = {}  # source -> asks waiting for a reply in this process
        self._unyielded = 0  # publishes stored since this bus last let the event loop run others
        _trace.refresh()  # a provider set before the kernel opened is used from its first publish
        self.unreadable_entries = 0
        """Entries this bus met that are not messages of its catalogue (dead-lettered or skipped by history)."""
        self.agent_status: Callable[[str], Awaitable[str | None]] | None = None
        """Set by the kernel to the registry's status lookup, so ``wake`` refuses unknown or offline agents."""
        self.events: Events | None = None
        """Set by the kernel: counts of what this bus does (for metrics)."""

    # -- publishing -----------------------------------------------------------------------------------------

    def _count(self, event: str, n: int = 1) -> None:
        if self.events is not None and n:
            self.events.emit(event, self.tenant, n)

    def _kept(self, message: Message) -> Message | None:
        """``message`` itself for a store that keeps objects, when nothing in it can change; else None."""
        return message if self._keeps_messages and _fixed(message) else None

    async def _yield_per_batch(self) -> None:
        # a publisher in a loop lets consumers of the same event loop progress, once per PUBLISHES_PER_YIELD_MAX
        # publishes: a consumer woken meanwhile then claims the batch in one wake-up instead of one per message
        self._unyielded += 1
        if self._unyielded >= PUBLISHES_PER_YIELD_MAX:
            self._unyielded = 0
            await anyio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise KernelClosed("the kernel is closed; open a new one")

    def _validate(self, message: Message | Mapping[str, Any] | bytes | str) -> tuple[Message, bytes]:
        parsed, data = self._catalogue.parse_encoded(message)
        if len(data) > self.limits.message_bytes_max and isinstance(message, bytes | str):
            data = parsed.to_json()  # text may be stored as given: size decisions are taken on the compact encoding
        if len(data) > self.limits.payload_bytes_max:
            raise LimitExceeded(
                f"message is {len(data)} bytes; the bus carries at most {self.limits.payload_bytes_max}",
                details={"limit": "payload_bytes_max", "max": self.limits.payload_bytes_max, "size": len(data)},
            )
        return parsed, data

    @operation(
        "bus:write",
        rule=_publish_rule,
        wire=Wire(errors=_PUBLISH, summary="Publish one message (idempotent by message_id)"),
    )
    async def publish(
        self,
        message: Message | Mapping[str, Any] | bytes | str,
        *,
        receipts: bool = False,
        chunking: bool = True,
    ) -> PublishReceipt:
        """Validate and store one message for its ``target``; returns where it landed.

        Idempotent by ``message_id`` among the messages of its ``source``. ``receipts=True`` asks the bus to send
        ``receipt`` messages back to the message's ``source`` when it is delivered (``delivered``), acked
        (``processed``) or dead-lettered (``rejected``). A message over ``message_bytes_max`` is chunked and
        reassembled (``chunking=False`` refuses it with SOS-4010 instead). Raises SOS-4001..4004 for bad input,
        SOS-4010 over a limit, SOS-4011 when chunks do not reassemble, SOS-6001/6030 when the engine fails.
        """
        return await self._publish(message, receipts, chunking, None)

    async def _publish(
        self,
        message: Message | Mapping[str, Any] | bytes | str,
        receipts: bool,
        chunking: bool,
        admit: Callable[[Message], None] | None,
    ) -> PublishReceipt:
        # ``admit`` sees the parsed message before anything is stored (a session's source check), so a message is
        # parsed and serialised once whoever publishes it.
        self._check_open()
        parsed, data = self._validate(message)
        if admit is not None:
            admit(parsed)
        if _trace.enabled():
            return await self._publish_traced(parsed, data, receipts, chunking, admit)
        return await self._store_one(parsed, data, receipts, chunking, admit)

    async def _publish_traced(
        self, parsed: Message, data: bytes, receipts: bool, chunking: bool, admit: Callable[[Message], None] | None
    ) -> PublishReceipt:
        # a message published inside a span carries its trace id, so its delivery can join the trace
        if parsed.trace_id is None and (trace_id := _trace.current_trace_id()) is not None:
            parsed = parsed.model_copy(update={"trace_id": trace_id})
            data = parsed.to_json()
        attributes = {"sos.tenant": self.tenant, "sos.message_id": parsed.message_id, "sos.type": parsed.type}
        with _trace.span("sos.bus.publish", attributes, trace_id=parsed.trace_id, message_id=parsed.message_id):
            return await self._store_one(parsed, data, receipts, chunking, admit)

    async def _store_one(
        self, parsed: Message, data: bytes, receipts: bool, chunking: bool, admit: Callable[[Message], None] | None
    ) -> PublishReceipt:
        if isinstance(parsed, ChunkMessage):
            return await self._accept_chunk(parsed, len(data), receipts, admit)
        chunks = 0
        if len(data) > self.limits.message_bytes_max:
            if not chunking:
                raise LimitExceeded(
                    f"message is {len(data)} bytes, over message_bytes_max={self.limits.message_bytes_max}; "
                    "publish with chunking=True to split it",
                    details={"limit": "message_bytes_max", "max": self.limits.message_bytes_max, "size": len(data)},
                )
            # Whole and checked already: stored as one entry, as its chunks would be once reassembled.
            chunks = max(1, math.ceil(len(data) / self.limits.chunk_data_bytes))
        entry = Entry(parsed.message_id, data, receipts, None, self._kept(parsed), parsed.source)
        appended = await self._store.append(self.tenant, [(parsed.target, entry)], self._retention)
        self._count("published", 0 if appended[0].duplicate else 1)
        await self._yield_per_batch()
        return PublishReceipt(parsed.message_id, parsed.target, appended[0].position, appended[0].duplicate, chunks)

    @operation(
        "bus:write",
        rule=_publish_many_rule,
        wire=Wire(errors=_PUBLISH, summary="Publish a batch, all or none (idempotent by message_id)"),
    )
    async def publish_many(
        self, messages: Sequence[Message | Mapping[str, Any] | bytes | str], *, receipts: bool = False
    ) -> list[PublishReceipt]:
        """Validate every message, then store them all in one transaction or round trip (all or none).

        Duplicates (by ``message_id``, stored before or earlier in the batch) are reported, not written. Chunk
        messages and messages over ``message_bytes_max`` are refused here (publish them one by one).
        """
        return await self._publish_many(messages, receipts, None)

    async def _publish_many(
        self,
        messages: Sequence[Message | Mapping[str, Any] | bytes | str],
        receipts: bool,
        admit: Callable[[Message], None] | None,
    ) -> list[PublishReceipt]:
        self._check_open()
        if not isinstance(messages, list | tuple):
            raise InvalidArgument(f"publish_many takes a list of messages, got {type(messages).__name__}")
        if len(messages) > self.limits.batch_max:
            raise LimitExceeded(
                f"batch of {len(messages)} messages; publish_many takes at most {self.limits.batch_max}",
                details={"limit": "batch_max", "max": self.limits.batch_max, "size": len(messages)},
            )
        items: list[tuple[str, Entry]] = []
        for index, raw in enumerate(messages):
            try:
                parsed, data = self._validate(raw)
            except SOSError as exc:
                exc.details.setdefault("index", index)
                raise
            if admit is not None:
                admit(parsed)
            if isinstance(parsed, ChunkMessage) or len(data) > self.limits.message_bytes_max:
                raise LimitExceeded(
                    f"message {index} is a chunk or over message_bytes_max; publish it on its own",
                    details={"limit": "message_bytes_max", "index": index, "size": len(data)},
                )
            entry = Entry(parsed.message_id, data, receipts, None, self._kept(parsed), parsed.source)
            items.append((parsed.target, entry))
        if not items:
            return []
        appended = await self._store.append(self.tenant, items, self._retention)
        self._count("published", sum(not a.duplicate for a in appended))
        await anyio.lowlevel.checkpoint()  # as in _publish: consumers of the same event loop progress
        return [
            PublishReceipt(entry.message_id, address, a.position, a.duplicate)
            for (address, entry), a in zip(items, appended, strict=True)
        ]

    @operation("bus:read", local=True)
    def split(self, message: Message) -> list[ChunkMessage]:
        """The ``chunk`` messages that carry ``message`` (see :func:`split_message`), cut by this bus's limits.

        Producers behind a size-limited transport publish these one by one; the bus reassembles them.
        """
        return split_message(message, self.limits)

    async def _accept_chunk(
        self, chunk: ChunkMessage, size: int, receipts: bool, admit: Callable[[Message], None] | None
    ) -> PublishReceipt:
        part = chunk.payload
        raw = self._chunk_data(chunk, size)
        known = await self._store.lookup(self.tenant, chunk.source, part.group_id)  # the whole is the sender's own
        if known is not None:
            return PublishReceipt(part.group_id, chunk.target, known.position, True)
        meta = f"{part.total} {part.size_bytes} {part.sha256} {chunk.target} {part.inner_type or ''}"
        put = await self._store.put_chunk(
            self.tenant,
            ChunkPart(chunk.source, part.group_id, meta, part.total, part.size_bytes, part.seq, raw),
            self._chunk_quota,
        )
        if put.refused is not None:
            raise self._chunk_refusal(chunk, put.refused)
        if put.parts is None:
            return PublishReceipt(chunk.message_id, chunk.target, None, False)
        whole = self._reassemble(chunk, put.parts)
        self._admit_whole(chunk, whole, admit)
        appended = await self._store.append(
            self.tenant,
            [(whole.target, Entry(whole.message_id, whole.to_json(), receipts, None, self._kept(whole), whole.source))],
            self._retention,
        )
        self._count("published", 0 if appended[0].duplicate else 1)
        return PublishReceipt(whole.message_id, whole.target, appended[0].position, appended[0].duplicate)

    def _chunk_data(self, chunk: ChunkMessage, size: int) -> bytes:
        """A part's decoded data, once the part is within every chunk limit (SOS-4010, SOS-4011 if not base64)."""
        part, limits = chunk.payload, self.limits
        _chunk_limit(part, "message_bytes_max", size, limits.message_bytes_max)
        _chunk_limit(part, "payload_bytes_max", part.size_bytes, limits.payload_bytes_max)
        _chunk_limit(part, "chunk_parts_max", part.total, limits.chunk_parts_max)
        try:
            raw = base64.b64decode(part.data, validate=True)
        except ValueError:
            raise ChunkIntegrityError("chunk data is not valid base64", details={"seq": part.seq}) from None
        _chunk_limit(part, "chunk_part_bytes_max", len(raw), limits.chunk_part_bytes_max)
        return raw

    @staticmethod
    def _chunk_refusal(chunk: ChunkMessage, refused: str) -> SOSError:
        group = chunk.payload.group_id
        if refused == "conflict":
            return ChunkIntegrityError(
                f"chunk {chunk.payload.seq} of {group} does not match the parts already received (total, size, "
                "SHA-256, target or type); resend every part under a new message_id",
                details={"group_id": group},
            )
        if refused == "size_bytes":
            return ChunkIntegrityError(
                f"the parts of {group} outgrow its size_bytes={chunk.payload.size_bytes}",
                details={"group_id": group, "expected_size": chunk.payload.size_bytes},
            )
        return LimitExceeded(
            f"{chunk.source} may not open another unfinished chunk group: {refused} reached; finish or wait for "
            "the groups pending to complete or expire",
            details={"limit": refused, "group_id": group},
        )

    def _reassemble(self, last: ChunkMessage, parts: list[bytes]) -> Message:
        data = b"".join(parts)
        info = last.payload
        if len(data) != info.size_bytes or hashlib.sha256(data).hexdigest() != info.sha256:
            raise ChunkIntegrityError(
                f"chunks of {info.group_id} do not match their SHA-256 or size; resend every part",
                details={"group_id": info.group_id, "size": len(data), "expected_size": info.size_bytes},
            )
        whole, _ = self._validate(data)
        if whole.message_id != info.group_id or whole.target != last.target or isinstance(whole, ChunkMessage):
            raise ChunkIntegrityError(
                "reassembled message does not match its chunk group (message_id, target or type)",
                details={"group_id": info.group_id},
            )
        return whole

    @staticmethod
    def _admit_whole(last: ChunkMessage, whole: Message, admit: Callable[[Message], None] | None) -> None:
        # The publisher's checks apply to the message delivered, not only to the envelopes that carried it.
        if whole.source != last.source:
            raise Forbidden(
                f"chunks sent by {last.source!r} carry a message from {whole.source!r}; "
                "a chunk group carries only its sender's own message",
                details={"group_id": last.payload.group_id, "source": whole.source, "chunk_source": last.source},
            )
        if admit is not None:
            admit(whole)

    # -- helpers for the core types ---------------------------------------------------------------------------

    @operation(
        "bus:write",
        own={"source": "source"},
        wire=Wire(keyed=True, errors=_PUBLISH, summary="Send text from the session's agent"),
    )
    async def send(
        self,
        source: str,
        target: str,
        text: str,
        *,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
        reply_to: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        trace_id: str | None = None,
        receipts: bool = False,
    ) -> PublishReceipt:
        """Publish a ``send`` message from ``source`` to ``target``."""
        message = build_message(
            SendMessage,
            {
                "source": source,
                "target": target,
                "payload": {"text": text, "content_type": content_type},
                "reply_to": reply_to,
                "correlation_id": correlation_id,
                "headers": dict(headers) if headers is not None else None,
                "trace_id": trace_id,
            },
        )
        return await self.publish(message, receipts=receipts)

    @operation(
        "bus:write", own={"source": "source"}, wire=Wire(keyed=True, errors=_PUBLISH, summary="Announce an agent")
    )
    async def announce(
        self, source: str, text: str | None = None, *, target: str = "sos:channel:global", **context: Any
    ) -> PublishReceipt:
        """Publish an ``announce`` (``context`` may carry ``tool``, ``pid``, ``tty``, ``cwd``)."""
        message = build_message(
            AnnounceMessage,
            {
                "source": source,
                "target": target,
                "payload": {k: v for k, v in {"text": text, **context}.items() if v is not None},
            },
        )
        return await self.publish(message)

    @operation(
        "bus:write",
        own={"source": "source"},
        wire=Wire(keyed=True, errors=(*_PUBLISH, AgentOffline), summary="Wake a registered agent"),
    )
    async def wake(
        self,
        source: str,
        target: str,
        text: str,
        *,
        priority: Literal["critical", "high", "normal", "low"] = "normal",
        ref_message_id: str | None = None,
    ) -> PublishReceipt:
        """Publish a ``wake`` for ``target``: SOS-6002 if the agent is not registered, SOS-6003 if it is
        offline (heartbeat expired)."""
        if self.agent_status is not None and check_address(target).startswith("agent:"):
            status = await self.agent_status(target)
            if status is None:
                raise AgentNotFound(f"{target} is not registered; it cannot be woken", details={"agent": target})
            if status == "offline":
                raise AgentOffline(f"{target} is offline (heartbeat expired)", details={"agent": target})
        message = build_message(
            WakeMessage,
            {
                "source": source,
                "target": target,
                "payload": {"text": text},
                "priority": priority,
                "ref_message_id": ref_message_id,
            },
        )
        return await self.publish(message)

    @operation(
        "bus:write",
        own={"source": "source"},
        wire=Wire(
            keyed=True,
            wait="timeout_s",
            errors=(*_PUBLISH, AskTimeout, AgentNotFound),
            summary="Ask and wait for the reply message",
        ),
    )
    async def ask(
        self,
        source: str,
        target: str,
        question: str,
        *,
        timeout_s: float = 30.0,
        correlation_id: str | None = None,
    ) -> SendMessage:
        """Publish an ``ask`` and wait for the reply; returns the reply message.

        The reply is correlated by ``reply_to`` (the ask's ``message_id``) or ``correlation_id`` on a private
        reply channel. Raises :class:`~sos_kernel.errors.AskTimeout` (SOS-6004) after ``timeout_s``, and
        :class:`~sos_kernel.errors.LimitExceeded` (SOS-4010) at once, with nothing published, when ``source`` or the
        tenant already has ``agent_asks_pending_max`` / ``tenant_asks_pending_max`` asks waiting.
        """
        _check_positive(timeout_s, "timeout_s", 3600)
        channel = REPLY_CHANNEL_PREFIX + secrets.token_hex(16)
        message_id = new_message_id()
        message = build_message(
            AskMessage,
            {
                "source": source,
                "target": target,
                "payload": {"question": question, "reply_channel": channel},
                "timeout_s": max(1, math.ceil(timeout_s)),
                "message_id": message_id,
                "correlation_id": correlation_id or message_id,  # the ask's own id: one fresh id, not two
            },
        )
        with self._ask_slot(message.source):
            reply: SendMessage | None = None
            try:
                await self._publish(message, False, True, None)  # publish's own path, one await fewer
                reply = await self._await_reply(message, channel, timeout_s)
            finally:
                await self._end_reply_channel(channel, reply is not None)
        if reply is None:
            raise AskTimeout(
                f"no reply from {target} within {timeout_s} s",
                details={"message_id": message.message_id, "target": target, "timeout_s": timeout_s},
            )
        return reply

    async def _end_reply_channel(self, channel: str, answered: bool) -> None:
        """Forget an ask's reply channel, even when the ask was cancelled: the channel is the ask's alone."""
        if self._store.ends_reply_channels_at_once:  # it never suspends, so a cancelled task still completes it
            await self._store.end_reply_channel(self.tenant, channel, answered)
            return
        with anyio.CancelScope(shield=True):
            await self._store.end_reply_channel(self.tenant, channel, answered)

    @contextlib.contextmanager
    def _ask_slot(self, source: str) -> Iterator[None]:
        """Hold one pending-ask place of ``source`` and of the tenant while the ask waits."""
        pending = self._asks_pending
        for name, used in (
            ("agent_asks_pending_max", pending.get(source, 0)),
            ("tenant_asks_pending_max", sum(pending.values())),
        ):
            maximum = getattr(self.limits, name)
            if used >= maximum:
                raise LimitExceeded(
                    f"{used} asks are already waiting for a reply; {name}={maximum}",
                    details={"limit": name, "max": maximum, "source": source},
                )
        pending[source] = pending.get(source, 0) + 1
        try:
            yield
        finally:
            pending[source] -= 1
            if not pending[source]:
                del pending[source]

    async def _await_reply(self, ask: AskMessage, channel: str, timeout_s: float) -> SendMessage | None:
        """The reply to ``ask`` on ``channel``, or None once ``timeout_s`` passed without one.

        A store whose ``read_wait`` returns within its timeout is given what is left of ``timeout_s`` per read, so
        an ask answered while it waits enters no cancel scope; any other store's reads run in one timeout scope.
        """
        if self._store.read_wait_bounded:
            return await self._read_reply(ask, channel, anyio.current_time() + timeout_s)
        with anyio.move_on_after(timeout_s):
            return await self._read_reply(ask, channel, math.inf)
        return None

    async def _read_reply(self, ask: AskMessage, channel: str, deadline: float) -> SendMessage | None:
        # the channel is new: reading it from its start misses nothing, with no empty read before the first wait
        after: str | None = None
        while True:
            wait_s = WAIT_CAP_S if deadline == math.inf else min(WAIT_CAP_S, deadline - anyio.current_time())
            for entry in await self._store.read_wait(self.tenant, channel, after, 100, max(0.0, wait_s)):
                after = entry.position
                reply = self._readable(channel, entry.position, entry.data, entry.message)
                if isinstance(reply, SendMessage) and (
                    reply.reply_to == ask.message_id or reply.correlation_id == ask.correlation_id
                ):
                    return reply
            if wait_s <= 0:  # read once more at the deadline: a reply stored by then is still taken
                return None

    @operation("bus:write", rule=_reply_rule, wire=Wire(keyed=True, errors=_PUBLISH, summary="Reply to a message"))
    async def reply(
        self,
        to: Message,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt:
        """Answer ``to`` (an ``ask`` goes to its reply channel, anything else to its source), threaded by id."""
        held = _HELD_REPLY.get()
        if held is not None and held.sub._bus is self and held.delivery.message is to:
            _HELD_REPLY.set(None)  # one reply per delivery: a nested reply publishes as usual
            receipt = await self._reply_acked(to, text, source, content_type, held.sub, held.delivery)
            if receipt is None:
                held.unheld = True
                raise InvalidArgument(UNHELD_REPLY)
            held.acked = True
            return receipt
        return await self._publish(self._reply_message(to, text, source, content_type), False, True, None)

    @staticmethod
    def _reply_message(
        to: Message, text: str, source: str | None, content_type: Literal["text/plain", "text/markdown"]
    ) -> SendMessage:
        """The ``send`` answering ``to``: to its reply channel (an ``ask``) or its source, threaded by id."""
        if not isinstance(to, Message):
            raise InvalidArgument(f"reply answers a message; got {type(to).__name__}")
        return build_message(
            SendMessage,
            {
                "source": source or (to.target if to.target.startswith("agent:") else KERNEL_SOURCE),
                "target": to.payload.reply_channel if isinstance(to, AskMessage) else to.source,
                "payload": {"text": text, "content_type": content_type},
                "reply_to": to.message_id,
                "correlation_id": getattr(to, "correlation_id", None),
            },
        )

    async def _reply_acked(
        self,
        to: Message,
        text: str,
        source: str | None,
        content_type: Literal["text/plain", "text/markdown"],
        sub: Subscription,
        delivery: Delivery,
    ) -> PublishReceipt | None:
        """Publish the reply to ``to`` and ack ``delivery`` of ``sub`` in one store step (``BusStore.append_ack``):
        both, or neither. None, with no reply stored, when the delivery is no longer held (acked, or handed out
        again after its visibility timeout)."""
        self._check_open()
        parsed, data = self._validate(self._reply_message(to, text, source, content_type))
        if not _trace.enabled():
            return await self._store_reply(parsed, data, sub, delivery)
        # a reply sent inside a span carries its trace id, as a traced publish does
        if parsed.trace_id is None and (trace_id := _trace.current_trace_id()) is not None:
            parsed = parsed.model_copy(update={"trace_id": trace_id})
            data = parsed.to_json()
        attributes = {"sos.tenant": self.tenant, "sos.message_id": parsed.message_id, "sos.type": parsed.type}
        with _trace.span("sos.bus.publish", attributes, trace_id=parsed.trace_id, message_id=parsed.message_id):
            return await self._store_reply(parsed, data, sub, delivery)

    async def _store_reply(
        self, parsed: Message, data: bytes, sub: Subscription, delivery: Delivery
    ) -> PublishReceipt | None:
        entry = Entry(parsed.message_id, data, False, None, self._kept(parsed), parsed.source)
        appended, acked = await self._store.append_ack(
            self.tenant,
            [(parsed.target, entry)],
            self._retention,
            sub.address,
            sub.group,
            delivery.position,
            delivery.attempt,
        )
        if not acked:
            return None
        self._count("published", 0 if appended[0].duplicate else 1)
        chunks = (
            max(1, math.ceil(len(data) / self.limits.chunk_data_bytes))
            if len(data) > self.limits.message_bytes_max
            else 0
        )
        return PublishReceipt(parsed.message_id, parsed.target, appended[0].position, appended[0].duplicate, chunks)

    # -- consuming --------------------------------------------------------------------------------------------

    @operation("bus:read", local=True, rule=_subscribe_rule)
    def subscribe(
        self,
        address: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 5,
        prefetch: int = 16,
        start: Literal["earliest", "latest"] | None = None,
    ) -> Subscription:
        """A subscription to ``address``; use it as ``async with bus.subscribe(...) as sub: async for d in sub``.

        ``group`` defaults to a shared ``"inbox"`` group for agent addresses (a queue) and to a private,
        temporary group for channels (fan-out; deleted when the subscription closes). A new group starts at the
        earliest retained message (``start="earliest"``, the default for agents) or at the current end
        (``"latest"``, the default for channels). See the module docstring for delivery guarantees.
        """
        return self._subscribe(
            address,
            check=None,
            group=group,
            consumer=consumer,
            visibility_timeout_s=visibility_timeout_s,
            max_deliveries=max_deliveries,
            prefetch=prefetch,
            start=start,
        )

    def _subscribe(self, address: str, *, check: Callable[[], Awaitable[None]] | None, **options: Any) -> Subscription:
        # ``check`` runs when the subscription opens (a session's access rule), before the group is touched.
        spec = resolve_subscription(address, self.limits, **options)
        return Subscription(
            self,
            spec.address,
            spec.group,
            spec.consumer,
            visibility_timeout_s=spec.visibility_timeout_s,
            max_deliveries=spec.max_deliveries,
            prefetch=spec.prefetch,
            start=spec.start,
            temporary=spec.temporary,
            check=check,
        )

    @operation(
        "bus:read", own={"address": "inbox"}, wire=Wire("GET", summary="Retained messages of an address, oldest first")
    )
    async def history(self, address: str, *, after: str | None = None, limit: int = 100) -> list[Message]:
        """Retained messages of ``address``, oldest first, without consuming them (replay).

        ``after`` is a position from a :class:`PublishReceipt` or a ``message_id`` already seen; the page starts
        after it. An id stands for its earliest entry on ``address`` that is retained or still in its dedup window,
        whatever its age or source (an id two sources used stands for the earlier entry, even once its window
        closed: nothing is skipped, the later one may be read again); an id with no such entry is refused
        (SOS-4005), as is one a store would look for past ``LOCATE_SCAN_MAX`` entries: resume after a position
        then. Dead-letter replays are not repeated here.
        """
        return [m for _, m in await self.history_entries(address, after=after, limit=limit)]

    @operation(
        "bus:read",
        own={"address": "inbox"},
        wire=Wire("GET", summary="Retained messages of an address with their positions, oldest first"),
    )
    async def history_entries(
        self, address: str, *, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, Message]]:
        """Like :meth:`history` with each message's position, for paging."""
        self._check_open()
        check_address(address)
        if not isinstance(limit, int) or not 1 <= limit <= self.limits.history_limit_max:
            raise InvalidArgument(f"limit must be 1..{self.limits.history_limit_max}, got {limit!r}")
        cursor = await self._cursor(address, after)
        out: list[tuple[str, Message]] = []
        while len(out) < limit:
            wanted = limit - len(out)
            entries = await self._store.history(self.tenant, address, cursor, wanted)
            for entry in entries:
                message = self._readable(address, entry.position, entry.data, entry.message)
                if message is not None:
                    out.append((entry.position, message))
            if len(entries) < wanted:
                break
            cursor = entries[-1].position  # a page short of unreadable entries reads on
        return out

    def _readable(self, address: str, position: str, data: bytes, kept: object = None) -> Message | None:
        """The message an entry holds (``kept``: the object the store kept, validated when it was published);
        None (counted and logged) when it is not one of the catalogue."""
        if isinstance(kept, Message):
            return kept
        try:
            return self._catalogue.parse(data)
        except SOSError as exc:
            self._note_unreadable(address, position, data, exc)
            return None

    def _note_unreadable(self, address: str, position: str, data: bytes, exc: SOSError) -> str:
        self.unreadable_entries += 1
        reason = f"unreadable entry ({len(data)} bytes): {exc.code} {exc.message}"[:1000]
        log.warning("bus %s %s@%s: %s", self.tenant, address, position, reason)
        return reason

    async def _cursor(self, address: str, after: str | None) -> str | None:
        # a message id stands for its earliest retained entry on this address, whoever sent it: resuming never skips
        if after is None:
            return None
        if not isinstance(after, str) or not after or len(after) > 64:
            raise InvalidArgument(f"after must be a position or a message_id, got {after!r}")
        if _UUID_RE.fullmatch(after):
            known = await self._store.locate(self.tenant, address, after)
            if known is None:
                raise InvalidArgument(
                    f"message {after} is not on {address}: no entry of it is retained there"
                    " (nor in this bus's dedup window)",
                    details={"after": after, "address": address},
                )
            return known
        return after

    @operation("bus:read", own={"address": "inbox"}, wire=Wire("GET", summary="Messages a group gave up on"))
    async def dead_letters(self, address: str, *, group: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The messages ``group`` (default: the address's default group) gave up on, oldest first."""
        self._check_open()
        check_address(address)
        group = _check_name(group or DEFAULT_INBOX_GROUP, "group")
        if not isinstance(limit, int) or not 1 <= limit <= self.limits.history_limit_max:
            raise InvalidArgument(f"limit must be 1..{self.limits.history_limit_max}, got {limit!r}")
        stored = await self._store.dead_letters(self.tenant, address, group, limit)
        out = []
        for d in stored:
            try:
                message: Message | None = self._catalogue.parse(d.data)
                raw = None
            except SOSError:
                message, raw = None, capped_raw(d.data).decode("utf-8", errors="replace")
            out.append(
                DeadLetter(
                    d.id, d.address, d.group, d.position, message, d.reason, d.attempts, DeadLetter.at(d.dead_at), raw
                )
            )
        return out

    @operation(
        "bus:read",
        own={"address": "inbox"},
        wire=Wire("GET", summary="How many deliveries a group handed out and has not settled"),
    )
    async def pending(self, address: str, *, group: str | None = None) -> int:
        """How many deliveries ``group`` (default: the address's default group) handed out and has not settled:
        in flight, or nacked and waiting to come back (0 for a group that does not exist).

        Acked and dead-lettered deliveries are not counted. A session reads its own inbox's groups and any
        channel's (``bus:read``, as for ``dead_letters``); an admin token any address of its tenant.
        """
        self._check_open()
        check_address(address)
        group = _check_name(group or DEFAULT_INBOX_GROUP, "group")
        return await self._store.pending_count(self.tenant, address, group)

    @operation(
        "bus:write",
        rule=_replay_rule,
        wire=Wire(keyed=True, errors=(NotFound,), summary="Deliver a dead letter again"),
    )
    async def replay(self, dead_letter: DeadLetter) -> PublishReceipt:
        """Deliver a dead letter again, to its group only, with fresh attempts; it leaves the dead letters.

        Raises :class:`~sos_kernel.errors.NotFound` (SOS-4040) if it was already replayed.
        """
        from ..errors import NotFound

        self._check_open()
        if dead_letter.message is None:
            raise InvalidArgument(
                f"dead letter {dead_letter.id} is an unreadable entry, not a message; it cannot be replayed",
                details={"id": dead_letter.id},
            )
        appended = await self._store.revive(self.tenant, dead_letter.address, dead_letter.group, dead_letter.id)
        if appended is None:
            raise NotFound(f"dead letter {dead_letter.id} is gone (already replayed?)", details={"id": dead_letter.id})
        return PublishReceipt(dead_letter.message.message_id, dead_letter.address, appended.position, False)

    # -- receipts ---------------------------------------------------------------------------------------------

    async def _emit_receipt(
        self,
        original: Message,
        kind: Literal["delivered", "processed", "rejected"],
        sub: Subscription,
        attempt: int,
        reason: str | None = None,
    ) -> None:
        if isinstance(original, ReceiptMessage) or not original.source.startswith("agent:"):
            return  # receipts never ask for receipts
        consumer = sub.address if sub.address.startswith("agent:") else None
        receipt = ReceiptMessage(
            source=consumer or KERNEL_SOURCE,
            target=original.source,
            trace_id=original.trace_id,
            payload=ReceiptPayload(
                message_id=original.message_id,
                kind=kind,
                reason=reason,
                consumer=consumer,
                group=sub.group,
                attempt=attempt,
            ),
        )
        entry = Entry(receipt.message_id, receipt.to_json(), False, None, self._kept(receipt), receipt.source)
        await self._store.append(self.tenant, [(receipt.target, entry)], self._retention)

    # -- used by Subscription -------------------------------------------------------------------------------

    @property
    def store(self) -> BusStore:
        """The store under this bus (for diagnostics and tests)."""
        return self._store

    @property
    def catalogue(self) -> TypeCatalogue:
        """The message types this bus accepts."""
        return self._catalogue

    @property
    def retention(self) -> Retention:
        """What the store keeps of each address (for a service that appends through :attr:`store` in its own step)."""
        return self._retention

    def count_appended(self, count: int) -> None:
        """Count, for metrics, ``count`` new entries another service's step appended through :attr:`store`."""
        self._count("published", count)

    def _closed_event(self) -> anyio.Event:
        return self._closed

    async def _append_raw(self, items: Iterable[tuple[str, Entry]]) -> list[Appended]:
        return await self._store.append(self.tenant, list(items), self._retention)


class Subscription:
    """A consumer on one address and group. Async-iterable over :class:`Delivery`; close it (or leave the
    ``async with``) to stop. A temporary channel group is deleted on close; pending deliveries of a named group
    stay pending and are redelivered to the group after their visibility timeout.
    """

    def __init__(
        self,
        bus: Bus,
        address: str,
        group: str,
        consumer: str,
        *,
        visibility_timeout_s: float,
        max_deliveries: int,
        prefetch: int,
        start: Literal["earliest", "latest"],
        temporary: bool,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._bus = bus
        self._check = check
        self._address = address
        self._group = group
        self._consumer = consumer
        self.visibility_timeout_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.prefetch = prefetch
        self.start = start
        self.temporary = temporary
        self._buffer: list[Delivery] = []
        self._in_flight = 0
        self._opened = False
        self._closed = False
        self._settled: anyio.Event | None = None  # made only while _fill waits for room
        self._unreachable_since: float | None = None
        self._reconnects = 0
        self._caller: Caller | None = None  # a session's subscription: whose rules its deliveries' replies follow

    @property
    def address(self) -> str:
        """The address consumed (fixed: the subscription's access was checked for it)."""
        return self._address

    @property
    def group(self) -> str:
        """The consumer group."""
        return self._group

    @property
    def consumer(self) -> str:
        """This consumer's name within the group."""
        return self._consumer

    @property
    def _visibility_ms(self) -> int:
        return max(1, int(self.visibility_timeout_s * 1000))

    async def open(self) -> Subscription:
        """Check access (a session's subscription), then create the group if needed. Called by ``async with``."""
        self._bus._check_open()
        if self._check is not None:
            await self._check()
        await self._bus.store.ensure_group(self._bus.tenant, self.address, self.group, self.start)
        self._opened = True
        return self

    async def aclose(self) -> None:
        """Stop consuming; buffered, unhanded deliveries are given back at once. Idempotent."""
        if self._closed:
            return
        self._closed = True
        store, tenant = self._bus.store, self._bus.tenant
        with anyio.CancelScope(shield=True):
            if self.temporary:
                await store.delete_group(tenant, self.address, self.group)
                return
            for delivery in self._buffer:
                await store.nack(
                    tenant, self.address, self.group, delivery.position, delivery.attempt, 0, self._visibility_ms
                )
            self._buffer.clear()

    async def __aenter__(self) -> Subscription:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.receive()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def receive(self, timeout_s: float | None = None) -> Delivery | None:
        """The next delivery; None when ``timeout_s`` passes first or the subscription closes. A call that returns
        None has let the event loop run other tasks at least once (``receive(timeout_s=0)`` in a loop starves none)."""
        if not self._opened:
            raise InvalidArgument("use the subscription inside 'async with bus.subscribe(...)'")
        deadline = None if timeout_s is None else anyio.current_time() + timeout_s
        while not self._closed:
            if self._bus._closed_event().is_set():
                raise KernelClosed("the kernel was closed while subscribed")
            if self._buffer:
                return self._buffer.pop(0)
            remaining = WAIT_CAP_S if deadline is None else min(WAIT_CAP_S, deadline - anyio.current_time())
            try:
                if await self._fill(max(0.0, min(remaining, self.visibility_timeout_s / 4 or remaining))):
                    continue
                if deadline is not None and anyio.current_time() >= deadline:
                    break
            except BackendUnavailable as exc:
                await self._ride_out(exc, deadline)
                if deadline is not None and anyio.current_time() >= deadline:
                    break
        # a store that answers without awaiting (SQLite inline) must not let a polling loop starve the event loop
        await anyio.lowlevel.checkpoint()
        return None

    async def _ride_out(self, exc: BackendUnavailable, deadline: float | None) -> None:
        # A store restart (SOS-6030) is waited out with backoff; past reconnect_s_max of failures it is raised.
        now = anyio.current_time()
        if self._unreachable_since is None:
            self._unreachable_since, self._reconnects = now, 0
        if now - self._unreachable_since >= self._bus.limits.reconnect_s_max:
            raise exc
        delay = min(RECONNECT_BACKOFF_MAX_S, RECONNECT_BACKOFF_S * 2**self._reconnects)
        self._reconnects += 1
        await anyio.sleep(delay if deadline is None else max(0.0, min(delay, deadline - now)))

    async def _fill(self, timeout_s: float) -> bool:
        # One call claims or, with nothing there, waits for news: an engine that blocks in its claim wakes one
        # consumer per entry instead of every consumer of the group.
        room = min(self.prefetch, self._bus.limits.in_flight_max - self._in_flight)
        if room <= 0:
            if self._settled is None:
                self._settled = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._settled.wait()
            return False
        claimed = await self._bus.store.claim_wait(
            self._bus.tenant, self.address, self.group, self.consumer, room, self._visibility_ms, timeout_s
        )
        self._unreachable_since = None  # the store answered
        for item in claimed:
            await self._admit(item.position, item.data, item.attempt, item.receipts, item.message)
        return bool(claimed)

    async def _admit(self, position: str, data: bytes, attempt: int, receipts: bool, kept: object) -> None:
        store, tenant = self._bus.store, self._bus.tenant
        try:
            # validated once, at publish: a kept object is that message (see Bus._kept)
            message = kept if isinstance(kept, Message) else self._bus.catalogue.parse(data)
        except SOSError as exc:
            # dead at once, whatever max_deliveries says: no retry makes it readable
            reason = self._bus._note_unreadable(self.address, position, data, exc)
            buried = await store.bury(tenant, self.address, self.group, position, reason, attempt, capped_raw(data))
            self._bus._count("dead_lettered", int(buried))
            return
        if attempt > self.max_deliveries:
            reason = await self._dead_reason(position, attempt - 1)
            buried = await store.bury(tenant, self.address, self.group, position, reason, attempt - 1)
            self._bus._count("dead_lettered", int(buried))
            if buried and receipts:
                await self._bus._emit_receipt(message, "rejected", self, attempt - 1, reason)
            return
        self._bus._count("delivered")
        if message.trace_id is not None and _trace.enabled():
            self._trace_delivery(message, attempt)
        self._in_flight += 1
        self._buffer.append(Delivery(self, message, position, attempt, receipts))
        if receipts:
            await self._bus._emit_receipt(message, "delivered", self, attempt)

    async def _dead_reason(self, position: str, attempts: int) -> str:
        # the last delivery's own nack reason as given; an earlier delivery's is named as such
        kept = await self._bus.store.nack_reason(self._bus.tenant, self.address, self.group, position)
        if kept is not None and kept.attempt == attempts:
            return kept.reason
        generic = f"not acked after {self.max_deliveries} deliveries"
        return generic if kept is None else f"{generic}; delivery {kept.attempt} was nacked: {kept.reason}"

    def _trace_delivery(self, message: Message, attempt: int) -> None:
        attributes: dict[str, str | int | bool | None] = {
            "sos.tenant": self._bus.tenant,
            "sos.message_id": message.message_id,
            "sos.type": message.type,
            "sos.address": self.address,
            "sos.group": self.group,
            "sos.attempt": attempt,
        }
        with _trace.span("sos.bus.deliver", attributes, trace_id=message.trace_id, message_id=message.message_id):
            pass  # the hand-out is one instant; the consumer's own spans follow in the same trace

    def _release(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    async def _ack(self, delivery: Delivery) -> bool:
        done = await self._bus.store.ack(
            self._bus.tenant, self.address, self.group, delivery.position, delivery.attempt
        )
        self._release()  # only once settled: a failed ack leaves the delivery in flight, to settle again
        self._bus._count("acked", int(done))
        if done and delivery.receipts:
            await self._bus._emit_receipt(delivery.message, "processed", self, delivery.attempt)
        return done

    async def _reply(
        self, delivery: Delivery, text: str, source: str | None, content_type: Literal["text/plain", "text/markdown"]
    ) -> PublishReceipt | None:
        if self._caller is not None:
            return await self._guarded_reply(self._caller, delivery, text, source, content_type)
        stored = await self._bus._reply_acked(delivery.message, text, source, content_type, self, delivery)
        return await self._replied(delivery, stored)

    async def _guarded_reply(
        self,
        caller: Caller,
        delivery: Delivery,
        text: str,
        source: str | None,
        content_type: Literal["text/plain", "text/markdown"],
    ) -> PublishReceipt | None:
        """A session's: the guarded ``bus.reply`` (scope, source, policy, audit), whose trusted call stores the reply
        and acks the delivery in one store step (see :class:`_HeldReply`)."""
        held = _HeldReply(self, delivery)
        token = _HELD_REPLY.set(held)
        try:
            receipt: PublishReceipt = await guard(self._bus, caller).reply(
                delivery.message, text, source=source, content_type=content_type
            )
        except InvalidArgument:
            if held.unheld:
                return await self._replied(delivery, None)
            raise
        finally:
            _HELD_REPLY.reset(token)
        if not held.acked:  # answered without the trusted reply's step (none today): ack after it, as before
            await self._ack(delivery)
            return receipt
        return await self._replied(delivery, receipt)

    async def _replied(self, delivery: Delivery, stored: PublishReceipt | None) -> PublishReceipt | None:
        """Settle ``delivery`` after its reply's store step: acked with ``stored``, or (None) no longer held here."""
        self._release()
        if stored is None:
            return None
        self._bus._count("acked")
        if delivery.receipts:
            await self._bus._emit_receipt(delivery.message, "processed", self, delivery.attempt)
        return stored

    async def _nack(self, delivery: Delivery, delay_s: float, reason: str | None) -> bool:
        delay_ms = int(min(delay_s, self._bus.limits.visibility_timeout_s_max) * 1000)
        done = await self._bus.store.nack(
            self._bus.tenant,
            self.address,
            self.group,
            delivery.position,
            delivery.attempt,
            delay_ms,
            self._visibility_ms,
            reason,
        )
        self._release()
        self._bus._count("nacked", int(done))
        return done


class Delivery:
    """One message handed to a subscriber. Ack it when processed; nack it to have it redelivered.

    Until acked, the message is redelivered (to this group) after the subscription's visibility timeout, with
    ``attempt`` one higher; after ``max_deliveries`` attempts it goes to the group's dead letters.
    """

    __slots__ = (
        "_done",
        "_sub",
        "_token",
        "address",
        "attempt",
        "consumer",
        "group",
        "message",
        "position",
        "receipts",
    )

    def __init__(self, sub: Subscription, message: Message, position: str, attempt: int, receipts: bool) -> None:
        self._sub = sub
        self._done = False
        self._token: str | None = None
        self.message = message
        self.position = position
        self.attempt = attempt
        self.receipts = receipts
        self.address = sub.address
        self.group = sub.group
        self.consumer = sub.consumer

    def __repr__(self) -> str:
        return (
            f"Delivery(type={self.message.type!r}, message_id={self.message.message_id!r}, "
            f"position={self.position!r}, attempt={self.attempt})"
        )

    @property
    def lease_token(self) -> str:
        """An unguessable token of this one hand-out: whoever settles the delivery by name (over HTTP) must show it.

        Holding the delivery is the proof in-process; a redelivery is a new hand-out with a new token.
        """
        if self._token is None:  # made on first use: in-process deliveries never need one
            self._token = secrets.token_urlsafe(LEASE_TOKEN_BYTES)
        return self._token

    async def ack(self) -> bool:
        """Mark processed. Returns False, changing nothing, if this hand-out no longer holds it: acked already, or
        handed out again after its visibility timeout (the redelivery stays with its holder, to settle itself).

        If the store fails (SOS-6030), the delivery stays unsettled: ack or nack it again.
        """
        if self._done:
            return False
        self._done = True
        try:
            return await self._sub._ack(self)
        except BaseException:
            self._done = False
            raise

    async def reply(
        self,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt:
        """Answer this delivery's message as :meth:`Bus.reply` does, and ack the delivery: the responder's pattern.

        The reply is stored and the delivery acked in one store step on every backend, only while this hand-out
        still holds the entry (pending, delivery count still ``attempt``): both, or neither. A delivery no longer
        held (acked elsewhere, or handed out again after its visibility timeout) stores no reply and raises
        SOS-4005 (``UNHELD_REPLY``); it is settled here. A reply refused (bad input, SOS-40xx/5004) or a store
        failure (SOS-6030/6031) leaves the delivery pending and unsettled: reply, ack or nack it again. A session's
        delivery replies through the session's ``bus.reply`` (same checks, policy and audit record), whose trusted
        call is that step. Raises SOS-4005 when the delivery was acked or nacked already (answer its message with
        ``bus.reply``).
        """
        if self._done:
            raise InvalidArgument(SETTLED_REPLY)
        self._done = True
        try:
            receipt = await self._sub._reply(self, text, source, content_type)
        except BaseException:
            self._done = False
            raise
        if receipt is None:  # settled elsewhere: it stays settled here, and nothing was stored
            raise InvalidArgument(UNHELD_REPLY)
        return receipt

    async def nack(self, delay_s: float = 0.0, *, reason: str | None = None) -> bool:
        """Give it back, to be delivered again after ``delay_s``. Returns False, changing nothing, if this hand-out
        no longer holds it (as :meth:`ack`).

        ``reason`` (at most ``NACK_REASON_CHARS_MAX`` characters, no control characters; see
        :func:`check_nack_reason`) is kept with the pending entry: if this was its last delivery, it becomes the
        dead letter's ``reason``. Never put output, message text or secrets in it.
        """
        delay_s = check_nack_delay(delay_s)  # a refused delay leaves the delivery pending, to ack or nack again
        reason = check_nack_reason(reason)
        if self._done:
            return False
        self._done = True
        try:
            return await self._sub._nack(self, delay_s, reason)
        except BaseException:
            self._done = False
            raise
