"""The wake runner: bus messages for some agents become work (a command, a signed webhook, a Python callable).

Guarantees (the at-least-once contract):

- **Every message is acted on until an action succeeds or it is dead-lettered.** The runner consumes each agent's
  inbox in its own consumer group (``wake`` by default), so the agent's ``inbox`` group still gets every message.
  A message of a handled type (``wake`` by default) runs the action; others are acked and left alone.
- **At least once, never lost.** The message is acked only after the action succeeded. A runner that crashes
  mid-action leaves the delivery pending; the bus redelivers it after the visibility timeout, and the action runs
  again with the **same idempotency key** (the message id). An action that must not repeat its effect keys it on
  ``SOS_IDEMPOTENCY_KEY`` / ``Job.idempotency_key``.
- **Failures back off, then dead-letter.** A failed run is nacked with exponential backoff (``backoff_s`` doubling,
  up to ``backoff_s_max``) and the failure's status line as the nack's reason (exit status, timeout, HTTP status;
  never output). After ``attempts`` failed runs the bus moves the message to the group's dead letters with the
  last failure's reason, and the runner sends the message's source a ``rejected`` receipt with it.
- **Evidence.** Every completed run publishes an ``evidence`` message (exit status, SHA-256 and size of the
  output, duration) to the message's source (or ``evidence_to``); a success also sends a ``processed`` receipt
  (unless the publisher asked the bus for receipts, which then sends its own).
- **Bounded.** At most ``concurrency`` actions run at once; each has its timeout; output is digested, not kept.
- **Graceful stop.** :meth:`WakeRunner.stop` stops taking messages; actions in flight get ``stop_grace_s`` to
  finish, then are cancelled and their messages given back (nacked) for another runner.

The runner uses only the public bus API (subscribe, ack, nack, publish), so it works on an embedded kernel
(memory, SQLite, Redis) and through :class:`mumega_sdk.MumegaClient` alike.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import unicodedata
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from .. import _trace
from ..api import BusAPI, DeliveryAPI, ServicesAPI, SubscriptionAPI
from ..bus import NACK_REASON_CHARS_MAX
from ..contracts import EvidenceMessage, EvidencePayload, Message, ReceiptMessage, ReceiptPayload
from ..errors import InvalidArgument, SOSError
from ._actions import Action, Job, Outcome

__all__ = [
    "ATTEMPTS_MAX",
    "CONCURRENCY_MAX",
    "HANDLED_TYPES",
    "WAKE_GROUP",
    "WakeConfig",
    "WakeRunner",
]

log = logging.getLogger("sos_kernel.ops.wake")

WAKE_GROUP = "wake"
"""The runner's default consumer group: apart from the agent's ``inbox``, so both see every message."""
CONCURRENCY_MAX = 256
ATTEMPTS_MAX = 100
"""The bus's ``max_deliveries_max``: the most runs one message gets before it is dead-lettered."""
BACKOFF_S_MAX = 3600.0
STOP_GRACE_S_MAX = 600.0
VISIBILITY_MARGIN_S = 30.0
"""A delivery's lease covers two action timeouts plus this: a run, and the wait of the one delivery a remote
subscription may hold at hand meanwhile, so a slow run is never redelivered under it."""
GIVE_BACK_DELAY_S = 1.0
"""A run cancelled by a stop gives its message back due this much later: after this runner's subscriptions
closed, so another runner, not the stopping one, takes it."""
HANDLED_TYPES = frozenset({"wake", "send", "ask", "command", "task_created", "task_claimed", "task_completed"})
"""The message types a runner may be told to act on."""


@dataclass(frozen=True)
class WakeConfig:
    """What a :class:`WakeRunner` consumes and how it retries; every field is checked (SOS-4005)."""

    agents: tuple[str, ...]
    types: frozenset[str] = frozenset({"wake"})
    concurrency: int = 4
    attempts: int = 5
    backoff_s: float = 1.0
    backoff_s_max: float = 60.0
    visibility_timeout_s: float | None = None
    group: str = WAKE_GROUP
    start: str = "earliest"
    stop_grace_s: float = 10.0
    evidence: bool = True
    evidence_to: str | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if not self.agents or not all(isinstance(a, str) and a.startswith("agent:") for a in self.agents):
            raise InvalidArgument(f"a wake runner serves one or more agent:<name> inboxes, got {list(self.agents)!r}")
        unknown = sorted(set(self.types) - HANDLED_TYPES)
        if not self.types or unknown:
            raise InvalidArgument(
                f"types must be some of {', '.join(sorted(HANDLED_TYPES))}; got {sorted(self.types)!r}",
                details={"unknown": unknown},
            )
        _bounded("concurrency", self.concurrency, 1, CONCURRENCY_MAX)
        _bounded("attempts", self.attempts, 1, ATTEMPTS_MAX)
        _positive("backoff_s", self.backoff_s, BACKOFF_S_MAX, zero=True)
        _positive("backoff_s_max", self.backoff_s_max, BACKOFF_S_MAX, zero=True)
        _positive("stop_grace_s", self.stop_grace_s, STOP_GRACE_S_MAX, zero=True)
        if self.start not in ("earliest", "latest"):
            raise InvalidArgument(f"start must be 'earliest' or 'latest', got {self.start!r}")
        if self.count is not None:
            _bounded("count", self.count, 1, 1 << 31)


