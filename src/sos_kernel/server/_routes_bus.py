"""``/v1/bus/subscribe``, ``ack``, ``nack`` and ``subscriptions``: subscriptions as Server-Sent Events.

The bus's other operations are derived from their declarations (:mod:`sos_kernel.server._routes_ops`); these are
the stream and its settling, which hold server state (a lease per subscription).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from ..bus import PublishReceipt, check_nack_reason
from ._bodies import UNIQUE_KEYS, AckIn, NackIn, ReplyAckIn
from ._http import SessionDep, keyed, state_of
from ._streams import Emit, EventStream, StreamOptions

__all__ = ["router"]

router = APIRouter(prefix="/v1/bus", tags=["bus"], dependencies=[UNIQUE_KEYS])

POLL_S_MAX = 60.0
STREAM_EVENTS_MAX = 10_000
_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
# A refused subscription is answered before any event, as JSON; without this the document would give its errors
# the stream's media type.
_STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": "The SOS error envelope (bad input, auth)", "content": _ENVELOPE},
    "5XX": {"description": "The SOS error envelope (runtime)", "content": _ENVELOPE},
}


@router.get(
    "/subscribe",
    summary="Deliveries as Server-Sent Events (event 'delivery', id = position)",
    response_class=EventStream,
    status_code=200,
    responses=_STREAM_ERRORS,
)
async def subscribe(
    request: Request,
    session: SessionDep,
    address: str,
    group: str | None = None,
    consumer: str | None = None,
    visibility_timeout_s: Annotated[float, Query(allow_inf_nan=False)] = 30.0,
    max_deliveries: int = 5,
    prefetch: int = 16,
    start: Literal["earliest", "latest"] | None = None,
    subscription: str | None = None,
    poll_s: Annotated[float | None, Query(ge=0, le=POLL_S_MAX, allow_inf_nan=False)] = None,
    max_events: Annotated[int | None, Query(ge=1, le=STREAM_EVENTS_MAX)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Open (or, with ``subscription=<id>``, resume) a subscription and stream it.

    The first event is ``subscribed`` with ``{subscription, address, group, consumer}``; each delivery is an event
    ``delivery`` with ``id`` = position and data ``{position, attempt, lease_token, message}``; ack or nack it with
    ``POST /v1/bus/ack`` / ``/v1/bus/nack``, showing its ``lease_token`` (only the stream that received a delivery
    can settle it). ``poll_s`` turns the stream into a long poll (for clients that cannot
    read a stream as it arrives). An error after the stream started comes as an ``error`` event (the envelope).
    """
    state = state_of(request)
    lease = state.leases.get(subscription, await session.need("bus:read"))
    if lease is not None:
        await session.may_read(lease.sub.address)
    else:
        options = {
            "group": group,
            "consumer": consumer,
            "visibility_timeout_s": visibility_timeout_s,
            "max_deliveries": max_deliveries,
            "prefetch": prefetch,
            "start": start,
        }
        lease = await state.leases.create(session, address, options)
    opts = StreamOptions(poll_s, max_events, state.ping_s, last_event_id)
    found = lease

    async def run(emit: Emit) -> None:
        await state.leases.stream(found, session, emit, opts)

    return EventStream(run)


@router.post("/ack", summary="Ack a delivery of a stream: {acked: bool} (Idempotency-Key honoured)")
async def ack(body: AckIn, session: SessionDep, request: Request) -> Response:
    await session.may_read(body.address)
    leases = state_of(request).leases

    async def settle() -> dict[str, bool]:
        acked = await leases.settle(session.tenant, body.address, body.group, body.position, body.lease_token, None)
        return {"acked": acked}

    return await keyed(request, session, settle)  # a retried ack (lost answer) gets the first answer back


@router.post(
    "/reply-ack",
    summary="Reply to a delivery of a stream and ack it in one step: the PublishReceipt (Idempotency-Key honoured)",
)
async def reply_ack(body: ReplyAckIn, session: SessionDep, request: Request) -> Response:
    await session.may_read(body.address)
    leases = state_of(request).leases

    async def settle() -> PublishReceipt:
        return await leases.reply(
            session.tenant,
            body.address,
            body.group,
            body.position,
            body.lease_token,
            body.text,
            body.source,
            body.content_type,  # checked by the bus, refused as in-process
        )

    return await keyed(request, session, settle)  # a retried reply (lost answer) gets the first answer back


@router.post(
    "/nack", summary="Give a delivery back for redelivery after delay_s: {nacked: bool} (Idempotency-Key honoured)"
)
async def nack(body: NackIn, session: SessionDep, request: Request) -> Response:
    await session.may_read(body.address)
    reason = check_nack_reason(body.reason)  # refused the same way in-process, whatever the lease
    leases = state_of(request).leases

    async def settle() -> dict[str, bool]:
        nacked = await leases.settle(
            session.tenant, body.address, body.group, body.position, body.lease_token, body.delay_s, reason
        )
        return {"nacked": nacked}

    return await keyed(request, session, settle)


@router.delete("/subscriptions/{subscription}", status_code=204, summary="Close a subscription now")
async def close_subscription(subscription: str, session: SessionDep, request: Request) -> Response:
    leases = state_of(request).leases
    lease = leases.get(subscription, await session.need("bus:read"))
    if lease is not None:
        await leases.close(lease)
    return Response(status_code=204)
