"""Governance on every backend and through the remote client: policies in the one guard, content rules, budgets,
approvals (approved, denied, timed out), and a policy update racing checks."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import sos_kernel
from sos_kernel.errors import Forbidden, NotFound, SchemaViolation

from ..conftest import Connect

pytestmark = pytest.mark.anyio

T = "gov"
USD = "USD"


async def _setup(kernel: sos_kernel.Kernel, connect: Connect, **scopes: list[str]) -> dict[str, Any]:
    _, admin = await kernel.tenants.create(T, "scale")
    view = kernel.tenant(T)
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    await view.ledger.open_account("agent:alice", USD)
    await view.ledger.transfer(id="seed", debit="system:treasury", credit="agent:alice", amount=1000, currency=USD)
    tokens = {"admin": admin}
    for name in ("alice", "boss", "mallory"):
        extra = scopes.get(name, [])
        issued = await view.tokens.issue(
            agent=f"agent:{name}", scopes=["bus:read", "bus:write", "ledger:read", "ledger:write", *extra]
        )
        tokens[name] = issued.secret
    return {"view": view, **{k: await connect(v) for k, v in tokens.items()}}


def _policy(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "team", "version": 2, "rules": list(rules), **extra}


ALLOW_READS = {"id": "reads", "effect": "allow", "actions": ["ledger.balance", "ledger.history"]}


async def test_a_tenant_without_a_policy_is_held_to_its_scopes_only(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    s = await _setup(kernel, connect)
    assert (await s["alice"].ledger.balance("agent:alice", USD)).posted == 1000
    assert await s["admin"].governance.get_policy(T) is None


async def test_with_a_policy_an_action_no_rule_allows_is_refused(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    info = await s["admin"].governance.set_policy(T, _policy(ALLOW_READS))
    assert (info.name, info.version, info.revision) == ("team", 2, 1)
    assert (await s["alice"].ledger.balance("agent:alice", USD)).posted == 1000
    with pytest.raises(Forbidden) as refused:
        await s["alice"].ledger.transfer(id="t1", debit="agent:alice", credit="system:treasury", amount=1, currency=USD)
    assert "policy 'team'" in refused.value.message
    assert "no rule allowing 'ledger.transfer'" in refused.value.message
    assert refused.value.code == "SOS-5004"
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 1000  # nothing moved
    denials = await s["admin"].audit.events(T, kind="denial")
    assert [(d.action, d.actor) for d in denials] == [("ledger.transfer", "agent:alice")]


async def test_only_governance_admin_sets_or_removes_a_policy(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    with pytest.raises(Forbidden):
        await s["alice"].governance.set_policy(T, _policy({"id": "all", "effect": "allow", "actions": ["**"]}))
    await s["admin"].governance.set_policy(T, _policy(ALLOW_READS))
    with pytest.raises(Forbidden):
        await s["alice"].governance.remove_policy(T)
    with pytest.raises(Forbidden):  # another tenant's policy is out of reach even for the admin
        await s["admin"].governance.set_policy("default", _policy())
    assert await s["admin"].governance.remove_policy(T) is True
    with pytest.raises(Forbidden):  # a policy cannot lock the admin out: governance operations follow scopes
        await s["alice"].governance.get_policy(T)


async def test_an_invalid_policy_is_refused_and_nothing_changes(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    with pytest.raises(SchemaViolation):
        await s["admin"].governance.set_policy(T, {"name": "x", "rules": [{"id": "r", "effect": "sure"}]})
    assert await s["admin"].governance.get_policy(T) is None


MERGED_YAML = """name: team
limits:
  - &a {id: x1, actions: [ledger.transfer], window_s: 60, spend_micros_max: 1}
  - <<: *a
    id: x2
