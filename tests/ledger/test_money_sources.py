"""Where money comes from: no operation of the session API creates money for an agent with the default scopes.

Every method of :class:`LedgerAPI`, :class:`SkillsAPI`, :class:`ProvidersAPI`, :class:`EngineAPI` and
:class:`TasksAPI` must have
hostile calls in ``HOSTILE`` (a method added without them fails
``test_every_money_moving_service_operation_is_driven``). An agent session runs them all, on every backend and
remotely; after each call, per currency, the balances of the must-not-overdraw accounts sum to no more than before
and no ``allow_negative`` account has appeared. docs/ledger.md's "Where money comes from" table is held
to the same list: the operations it names are exactly the ones that can create money, and those it marks
``ledger:admin`` are refused to the agent.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.api import EngineAPI, LedgerAPI, ProvidersAPI, SkillsAPI, TasksAPI
from sos_kernel.errors import Forbidden, SOSError

from ..conftest import Connect

pytestmark = pytest.mark.anyio

USD, MIND = "USD", "MIND"
DOCS = Path(__file__).parents[2] / "docs" / "ledger.md"
EVENT = {
    "schema_version": "1",
    "id": "5f0c2a1e-8d3b-4c7a-9e6f-1b2d3c4e5f60",
    "tenant": "acme",
    "provider": "p",
    "model": "m",
    "occurred_at": "2026-11-01T10:00:00Z",
    "cost_micros": 50,
    "cost_currency": USD,
}


def _skill(id: str, author: str, **commerce: Any) -> dict[str, Any]:
    return {
        "schema_version": "1",
        "id": id,
        "name": id,
        "version": "1.0.0",
        "author_agent": author,
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": "x.py"},
        "commerce": {"price_per_call_micros": 10, "currency": USD, "marketplace_listed": True, **commerce},
    }


LOCAL = {"schema_version": "1", "name": "L", "backend": "local", "tier": "primary", "model": "echo"}
HI = [{"role": "user", "content": "hi there"}]

Call = Callable[[Any], Awaitable[Any]]
T = "system:treasury"
M = "agent:mallory"
TRANSFER = {"amount": 10**6, "currency": USD}

HOSTILE: dict[tuple[str, str], list[Call]] = {
    ("ledger", "open_account"): [
        lambda s: s.ledger.open_account("system:bobbank", USD, allow_negative=True),
        lambda s: s.ledger.open_account(M, MIND, allow_negative=True),
        lambda s: s.ledger.open_account("system:mint", USD),
        lambda s: s.ledger.open_account("tenant:acme", USD),
        lambda s: s.ledger.open_account("system:exchange", MIND),
    ],
    ("ledger", "balance"): [lambda s: s.ledger.balance(T, USD)],
    ("ledger", "balances"): [lambda s: s.ledger.balances()],
    ("ledger", "transfer"): [
        lambda s: s.ledger.transfer(id="t1", debit=T, credit=M, **TRANSFER),
        lambda s: s.ledger.transfer(id="t2", debit="agent:alice", credit=M, **TRANSFER),
        lambda s: s.ledger.transfer(id="t3", debit=M, credit=M, amount=5, currency=USD),
        lambda s: s.ledger.transfer(id="t4", debit=M, credit="agent:alice", amount=-5, currency=USD),
        lambda s: s.ledger.transfer(id="t5", debit=M, credit="agent:alice", amount=10**9, currency=USD),
        lambda s: s.ledger.transfer(id="seed-alice", debit=M, credit="agent:alice", amount=1, currency=USD),
        lambda s: s.ledger.transfer(id="t6", debit=M, credit="agent:alice", amount=1, currency=USD),
    ],
    ("ledger", "transfer_many"): [
        lambda s: s.ledger.transfer_many([{"id": "m1", "debit": T, "credit": M, **TRANSFER}]),
        lambda s: s.ledger.transfer_many(
            [
                {"id": "m2", "debit": M, "credit": "agent:alice", "amount": 1, "currency": USD},
                {"id": "m3", "debit": T, "credit": M, **TRANSFER},
            ]
        ),
    ],
    ("ledger", "hold"): [
        lambda s: s.ledger.hold(id="h1", debit=T, credit=M, timeout_s=60, **TRANSFER),
        lambda s: s.ledger.hold(id="h2", debit=M, credit="agent:alice", amount=10**9, currency=USD, timeout_s=60),
        lambda s: s.ledger.hold(id="h3", debit=M, credit="agent:alice", amount=5, currency=USD, timeout_s=60),
    ],
    ("ledger", "capture"): [
        lambda s: s.ledger.capture("hold-alice"),
        lambda s: s.ledger.capture("h3", 10**6),
        lambda s: s.ledger.capture("h3", 5),
    ],
    ("ledger", "void"): [lambda s: s.ledger.void("hold-alice"), lambda s: s.ledger.void("h3")],
    ("ledger", "get_transfer"): [lambda s: s.ledger.get_transfer("seed-alice")],
    ("ledger", "transmute"): [
        lambda s: s.ledger.transmute(
            id="x1", owner=M, amount=1, from_currency=USD, to_currency=MIND, rate_num=9 * 10**15, rate_den=1
        ),
        lambda s: s.ledger.transmute(
            id="x2", owner=M, amount=1, from_currency=USD, to_currency=MIND, exchange="system:bobbank"
        ),
        lambda s: s.ledger.transmute(id="x3", owner=M, amount=1, from_currency=USD, to_currency=MIND),
        lambda s: s.ledger.transmute(id="x4", owner=M, amount=1, from_currency=USD, to_currency=MIND, rate_num=9),
        lambda s: s.ledger.transmute(
            id="x5", owner="agent:alice", amount=1, from_currency=USD, to_currency=MIND, rate_num=1, rate_den=1
        ),
    ],
    ("ledger", "set_rate"): [
        lambda s: s.ledger.set_rate(USD, MIND, rate_num=10**12, rate_den=1),
        lambda s: s.ledger.set_rate(USD, MIND, rate_num=10**12, rate_den=1, exchange="system:bobbank"),
    ],
    ("ledger", "rate"): [lambda s: s.ledger.rate(USD, MIND)],
    ("ledger", "history"): [lambda s: s.ledger.history(T, USD)],
    ("ledger", "check"): [lambda s: s.ledger.check()],
    ("ledger", "set_price"): [lambda s: s.ledger.set_price("p", "m", input_per_mtok_micros=10**9)],
    ("ledger", "price"): [lambda s: s.ledger.price("p", "m")],
    ("ledger", "record_usage"): [
        lambda s: s.ledger.record_usage(EVENT, settle=True),
        lambda s: s.ledger.record_usage(EVENT),
    ],
    ("ledger", "usage"): [lambda s: s.ledger.usage()],
    ("ledger", "usage_summary"): [lambda s: s.ledger.usage_summary()],
    ("skills", "publish"): [
        lambda s: s.skills.publish(_skill("mal", M)),
        lambda s: s.skills.publish(_skill("mal-free", M, price_per_call_micros=0)),
    ],
    ("skills", "get"): [lambda s: s.skills.get("paid")],
    ("skills", "versions"): [lambda s: s.skills.versions("paid")],
    ("skills", "find"): [lambda s: s.skills.find()],
    ("skills", "marketplace"): [lambda s: s.skills.marketplace()],
    ("skills", "ancestors"): [lambda s: s.skills.ancestors("paid")],
    ("skills", "descendants"): [lambda s: s.skills.descendants("paid")],
    ("skills", "verify"): [lambda s: s.skills.verify("paid", "1.0.0", verifier=M, status="human_verified")],
    ("skills", "resolve_dispute"): [
        lambda s: s.skills.resolve_dispute("paid", "1.0.0", verifier=M, status="human_verified")
    ],
    ("skills", "record_invocation"): [
        lambda s: s.skills.record_invocation("paid", caller="agent:alice", tenant="acme", invocation_id="i1"),
        lambda s: s.skills.record_invocation("mal", caller=M, tenant="acme", invocation_id="i2"),
        lambda s: s.skills.record_invocation("paid", caller=M, tenant="acme", invocation_id="i3"),
        lambda s: s.skills.record_invocation("paid", caller=M, tenant="acme", invocation_id="i3"),
    ],
    ("providers", "register"): [
        lambda s: s.providers.register({**LOCAL, "id": "free", "cost_per_call_estimate_micros": 0}),
        lambda s: s.providers.register({**LOCAL, "id": "loc", "model": "other"}),
    ],
    ("providers", "remove"): [lambda s: s.providers.remove("loc")],
    ("providers", "list"): [lambda s: s.providers.list()],
    ("providers", "health"): [lambda s: s.providers.health()],
    ("providers", "probe"): [lambda s: s.providers.probe()],
    ("engine", "chat"): [
        lambda s: s.engine.chat(HI, agent="agent:alice"),
        lambda s: s.engine.chat(HI, agent="tenant:acme"),
        lambda s: s.engine.chat(HI, id="seed-alice"),
        lambda s: s.engine.chat(HI, id="engine:x"),
        lambda s: s.engine.chat(HI, id="c1"),
        lambda s: s.engine.chat(HI, id="c1"),
        lambda s: s.engine.chat(HI, id="c2", stream=True),
        lambda s: s.engine.chat(HI * 10_000),
    ],
    ("tasks", "create"): [
        lambda s: s.tasks.create("steal", id="steal-1", reviewers=[M], bounty=100, funded_by="agent:alice"),
        lambda s: s.tasks.create("escrow", id="escrow-1", reviewers=[M], bounty=100, funded_by="system:escrow"),
        lambda s: s.tasks.create("big", id="big-1", reviewers=[M], bounty=10**9),
        lambda s: s.tasks.create("self", id="self-1", reviewers=[M, "agent:alice"], bounty=100),
        lambda s: s.tasks.create("as alice", id="as-alice", reviewers=[M], bounty=1, created_by="agent:alice"),
    ],
    ("tasks", "get"): [lambda s: s.tasks.get("alice-task")],
    ("tasks", "list"): [lambda s: s.tasks.list()],
    ("tasks", "board"): [lambda s: s.tasks.board()],
    ("tasks", "claim"): [
        lambda s: s.tasks.claim("alice-task", agent="agent:alice"),
        lambda s: _work(s, "self-1"),
        lambda s: _work(s, "alice-task"),
    ],
    ("tasks", "heartbeat"): [lambda s: s.tasks.heartbeat("alice-task", "1.forged")],
    ("tasks", "submit"): [lambda s: s.tasks.submit("alice-task", "1.forged")],
    ("tasks", "block"): [lambda s: s.tasks.block("alice-task", "1.forged", "stuck")],
    ("tasks", "review"): [
        lambda s: s.tasks.review("self-1"),
        lambda s: s.tasks.review("alice-task"),
        lambda s: s.tasks.review("alice-task", reviewer="agent:bob"),
    ],
    ("tasks", "cancel"): [lambda s: s.tasks.cancel("alice-task"), lambda s: s.tasks.cancel("self-1")],
    ("tasks", "sweep"): [lambda s: s.tasks.sweep()],
}

PROTOCOLS = {
    "ledger": LedgerAPI,
    "skills": SkillsAPI,
    "providers": ProvidersAPI,
    "engine": EngineAPI,
    "tasks": TasksAPI,
}


async def _work(s: Any, task_id: str) -> None:
    """Claim ``task_id`` as the session's agent and submit it for review."""
    claim = await s.tasks.claim(task_id)
    await s.tasks.submit(task_id, claim.token)


