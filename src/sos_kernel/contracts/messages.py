"""Bus messages: the envelope, the 8 SOS v0.4.1 core types and our extension types.

Every message is one envelope ``{type, source, target, timestamp, version, message_id, payload, ...}``. The 8
core types match ``shared/reference/sos-v0.4.1/schemas/messages`` field for field (patterns, enums, limits,
defaults, ``additionalProperties: false``); ``trace_id`` (a W3C trace id) is the one optional envelope field we
added. Extension types (``receipt``, ``chunk``, ``command``, ``blocker``, ``gate_verdict``, ``evidence``,
``alert``) use the same envelope.

Constructing a model in Python fills ``message_id`` (a time-ordered UUIDv7, see :func:`new_message_id`),
``timestamp`` (now, UTC) and ``version`` (``"1.0"``) for you. Parsing wire data with
:func:`~sos_kernel.contracts.parse_message` is strict: the fields the reference schema requires must be present.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._types import (
    Address,
    AgentAddress,
    AgentName,
    Int,
    IntegralFloat,
    JsonObject,
    KeepsNulls,
    NonNegInt,
    Ref,
    ReplyChannel,
    Sha256Hex,
    Str,
    TaskId,
    Timestamp,
    TraceId,
    UUIDStr,
    Version,
    WireModel,
    WireRequired,
    utcnow,
)

__all__ = [
    "ALERT_STATES",
    "CORE_TYPES",
    "EXTENSION_TYPES",
    "TEXT_CHARS_MAX",
    "AgentJoinedMessage",
    "AgentJoinedPayload",
    "AlertMessage",
    "AlertPayload",
    "AnnounceMessage",
    "AnnouncePayload",
    "ArtifactRef",
    "AskMessage",
    "AskPayload",
    "BlockerMessage",
    "BlockerPayload",
    "ChunkMessage",
    "ChunkPayload",
    "CommandMessage",
    "CommandPayload",
    "EvidenceMessage",
    "EvidencePayload",
    "ExpectedEvidence",
    "GateVerdictMessage",
    "GateVerdictPayload",
    "Message",
    "ReceiptMessage",
    "ReceiptPayload",
    "SendMessage",
    "SendPayload",
    "TaskClaimedMessage",
    "TaskClaimedPayload",
    "TaskCompletedMessage",
    "TaskCompletedPayload",
    "TaskCreatedMessage",
    "TaskCreatedPayload",
    "TaskError",
    "WakeMessage",
    "WakePayload",
    "WorkerInfo",
    "new_message_id",
]

TEXT_CHARS_MAX = 16384
"""SOS's limit on ``send.text``, ``ask.question`` and ``task_created.description``."""
TITLE_CHARS_MAX = 280
REASON_CHARS_MAX = 4000
REASONS_MAX = 50
ARGV_ITEMS_MAX = 1000
ARG_CHARS_MAX = 32768
COMMAND_LINE_CHARS_MAX = 65536
REFS_MAX = 100
EXCERPT_CHARS_MAX = 16384
CHUNK_TOTAL_MAX = 65536
CHUNK_DATA_CHARS_MAX = 1 << 20
"""A chunk carries at most 1 MiB of base64 text; the bus uses much smaller chunks (see ``bus`` limits)."""

Text = Annotated[str, StringConstraints(strict=True, max_length=TEXT_CHARS_MAX)]
Reason = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=REASON_CHARS_MAX)]


