"""The watcher: rules fire and resolve once each, flapping does not flood, a restart takes over; every target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.contracts import AgentCard, AlertMessage, SendMessage
from sos_kernel.ops import (
    AgentsRule,
    AuditRule,
    BreakersRule,
    Condition,
    DeadLettersRule,
    PendingRule,
    Watcher,
    WatchView,
)
from sos_kernel.ops.watch import ALERTS_CHANNEL, default_rules

from ..conftest import OpenApi

pytestmark = pytest.mark.anyio


def card(name: str) -> AgentCard:
    return AgentCard(name=name, tool="sdk", type="service", role="executor", summary="works")


async def alerts(api: Any) -> list[AlertMessage]:
    return [m for m in await api.bus.history(ALERTS_CHANNEL) if isinstance(m, AlertMessage)]


@dataclass
class Switch:
    """A rule whose condition holds while ``on`` is set."""

    on: bool = False
    name: str = "switch"
    checks: list[bool] = field(default_factory=list)

    async def check(self, view: WatchView) -> list[Condition]:
        self.checks.append(self.on)
        return [Condition(self.name, "thing", "warning", "the thing is on")] if self.on else []


async def test_an_offline_agent_fires_once_and_resolves_once(open_api: OpenApi) -> None:
    async with open_api(registry_ttl_s=0.05) as api:
        await api.registry.register(card("worker"))
        watcher = Watcher(api, [AgentsRule()], clear_s=0.0)
        with anyio.fail_after(10):
            while (await api.registry.status("worker")) != "offline":  # noqa: ASYNC110 (time passing is the event)
                await anyio.sleep(0.05)
        fired = await watcher.evaluate()
        assert await watcher.evaluate() == []  # still offline: nothing new
        await api.registry.heartbeat("worker")
        resolved = await watcher.evaluate()
        published = await alerts(api)
    assert [a.payload.state for a in fired + resolved] == ["fired", "resolved"]
    assert "agent:worker" in fired[0].payload.text
    assert fired[0].payload.subject == "agent:worker"
    assert fired[0].payload.severity == "critical"
    assert resolved[0].payload.alert_id == fired[0].payload.alert_id
    assert [a.message_id for a in published] == [fired[0].message_id, resolved[0].message_id]


async def test_a_flapping_condition_does_not_flood(api: Any) -> None:
    switch = Switch()
    watcher = Watcher(api, [switch], clear_s=0.3)
    sent = []
    for on in (True, False, True, False, True, False):
        switch.on = on
        sent += await watcher.evaluate()
    await anyio.sleep(0.35)
    sent += await watcher.evaluate()
    assert [a.payload.state for a in sent] == ["fired", "resolved"]
    assert len(await alerts(api)) == 2


async def test_a_restarted_watcher_takes_over_what_is_firing(api: Any) -> None:
    switch = Switch(on=True)
    assert len(await Watcher(api, [switch]).evaluate()) == 1
    again = Watcher(api, [switch], clear_s=0.0)
    assert await again.evaluate() == []  # no second "fired" for the same episode
    switch.on = False
    (resolved,) = await again.evaluate()
    assert resolved.payload.state == "resolved"


async def test_dead_letters_fire_and_resolve(api: Any) -> None:
    await api.bus.send("agent:boss", "agent:worker", "do it")
    async with api.bus.subscribe("agent:worker", max_deliveries=1, visibility_timeout_s=0.1) as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        await delivery.nack()
        assert await sub.receive(timeout_s=0.3) is None  # the next hand-out buries it
    watcher = Watcher(api, [DeadLettersRule(["agent:worker"])], clear_s=0.0)
    (fired,) = await watcher.evaluate()
    assert fired.payload.details == {"depth": 1, "oldest_s": fired.payload.details["oldest_s"], "group": "inbox"}
    assert "agent:worker" in fired.payload.text
    (dead,) = await api.bus.dead_letters("agent:worker")
    await api.bus.replay(dead)
    (resolved,) = await watcher.evaluate()
    assert resolved.payload.state == "resolved"


async def test_a_failing_rule_is_an_alert_not_a_crash(api: Any) -> None:
    class Broken:
        name = "broken"

        async def check(self, view: WatchView) -> list[Condition]:
            raise ValueError("no data")

    (fired,) = await Watcher(api, [Broken(), Switch()]).evaluate()
    assert fired.payload.rule == "watcher_rule_failed"
    assert fired.payload.subject == "broken"


async def test_the_default_rules_are_quiet_on_a_healthy_kernel(api: Any) -> None:
    await api.ledger.open_account("agent:a", "USD")
    assert await Watcher(api, default_rules(["agent:worker"])).evaluate() == []


async def test_pending_growth_fires_and_resolves_embedded_and_remote(api: Any) -> None:
    rule = PendingRule(["agent:worker"], growth_checks=2)
    watcher = Watcher(api, [rule], clear_s=0.0)
    sent = []
    async with api.bus.subscribe("agent:worker", prefetch=1) as sub:
        held = []
        for i in range(3):
            await api.bus.publish(SendMessage(source="agent:a", target="agent:worker", payload={"text": str(i)}))
            delivery = await sub.receive(timeout_s=5)  # taken, not settled yet
            assert delivery is not None
            held.append(delivery)
            sent += await watcher.evaluate()
        for delivery in held:
            assert await delivery.ack() is True
        sent += await watcher.evaluate()
    assert [(a.payload.rule, a.payload.state) for a in sent] == [
        ("pending_growth", "fired"),
        ("pending_growth", "resolved"),
    ]
    assert sent[0].payload.details == {"pending": 3}
    assert "agent:worker" in sent[0].payload.text


async def test_run_evaluates_on_a_poke(api: Any) -> None:
    switch = Switch()
    watcher = Watcher(api, [switch], interval_s=60)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        with anyio.fail_after(5):
            while not switch.checks:  # noqa: ASYNC110 (polls the rule it watches)
                await anyio.sleep(0.01)
            switch.on = True
            watcher.poke()
            while not watcher.active:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        watcher.stop()
    assert len(await alerts(api)) == 1


async def test_an_open_provider_breaker_fires_and_a_closed_one_resolves(kernel: sos_kernel.Kernel) -> None:
    broken = {"schema_version": "1", "id": "broken", "name": "Broken", "backend": "local", "tier": "primary"}
    broken |= {"model": "echo", "endpoint": "local://fail", "circuit_breaker": {"failure_threshold": 1}}
    echo = {"schema_version": "1", "id": "echo", "name": "Echo", "backend": "local", "tier": "local", "model": "echo"}
    await kernel.providers.register(broken)
    await kernel.providers.register(echo)
    watcher = Watcher(kernel, [BreakersRule()], clear_s=0.0)
    assert await watcher.evaluate() == []
    reply = await kernel.engine.chat([{"role": "user", "content": "hi"}])  # broken fails, trips, echo answers
    assert reply.provider == "echo"
    (fired,) = await watcher.evaluate()
    assert (fired.payload.rule, fired.payload.subject, fired.payload.state) == (
        "provider_breaker",
        "provider:broken",
        "fired",
    )
    assert await watcher.evaluate() == []  # still open: no second alert
    await kernel.providers.remove("broken")
    (resolved,) = await watcher.evaluate()
    assert resolved.payload.state == "resolved"


async def test_a_tampered_audit_chain_fires_a_critical_alert(tmp_path: Any) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path}/audit.db"
    async with sos_kernel.open(url) as kernel:
        await kernel.tenants.create("acme", plan="scale")
        view = kernel.tenant("acme")
        await view.tokens.issue(agent="agent:a")
        await view.tokens.issue(agent="agent:b")
        watcher = Watcher(view, [AuditRule()])
        assert await watcher.evaluate() == []
        with sqlite3.connect(f"{tmp_path}/audit.db") as db:
            db.execute("UPDATE audit_records SET actor = 'agent:nobody' WHERE tenant = 'acme' AND seq = 1")
        (fired,) = await watcher.evaluate()
        assert (fired.payload.rule, fired.payload.severity) == ("audit_verify", "critical")
        assert "audit chain broken" in fired.payload.text
