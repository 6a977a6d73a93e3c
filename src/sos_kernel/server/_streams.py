"""Server-side subscriptions behind the SSE stream: leases, the deliveries they handed out, and the stream itself.

A client's subscription is a *lease* on one :class:`~sos_kernel.Subscription`, kept by the server between the
client's connections. A stream (``GET /v1/bus/subscribe``) attaches to a lease, sends its deliveries as SSE events
(``id`` = position) and detaches when the client goes away; the lease lingers for ``linger_s`` so a reconnect
(``?subscription=<id>``) resumes it: buffered deliveries are still there, a temporary channel group is not deleted,
and deliveries handed out after the client's ``Last-Event-ID`` and not acked are sent again at once. A lease not
resumed within ``linger_s`` is closed like an in-process subscription (buffered deliveries are given back; a
temporary group is deleted). Handed-out deliveries stay pending either way and are redelivered after their
visibility timeout: nothing is lost when a client disappears.

Acks and nacks name ``(address, group, position)`` and show the delivery's ``lease_token``, sent only on the stream
that received it; the server finds the :class:`~sos_kernel.Delivery` it handed out under that key (the latest one,
if it was redelivered) and settles it only if the token is that delivery's, so the ack reaches the same object as
in-process. Any other token (a guess, a stale hand-out's) settles nothing and is answered as a delivery no longer
pending is: ``False``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._background import Background
from ..bus import SETTLED_REPLY, UNHELD_REPLY, Delivery, PublishReceipt, Subscription
from ..errors import InvalidArgument, LimitExceeded, SOSError
from ..identity.models import Principal
from ..identity.service import TOKEN_CACHE_TTL_S
from ..session import Session
from ..wire import encode, json_bytes

__all__ = ["EventStream", "Lease", "Leases", "StreamOptions", "sse_event"]

LEASES_MAX = 10_000
"""Open subscriptions one server keeps (attached or lingering)."""
LEASES_PER_TENANT_MAX = 2_500
"""Of those, how many one tenant may hold: a quarter, so no tenant can take the server's subscriptions."""
LEASES_PER_PRINCIPAL_MAX = 256
"""Of a tenant's, how many one agent (or tenant-wide token) may hold."""
HAND_LOG_MAX = 10_000
"""Positions a lease remembers in hand order, to resend what a reconnecting client missed."""
TAKEOVER_CHECK_S = 1.0
"""How often an attached stream checks whether a newer connection took its lease over."""
REAP_INTERVAL_S_MAX = 5.0
"""The reaper looks every ``linger_s / 2``, but at most this long apart (and no more often than the minimum)."""
REAP_INTERVAL_S_MIN = 0.01
_TEMP_GROUP_RE = re.compile(r"^tmp-[0-9a-f]{32}$")

Emit = Callable[[bytes], Awaitable[None]]
DeliveryKey = tuple[str, str, str, str]


def sse_event(data: Any, *, event: str | None = None, id: str | None = None) -> bytes:
    """One Server-Sent Event: ``id``, ``event`` and one ``data`` line of compact JSON."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    head = "".join(f"{line}\n" for line in lines).encode()
    return head + b"data: " + json_bytes(data) + b"\n\n"


def is_temporary_group(address: str, group: str | None) -> bool:
    """A channel group named like the bus's own temporary groups (``tmp-<32 hex>``) is deleted with its lease."""
    return group is not None and address.startswith("sos:channel:") and bool(_TEMP_GROUP_RE.fullmatch(group))


