"""Two LangGraph agents on the bus: a lead posts a task with a bounty held in escrow, a worker does it, the lead
reviews the work and pays the bounty. Both graphs keep their state in the kernel (``KernelSaver``); the lead's graph
pauses on its question to the worker (``ask_node``) and resumes on the reply (``resume_on_reply``). Their "LLMs"
are LangChain's scripted fake chat models, so this runs with no model and no network.

Run: ``python examples/langgraph_team.py`` (``pip install 'sos-kernel[langgraph]'``). The task is a kernel task
(``task_create``: the bounty goes into escrow at once), the worker claims it and submits evidence and its result,
the lead's verdict (``task_review``) pays the worker from escrow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import sos_kernel
from sos_kernel.integrations.langchain import kernel_tools
from sos_kernel.integrations.langgraph import KernelSaver, ask_node, resume_on_reply

USD = "USD"
BOUNTY_MICROS = 2_000_000
HAIKU = "Messages in a line / each one acked, none lost, none twice / the queue sleeps, at peace"
TASK_ID = "haiku-queues"


def tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}


def result(message: BaseMessage) -> Any:
    """A tool's result, from the JSON text of its message."""
    return json.loads(str(message.content))


def scripted(script: Callable[[list[BaseMessage]], Iterator[AIMessage]]) -> tuple[GenericFakeChatModel, list[Any]]:
    """A fake chat model whose next answer is computed from the conversation so far (what a real model reads)."""
    seen: list[Any] = []
    return GenericFakeChatModel(messages=script(seen)), seen


def worker_script(seen: list[list[BaseMessage]]) -> Iterator[AIMessage]:
    yield AIMessage("Let me check my inbox.", tool_calls=[tool_call("inbox", {"wait_s": 5})])
    ask = result(seen[-1][-1])["messages"][0]["message"]
    yield AIMessage("Claim the task.", tool_calls=[tool_call("task_claim", {"task_id": TASK_ID})])
    token = result(seen[-1][-1])["token"]
    evidence = {
        "argv": ["write-haiku", "--topic", "queues"],
        "exit_status": 0,
        "output_sha256": hashlib.sha256(HAIKU.encode()).hexdigest(),
        "output_bytes": len(HAIKU.encode()),
    }
    work = {"task_id": TASK_ID, "claim_token": token, "evidence": [evidence], "result": {"haiku": HAIKU}}
    yield AIMessage("Submit it with its evidence.", tool_calls=[tool_call("task_submit", work)])
    thread = {"reply_to": ask["message_id"], "correlation_id": ask["message_id"]}
    yield AIMessage("Tell the lead.", tool_calls=[tool_call("send", {"to": "lead", "text": HAIKU, **thread})])
    yield AIMessage("Submitted my haiku for review.")


def lead_script(seen: list[list[BaseMessage]]) -> Iterator[AIMessage]:
    brief = {
        "title": "Write a haiku about queues",
        "id": TASK_ID,
        "reviewers": ["agent:lead"],
        "bounty": BOUNTY_MICROS,
        "currency": USD,
    }
    yield AIMessage("Post the task; its bounty goes into escrow.", tool_calls=[tool_call("task_create", brief)])
    work = str(seen[-1][-1].content)
    verdict = "approve" if "none lost, none twice" in work else "needs_changes"
    review = {"task_id": TASK_ID, "verdict": verdict, "reasons": ["the haiku is about queues"]}
    yield AIMessage(f"{verdict}: the haiku is about queues.", tool_calls=[tool_call("task_review", review)])
    yield AIMessage("Review done.")


def agent_graph(model: GenericFakeChatModel, seen: list[Any], tools: list[Any], saver: KernelSaver) -> Any:
    """A tool-calling agent loop: the model answers, its tool calls run as the agent, until it calls none."""

    async def think(state: MessagesState) -> dict[str, Any]:
        seen.append(state["messages"])
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("think", think)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "think")
    graph.add_conditional_edges("think", tools_condition)
    graph.add_edge("tools", "think")
    return graph.compile(checkpointer=saver)


