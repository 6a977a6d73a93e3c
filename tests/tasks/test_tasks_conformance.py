"""Tasks conformance on every backend and through the remote client: the lifecycle, the transition table, fenced
claims, gates, escrow and the messages each transition publishes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

import sos_kernel
from sos_kernel.errors import (
    Forbidden,
    IdempotencyConflict,
    IllegalTransition,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    SchemaViolation,
    SOSError,
    TaskAlreadyClaimed,
    TaskNotFound,
)
from sos_kernel.ledger import Ledger
from sos_kernel.tasks import ESCROW_ACCOUNT, TITLE_CHARS_MAX, TRANSITIONS, split_bounty
from sos_kernel.tasks import service as tasks_service

from ..conftest import Api, Connect

pytestmark = pytest.mark.anyio

REFERENCE_DIR = Path("/work/shared/reference/sos-v0.4.1/schemas")  # as tests/contracts reads it
SCHEMA = json.loads((REFERENCE_DIR / "squad_task_v1.json").read_text(encoding="utf-8"))
USD = "USD"
BOSS, WORKER, OTHER, REV, REV2 = "agent:boss", "agent:worker", "agent:other", "agent:rev", "agent:rev2"
EVIDENCE = {"argv": ["pytest", "-q"], "exit_status": 0, "output_sha256": "a" * 64, "output_bytes": 120}


async def _fund(api: Api, owner: str = BOSS, amount: int = 10_000_000) -> None:
    await api.ledger.open_account("system:treasury", USD, allow_negative=True)
    await api.ledger.open_account(owner, USD)
    await api.ledger.transfer(
        id=f"seed-{owner[6:]}", debit="system:treasury", credit=owner, amount=amount, currency=USD
    )


async def _available(api: Api, owner: str) -> int:
    return int((await api.ledger.balance(owner, USD)).available)


async def _types(api: Api) -> Counter[str]:
    return Counter(m.type for m in await api.bus.history("sos:channel:tasks", limit=1000))


@pytest.fixture
async def funded(api: Api) -> Api:
    await _fund(api)
    return api


async def test_the_whole_loop_pays_the_worker_from_escrow(funded: Api) -> None:
    api = funded
    task = await api.tasks.create(
        "Write the docs", id="docs-1", reviewers=[REV], bounty=1_000_000, currency=USD, funded_by=BOSS
    )
    assert (task.id, task.status, task.attempt, task.assignee) == ("docs-1", "queued", 0, None)
    jsonschema.validate(task.to_wire(), SCHEMA)
    assert await _available(api, BOSS) == 9_000_000
    assert await _available(api, ESCROW_ACCOUNT) == 1_000_000
    claim = await api.tasks.claim("docs-1", agent=WORKER)
    assert (claim.attempt, claim.task.status, claim.task.assignee) == (1, "claimed", WORKER)
    assert (await api.tasks.heartbeat("docs-1", claim.token)).status == "in_progress"
    renewed = await api.tasks.heartbeat("docs-1", claim.token)  # renewing an in-progress lease
    assert (renewed.status, renewed.attempt) == ("in_progress", 1)
    submitted = await api.tasks.submit("docs-1", claim.token, evidence=[EVIDENCE], result={"pages": 3})
    assert (submitted.status, submitted.result, submitted.round) == ("review", {"pages": 3}, 1)
    done = await api.tasks.review("docs-1", reviewer=REV, verdict="approve")
    assert (done.status, done.outcome, done.assignee) == ("done", "approved", WORKER)
    jsonschema.validate(done.to_wire(), SCHEMA)
    assert await _available(api, WORKER) == 1_000_000
    assert await _available(api, ESCROW_ACCOUNT) == 0
    assert (await api.ledger.get_transfer("task:docs-1:payout")).amount == 1_000_000
    assert await api.tasks.get("docs-1") == done
    assert [t.id for t in await api.tasks.list(status="done")] == ["docs-1"]
    await api.ledger.check()


async def test_each_transition_publishes_its_messages_once(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="msg-1", reviewers=[REV, REV2], approvals_required=2, bounty=10, funded_by=BOSS)
    await api.tasks.create("t", id="msg-1", reviewers=[REV, REV2], approvals_required=2, bounty=10, funded_by=BOSS)
    claim = await api.tasks.claim("msg-1", agent=WORKER)
    await api.tasks.block("msg-1", claim.token, "waiting on creds", on=["agent:ops"])
    await api.tasks.heartbeat("msg-1", claim.token)
    for _ in range(2):
        await api.tasks.submit("msg-1", claim.token, evidence=[EVIDENCE, {**EVIDENCE, "exit_status": 1}])
        await api.tasks.review("msg-1", reviewer=REV, verdict="approve")
    await api.tasks.review("msg-1", reviewer=REV2, verdict="approve")
    await api.tasks.review("msg-1", reviewer=REV2, verdict="approve")
    assert await _types(api) == Counter(
        {"task_created": 1, "task_claimed": 1, "blocker": 1, "evidence": 2, "gate_verdict": 2, "task_completed": 1}
    )
    completed = [m for m in await api.bus.history("sos:channel:tasks") if m.type == "task_completed"]
    assert completed[0].payload.status == "done"


async def test_replay_and_conflict_by_id(funded: Api) -> None:
    api = funded
    first = await api.tasks.create("same", id="rep-1", reviewers=[REV], bounty=5, funded_by=BOSS)
    assert await api.tasks.create("same", id="rep-1", reviewers=[REV], bounty=5, funded_by=BOSS) == first
    with pytest.raises(IdempotencyConflict):
        await api.tasks.create("other", id="rep-1", reviewers=[REV], bounty=5, funded_by=BOSS)
    assert await _available(api, BOSS) == 10_000_000 - 5
    generated = await api.tasks.create("no id", reviewers=[REV])
    assert len(generated.id) == 36
    jsonschema.validate(generated.to_wire(), SCHEMA)


async def test_illegal_transitions_name_both_states(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="ill-1", reviewers=[REV, REV2], approvals_required=2)
    await api.tasks.create("t", id="ill-2", reviewers=[REV])
    claim = await api.tasks.claim("ill-1", agent=WORKER)
    await api.tasks.submit("ill-1", claim.token)
    with pytest.raises(IllegalTransition) as caught:
        await api.tasks.cancel("ill-1")
    assert (caught.value.details["from"], caught.value.details["to"]) == ("review", "canceled")
    assert "from 'review' to 'canceled' by cancel" in caught.value.message
    with pytest.raises(IllegalTransition) as caught:  # only a reviewer sends it back
        await api.tasks.heartbeat("ill-1", claim.token)
    assert (caught.value.details["from"], caught.value.details["operation"]) == ("review", "heartbeat")
    with pytest.raises(IllegalTransition):
        await api.tasks.block("ill-1", claim.token, "late")
    with pytest.raises(IllegalTransition):
        await api.tasks.review("ill-2", reviewer=REV, verdict="approve")
    await api.tasks.review("ill-1", reviewer=REV, verdict="reject", reasons=["wrong"])
    for call in (
        api.tasks.claim("ill-1", agent=OTHER),
        api.tasks.cancel("ill-1"),
        api.tasks.review("ill-1", reviewer=REV2, verdict="approve"),
    ):
        with pytest.raises(IllegalTransition) as caught:
            await call
        assert caught.value.details["from"] == "failed"
    assert all(not TRANSITIONS[s] for s in ("done", "failed", "canceled"))
    assert (await api.tasks.get("ill-1")).status == "failed"


async def test_blocked_by_keeps_a_task_from_being_claimed(funded: Api) -> None:
    api = funded
    with pytest.raises(TaskNotFound):
        await api.tasks.create("t", id="dep-2", reviewers=[REV], blocked_by=["nope-1"])
    await api.tasks.create("first", id="dep-1", reviewers=[REV])
    second = await api.tasks.create("second", id="dep-2", reviewers=[REV], blocked_by=["dep-1"])
    assert second.status == "backlog"
    with pytest.raises(IllegalTransition) as caught:
        await api.tasks.claim("dep-2", agent=WORKER)
    assert caught.value.details["blocked_by"] == ["dep-1"]
    claim = await api.tasks.claim("dep-1", agent=WORKER)
    await api.tasks.submit("dep-1", claim.token)
    await api.tasks.review("dep-1", reviewer=REV, verdict="approve")
    assert (await api.tasks.claim("dep-2", agent=WORKER)).task.status == "claimed"


async def test_a_claim_is_held_by_one_agent_and_fenced(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="fence-1", reviewers=[REV], lease_s=1)
    claim = await api.tasks.claim("fence-1", agent=WORKER)
    with pytest.raises(TaskAlreadyClaimed):
        await api.tasks.claim("fence-1", agent=OTHER)
    with pytest.raises(TaskAlreadyClaimed):
        await api.tasks.submit("fence-1", "1.not-the-token")
    await anyio.sleep(1.1)  # the lease runs out mid-work (by the store's clock)
    with pytest.raises(TaskAlreadyClaimed) as caught:
        await api.tasks.heartbeat("fence-1", claim.token)
    assert caught.value.details["reason"] == "expired"
    second = await api.tasks.claim("fence-1", agent=OTHER, lease_s=60)
    assert (second.attempt, second.task.assignee) == (2, OTHER)
    with pytest.raises(TaskAlreadyClaimed) as caught:
        await api.tasks.submit("fence-1", claim.token, evidence=[EVIDENCE])
    assert caught.value.details["reason"] == "stale"
    task = await api.tasks.get("fence-1")
    assert (task.status, task.attempt, task.evidence) == ("claimed", 2, [])
    assert (await api.tasks.submit("fence-1", second.token)).status == "review"


async def test_gates_count_each_reviewer_once_and_never_the_worker(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="gate-1", reviewers=[REV, REV2, WORKER], approvals_required=2)
    claim = await api.tasks.claim("gate-1", agent=WORKER)
    await api.tasks.submit("gate-1", claim.token)
    with pytest.raises(Forbidden):
        await api.tasks.review("gate-1", reviewer=WORKER, verdict="approve")
    with pytest.raises(Forbidden):
        await api.tasks.review("gate-1", reviewer=OTHER, verdict="approve")
    assert (await api.tasks.review("gate-1", reviewer=REV, verdict="approve")).status == "review"
    assert (await api.tasks.review("gate-1", reviewer=REV, verdict="approve")).status == "review"
    with pytest.raises(IdempotencyConflict):
        await api.tasks.review("gate-1", reviewer=REV, verdict="reject", reasons=["changed my mind"])
    back = await api.tasks.review("gate-1", reviewer=REV2, verdict="needs_changes", reasons=["add tests"])
    assert (back.status, back.assignee, back.attempt) == ("in_progress", WORKER, 1)
    await api.tasks.submit("gate-1", claim.token, result={"tests": True})
    assert (await api.tasks.review("gate-1", reviewer=REV, verdict="approve")).status == "review"
    assert (await api.tasks.review("gate-1", reviewer=REV2, verdict="approve")).status == "done"


async def test_reject_and_cancel_refund_the_funder(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="ref-1", reviewers=[REV], bounty=300, funded_by=BOSS)
    await api.tasks.create("t", id="ref-2", reviewers=[REV], bounty=200, funded_by=BOSS)
    assert await _available(api, BOSS) == 10_000_000 - 500
    claim = await api.tasks.claim("ref-1", agent=WORKER)
    await api.tasks.submit("ref-1", claim.token)
    failed = await api.tasks.review("ref-1", reviewer=REV, verdict="reject", reasons=["off-topic"])
    assert (failed.status, failed.outcome) == ("failed", "rejected")
    canceled = await api.tasks.cancel("ref-2")
    assert (canceled.status, canceled.outcome) == ("canceled", "canceled")
    assert await api.tasks.cancel("ref-2") == canceled
    assert await _available(api, BOSS) == 10_000_000
    assert await _available(api, ESCROW_ACCOUNT) == 0
    await api.ledger.check()


async def test_insufficient_funds_creates_no_task(funded: Api) -> None:
    api = funded
    with pytest.raises(InsufficientFunds):
        await api.tasks.create("t", id="poor-1", reviewers=[REV], bounty=10**9, funded_by=BOSS)
    with pytest.raises(TaskNotFound):
        await api.tasks.get("poor-1")
    assert await api.tasks.list() == []
    assert await _available(api, BOSS) == 10_000_000


async def test_payout_happens_once_under_retries(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="once-1", reviewers=[REV, REV2], bounty=1000, funded_by=BOSS, reviewer_fee=101)
    claim = await api.tasks.claim("once-1", agent=WORKER)
    await api.tasks.submit("once-1", claim.token)
    await api.tasks.submit("once-1", claim.token)  # a retried submit is a replay
    await api.tasks.review("once-1", reviewer=REV, verdict="approve")
    for _ in range(3):
        await api.tasks.review("once-1", reviewer=REV, verdict="approve")
    assert await _available(api, WORKER) == 1000 - 101
    assert await _available(api, REV) == 101
    assert await api.tasks.sweep() == 1
    assert await _available(api, WORKER) == 899
    await api.ledger.check()


def test_the_fee_split_is_exact_and_the_remainder_goes_to_the_worker() -> None:
    assert split_bounty(1_000_001, 100, ["agent:a", "agent:b", "agent:c"]) == {
        "": 1_000_001 - 99,
        "agent:a": 33,
        "agent:b": 33,
        "agent:c": 33,
    }
    assert split_bounty(10, 0, ["agent:a"]) == {"": 10}
    assert split_bounty(10, 2, ["agent:a", "agent:b", "agent:c"]) == {"": 10}


async def test_an_unclaimed_task_expires_and_is_refunded(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="exp-1", reviewers=[REV], bounty=70, funded_by=BOSS, expires_in_s=1)
    await anyio.sleep(1.1)
    task = await api.tasks.get("exp-1")
    assert (task.status, task.outcome) == ("canceled", "expired")
    with pytest.raises(IllegalTransition):
        await api.tasks.claim("exp-1", agent=WORKER)
    assert await _available(api, BOSS) == 10_000_000
    completed = [m for m in await api.bus.history("sos:channel:tasks") if m.type == "task_completed"]
    assert [m.payload.status for m in completed] == ["timeout"]


async def test_the_board_groups_by_status(funded: Api) -> None:
    api = funded
    await api.tasks.create("a", id="b-1", reviewers=[REV], bounty=10, funded_by=BOSS)
    await api.tasks.create("b", id="b-2", reviewers=[REV], bounty=5, funded_by=BOSS)
    await api.tasks.claim("b-2", agent=WORKER)
    board = await api.tasks.board()
    assert board.total == 2
    assert (board.columns["queued"].count, board.columns["queued"].bounty, board.columns["queued"].tasks) == (
        1,
        {USD: 10},
        ["b-1"],
    )
    assert board.columns["claimed"].tasks == ["b-2"]
    assert board.columns["done"].count == 0


BAD: list[tuple[dict[str, Any], type[SOSError]]] = [
    ({"id": "Upper-Case"}, InvalidArgument),
    ({"id": "ab"}, InvalidArgument),
    ({"id": "abc-1\n"}, InvalidArgument),
    ({"reviewers": ["agent:rev\n"]}, InvalidArgument),
    ({"bounty": 5, "funded_by": "agent:boss\n"}, InvalidArgument),
    ({"reviewers": []}, InvalidArgument),
    ({"reviewers": ["bob"]}, InvalidArgument),
    ({"reviewers": [REV, REV]}, InvalidArgument),
    ({"reviewers": [f"agent:r{i}" for i in range(17)]}, LimitExceeded),
    ({"approvals_required": 2}, InvalidArgument),
    ({"title": ""}, LimitExceeded),
    ({"title": "x" * (TITLE_CHARS_MAX + 1)}, LimitExceeded),
    ({"priority": "urgent"}, InvalidArgument),
    ({"bounty": -1}, InvalidArgument),
    ({"bounty": 5}, InvalidArgument),  # no funder
    ({"bounty": 5, "funded_by": BOSS, "currency": "usd"}, InvalidArgument),
    ({"bounty": 5, "funded_by": BOSS, "reviewer_fee": 6}, InvalidArgument),
    ({"lease_s": 0}, InvalidArgument),
    ({"lease_s": 10**9}, InvalidArgument),
    ({"blocked_by": ["bad-1"] * 2}, InvalidArgument),
    ({"blocked_by": [f"dep-{i}" for i in range(33)]}, LimitExceeded),
    ({"expires_in_s": 0}, InvalidArgument),
]


@pytest.mark.parametrize(("change", "error"), BAD)
async def test_bad_input_is_refused_and_writes_nothing(funded: Api, change: dict[str, Any], error: type) -> None:
    api = funded
    arguments: dict[str, Any] = {"title": "t", "id": "bad-1", "reviewers": [REV], **change}
    with pytest.raises(error):
        await api.tasks.create(arguments.pop("title"), **arguments)
    assert await api.tasks.list() == []
    assert await _types(api) == Counter()


async def test_bad_work_input_is_refused_and_writes_nothing(funded: Api) -> None:
    api = funded
    await api.tasks.create("t", id="work-1", reviewers=[REV])
    claim = await api.tasks.claim("work-1", agent=WORKER)
    before = await api.tasks.get("work-1")
    for call, error in (
        (api.tasks.submit("work-1", claim.token, evidence=[{"exit_status": 0}]), SchemaViolation),
        (api.tasks.submit("work-1", claim.token, evidence=[EVIDENCE] * 33), LimitExceeded),
        (api.tasks.submit("work-1", claim.token, result={"x": "y" * 70_000}), LimitExceeded),
        (api.tasks.block("work-1", claim.token, ""), LimitExceeded),
        (api.tasks.review("work-1", reviewer=REV, verdict="meh"), InvalidArgument),
        (api.tasks.review("work-1", reviewer=REV, verdict="reject"), InvalidArgument),
        (api.tasks.claim("work-1", agent="worker"), InvalidArgument),
        (api.tasks.get("NOPE"), InvalidArgument),
        (api.tasks.list(status="doing"), InvalidArgument),
    ):
        with pytest.raises(error):
            await call
    assert await api.tasks.get("work-1") == before


async def test_sessions_act_only_as_their_agent(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await _fund(view)
    await _fund(view, WORKER, 1000)
    tokens = view.tokens
    boss, worker, other, rev = [await connect((await tokens.issue(agent=a)).secret) for a in (BOSS, WORKER, OTHER, REV)]
    with pytest.raises(Forbidden):
        await worker.tasks.create("t", id="s-0", reviewers=[REV], bounty=5, funded_by=BOSS)
    task = await boss.tasks.create("t", id="s-1", reviewers=[REV, WORKER], bounty=500)
    assert (task.funded_by, task.created_by) == (BOSS, BOSS)
    with pytest.raises(Forbidden):
        await other.tasks.claim("s-1", agent=WORKER)
    claim = await worker.tasks.claim("s-1")
    assert claim.agent == WORKER
    for call in (
        other.tasks.heartbeat("s-1", claim.token),
        other.tasks.submit("s-1", claim.token),
        other.tasks.block("s-1", claim.token, "mine now"),
        other.tasks.cancel("s-1"),
        worker.tasks.cancel("s-1"),
        other.tasks.sweep(),
    ):
        with pytest.raises(Forbidden):
            await call
    await worker.tasks.submit("s-1", claim.token, evidence=[EVIDENCE])
    with pytest.raises(Forbidden):
        await worker.tasks.review("s-1")  # a named reviewer, but the worker
    with pytest.raises(Forbidden):
        await other.tasks.review("s-1")
    with pytest.raises(Forbidden):
        await rev.tasks.review("s-1", reviewer=WORKER)
    assert (await rev.tasks.review("s-1")).status == "done"
    assert (await view.ledger.balance(WORKER, USD)).available == 1500
    assert [t.id for t in await other.tasks.list()] == ["s-1"]


@pytest.mark.parametrize("read", ["list", "get"])
async def test_an_expiry_found_by_a_reader_is_audited_as_the_kernels(
    kernel: sos_kernel.Kernel, connect: Connect, read: str
) -> None:
    """Another agent's read that ends a task past its expiry records the expiry by the kernel (task, from, to,
    refund id), and the refund's ledger record is the kernel's too: nothing is attributed to the reader."""
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await _fund(view)
    boss, other = [await connect((await view.tokens.issue(agent=a)).secret) for a in (BOSS, OTHER)]
    await boss.tasks.create("t", id="exp-2", reviewers=[REV], bounty=70, expires_in_s=1)
    mark = (await view.audit.events("acme", limit=1000))[-1].seq
    await anyio.sleep(1.1)
    found = await other.tasks.list() if read == "list" else [await other.tasks.get("exp-2")]
    assert [(t.id, t.status, t.outcome) for t in found] == [("exp-2", "canceled", "expired")]
    assert await _available(view, BOSS) == 10_000_000
    records = await view.audit.events("acme", limit=1000, after=mark)
    assert {r.actor for r in records} == {"kernel"}
    (expiry,) = [r for r in records if r.action == "tasks.expire"]
    assert (expiry.resource, expiry.outcome) == ("exp-2", "ok")
    assert expiry.details == {
        "id": "exp-2",
        "from": "queued",
        "to": "canceled",
        "outcome": "expired",
        "refund": "task:exp-2:refund",
    }
    assert [r.kind for r in records if r.kind == "ledger.write"] == ["ledger.write"]
    assert await other.tasks.get("exp-2") == found[0]  # read again: nothing more recorded
    assert len(await view.audit.events("acme", limit=1000, after=mark)) == len(records)
    assert (await view.audit.verify()).ok


async def test_an_agent_cannot_take_a_task_transfer_id_first(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await _fund(view)
    await _fund(view, "agent:mallory", 1000)
    mallory = await connect((await view.tokens.issue(agent="agent:mallory")).secret)
    squatted = await mallory.ledger.transfer(
        id="task:prize-1:payout", debit="agent:mallory", credit=BOSS, amount=1, currency=USD
    )
    assert squatted.id == "mallory/task:prize-1:payout"
    await view.tasks.create("t", id="prize-1", reviewers=[REV], bounty=100, funded_by=BOSS)
    claim = await view.tasks.claim("prize-1", agent=WORKER)
    await view.tasks.submit("prize-1", claim.token)
    await view.tasks.review("prize-1", reviewer=REV, verdict="approve")
    assert (await view.ledger.get_transfer("task:prize-1:payout")).credit == WORKER


async def test_refusals_read_the_same_in_process_and_over_http(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    _, admin = await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    await view.tasks.create("t", id="same-1", reviewers=[REV])
    session = await connect(admin)
    calls = [
        lambda s: s.tasks.create("t", id="Bad Id", reviewers=[REV]),
        lambda s: s.tasks.create("t", id="same-1", reviewers=[REV2]),
        lambda s: s.tasks.create("t", reviewers=[REV], bounty=5, funded_by=BOSS),
        lambda s: s.tasks.claim("same-1", agent="nobody"),
        lambda s: s.tasks.submit("same-1", "1.stale"),
        lambda s: s.tasks.review("same-1", reviewer=REV, verdict="approve"),
        lambda s: s.tasks.get("nope-1"),
    ]
    for call in calls:
        with pytest.raises(SOSError) as here:
            await call(view)
        with pytest.raises(SOSError) as there:
            await call(session)
        assert (there.value.code, there.value.message) == (here.value.code, here.value.message)
    assert [t.id for t in await view.tasks.list()] == ["same-1"]


async def _created(api: Api, **kwargs: Any) -> str:
    """``ok``, or the code of the refusal."""
    try:
        await api.tasks.create("t", reviewers=[REV], **{"funded_by": BOSS, **kwargs})
    except SOSError as exc:
        return exc.code
    return "ok"


async def _concurrently(api: Api, creates: list[dict[str, Any]]) -> list[str]:
    out: list[str] = [""] * len(creates)

    async def one(index: int) -> None:
        out[index] = await _created(api, **creates[index])

    async with anyio.create_task_group() as group:
        for index in range(len(creates)):
            group.start_soon(one, index)
    return out


async def test_creates_racing_for_the_last_open_slot_leave_no_bounty_in_escrow(
    funded: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = funded
    monkeypatch.setattr(tasks_service, "TASKS_OPEN_MAX", 3)
    for i in range(2):
        await api.tasks.create("t", id=f"slot-{i}", reviewers=[REV], bounty=100, funded_by=BOSS)
    results = await _concurrently(api, [{"id": f"race-{i}", "bounty": 1000} for i in range(6)])
    assert sorted(results) == ["SOS-4010"] * 5 + ["ok"]
    assert await _available(api, ESCROW_ACCOUNT) == 200 + 1000
    assert await _available(api, BOSS) == 10_000_000 - 1200
    assert len(await api.tasks.list()) == 3
    refused = [f"race-{i}" for i, r in enumerate(results) if r != "ok"]
    await api.tasks.cancel("slot-0")  # a slot frees: a refused create goes through, funded once
    assert await _created(api, id=refused[0], bounty=1000) == "ok"
    assert await _available(api, ESCROW_ACCOUNT) == 100 + 2000
    await api.ledger.check()


async def test_a_funding_refused_under_a_race_leaves_the_id_free(funded: Api) -> None:
    api = funded
    await _fund(api, OTHER, 5_000)  # enough for any one bounty, not for all of them
    creates = [{"id": f"poor-{i}", "bounty": 3_000, "funded_by": OTHER} for i in range(4)]
    results = await _concurrently(api, creates)
    assert sorted(results) == ["SOS-7001"] * 3 + ["ok"]
    refused = [c["id"] for c, r in zip(creates, results, strict=True) if r != "ok"]
    for task_id in refused:
        with pytest.raises(TaskNotFound):
            await api.tasks.get(task_id)
    assert [t.id for t in await api.tasks.list()] == [
        c["id"] for c, r in zip(creates, results, strict=True) if r == "ok"
    ]
    await api.ledger.transfer(id="seed-more", debit="system:treasury", credit=OTHER, amount=10_000, currency=USD)
    for task_id in refused:  # every refused id can be created once the funder has the money
        assert await _created(api, id=task_id, bounty=3_000, funded_by=OTHER) == "ok"
    assert await _available(api, OTHER) == 15_000 - 4 * 3_000
    assert await _available(api, ESCROW_ACCOUNT) == 4 * 3_000
    await api.ledger.check()


async def test_sweep_purges_the_oldest_finished_tasks_and_keeps_their_money_records(
    funded: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = funded
    monkeypatch.setattr(tasks_service, "TASKS_FINISHED_MAX", 2)
    for i in range(4):
        await api.tasks.create("t", id=f"old-{i}", reviewers=[REV], bounty=10, funded_by=BOSS)
        await api.tasks.cancel(f"old-{i}")
    await api.tasks.create("t", id="live-1", reviewers=[REV], bounty=10, funded_by=BOSS)
    await api.tasks.sweep()
    assert [t.id for t in await api.tasks.list()] == ["old-2", "old-3", "live-1"]
    with pytest.raises(TaskNotFound):
        await api.tasks.get("old-0")
    assert (await api.ledger.get_transfer("task:old-0:refund")).amount == 10  # money records stay
    assert await _available(api, BOSS) == 10_000_000 - 10
    with pytest.raises(IdempotencyConflict):  # its settlement ids are taken: a new bounty could not move
        await api.tasks.create("t", id="old-0", reviewers=[REV], bounty=10, funded_by=BOSS)
    assert (await api.tasks.create("t", id="old-1", reviewers=[REV])).status == "queued"
    await api.tasks.sweep()
    assert [t.id for t in await api.tasks.list()] == ["old-2", "old-3", "live-1", "old-1"]
    await api.ledger.check()


def _before_funding(monkeypatch: pytest.MonkeyPatch, task_id: str, step: Any) -> None:
    """Run ``step`` once, just before the ledger moves ``task_id``'s bounty (the window a concurrent call hits)."""
    original = Ledger.transfer
    pending = [step]

    async def transfer(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        if pending and str(kwargs.get("id", "")).startswith(f"task:{task_id}:fund"):
            await pending.pop()()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "transfer", transfer)