def new_message_id() -> str:
    """A fresh message id: a UUID version 7 (RFC 9562), 48 bits of Unix time in ms, then 74 random bits.

    Ids made one after another sort one after another, so a store that indexes them (the SQLite bus's
    duplicate check) appends to one end of its index instead of touching a random page per message; the random
    bits keep ids from colliding across processes and hosts. Any UUID is a valid ``message_id``.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b, 6 unused
    value = (ms & _MS_MASK) << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 | 0b10 << 62 | (rand & _RAND_B_MASK)
    return str(uuid.UUID(int=value))


_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def _unique(items: list[Any] | None, what: str) -> list[Any] | None:
    if items is not None and len({repr(i) for i in items}) != len(items):
        raise PydanticCustomError("unique_items", "{what} must not repeat an item", {"what": what})
    return items


class Message(WireRequired):
    """The envelope every bus message shares.

    ``source`` is the sending agent (``agent:<name>``); ``target`` an agent inbox or a ``sos:channel:<name>``;
    ``message_id`` is the idempotency key of publishing (re-publishing the same id delivers nothing twice).
    """

    wire_required: ClassVar[frozenset[str]] = frozenset(
        {"type", "source", "target", "timestamp", "version", "message_id", "payload"}
    )

    type: str
    source: AgentAddress
    target: Address
    timestamp: Timestamp = Field(default_factory=utcnow)
    version: Version = "1.0"
    message_id: UUIDStr = Field(default_factory=new_message_id)
    trace_id: TraceId | None = None


# --- the 8 core types ------------------------------------------------------------------------------------------


class AnnouncePayload(WireModel):
    """Runtime context an agent reports at startup; every field optional."""

    text: Str | None = None
    tool: Str | None = None
    pid: Int | None = None
    tty: Str | None = None
    cwd: Str | None = None


class AnnounceMessage(Message):
    """An agent says it is here. Target defaults to ``sos:channel:global``."""

    wire_required: ClassVar[frozenset[str]] = frozenset({"type", "source", "timestamp", "version", "message_id"})
    type: Literal["announce"] = "announce"
    target: Address = "sos:channel:global"
    payload: AnnouncePayload | None = None
    agent_card_ref: Str | None = None


class SendPayload(WireRequired):
    """Chat text, plain or Markdown, at most 16384 characters."""

    # content_type defaults to plain text in Python, but the wire must carry it, as SOS's schema requires.
    wire_required: ClassVar[frozenset[str]] = frozenset({"text", "content_type"})
    text: Text
    content_type: Literal["text/plain", "text/markdown"] = "text/plain"


class SendMessage(Message):
    """The canonical agent-to-agent message. ``reply_to`` threads replies; ``correlation_id`` ties a chain."""

    type: Literal["send"] = "send"
    payload: SendPayload
    reply_to: UUIDStr | None = None
    correlation_id: UUIDStr | None = None
    headers: dict[str, Str] | None = None


class WakePayload(WireModel):
    """The text injected into the woken agent's session (non-empty)."""

    text: Annotated[str, StringConstraints(strict=True, min_length=1)]


class WakeMessage(Message):
    """Wake a specific agent; ``expires_at`` drops it undelivered when stale."""

    type: Literal["wake"] = "wake"
    payload: WakePayload
    priority: Literal["critical", "high", "normal", "low"] = "normal"
    expires_at: Timestamp | None = None
    ref_message_id: UUIDStr | None = None


class AskPayload(WireModel):
    """A question and where the answer should go."""

    question: Text
    reply_channel: ReplyChannel


class AskMessage(Message):
    """A question expecting a reply whose ``reply_to`` is this ``message_id``."""

    type: Literal["ask"] = "ask"
    payload: AskPayload
    timeout_s: Annotated[int, Field(strict=True, ge=1, le=3600), IntegralFloat] | None = None
    correlation_id: UUIDStr | None = None


class TaskCreatedPayload(WireModel):
    """A new task on the board."""

    task_id: TaskId
    title: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=TITLE_CHARS_MAX)]
    priority: Literal["critical", "high", "medium", "low"]
    description: Text | None = None
    assignee: AgentName | None = None
    skill_id: Str | None = None
    project: Str | None = None
    labels: list[Str] | None = None
    token_budget: NonNegInt | None = None
    bounty_cents: NonNegInt | None = None

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value, "labels")


class TaskCreatedMessage(Message):
    """Emitted when a task is added; target defaults to ``sos:channel:tasks``."""

    type: Literal["task_created"] = "task_created"
    target: Address = "sos:channel:tasks"
    payload: TaskCreatedPayload


class WorkerInfo(WireModel):
    """Who holds a claim."""

    model: Str | None = None
    plan: Str | None = None
    estimated_duration_s: NonNegInt | None = None


class TaskClaimedPayload(WireModel):
    """An atomic claim on a task."""

    task_id: TaskId
    claimed_at: Timestamp
    claim_expires_at: Timestamp | None = None
    worker_info: WorkerInfo | None = None


