"""Table-driven tenant isolation: every method a session exposes, called by tenant A's admin with tenant B's ids.

The table must name every public method of every session service, so a method added without a row here fails
``test_the_table_covers_every_session_method``. Each row calls the method from tenant A and checks that nothing of
tenant B's is read or changed: the call either fails or answers from A's own (empty) data, and B's state is the
same before and after every row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import sos_kernel
from sos_kernel.audit import Audit
from sos_kernel.bus import Bus
from sos_kernel.contracts import AgentCard, SendMessage, SendPayload
from sos_kernel.errors import SOSError
from sos_kernel.governance import Governance
from sos_kernel.ledger import Ledger
from sos_kernel.memory import Memory
from sos_kernel.operations import declared
from sos_kernel.providers import Engine, Providers
from sos_kernel.registry import Registry
from sos_kernel.session import Session
from sos_kernel.skills import Skills
from sos_kernel.tasks import Tasks

from ..conftest import Connect

pytestmark = pytest.mark.anyio

B_SKILL = {
    "schema_version": "1",
    "id": "skill-b",
    "name": "B",
    "version": "1.0.0",
    "author_agent": "agent:y",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "b.py"},
    "commerce": {"price_per_call_micros": 10, "currency": "USD", "marketplace_listed": True},
}
USAGE_B = {
    "schema_version": "1",
    "id": "0b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e",
    "tenant": "tenant-b",
    "provider": "p",
    "model": "m",
    "occurred_at": "2026-11-01T10:00:00Z",
    "cost_micros": 5,
}

PROVIDER_B = {
    "schema_version": "1",
    "id": "pb",
    "name": "B's provider",
    "backend": "local",
    "tier": "primary",
    "model": "echo",
}

Call = Callable[[Session], Awaitable[Any]]

ROWS: dict[tuple[str, str], Call] = {
    ("bus", "publish"): lambda s: s.bus.publish(
        SendMessage(source="agent:x", target="agent:y", payload=SendPayload(text="into A"))
    ),
    ("bus", "publish_many"): lambda s: s.bus.publish_many(
        [SendMessage(source="agent:x", target="agent:y", payload=SendPayload(text="into A"))]
    ),
    ("bus", "send"): lambda s: s.bus.send("agent:x", "agent:y", "into A"),
    ("bus", "announce"): lambda s: s.bus.announce("agent:x", "in A"),
    ("bus", "wake"): lambda s: s.bus.wake("agent:x", "agent:y", "wake"),
    ("bus", "ask"): lambda s: s.bus.ask("agent:x", "agent:y", "q?", timeout_s=0.2),
    ("bus", "reply"): lambda s: s.bus.reply(
        SendMessage(source="agent:y", target="agent:x", payload=SendPayload(text="q")), "a", source="agent:x"
    ),
    ("bus", "split"): lambda s: _sync(
        s.bus.split(SendMessage(source="agent:x", target="agent:y", payload=SendPayload(text="q")))
    ),
    ("bus", "subscribe"): lambda s: _drain_one(s),
    ("bus", "history"): lambda s: s.bus.history("agent:y"),
    ("bus", "history_entries"): lambda s: s.bus.history_entries("agent:y"),
    ("bus", "dead_letters"): lambda s: s.bus.dead_letters("agent:y"),
    ("bus", "pending"): lambda s: s.bus.pending("agent:y"),
    ("bus", "replay"): lambda s: _replay_foreign(s),
    ("registry", "register"): lambda s: s.registry.register(
        AgentCard(name="yb", tool="sdk", type="service", role="executor")
    ),
    ("registry", "heartbeat"): lambda s: s.registry.heartbeat("yb"),
    ("registry", "get"): lambda s: s.registry.get("yb"),
    ("registry", "status"): lambda s: s.registry.status("yb"),
    ("registry", "find"): lambda s: s.registry.find(),
    ("registry", "deregister"): lambda s: s.registry.deregister("yb"),
    ("ledger", "open_account"): lambda s: s.ledger.open_account("agent:y", "USD"),
    ("ledger", "balance"): lambda s: s.ledger.balance("agent:y", "USD"),
    ("ledger", "transfer"): lambda s: s.ledger.transfer(
        id="tb", debit="agent:y", credit="agent:x", amount=1, currency="USD"
    ),
    ("ledger", "transfer_many"): lambda s: s.ledger.transfer_many(
        [{"id": "tb", "debit": "agent:y", "credit": "agent:x", "amount": 1, "currency": "USD"}]
    ),
    ("ledger", "hold"): lambda s: s.ledger.hold(
        id="hb", debit="agent:y", credit="agent:x", amount=1, currency="USD", timeout_s=60
    ),
    ("ledger", "capture"): lambda s: s.ledger.capture("hb"),
    ("ledger", "void"): lambda s: s.ledger.void("hb"),
    ("ledger", "get_transfer"): lambda s: s.ledger.get_transfer("tb"),
    ("ledger", "transmute"): lambda s: s.ledger.transmute(
        id="xb", owner="agent:y", amount=1, from_currency="USD", to_currency="MIND", rate_num=1, rate_den=1
    ),
    ("ledger", "set_rate"): lambda s: s.ledger.set_rate("USD", "MIND", rate_num=2, rate_den=1),
    ("ledger", "rate"): lambda s: s.ledger.rate("USD", "MIND"),
    ("ledger", "history"): lambda s: s.ledger.history("agent:y", "USD"),
    ("ledger", "balances"): lambda s: s.ledger.balances(),
    ("ledger", "check"): lambda s: s.ledger.check(),
    ("ledger", "set_price"): lambda s: s.ledger.set_price("p", "m", input_per_mtok_micros=1),
    ("ledger", "price"): lambda s: s.ledger.price("p", "m-b"),
    ("ledger", "record_usage"): lambda s: s.ledger.record_usage(USAGE_B),
    ("ledger", "usage"): lambda s: s.ledger.usage(),
    ("ledger", "usage_summary"): lambda s: s.ledger.usage_summary(),
    ("skills", "publish"): lambda s: s.skills.publish({**B_SKILL, "version": "2.0.0"}),
    ("skills", "get"): lambda s: s.skills.get("skill-b"),
    ("skills", "versions"): lambda s: s.skills.versions("skill-b"),
    ("skills", "find"): lambda s: s.skills.find(),
    ("skills", "marketplace"): lambda s: s.skills.marketplace(),
    ("skills", "ancestors"): lambda s: s.skills.ancestors("skill-b"),
    ("skills", "descendants"): lambda s: s.skills.descendants("skill-b"),
    ("skills", "verify"): lambda s: s.skills.verify(
        "skill-b", "1.0.0", verifier="agent:x", status="disputed", reason="from A"
    ),
    ("skills", "resolve_dispute"): lambda s: s.skills.resolve_dispute(
        "skill-b", "1.0.0", verifier="agent:x", status="human_verified"
    ),
    ("skills", "record_invocation"): lambda s: s.skills.record_invocation(
        "skill-b", caller="agent:y", tenant="tenant-b", invocation_id="ib"
    ),
    ("providers", "register"): lambda s: s.providers.register({**PROVIDER_B, "tier": "local"}),
    ("providers", "remove"): lambda s: s.providers.remove("pb"),
    ("providers", "list"): lambda s: s.providers.list(),
    ("providers", "health"): lambda s: s.providers.health(),
    ("providers", "probe"): lambda s: s.providers.probe(),
    ("engine", "chat"): lambda s: s.engine.chat([{"role": "user", "content": "b's secret?"}], model="pb", id="ub"),
    ("tasks", "create"): lambda s: s.tasks.create(
        "into A", id="task-b", reviewers=["agent:x"], bounty=5, funded_by="agent:y", created_by="agent:y"
    ),
    ("tasks", "get"): lambda s: s.tasks.get("task-b"),
    ("tasks", "list"): lambda s: s.tasks.list(),
    ("tasks", "board"): lambda s: s.tasks.board(),
    ("tasks", "claim"): lambda s: s.tasks.claim("task-b", agent="agent:z"),
    ("tasks", "heartbeat"): lambda s: s.tasks.heartbeat("task-b", "1.x"),
    ("tasks", "submit"): lambda s: s.tasks.submit("task-b", "1.x"),
    ("tasks", "block"): lambda s: s.tasks.block("task-b", "1.x", "stuck"),
    ("tasks", "review"): lambda s: s.tasks.review("task-b", reviewer="agent:x", verdict="reject", reasons=["no"]),
    ("tasks", "cancel"): lambda s: s.tasks.cancel("task-b"),
    ("tasks", "sweep"): lambda s: s.tasks.sweep(),
    ("memory", "remember"): lambda s: s.memory.remember("shared", "from A", id="mb"),
    ("memory", "remember_many"): lambda s: s.memory.remember_many("agent:y/notes", [{"text": "A", "id": "mb"}]),
    ("memory", "remember_message"): lambda s: _remember_foreign_message(s),
    ("memory", "recall"): lambda s: s.memory.recall("shared", "b's secret"),
    ("memory", "get"): lambda s: s.memory.get("agent:y/notes", "mb"),
    ("memory", "list"): lambda s: s.memory.list("shared"),
    ("memory", "namespaces"): lambda s: s.memory.namespaces(),
    ("memory", "forget"): lambda s: s.memory.forget("shared", "mb"),
    ("governance", "set_policy"): lambda s: s.governance.set_policy("tenant-b", {"name": "a-wins"}),
    ("governance", "get_policy"): lambda s: s.governance.get_policy("tenant-b"),
    ("governance", "remove_policy"): lambda s: s.governance.remove_policy("tenant-b"),
    ("governance", "check"): lambda s: s.governance.check("ledger.transfer", "agent:y"),
    ("governance", "pending"): lambda s: s.governance.pending(),
    ("governance", "approve"): lambda s: s.governance.approve("apr-b"),
    ("governance", "deny"): lambda s: s.governance.deny("apr-b"),
    ("audit", "events"): lambda s: s.audit.events("tenant-b"),
    ("audit", "verify"): lambda s: s.audit.verify(),
    ("audit", "checkpoint"): lambda s: s.audit.checkpoint(),
    ("audit", "export"): lambda s: s.audit.export("tenant-b"),
}

SERVICES = {
    "bus": Bus,
    "registry": Registry,
    "ledger": Ledger,
    "skills": Skills,
    "providers": Providers,
    "engine": Engine,
    "tasks": Tasks,
    "memory": Memory,
    "governance": Governance,
    "audit": Audit,
}


async def _sync(value: Any) -> Any:
    return value


async def _drain_one(s: Session) -> Any:
    async with s.bus.subscribe("agent:y", start="earliest") as sub:
        return await sub.receive(timeout_s=0.2)


async def _remember_foreign_message(s: Session) -> Any:
    message = SendMessage(source="agent:x", target="agent:y", payload=SendPayload(text="into A's memory"))
    return await s.memory.remember_message(message)


async def _replay_foreign(s: Session) -> Any:
    for dead in await s.bus.dead_letters("agent:y"):
        await s.bus.replay(dead)


def test_the_table_covers_every_session_method() -> None:
    for name, service in SERVICES.items():
        assert sorted(m for m in declared(service) if (name, m) not in ROWS) == []


async def _snapshot(kernel: sos_kernel.Kernel) -> dict[str, Any]:
    view = kernel.tenant("tenant-b")
    return {
        "inbox": [m.message_id for m in await view.bus.history("agent:y")],
        "agents": [(a.card.name, a.card.summary) for a in await view.registry.find()],
        "balances": [(b.owner, b.currency, b.posted, b.pending) for b in await view.ledger.balances()],
        "transfers": [t.id for t in await view.ledger.history("agent:y", "USD")],
        "skills": [
            (c.id, c.version, c.verification.status if c.verification else None) for c in await view.skills.find()
        ],
        "usage": [u.id for u in await view.ledger.usage()],
        "providers": [(c.id, c.tier) for c in await view.providers.list()],
        "breakers": {k: (v.state, v.failures) for k, v in (await view.providers.health()).items()},
        "tasks": [t.model_dump_json() for t in await view.tasks.list()],
        "memory": [
            (n.name, n.count, [(m.id, m.text) for m in await view.memory.list(n.name)])
            for n in await view.memory.namespaces()
        ],
        "policy": await view.governance.get_policy("tenant-b"),
        "audit": [r.digest for r in await view.audit.events("tenant-b")],
    }


async def test_no_session_method_reaches_another_tenant(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    _, admin_a = await kernel.tenants.create("tenant-a", plan="scale")
    await kernel.tenants.create("tenant-b", plan="scale")
    b = kernel.tenant("tenant-b")
    await b.bus.send("agent:x", "agent:y", "b's secret")
    await b.registry.register(AgentCard(name="yb", tool="sdk", type="service", role="executor", summary="b"))
    await b.ledger.open_account("system:treasury", "USD", allow_negative=True)
    await b.ledger.open_account("agent:y", "USD")
    await b.ledger.open_account("agent:x", "USD")
    await b.ledger.transfer(id="tb", debit="system:treasury", credit="agent:y", amount=100, currency="USD")
    await b.ledger.hold(id="hb", debit="agent:y", credit="agent:x", amount=5, currency="USD", timeout_s=600)
    await b.skills.publish(B_SKILL)
    await b.ledger.record_usage(USAGE_B)
    await b.providers.register(PROVIDER_B)
    await b.tasks.create("b's secret task", id="task-b", reviewers=["agent:x"], bounty=5, funded_by="agent:y")
    await b.tasks.claim("task-b", agent="agent:y", lease_s=600)
    await b.memory.remember("shared", "b's secret", id="mb")
    await b.memory.remember("agent:y/notes", "b's secret too", id="mb")
    await b.governance.set_policy(
        "tenant-b", {"name": "b", "rules": [{"id": "all", "effect": "allow", "actions": ["**"]}]}
    )
    before = await _snapshot(kernel)
    session = await connect(admin_a)
    for (service, method), call in ROWS.items():
        try:
            result = await call(session)
        except SOSError:
            result = None
        text = repr(result)
        assert "b's secret" not in text, (service, method)
        assert await _snapshot(kernel) == before, (service, method)
    for key in (
        "inbox",
        "agents",
        "balances",
        "transfers",
        "skills",
        "usage",
        "providers",
        "breakers",
        "tasks",
        "memory",
        "policy",
        "audit",
    ):
        assert before[key], key  # the table ran against real data in tenant B
