"""One MCP server over one session (or, mounted in the HTTP server, over the session of each request's token)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext

from .. import __version__
from ..api import SessionAPI
from ..contracts import TypeCatalogue
from ..errors import NotFound, SOSError
from ..tools import Toolbox, catalogue_of, invoke
from ..wire import encode, json_bytes

__all__ = ["INBOX_RESOURCE_MESSAGES_MAX", "INBOX_URI", "Resolve", "build_server", "create_server"]

INBOX_URI = "sos://inbox"
INBOX_RESOURCE_MESSAGES_MAX = 50
"""How many of the inbox's stored messages the ``sos://inbox`` resource shows."""

Resolve = Callable[[ServerRequestContext[Any]], Awaitable[SessionAPI]]
"""Finds the session a request acts as."""

INSTRUCTIONS = (
    "You are connected to an SOS kernel as one agent of one tenant. Every tool acts as you, with your token's "
    "rights; a refusal names an SOS error code (SOS-5004: not allowed, SOS-4040: not found, SOS-40xx: bad input). "
    "Start with 'status', read your 'inbox', talk with 'send'/'ask'/'broadcast', find others with 'peers'. "
    "Money is integer micros. Ids you choose (transfer ids, message ids) make retries safe."
)

ONBOARD = """\
Welcome, {agent}. You are an agent of tenant {tenant} on an SOS kernel. Work here follows one loop:

1. Claim: find work (the task tools when present, or messages in your 'inbox'), and claim it before you start,
   so no one else does it twice. Say what you take on with 'send' to whoever asked.
2. Evidence: do the work and keep what proves it: commands run, outputs, links, message ids. Send the evidence
   with your result ('send' to the requester, or submit it to the task).
3. Verdict: a reviewer (another agent or a human) accepts or rejects with reasons. On rejection, fix what the
   verdict names and submit again; on acceptance, payment (if any) moves through the ledger.

Useful at any time: 'status' (who you are, your scopes and wallet), 'peers' (who else is here), 'inbox' (what is
waiting; peek=true to look without consuming), 'ask' (a question that waits for its answer).
Every refusal carries an SOS code: SOS-5004 means your token may not do that; fix the call, do not retry as is.
"""


def _text(value: Any) -> str:
    return json_bytes(value).decode()


def _failure(exc: SOSError) -> types.CallToolResult:
    envelope = exc.to_wire()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{exc}\n{_text(envelope)}")],
        structured_content=envelope,
        is_error=True,
    )


def build_server(resolve: Resolve, catalogue: TypeCatalogue, name: str = "sos-kernel") -> Server[Any]:
    """The MCP server whose every request acts as the session ``resolve`` finds for it."""
    toolbox = Toolbox(catalogue)

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        session = await resolve(ctx)
        principal = await session.refresh()
        shown = [t for t in toolbox.tools.values() if t.listed_for(principal.allows)]
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.schema_for(principal.agent))
                for t in shown
            ]
        )

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        try:
            tool = toolbox.tools.get(params.name)
            if tool is None:
                raise NotFound(f"no tool {params.name!r}", details={"tool": params.name})
            session = await resolve(ctx)
            result = await invoke(tool, session, params.arguments or {})
        except SOSError as exc:
            return _failure(exc)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=_text(result))], structured_content={"result": result}
        )

    async def list_resources(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        inbox = types.Resource(
            uri=INBOX_URI,
            name="inbox",
            description=f"Your inbox's latest stored messages (up to {INBOX_RESOURCE_MESSAGES_MAX}); reading "
            "consumes nothing",
            mime_type="application/json",
        )
        return types.ListResourcesResult(resources=[inbox])

    async def read_resource(ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        if str(params.uri) != INBOX_URI:
            raise ValueError(f"no resource {params.uri}")
        session = await resolve(ctx)
        agent = session.agent
        if agent is None:
            raise ValueError("this token is not bound to an agent: it has no inbox")
        entries = await session.bus.history_entries(agent, limit=INBOX_RESOURCE_MESSAGES_MAX)
        body = [{"position": p, "message": encode(m)} for p, m in entries]
        contents = types.TextResourceContents(uri=INBOX_URI, mime_type="application/json", text=json.dumps(body))
        return types.ReadResourceResult(contents=[contents])

    async def list_prompts(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        onboard = types.Prompt(name="onboard", description="How work flows here: claim, evidence, verdict")
        return types.ListPromptsResult(prompts=[onboard])

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> Any:
        if params.name != "onboard":
            raise ValueError(f"no prompt {params.name!r}")
        session = await resolve(ctx)
        text = ONBOARD.format(agent=session.agent or "tenant-wide token", tenant=session.tenant)
        message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))
        return types.GetPromptResult(description="claim, evidence, verdict", messages=[message])

    return Server(
        name,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


def create_server(session: SessionAPI, *, catalogue: TypeCatalogue | None = None) -> Server[Any]:
    """The MCP server of ``session`` (a ``Session`` or a ``MumegaClient``): every tool runs as its principal.

    ``catalogue`` reads messages given to the derived ``bus_*`` tools (default: the client's, else the core
    types); pass the kernel's when it knows custom types.
    """
    found = catalogue_of(session, catalogue)

    async def resolve(ctx: ServerRequestContext[Any]) -> SessionAPI:
        return session

    return build_server(resolve, found)
