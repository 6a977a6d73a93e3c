"""A worker for the two-process LangGraph test: ``start URL TOKEN THREAD`` runs a graph whose node asks bob over the
bus and pauses; it prints READY once the graph is checkpointed and waits to be killed. ``resume URL TOKEN THREAD``
resumes it on bob's reply from the kernel-stored checkpoint and prints the result."""

from __future__ import annotations

import json
import sys
from typing import Any, TypedDict

import anyio

import sos_kernel
from sos_kernel.integrations.langgraph import KernelSaver, ask_node, resume_on_reply

ID_KEY = bytes.fromhex("6c0b9f3e2d1a48570e4f3c2b1a098877")
"""The question-id key both processes share (a deployment secret in real use), so the resumed node asks once."""


class Review(TypedDict, total=False):
    draft: str
    reply: str


def review_graph(kernel: sos_kernel.Kernel, session: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(Review)
    graph.add_node(
        "ask", ask_node(session, "bob", lambda state: f"please review: {state['draft']}", name="review", id_key=ID_KEY)
    )
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile(checkpointer=KernelSaver(kernel, tenant=session.tenant))


async def main(mode: str, url: str, token: str, thread: str) -> None:
    config: Any = {"configurable": {"thread_id": thread}}
    async with sos_kernel.open(url) as kernel:
        session = await kernel.session(token)
        graph = review_graph(kernel, session)
        if mode == "start":
            await graph.ainvoke({"draft": "v1"}, config)
            print("READY", flush=True)
            await anyio.sleep(3600)  # held open until the test kills this process
        else:
            result = await resume_on_reply(graph, config, session, timeout_s=30)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])