def lead_graph(lead: Any, saver: KernelSaver) -> Any:
    """Post the task (its bounty in escrow), ask the worker (the graph pauses here), then review it."""
    model, seen = scripted(lead_script)
    tools = kernel_tools(lead, names=["task_create", "task_review"])

    async def think(state: MessagesState) -> dict[str, Any]:
        seen.append(state["messages"])
        return {"messages": [await model.ainvoke(state["messages"])]}

    def task(state: MessagesState) -> str:
        return f"Task {TASK_ID}: write a haiku about queues. Bounty {BOUNTY_MICROS / 1e6:.2f} USD, in escrow."

    def after_reply(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [HumanMessage(f"The worker answered: {state['reply']}")]}

    class LeadState(MessagesState):
        reply: str

    graph = StateGraph(LeadState)
    graph.add_node("post", think)
    graph.add_node("create", ToolNode(tools))
    graph.add_node("ask_worker", ask_node(lead, "worker", task, name="ask_worker"))
    graph.add_node("read_reply", after_reply)
    graph.add_node("review", think)
    graph.add_node("verdict", ToolNode(tools))
    for a, b in [(START, "post"), ("post", "create"), ("create", "ask_worker"), ("ask_worker", "read_reply")]:
        graph.add_edge(a, b)
    for a, b in [("read_reply", "review"), ("review", "verdict"), ("verdict", END)]:
        graph.add_edge(a, b)
    return graph.compile(checkpointer=saver)


async def main() -> None:
    async with sos_kernel.open("memory://") as kernel:
        _, _admin = await kernel.tenants.create("studio", plan="scale")
        view = kernel.tenant("studio")
        await view.ledger.open_account("system:treasury", USD, allow_negative=True)
        for agent in ("agent:lead", "agent:worker"):
            await view.ledger.open_account(agent, USD)
        await view.ledger.transfer(
            id="fund-lead", debit="system:treasury", credit="agent:lead", amount=5_000_000, currency=USD
        )
        lead = await kernel.session((await view.tokens.issue(agent="agent:lead")).secret)
        worker = await kernel.session((await view.tokens.issue(agent="agent:worker")).secret)
        saver = KernelSaver(kernel, tenant="studio")

        lead_run: Any = {"configurable": {"thread_id": "lead-haiku"}}
        posting = lead_graph(lead, saver)
        await posting.ainvoke({"messages": [HumanMessage("We need a haiku about queues.")]}, lead_run)
        waiting = await posting.aget_state(lead_run)
        print(f"lead: task posted, bounty in escrow, asked the worker; graph paused before {waiting.next}")

        model, seen = scripted(worker_script)
        working = agent_graph(
            model, seen, kernel_tools(worker, names=["inbox", "task_claim", "task_submit", "send"]), saver
        )
        work_run: Any = {"configurable": {"thread_id": "worker-inbox"}}
        done = await working.ainvoke({"messages": [HumanMessage("Do your work.")]}, work_run)
        print(f"worker: {done['messages'][-1].content}")

        reviewed = await resume_on_reply(posting, lead_run, lead, timeout_s=10)
        print(f"lead: {reviewed['messages'][-2].content}")
        task = await view.tasks.get(TASK_ID)
        print(f"task {task.id}: {task.status}, attempt {task.attempt}, done by {task.assignee}")
        if task.status != "done":
            raise SystemExit(f"the task ended {task.status}")
        for agent in ("agent:lead", "agent:worker"):
            balance = await view.ledger.balance(agent, USD)
            print(f"{agent}: {balance.available / 1e6:.2f} USD")
        if (await view.ledger.balance("agent:worker", USD)).available != BOUNTY_MICROS:
            raise SystemExit("the worker was not paid")


if __name__ == "__main__":
    anyio.run(main)