class TaskClaimedMessage(Message):
    """Emitted when an agent claims a task."""

    type: Literal["task_claimed"] = "task_claimed"
    target: Address = "sos:channel:tasks"
    payload: TaskClaimedPayload


class TaskError(WireModel):
    """Why a task did not finish."""

    code: Annotated[str, StringConstraints(strict=True, pattern=r"^SOS-[A-Z0-9]{4,}$")]
    message: Str
    traceback: Str | None = None


class TaskCompletedPayload(WireModel):
    """The terminal state of a task, what it produced and what it cost."""

    task_id: TaskId
    status: Literal["done", "failed", "cancelled", "timeout"]
    completed_at: Timestamp
    result: JsonObject | None = None
    duration_s: NonNegInt | None = None
    artifacts: list[Str] | None = None
    tokens_spent: NonNegInt | None = None
    cost_cents: NonNegInt | None = None
    error: TaskError | None = None

    @field_validator("artifacts")
    @classmethod
    def _artifacts_unique(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value, "artifacts")


class TaskCompletedMessage(Message):
    """Emitted when a task reaches a terminal state."""

    type: Literal["task_completed"] = "task_completed"
    target: Address = "sos:channel:tasks"
    payload: TaskCompletedPayload


class AgentJoinedPayload(KeepsNulls):
    """The kernel saw a new registry entry. ``tenant_id: null`` means a full-scope (admin/system) agent."""

    nullable: ClassVar[frozenset[str]] = frozenset({"tenant_id"})

    agent_name: AgentName
    joined_at: Timestamp
    tenant_id: Str | None = None
    agent_card: JsonObject | None = None
    source_host: Str | None = None
    expiry_at: Timestamp | None = None


class AgentJoinedMessage(Message):
    """Kernel-observed, authoritative: an agent registered. Emitted by ``agent:kernel``."""

    type: Literal["agent_joined"] = "agent_joined"
    source: AgentAddress = "agent:kernel"
    target: Address = "sos:channel:system:events"
    payload: AgentJoinedPayload


# --- extension types -------------------------------------------------------------------------------------------


class ReceiptPayload(WireModel):
    """What happened to the message ``message_id``.

    ``kind``: ``delivered`` (handed to a consumer), ``read`` (seen by a person or agent), ``processed`` (acked),
    ``rejected`` (dead-lettered or refused; ``reason`` is then required).
    """

    message_id: UUIDStr
    kind: Literal["delivered", "read", "processed", "rejected"]
    reason: Reason | None = None
    consumer: AgentAddress | None = None
    group: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)] | None = None
    attempt: Annotated[int, Field(strict=True, ge=1), IntegralFloat] | None = None
    at: Timestamp | None = None

    @model_validator(mode="after")
    def _reason_when_rejected(self) -> ReceiptPayload:
        if self.kind == "rejected" and not self.reason:
            raise PydanticCustomError("receipt_reason", "a 'rejected' receipt needs a reason")
        return self


class ReceiptMessage(Message):
    """A delivery, read, processing or rejection receipt, sent back to the original message's source."""

    type: Literal["receipt"] = "receipt"
    payload: ReceiptPayload


class ChunkPayload(WireModel):
    """Part ``seq`` (0-based) of ``total`` of a message too large to travel whole.

    ``group_id`` is the ``message_id`` of the whole message; ``sha256`` is the hex digest of the whole message's
    wire bytes and ``size_bytes`` their length; ``data`` is this part's bytes in standard base64. The bus
    reassembles the parts, checks size and digest, and delivers the original message; nothing is truncated.
    """

    group_id: UUIDStr
    seq: Annotated[int, Field(strict=True, ge=0, lt=CHUNK_TOTAL_MAX), IntegralFloat]
    total: Annotated[int, Field(strict=True, ge=1, le=CHUNK_TOTAL_MAX), IntegralFloat]
    sha256: Sha256Hex
    size_bytes: Annotated[int, Field(strict=True, ge=0), IntegralFloat]
    data: Annotated[
        str,
        StringConstraints(strict=True, max_length=CHUNK_DATA_CHARS_MAX, pattern=r"^[A-Za-z0-9+/]*={0,2}$"),
    ]
    inner_type: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _seq_in_range(self) -> ChunkPayload:
        if self.seq >= self.total:
            raise PydanticCustomError(
                "chunk_seq", "seq {seq} must be below total {total}", {"seq": self.seq, "total": self.total}
            )
        return self


