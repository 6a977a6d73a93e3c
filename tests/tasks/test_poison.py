"""A task's messages can be neither poisoned nor suppressed: a change whose messages the bus would refuse writes
nothing (no task, no money moved, reads keep working), a stored message the bus refuses is dropped with an audit
record instead of failing every read, no agent can publish a task message's id first, and a re-flush after a
crash publishes each message once."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

import sos_kernel
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import BackendFailure, SOSError
from sos_kernel.tasks import ESCROW_ACCOUNT
from sos_kernel.tasks.service import Tasks
from sos_kernel.tasks.store import TaskRecord

from ..conftest import Connect

pytestmark = pytest.mark.anyio

USD = "USD"
BOSS, WORKER, REV, CAROL = "agent:boss", "agent:worker", "agent:rev", "agent:carol"
EVIDENCE = {"argv": ["pytest", "-q"], "exit_status": 0, "output_sha256": "a" * 64, "output_bytes": 120}
BAD = "x\ud800"  # a lone surrogate: a Python string with no UTF-8 form, so no message can carry it
# task message ids were once uuid5 under this namespace, computable by any agent from the task id
GUESSABLE_NS = uuid.UUID("5b0f6c1e-3c52-4c1d-9a53-7a2b0c1d7e11")


async def _fund(api: Any, owner: str = BOSS, amount: int = 10_000_000) -> None:
    await api.ledger.open_account("system:treasury", USD, allow_negative=True)
    await api.ledger.open_account(owner, USD)
    await api.ledger.transfer(
        id=f"seed-{owner[6:]}", debit="system:treasury", credit=owner, amount=amount, currency=USD
    )


async def _available(api: Any, owner: str) -> int:
    return int((await api.ledger.balance(owner, USD)).available)


async def _channel(api: Any) -> list[Any]:
    return list(await api.bus.history("sos:channel:tasks", limit=1000))


async def _reads_work(kernel: sos_kernel.Kernel, task_id: str) -> None:
    await kernel.tasks.get(task_id)
    await kernel.tasks.list()
    await kernel.tasks.board()
    await kernel.tasks.sweep()


async def test_a_create_whose_message_the_bus_refuses_writes_nothing(kernel: sos_kernel.Kernel) -> None:
    await _fund(kernel)
    await kernel.ledger.open_account(ESCROW_ACCOUNT, USD)
    for title, description in ((BAD, ""), ("t", BAD)):
        with pytest.raises(SOSError) as refused:
            await kernel.tasks.create(
                title, id="poison-1", description=description, reviewers=[REV], bounty=500, funded_by=BOSS
            )
        assert refused.value.code in ("SOS-4001", "SOS-4005")
    assert await kernel.tasks.list() == []
    assert (await _available(kernel, BOSS), await _available(kernel, ESCROW_ACCOUNT)) == (10_000_000, 0)
    assert await _channel(kernel) == []
    assert (await kernel.tasks.board()).total == 0


async def test_a_worker_or_reviewer_cannot_poison_a_funded_task(kernel: sos_kernel.Kernel) -> None:
    await _fund(kernel)
    await kernel.tasks.create("t", id="poison-2", reviewers=[REV], bounty=500, funded_by=BOSS)
    claim = await kernel.tasks.claim("poison-2", agent=WORKER)
    before = await kernel.tasks.get("poison-2")
    for call in (
        kernel.tasks.block("poison-2", claim.token, reason=BAD),
        kernel.tasks.block("poison-2", claim.token, reason="r", on=[BAD]),
        kernel.tasks.submit("poison-2", claim.token, evidence=[{**EVIDENCE, "argv": [BAD]}]),
        kernel.tasks.submit("poison-2", claim.token, result={"x": BAD}),
        kernel.tasks.submit("poison-2", claim.token, result={BAD: 1}),
    ):
        with pytest.raises(SOSError):
            await call
    assert await kernel.tasks.get("poison-2") == before
    await kernel.tasks.submit("poison-2", claim.token, evidence=[EVIDENCE], result={"ok": True})
    with pytest.raises(SOSError):
        await kernel.tasks.review("poison-2", reviewer=REV, verdict="reject", reasons=[BAD])
    assert (await kernel.tasks.get("poison-2")).status == "review"
    await _reads_work(kernel, "poison-2")
    assert (await kernel.tasks.review("poison-2", reviewer=REV, verdict="approve")).status == "done"
    assert await _available(kernel, WORKER) == 500
    assert Counter(m.type for m in await _channel(kernel)) == Counter(
        {"task_created": 1, "task_claimed": 1, "evidence": 1, "gate_verdict": 1, "task_completed": 1}
    )


async def _store_outbox(kernel: sos_kernel.Kernel, task_id: str, message: dict[str, Any]) -> None:
    """Write ``message`` into the task's stored outbox, as a transition stored before messages were checked."""
    store = kernel.tasks.store
    record, _ = await store.load("default", task_id)
    assert record is not None
    raw = json.loads(record.data)
    raw["outbox"].append(message)
    data = json.dumps(raw, separators=(",", ":")).encode()
    assert await store.swap("default", record, replace(record, rev=record.rev + 1, data=data))


