"""Task, Claim, Review and Board: what the tasks service returns (pydantic models, so they travel as JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SQUAD_TASK_ID_PATTERN", "Board", "BoardColumn", "Claim", "Review", "Task", "Verdict"]

SQUAD_TASK_ID_PATTERN = r"^(?:[a-z0-9][a-z0-9_-]{2,63}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
"""SquadTask v1's id: a lower-case slug of 3-64 characters or a lower-case UUID."""

Verdict = Literal["approve", "reject", "needs_changes"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Review(_Frozen):
    """One reviewer's verdict on one submission (``round``) of one attempt."""

    reviewer: str
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    attempt: int
    round: int
    decided_at: datetime


class Task(_Frozen):
    """A task as the kernel keeps it. ``to_wire()`` is its SquadTask v1 form.

    ``attempt`` counts claims (0: never claimed); ``round`` counts submissions; ``assignee`` is the worker of the
    current attempt; ``outcome`` says how a finished task ended (``approved``, ``rejected``, ``canceled``,
    ``expired``); ``settled`` is set once its bounty was paid out or refunded.
    """

    id: str
    squad_id: str
    title: str
    description: str = ""
    priority: Literal["critical", "high", "medium", "low"] = "medium"
    status: Literal["backlog", "queued", "claimed", "in_progress", "review", "done", "blocked", "canceled", "failed"]
    attempt: int = 0
    round: int = 0
    assignee: str | None = None
    reviewers: list[str]
    approvals_required: int = 1
    bounty: int = 0
    currency: str = "USD"
    funded_by: str | None = None
    reviewer_fee: int = 0
    blocked_by: list[str] = Field(default_factory=list)
    lease_s: int
    expires_in_s: int | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    claimed_at: datetime | None = None
    completed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)
    reviews: list[Review] = Field(default_factory=list)
    blocker: dict[str, Any] | None = None
    outcome: Literal["approved", "rejected", "canceled", "expired"] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The SquadTask v1 object (``schemas/squad_task_v1.json``); the kernel's extra state rides in
        ``inputs`` (reviewers, approvals, lease) and ``bounty`` (currency, funder)."""
        wire: dict[str, Any] = {
            "schema_version": "1",
            "id": self.id,
            "squad_id": self.squad_id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "priority": self.priority,
            "assignee": self.assignee,
            "blocked_by": list(self.blocked_by),
            "inputs": {
                "reviewers": list(self.reviewers),
                "approvals_required": self.approvals_required,
                "lease_s": self.lease_s,
                "expires_in_s": self.expires_in_s,
                "created_by": self.created_by,
            },
            "result": dict(self.result),
            "bounty": {"currency": self.currency, "funded_by": self.funded_by, "reviewer_fee": self.reviewer_fee},
            "bounty_micros": self.bounty,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "completed_at": _iso(self.completed_at),
            "claimed_at": _iso(self.claimed_at),
            "attempt": self.attempt,
        }
        return wire


class Claim(_Frozen):
    """A lease on a task for one attempt. ``token`` is the fence: every write of the worker carries it, and a
    token of an earlier attempt (or of a lease that expired) is refused."""

    task_id: str
    agent: str
    attempt: int
    token: str
    expires_at: datetime
    task: Task


class BoardColumn(_Frozen):
    """One status on the board: how many tasks, their bounties by currency, and their ids (oldest first)."""

    count: int = 0
    bounty: dict[str, int] = Field(default_factory=dict)
    tasks: list[str] = Field(default_factory=list)


class Board(_Frozen):
    """The tenant's tasks grouped by status (every status present, empty ones too)."""

    columns: dict[str, BoardColumn]
    total: int