def _operations(protocol: type) -> set[str]:
    return {name for name, value in inspect.getmembers(protocol) if not name.startswith("_") and callable(value)}


def test_every_money_moving_service_operation_is_driven() -> None:
    for service, protocol in PROTOCOLS.items():
        assert sorted(m for m in _operations(protocol) if (service, m) not in HOSTILE) == []
        assert sorted(m for s, m in HOSTILE if s == service and m not in _operations(protocol)) == []


def test_an_a2a_caller_funds_only_its_own_task_through_tasks_create() -> None:
    """A2A moves money only as a task-mode create's bounty, which is ``session.tasks.create`` of the caller (driven
    above): the fields an A2A caller may set name neither the funder nor the creator (both are the caller's agent),
    and are all arguments of that create, so its declared spend and rule apply."""
    from sos_kernel.integrations.a2a import TASK_CREATE_FIELDS
    from sos_kernel.tasks import Tasks

    assert {"funded_by", "created_by", "id"}.isdisjoint(TASK_CREATE_FIELDS)
    assert set(TASK_CREATE_FIELDS) <= set(inspect.signature(Tasks.create).parameters)


SPENDS = {
    ("ledger", "transfer"),
    ("ledger", "transfer_many"),
    ("ledger", "hold"),
    ("ledger", "capture"),
    ("ledger", "transmute"),
    ("engine", "chat"),
    ("tasks", "create"),
    ("skills", "record_invocation"),
}
"""Operations that move an agent's money: each declares its spend, so a policy's spend budget counts it (a chat
declares ``SPEND_HELD``: it holds its worst case against the budget before any provider is called; an invocation
holds its version's price)."""


