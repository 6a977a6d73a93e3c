"""Task mode: an A2A task backed by a kernel task (``kernel.tasks``), read and acted on as the caller.

A message whose ``metadata.sos_task`` is an object runs in task mode. ``{"id": "<kernel task id>"}`` attaches to
an existing task the caller may read; any other object creates one, with the A2A task's id, through the caller's
own ``session.tasks.create`` (``created_by`` and, for a bounty, ``funded_by`` are the caller's agent: the guard,
the declared spend, governance and the audit apply as to any create). Either way the message's text goes to the
served agent's inbox as a ``send`` from the caller with the header ``sos-task-id``, and the A2A task follows the
kernel task: its state through :data:`SQUAD_TASK_STATES`, its result and evidence as artifacts once ``done``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio
from a2a.helpers.proto_helpers import new_data_part, new_text_part
from a2a.server.tasks import TaskUpdater
from a2a.types import Artifact, Message, Part, Role, Task, TaskState

from ...contracts.messages import TITLE_CHARS_MAX
from ...errors import InvalidArgument, SOSError
from ...tasks import Task as KernelTask
from ._limits import A2A_TASK_POLL_S
from ._served import FINISHED, Served

__all__ = ["SQUAD_TASK_STATES", "TASK_HEADER", "TASK_KEY", "follow", "open_task", "refreshed", "task_id_of"]
__all__ += ["TASK_CREATE_FIELDS", "task_spec"]

TASK_KEY: Final = "sos_task"
"""The request metadata key that asks for task mode."""
TASK_ID_KEY: Final = "sos_task_id"
"""The A2A task metadata key naming its kernel task."""
TASK_HEADER: Final = "sos-task-id"
"""The header of the ``send`` that tells the served agent which kernel task a message is about."""
TASK_CREATE_FIELDS: Final = frozenset(
    {"title", "priority", "reviewers", "approvals_required", "bounty", "currency", "reviewer_fee", "lease_s"}
    | {"expires_in_s", "blocked_by"}
)
"""What a caller may set on a kernel task it creates over A2A (the rest: the A2A task's id, the message as the
description, and the caller as creator and funder)."""
_STATUS_KEY: Final = "sos_task_status"
_INTEGERS: Final = frozenset({"approvals_required", "bounty", "reviewer_fee", "lease_s", "expires_in_s"})

SQUAD_TASK_STATES: Final[Mapping[str, TaskState]] = {
    "backlog": TaskState.TASK_STATE_SUBMITTED,
    "queued": TaskState.TASK_STATE_SUBMITTED,
    "claimed": TaskState.TASK_STATE_WORKING,
    "in_progress": TaskState.TASK_STATE_WORKING,
    "review": TaskState.TASK_STATE_WORKING,
    "blocked": TaskState.TASK_STATE_INPUT_REQUIRED,
    "done": TaskState.TASK_STATE_COMPLETED,
    "canceled": TaskState.TASK_STATE_CANCELED,
    "failed": TaskState.TASK_STATE_FAILED,
}
"""The A2A state of a kernel task (SOS ``SquadTask.status``)."""


def task_id_of(task: Task | None) -> str | None:
    """The kernel task behind an A2A task, or None for a plain ask."""
    if task is None or TASK_ID_KEY not in task.metadata:
        return None
    return str(task.metadata[TASK_ID_KEY])


def _integral(name: str, value: Any) -> Any:
    # JSON numbers reach here as protobuf doubles: a whole one is the integer it was sent as
    if name in _INTEGERS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def task_spec(metadata: Mapping[str, Any], current: Task | None) -> dict[str, Any] | None:
    """The task mode a request asks for: ``{"id": ...}`` to attach, create arguments, or None for a plain ask.
    A follow-up message to a task-mode A2A task attaches to its kernel task. SOS-4005 for a bad ``sos_task``."""
    known = task_id_of(current)
    if known is not None:
        return {"id": known}
    spec = metadata.get(TASK_KEY)
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidArgument(f"metadata {TASK_KEY} must be an object, got {spec!r:.80}", details={"field": TASK_KEY})
    if "id" in spec:
        if set(spec) != {"id"} or not isinstance(spec["id"], str):
            raise InvalidArgument(
                f"metadata {TASK_KEY} with an id attaches to that task: give the id (a string) alone",
                details={"field": TASK_KEY},
            )
        return {"id": spec["id"]}
    unknown = sorted(set(spec) - TASK_CREATE_FIELDS)
    if unknown:
        raise InvalidArgument(
            f"metadata {TASK_KEY} has unknown fields {unknown} (known: id, {', '.join(sorted(TASK_CREATE_FIELDS))})",
            details={"field": TASK_KEY, "unknown": unknown},
        )
    return {name: _integral(name, value) for name, value in spec.items()}


async def open_task(who: Served, spec: dict[str, Any], a2a_task_id: str, text: str) -> str:
    """Create (as the caller) or find the kernel task, and tell the served agent about it; its id."""
    if "id" in spec:
        task_id = (await who.session.tasks.get(spec["id"])).id
    else:
        args = dict(spec)
        title = args.pop("title", None) or (text.strip().splitlines() or ["A2A task"])[0][:TITLE_CHARS_MAX]
        args.setdefault("reviewers", [who.source])
        created = await who.session.tasks.create(title, id=a2a_task_id, description=text, **args)
        task_id = created.id
    await who.session.bus.send(str(who.source), who.target, text, headers={TASK_HEADER: task_id})
    return task_id


@dataclass(frozen=True, slots=True)
class _View:
    """What an A2A client sees of a kernel task: its state, a status text, and its artifacts once done."""

    state: TaskState
    status: str
    text: str
    artifacts: tuple[tuple[str, Part], ...]


def _view(task: KernelTask) -> _View:
    text: str = task.status
    if task.status == "blocked" and task.blocker:
        text = f"blocked: {task.blocker.get('reason', '')}"
    elif task.status == "failed" and task.reviews:
        text = "failed: " + "; ".join(task.reviews[-1].reasons)
    elif task.status == "canceled" and task.outcome:
        text = f"canceled ({task.outcome})"
    artifacts: tuple[tuple[str, Part], ...] = ()
    if task.status == "done":
        artifacts = (("result", new_data_part(task.result)),)
        if task.evidence:
            artifacts += (("evidence", new_data_part(task.evidence)),)
    return _View(SQUAD_TASK_STATES[task.status], task.status, text, artifacts)


def _metadata(task: KernelTask) -> dict[str, Any]:
    return {TASK_ID_KEY: task.id, _STATUS_KEY: task.status}


async def _emit(updater: TaskUpdater, task: KernelTask, view: _View) -> None:
    for name, part in view.artifacts:
        await updater.add_artifact([part], artifact_id=name, name=name, metadata={TASK_ID_KEY: task.id})
    message = updater.new_agent_message([new_text_part(view.text)])
    await updater.update_status(view.state, message, metadata=_metadata(task))


async def follow(who: Served, task_id: str, updater: TaskUpdater, timeout_s: float) -> None:
    """Report the kernel task's changes on ``updater`` (read as the caller, every ``A2A_TASK_POLL_S``) until it
    finishes or ``timeout_s`` passes; ``tasks/get`` brings the A2A task up to date after that."""
    seen: tuple[str, str] | None = None
    with anyio.move_on_after(timeout_s):
        while True:
            try:
                task = await who.session.tasks.get(task_id)
            except SOSError:  # the caller may no longer read it: stop following, keep the last state
                return
            view = _view(task)
            if (view.status, view.text) != seen:
                seen = (view.status, view.text)
                await _emit(updater, task, view)
            if view.state in FINISHED:
                return
            await anyio.sleep(A2A_TASK_POLL_S)


def refreshed(a2a_task: Task, task: KernelTask) -> Task | None:
    """``a2a_task`` brought up to the kernel task's state, or None when it already shows it."""
    view = _view(task)
    if _STATUS_KEY in a2a_task.metadata and a2a_task.metadata[_STATUS_KEY] == task.status:  # Struct has no get
        return None
    fresh = Task()
    fresh.CopyFrom(a2a_task)
    fresh.status.state = view.state
    fresh.status.message.CopyFrom(
        Message(
            role=Role.ROLE_AGENT,
            message_id=str(uuid.uuid4()),
            task_id=a2a_task.id,
            context_id=a2a_task.context_id,
            parts=[new_text_part(view.text)],
        )
    )
    fresh.status.timestamp.GetCurrentTime()
    fresh.metadata.update(_metadata(task))
    names = {a.name for a in fresh.artifacts}
    for name, part in view.artifacts:
        if name not in names:
            fresh.artifacts.append(Artifact(artifact_id=name, name=name, parts=[part]))
    return fresh
