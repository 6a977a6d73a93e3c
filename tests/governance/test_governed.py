"""``governed(fn, ...)``: sync and async tools checked, counted and recorded before they run; default deny; a
budget raced by several processes is never overspent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.errors import Forbidden
from sos_kernel.governance import governed

from ..conftest import requires
from ..procs import WorkerProcess

pytestmark = pytest.mark.anyio

WORKER = str(Path(__file__).with_name("_budget_worker.py"))

POLICY = {
    "name": "tools",
    "rules": [
        {"id": "search", "effect": "allow", "actions": ["tool.search"]},
        {"id": "no-rm", "effect": "deny", "actions": ["tool.rm"]},
    ],
}


async def test_with_no_policy_a_governed_tool_is_refused_before_it_runs(kernel: sos_kernel.Kernel) -> None:
    ran: list[Any] = []

    async def search(q: str) -> str:
        ran.append(q)
        return q

    with pytest.raises(Forbidden) as refused:
        await governed(search, action="tool.search", governance=kernel.governance)("x")
    assert refused.value.code == "SOS-5004"
    assert ran == []


async def test_async_tools_are_checked_counted_and_recorded(kernel: sos_kernel.Kernel) -> None:
    await kernel.governance.set_policy(
        "default",
        {**POLICY, "limits": [{"id": "few", "actions": ["tool.*"], "window_s": 3600, "calls_max": 2}]},
    )
    ran: list[Any] = []

    async def tool(q: str) -> str:
        ran.append(q)
        return q.upper()

    search = governed(tool, action="tool.search", governance=kernel.governance, agent="agent:bot")
    rm = governed(tool, action="tool.rm", governance=kernel.governance, agent="agent:bot")
    unknown = governed(tool, action="tool.unknown", governance=kernel.governance, agent="agent:bot")
    assert await search("a") == "A"
    for refused in (rm, unknown):
        with pytest.raises(Forbidden):
            await refused("b")
    assert await search("c") == "C"
    with pytest.raises(Forbidden, match="limit 'few'"):
        await search("d")
    assert ran == ["a", "c"]
    records = [(r.kind, r.action, r.outcome) for r in await kernel.audit.events("default", actor="agent:bot")]
    assert records.count(("tool.call", "tool.search", "ok")) == 2
    assert ("denial", "tool.rm", "denied") in records


async def test_sync_tools_from_a_worker_thread(kernel: sos_kernel.Kernel) -> None:
    await kernel.governance.set_policy("default", POLICY)
    ran: list[int] = []

    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    ok = governed(double, action="tool.search")  # the kernel opened most recently governs by default
    no = governed(double, action="tool.rm")
    assert await anyio.to_thread.run_sync(ok, 4) == 8
    with pytest.raises(Forbidden):
        await anyio.to_thread.run_sync(no, 5)
    assert ran == [4]
    with pytest.raises(RuntimeError, match="worker thread"):
        ok(1)  # on the loop's own thread it would block the loop


async def test_content_rules_apply_to_tool_arguments(kernel: sos_kernel.Kernel) -> None:
    await kernel.governance.set_policy("default", {**POLICY, "content": [{"id": "keys", "blocked": ["sk-*"]}]})

    async def search(q: str, *, opts: dict[str, Any]) -> str:
        return q

    checked = governed(search, action="tool.search", governance=kernel.governance)
    assert await checked("fine", opts={"x": "y"}) == "fine"
    with pytest.raises(Forbidden, match="keys"):
        await checked("fine", opts={"token": "sk-123"})


async def test_resource_patterns_and_a_resource_function(kernel: sos_kernel.Kernel) -> None:
    await kernel.governance.set_policy(
        "default",
        {
            "name": "files",
            "rules": [{"id": "docs", "effect": "allow", "actions": ["tool.read"], "resources": ["docs/*"]}],
        },
    )

    async def read(path: str) -> str:
        return path

    checked = governed(read, action="tool.read", resource=lambda path: path, governance=kernel.governance)
    assert await checked("docs/a.md") == "docs/a.md"
    for path in ("docs/../etc/passwd", "docs/%2e%2e/x", "secrets/a", "DOCS/a.md/../../x", "docs/a/b"):
        with pytest.raises(Forbidden):
            await checked(path)


async def test_a_budget_raced_by_several_processes_is_never_overspent(
    kernel: sos_kernel.Kernel, implements: Implements, tmp_path: Path
) -> None:
    requires(implements, multi_process=True)
    budget, workers, calls = 25, 4, 15
    await kernel.governance.set_policy(
        "default",
        {
            **POLICY,
            "limits": [
                {"id": "shared", "actions": ["tool.**"], "window_s": 3600, "calls_max": budget, "per": "tenant"}
            ],
        },
    )
    go = tmp_path / "go"
    procs = [WorkerProcess(WORKER, kernel.url, str(calls), str(go)) for _ in range(workers)]
    try:
        for p in procs:
            p.wait_ready()
        go.touch()
        lines = [line for p in procs for line in p.finish()]
    finally:
        for p in procs:
            p.stop()
    assert len(lines) == workers * calls
    assert lines.count("ok") == budget  # exactly the budget: never more, and none lost
