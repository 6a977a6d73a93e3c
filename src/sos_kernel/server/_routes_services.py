"""SOS v0.4.1's ``POST /usage``: the one route kept in SOS's own shape (the others are derived, see
:mod:`sos_kernel.server._routes_ops`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from starlette.responses import Response

from ._bodies import UNIQUE_KEYS
from ._http import SessionDep, answer

__all__ = ["usage"]

usage = APIRouter(tags=["ledger"], dependencies=[UNIQUE_KEYS])


@usage.post("/usage", status_code=201, summary="SOS v0.4.1: record a usage event; answers {id, received_at}")
async def post_usage(session: SessionDep, event: Annotated[dict[str, Any], Body()]) -> Response:
    stored = await session.ledger.record_usage(event)
    return answer({"id": stored.id, "received_at": stored.received_at}, 201)
