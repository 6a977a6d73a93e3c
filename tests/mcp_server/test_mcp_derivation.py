"""A service added to ``SERVICES`` gets its MCP tools from its declarations alone: named by ``tool=`` (default
``<service>_<name>``), kept out with ``tool=""``, its JSON Schema derived, the caller's own arguments defaulting to
the session's agent, and every call passing the session's guard."""

from __future__ import annotations

from typing import Any

import pytest

import sos_kernel
from sos_kernel import tools as _tools
from sos_kernel.contracts import TypeCatalogue
from sos_kernel.guard import Caller, guard
from sos_kernel.operations import declared, operation, service

from .conftest import mcp_client, ok, refused, seed

pytestmark = pytest.mark.anyio


@service("notes")
class Notes:
    """A service that is not in the kernel: only its declarations exist."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, str, str]] = []

    @operation("bus:write", own={"agent": "agent"}, tool="note_remember")
    async def remember(self, namespace: str, text: str, *, agent: str) -> dict[str, Any]:
        """Keep a note for ``agent``."""
        self.kept.append((agent, namespace, text))
        return {"agent": agent, "namespace": namespace, "count": len(self.kept)}

    @operation("bus:read")
    async def count(self, namespace: str) -> int:
        """How many notes ``namespace`` holds."""
        return sum(1 for _, n, _ in self.kept if n == namespace)

    @operation("bus:read", tool="")
    async def internal(self) -> int:
        """Not for MCP clients."""
        return 0


@pytest.fixture
def with_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tools, "SERVICES", (*_tools.SERVICES, Notes))


@pytest.mark.usefixtures("with_notes")
def test_a_new_service_gets_tools_from_its_declarations() -> None:
    tools = _tools.Toolbox(TypeCatalogue()).tools
    assert "note_remember" in tools
    assert "notes_count" in tools
    assert "notes_internal" not in tools
    assert "internal" not in tools
    schema = tools["note_remember"].schema
    assert set(schema["properties"]) == {"namespace", "text", "agent"}
    assert schema["properties"]["text"]["type"] == "string"
    assert tools["note_remember"].schema_for("agent:alice")["required"] == ["namespace", "text"]


@pytest.mark.usefixtures("with_notes")
async def test_its_tools_run_behind_the_sessions_guard(kernel: sos_kernel.Kernel) -> None:
    _, tokens = await seed(kernel)
    session = await kernel.session(tokens["alice"])
    notes = Notes()
    session.notes = guard(notes, Caller(session.principal, session.refresh, lambda principal, reason: None))
    async with mcp_client(session, kernel) as alice:
        kept = ok(await alice.call_tool("note_remember", {"namespace": "n", "text": "hello"}))
        refused(
            await alice.call_tool("note_remember", {"namespace": "n", "text": "x", "agent": "agent:bob"}), "SOS-5004"
        )
        assert ok(await alice.call_tool("notes_count", {"namespace": "n"})) == 1
        refused(await alice.call_tool("notes_internal", {}), "SOS-4040")
    assert kept == {"agent": "agent:alice", "namespace": "n", "count": 1}
    assert notes.kept == [("agent:alice", "n", "hello")]


def test_a_tool_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValueError, match="tool name"):
        operation("bus:read", tool="Not A Name")
    assert declared(Notes)["remember"].tool_name == "note_remember"
    assert declared(Notes)["count"].tool_name == "notes_count"
    assert declared(Notes)["internal"].tool_name == ""


REQUIRED_TOOLS: dict[str | None, dict[str, tuple[str, ...]]] = {
    None: {"send": ("to", "text"), "inbox": ("limit",), "peers": (), "status": ()},
    "tasks": {
        "task_create": ("title",),
        "task_list": (),
        "task_claim": (),
        "task_submit": (),
        "task_review": (),
        "task_board": (),
    },
    "memory": {"remember": ("namespace", "text"), "recall": ("namespace", "query", "k")},
}
"""Tool names (and arguments) that clients outside this repository rely on; a service's once it is served."""


def test_the_tool_names_clients_rely_on_exist() -> None:
    tools = _tools.Toolbox(TypeCatalogue()).tools
    served = {op.service for cls in _tools.SERVICES for op in declared(cls).values()}
    for service_name, required in REQUIRED_TOOLS.items():
        if service_name is not None and service_name not in served:
            continue  # that service is not served yet: its declarations will name its tools (tool=...)
        for name, arguments in required.items():
            assert name in tools, f"no MCP tool {name!r} (name it with @operation(..., tool={name!r}))"
            assert set(arguments) <= set(tools[name].schema["properties"]), (name, arguments)
