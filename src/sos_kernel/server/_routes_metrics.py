"""``GET /metrics``: the kernel's Prometheus metrics (see :mod:`sos_kernel.ops.metrics`), for the operator only.

Per-tenant counters name tenants, so a tenant's token never reads them: without a metrics token only clients on
the loopback interface may (a scraper on the same host); with one (``create_app(metrics_token=...)``, ``sos serve
--metrics-token`` or ``$SOS_METRICS_TOKEN``) only its bearer or the server admin token may, from anywhere.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from ..errors import NotFound
from ._http import BEARER, bearer_token, state_of

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics (operator only: loopback, or the metrics token)")
async def metrics(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Response:
    state = state_of(request)
    if state.metrics is None:
        raise NotFound("metrics are off on this server (install 'sos-kernel[metrics]'; do not pass metrics=False)")
    state.check_metrics(bearer_token(credentials), request.client.host if request.client else None)
    from ..ops.metrics import CONTENT_TYPE

    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
