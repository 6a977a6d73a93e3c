"""Security events recorded in the same store step as their effect (the pattern of
``test_audit.py::test_a_ledger_write_never_exists_without_its_record``, table-driven over the events).

On every engine each event's record is in the chain exactly once, with the fields the service gives it. On the
durable engines the tenant's audit append is made to fail inside the store's step (SQLite: a trigger that raises
on ``audit_records``; Redis: the tenant's records key holding a wrong type): the call fails and its effect does not
exist, so no effect is ever left without its record.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel import audit as audit_module
from sos_kernel.backends import Implements
from sos_kernel.backends.sqlite import sqlite_path
from sos_kernel.errors import Forbidden, SOSError
from sos_kernel.governance.service import Approval
from sos_kernel.identity.capability import Capability
from sos_kernel.identity.keys import AgentKey
from sos_kernel.ledger.service import LEDGER_AUDIT_CHECK_BATCHES

from ..conftest import Connect, requires

pytestmark = pytest.mark.anyio

T = "stp"
Kernel = sos_kernel.Kernel


@dataclass(frozen=True)
class Event:
    """One security event: how to set it up, cause it, see whether its effect exists, and the record it owes."""

    kind: str
    act: Callable[[Kernel, Any], Awaitable[Any]]
    exists: Callable[[Kernel, Any], Awaitable[bool]]
    record: Callable[[Any, Any], tuple[str, str, str, str, dict[str, Any]]]
    """(actor, action, resource, outcome, details) from the setup's context and the act's result."""
    setup: Callable[[Kernel], Awaitable[Any]] | None = None


async def _tenant(kernel: Kernel) -> Any:
    await kernel.tenants.create(T, "scale")
    return None


async def _with_token(kernel: Kernel) -> Any:
    await _tenant(kernel)
    return await kernel.tenant(T).tokens.issue(agent="agent:a")


async def _token_live(kernel: Kernel, ctx: Any) -> bool:
    return any(t.agent == "agent:a" for t in await kernel.tenant(T).tokens.list())


async def _token_revoked(kernel: Kernel, ctx: Any) -> bool:
    return any(t.id == ctx.id and t.revoked_at is not None for t in await kernel.tenant(T).tokens.list())


async def _delegated(kernel: Kernel) -> Any:
    await _tenant(kernel)
    issuer, a = AgentKey.generate(), AgentKey.generate()
    root = Capability.issue(
        issuer,
        issuer="agent:issuer",
        subject="agent:a",
        action="bus:*",
        resource="sos:channel:*",
        subject_key=a.public,
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    leaf = root.delegate(a, subject="agent:b", action="bus:read", resource="sos:channel:red", uses=1)
    kernel.tenant(T).capabilities.trust(issuer.public)
    return [root, leaf]


async def _use(kernel: Kernel, chain: Any) -> Any:
    return await kernel.tenant(T).capabilities.use(chain, action="bus:read", resource="sos:channel:red")


async def _use_spent(kernel: Kernel, chain: Any) -> bool:
    try:  # the link has one use: spent by the act, or still there
        await _use(kernel, chain)
    except Forbidden:
        return True
    return False


async def _cap_revoked(kernel: Kernel, ctx: Any) -> bool:
    return bool(await kernel.backend.identity.revoked_capabilities(T, ["cap-x"]))


async def _suspended(kernel: Kernel, ctx: Any) -> bool:
    return (await kernel.tenants.get(T)).status == "suspended"


POLICY = {
    "name": "step",
    "version": 3,
    "rules": [{"id": "ask", "effect": "require_approval", "actions": ["tool.deploy"]}],
    "approval_timeout_s": 30,
}


async def _with_policy(kernel: Kernel) -> Any:
    await _tenant(kernel)
    return await kernel.tenant(T).governance.set_policy(T, POLICY)


async def _policy_set(kernel: Kernel, ctx: Any) -> bool:
    return await kernel.tenant(T).governance.get_policy(T) is not None


async def _policy_gone(kernel: Kernel, ctx: Any) -> bool:
    return await kernel.tenant(T).governance.get_policy(T) is None


def _refuse(message: str, **details: Any) -> Any:
    raise Forbidden(message, details=details)


async def _request(kernel: Kernel, ctx: Any) -> Any:
    with anyio.move_on_after(0.5):  # the call waits for a reviewer; the record is written before it waits
        await kernel.tenant(T).governance.enforce(
            action="tool.deploy", resource="svc:web", agent="agent:a", scopes=frozenset(), deny=_refuse
        )
    return (await kernel.tenant(T).governance.pending())[0]


async def _requested(kernel: Kernel, ctx: Any) -> bool:
    return bool(await kernel.tenant(T).governance.pending())


async def _waiting(kernel: Kernel) -> Approval:
    await _with_policy(kernel)
    now = datetime.now(UTC)
    approval = Approval(
        id="apr-step",
        tenant=T,
        agent="agent:a",
        action="tool.deploy",
        resource="svc:web",
        rule="ask",
        state="pending",
        created_at=now,
        expires_at=now + timedelta(seconds=30),
    )
    doc = approval.model_dump_json()
    await kernel.backend.governance.put_approval(T, approval.id, doc, approval.expires_at.timestamp(), 10, time.time())
    return approval


def _decided(state: str) -> Callable[[Kernel, Any], Awaitable[bool]]:
    async def decided(kernel: Kernel, approval: Any) -> bool:
        found = await kernel.backend.governance.get_approval(T, approval.id)
        return Approval.model_validate_json(found).state == state

    return decided


async def _expire(kernel: Kernel, approval: Any) -> Any:
    return await kernel.tenant(T).governance._await_verdict(approval, 0.01)  # the step that expires a wait


REV = "agent:rev"
EVIDENCE = {"argv": ["pytest", "-q"], "exit_status": 0, "output_sha256": "a" * 64, "output_bytes": 120}
CARD = {
    "schema_version": "1",
    "id": "summarise",
    "name": "Summarise",
    "version": "1.0.0",
    "author_agent": "agent:author",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "skills/summarise.py", "backend": "local-python"},
}


async def _in_review(kernel: Kernel) -> Any:
    await _tenant(kernel)
    tasks = kernel.tenant(T).tasks
    await tasks.create("Write the docs", id="docs-1", reviewers=[REV])
    claim = await tasks.claim("docs-1", agent="agent:worker")
    await tasks.submit("docs-1", claim.token, evidence=[EVIDENCE], result={"pages": 3})
    return None


async def _reviewed(kernel: Kernel, ctx: Any) -> bool:
    return bool((await kernel.tenant(T).tasks.get("docs-1")).reviews)


async def _published(kernel: Kernel) -> Any:
    await _tenant(kernel)
    await kernel.tenant(T).skills.publish(CARD)
    return None


async def _disputed(kernel: Kernel) -> Any:
    await _published(kernel)
    await kernel.tenant(T).skills.verify("summarise", "1.0.0", verifier="agent:ci", status="disputed", reason="bad")
    return None


def _verified(status: str) -> Callable[[Kernel, Any], Awaitable[bool]]:
    async def verified(kernel: Kernel, ctx: Any) -> bool:
        card = await kernel.tenant(T).skills.get("summarise", "1.0.0")
        return card.verification is not None and card.verification.status == status

    return verified


EVENTS = [
    Event(
        "token.issued",
        setup=_tenant,
        act=lambda k, _: k.tenant(T).tokens.issue(agent="agent:a", scopes=["bus:read"]),
        exists=_token_live,
        record=lambda _, r: ("kernel", "", f"token:{r.id}", "ok", {"agent": "agent:a", "scopes": ["bus:read"]}),
    ),
    Event(
        "token.revoked",
        setup=_with_token,
        act=lambda k, t: k.tenant(T).tokens.revoke(t.id),
        exists=_token_revoked,
        record=lambda t, _: ("kernel", "", f"token:{t.id}", "ok", {}),
    ),
    Event(
        "capability.used",
        setup=_delegated,
        act=_use,
        exists=_use_spent,
        record=lambda c, _: (
            "agent:b",
            "bus:read",
            "sos:channel:red",
            "ok",
            {"capability": c[1].id, "chain": [c[0].id, c[1].id]},
        ),
    ),
    Event(
        "capability.revoked",
        setup=_tenant,
        act=lambda k, _: k.tenant(T).capabilities.revoke("cap-x"),
        exists=_cap_revoked,
        record=lambda *_: ("kernel", "", "capability:cap-x", "ok", {}),
    ),
    Event(
        "tenant.status",
        setup=_tenant,
        act=lambda k, _: k.tenants.suspend(T),
        exists=_suspended,
        record=lambda *_: ("kernel", "", f"tenant:{T}", "suspended", {}),
    ),
    Event(
        "policy.set",
        setup=_tenant,
        act=lambda k, _: k.tenant(T).governance.set_policy(T, POLICY),
        exists=_policy_set,
        record=lambda _, r: (
            "kernel",
            "governance.set_policy",
            "policy:step",
            "ok",
            {"version": 3, "revision": r.revision, "digest": r.digest},
        ),
    ),
    Event(
        "policy.removed",
        setup=_with_policy,
        act=lambda k, _: k.tenant(T).governance.remove_policy(T),
        exists=_policy_gone,
        record=lambda *_: ("kernel", "governance.remove_policy", "", "ok", {}),
    ),
    Event(
        "approval.requested",
        setup=_with_policy,
        act=_request,
        exists=_requested,
        record=lambda _, a: ("agent:a", "tool.deploy", "svc:web", "pending", {"approval": a.id, "rule": "ask"}),
    ),
    Event(
        "approval.approved",
        setup=_waiting,
        act=lambda k, a: k.tenant(T).governance.approve(a.id, "fine"),
        exists=_decided("approved"),
        record=lambda a, _: ("kernel", "tool.deploy", "svc:web", "approved", {"approval": a.id, "reason": "fine"}),
    ),
    Event(
        "approval.denied",
        setup=_waiting,
        act=lambda k, a: k.tenant(T).governance.deny(a.id, "no"),
        exists=_decided("denied"),
        record=lambda a, _: ("kernel", "tool.deploy", "svc:web", "denied", {"approval": a.id, "reason": "no"}),
    ),
    Event(
        "approval.expired",
        setup=_waiting,
        act=_expire,
        exists=_decided("expired"),
        record=lambda a, _: ("kernel", "tool.deploy", "svc:web", "expired", {"approval": a.id}),
    ),
    Event(
        "operation",  # a task verdict
        setup=_in_review,
        act=lambda k, _: k.tenant(T).tasks.review("docs-1", reviewer=REV, verdict="approve"),
        exists=_reviewed,
        record=lambda *_: ("kernel", "tasks.review", "docs-1", "ok", {"id": "docs-1"}),
    ),
    Event(
        "operation",  # a skill verification
        setup=_published,
        act=lambda k, _: k.tenant(T).skills.verify("summarise", "1.0.0", verifier="agent:ci", status="auto_verified"),
        exists=_verified("auto_verified"),
        record=lambda *_: ("kernel", "skills.verify", "summarise", "ok", {"id": "summarise"}),
    ),
    Event(
        "operation",  # a dispute closed by a fresh verification
        setup=_disputed,
        act=lambda k, _: k.tenant(T).skills.resolve_dispute(
            "summarise", "1.0.0", verifier="agent:ci", status="human_verified"
        ),
        exists=_verified("human_verified"),
        record=lambda *_: ("kernel", "skills.resolve_dispute", "summarise", "ok", {"id": "summarise"}),
    ),
]
IDS = [e.kind if e.kind != "operation" else e.record(None, None)[1] for e in EVENTS]


class BrokenAudit:
    """Makes every audit append of tenant ``T`` fail inside the store's step, behind the kernel's back."""

    def __init__(self, kernel: Kernel, target: str) -> None:
        self.kernel = kernel
        self.redis = target in ("redis", "redis-cluster")

    async def __aenter__(self) -> None:
        if self.redis:
            await self._redis(broken=True)
        else:
            with sqlite3.connect(sqlite_path(self.kernel.url)) as c:
                c.execute(
                    f"CREATE TRIGGER stp_fail BEFORE INSERT ON audit_records WHEN NEW.tenant = '{T}'"
                    " BEGIN SELECT RAISE(ABORT, 'audit append refused'); END"
                )

    async def __aexit__(self, *exc: object) -> None:
        if self.redis:
            await self._redis(broken=False)
        else:
            with sqlite3.connect(sqlite_path(self.kernel.url)) as c:
                c.execute("DROP TRIGGER stp_fail")

    async def _redis(self, *, broken: bool) -> None:
        from ..redis_cluster import async_client

        key = f"sos:{{t:{T}}}:audit:records"
        r = async_client(self.kernel.url)
        try:
            if broken:  # the records aside, a string in their place: HSET fails with WRONGTYPE
                await r.rename(key, key + ":aside")
                await r.set(key, "not a hash")
            else:
                await r.delete(key)
                await r.rename(key + ":aside", key)
        finally:
            await r.aclose()


async def _head(kernel: Kernel) -> int:
    seq, _ = await kernel.backend.audit.head(T)
    return seq


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
async def test_each_event_is_recorded_exactly_once(kernel: Kernel, event: Event) -> None:
    ctx = await event.setup(kernel) if event.setup else None
    before = await _head(kernel)
    result = await event.act(kernel, ctx)
    expected = event.record(ctx, result)
    found = await kernel.tenant(T).audit.events(T, after=before, kind=event.kind, action=expected[1] or None)
    assert [(r.actor, r.action, r.resource, r.outcome, dict(r.details)) for r in found] == [expected]
    assert await event.exists(kernel, ctx)
    assert (await kernel.tenant(T).audit.verify()).ok


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
async def test_an_effect_never_exists_without_its_record(
    kernel: Kernel, implements: Implements, target: str, event: Event
) -> None:
    requires(implements, durable=True)  # an engine whose audit append can be made to fail behind the kernel
    ctx = await event.setup(kernel) if event.setup else None
    before = await _head(kernel)
    async with BrokenAudit(kernel, target):
        with pytest.raises(SOSError):
            await event.act(kernel, ctx)
    assert await kernel.tenant(T).audit.events(T, after=before) == []
    assert not await event.exists(kernel, ctx)
    assert (await kernel.tenant(T).audit.verify()).ok


async def test_a_verdict_through_a_session_is_recorded_once(kernel: Kernel, connect: Connect) -> None:
    """The guard adds no record of its own to one the service wrote in the store's step, in-process or remote."""
    await _in_review(kernel)
    await kernel.tenant(T).skills.publish(CARD)
    view = kernel.tenant(T)
    rev = await connect((await view.tokens.issue(agent=REV, scopes=["tasks:write", "tasks:read"])).secret)
    ci = await connect((await view.tokens.issue(agent="agent:ci", scopes=["skills:verify", "skills:read"])).secret)
    before = await _head(kernel)
    await rev.tasks.review("docs-1", reviewer=REV, verdict="approve")
    await ci.skills.verify("summarise", "1.0.0", verifier="agent:ci", status="auto_verified")
    found = await view.audit.events(T, after=before, kind="operation")
    assert [(r.actor, r.action, r.resource, dict(r.details)) for r in found] == [
        (REV, "tasks.review", "docs-1", {"id": "docs-1"}),
        ("agent:ci", "skills.verify", "summarise", {"id": "summarise"}),
    ]
    assert (await view.audit.verify()).ok


