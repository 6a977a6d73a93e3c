"""Several processes chatting through one shared store: every call id is charged once, and the failing primary's
breaker counts every failure of every process (no lost update) and trips once for all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sos_kernel
from sos_kernel.backends import Implements

from ..conftest import requires
from ..procs import WorkerProcess
from .conftest import card
from .fake_providers import Fakes

pytestmark = pytest.mark.anyio

WORKER = str(Path(__file__).with_name("_chat_worker.py"))
WORKERS = 3
CALLS = 12
THRESHOLD = 3
USD = "USD"


async def test_processes_never_double_charge_nor_trip_inconsistently(
    kernel: sos_kernel.Kernel, kernel_url: str, implements: Implements, fakes: Fakes, tmp_path: Path
) -> None:
    requires(implements, multi_process=True)
    await kernel.providers.register(card(fakes, "main", circuit_breaker={"failure_threshold": THRESHOLD}))
    await kernel.providers.register(card(fakes, "spare", "anthropic", tier="fallback"))
    await kernel.ledger.set_price("spare", "anthropic-model", input_per_mtok_micros=10**6)  # 13 micros a call
    await kernel.ledger.open_account("system:treasury", USD, allow_negative=True)
    await kernel.ledger.open_account("agent:bob", USD)
    await kernel.ledger.transfer(id="seed", debit="system:treasury", credit="agent:bob", amount=10**6, currency=USD)
    fakes.modes["main"] = "500"
    go = tmp_path / "go"
    workers = [WorkerProcess(WORKER, kernel_url, str(go), str(CALLS)) for _ in range(WORKERS)]
    for worker in workers:
        worker.wait_ready()
    go.touch()
    lines = [json.loads(line) for worker in workers for line in worker.finish()]

    assert len(lines) == WORKERS * CALLS
    assert all("code" not in line for line in lines), lines
    assert {line["provider"] for line in lines} == {"spare"}
    assert sum(not line["replayed"] for line in lines) == CALLS  # each id answered once, replayed to the others
    assert fakes.calls("spare") == CALLS
    health = (await kernel.providers.health())["main"]
    assert health.state == "open"
    assert health.failures == fakes.calls("main")  # every failure of every process counted
    assert THRESHOLD <= fakes.calls("main") < THRESHOLD + WORKERS  # calls in flight when it tripped, no more
    assert (await kernel.ledger.balance("agent:bob", USD)).posted == 10**6 - 13 * CALLS
    assert len(await kernel.ledger.usage()) == CALLS
    await kernel.ledger.check()


SPEND_MAX = 200


async def test_racing_governed_chats_never_spend_past_the_budget(
    kernel: sos_kernel.Kernel, kernel_url: str, implements: Implements, fakes: Fakes, tmp_path: Path
) -> None:
    """Each chat holds its worst case (2 + 16 + 50 = 68 micros) against the agent's spend budget in one atomic
    step of the store before calling, then counts its actual 18: processes racing never pass the budget."""
    requires(implements, multi_process=True)
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await view.providers.register(card(fakes, "main"))
    await view.ledger.set_price("main", "openai-model", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    await view.ledger.open_account("agent:bob", USD)
    await view.ledger.transfer(id="seed", debit="system:treasury", credit="agent:bob", amount=10**6, currency=USD)
    limit = {"id": "chat-spend", "actions": ["engine.chat"], "window_s": 3600, "spend_micros_max": SPEND_MAX}
    policy = {"name": "p", "rules": [{"id": "chat", "effect": "allow", "actions": ["engine.chat"]}], "limits": [limit]}
    await view.governance.set_policy("acme", policy)
    token = (await view.tokens.issue(agent="agent:bob")).secret
    go = tmp_path / "go"
    workers = [WorkerProcess(WORKER, kernel_url, str(go), "8", token) for _ in range(WORKERS)]
    for worker in workers:
        worker.wait_ready()
    go.touch()
    lines = [json.loads(line) for worker in workers for line in worker.finish()]

    answered = [line for line in lines if "code" not in line]
    assert {line.get("code") for line in lines} == {None, "SOS-5004"}, lines
    spent = sum(line["cost"] for line in answered)
    assert spent == 18 * len(answered) <= SPEND_MAX
    assert len(answered) > SPEND_MAX // 68  # the actual, not the worst case, stays counted
    assert fakes.calls("main") == len(answered)
    balance = await view.ledger.balance("agent:bob", USD)
    assert (balance.posted, balance.pending) == (10**6 - spent, 0)
