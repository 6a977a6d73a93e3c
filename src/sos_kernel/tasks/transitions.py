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

TRANSITIONS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "backlog": {"claimed": ("claim",), "canceled": ("cancel", "expire")},
    "queued": {"claimed": ("claim",), "canceled": ("cancel", "expire")},
    "claimed": {
        "claimed": ("claim",),  # after the lease expired: attempt + 1
        "in_progress": ("heartbeat",),
        "review": ("submit",),
        "blocked": ("block",),
        "canceled": ("cancel",),
    },
    "in_progress": {"claimed": ("claim",), "review": ("submit",), "blocked": ("block",), "canceled": ("cancel",)},
    "blocked": {"claimed": ("claim",), "in_progress": ("heartbeat",), "review": ("submit",), "canceled": ("cancel",)},
    "review": {"done": ("review",), "failed": ("review",), "in_progress": ("review",)},
    "done": {},
    "failed": {},
    "canceled": {},
}
"""``TRANSITIONS[from][to]``: the operations that may move a task from ``from`` to ``to``; anything else is
illegal. ``review`` moves to ``done`` (the approvals threshold), ``failed`` (reject) or ``in_progress``
(needs_changes)."""


def check_transition(task_id: str, current: str, wanted: str, op: str) -> None:
    """Refuse (SOS-6013, naming both states and the operation) unless ``op`` may move ``current`` to ``wanted``."""
    if op in TRANSITIONS.get(current, {}).get(wanted, ()):
        return
    legal = sorted(to for to, ops in TRANSITIONS.get(current, {}).items() if op in ops)
    tail = f"; from {current!r}, {op} leads to " + (", ".join(repr(s) for s in legal) if legal else "nothing")
    raise IllegalTransition(
        f"task {task_id} cannot go from {current!r} to {wanted!r} by {op}{tail}",
        details={"task_id": task_id, "from": current, "to": wanted, "operation": op, "legal": legal},
    )
