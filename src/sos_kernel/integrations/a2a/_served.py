"""Who an admitted A2A request is: its session, tenant, served agent and caller, carried in the SDK's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from a2a.auth.user import User
from a2a.server.context import ServerCallContext
from a2a.types import TaskState

from ...errors import Forbidden
from ...session import Session

SCOPE_KEY: Final = "sos.a2a"
FINISHED: Final = frozenset(
    {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED}
    | {TaskState.TASK_STATE_REJECTED}
)


@dataclass(frozen=True, slots=True)
class Served:
    """One admitted request: who calls (its session and agent), which agent it reaches, and its task owner
    (``<served agent name>\\n<caller>``: names hold no newline, so two owners never collide)."""

    session: Session
    tenant: str
    target: str
    source: str | None
    owner: str

    @property
    def caller(self) -> str:
        """Who calls (its agent, or ``token:<id>``): the A2A task store bounds each caller."""
        return self.owner.partition("\n")[2]


class Owner(User):
    """The A2A user of a request: the task store keeps each owner's tasks apart."""

    def __init__(self, owner: str) -> None:
        self._owner = owner

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._owner


def served(context: ServerCallContext | None) -> Served:
    """The admitted request behind ``context``; SOS-5004 when there is none (the endpoint was bypassed)."""
    found = None if context is None else context.state.get(SCOPE_KEY)
    if not isinstance(found, Served):  # only reachable if the endpoint is bypassed: refuse to act as anyone
        raise Forbidden("this A2A request carries no session")
    return found
