"""The kernel's tools as CrewAI tools: ``crewai_tools(session)``.

Each is a CrewAI ``BaseTool`` over one :class:`sos_kernel.tools.Tool` (the same table the MCP server and the
LangChain tools use): its name, description, an ``args_schema`` model derived from the tool's JSON Schema, and a call
that runs as ``session``'s principal (a ``Session`` or a connected ``MumegaClient``) through its guard.

CrewAI runs tools synchronously, usually in threads of its own, while a kernel session lives on its event loop:
the tools remember the asyncio loop they were made on and run each call there, so make them inside the kernel's
running loop and run the crew off it (``await anyio.to_thread.run_sync(crew.kickoff)``). ``arun`` runs on the
caller's loop directly.

A refusal (an ``SOSError``) is returned as the tool's output, ``"<SOS code> <message>"``, so the agent's model reads
it and can correct its call; ``raise_errors=True`` raises :class:`KernelToolFailure` instead.

Needs the ``crewai`` extra: ``pip install 'sos-kernel[crewai]'``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

from ..errors import InvalidArgument, MissingDependency, SOSError

try:
    from crewai.tools import BaseTool
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        f"the CrewAI tools need the 'crewai' extra ({exc.name} is missing)",
        details={"pip": "pip install 'sos-kernel[crewai]'"},
    ) from exc

from ..api import SessionAPI
from ..contracts import TypeCatalogue
from ..tools import Tool, invoke, session_tools

__all__ = ["KernelCrewTool", "KernelToolFailure", "crewai_tools"]

_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list}


class KernelToolFailure(Exception):
    """A tool call the kernel refused: its text is ``"<SOS code> <message>"``; ``.error`` is the ``SOSError``."""

    def __init__(self, error: SOSError) -> None:
        super().__init__(str(error))
        self.error = error


def _field_type(prop: dict[str, Any]) -> Any:
    kind = prop.get("type")
    if kind == "object" or "$ref" in prop:
        return dict[str, Any]
    return _TYPES.get(kind, Any) if isinstance(kind, str) else Any


def args_model(tool: Tool, agent: str | None) -> type[BaseModel]:
    """A pydantic model of ``tool``'s arguments (optional ones default to None, which the tool reads as absent)."""
    schema = tool.schema_for(agent)
    required = set(schema.get("required", []))
    fields: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        kind, about = _field_type(prop), prop.get("description", "")
        fields[name] = (
            (kind, Field(description=about)) if name in required else (kind | None, Field(None, description=about))
        )
    model_name = "".join(part.title() for part in tool.name.split("_")) + "Arguments"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


class KernelCrewTool(BaseTool):  # type: ignore[misc]  # crewai is untyped here
    """One kernel tool as a CrewAI tool, acting as its session's principal."""

    _tool: Tool = PrivateAttr()
    _session: SessionAPI = PrivateAttr()
    _loop: asyncio.AbstractEventLoop | None = PrivateAttr(default=None)
    _raise_errors: bool = PrivateAttr(default=False)

    def bind(self, tool: Tool, session: SessionAPI, raise_errors: bool) -> KernelCrewTool:
        self._tool, self._session, self._raise_errors = tool, session, raise_errors
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        return self

    async def _call(self, arguments: dict[str, Any]) -> Any:
        try:
            return await invoke(self._tool, self._session, {k: v for k, v in arguments.items() if v is not None})
        except SOSError as exc:
            if self._raise_errors:
                raise KernelToolFailure(exc) from exc
            return str(exc)

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        return self._on_loop(self._call(kwargs))

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call(kwargs)

    def _on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise InvalidArgument("kernel CrewAI tools run on the event loop they were made on: make them inside it")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise InvalidArgument(
                "a kernel CrewAI tool was run synchronously on its own event loop, where it would block it: run the "
                "crew in a worker thread (await anyio.to_thread.run_sync(crew.kickoff)) or use kickoff_async"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def crewai_tools(
    session: SessionAPI,
    *,
    names: Iterable[str] | None = None,
    catalogue: TypeCatalogue | None = None,
    raise_errors: bool = False,
) -> list[KernelCrewTool]:
    """CrewAI tools acting as ``session``'s principal: the ones its scopes allow, or those named in ``names`` (an
    unknown name is a ``ValueError``). Listing is a convenience, not the check: every call passes the guard."""
    chosen = session_tools(session, names, catalogue)
    return [
        KernelCrewTool(name=t.name, description=t.description, args_schema=args_model(t, session.agent)).bind(
            t, session, raise_errors
        )
        for t in chosen
    ]
