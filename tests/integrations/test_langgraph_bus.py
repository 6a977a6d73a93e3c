"""Durable waits on the bus: a graph asks another agent and pauses; the process is killed; the answer comes; a
second process resumes the graph from the kernel-stored checkpoint. Then the same in one process, and the refusals."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.errors import AskTimeout, InvalidArgument
from sos_kernel.integrations.langgraph import _ask_id, ask_node, resume_on_reply

from ..conftest import requires
from ..procs import WorkerProcess
from ..tenants import seed
from .graph_worker import review_graph

pytestmark = pytest.mark.anyio
WORKER = str(Path(__file__).with_name("graph_worker.py"))


async def answer_in_inbox(view: Any, agent: str, text: str) -> Any:
    async with view.bus.subscribe(agent) as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        await view.bus.reply(delivery.message, text)
        await delivery.ack()
        return delivery.message


@pytest.mark.slow
async def test_a_wait_survives_the_process_that_started_it(
    kernel: sos_kernel.Kernel, kernel_url: str, implements: Implements
) -> None:
    requires(implements, multi_process=True)
    view, tokens = await seed(kernel)
    starter = WorkerProcess(WORKER, "start", kernel_url, tokens["alice"], "t-1")
    try:
        starter.wait_ready()
    finally:
        starter.stop()  # killed while waiting
    asked = await answer_in_inbox(view, "agent:bob", "looks good")
    assert asked.payload.text == "please review: v1"
    lines = WorkerProcess(WORKER, "resume", kernel_url, tokens["alice"], "t-1").finish()
    assert json.loads(lines[-1]) == {"draft": "v1", "reply": "looks good"}
    assert await view.bus.history_entries("agent:bob") != []
    assert len(await view.bus.history_entries("agent:bob")) == 1  # asked once, though the node ran twice


async def test_a_wait_resumes_in_the_same_process(kernel: sos_kernel.Kernel) -> None:
    view, tokens = await seed(kernel)
    alice = await kernel.session(tokens["alice"])
    graph = review_graph(kernel, alice)
    config: Any = {"configurable": {"thread_id": "t-2"}}
    await graph.ainvoke({"draft": "v2"}, config)
    await answer_in_inbox(view, "agent:bob", "ship it")
    done = await resume_on_reply(graph, config, alice, timeout_s=5)
    assert done == {"draft": "v2", "reply": "ship it"}
    with pytest.raises(InvalidArgument, match="not waiting"):
        await resume_on_reply(graph, config, alice, timeout_s=1)


async def test_no_reply_is_a_timeout_and_another_tenant_cannot_answer(kernel: sos_kernel.Kernel) -> None:
    _, tokens = await seed(kernel)
    beta, _ = await seed(kernel, "beta")
    alice = await kernel.session(tokens["alice"])
    graph = review_graph(kernel, alice)
    config: Any = {"configurable": {"thread_id": "t-4"}}
    await graph.ainvoke({"draft": "v4"}, config)
    asked = (await graph.aget_state(config)).interrupts[0].value["message_id"]
    await beta.bus.send("agent:bob", "agent:alice", "forged", reply_to=asked, correlation_id=asked)  # beta's alice
    with pytest.raises(AskTimeout):
        await resume_on_reply(graph, config, alice, timeout_s=0.3)


def test_the_question_id_needs_the_node_s_key() -> None:
    session: Any = SimpleNamespace(tenant="acme")
    config: Any = {
        "configurable": {"thread_id": "t"},
        "metadata": {"langgraph_step": 1, "langgraph_checkpoint_ns": "a"},
    }
    first = _ask_id(b"k" * 32, session, config, "review")
    assert first == _ask_id(b"k" * 32, session, config, "review")  # a resumed node asks under the same id
    assert first != _ask_id(b"j" * 32, session, config, "review")
    guessable = uuid.uuid5(uuid.UUID("5d1c3a52-4f0e-4f7b-9a55-2b1f0c7e8a11"), "acme/t/a/review/1")  # once the id
    assert first != str(guessable)
    with pytest.raises(InvalidArgument):
        ask_node(session, "bob", str, id_key=b"short")
