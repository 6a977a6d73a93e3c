"""``/v1/bus/*``: the session bus over HTTP, with subscriptions as Server-Sent Events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from ..bus import DeadLetter
from ..errors import InvalidArgument
from ._bodies import (
    AckIn,
    AnnounceIn,
    AskIn,
    NackIn,
    PublishIn,
    PublishManyIn,
    ReplayIn,
    ReplyIn,
    SendIn,
    SplitIn,
    WakeIn,
)
from ._http import SessionDep, answer, keyed, state_of
from ._streams import Emit, EventStream, StreamOptions

__all__ = ["router"]

router = APIRouter(prefix="/v1/bus", tags=["bus"])

POLL_S_MAX = 60.0
STREAM_EVENTS_MAX = 10_000
_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
# A refused subscription is answered before any event, as JSON; without this the document would give its errors
# the stream's media type.
_STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": "The SOS error envelope (bad input, auth)", "content": _ENVELOPE},
    "5XX": {"description": "The SOS error envelope (runtime)", "content": _ENVELOPE},
}


def _options(body: Any, *skip: str) -> dict[str, Any]:
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if k not in skip}


@router.post("/publish", summary="Publish one message (idempotent by message_id)")
async def publish(body: PublishIn, session: SessionDep) -> Response:
    return answer(await session.bus.publish(body.message, receipts=body.receipts, chunking=body.chunking))


@router.post("/publish_many", summary="Publish a batch, all or none (idempotent by message_id)")
async def publish_many(body: PublishManyIn, session: SessionDep) -> Response:
    return answer(await session.bus.publish_many(body.messages, receipts=body.receipts))


@router.post("/send", summary="Send text from the session's agent (Idempotency-Key honoured)")
async def send(body: SendIn, session: SessionDep, request: Request) -> Response:
    options = _options(body, "source", "target", "text")
    return await keyed(request, session, lambda: session.bus.send(body.source, body.target, body.text, **options))


@router.post("/announce", summary="Announce an agent (Idempotency-Key honoured)")
async def announce(body: AnnounceIn, session: SessionDep, request: Request) -> Response:
    options = _options(body, "source", "text")
    return await keyed(request, session, lambda: session.bus.announce(body.source, body.text, **options))


@router.post("/wake", summary="Wake a registered agent (Idempotency-Key honoured)")
async def wake(body: WakeIn, session: SessionDep, request: Request) -> Response:
    options = _options(body, "source", "target", "text")
    return await keyed(request, session, lambda: session.bus.wake(body.source, body.target, body.text, **options))


@router.post("/ask", summary="Ask and wait for the reply message (Idempotency-Key honoured)")
async def ask(body: AskIn, session: SessionDep, request: Request) -> Response:
    options = _options(body, "source", "target", "question")
    return await keyed(request, session, lambda: session.bus.ask(body.source, body.target, body.question, **options))


@router.post("/reply", summary="Reply to a message (Idempotency-Key honoured)")
async def reply(body: ReplyIn, session: SessionDep, request: Request) -> Response:
    to = state_of(request).kernel.catalogue.parse(body.to)
    return await keyed(
        request,
        session,
        lambda: session.bus.reply(to, body.text, source=body.source, content_type=body.content_type),
    )


@router.post("/split", summary="The chunk messages that would carry a message (pure)")
async def split(body: SplitIn, session: SessionDep, request: Request) -> Response:
    await session.bus.need("bus:write")
    return answer(session.bus.split(state_of(request).kernel.catalogue.parse(body.message)))


@router.get("/history", summary="Retained messages of an address with their positions, oldest first")
async def history(
    session: SessionDep,
    address: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> Response:
    entries = await session.bus.history_entries(address, after=after, limit=limit)
    return answer([{"position": position, "message": message} for position, message in entries])


@router.get("/dead_letters", summary="Messages a group gave up on")
async def dead_letters(
    session: SessionDep, address: str, group: str | None = None, limit: Annotated[int, Query(ge=1)] = 100
) -> Response:
    return answer(await session.bus.dead_letters(address, group=group, limit=limit))


@router.post("/replay", summary="Deliver a dead letter again (Idempotency-Key honoured)")
async def replay(body: ReplayIn, session: SessionDep, request: Request) -> Response:
    raw = body.dead_letter
    try:
        dead_at = datetime.fromisoformat(raw.dead_at)
    except ValueError:
        raise InvalidArgument("dead_at must be an ISO 8601 timestamp", details={"dead_at": raw.dead_at}) from None
    message = state_of(request).kernel.catalogue.parse(raw.message)
    letter = DeadLetter(raw.id, raw.address, raw.group, raw.position, message, raw.reason, raw.attempts, dead_at)
    return await keyed(request, session, lambda: session.bus.replay(letter))


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
    principal = await session.bus.need("bus:read")
    lease = state.leases.get(subscription, principal)
    if lease is not None:
        session.bus.own_or_channel(principal, lease.sub.address)
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
    principal = await session.bus.need("bus:read")
    session.bus.own_or_channel(principal, body.address)
    leases = state_of(request).leases

    async def settle() -> dict[str, bool]:
        acked = await leases.settle(session.tenant, body.address, body.group, body.position, body.lease_token, None)
        return {"acked": acked}

    return await keyed(request, session, settle)  # a retried ack (lost answer) gets the first answer back


@router.post(
    "/nack", summary="Give a delivery back for redelivery after delay_s: {nacked: bool} (Idempotency-Key honoured)"
)
async def nack(body: NackIn, session: SessionDep, request: Request) -> Response:
    principal = await session.bus.need("bus:read")
    session.bus.own_or_channel(principal, body.address)
    leases = state_of(request).leases

    async def settle() -> dict[str, bool]:
        nacked = await leases.settle(
            session.tenant, body.address, body.group, body.position, body.lease_token, body.delay_s
        )
        return {"nacked": nacked}

    return await keyed(request, session, settle)


@router.delete("/subscriptions/{subscription}", status_code=204, summary="Close a subscription now")
async def close_subscription(subscription: str, session: SessionDep, request: Request) -> Response:
    leases = state_of(request).leases
    lease = leases.get(subscription, await session.bus.need("bus:read"))
    if lease is not None:
        await leases.close(lease)
    return Response(status_code=204)
