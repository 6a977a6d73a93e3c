"""The kernel's tools as LangChain tools: ``kernel_tools(session)``.

Each tool is a ``langchain_core`` ``StructuredTool`` over one :class:`sos_kernel.tools.Tool` (the same table the MCP
server serves): its name, description and JSON Schema, and an async call that runs as ``session``'s principal (a
``Session`` from ``kernel.session(token)`` or a connected ``MumegaClient``), through that principal's guard. Ids the
tools take (``message_id``, a transfer's ``id``, ``invocation_id``) make retries safe.

Errors: an ``SOSError`` becomes a :class:`KernelToolError` (a ``ToolException``) whose text starts with the SOS code
(``SOS-5004 ...``) and which keeps the original as ``.error``. Tools are built with ``handle_tool_error=True`` so an
agent's model reads that text as the tool's answer and can correct its call; pass ``handle_tool_error=False`` to
have it raised instead. Calls are async only (``ainvoke``): a kernel session lives on its event loop.

Needs the ``langchain`` extra: ``pip install 'sos-kernel[langchain]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import MissingDependency, SOSError

try:
    from langchain_core.tools import BaseTool, StructuredTool, ToolException
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        f"the LangChain tools need the 'langchain' extra ({exc.name} is missing)",
        details={"pip": "pip install 'sos-kernel[langchain]'"},
    ) from exc

from ..api import SessionAPI
from ..contracts import TypeCatalogue
from ..tools import Tool, invoke, session_tools

__all__ = ["KernelToolError", "kernel_tools"]


class KernelToolError(ToolException):
    """A tool call the kernel refused: its text is ``"<SOS code> <message>"``; ``.error`` is the ``SOSError``."""

    def __init__(self, error: SOSError) -> None:
        super().__init__(str(error))
        self.error = error


def _coroutine(tool: Tool, session: SessionAPI) -> Callable[..., Any]:
    async def run(**arguments: Any) -> Any:
        try:
            return await invoke(tool, session, {k: v for k, v in arguments.items() if v is not None})
        except SOSError as exc:
            raise KernelToolError(exc) from exc

    return run


def _langchain_tool(tool: Tool, session: SessionAPI, handle_tool_error: bool) -> BaseTool:
    return StructuredTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.schema_for(session.agent),
        coroutine=_coroutine(tool, session),
        handle_tool_error=handle_tool_error,
    )


def kernel_tools(
    session: SessionAPI,
    *,
    names: Iterable[str] | None = None,
    catalogue: TypeCatalogue | None = None,
    handle_tool_error: bool = True,
) -> list[BaseTool]:
    """LangChain tools acting as ``session``'s principal: the ones its scopes allow (all of them when ``names`` is
    given and they are named there; an unknown name is a ``ValueError``).

    Listing is a convenience, not the check: every call still passes the session's guard.
    """
    chosen = session_tools(session, names, catalogue)
    return [_langchain_tool(t, session, handle_tool_error) for t in chosen]