"""


async def test_a_yaml_policy_with_anchors_or_merge_keys_is_refused_and_nothing_changes(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    s = await _setup(kernel, connect)
    with pytest.raises(SchemaViolation) as info:
        await s["admin"].governance.set_policy(T, MERGED_YAML)
    assert info.value.details == {
        "errors": [{"loc": "limits.0", "msg": "an anchor (&a) is not plain data", "type": "yaml_anchor"}]
    }
    assert await s["admin"].governance.get_policy(T) is None


async def test_deny_rules_and_tricks_in_names(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "no-treasury", "effect": "deny", "actions": ["bus.send"], "resources": ["agent:treasurer"]},
            {"id": "send", "effect": "allow", "actions": ["bus.send"]},
        ),
    )
    await s["alice"].bus.send("agent:alice", "agent:bob", "hi")
    for spelling in (
        "agent:treasurer",
        "agent:TREASURER",
        "agent:" + "".join(chr(ord(c) + 0xFEE0) for c in "treasurer"),
    ):
        with pytest.raises(Forbidden):
            await s["alice"].bus.send("agent:alice", spelling, "hi")


async def test_content_rules_block_message_text(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "send", "effect": "allow", "actions": ["bus.send"]},
            content=[{"id": "secrets", "actions": ["bus.*"], "blocked": ["password"]}],
        ),
    )
    await s["alice"].bus.send("agent:alice", "agent:bob", "lunch?")
    with pytest.raises(Forbidden) as refused:
        await s["alice"].bus.send("agent:alice", "agent:bob", "the PASSWORD is hunter2")
    assert "secrets" in refused.value.message
    assert [m.payload.text for m in await s["view"].bus.history("agent:bob")] == ["lunch?"]


INVISIBLE_SPELLINGS = [
    "pass\u200bword",  # zero-width space
    "pass\u00adword",  # soft hyphen
    "pass\u2060word",  # word joiner
    "pa\u200dss\u200cword",  # zero-width joiner and non-joiner
    "\ufeffpass\u200eword\u202e",  # byte-order mark, bidi marks and overrides
    "pass\ufe0fword",  # a variation selector (default-ignorable, not Cf)
    "pass\U000e0041word",  # a tag character
    "\uff30\uff21\uff33\uff33\u200b\uff57\uff4f\uff52\uff44",  # full-width and invisible together
    "pass\x07word",  # control characters: BEL, NUL, DEL, the C1 NEL
    "pass\x00word",
    "pass\x7fword",
    "pass\x85word",
    "pass\u0336word",  # a combining overlay left after composition (a long stroke)
    "pa\u20ddssword",  # an enclosing mark
    "pass\ue000word",  # a private-use character
]


@pytest.mark.parametrize("spelling", INVISIBLE_SPELLINGS)
async def test_content_rules_see_through_invisible_characters(
    kernel: sos_kernel.Kernel, connect: Connect, spelling: str
) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "send", "effect": "allow", "actions": ["bus.send"]},
            content=[{"id": "secrets", "actions": ["bus.*"], "blocked": ["password"]}],
        ),
    )
    with pytest.raises(Forbidden) as refused:
        await s["alice"].bus.send("agent:alice", "agent:bob", f"my {spelling} is hunter2")
    assert refused.value.details.get("rule") == "secrets"
    assert await s["view"].bus.history("agent:bob") == []


async def test_a_call_budget_per_window(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(
        T,
        _policy(ALLOW_READS, limits=[{"id": "read-budget", "actions": ["ledger.*"], "window_s": 3600, "calls_max": 3}]),
    )
    for _ in range(3):
        await s["alice"].ledger.balance("agent:alice", USD)
    with pytest.raises(Forbidden) as refused:
        await s["alice"].ledger.balance("agent:alice", USD)
    assert "limit 'read-budget'" in refused.value.message
    await s["admin"].ledger.balance("agent:alice", USD)  # counted per agent: the admin token has its own


async def test_a_spend_budget_counts_micros(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "pay", "effect": "allow", "actions": ["ledger.transfer"]},
            limits=[{"id": "spend", "actions": ["ledger.transfer"], "window_s": 3600, "spend_micros_max": 100}],
        ),
    )
    await s["alice"].ledger.transfer(id="a", debit="agent:alice", credit="system:treasury", amount=60, currency=USD)
    with pytest.raises(Forbidden):
        await s["alice"].ledger.transfer(id="b", debit="agent:alice", credit="system:treasury", amount=41, currency=USD)
    await s["alice"].ledger.transfer(id="c", debit="agent:alice", credit="system:treasury", amount=40, currency=USD)
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 900


def _approval_policy(timeout_s: float) -> dict[str, Any]:
    return _policy(
        ALLOW_READS,
        {"id": "pay-needs-ok", "effect": "require_approval", "actions": ["ledger.transfer"]},
        reviewers=["agent:boss"],
        approval_timeout_s=timeout_s,
    )


async def _pending(kernel: sos_kernel.Kernel) -> Any:
    with anyio.fail_after(10):
        found = await kernel.tenant(T).governance.pending()
        while not found:
            await anyio.sleep(0.02)  # the request is made by another task, through the store
            found = await kernel.tenant(T).governance.pending()
    return found[0]


async def test_an_approved_call_proceeds(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect, boss=["governance:review", "governance:read"])
    await s["admin"].governance.set_policy(T, _approval_policy(30))
    done: list[Any] = []

    async def pay() -> None:
        done.append(
            await s["alice"].ledger.transfer(
                id="p", debit="agent:alice", credit="system:treasury", amount=5, currency=USD
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(pay)
        waiting = await _pending(kernel)
        assert (waiting.action, waiting.agent, waiting.state) == ("ledger.transfer", "agent:alice", "pending")
        assert (waiting.arguments["amount"], waiting.arguments["credit"]) == (5, "system:treasury")
        assert [a.id for a in await s["boss"].governance.pending()] == [waiting.id]
        with pytest.raises(Forbidden):  # not a reviewer the policy names
            await s["mallory"].governance.approve(waiting.id)
        decided = await s["boss"].governance.approve(waiting.id, "fine")
        assert (decided.state, decided.reviewer) == ("approved", "agent:boss")
    assert [t.ok for t in done] == [True]
    assert await kernel.tenant(T).governance.pending() == []
    kinds = [r.kind for r in await s["admin"].audit.events(T)]
    assert {"approval.requested", "approval.approved"} <= set(kinds)
    verdicts = [m for m in await s["view"].bus.history("sos:channel:governance") if m.type == "gate_verdict"]
    assert [v.payload.verdict for v in verdicts] == ["approve"]


async def test_a_pending_approval_shows_what_it_approves(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    """Two pending transfers to the same account differ by their amounts in what the reviewer sees; approving one
    lets that one call through, and only it."""
    s = await _setup(kernel, connect, boss=["governance:review", "governance:read"])
    await s["admin"].governance.set_policy(T, _approval_policy(30))
    outcomes: dict[int, str] = {}

    async def pay(amount: int) -> None:
        try:
            await s["alice"].ledger.transfer(
                id=f"p{amount}", debit="agent:alice", credit="system:treasury", amount=amount, currency=USD
            )
            outcomes[amount] = "paid"
        except Forbidden:
            outcomes[amount] = "refused"

    async with anyio.create_task_group() as tg:
        tg.start_soon(pay, 1)
        tg.start_soon(pay, 990)
        await _count_pending(kernel, 2)
        seen = {a.arguments["amount"]: a for a in await s["boss"].governance.pending()}
        assert sorted(seen) == [1, 990]
        assert {a.arguments["credit"] for a in seen.values()} == {"system:treasury"}
        assert {a.arguments["debit"] for a in seen.values()} == {"agent:alice"}
        assert seen[1].arguments["id"] != seen[990].arguments["id"]
        await s["boss"].governance.approve(seen[1].id)
        await s["boss"].governance.deny(seen[990].id, "too much")
    assert outcomes == {1: "paid", 990: "refused"}
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 999
    history = await s["view"].bus.history("sos:channel:governance")
    announced = [json.loads(m.payload.text)["approval"] for m in history if m.type != "gate_verdict"]
    assert len(announced) == 2  # the tenant's channel announces each request, its arguments only to reviewers
    assert all("arguments" not in a for a in announced)


async def test_a_denied_call_is_refused(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(T, _approval_policy(30))

    async def pay() -> None:
        with pytest.raises(Forbidden, match="denied"):
            await s["alice"].ledger.transfer(
                id="p", debit="agent:alice", credit="system:treasury", amount=5, currency=USD
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(pay)
        waiting = await _pending(kernel)
        await s["admin"].governance.deny(waiting.id, "not today")
    with pytest.raises(NotFound):  # decided once
        await s["admin"].governance.approve(waiting.id)
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 1000


async def test_an_approval_that_times_out_denies(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(T, _approval_policy(0.3))
    with pytest.raises(Forbidden, match="expired"):
        await s["alice"].ledger.transfer(id="p", debit="agent:alice", credit="system:treasury", amount=5, currency=USD)
    assert await kernel.tenant(T).governance.pending() == []
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 1000
    assert [r.outcome for r in await s["admin"].audit.events(T, kind="approval.expired")] == ["expired"]


async def test_a_policy_update_racing_checks(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    allow = _policy(ALLOW_READS)
    deny = {"name": "closed", "rules": [{"id": "nope", "effect": "deny", "actions": ["ledger.*"]}]}
    outcomes: list[str] = []

    async def flip() -> None:
        for i in range(20):
            await s["admin"].governance.set_policy(T, allow if i % 2 else deny)
            await anyio.lowlevel.checkpoint()

    async def check() -> None:
        for _ in range(40):
            try:
                await s["alice"].ledger.balance("agent:alice", USD)
                outcomes.append("allowed by team")
            except Forbidden as exc:
                outcomes.append(f"denied by {exc.details.get('policy')}:{exc.details.get('rule')}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(flip)
        tg.start_soon(check)
    assert set(outcomes) <= {"allowed by team", "denied by closed:nope"}
    assert (await s["admin"].governance.get_policy(T))["name"] == "team"  # the last one set
    await s["alice"].ledger.balance("agent:alice", USD)  # and the next check sees it


async def test_subscribing_passes_the_policy(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect)
    await s["view"].bus.send("agent:bob", "agent:alice", "for alice")
    await s["admin"].governance.set_policy(T, _policy(ALLOW_READS))
    with pytest.raises(Forbidden) as refused:  # no rule allows bus.subscribe: the local operation is governed too
        async with s["alice"].bus.subscribe("agent:alice") as sub:
            await sub.receive(timeout_s=0)
    assert "no rule allowing 'bus.subscribe'" in refused.value.message
    assert [d.action for d in await s["admin"].audit.events(T, kind="denial")] == ["bus.subscribe"]
    await s["admin"].governance.set_policy(
        T, _policy(ALLOW_READS, {"id": "sub", "effect": "allow", "actions": ["bus.subscribe"]})
    )
    async with s["alice"].bus.subscribe("agent:alice") as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        assert delivery.message.payload.text == "for alice"
        await delivery.ack()


async def test_no_one_decides_an_approval_they_requested(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect, boss=["governance:review", "governance:read", "governance:admin"])
    await s["view"].ledger.open_account("agent:boss", USD)
    await s["view"].ledger.transfer(
        id="seed-boss", debit="system:treasury", credit="agent:boss", amount=9, currency=USD
    )
    await s["admin"].governance.set_policy(T, _approval_policy(30))

    async def pay() -> None:
        with pytest.raises(Forbidden, match="denied"):
            await s["boss"].ledger.transfer(
                id="p", debit="agent:boss", credit="system:treasury", amount=5, currency=USD
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(pay)
        waiting = await _pending(kernel)
        assert waiting.agent == "agent:boss"
        for decide in (s["boss"].governance.approve, s["boss"].governance.deny):  # a listed reviewer and an admin
            with pytest.raises(Forbidden, match="may not decide an approval it requested"):
                await decide(waiting.id)
        assert [a.id for a in await kernel.tenant(T).governance.pending()] == [waiting.id]
        await s["admin"].governance.deny(waiting.id, "not by yourself")
    assert (await s["view"].ledger.balance("agent:boss", USD)).posted == 9


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_content_rules_scan_every_argument_and_refuse_what_they_cannot_scan(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "pay", "effect": "allow", "actions": ["ledger.transfer", "ledger.transfer_many"]},
            content=[{"id": "secrets", "actions": ["ledger.*"], "blocked": ["password"]}],
        ),
    )
    pay = {"debit": "agent:alice", "credit": "system:treasury", "amount": 1, "currency": USD}
    await s["alice"].ledger.transfer(id="ok", **pay, metadata={"note": "fine"})
    for label, call in (
        ("a nested value", lambda: s["alice"].ledger.transfer(id="x1", **pay, metadata=_nested("password", 10))),
        ("a key", lambda: s["alice"].ledger.transfer(id="x2", **pay, metadata={"the password": 1})),
        ("a batch item", lambda: s["alice"].ledger.transfer_many([{"id": "x3", **pay, "reason": "password: x"}])),
    ):
        with pytest.raises(Forbidden) as refused:
            await call()
        assert refused.value.details.get("rule") == "secrets", label
    with pytest.raises(Forbidden) as refused:  # too deep to scan: refused, never skipped
        await s["alice"].ledger.transfer(id="x4", **pay, metadata=_nested("fine", 40))
    assert refused.value.details.get("rule") == "content-too-large"
    assert "beyond what a content check scans" in refused.value.message
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 999


async def test_budgets_and_resource_rules_see_batches_and_bounties(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    s = await _setup(kernel, connect, alice=["tasks:write", "tasks:read"])
    await s["view"].ledger.open_account("agent:mallory", USD)
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "no-mallory", "effect": "deny", "actions": ["ledger.*"], "resources": ["agent:mallory"]},
            {"id": "no-secrets", "effect": "deny", "actions": ["tasks.*"], "resources": ["secret-*"]},
            {"id": "pay", "effect": "allow", "actions": ["ledger.transfer", "ledger.transfer_many", "tasks.create"]},
            limits=[{"id": "spend", "actions": ["ledger.*", "tasks.*"], "window_s": 3600, "spend_micros_max": 100}],
        ),
    )
    pay = {"debit": "agent:alice", "currency": USD}
    with pytest.raises(Forbidden) as refused:  # 2 x 60 in one batch is 120 over a budget of 100
        await s["alice"].ledger.transfer_many(
            [{"id": f"b{i}", **pay, "credit": "system:treasury", "amount": 60} for i in range(2)]
        )
    assert refused.value.details.get("rule") == "spend"
    with pytest.raises(Forbidden) as refused:  # every transfer of a batch is checked against resource rules
        await s["alice"].ledger.transfer_many(
            [
                {"id": "c1", **pay, "credit": "system:treasury", "amount": 1},
                {"id": "c2", **pay, "credit": "agent:mallory", "amount": 1},
            ]
        )
    assert refused.value.details.get("rule") == "no-mallory"
    with pytest.raises(Forbidden) as refused:  # a task's id is its resource
        await s["alice"].tasks.create("quiet", id="secret-1", reviewers=["agent:boss"])
    assert refused.value.details.get("rule") == "no-secrets"
    with pytest.raises(Forbidden) as refused:  # a bounty is spend
        await s["alice"].tasks.create("paid", id="t-1", reviewers=["agent:boss"], bounty=101)
    assert refused.value.details.get("rule") == "spend"
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 1000
    assert await s["view"].ledger.balance("agent:mallory", USD) is not None
    assert (await s["view"].ledger.balance("agent:mallory", USD)).posted == 0


async def test_a_refusal_of_a_huge_argument_is_bounded(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    from sos_kernel.audit import AUDIT_FIELD_CHARS_MAX
    from sos_kernel.guard import REFUSAL_CHARS_MAX, REFUSAL_DETAIL_CHARS_MAX

    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(T, _policy(ALLOW_READS))
    huge = "agent:" + "x" * 60_000
    with pytest.raises(Forbidden) as refused:
        await s["alice"].bus.send("agent:alice", huge, "hi")
    assert len(refused.value.message) <= REFUSAL_CHARS_MAX
    assert all(len(v) <= REFUSAL_DETAIL_CHARS_MAX for v in refused.value.details.values() if isinstance(v, str))
    [denial] = await s["admin"].audit.events(T, kind="denial")
    assert len(denial.resource) == AUDIT_FIELD_CHARS_MAX
    assert denial.resource.startswith("agent:xxx")
    assert "…sha256:" in denial.resource
    assert len(denial.model_dump_json()) < 8 * 1024


async def test_one_agent_cannot_fill_the_tenants_pending_approvals(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    from sos_kernel.governance import APPROVALS_PENDING_PER_AGENT_MAX

    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(T, _approval_policy(30))
    refused: list[Forbidden] = []

    async def pay(i: int) -> None:
        try:
            await s["alice"].ledger.transfer(
                id=f"p{i}", debit="agent:alice", credit="system:treasury", amount=1, currency=USD
            )
        except Forbidden as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(APPROVALS_PENDING_PER_AGENT_MAX):
            tg.start_soon(pay, i)
            await _count_pending(kernel, i + 1)
        await pay(APPROVALS_PENDING_PER_AGENT_MAX)  # one more waits for nothing: refused at once
        assert [e.message for e in refused] == [
            f"agent:alice: agent:alice already has {APPROVALS_PENDING_PER_AGENT_MAX} pending approvals"
        ]
        for waiting in await kernel.tenant(T).governance.pending():
            await s["admin"].governance.deny(waiting.id)


async def _count_pending(kernel: sos_kernel.Kernel, n: int) -> None:
    with anyio.fail_after(10):
        found = await kernel.tenant(T).governance.pending()
        while len(found) < n:
            await anyio.sleep(0.02)  # the requests are made by other tasks, through the store
            found = await kernel.tenant(T).governance.pending()


async def test_decided_approvals_are_dropped_after_their_retention(
    kernel: sos_kernel.Kernel, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sos_kernel.governance import store

    monkeypatch.setattr(store, "APPROVALS_DECIDED_KEPT_S", 0)  # kept until its deadline only
    s = await _setup(kernel, connect)
    await s["admin"].governance.set_policy(T, _approval_policy(1))

    async def pay(id: str) -> None:
        with pytest.raises(Forbidden):
            await s["alice"].ledger.transfer(
                id=id, debit="agent:alice", credit="system:treasury", amount=1, currency=USD
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(pay, "p1")
        first = await _pending(kernel)
        await s["admin"].governance.deny(first.id)
    assert await kernel.tenant(T).governance._approval(first.id) is not None  # decided, before its deadline
    await anyio.sleep(1.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pay, "p2")
        second = await _pending(kernel)
        assert await kernel.tenant(T).governance._approval(first.id) is None  # dropped when p2 asked
        await s["admin"].governance.deny(second.id)


def _paid_skill(id: str, author: str, price: int, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "schema_version": "1",
        "id": id,
        "name": id,
        "version": version,
        "author_agent": author,
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": "x.py"},
        "commerce": {"price_per_call_micros": price, "currency": USD, "marketplace_listed": True},
    }


async def test_a_spend_budget_counts_paid_skill_invocations(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    """A paid invocation counts its price (the resolved version's) against the caller's spend budget, and one that
    would pass it is refused before any money moves; a retry of a counted one is replayed, not refused."""
    s = await _setup(kernel, connect, alice=["skills:invoke"])
    await s["view"].ledger.open_account("agent:boss", USD)
    await s["view"].skills.publish(_paid_skill("pricey", "agent:boss", 400))
    await s["admin"].governance.set_policy(
        T,
        _policy(
            {"id": "all", "effect": "allow", "actions": ["*"]},
            limits=[{"id": "spend", "actions": ["*"], "per": "agent", "window_s": 3600, "spend_micros_max": 900}],
        ),
    )
    await s["alice"].ledger.transfer(id="a", debit="agent:alice", credit="agent:boss", amount=100, currency=USD)
    first = await s["alice"].skills.record_invocation("pricey", caller="agent:alice", tenant=T, invocation_id="i1")
    assert first.price_micros == 400
    await s["alice"].skills.record_invocation("pricey", caller="agent:alice", tenant=T, invocation_id="i2")
    again = await s["alice"].skills.record_invocation("pricey", caller="agent:alice", tenant=T, invocation_id="i1")
    assert again.replayed
    with pytest.raises(Forbidden) as refused:  # 100 + 400 + 400 spent: a third 400 passes 900
        await s["alice"].skills.record_invocation("pricey", caller="agent:alice", tenant=T, invocation_id="i3")
    assert refused.value.code == "SOS-5004"
    assert refused.value.details.get("rule") == "spend"
    assert (await s["view"].ledger.balance("agent:alice", USD)).posted == 1000 - 900
    assert (await s["view"].ledger.balance("agent:boss", USD)).posted == 900
    with pytest.raises(Forbidden):  # the refused invocation's hold was given back, the charged ones kept
        await s["alice"].ledger.transfer(id="b", debit="agent:alice", credit="agent:boss", amount=1, currency=USD)
    earnings = (await s["view"].skills.get("pricey")).earnings
    assert earnings is not None
    assert earnings.total_invocations == 2