class ChunkMessage(Message):
    """One part of a large message (see :class:`ChunkPayload`)."""

    type: Literal["chunk"] = "chunk"
    payload: ChunkPayload


class ExpectedEvidence(WireModel):
    """What the command's runner should report back as ``evidence`` for the command to count as done."""

    exit_status: Int | None = None
    artifacts: Annotated[list[Ref], Field(max_length=REFS_MAX)] | None = None
    output_contains: Annotated[str, StringConstraints(strict=True, max_length=4000)] | None = None
    notes: Annotated[str, StringConstraints(strict=True, max_length=REASON_CHARS_MAX)] | None = None


class CommandPayload(WireModel):
    """A command to run: exactly one of ``argv`` (preferred, no shell) or ``command_line`` (a shell line).

    ``cwd`` and ``env`` set the process context; ``timeout_s`` bounds it; ``task_id`` ties it to a task;
    ``expect`` says which evidence proves it ran as intended.
    """

    argv: (
        Annotated[
            list[Annotated[str, StringConstraints(strict=True, max_length=ARG_CHARS_MAX)]],
            Field(min_length=1, max_length=ARGV_ITEMS_MAX),
        ]
        | None
    ) = None
    command_line: (
        Annotated[str, StringConstraints(strict=True, min_length=1, max_length=COMMAND_LINE_CHARS_MAX)] | None
    ) = None
    cwd: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4096)] | None = None
    env: dict[str, Str] | None = None
    timeout_s: Annotated[int, Field(strict=True, ge=1, le=86400), IntegralFloat] | None = None
    task_id: TaskId | None = None
    expect: ExpectedEvidence | None = None

    @model_validator(mode="after")
    def _one_form(self) -> CommandPayload:
        if (self.argv is None) == (self.command_line is None):
            raise PydanticCustomError("command_form", "give exactly one of 'argv' or 'command_line'")
        return self


class CommandMessage(Message):
    """Ask an agent to run a command. Long commands travel whole (chunked by the bus), never truncated."""

    type: Literal["command"] = "command"
    payload: CommandPayload
    correlation_id: UUIDStr | None = None


class BlockerPayload(WireModel):
    """What blocks which task or message.

    At least one of ``task_id`` / ``message_id`` names what is blocked; ``blocked_on`` lists what it waits for
    (task ids, message ids, agent addresses, URLs); ``status`` lets the same blocker be resolved later by a new
    message with the same ``blocker_id``.
    """

    blocker_id: UUIDStr
    task_id: TaskId | None = None
    message_id: UUIDStr | None = None
    reason: Reason
    severity: Literal["low", "medium", "high", "critical"]
    blocked_on: Annotated[list[Ref], Field(max_length=REFS_MAX)] | None = None
    needs: Annotated[str, StringConstraints(strict=True, max_length=REASON_CHARS_MAX)] | None = None
    status: Literal["open", "resolved"] = "open"

    @model_validator(mode="after")
    def _names_subject(self) -> BlockerPayload:
        if self.task_id is None and self.message_id is None:
            raise PydanticCustomError("blocker_subject", "a blocker names a 'task_id' or a 'message_id'")
        return self


class BlockerMessage(Message):
    """A typed "this is blocked" signal."""

    type: Literal["blocker"] = "blocker"
    payload: BlockerPayload


class GateVerdictPayload(WireModel):
    """A gate's decision on a subject (``task:<id>``, a message id, a commit...).

    ``reject`` and ``needs_changes`` must give at least one reason; ``evidence_refs`` point at the evidence the
    reviewer relied on.
    """

    subject_ref: Ref
    verdict: Literal["approve", "reject", "needs_changes"]
    reasons: Annotated[list[Reason], Field(max_length=REASONS_MAX)] = Field(default_factory=list)
    reviewer: Annotated[str, StringConstraints(strict=True, pattern=r"^(agent|human):[a-z][a-z0-9-]*$")]
    gate: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)] | None = None
    evidence_refs: Annotated[list[Ref], Field(max_length=REFS_MAX)] | None = None
    decided_at: Timestamp | None = None

    @model_validator(mode="after")
    def _reasons_when_not_approved(self) -> GateVerdictPayload:
        if self.verdict != "approve" and not self.reasons:
            raise PydanticCustomError(
                "verdict_reasons", "a '{v}' verdict needs at least one reason", {"v": self.verdict}
            )
        return self