async def _outbox(kernel: sos_kernel.Kernel, task_id: str) -> list[Any]:
    record, _ = await kernel.tasks.store.load("default", task_id)
    assert isinstance(record, TaskRecord)
    return list(json.loads(record.data)["outbox"])


async def test_a_stored_message_the_bus_refuses_is_dropped_and_audited(kernel: sos_kernel.Kernel) -> None:
    await _fund(kernel)
    await kernel.tasks.create("t", id="old-1", reviewers=[REV], bounty=500, funded_by=BOSS)
    poisoned = {
        "type": "blocker",
        "source": "agent:kernel",
        "target": "sos:channel:tasks",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "version": "1.0",
        "message_id": str(uuid.uuid4()),
        "payload": {"blocker_id": "b", "task_id": "old-1", "reason": BAD, "severity": "medium"},
    }
    await _store_outbox(kernel, "old-1", poisoned)
    await _reads_work(kernel, "old-1")
    assert await _outbox(kernel, "old-1") == []
    dropped = await kernel.audit.events("default", action="tasks.message_dropped")
    assert [(r.resource, r.details["message_id"], r.details["type"]) for r in dropped] == [
        ("old-1", poisoned["message_id"], "blocker")
    ]
    assert (await kernel.tasks.cancel("old-1")).status == "canceled"
    assert await _available(kernel, BOSS) == 10_000_000
    assert Counter(m.type for m in await _channel(kernel)) == Counter({"task_created": 1, "task_completed": 1})


async def test_a_squatter_cannot_suppress_a_task_s_messages(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    boss, worker, rev, carol = [
        await connect((await view.tokens.issue(agent=a)).secret) for a in (BOSS, WORKER, REV, CAROL)
    ]
    guessed = [
        ("squat-1", "created"),
        ("squat-1", "claimed", 1),
        ("squat-1", "evidence", 1, 1, 0),
        ("squat-1", "verdict", 1, 1, REV),
        ("squat-1", "completed"),
    ]
    for parts in guessed:
        message_id = str(uuid.uuid5(GUESSABLE_NS, "/".join(["acme", *map(str, parts)])))
        squat = SendMessage(message_id=message_id, source=CAROL, target=CAROL, payload=SendPayload(text="squat"))
        await carol.bus.publish(squat)
    await boss.tasks.create("t", id="squat-1", reviewers=[REV])
    claim = await worker.tasks.claim("squat-1")
    await worker.tasks.submit("squat-1", claim.token, evidence=[EVIDENCE])
    assert (await rev.tasks.review("squat-1")).status == "done"
    assert Counter(m.type for m in await _channel(view)) == Counter(
        {"task_created": 1, "task_claimed": 1, "evidence": 1, "gate_verdict": 1, "task_completed": 1}
    )


async def test_a_flush_interrupted_after_publishing_republishes_nothing(
    kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = Tasks._publish

    async def published_then_crashed(self: Tasks, messages: list[Any]) -> None:
        await publish(self, messages)  # the bus has them; the outbox is not cleared yet
        raise BackendFailure("stopped between the bus and the outbox")

    await kernel.tasks.create("t", id="again-1", reviewers=[REV])
    monkeypatch.setattr(Tasks, "_publish", published_then_crashed)
    with pytest.raises(BackendFailure):
        await kernel.tasks.claim("again-1", agent=WORKER)
    with pytest.raises(BackendFailure):
        await kernel.tasks.get("again-1")  # the retry publishes the same stored ids again
    owed = [m["message_id"] for m in await _outbox(kernel, "again-1")]
    monkeypatch.setattr(Tasks, "_publish", publish)
    await _reads_work(kernel, "again-1")
    assert await _outbox(kernel, "again-1") == []
    channel = await _channel(kernel)
    assert Counter(m.type for m in channel) == Counter({"task_created": 1, "task_claimed": 1})
    assert [m.message_id for m in channel if m.type == "task_claimed"] == owed


async def test_a_stored_result_without_utf_8_form_does_not_keep_a_task_from_ending(kernel: sos_kernel.Kernel) -> None:
    await _fund(kernel)
    await kernel.tasks.create("t", id="old-2", reviewers=[REV], bounty=500, funded_by=BOSS)
    claim = await kernel.tasks.claim("old-2", agent=WORKER)
    await kernel.tasks.submit("old-2", claim.token, evidence=[EVIDENCE])
    store = kernel.tasks.store
    record, _ = await store.load("default", "old-2")
    assert record is not None
    raw = json.loads(record.data)
    raw["task"]["result"] = {"x": BAD}  # as a submit stored it before results were checked
    data = json.dumps(raw, separators=(",", ":")).encode()
    assert await store.swap("default", record, replace(record, rev=record.rev + 1, data=data))
    assert (await kernel.tasks.review("old-2", reviewer=REV, verdict="reject", reasons=["no"])).status == "failed"
    assert await _available(kernel, BOSS) == 10_000_000
    completed = [m for m in await _channel(kernel) if m.type == "task_completed"]
    assert [m.payload.status for m in completed] == ["failed"]