@pytest.mark.parametrize("store", ["identity", "governance", "tasks", "skills", "ledger"], ids=lambda s: f"{s}-store")
async def test_every_engine_records_in_the_store_step(kernel: Kernel, store: str) -> None:
    assert getattr(kernel.backend, store).audits_writes is True


async def _signed(kernel: Kernel) -> list[int]:
    return [cp.seq for cp in await kernel.backend.audit.checkpoints(T)]


async def test_a_checkpoint_is_signed_whoever_appended_the_record_on_its_multiple(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head crossing a multiple of ``AUDIT_CHECKPOINT_EVERY`` is signed, whether the kernel or a store's own
    step appended the record on it; a ledger-only stretch is checked once per ``LEDGER_AUDIT_CHECK_BATCHES``."""
    monkeypatch.setattr(audit_module, "AUDIT_CHECKPOINT_EVERY", 4)
    await _tenant(kernel)  # records 1 and 2: the tenant's status and its admin token, by the identity store
    view = kernel.tenant(T)
    await view.audit.record("test", actor="agent:a")  # 3
    await view.capabilities.revoke("c1")  # 4, by the identity store's step
    assert await _signed(kernel) == [4]
    await view.capabilities.revoke("c2")  # 5
    await view.audit.record("test", actor="agent:a")  # 6
    assert await _signed(kernel) == [4]
    await view.ledger.open_account("system:t", "USD", allow_negative=True)
    await view.ledger.open_account("agent:a", "USD")
    for i in range(LEDGER_AUDIT_CHECK_BATCHES):  # records 7..22, by the ledger's step
        await view.ledger.transfer(id=f"w{i}", debit="system:t", credit="agent:a", amount=1, currency="USD")
    assert await _signed(kernel) == [4, 6 + LEDGER_AUDIT_CHECK_BATCHES]
    await view.audit.record("test", actor="agent:a")  # 23: the head already signed past 20
    assert await _signed(kernel) == [4, 22]
    await view.audit.record("test", actor="agent:a")  # 24
    assert await _signed(kernel) == [4, 22, 24]
    report = await view.audit.verify()
    assert (report.ok, report.checkpoints) == (True, 3)


async def test_a_store_written_record_reads_back_exactly_with_unusual_text(kernel: Kernel) -> None:
    """Every field of a record a store writes in its own step (on Redis: JSON built by the script around the
    kernel's encoding) survives quotes, backslashes, non-ASCII text and a value cut to its bound."""
    from sos_kernel.audit import AUDIT_FIELD_CHARS_MAX, act_as, done_acting

    await _tenant(kernel)
    view = kernel.tenant(T)
    odd = 'c"uote\\/ü😀\n\t'
    token = act_as('agent:q"uote\\/ü😀')
    try:
        before = await _head(kernel)
        await view.capabilities.revoke(odd)
        await view.capabilities.revoke("x" * (AUDIT_FIELD_CHARS_MAX + 10))
        await view.governance.set_policy(T, {**POLICY, "name": "p.x:y-z"})
        second = await view.governance.set_policy(T, {**POLICY, "name": "p.x:y-z", "version": 4})
    finally:
        done_acting(token)
    found = await view.audit.events(T, after=before)
    assert [(r.kind, r.actor, r.resource) for r in found[:1]] == [
        ("capability.revoked", 'agent:q"uote\\/ü😀', f"capability:{odd}")
    ]
    assert len(found[1].resource) == AUDIT_FIELD_CHARS_MAX
    assert "…sha256:" in found[1].resource
    assert [(r.resource, r.details["version"], r.details["revision"]) for r in found[2:]] == [
        ("policy:p.x:y-z", 3, 1),
        ("policy:p.x:y-z", 4, 2),
    ]
    assert found[3].details["digest"] == second.digest
    report = await view.audit.verify()
    assert (report.ok, report.problems) == (True, [])