class GateVerdictMessage(Message):
    """A reviewer's typed verdict."""

    type: Literal["gate_verdict"] = "gate_verdict"
    payload: GateVerdictPayload


class ArtifactRef(WireModel):
    """A durable output: where it is, and optionally its digest, size and media type."""

    ref: Ref
    sha256: Sha256Hex | None = None
    size_bytes: NonNegInt | None = None
    media_type: Annotated[str, StringConstraints(strict=True, max_length=200)] | None = None


class EvidencePayload(WireModel):
    """Proof that something ran: what, with which exit status, and the digest of its output.

    ``output_sha256`` covers the full combined output even when only ``output_excerpt`` travels;
    ``command_message_id`` ties the evidence to the ``command`` it answers.
    """

    subject_ref: Ref | None = None
    command_message_id: UUIDStr | None = None
    argv: Annotated[list[Str], Field(min_length=1, max_length=ARGV_ITEMS_MAX)] | None = None
    command_line: (
        Annotated[str, StringConstraints(strict=True, min_length=1, max_length=COMMAND_LINE_CHARS_MAX)] | None
    ) = None
    cwd: Str | None = None
    exit_status: Int
    output_sha256: Sha256Hex
    output_bytes: NonNegInt
    output_excerpt: Annotated[str, StringConstraints(strict=True, max_length=EXCERPT_CHARS_MAX)] | None = None
    artifacts: Annotated[list[ArtifactRef], Field(max_length=REFS_MAX)] | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    host: Str | None = None

    @model_validator(mode="after")
    def _what_ran(self) -> EvidencePayload:
        if self.argv is None and self.command_line is None:
            raise PydanticCustomError("evidence_command", "evidence says what ran: 'argv' or 'command_line'")
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise PydanticCustomError("evidence_times", "'finished_at' is before 'started_at'")
        return self


class EvidenceMessage(Message):
    """Evidence left behind by work: "done" as a receipt, not a claim."""

    type: Literal["evidence"] = "evidence"
    payload: EvidencePayload


ALERT_STATES = ("fired", "resolved")
RuleName = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]


class AlertPayload(WireModel):
    """A watcher's alert about ``subject``: ``fired`` when a rule's condition starts to hold, ``resolved`` when it
    has stopped holding. ``alert_id`` (``<rule>:<subject>``) is the same in both messages of one episode, so a
    consumer pairs them; ``text`` says what is wrong in words and names the subject.
    """

    alert_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=600)]
    rule: RuleName
    state: Literal["fired", "resolved"]
    severity: Literal["info", "warning", "critical"]
    subject: Ref
    text: Reason
    details: JsonObject | None = None
    fired_at: Timestamp
    resolved_at: Timestamp | None = None

    @model_validator(mode="after")
    def _resolved_has_time(self) -> AlertPayload:
        if (self.state == "resolved") != (self.resolved_at is not None):
            raise PydanticCustomError("alert_resolved_at", "'resolved_at' is given exactly when state is 'resolved'")
        return self


class AlertMessage(Message):
    """An operator alert (see ``sos_kernel.ops.Watcher``), usually on ``sos:channel:alerts``."""

    type: Literal["alert"] = "alert"
    payload: AlertPayload


CORE_TYPES: dict[str, type[Message]] = {
    "announce": AnnounceMessage,
    "send": SendMessage,
    "wake": WakeMessage,
    "ask": AskMessage,
    "task_created": TaskCreatedMessage,
    "task_claimed": TaskClaimedMessage,
    "task_completed": TaskCompletedMessage,
    "agent_joined": AgentJoinedMessage,
}
"""The 8 SOS v0.4.1 message types."""

EXTENSION_TYPES: dict[str, type[Message]] = {
    "receipt": ReceiptMessage,
    "chunk": ChunkMessage,
    "command": CommandMessage,
    "blocker": BlockerMessage,
    "gate_verdict": GateVerdictMessage,
    "evidence": EvidenceMessage,
    "alert": AlertMessage,
}
"""Our types beyond v1, in the same envelope."""