async def test_a_create_that_loses_the_last_slot_while_funding_keeps_no_money(
    funded: Api, kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = funded
    monkeypatch.setattr(tasks_service, "TASKS_OPEN_MAX", 1)
    results: dict[str, str] = {}

    async def other() -> None:
        try:
            await kernel.tasks.create("t", id="slot-b", reviewers=[REV], bounty=300, funded_by=BOSS)
            results["slot-b"] = "ok"
        except SOSError as exc:
            results["slot-b"] = exc.code

    _before_funding(monkeypatch, "slot-a", other)
    results["slot-a"] = await _created(api, id="slot-a", bounty=1000)
    assert sorted(results.values()) == ["SOS-4010", "ok"]
    (kept,) = await api.tasks.list()
    assert results[kept.id] == "ok"
    assert await _available(api, ESCROW_ACCOUNT) == kept.bounty
    assert await _available(api, BOSS) == 10_000_000 - kept.bounty
    await api.ledger.check()


async def test_a_funding_drained_after_the_balance_check_leaves_the_id_free(
    funded: Api, kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = funded

    async def drain() -> None:
        await kernel.ledger.transfer(id="drain", debit=BOSS, credit="system:treasury", amount=9_999_500, currency=USD)

    _before_funding(monkeypatch, "drained-1", drain)
    with pytest.raises(InsufficientFunds):
        await api.tasks.create("t", id="drained-1", reviewers=[REV], bounty=1000, funded_by=BOSS)
    with pytest.raises(TaskNotFound):
        await api.tasks.get("drained-1")
    assert await api.tasks.list() == []
    await kernel.ledger.transfer(id="refill", debit="system:treasury", credit=BOSS, amount=9_999_500, currency=USD)
    task = await api.tasks.create("t", id="drained-1", reviewers=[REV], bounty=1000, funded_by=BOSS)
    assert (task.id, task.status) == ("drained-1", "queued")
    assert await _available(api, ESCROW_ACCOUNT) == 1000
    assert await _available(api, BOSS) == 10_000_000 - 1000
    await api.ledger.check()
