"""``KernelSaver``: LangGraph's own checkpointer conformance suite, graphs run through it (async and sync), tenant
isolation and the per-tenant bounds, on every backend."""

from __future__ import annotations

import itertools
import operator
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import anyio
import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import sos_kernel
from sos_kernel.checkpoints import service as checkpoint_limits
from sos_kernel.errors import InvalidArgument, LimitExceeded
from sos_kernel.integrations.langgraph import KernelSaver

pytestmark = pytest.mark.anyio
_tenants = itertools.count()


class Tally(TypedDict):
    items: Annotated[list[str], operator.add]


def tally_graph(saver: KernelSaver, *, pause: bool = False) -> Any:
    def first(state: Tally) -> dict[str, Any]:
        return {"items": ["first"]}

    def second(state: Tally) -> dict[str, Any]:
        answer = interrupt("approve?") if pause else "auto"
        return {"items": [f"second:{answer}"]}

    graph = StateGraph(Tally)
    graph.add_node("first", first)
    graph.add_node("second", second)
    graph.add_edge(START, "first")
    graph.add_edge("first", "second")
    graph.add_edge("second", END)
    return graph.compile(checkpointer=saver)


async def test_langgraph_conformance_suite(kernel: sos_kernel.Kernel) -> None:
    @checkpointer_test(name="KernelSaver")
    async def fresh() -> AsyncIterator[KernelSaver]:
        yield KernelSaver(kernel, tenant=f"conformance-{next(_tenants)}")

    report = await validate(fresh)
    ran = {name: result for name, result in report.results.items() if result.detected}
    assert {"put", "put_writes", "get_tuple", "list", "delete_thread"} <= set(ran)
    failures = {name: result.failures for name, result in ran.items() if not result.passed}
    assert failures == {}


async def test_a_graph_interrupts_and_resumes_from_the_kernel(kernel: sos_kernel.Kernel) -> None:
    config: Any = {"configurable": {"thread_id": "run-1"}}
    await tally_graph(KernelSaver(kernel), pause=True).ainvoke({"items": []}, config)
    again = tally_graph(KernelSaver.from_kernel(kernel), pause=True)
    state = await again.aget_state(config)
    assert state.next == ("second",)
    assert [i.value for i in state.interrupts] == ["approve?"]
    done = await again.ainvoke(Command(resume="yes"), config)
    assert done["items"] == ["first", "second:yes"]
    history = [s async for s in again.aget_state_history(config)]
    assert len(history) >= 4


async def test_the_sync_api_runs_a_graph_off_the_loop(kernel: sos_kernel.Kernel) -> None:
    saver = KernelSaver(kernel)
    graph = tally_graph(saver)
    config: Any = {"configurable": {"thread_id": "sync-1"}}
    done = await anyio.to_thread.run_sync(graph.invoke, {"items": []}, config)
    assert done["items"] == ["first", "second:auto"]
    listed = await anyio.to_thread.run_sync(lambda: list(saver.list(config, limit=2)))
    assert len(listed) == 2
    assert listed[0].checkpoint["id"] > listed[1].checkpoint["id"]
    with pytest.raises(InvalidArgument, match="own event loop"):
        saver.get_tuple(config)


async def test_tenants_do_not_see_each_others_threads(kernel: sos_kernel.Kernel) -> None:
    acme, beta = KernelSaver(kernel, tenant="acme"), KernelSaver(kernel.tenant("beta"))
    config: Any = {"configurable": {"thread_id": "shared-name"}}
    await tally_graph(acme).ainvoke({"items": []}, config)
    assert await beta.aget_tuple(config) is None
    assert [t async for t in beta.alist(None)] == []
    await beta.adelete_thread("shared-name")
    assert await acme.aget_tuple(config) is not None


async def test_threads_per_tenant_are_bounded(kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_limits, "CHECKPOINT_THREADS_PER_TENANT_MAX", 2)
    saver = KernelSaver(kernel, tenant="small")
    for thread in ("a", "b"):
        await tally_graph(saver).ainvoke({"items": []}, {"configurable": {"thread_id": thread}})
    with pytest.raises(LimitExceeded) as caught:
        await tally_graph(saver).ainvoke({"items": []}, {"configurable": {"thread_id": "c"}})
    assert caught.value.details["limit"] == "checkpoint_threads_per_tenant_max"
    assert [t async for t in saver.alist({"configurable": {"thread_id": "c"}})] == []
    await tally_graph(saver).ainvoke({"items": []}, {"configurable": {"thread_id": "a"}})
    await saver.adelete_thread("b")
    await tally_graph(saver).ainvoke({"items": []}, {"configurable": {"thread_id": "c"}})


async def test_a_thread_keeps_its_newest(kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_limits, "CHECKPOINTS_PER_THREAD_MAX", 3)
    saver = KernelSaver(kernel)
    config: Any = {"configurable": {"thread_id": "long"}}
    graph = tally_graph(saver)
    await graph.ainvoke({"items": []}, config)
    await graph.ainvoke({"items": []}, config)
    kept = [t async for t in saver.alist(config)]
    assert len(kept) == 3
    latest = await saver.aget_tuple(config)
    assert latest is not None
    assert latest.checkpoint["id"] == kept[0].checkpoint["id"]
    assert latest.checkpoint["channel_values"]["items"] == ["first", "second:auto"] * 2


async def test_an_oversized_checkpoint_is_refused(kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_limits, "CHECKPOINT_BYTES_MAX", 256)
    saver = KernelSaver(kernel)
    config: Any = {"configurable": {"thread_id": "big"}}
    with pytest.raises(LimitExceeded):
        await tally_graph(saver).ainvoke({"items": ["x" * 1000]}, config)
    assert await saver.aget_tuple(config) is None
