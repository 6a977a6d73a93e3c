"""``kernel_tools(session)``: the kernel's tools through LangChain's own invocation paths (``ainvoke`` with
arguments, with a model's tool call, and LangGraph's ``ToolNode``), as the session's principal, on every backend and
through the remote client."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from sos_kernel.integrations.langchain import KernelToolError, kernel_tools

from ..tenants import seed
from .conftest import Acme

pytestmark = pytest.mark.anyio


def by_name(session: Any, **options: Any) -> dict[str, Any]:
    return {t.name: t for t in kernel_tools(session, **options)}


def posted(balance: dict[str, Any]) -> int:
    return int(balance["credits_posted"]) - int(balance["debits_posted"])


def call(name: str, args: dict[str, Any], call_id: str = "call-1") -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


async def test_tools_are_named_and_send_reaches_the_inbox(acme: Acme) -> None:
    alice, bob = by_name(acme.sessions["alice"]), by_name(acme.sessions["bob"])
    assert {"send", "inbox", "peers", "ask", "transfer", "wallet_balance", "skills_find", "skill_invoke"} <= set(alice)
    sent = await alice["send"].ainvoke({"to": "bob", "text": "hello bob"})
    assert sent["address"] == "agent:bob"
    found = await bob["inbox"].ainvoke({"limit": 5})
    assert [m["message"]["payload"]["text"] for m in found["messages"]] == ["hello bob"]
    assert found["messages"][0]["message"]["source"] == "agent:alice"


async def test_a_model_tool_call_pays_once_per_id(acme: Acme) -> None:
    alice = by_name(acme.sessions["alice"])
    args = {"id": "pay-1", "to": "bob", "amount_micros": 30}
    first = await alice["transfer"].ainvoke(call("transfer", args))
    again = await alice["transfer"].ainvoke(call("transfer", args, "call-2"))
    assert isinstance(first, ToolMessage)
    assert first.status == "success"
    assert again.status == "success"
    balance = await alice["wallet_balance"].ainvoke({"currency": "USD"})
    assert posted(balance) == 70


async def test_a_refusal_is_a_tool_error_the_model_reads(acme: Acme) -> None:
    alice = by_name(acme.sessions["alice"])
    message = await alice["transfer"].ainvoke(call("transfer", {"id": "pay-2", "to": "bob", "amount_micros": 10**9}))
    assert message.status == "error"
    assert message.content.startswith("SOS-7001")
    assert posted(await alice["wallet_balance"].ainvoke({})) == 100


async def test_a_refusal_raises_when_not_handled(acme: Acme) -> None:
    alice = by_name(acme.sessions["alice"], handle_tool_error=False)
    with pytest.raises(KernelToolError) as caught:
        await alice["bus_publish"].ainvoke({"message": {"type": "sned"}})
    assert caught.value.error.code.startswith("SOS-4")
    assert str(caught.value).startswith(caught.value.error.code)


async def test_a_tool_acts_only_as_its_principal(acme: Acme) -> None:
    alice = by_name(acme.sessions["alice"], names=["ledger_transfer_many"], handle_tool_error=False)
    spend = {"id": "steal", "debit": "agent:bob", "credit": "agent:alice", "amount": 50, "currency": "USD"}
    with pytest.raises(KernelToolError) as caught:
        await alice["ledger_transfer_many"].ainvoke({"transfers": [spend]})
    assert caught.value.error.code == "SOS-5004"
    assert posted(await by_name(acme.sessions["bob"])["wallet_balance"].ainvoke({})) == 100


async def test_langgraph_tool_node_runs_the_tools(acme: Acme) -> None:
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(kernel_tools(acme.sessions["alice"])))
    graph.add_edge(START, "tools")
    node = graph.compile()
    asked = AIMessage(
        content="",
        tool_calls=[call("send", {"to": "carol", "text": "from a graph"}, "c1"), call("peers", {}, "c2")],
    )
    out = await node.ainvoke({"messages": [asked]})
    assert [m.status for m in out["messages"][1:]] == ["success", "success"]
    carol = await by_name(acme.sessions["carol"])["inbox"].ainvoke({})
    assert carol["messages"][0]["message"]["payload"]["text"] == "from a graph"


async def test_tenants_are_isolated_through_the_tools(acme: Acme, connect: Any) -> None:
    _, tokens = await seed(acme.kernel, "beta")
    intruder = by_name(await connect(tokens["alice"]))
    await intruder["send"].ainvoke({"to": "bob", "text": "from beta"})
    assert (await by_name(acme.sessions["bob"])["inbox"].ainvoke({}))["messages"] == []
    assert posted(await intruder["wallet_balance"].ainvoke({})) == 100
    await intruder["transfer"].ainvoke({"id": "x", "to": "bob", "amount_micros": 40})
    assert posted(await by_name(acme.sessions["bob"])["wallet_balance"].ainvoke({})) == 100


async def test_an_unknown_tool_name_is_refused(acme: Acme) -> None:
    with pytest.raises(ValueError, match="no kernel tool 'sned'"):
        kernel_tools(acme.sessions["alice"], names=["sned"])