def _bounded(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an integer {low}..{high}, got {value!r}", details={name: repr(value)})


def _positive(name: str, value: object, high: float, *, zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (value >= 0 if zero else value > 0)
    if not ok or float(value) > high:  # type: ignore[arg-type]
        raise InvalidArgument(f"{name} must be a number in [0, {high}], got {value!r}", details={name: repr(value)})


def derived_id(key: bytes, message_id: str, what: str) -> str:
    """A message id derived from another under a runner's secret ``key`` (HMAC-SHA256): the same step of the
    same runner gives the same id (deduplicated by the bus), and no agent that only knows ``message_id`` can
    compute it and publish it first (the bus drops a repeated id whatever its address)."""
    digest = hmac.new(key, f"{message_id}/{what}".encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


class WakeRunner:
    """Runs ``action`` for the messages of ``config.agents``; ``await runner.run()`` until :meth:`stop`.

    ``api`` is anything with a ``bus`` (a kernel, ``kernel.tenant(slug)``, a session, a ``MumegaClient``). Over
    HTTP the token must be allowed to read each agent's inbox and publish as it (its own agent, or an admin).
    """

    def __init__(self, api: ServicesAPI | Any, action: Action, config: WakeConfig) -> None:
        if not isinstance(config, WakeConfig):
            raise InvalidArgument("config must be a WakeConfig")
        self._bus: BusAPI = api.bus
        self.action = action
        self.config = config
        self._stopping = anyio.Event()
        self._slots = anyio.Semaphore(config.concurrency)
        self._in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self.handled = 0
        self.succeeded = 0
        self.failed = 0
        self.host = socket.gethostname()
        self._id_key = secrets.token_bytes(32)  # never leaves the runner: its evidence/receipt ids are unguessable

    @property
    def visibility_timeout_s(self) -> float:
        """How long a delivery stays leased: twice the action's timeout plus a margin, unless configured."""
        if self.config.visibility_timeout_s is not None:
            return self.config.visibility_timeout_s
        return 2 * float(getattr(self.action, "timeout_s", 60.0)) + VISIBILITY_MARGIN_S

    def stop(self) -> None:
        """Stop taking messages; :meth:`run` returns once in-flight actions finish (or ``stop_grace_s`` passes)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop` (or ``config.count`` messages were handled); errors of the bus surface."""
        c = self.config
        async with AsyncExitStack() as stack:
            subs: list[SubscriptionAPI] = []
            for agent in c.agents:
                sub = self._bus.subscribe(
                    agent,
                    group=c.group,
                    visibility_timeout_s=self.visibility_timeout_s,
                    max_deliveries=c.attempts,
                    prefetch=1,  # claimed only when a slot is free: nothing waits leased in a buffer
                    start=c.start,  # type: ignore[arg-type]
                )
                subs.append(await stack.enter_async_context(sub))
            log.info("wake runner started", extra={"operation": "wake.start", "agent": ",".join(c.agents)})
            async with anyio.create_task_group() as work:
                async with anyio.create_task_group() as readers:
                    for sub in subs:
                        readers.start_soon(self._read, sub, work)
                    await self._stopping.wait()
                    readers.cancel_scope.cancel()
                with anyio.move_on_after(c.stop_grace_s):
                    await self._idle.wait()
                work.cancel_scope.cancel()  # past the grace: cancelled runs give their messages back
        log.info("wake runner stopped", extra={"operation": "wake.stop", "agent": ",".join(c.agents)})

    async def _read(self, sub: SubscriptionAPI, work: anyio.abc.TaskGroup) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            try:
                delivery = await sub.receive()
            except BaseException:
                self._slots.release()
                raise
            if delivery is None:
                self._slots.release()
                return
            self._begin()
            work.start_soon(self._handle, delivery)

    def _begin(self) -> None:
        self._in_flight += 1
        self._idle = anyio.Event()

    def _end(self) -> None:
        self._in_flight -= 1
        self._slots.release()
        if self._in_flight == 0:
            self._idle.set()

    async def _handle(self, delivery: DeliveryAPI) -> None:
        try:
            message = delivery.message
            if message.type not in self.config.types:
                await delivery.ack()  # not ours to act on: the agent's own group still has it
                return
            await self._run_one(delivery, Job(message, delivery.attempt, _address_of(delivery)))
        except SOSError as exc:
            log.warning(
                "wake runner could not settle a delivery: %s", exc.code, extra=_fields(delivery.message, "wake.settle")
            )
        finally:
            self._end()

    async def _run_one(self, delivery: DeliveryAPI, job: Job) -> None:
        message = job.message
        attributes: dict[str, str | int | bool | None] = {
            "sos.message_id": message.message_id,
            "sos.agent": job.agent,
            "sos.attempt": job.attempt,
        }
        try:
            with _trace.span("sos.wake.run", attributes, trace_id=message.trace_id, message_id=message.message_id):
                outcome = await self.action(job)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await delivery.nack(GIVE_BACK_DELAY_S)
            raise
        self.handled += 1
        fields = {**_fields(message, "wake.run"), "attempt": job.attempt, "exit_status": outcome.exit_status}
        if self.config.evidence:
            await self._publish(self._evidence(job, outcome), message)
        if outcome.ok:
            self.succeeded += 1
            if not getattr(delivery, "receipts", False):
                await self._publish(self._receipt(job, "processed", None), message)
            await delivery.ack()
            log.info("wake action succeeded", extra={**fields, "duration_ms": int(outcome.duration_s * 1000)})
        else:
            self.failed += 1
            await self._fail(delivery, job, outcome)
            log.warning("wake action failed: %s", outcome.reason, extra=fields)
        if self.config.count is not None and self.handled >= self.config.count:
            self.stop()

    async def _fail(self, delivery: DeliveryAPI, job: Job, outcome: Outcome) -> None:
        c = self.config
        why = nack_reason(outcome)
        if job.attempt >= c.attempts:
            reason = f"dead-lettered after {job.attempt} attempts: {outcome.reason or 'failed'}"
            await self._publish(self._receipt(job, "rejected", reason), job.message)
            await delivery.nack(0, reason=why)  # the bus dead-letters it on its next hand-out, with this reason
            return
        await delivery.nack(min(c.backoff_s * 2 ** (job.attempt - 1), c.backoff_s_max), reason=why)

    async def _publish(self, message: Message, about: Message) -> None:
        try:
            await self._bus.publish(message)
        except SOSError as exc:  # the run happened; its evidence not landing must not rerun it
            log.warning(
                "wake runner could not publish %s: %s", message.type, exc.code, extra=_fields(about, "wake.report")
            )

    def _evidence(self, job: Job, outcome: Outcome) -> EvidenceMessage:
        finished = datetime.now(UTC)
        message = job.message
        return EvidenceMessage(
            source=job.agent,
            target=self.config.evidence_to or message.source,
            message_id=derived_id(self._id_key, message.message_id, f"evidence/{job.attempt}"),
            trace_id=message.trace_id,
            payload=EvidencePayload(
                subject_ref=f"message:{message.message_id}",
                command_message_id=message.message_id,
                argv=self.action.argv,
                command_line=self.action.command_line,
                exit_status=outcome.exit_status,
                output_sha256=outcome.output_sha256,
                output_bytes=outcome.output_bytes,
                output_excerpt=outcome.excerpt.decode("utf-8", "replace") if outcome.excerpt else None,
                started_at=finished - timedelta(seconds=outcome.duration_s),
                finished_at=finished,
                host=self.host,
            ),
        )

    def _receipt(self, job: Job, kind: str, reason: str | None) -> ReceiptMessage:
        message = job.message
        return ReceiptMessage(
            source=job.agent,
            target=message.source,
            message_id=derived_id(self._id_key, message.message_id, kind),
            trace_id=message.trace_id,
            payload=ReceiptPayload(
                message_id=message.message_id,
                kind=kind,
                reason=reason[:4000] if reason else None,
                consumer=job.agent,
                group=self.config.group,
                attempt=job.attempt,
            ),
        )


def nack_reason(outcome: Outcome) -> str:
    """The reason a failed run gives its nack: the action's status line (exit status, timeout, HTTP status),
    control characters made spaces and cut to ``NACK_REASON_CHARS_MAX``; never the action's output."""
    text = outcome.reason or f"exit status {outcome.exit_status}"
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).strip()
    return text[:NACK_REASON_CHARS_MAX] or f"exit status {outcome.exit_status}"


def _address_of(delivery: DeliveryAPI) -> str:
    return str(getattr(delivery, "address", None) or delivery.message.target)


def _fields(message: Message, operation: str) -> dict[str, Any]:
    """Log fields of a message: ids and routing, never its text."""
    return {
        "operation": operation,
        "message_id": message.message_id,
        "message_type": message.type,
        "agent": message.target,
        "trace_id": message.trace_id,
    }


def agents_of(values: Sequence[str]) -> tuple[str, ...]:
    """``agent:<name>`` for each value (a bare name gets the prefix)."""
    return tuple(v if v.startswith("agent:") else f"agent:{v}" for v in values)
