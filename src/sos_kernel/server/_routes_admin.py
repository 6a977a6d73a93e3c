"""Administration: tenants (server admin token), tokens (the tenant's ``admin`` scope), and ``GET /health``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from .. import __version__
from ..errors import KernelClosed
from ..identity.models import ADMIN_SCOPE
from ..wire import encode
from ._bodies import UNIQUE_KEYS, TenantIn, TokenIn
from ._http import BEARER, SessionDep, answer, bearer_token, keyed, state_of

__all__ = ["router"]

router = APIRouter(tags=["admin"], dependencies=[UNIQUE_KEYS])


@router.get("/health", summary="Liveness: {status, version}")
async def health(request: Request) -> Response:
    if state_of(request).kernel.closed:
        raise KernelClosed("the kernel behind this server is closed")
    return answer({"status": "ok", "version": __version__})


@router.post("/v1/tenants", status_code=201, summary="Create a tenant: {tenant, admin_token} (server admin token)")
async def create_tenant(
    body: TenantIn,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Response:
    state = state_of(request)
    state.check_admin(bearer_token(credentials))
    tenant, admin_token = await state.kernel.tenants.create(body.slug, body.plan, seats=body.seats)
    return answer({"tenant": tenant, "admin_token": admin_token}, 201)


@router.post("/v1/tokens", status_code=201, summary="Issue a token of the caller's tenant (admin scope)")
async def issue_token(body: TokenIn, session: SessionDep, request: Request) -> Response:
    await session.need(ADMIN_SCOPE)
    tokens = state_of(request).kernel.tenant(session.tenant).tokens
    options = body.model_dump(exclude_unset=True)
    return await keyed(request, session, lambda: tokens.issue(**options), 201)


@router.get("/v1/tokens", summary="The tenant's tokens, never their secrets (admin scope)")
async def list_tokens(session: SessionDep, request: Request) -> Response:
    await session.need(ADMIN_SCOPE)
    return answer(await state_of(request).kernel.tenant(session.tenant).tokens.list())


@router.delete("/v1/tokens/{token_id}", status_code=204, summary="Revoke a token (admin scope)")
async def revoke_token(token_id: str, session: SessionDep, request: Request) -> Response:
    await session.need(ADMIN_SCOPE)
    await state_of(request).kernel.tenant(session.tenant).tokens.revoke(token_id)
    return Response(status_code=204)


@router.get("/v1/session", summary="Who the bearer token is: {tenant, agent, scopes, token_id} (re-validated)")
async def whoami(session: SessionDep) -> Response:
    principal = await session.refresh()
    return answer({**encode(principal), "scopes": sorted(principal.scopes)})
