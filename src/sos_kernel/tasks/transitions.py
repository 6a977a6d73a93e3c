"""The one table of legal task transitions, and the refusal of every other one (SOS-6013).

::

    backlog ─┐ claim (blocked_by all done)
    queued ──┴──────────► claimed ──heartbeat──► in_progress ◄──needs_changes──┐
        │ expire, cancel    │  ▲ reclaim (lease       │  ▲                       │
        ▼                   │  └─ expired) ◄──────────┤  │ heartbeat             │
     canceled ◄─ cancel ────┴── block ──► blocked ────┘  │                       │
        ▲                   └── submit ──► review ◄──────┴─ submit ──────────────┤
        └──── cancel (not from review)      ├── approve (threshold) ──► done     │
                                            ├── reject ──► failed                │
                                            └────────────────────────────────────┘

``done``, ``failed`` and ``canceled`` are terminal: nothing leaves them.
"""

from __future__ import annotations

from typing import Final, Literal

from ..errors import IllegalTransition

__all__ = ["OPEN", "STATUSES", "TERMINAL", "TRANSITIONS", "Status", "check_transition"]

Status = Literal["backlog", "queued", "claimed", "in_progress", "review", "done", "blocked", "canceled", "failed"]
STATUSES: Final = ("backlog", "queued", "claimed", "in_progress", "review", "done", "blocked", "canceled", "failed")
TERMINAL: Final = frozenset({"done", "canceled", "failed"})
OPEN: Final = frozenset(STATUSES) - TERMINAL

TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    "backlog": {"claimed": "claim", "canceled": "cancel or expire"},
    "queued": {"claimed": "claim", "canceled": "cancel or expire"},
    "claimed": {
        "claimed": "claim after the lease expired",
        "in_progress": "heartbeat",
        "review": "submit",
        "blocked": "block",
        "canceled": "cancel",
    },
    "in_progress": {
        "claimed": "claim after the lease expired",
        "review": "submit",
        "blocked": "block",
        "canceled": "cancel",
    },
    "blocked": {
        "claimed": "claim after the lease expired",
        "in_progress": "heartbeat",
        "review": "submit",
        "canceled": "cancel",
    },
    "review": {"done": "approvals reach the threshold", "failed": "reject", "in_progress": "needs_changes"},
    "done": {},
    "failed": {},
    "canceled": {},
}
"""``TRANSITIONS[from][to]``: what moves a task from ``from`` to ``to``; any pair not here is illegal."""


def check_transition(task_id: str, current: str, wanted: str, why: str = "") -> None:
    """Refuse (SOS-6013, naming both states) unless ``current -> wanted`` is in :data:`TRANSITIONS`."""
    if wanted in TRANSITIONS.get(current, {}):
        return
    legal = sorted(TRANSITIONS.get(current, {}))
    tail = f" ({why})" if why else ""
    raise IllegalTransition(
        f"task {task_id} cannot go from {current!r} to {wanted!r}{tail}; from {current!r} it can go to "
        + (", ".join(repr(s) for s in legal) if legal else "nothing (it is finished)"),
        details={"task_id": task_id, "from": current, "to": wanted, "legal": legal},
    )
