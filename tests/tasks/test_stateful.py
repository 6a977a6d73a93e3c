"""Stateful model test: the tasks service against a small model written from the rules in docs/tasks.md.

Rules create, claim, heartbeat, submit, review and cancel tasks with tokens old and new, and ``expire`` moves the
store's clock past every lease. After every step each task's status, attempt and assignee agree with the model,
every balance agrees with the model's money (funder, escrow, workers, reviewers), the sum of all balances stays
zero, no task was paid twice or without its approvals, and ``ledger.check()`` passes. Runs on every backend. Where
the test may move the store's clock (memory, SQLite) ``expire`` runs too; Redis reads the server's ``TIME``, so there
leases are long enough never to lapse within an example and every other rule runs against the real engine (lease
expiry on Redis is held by the conformance and race tests).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import sos_kernel
from sos_kernel.errors import (
    Forbidden,
    IdempotencyConflict,
    IllegalTransition,
    InsufficientFunds,
    SOSError,
    TaskAlreadyClaimed,
)
from sos_kernel.kernel import TenantView
from sos_kernel.tasks import ESCROW_ACCOUNT

SETTINGS = settings(max_examples=40, stateful_step_count=40, deadline=None)
FUNDER, MINT, USD = "agent:funder", "system:mint", "USD"
FUNDS = 1000
REVIEWERS = ("agent:r1", "agent:r2")
AGENTS = ("agent:w1", "agent:w2", "agent:r1")
LEASE_S = 10
FIXED_CLOCK_LEASE_S = 86_400
"""Leases where the store reads the engine's own clock: far longer than any example runs."""
LEASED = ("claimed", "in_progress", "blocked")


@dataclass
class Model:
    """One task as the rules say it must be."""

    bounty: int
    approvals: int
    status: str = "queued"
    attempt: int = 0
    round: int = 0
    assignee: str | None = None
    lease_until: float = 0.0
    tokens: list[str] = field(default_factory=list)
    reviews: dict[tuple[int, int, str], str] = field(default_factory=dict)
    paid_to: str | None = None
    refunded: bool = False