@dataclass
class Lease:
    """One client subscription kept by the server (see the module docstring)."""

    id: str
    tenant: str
    agent: str | None
    sub: Subscription
    handed: OrderedDict[str, Delivery] = field(default_factory=OrderedDict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=HAND_LOG_MAX))
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    generation: int = 0
    detached_at: float | None = None
    closed: bool = False

    def owned_by(self, principal: Principal) -> bool:
        """Only the same tenant and agent may resume a lease."""
        return self.tenant == principal.tenant and self.agent == principal.agent

    def missed(self, last_event_id: str | None) -> list[Delivery]:
        """Unacked deliveries handed out after ``last_event_id`` (all of them when it is unknown)."""
        if not self.handed:
            return []
        log = list(self.log)
        if (
            last_event_id is not None and last_event_id in self.log
        ):  # the last time it was handed: a redelivery repeats a position
            log = log[len(log) - log[::-1].index(last_event_id) :]
        return [self.handed[p] for p in dict.fromkeys(log) if p in self.handed]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How one stream behaves: ``poll_s`` makes it a long poll (it ends once it has sent what was at hand, or
    after ``poll_s`` with nothing), ``max_events`` ends it after that many deliveries, ``ping_s`` spaces the
    keep-alive comments of an open stream."""

    poll_s: float | None
    max_events: int | None
    ping_s: float
    last_event_id: str | None


class Leases:
    """Every lease of one server, and the deliveries they handed out by ``(tenant, address, group, position)``."""

    def __init__(
        self,
        linger_s: float,
        leases_max: int = LEASES_MAX,
        per_tenant_max: int = LEASES_PER_TENANT_MAX,
        per_principal_max: int = LEASES_PER_PRINCIPAL_MAX,
    ) -> None:
        self.linger_s = linger_s
        self.leases_max = leases_max
        self.per_tenant_max = per_tenant_max
        self.per_principal_max = per_principal_max
        self._leases: dict[str, Lease] = {}
        self._held: Counter[tuple[str, str | None]] = Counter()  # (tenant, agent) -> leases
        self._handed: dict[DeliveryKey, tuple[Lease, Delivery]] = {}
        # closes lingering leases with no other traffic; started by the first lease, stopped by aclose()
        self._reaper = Background(self._reap_forever)

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, lease_id: str | None, principal: Principal) -> Lease | None:
        """The caller's lease ``lease_id``, if it is still kept."""
        lease = self._leases.get(lease_id) if lease_id else None
        return lease if lease is not None and lease.owned_by(principal) else None

    def _bound(self, tenant: str, agent: str | None) -> None:
        """SOS-4010 when the tenant, or the agent within it, holds its share of the server's subscriptions."""
        mine = self._held[(tenant, agent)]
        if mine >= self.per_principal_max:
            raise LimitExceeded(
                f"{agent or 'this token'} holds {mine} subscriptions on this server, the most one principal may",
                details={"limit": "subscriptions_per_principal_max", "max": self.per_principal_max},
            )
        theirs = sum(n for (t, _), n in self._held.items() if t == tenant)
        if theirs >= self.per_tenant_max:
            raise LimitExceeded(
                f"tenant {tenant} holds {theirs} subscriptions on this server, the most one tenant may",
                details={"limit": "subscriptions_per_tenant_max", "max": self.per_tenant_max},
            )

    async def create(self, session: Session, address: str, options: dict[str, Any]) -> Lease:
        """Open a subscription for ``session`` (checked by the session on open) and keep it as a new lease."""
        await self.reap()
        self._bound(session.tenant, session.agent)
        if len(self._leases) >= self.leases_max:
            raise LimitExceeded(
                f"this server keeps at most {self.leases_max} subscriptions; close some or retry later",
                details={"limit": "subscriptions_max", "max": self.leases_max},
            )
        sub = cast(Subscription, session.bus.subscribe(address, **options))  # a session subscribes in-process
        if is_temporary_group(address, options.get("group")):
            sub.temporary = True  # a resumed temporary channel group keeps its temporary nature
        await sub.open()
        lease = Lease(uuid.uuid4().hex, session.tenant, session.agent, sub, detached_at=time.monotonic())
        self._reaper.start()
        self._leases[lease.id] = lease
        self._held[(lease.tenant, lease.agent)] += 1
        return lease

    def hand(self, lease: Lease, delivery: Delivery) -> None:
        """Remember a delivery sent on ``lease`` (replacing an earlier delivery of the same position)."""
        lease.handed[delivery.position] = delivery
        lease.handed.move_to_end(delivery.position)
        lease.log.append(delivery.position)
        key = (lease.tenant, delivery.address, delivery.group, delivery.position)
        self._handed[key] = (lease, delivery)

    async def settle(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        lease_token: str,
        delay_s: float | None,
        reason: str | None = None,
    ) -> bool:
        """Ack (``delay_s`` None) or nack the delivery handed out under this key, if ``lease_token`` is its token.

        False, with nothing settled, when no delivery is pending under the key or the token is not its own: the
        two answers are the same, so a guessed key and token reveal nothing. A store failure leaves the delivery
        handed out, to settle again.
        """
        key = (tenant, address, group, position)
        found = self._handed.get(key)
        if found is None or not secrets.compare_digest(found[1].lease_token.encode(), lease_token.encode()):
            await self.reap()
            return False
        lease, delivery = found
        settled = await (delivery.ack() if delay_s is None else delivery.nack(delay_s, reason=reason))
        if self._handed.get(key) is found:
            del self._handed[key]
        if lease.handed.get(position) is delivery:
            del lease.handed[position]
        await self.reap()
        return settled

    async def reply(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        lease_token: str,
        text: str,
        source: str | None,
        content_type: str,
    ) -> PublishReceipt:
        """``Delivery.reply`` on the delivery handed out under this key, if ``lease_token`` is its token: the reply
        stored and the delivery acked in one store step.

        SOS-4005 (``UNHELD_REPLY``), with nothing stored, when no delivery is pending under the key, the token is
        not its own, or the store finds it no longer held: the answers are the same, so a guessed key and token
        reveal nothing. A refused reply or a store failure leaves the delivery handed out, to settle again.
        """
        key = (tenant, address, group, position)
        found = self._handed.get(key)
        if found is None or not secrets.compare_digest(found[1].lease_token.encode(), lease_token.encode()):
            await self.reap()
            raise InvalidArgument(UNHELD_REPLY)
        lease, delivery = found
        try:
            return await delivery.reply(text, source=source, content_type=cast(Any, content_type))
        except InvalidArgument as exc:
            if exc.message in (UNHELD_REPLY, SETTLED_REPLY):  # settled: it is no longer handed out
                self._forget(key, lease, delivery)
            raise
        else:
            self._forget(key, lease, delivery)
        finally:
            await self.reap()

    def _forget(self, key: DeliveryKey, lease: Lease, delivery: Delivery) -> None:
        if self._handed.get(key) is not None and self._handed[key][1] is delivery:
            del self._handed[key]
        if lease.handed.get(delivery.position) is delivery:
            del lease.handed[delivery.position]

    async def close(self, lease: Lease) -> None:
        """Close the lease's subscription and forget what it handed out."""
        if self._leases.pop(lease.id, None) is not None:
            holder = (lease.tenant, lease.agent)
            self._held[holder] -= 1
            if self._held[holder] <= 0:
                del self._held[holder]
        lease.closed = True
        for position in lease.handed:
            key = (lease.tenant, lease.sub.address, lease.sub.group, position)
            if self._handed.get(key, (None, None))[0] is lease:
                del self._handed[key]
        lease.handed.clear()
        await lease.sub.aclose()

    async def reap(self) -> None:
        """Close the leases no stream has resumed within ``linger_s``."""
        now = time.monotonic()
        for lease in list(self._leases.values()):
            detached = lease.detached_at is not None and now - lease.detached_at > self.linger_s
            if detached and lease.id in self._leases:  # another reap may have closed it while this one awaited
                await self.close(lease)

    async def _reap_forever(self) -> None:
        interval = min(max(self.linger_s / 2, REAP_INTERVAL_S_MIN), REAP_INTERVAL_S_MAX)
        while True:
            await anyio.sleep(interval)
            await self.reap()

    async def aclose(self) -> None:
        """Stop the reaper, then close every lease (server shutdown)."""
        await self._reaper.aclose()
        for lease in list(self._leases.values()):
            await self.close(lease)

    async def stream(self, lease: Lease, session: Session, emit: Emit, opts: StreamOptions) -> None:
        """Attach to ``lease`` (taking it over from an older stream) and send its deliveries until the client
        leaves, the poll ends or a newer stream takes over."""
        lease.generation += 1
        generation = lease.generation
        async with lease.lock:
            lease.detached_at = None
            try:
                await self._send_from(lease, session, emit, opts, generation)
            finally:
                if lease.generation == generation:
                    lease.detached_at = time.monotonic()

    async def _send_from(self, lease: Lease, session: Session, emit: Emit, opts: StreamOptions, gen: int) -> None:
        sub = lease.sub
        hello = {"subscription": lease.id, "address": sub.address, "group": sub.group, "consumer": sub.consumer}
        await emit(sse_event(hello, event="subscribed"))
        sent = 0
        for missed in lease.missed(opts.last_event_id):
            await emit(_delivery_event(missed))
            sent += 1
        started = last_ping = checked = anyio.current_time()
        while lease.generation == gen and not lease.closed and (opts.max_events is None or sent < opts.max_events):
            now = anyio.current_time()
            if opts.poll_s is not None:
                wait = 0.0 if sent else max(0.0, started + opts.poll_s - now)
            else:
                wait = max(0.0, min(TAKEOVER_CHECK_S, last_ping + opts.ping_s - now))
            delivery = await sub.receive(timeout_s=min(wait, max(0.0, checked + TOKEN_CACHE_TTL_S - now)))
            if delivery is not None or anyio.current_time() >= checked + TOKEN_CACHE_TTL_S:
                await self._recheck(lease, session, delivery)
                checked = anyio.current_time()
            if delivery is not None:
                self.hand(lease, delivery)
                await emit(_delivery_event(delivery))
                sent += 1
            elif opts.poll_s is not None and (sent or anyio.current_time() >= started + opts.poll_s):
                return
            elif anyio.current_time() >= last_ping + opts.ping_s:
                await emit(b": ping\n\n")
                last_ping = anyio.current_time()

    async def _recheck(self, lease: Lease, session: Session, delivery: Delivery | None) -> None:
        """Re-validate the stream's token (cached for at most ``TOKEN_CACHE_TTL_S``, so this reaches the store
        that often, busy or idle). A token no longer good ends the stream: ``delivery``, not yet sent, is given
        back, and the lease is closed (its buffered deliveries given back too)."""
        try:
            await session.need("bus:read")
        except SOSError:
            with anyio.CancelScope(shield=True):
                if delivery is not None:
                    await delivery.nack()
                await self.close(lease)
            raise


def _delivery_event(delivery: Delivery) -> bytes:
    data = {
        "position": delivery.position,
        "attempt": delivery.attempt,
        "lease_token": delivery.lease_token,
        "message": encode(delivery.message),
    }
    return sse_event(data, event="delivery", id=delivery.position)


class EventStream(Response):
    """A ``text/event-stream`` response driven by ``run(emit)``; it stops when the client disconnects, and an
    SOSError raised mid-stream is sent as an ``error`` event carrying the SOS envelope."""

    media_type = "text/event-stream"

    def __init__(self, run: Callable[[Emit], Awaitable[None]], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(headers={"cache-control": "no-store", "x-accel-buffering": "no", **(headers or {})})
        # A stream has no length: drop the ``content-length: 0`` Response derives from its empty body.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await self._run(emit)
            except SOSError as exc:
                await emit(sse_event(exc.to_wire(), event="error"))
            except OSError:  # the client went away mid-write
                return
            finally:
                tg.cancel_scope.cancel()
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