def test_every_operation_that_spends_an_agents_money_declares_it() -> None:
    from sos_kernel.operations import SPEND_HELD, declared
    from sos_kernel.server._routes_ops import SERVICES

    spending = {(op.service, op.name): op.spend for cls in SERVICES for op in declared(cls).values() if op.spend}
    assert set(spending) >= SPENDS, sorted(SPENDS - set(spending))
    assert spending[("engine", "chat")] == (SPEND_HELD,)
    assert spending[("skills", "record_invocation")] == (SPEND_HELD,)


async def _money(kernel: sos_kernel.Kernel) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Per currency, the posted balances of must-not-overdraw accounts; and the accounts that may go negative."""
    held: dict[str, int] = {}
    issuers = set()
    for b in await kernel.tenant("acme").ledger.balances():
        if b.allow_negative:
            issuers.add((b.owner, b.currency))
        else:
            held[b.currency] = held.get(b.currency, 0) + b.posted
    return held, issuers


async def _setup(kernel: sos_kernel.Kernel) -> None:
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await view.ledger.open_account(T, USD, allow_negative=True)
    for owner, currency in ((M, USD), (M, MIND), ("agent:alice", USD), ("tenant:acme", USD)):
        await view.ledger.open_account(owner, currency)
    for owner in (M, "agent:alice", "tenant:acme"):
        await view.ledger.transfer(id=f"seed-{owner[6:]}", debit=T, credit=owner, amount=1_000, currency=USD)
    await view.ledger.hold(id="hold-alice", debit="agent:alice", credit=M, amount=100, currency=USD, timeout_s=600)
    split = {"revenue_split": {"author": 0.5, "operator": 0.3, "network": 0.2}}
    await view.skills.publish(_skill("paid", "agent:alice", **split))
    await view.providers.register({**LOCAL, "id": "loc"})
    await view.ledger.set_price("loc", "echo", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
    await view.tasks.create("alice's", id="alice-task", reviewers=[M, "agent:bob"], bounty=50, funded_by="agent:alice")


async def test_an_agent_creates_no_money_through_any_operation(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    await _setup(kernel)
    token = await kernel.tenant("acme").tokens.issue(agent=M)
    mallory = await connect(token.secret)
    held, issuers = await _money(kernel)
    for (service, method), calls in HOSTILE.items():
        for number, call in enumerate(calls):
            with contextlib.suppress(SOSError):
                await call(mallory)
            now_held, now_issuers = await _money(kernel)
            where = (service, method, number)
            assert now_issuers == issuers, where
            assert all(now_held.get(c, 0) <= held.get(c, 0) for c in now_held), (where, held, now_held)
            held = now_held
    await kernel.tenant("acme").ledger.check()


NO_SPEND = {
    "name": "no-spend",
    "rules": [{"id": "all", "effect": "allow", "actions": ["**"]}],
    "limits": [{"id": "spend", "actions": ["**"], "per": "agent", "window_s": 3600, "spend_micros_max": 0}],
}
"""A policy that allows every action and lets no agent spend a micro: only an operation that moves money without
declaring its spend gets past it."""


async def _available(kernel: sos_kernel.Kernel, owner: str) -> dict[str, int]:
    found = await kernel.tenant("acme").ledger.balances()
    return {b.currency: b.credits_posted - b.debits_posted - b.debits_pending for b in found if b.owner == owner}


async def test_every_operation_that_moves_an_agents_money_is_held_to_its_spend_budget(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    """Every money-moving operation, driven with the calls above (whatever its arguments are named, a skill's price
    comes from its card), moves none of the agent's money under a zero spend budget: an operation that moved money
    without declaring its spend would get past it."""
    await _setup(kernel)
    await kernel.tenant("acme").governance.set_policy("acme", NO_SPEND)
    token = await kernel.tenant("acme").tokens.issue(agent=M)
    mallory = await connect(token.secret)
    before = await _available(kernel, M)
    for (service, method), calls in HOSTILE.items():
        for number, call in enumerate(calls):
            with contextlib.suppress(SOSError):
                await call(mallory)
            now = await _available(kernel, M)
            assert all(now.get(c, 0) >= before.get(c, 0) for c in before), ((service, method, number), before, now)
            before = now


def _money_table() -> list[tuple[set[str], str]]:
    """The rows of docs/ledger.md's "Where money comes from" table: the operations named, and who may call."""
    text = DOCS.read_text()
    section = text.split("## Where money comes from", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[0] in ("operation", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((set(re.findall(r"`([a-z_]+)", cells[0])), cells[1]))
    return rows


MONEY_SOURCES = {"open_account", "set_rate", "transmute", "transfer", "transfer_many", "hold", "capture"}
"""The operations that can credit an account without an equal debit from a must-not-overdraw one."""
ADMIN_ONLY: dict[str, Call] = {
    "open_account": lambda s: s.ledger.open_account("system:mint", USD, allow_negative=True),
    "set_rate": lambda s: s.ledger.set_rate(USD, MIND, rate_num=2, rate_den=1),
    "transmute": lambda s: s.ledger.transmute(
        id="x", owner=M, amount=1, from_currency=USD, to_currency=MIND, rate_num=2, rate_den=1
    ),
}
"""A money-creating call of each operation the table reserves to ``ledger:admin``."""


def test_the_docs_list_exactly_the_operations_that_create_money() -> None:
    known = set().union(*(_operations(p) for p in PROTOCOLS.values()))
    rows = [(ops & known, who) for ops, who in _money_table()]  # arguments are named in backticks too
    assert all(ops for ops, _ in rows)
    assert set().union(*(ops for ops, _ in rows)) == MONEY_SOURCES
    admin_only = {op for ops, who in rows if who == "`ledger:admin`" for op in ops}
    assert admin_only == set(ADMIN_ONLY)


async def test_what_the_docs_reserve_to_admins_is_refused_to_an_agent(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    await _setup(kernel)
    mallory = await connect((await kernel.tenant("acme").tokens.issue(agent=M)).secret)
    for operation, call in ADMIN_ONLY.items():
        with pytest.raises(Forbidden):
            await call(mallory)
        assert operation in MONEY_SOURCES


KERNEL_HOLDS = ("engine:c1:hold:t1", "task:t1:fund:h", "skill:i1:author")
"""Holds in each namespace the kernel reserves, placed (as its services do) on the agent's wallet."""


async def test_an_agent_may_not_settle_a_hold_the_kernel_placed_on_its_wallet(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    await _setup(kernel)
    view = kernel.tenant("acme")
    for hold_id in KERNEL_HOLDS:
        await view.ledger.hold(id=hold_id, debit=M, credit="agent:alice", amount=30, currency=USD, timeout_s=600)
    mallory = await connect((await view.tokens.issue(agent=M)).secret)
    admin = await connect((await view.tokens.issue(agent="agent:ops", scopes=["ledger:write", "ledger:admin"])).secret)
    for hold_id in KERNEL_HOLDS:
        namespace = hold_id.split(":", 1)[0] + ":"
        for settle in (mallory.ledger.void(hold_id), mallory.ledger.capture(hold_id, 1)):
            with pytest.raises(Forbidden) as refused:
                await settle
            assert refused.value.code == "SOS-5004"
            assert repr(namespace) in refused.value.message
        assert (await view.ledger.get_transfer(hold_id)).state == "pending"  # nothing was settled
        forged = await mallory.ledger.hold(
            id=hold_id, debit=M, credit="agent:alice", amount=1, currency=USD, timeout_s=60
        )
        assert forged.id == "mallory/" + hold_id  # an agent's own ids never enter the kernel's namespaces
    # the ledger's admin may release a stuck kernel hold (the guard audits the call)
    assert (await admin.ledger.void(KERNEL_HOLDS[0])).ok
    assert (await view.ledger.get_transfer(KERNEL_HOLDS[0])).state == "voided"
