"""``/v1/registry/*``, ``/v1/ledger/*``, ``/v1/skills/*`` and SOS v0.4.1's ``POST /usage``.

Each route is one session method: the same arguments (as a JSON body or query parameters), the same checks and
errors, and the result in its wire form (see :mod:`sos_kernel.wire`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BeforeValidator, ValidationError
from starlette.responses import Response

from ..contracts import validation_details
from ..errors import InvalidArgument, SchemaViolation
from ..identity.capability import Capability
from ..identity.keys import PublicKey
from ..ledger import Balance
from ..registry import AgentStatus
from ..wire import encode
from ._bodies import (
    CaptureIn,
    HoldIn,
    InvocationIn,
    NameIn,
    OpenAccountIn,
    PublishSkillIn,
    RecordUsageIn,
    RegisterIn,
    ResolveDisputeIn,
    SetPriceIn,
    SetRateIn,
    TransferIn,
    TransferManyIn,
    TransmuteIn,
    VerifyIn,
    VoidIn,
)
from ._http import SessionDep, answer, keyed

__all__ = ["ledger", "registry", "skills", "usage"]

registry = APIRouter(prefix="/v1/registry", tags=["registry"])
ledger = APIRouter(prefix="/v1/ledger", tags=["ledger"])
skills = APIRouter(prefix="/v1/skills", tags=["skills"])
usage = APIRouter(tags=["ledger"])

Limit = Annotated[int, Query(ge=1)]


def _iso_timestamp(value: Any) -> Any:
    # A number would otherwise be read as Unix seconds: ``since=2026`` is not the year 2026 but 1970.
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO 8601 timestamp with its offset, like 2026-11-01T10:00:00Z") from None


Timestamp = Annotated[datetime, BeforeValidator(_iso_timestamp)]


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- registry ---------------------------------------------------------------------------------------------------


@registry.post("/register", summary="Register or update an agent card")
async def register(body: RegisterIn, session: SessionDep) -> Response:
    key = PublicKey.from_hex(body.public_key) if body.public_key is not None else None
    found = await session.registry.register(
        body.card, public_key=key, endpoints=body.endpoints, signature=body.signature
    )
    return answer(found)


@registry.post("/heartbeat", summary="Mark an agent seen now")
async def heartbeat(body: NameIn, session: SessionDep) -> Response:
    return answer(await session.registry.heartbeat(body.name))


@registry.post("/deregister", summary="Remove an agent (Idempotency-Key honoured)")
async def deregister(body: NameIn, session: SessionDep, request: Request) -> Response:
    return await keyed(request, session, lambda: session.registry.deregister(body.name))


@registry.get("/get", summary="One agent")
async def get_agent(session: SessionDep, name: str) -> Response:
    return answer(await session.registry.get(name))


@registry.get("/status", summary="An agent's status: {status: online|stale|offline|null}")
async def status(session: SessionDep, name: str) -> Response:
    found: AgentStatus | None = await session.registry.status(name)
    return answer({"status": found})


@registry.get("/find", summary="Agents matching every filter given")
async def find_agents(
    session: SessionDep,
    skill: str | None = None,
    role: str | None = None,
    squad: str | None = None,
    tool: str | None = None,
    status: AgentStatus | None = None,
) -> Response:
    filters = _given(skill=skill, role=role, squad=squad, tool=tool, status=status)
    return answer(await session.registry.find(**filters))


# -- ledger -----------------------------------------------------------------------------------------------------


def _balance(found: Balance) -> dict[str, Any]:
    # The computed views travel too, for readers of the raw JSON; clients rebuild them from the fields.
    return {**encode(found), "posted": found.posted, "pending": found.pending, "available": found.available}


@ledger.post("/open_account", summary="Open an account (idempotent)")
async def open_account(body: OpenAccountIn, session: SessionDep) -> Response:
    return answer(await session.ledger.open_account(body.owner, body.currency, body.allow_negative))


@ledger.get("/balance", summary="An account's balance")
async def balance(session: SessionDep, owner: str, currency: str) -> Response:
    return answer(_balance(await session.ledger.balance(owner, currency)))


@ledger.get("/balances", summary="Every account of the tenant (ledger:admin)")
async def balances(session: SessionDep) -> Response:
    return answer([_balance(b) for b in await session.ledger.balances()])


@ledger.post("/transfer", summary="Move money now (idempotent by id)")
async def transfer(body: TransferIn, session: SessionDep) -> Response:
    fields = body.model_dump(exclude_unset=True)
    return answer(await session.ledger.transfer(**fields))


@ledger.post("/transfer_many", summary="A linked batch: all or none (idempotent by ids)")
async def transfer_many(body: TransferManyIn, session: SessionDep) -> Response:
    batch = [t.model_dump(exclude_unset=True) for t in body.transfers]
    return answer(await session.ledger.transfer_many(batch))


@ledger.post("/hold", summary="Reserve money for later capture (idempotent by id)")
async def hold(body: HoldIn, session: SessionDep) -> Response:
    return answer(await session.ledger.hold(**body.model_dump(exclude_unset=True)))


@ledger.post("/capture", summary="Post a hold, fully or partly (idempotent by id)")
async def capture(body: CaptureIn, session: SessionDep) -> Response:
    return answer(await session.ledger.capture(body.hold_id, body.amount, id=body.id))


@ledger.post("/void", summary="Release a hold (idempotent by id)")
async def void(body: VoidIn, session: SessionDep) -> Response:
    return answer(await session.ledger.void(body.hold_id, id=body.id))


@ledger.get("/get_transfer", summary="A recorded transfer by id")
async def get_transfer(session: SessionDep, id: str) -> Response:
    return answer(await session.ledger.get_transfer(id))


@ledger.get("/history", summary="Applied transfers of an account, oldest first")
async def history(
    session: SessionDep, owner: str, currency: str, after: Annotated[int, Query(ge=0)] = 0, limit: Limit = 100
) -> Response:
    return answer(await session.ledger.history(owner, currency, after=after, limit=limit))


@ledger.post("/transmute", summary="Convert between currencies (idempotent by id)")
async def transmute(body: TransmuteIn, session: SessionDep) -> Response:
    return answer(await session.ledger.transmute(**body.model_dump(exclude_unset=True)))


def _instant(value: str | None, name: str) -> datetime | None:
    # the service says what is wrong with a naive time; text that is no time at all is refused the same way here
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{name} must be a timezone-aware datetime") from None


@ledger.post("/set_rate", summary="Set an exchange rate and its validity (ledger:admin)")
async def set_rate(body: SetRateIn, session: SessionDep) -> Response:
    found = await session.ledger.set_rate(
        body.from_currency,
        body.to_currency,
        rate_num=body.rate_num,
        rate_den=body.rate_den,
        valid_from=_instant(body.valid_from, "valid_from"),
        valid_until=_instant(body.valid_until, "valid_until"),
        exchange=body.exchange,
    )
    return answer(found)


@ledger.get("/rate", summary="The exchange rate in force (now or at a time), or null")
async def rate(session: SessionDep, from_currency: str, to_currency: str, at: Timestamp | None = None) -> Response:
    return answer(await session.ledger.rate(from_currency, to_currency, at=at))


@ledger.post("/check", status_code=204, summary="Verify the ledger's invariants (ledger:admin)")
async def check(session: SessionDep) -> Response:
    await session.ledger.check()
    return Response(status_code=204)


@ledger.post("/set_price", summary="Set what a provider's model costs (ledger:admin)")
async def set_price(body: SetPriceIn, session: SessionDep) -> Response:
    prices = body.model_dump(exclude_unset=True, exclude={"provider", "model"})
    return answer(await session.ledger.set_price(body.provider, body.model, **prices))


@ledger.get("/price", summary="The price of a provider's model, or null")
async def price(session: SessionDep, provider: str, model: str) -> Response:
    return answer(await session.ledger.price(provider, model))


@ledger.post("/record_usage", summary="Record a usage event (idempotent by its id)")
async def record_usage(body: RecordUsageIn, session: SessionDep) -> Response:
    return answer(await session.ledger.record_usage(body.event, settle=body.settle))


@ledger.get("/usage", summary="Stored usage events, oldest first (ledger:admin)")
async def list_usage(
    session: SessionDep,
    provider: str | None = None,
    model: str | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    limit: Limit = 1000,
) -> Response:
    filters = _given(provider=provider, model=model, since=since, until=until)
    return answer(await session.ledger.usage(limit=limit, **filters))


@ledger.get("/usage_summary", summary="Usage sums grouped by keys and an optional window (ledger:admin)")
async def usage_summary(
    session: SessionDep,
    group_by: Annotated[list[str] | None, Query()] = None,
    window: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
) -> Response:
    options = _given(group_by=group_by, window=window, provider=provider, model=model, since=since, until=until)
    return answer(await session.ledger.usage_summary(**options))


@usage.post("/usage", status_code=201, summary="SOS v0.4.1: record a usage event; answers {id, received_at}")
async def post_usage(session: SessionDep, event: Annotated[dict[str, Any], Body()]) -> Response:
    stored = await session.ledger.record_usage(event)
    return answer({"id": stored.id, "received_at": stored.received_at}, 201)


# -- skills -----------------------------------------------------------------------------------------------------


def _chain(links: list[dict[str, Any]]) -> list[Capability]:
    try:
        return [Capability.model_validate(link) for link in links]
    except ValidationError as exc:
        raise SchemaViolation("a capability fails its schema", details=validation_details(exc)) from None


@skills.post("/publish", summary="Publish a skill version (idempotent by id and version)")
async def publish(body: PublishSkillIn, session: SessionDep) -> Response:
    options: dict[str, Any] = {}
    if "publisher" in body.model_fields_set:
        options["publisher"] = body.publisher
    if body.capability is not None:
        options["capability"] = _chain(body.capability)
    return answer(await session.skills.publish(body.card, **options))


@skills.get("/get", summary="A skill: latest release, exact version or range")
async def get_skill(session: SessionDep, skill_id: str, version: str | None = None) -> Response:
    return answer(await session.skills.get(skill_id, version))


@skills.get("/versions", summary="Published versions, oldest first")
async def versions(session: SessionDep, skill_id: str) -> Response:
    return answer(await session.skills.versions(skill_id))


@skills.get("/find", summary="The latest release of every skill matching all filters")
async def find_skills(
    session: SessionDep,
    tag: str | None = None,
    backend: str | None = None,
    author: str | None = None,
    status: str | None = None,
    listed: bool | None = None,
) -> Response:
    filters = _given(tag=tag, backend=backend, author=author, status=status, listed=listed)
    return answer(await session.skills.find(**filters))


@skills.get("/marketplace", summary="Listed skills, best first")
async def marketplace(session: SessionDep, limit: Limit = 50, offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    return answer(await session.skills.marketplace(limit=limit, offset=offset))


@skills.get("/ancestors", summary="Skills this one derives from, nearest first")
async def ancestors(session: SessionDep, skill_id: str) -> Response:
    return answer(await session.skills.ancestors(skill_id))


@skills.get("/descendants", summary="Skills deriving from this one, nearest first")
async def descendants(session: SessionDep, skill_id: str) -> Response:
    return answer(await session.skills.descendants(skill_id))


@skills.post("/verify", summary="Record a verification verdict (Idempotency-Key honoured)")
async def verify(body: VerifyIn, session: SessionDep, request: Request) -> Response:
    verdict = body.model_dump(exclude_unset=True, exclude={"skill_id", "version", "verifier"})
    return await keyed(
        request,
        session,
        lambda: session.skills.verify(body.skill_id, body.version, verifier=body.verifier, **verdict),
    )


@skills.post("/resolve_dispute", summary="Close a dispute with a fresh verdict (Idempotency-Key honoured)")
async def resolve_dispute(body: ResolveDisputeIn, session: SessionDep, request: Request) -> Response:
    return await keyed(
        request,
        session,
        lambda: session.skills.resolve_dispute(body.skill_id, body.version, verifier=body.verifier, status=body.status),
    )


@skills.post("/record_invocation", summary="Count (and charge) one invocation (idempotent by invocation_id)")
async def record_invocation(body: InvocationIn, session: SessionDep) -> Response:
    found = await session.skills.record_invocation(
        body.skill_id, body.version, caller=body.caller, tenant=body.tenant, invocation_id=body.invocation_id
    )
    return answer(found)
