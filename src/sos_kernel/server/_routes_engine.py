"""``POST /v1/engine/chat/stream``: a chat streamed as Server-Sent Events.

The non-streaming ``POST /v1/engine/chat`` is derived from its declaration (:mod:`sos_kernel.server._routes_ops`).
This route takes the same arguments (``stream`` aside), opens the stream first — so a refusal (no provider, no
funds, a bad argument, no provider delivering a first piece) is answered as JSON with its status, before any event —
then sends each text piece as an event ``piece`` with ``{"text"}`` and ends with an event ``reply`` carrying the
:class:`ChatReply`; the headers ``x-sos-provider`` and ``x-sos-tried`` name the provider it is committed to and every
provider called (comma-separated). A failure mid-stream is an ``error`` event with the SOS envelope. A client that
goes away closes the stream: it pays for the text it was sent.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..operations import declared
from ..providers import Engine
from ._bodies import parse_json
from ._http import SessionDep, state_of
from ._routes_ops import _Arguments
from ._streams import Emit, EventStream, sse_event

__all__ = ["router"]

router = APIRouter(prefix="/v1/engine", tags=["engine"])
_CHAT = _Arguments(declared(Engine)["chat"])
_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}


@router.post(
    "/chat/stream",
    summary="Chat, streamed as Server-Sent Events ('piece' events, then 'reply')",
    response_class=EventStream,
    status_code=200,
    responses={
        "4XX": {"description": "The SOS error envelope (bad input, auth, funds)", "content": _ENVELOPE},
        "5XX": {"description": "The SOS error envelope (no provider answered)", "content": _ENVELOPE},
    },
)
async def chat_stream(request: Request, session: SessionDep) -> Response:
    """Stream a chat: the arguments of ``POST /v1/engine/chat``, the answer as events."""
    body: Any = parse_json(await request.body())
    body = _CHAT.raw(request, body)
    body.pop("stream", None)
    kwargs = _CHAT.decode(body, state_of(request).kernel.catalogue)
    stream = await session.engine.chat(**kwargs, stream=True)

    async def run(emit: Emit) -> None:
        try:
            async for piece in stream:
                await emit(sse_event({"text": piece}, event="piece"))
            await emit(sse_event(stream.reply.model_dump(mode="json") if stream.reply else None, event="reply"))
        finally:
            await stream.aclose()

    tried = ",".join(stream.tried)  # provider ids are [a-z][a-z0-9-]*: safe in a header, no comma
    return EventStream(run, headers={"x-sos-provider": stream.provider, "x-sos-tried": tried})