class TaskMachine(RuleBasedStateMachine):
    tasks = Bundle("tasks")

    def __init__(
        self, portal: BlockingPortal, view: TenantView, clock: list[float], *, clock_moves: bool = True
    ) -> None:
        super().__init__()
        self.portal = portal
        self.view = view
        self.clock = clock
        self.clock_moves = clock_moves
        self.lease_s = LEASE_S if clock_moves else FIXED_CLOCK_LEASE_S
        self.model: dict[str, Model] = {}
        self.counter = itertools.count()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.portal.call(lambda: getattr(self.view.tasks, method)(*args, **kwargs))
        except SOSError as exc:
            return exc

    @property
    def now(self) -> float:
        return self.clock[0]

    @initialize()
    def fund(self) -> None:
        ledger = self.view.ledger
        self.portal.call(lambda: ledger.open_account(MINT, USD, allow_negative=True))
        self.portal.call(lambda: ledger.open_account(FUNDER, USD))
        self.portal.call(lambda: ledger.transfer(id="seed", debit=MINT, credit=FUNDER, amount=FUNDS, currency=USD))

    def funder_available(self) -> int:
        held = sum(m.bounty for m in self.model.values() if not m.refunded)
        return FUNDS - held

    @rule(target=tasks, bounty=st.sampled_from([0, 40, 300, 5000]), approvals=st.sampled_from([1, 2]))
    def create(self, bounty: int, approvals: int) -> str:
        task_id = f"t-{next(self.counter):03d}"
        result = self.call(
            "create", "work", id=task_id, reviewers=list(REVIEWERS), approvals_required=approvals,
            bounty=bounty, funded_by=FUNDER if bounty else None, lease_s=self.lease_s,
        )  # fmt: skip
        if bounty > self.funder_available():
            assert isinstance(result, InsufficientFunds), result
            return task_id  # a missing task: every later call on it must say so
        assert not isinstance(result, SOSError), result
        self.model[task_id] = Model(bounty, approvals)
        return task_id

    def _fence(self, m: Model, token: str, wanted: str) -> type[SOSError] | None:
        if not m.tokens or token != m.tokens[-1]:
            return TaskAlreadyClaimed
        if m.status in LEASED and self.now >= m.lease_until:
            return TaskAlreadyClaimed
        legal = {"in_progress": ("claimed", "blocked"), "review": LEASED}[wanted]
        return None if m.status in legal else IllegalTransition

    def _expect(self, result: Any, error: type[SOSError] | None) -> None:
        if error is None:
            assert not isinstance(result, SOSError), result
        else:
            assert isinstance(result, error), (error, result)

    @rule(task_id=tasks, agent=st.sampled_from(AGENTS))
    def claim(self, task_id: str, agent: str) -> None:
        result = self.call("claim", task_id, agent=agent)
        m = self.model.get(task_id)
        if m is None:
            assert result.code == "SOS-6011"
            return
        if m.status in LEASED and self.now < m.lease_until:
            self._expect(result, TaskAlreadyClaimed)
        elif m.status in ("queued", *LEASED):
            self._expect(result, None)
            m.status, m.attempt, m.assignee, m.lease_until = "claimed", m.attempt + 1, agent, self.now + self.lease_s
            m.tokens.append(result.token)
        else:
            self._expect(result, IllegalTransition)

    def _token(self, m: Model | None, which: int) -> str:
        if m is None or not m.tokens:
            return "1.none"
        return m.tokens[-1 - min(which, len(m.tokens) - 1)]

    @rule(task_id=tasks, which=st.sampled_from([0, 0, 0, 1]))
    def heartbeat(self, task_id: str, which: int) -> None:
        m = self.model.get(task_id)
        token = self._token(m, which)
        result = self.call("heartbeat", task_id, token)
        if m is None:
            assert result.code == "SOS-6011"
            return
        if m.status == "in_progress" and token == m.tokens[-1] and self.now < m.lease_until:
            self._expect(result, None)  # a renewal: no transition, same checks
        else:
            error = self._fence(m, token, "in_progress")
            self._expect(result, error)
            if error is not None:
                return
        m.status, m.lease_until = "in_progress", self.now + self.lease_s

    @rule(task_id=tasks, which=st.sampled_from([0, 0, 0, 1]))
    def submit(self, task_id: str, which: int) -> None:
        m = self.model.get(task_id)
        token = self._token(m, which)
        result = self.call("submit", task_id, token)
        if m is None:
            assert result.code == "SOS-6011"
            return
        if m.status == "review" and m.tokens and token == m.tokens[-1]:
            self._expect(result, None)  # a retried submit
            return
        error = self._fence(m, token, "review")
        self._expect(result, error)
        if error is None:
            m.status, m.round = "review", m.round + 1

    @rule(
        task_id=tasks,
        reviewer=st.sampled_from([*REVIEWERS, "agent:x"]),
        verdict=st.sampled_from(["approve", "approve", "reject", "needs_changes"]),
    )
    def review(self, task_id: str, reviewer: str, verdict: str) -> None:
        reasons = [] if verdict == "approve" else ["because"]
        result = self.call("review", task_id, reviewer=reviewer, verdict=verdict, reasons=reasons)
        m = self.model.get(task_id)
        if m is None:
            assert result.code == "SOS-6011"
            return
        key = (m.attempt, m.round, reviewer)
        if reviewer not in REVIEWERS or reviewer == m.assignee:
            self._expect(result, Forbidden)
        elif key in m.reviews:
            self._expect(result, None if m.reviews[key] == verdict else IdempotencyConflict)
        elif m.status != "review":
            self._expect(result, IllegalTransition)
        else:
            self._expect(result, None)
            m.reviews[key] = verdict
            self._decide(m, verdict)

    def _decide(self, m: Model, verdict: str) -> None:
        if verdict == "reject":
            m.status, m.refunded = "failed", True
        elif verdict == "needs_changes":
            m.status, m.lease_until = "in_progress", self.now + self.lease_s
        elif (
            sum(1 for (a, r, _), v in m.reviews.items() if (a, r, v) == (m.attempt, m.round, "approve")) >= m.approvals
        ):
            assert m.paid_to is None, "paid twice"
            m.status, m.paid_to = "done", m.assignee

    @rule(task_id=tasks)
    def cancel(self, task_id: str) -> None:
        result = self.call("cancel", task_id)
        m = self.model.get(task_id)
        if m is None:
            assert result.code == "SOS-6011"
        elif m.status == "canceled":
            self._expect(result, None)
        elif m.status in ("queued", *LEASED):
            self._expect(result, None)
            m.status, m.refunded = "canceled", True
        else:
            self._expect(result, IllegalTransition)

    @precondition(lambda self: self.clock_moves)
    @rule()
    def expire(self) -> None:
        self.clock[0] += self.lease_s + 1

    @invariant()
    def tasks_match_the_model(self) -> None:
        for task_id, m in self.model.items():
            task = self.portal.call(self.view.tasks.get, task_id)
            assert (task.status, task.attempt, task.assignee, task.round) == (m.status, m.attempt, m.assignee, m.round)

    @invariant()
    def money_matches_the_model(self) -> None:
        balances = self.portal.call(self.view.ledger.balances)
        posted = {b.owner: b.posted for b in balances}
        assert sum(posted.values()) == 0
        assert posted.get(FUNDER, 0) == self.funder_available()
        in_escrow = sum(m.bounty for m in self.model.values() if not m.refunded and m.paid_to is None)
        assert posted.get(ESCROW_ACCOUNT, 0) == in_escrow
        earned: dict[str, int] = {}
        for m in self.model.values():
            if m.paid_to is not None:
                earned[m.paid_to] = earned.get(m.paid_to, 0) + m.bounty
        for agent in AGENTS:
            assert posted.get(agent, 0) == earned.get(agent, 0), agent

    @invariant()
    def check_passes(self) -> None:
        self.portal.call(self.view.ledger.check)


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal(backend="asyncio") as p:
        yield p


def test_tasks_match_the_model(kernel_url: str, portal: BlockingPortal) -> None:
    with portal.wrap_async_context_manager(sos_kernel.open(kernel_url)) as kernel:
        store = kernel.backend.tasks
        moves = hasattr(store, "clock")
        clock = [1_800_000_000.0 if moves else time.time()]
        if moves:
            store.clock = lambda: clock[0]
        tenants = itertools.count()

        class Machine(TaskMachine):
            def __init__(self) -> None:  # a fresh tenant per example
                super().__init__(portal, kernel.tenant(f"model-{next(tenants)}"), clock, clock_moves=moves)

        run_state_machine_as_test(Machine, settings=SETTINGS)
