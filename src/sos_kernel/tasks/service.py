"""Squad tasks: fenced claims, evidence, review gates and escrowed bounties.

Guarantees:

- **One table.** Every status change is a pair of :data:`~sos_kernel.tasks.transitions.TRANSITIONS`; any other is
  SOS-6013 naming both states. A change is decided on the stored record and written only if that record is still
  the stored one (compare-and-set on its revision), so concurrent callers, processes and hosts never both win.
- **Fenced claims.** ``claim`` succeeds for exactly one caller per attempt (the others get SOS-6012) and returns a
  token bound to that attempt. ``heartbeat``, ``submit`` and ``block`` carry it; a token of an earlier attempt, or
  of a lease that has expired (by the store's clock), is refused with SOS-6012 and writes nothing. An expired lease
  may be claimed again by anyone (``attempt + 1``).
- **Dependencies.** A task whose ``blocked_by`` are not all ``done`` starts in ``backlog`` and cannot be claimed.
- **Gates.** Only a named reviewer who is not the worker of the current attempt reviews; each reviewer counts once
  per submission (a repeated verdict is a replay, a different one SOS-4009); ``approvals_required`` approvals make
  it ``done``, one ``reject`` makes it ``failed``, ``needs_changes`` returns it to the same worker.
- **Escrow.** A bounty moves from the funder to the tenant's ``system:escrow`` account when the task is created,
  only after the task reserved its id and open slot (``task:<id>:fund:<nonce>``; SOS-7001 and no task, nothing
  written, when the funder cannot pay; SOS-4010 and no money moved when the tenant is full). ``done`` pays it
  out of escrow to the worker of the approved attempt (``task:<id>:payout``) and the reviewer fee to the
  approving reviewers (``task:<id>:fee:<reviewer>``); ``failed`` and ``canceled`` (also an unclaimed task past
  ``expires_in_s``) refund it to the funder (``task:<id>:refund``). Each is an ordinary ledger transfer with a
  fixed id, so a retried settlement moves nothing twice and ``ledger.check()`` covers escrow like any account.
- **Messages.** Each transition publishes its messages on ``sos:channel:tasks`` once (``task_created``,
  ``task_claimed``, ``evidence``, ``blocker``, ``gate_verdict``, ``task_completed``): they are stored on the
  record in the same write as the transition (an outbox), published, then cleared; whatever a crash left owed is
  published by the next read or move of the task or ``sweep``. Each message gets a fresh UUIDv7 id when the
  transition is decided, stored with it in the outbox, so a re-publish reuses it and is dropped by the bus, while
  no agent can compute it in advance and publish it first to suppress the announcement. A replay publishes
  nothing. The messages are validated as the bus will validate them *before* the transition is written: a change
  whose messages the bus would refuse (SOS-4001/4005/4010) writes nothing. A stored message that still cannot be
  published (written before that check) is dropped with a ``tasks.message_dropped`` audit record, never left to
  fail every later read.
- **Retention.** ``sweep`` purges the oldest finished tasks beyond ``TASKS_FINISHED_MAX`` per tenant, settled
  first; ledger transfers are never removed.
- **Bad input writes nothing**: every argument is checked (SOS-4005, 4001, 4010) before the store or ledger is
  touched.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import ValidationError

from ..audit import Audit, AuditDraft, act_as, done_acting
from ..contracts import new_message_id, validation_details
from ..contracts._types import AGENT_ADDRESS_RE
from ..contracts.messages import (
    REASON_CHARS_MAX,
    REASONS_MAX,
    TEXT_CHARS_MAX,
    TITLE_CHARS_MAX,
    EvidencePayload,
)
from ..errors import (
    BackendFailure,
    Forbidden,
    IdempotencyConflict,
    IllegalTransition,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    SchemaViolation,
    SOSError,
    TaskAlreadyClaimed,
    TaskNotFound,
    WalletNotFound,
)
from ..ledger import AMOUNT_MICROS_MAX, Ledger
from ..ledger.service import check_currency
from ..operations import Wire, operation, service
from .models import SQUAD_TASK_ID_PATTERN, Board, BoardColumn, Claim, Review, Task, Verdict
from .store import TaskRecord, TaskStore
from .transitions import STATUSES, TERMINAL, check_transition

if TYPE_CHECKING:
    from ..bus import Bus
    from ..guard import Caller

__all__ = [
    "APPROVALS_MAX",
    "ATTEMPTS_MAX",
    "BLOCKED_BY_MAX",
    "DESCRIPTION_CHARS_MAX",
    "ESCROW_ACCOUNT",
    "EVIDENCE_BYTES_MAX",
    "EVIDENCE_ITEMS_MAX",
    "EXPIRES_IN_S_MAX",
    "FUNDING_S_MAX",
    "LEASE_S_DEFAULT",
    "LEASE_S_MAX",
    "LIST_LIMIT_MAX",
    "RESULT_BYTES_MAX",
    "REVIEWERS_MAX",
    "TASKS_CHANNEL",
    "TASKS_FINISHED_MAX",
    "TASKS_OPEN_MAX",
    "TASKS_OPEN_PER_CREATOR_MAX",
    "TITLE_CHARS_MAX",
    "Tasks",
    "split_bounty",
]

ESCROW_ACCOUNT: Final = "system:escrow"
"""The tenant's escrow account: holds every funded, unsettled bounty (must not overdraw)."""
TASKS_CHANNEL: Final = "sos:channel:tasks"
KERNEL_SOURCE: Final = "agent:kernel"
KERNEL_ACTOR: Final = "kernel"
"""The audit actor of what the kernel does by itself (an expiry and its refund), as for the trusted handle: no
session's actor (``agent:<name>``, ``token:<id>``) can be it."""
ADMIN: Final = "tasks:admin"

TASKS_OPEN_MAX: Final = 10_000
"""Unfinished tasks per tenant (a create being funded holds its slot)."""
TASKS_OPEN_PER_CREATOR_MAX: Final = TASKS_OPEN_MAX // 10
"""Unfinished tasks one agent may have created (``created_by``): a tenth, so a few agents cannot take every open
slot of their tenant (it takes ten, each with a token); a task without ``created_by`` counts only against
``TASKS_OPEN_MAX``."""
TASKS_FINISHED_MAX: Final = 100_000
"""Finished tasks kept per tenant: ``sweep`` purges the oldest beyond it (their ledger transfers stay)."""
FUNDING_S_MAX: Final = 300
"""How long a create may hold its slot while funding; ``sweep`` then frees a slot whose funding never happened."""
REVIEWERS_MAX: Final = 16
APPROVALS_MAX: Final = REVIEWERS_MAX
BLOCKED_BY_MAX: Final = 32
DESCRIPTION_CHARS_MAX: Final = TEXT_CHARS_MAX
"""16384: the ``task_created`` message's limit (titles: ``TITLE_CHARS_MAX`` = 280, the message's too)."""
EVIDENCE_ITEMS_MAX: Final = 32
EVIDENCE_BYTES_MAX: Final = 256 * 1024
"""The JSON size of one submission's evidence items together."""
RESULT_BYTES_MAX: Final = 64 * 1024
LEASE_S_MIN: Final = 1
LEASE_S_MAX: Final = 24 * 3600
LEASE_S_DEFAULT: Final = 300
EXPIRES_IN_S_MAX: Final = 365 * 24 * 3600
ATTEMPTS_MAX: Final = 1000
"""Claims of one task; after that it can only be canceled."""
LIST_LIMIT_MAX: Final = 1000
BOARD_TASKS_MAX: Final = TASKS_OPEN_MAX
"""Tasks per board column (open columns are complete: at most ``TASKS_OPEN_MAX`` tasks are open)."""
SWAP_TRIES_MAX: Final = 64
"""Re-reads of a task whose record changed under a decision (each loss means another caller's write won)."""

_ID_RE = re.compile(SQUAD_TASK_ID_PATTERN)
_PRIORITIES = ("critical", "high", "medium", "low")
_VERDICTS = ("approve", "reject", "needs_changes")
_VERDICT_TO = {"approve": "done", "reject": "failed", "needs_changes": "in_progress"}
_COMPLETED = {"done": "done", "failed": "failed", "canceled": "cancelled"}


def split_bounty(bounty: int, reviewer_fee: int, approvers: Sequence[str]) -> dict[str, int]:
    """Exact parts of ``bounty``: each approver gets ``reviewer_fee // len(approvers)``; the worker (key ``""``)
    gets the rest, so the parts always sum to ``bounty`` and the rounding remainder goes to the worker."""
    each = reviewer_fee // len(approvers) if approvers and reviewer_fee > 0 else 0
    parts = {a: each for a in approvers} if each else {}
    return {"": bounty - each * len(parts), **parts}


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _token_digest(task_id: str, token: str) -> str:
    return hashlib.sha256(f"{task_id}\n{token}".encode()).hexdigest()


def check_task_id(task_id: Any) -> str:
    """``task_id`` if it is a SquadTask id (a lower-case slug of 3-64 characters or a UUID), else SOS-4005."""
    if not isinstance(task_id, str) or not _ID_RE.fullmatch(task_id):
        raise InvalidArgument(
            f"task id {task_id!r} must be a lower-case slug of 3-64 letters, digits, '_' and '-' or a UUID",
            details={"task_id": repr(task_id)[:100]},
        )
    return task_id


def _check_agent(value: Any, name: str) -> str:
    if not isinstance(value, str) or not AGENT_ADDRESS_RE.fullmatch(value):
        raise InvalidArgument(f"{name} must be an agent address 'agent:<name>', got {value!r}", details={name: value})
    return value


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an int in {low}..{high}, got {value!r}", details={name: repr(value)})
    return value


def _check_text(value: Any, name: str, low: int, high: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string", details={name: repr(value)[:100]})
    if not low <= len(value) <= high:
        raise LimitExceeded(f"{name} must be {low}..{high} characters, got {len(value)}", details={"limit": high})
    return value


def _check_list(value: Any, name: str, high: int) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidArgument(f"{name} must be a list", details={name: repr(value)[:100]})
    if len(value) > high:
        raise LimitExceeded(f"{name} holds at most {high} items, got {len(value)}", details={"limit": high})
    return list(value)


def _json_size(value: Any, name: str, high: int) -> int:
    try:
        # as the bus encodes it: a lone surrogate (no UTF-8 form) is refused here, not when a message carries it
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{name} must be JSON: {exc}") from None
    if size > high:
        raise LimitExceeded(f"{name} is {size} bytes as JSON, over {high}", details={"limit": high, "bytes": size})
    return size


@dataclass(frozen=True, slots=True)
class _State:
    """A task and the kernel's private state beside it (never returned: the claim's digest, content digests)."""

    task: Task
    content: str
    claim: str | None = None
    claim_lease_s: int = 0
    submission: str | None = None
    funding: str | None = None  # the fund transfer id while the create is still funding (the slot is reserved)
    outbox: tuple[dict[str, Any], ...] = ()  # messages stored with the transition and not yet accepted by the bus

    @classmethod
    def parse(cls, record: TaskRecord) -> _State:
        raw = json.loads(record.data)
        task = Task.model_validate(raw["task"])
        outbox = tuple(raw.get("outbox", ()))
        return cls(task, raw["content"], raw["claim"], raw["lease"], raw["submission"], raw.get("funding"), outbox)

    def record(self, rev: int, created_at: float) -> TaskRecord:
        raw = {
            "task": self.task.model_dump(mode="json"),
            "content": self.content,
            "claim": self.claim,
            "lease": self.claim_lease_s,
            "submission": self.submission,
            "funding": self.funding,
            "outbox": list(self.outbox),
        }
        data = json.dumps(raw, separators=(",", ":")).encode()
        return TaskRecord(self.task.id, rev, self.task.status, created_at, data)

    def with_task(self, **changes: Any) -> _State:
        return replace(self, task=self.task.model_copy(update=changes))


Decide = Callable[[_State, float], "_State | None"]


class _Waiting(Exception):
    """A claim of a backlog task whose dependencies have not been read yet."""

    def __init__(self, task: Task) -> None:
        super().__init__(task.id)
        self.task = task


# -- access rules that need the task (see sos_kernel.operations) --------------------------------------------------


def _lifted(caller: Caller) -> bool:
    return caller.principal.allows(ADMIN)


async def _create_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Task:
    """The creator is the session's agent; a bounty comes out of the session's own account (``admin`` lifts)."""
    principal = caller.principal
    args = dict(arguments)
    if args.get("created_by") is None:
        args["created_by"] = principal.agent
    if args.get("funded_by") is None and args.get("bounty"):
        args["funded_by"] = principal.agent
    if not principal.admin:
        if args["created_by"] is not None:
            caller.own("agent", "created_by", args["created_by"])
        if args.get("funded_by") is not None:
            caller.own("account", "funded_by", args["funded_by"])
    caller.unreserved("agent", "created_by", args["created_by"])
    title = args.pop("title")
    return await tasks.create(title, **args)


async def _acting(caller: Caller, tasks: Tasks, arguments: dict[str, Any], name: str) -> dict[str, Any]:
    """``arguments`` with ``name`` defaulting to the session's agent, which it must be (``tasks:admin`` lifts)."""
    args = dict(arguments)
    if args.get(name) is None:
        args[name] = caller.principal.agent
    if not _lifted(caller):
        caller.own("agent", name, args[name])
    caller.unreserved("agent", name, args[name])
    return args


async def _claim_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Claim:
    """A session claims for its own agent."""
    args = await _acting(caller, tasks, arguments, "agent")
    return await tasks.claim(args.pop("task_id"), **args)


async def _review_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Task:
    """A session reviews as its own agent (the service checks it is a named reviewer, not the worker)."""
    args = await _acting(caller, tasks, arguments, "reviewer")
    return await tasks.review(args.pop("task_id"), **args)


async def _worker_only(caller: Caller, tasks: Tasks, task_id: Any) -> None:
    """The task's current claim must be the session's agent's (``tasks:admin`` lifts); the token fences the rest."""
    if _lifted(caller):
        return
    task = await tasks.get(task_id)
    if task.assignee is None or task.assignee != caller.principal.agent:
        caller.deny(f"task {task.id} is not claimed by this session's agent", task_id=task.id)


async def _heartbeat_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Task:
    """Only the claim's worker renews it."""
    await _worker_only(caller, tasks, arguments["task_id"])
    return await tasks.heartbeat(**arguments)


async def _submit_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Task:
    """Only the claim's worker submits."""
    await _worker_only(caller, tasks, arguments["task_id"])
    return await tasks.submit(**arguments)


async def _block_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Task:
    """Only the claim's worker reports a blocker."""
    await _worker_only(caller, tasks, arguments["task_id"])
    return await tasks.block(**arguments)


async def _cancel_rule(caller: Caller, tasks: Tasks, arguments: dict[str, Any]) -> Task:
    """The task's creator or funder cancels it (``tasks:admin``: any task)."""
    if not _lifted(caller):
        task = await tasks.get(arguments["task_id"])
        agent = caller.principal.agent
        if agent is None or agent not in (task.created_by, task.funded_by):
            caller.deny(f"only the creator or funder of task {task.id} cancels it", task_id=task.id)
    return await tasks.cancel(**arguments)


@service("tasks")
class Tasks:
    """The tasks API of one tenant: ``kernel.tasks`` or ``kernel.tenant(slug).tasks`` (module docstring)."""

    def __init__(self, store: TaskStore, tenant: str, ledger: Ledger, bus: Bus) -> None:
        self._store = store
        self.tenant = tenant
        self._ledger = ledger
        self._bus = bus
        self._opened: set[tuple[str, str]] = set()  # accounts known to exist (accounts are never removed)
        self.audit: Audit | None = None
        """The tenant's audit chain (set by the kernel): each verdict is recorded, in the swap's step where the
        store allows it (``audits_writes``)."""

    @property
    def store(self) -> TaskStore:
        """The store under this service (for diagnostics and tests)."""
        return self._store

    # -- creating -----------------------------------------------------------------------------------------------

    @operation(
        "tasks:write",
        tool="task_create",
        rule=_create_rule,
        wire=Wire(
            errors=(IdempotencyConflict, InsufficientFunds, WalletNotFound, TaskNotFound),
            summary="Create a task, funding its bounty into escrow (idempotent by id)",
        ),
        spend=("bounty", "reviewer_fee"),
        resource=("id",),
    )
    async def create(
        self,
        title: str,
        *,
        id: str | None = None,
        description: str = "",
        priority: Literal["critical", "high", "medium", "low"] = "medium",
        reviewers: Sequence[str] = (),
        approvals_required: int = 1,
        bounty: int = 0,
        currency: str = "USD",
        funded_by: str | None = None,
        blocked_by: Sequence[str] = (),
        lease_s: int = LEASE_S_DEFAULT,
        expires_in_s: int | None = None,
        reviewer_fee: int = 0,
        created_by: str | None = None,
    ) -> Task:
        """Create a task (status ``queued``, or ``backlog`` while a ``blocked_by`` task is not done).

        ``reviewers`` (1..16 agents) decide it; ``approvals_required`` of them must approve. A ``bounty`` (micros
        of ``currency``) moves from ``funded_by`` into escrow now; ``reviewer_fee`` of it is shared by the
        approving reviewers (see :func:`split_bounty`). ``expires_in_s``: an unclaimed task ends ``canceled``
        (refunded) that long after creation. Same id and content: the task (a replay); other content: SOS-4009.
        Raises SOS-4005/4010 (bad input), 6011 (unknown ``blocked_by`` task), 7001/7002 (the funder cannot pay),
        4010 (the tenant has ``TASKS_OPEN_MAX`` open tasks).
        """
        spec = self._spec(
            title,
            id,
            description,
            priority,
            reviewers,
            approvals_required,
            bounty,
            currency,
            funded_by,
            blocked_by,
            lease_s,
            expires_in_s,
            reviewer_fee,
            created_by,
        )
        task_id = spec["id"]
        content = _digest(spec)
        existing, now = await self._store.load(self.tenant, task_id)
        if existing is not None:
            return await self._replayed_create(existing, content)
        backlog = await self._dependencies(task_id, spec["blocked_by"])
        if await self._store.open_count(self.tenant) >= TASKS_OPEN_MAX:
            raise self._full()
        task = Task(squad_id=self.tenant, status="backlog" if backlog else "queued", created_at=_at(now), **spec)
        created = self._created_message(task)
        self._check_messages([created])  # before the slot is reserved or any money moves
        if spec["bounty"] > 0:  # reserve the slot (and the id) first; the money moves only into a reserved slot
            await self._settlement_ids_free(task)
            state = _State(task, content, funding=f"task:{task_id}:fund:{secrets.token_hex(8)}")
        else:
            state = _State(task, content, outbox=(created,))
        record = state.record(1, now)
        creator = spec["created_by"]
        found, inserted = await self._store.insert(
            self.tenant, record, TASKS_OPEN_MAX, creator, TASKS_OPEN_PER_CREATOR_MAX
        )
        if found is not None:
            return await self._replayed_create(found, content)
        if not inserted:
            raise self._full() if await self._store.open_count(self.tenant) >= TASKS_OPEN_MAX else _share_full(creator)
        if state.funding is not None:
            return await self._complete_funding(record, state, fresh=True)
        await self._flush(record, state)
        return task

    async def _settlement_ids_free(self, task: Task) -> None:
        """SOS-4009 if a purged task of this id left settlement transfers a new one would replay instead of
        moving money."""
        prefix = f"task:{task.id}"
        for name in ("refund", "payout", *(f"fee:{r}" for r in task.reviewers)):
            if await self._transfer(f"{prefix}:{name}") is not None:
                raise IdempotencyConflict(
                    f"task id {task.id} was used by a finished task whose record was purged; use a new id",
                    details={"task_id": task.id},
                )

    async def _transfer(self, transfer_id: str) -> Any:
        try:
            return await self._ledger.get_transfer(transfer_id)
        except NotFound:
            return None

    @staticmethod
    def _full() -> LimitExceeded:
        limit = TASKS_OPEN_MAX
        return LimitExceeded(f"the tenant has {limit} open tasks", details={"limit": limit})

    async def _replayed_create(self, record: TaskRecord, content: str) -> Task:
        """The same create again: the task (its funding completed, its messages re-published if owed)."""
        task = self._replayed(record, content)
        state = _State.parse(record)
        if state.funding is not None:
            return await self._complete_funding(record, state)
        if state.outbox:
            await self._flush(record, state)
        return task

    async def _complete_funding(self, record: TaskRecord, state: _State, *, fresh: bool = False) -> Task:
        """Fund a reserved task (its fund id is fixed in the reservation, so a retry moves the money once) and
        make it visible; if the funder cannot pay, free the reservation: nothing stays written."""
        task = state.task
        try:
            await self._fund(task, str(state.funding), fresh)
        except (InsufficientFunds, WalletNotFound):
            await self._store.delete(self.tenant, record)
            raise
        funded = replace(state, funding=None, outbox=(self._created_message(task),))
        new = funded.record(record.rev + 1, record.created_at)
        if await self._store.swap(self.tenant, record, new):
            await self._flush(new, funded)
            return task
        current, _ = await self._store.load(self.tenant, task.id)
        if current is not None and _State.parse(current).funding is None:
            return await self._replayed_create(current, state.content)  # another call completed it
        await self._orphaned(task, str(state.funding))
        raise BackendFailure(
            f"the reservation of task {task.id} was freed while it was being funded; the bounty was refunded, "
            "create it again",
            details={"task_id": task.id},
        )

    async def _orphaned(self, task: Task, fund_id: str) -> None:
        """Refund a funding whose reservation is gone (``<fund id>:refund``: one refund per funding)."""
        await self._ledger.transfer(
            id=f"{fund_id}:refund",
            debit=ESCROW_ACCOUNT,
            credit=str(task.funded_by),
            amount=task.bounty,
            currency=task.currency,
            reason=f"bounty of task {task.id} refunded (its reservation was freed)",
        )

    def _spec(
        self,
        title: Any,
        id: Any,
        description: Any,
        priority: Any,
        reviewers: Any,
        approvals: Any,
        bounty: Any,
        currency: Any,
        funded_by: Any,
        blocked_by: Any,
        lease_s: Any,
        expires_in_s: Any,
        fee: Any,
        created_by: Any,
    ) -> dict[str, Any]:
        task_id = str(uuid.uuid4()) if id is None else check_task_id(id)
        if priority not in _PRIORITIES:
            raise InvalidArgument(f"priority must be one of {', '.join(_PRIORITIES)}, got {priority!r}")
        people = [_check_agent(r, "reviewer") for r in _check_list(reviewers, "reviewers", REVIEWERS_MAX)]
        if len(set(people)) != len(people):
            raise InvalidArgument("reviewers must not repeat an agent")
        _check_int(approvals, "approvals_required", 1, max(1, len(people)))
        if not people:
            raise InvalidArgument("a task names at least one reviewer (work is paid only after a review)")
        deps = [check_task_id(d) for d in _check_list(blocked_by, "blocked_by", BLOCKED_BY_MAX)]
        if task_id in deps or len(set(deps)) != len(deps):
            raise InvalidArgument("blocked_by must not repeat a task or name the task itself")
        _check_int(bounty, "bounty", 0, AMOUNT_MICROS_MAX)
        _check_int(fee, "reviewer_fee", 0, bounty)
        check_currency(currency)
        if funded_by is not None:
            _check_agent(funded_by, "funded_by")
        if bounty > 0 and funded_by is None:
            raise InvalidArgument("a bounty needs funded_by: the account it comes out of")
        if created_by is not None:
            _check_agent(created_by, "created_by")
        if expires_in_s is not None:
            _check_int(expires_in_s, "expires_in_s", 1, EXPIRES_IN_S_MAX)
        return {
            "id": task_id,
            "title": _check_text(title, "title", 1, TITLE_CHARS_MAX),
            "description": _check_text(description, "description", 0, DESCRIPTION_CHARS_MAX),
            "priority": priority,
            "reviewers": people,
            "approvals_required": approvals,
            "bounty": bounty,
            "currency": currency,
            "funded_by": funded_by,
            "reviewer_fee": fee,
            "blocked_by": deps,
            "lease_s": _check_int(lease_s, "lease_s", LEASE_S_MIN, LEASE_S_MAX),
            "expires_in_s": expires_in_s,
            "created_by": created_by,
        }

    @staticmethod
    def _replayed(record: TaskRecord, content: str) -> Task:
        state = _State.parse(record)
        if state.content != content:
            raise IdempotencyConflict(
                f"task {record.id} exists with other content; use a new id", details={"task_id": record.id}
            )
        return state.task

    async def _dependencies(self, task_id: str, deps: list[str]) -> bool:
        """Whether any dependency is unfinished (SOS-6011 if one does not exist)."""
        waiting = False
        for dep in deps:
            record, _ = await self._store.load(self.tenant, dep)
            if record is None:
                raise TaskNotFound(
                    f"task {task_id} is blocked by {dep}, which does not exist", details={"task_id": dep}
                )
            waiting = waiting or record.status != "done"
        return waiting

    async def _open(self, owner: str, currency: str) -> None:
        if (owner, currency) not in self._opened:
            await self._ledger.open_account(owner, currency)
            self._opened.add((owner, currency))

    async def _fund(self, task: Task, fund_id: str, fresh: bool) -> None:
        funder, amount, currency = str(task.funded_by), task.bounty, task.currency
        # a retry replays the recorded transfer (applied or refused), whatever the balance is now
        if fresh or await self._transfer(fund_id) is None:
            await self._precheck(funder, amount, currency)
        await self._open(ESCROW_ACCOUNT, currency)
        await self._ledger.transfer(
            id=fund_id,
            debit=funder,
            credit=ESCROW_ACCOUNT,
            amount=amount,
            currency=currency,
            reason=f"bounty of task {task.id} into escrow",
        )

    async def _precheck(self, funder: str, amount: int, currency: str) -> None:
        # Checked first so a plain shortfall records no failed transfer.
        available = (await self._ledger.balance(funder, currency)).available
        if available < amount:
            raise InsufficientFunds(
                f"{funder} has {available} {currency} micros available; the bounty is {amount}",
                details={"owner": funder, "available": available, "amount": amount},
            )

    # -- reading ------------------------------------------------------------------------------------------------

    @operation("tasks:read", tool="task_get", wire=Wire("GET", errors=(TaskNotFound,), summary="A task by id"))
    async def get(self, task_id: str) -> Task:
        """The task (an unclaimed task past its ``expires_in_s`` is ended first). SOS-6011 if none."""
        state, _ = await self._move(check_task_id(task_id), lambda s, now: None)
        return state.task

    async def _fresh(self, record: TaskRecord) -> Task | None:
        """The task as a read returns it (None while its create is funding it, or if it was just purged)."""
        state = _State.parse(record)
        if state.funding is not None:
            return None
        task = state.task
        due = task.expires_in_s is not None and not task.attempt and task.status in ("backlog", "queued")
        if not due and not state.outbox:
            return task
        try:
            return await self.get(record.id)  # it may be due to expire, or owe messages
        except TaskNotFound:
            return None

    @operation(
        "tasks:read", tool="task_board", wire=Wire("GET", summary="Tasks grouped by status, with counts and bounties")
    )
    async def board(self) -> Board:
        """Every status with its count, bounties by currency and task ids (oldest first). Open statuses are
        complete (at most ``TASKS_OPEN_MAX`` tasks are open); a finished column lists its ``BOARD_TASKS_MAX``
        oldest tasks."""
        columns: dict[str, dict[str, Any]] = {s: {"count": 0, "bounty": {}, "tasks": []} for s in STATUSES}
        seen: set[str] = set()  # a task that expires while the board is read is counted once, where it ends
        for status in STATUSES:
            for record in await self._store.records(self.tenant, status, BOARD_TASKS_MAX):
                task = await self._fresh(record)
                if task is None or task.id in seen:
                    continue
                seen.add(task.id)
                column = columns[task.status]
                column["count"] += 1
                column["tasks"].append(task.id)
                if task.bounty:
                    column["bounty"][task.currency] = column["bounty"].get(task.currency, 0) + task.bounty
        return Board(columns={s: BoardColumn(**c) for s, c in columns.items()}, total=len(seen))

    # -- the worker ---------------------------------------------------------------------------------------------

    @operation(
        "tasks:write",
        tool="task_claim",
        rule=_claim_rule,
        wire=Wire(errors=(TaskNotFound, TaskAlreadyClaimed, IllegalTransition), summary="Claim a task (a lease)"),
    )
    async def claim(self, task_id: str, *, agent: str | None = None, lease_s: int | None = None) -> Claim:
        """Claim the task for ``agent`` for ``lease_s`` (default: the task's) seconds: ``attempt + 1`` and a fresh
        token. SOS-6012 while another claim's lease runs, 6013 if the task is finished, in review or blocked by
        unfinished tasks."""
        check_task_id(task_id)
        worker = _check_agent(agent, "agent")
        if lease_s is not None:
            _check_int(lease_s, "lease_s", LEASE_S_MIN, LEASE_S_MAX)
        token = ""
        deps_done: bool | None = None

        def decide(state: _State, now: float) -> _State:
            nonlocal token
            task = state.task
            if task.status in ("claimed", "in_progress", "blocked") and now < _ts(task.lease_expires_at):
                raise TaskAlreadyClaimed(
                    f"task {task.id} is claimed (attempt {task.attempt}) until {task.lease_expires_at}",
                    details={"task_id": task.id, "attempt": task.attempt, "reason": "held"},
                )
            check_transition(task.id, task.status, "claimed", "claim")
            if task.attempt >= ATTEMPTS_MAX:
                raise LimitExceeded(f"task {task.id} was claimed {ATTEMPTS_MAX} times", details={"limit": ATTEMPTS_MAX})
            if task.status == "backlog" and deps_done is not True:
                raise _Waiting(task)
            attempt = task.attempt + 1
            token = f"{attempt}.{secrets.token_urlsafe(24)}"
            lease = lease_s or task.lease_s
            return replace(state, claim=_token_digest(task.id, token), claim_lease_s=lease, submission=None).with_task(
                status="claimed",
                attempt=attempt,
                assignee=worker,
                claimed_at=task.claimed_at or _at(now),
                updated_at=_at(now),
                lease_expires_at=_at(now + lease),
                blocker=None,
            )

        try:
            state, _ = await self._move(task_id, decide)
        except _Waiting as waiting:
            # ``done`` is terminal: dependencies seen done here are still done when the claim is written.
            deps_done = await self._all_done(waiting.task.blocked_by)
            if not deps_done:
                raise IllegalTransition(
                    f"task {task_id} cannot go from 'backlog' to 'claimed' until "
                    f"{', '.join(waiting.task.blocked_by)} are done",
                    details={
                        "task_id": task_id,
                        "from": "backlog",
                        "to": "claimed",
                        "blocked_by": waiting.task.blocked_by,
                    },
                ) from None
            state, _ = await self._move(task_id, decide)
        task = state.task
        return Claim(
            task_id=task.id,
            agent=worker,
            attempt=task.attempt,
            token=token,
            expires_at=task.lease_expires_at,
            task=task,
        )

    async def _all_done(self, deps: list[str]) -> bool:
        for dep in deps:
            record, _ = await self._store.load(self.tenant, dep)
            if record is None or record.status != "done":
                return False
        return True

    @operation(
        "tasks:write",
        tool="task_heartbeat",
        rule=_heartbeat_rule,
        wire=Wire(errors=(TaskNotFound, TaskAlreadyClaimed, IllegalTransition), summary="Renew a claim's lease"),
    )
    async def heartbeat(self, task_id: str, claim_token: str) -> Task:
        """Renew the lease (and move ``claimed``/``blocked`` to ``in_progress``). SOS-6012 for a stale or expired
        token."""
        check_task_id(task_id)

        def decide(state: _State, now: float) -> _State:
            renewal = state.task.status == "in_progress"  # a renewal is not a transition
            self._fence(state, claim_token, now, None if renewal else "in_progress", "heartbeat")
            lease = _at(now + state.claim_lease_s)
            return state.with_task(status="in_progress", updated_at=_at(now), lease_expires_at=lease, blocker=None)

        return (await self._move(task_id, decide))[0].task

    @operation(
        "tasks:write",
        tool="task_submit",
        rule=_submit_rule,
        wire=Wire(errors=(TaskNotFound, TaskAlreadyClaimed, IllegalTransition), summary="Submit work for review"),
    )
    async def submit(
        self,
        task_id: str,
        claim_token: str,
        evidence: Sequence[Mapping[str, Any]] = (),
        result: Mapping[str, Any] | None = None,
    ) -> Task:
        """Move the task to ``review`` with ``evidence`` (``evidence`` message payloads, published) and a
        ``result`` object. Submitting the same again with the same token is a replay."""
        check_task_id(task_id)
        items = self._evidence(evidence)
        if result is not None and not isinstance(result, Mapping):
            raise InvalidArgument("result must be a JSON object")
        outcome = dict(result or {})
        _json_size(outcome, "result", RESULT_BYTES_MAX)
        submission = _digest({"evidence": items, "result": outcome, "token": claim_token})

        def decide(state: _State, now: float) -> _State | None:
            if state.task.status == "review" and state.submission == submission:
                return None
            self._fence(state, claim_token, now, "review", "submit")
            changes = {"evidence": items, "result": outcome, "round": state.task.round + 1, "updated_at": _at(now)}
            return replace(state, submission=submission).with_task(status="review", lease_expires_at=None, **changes)

        return (await self._move(task_id, decide))[0].task

    @staticmethod
    def _evidence(evidence: Any) -> list[dict[str, Any]]:
        items = _check_list(evidence, "evidence", EVIDENCE_ITEMS_MAX)
        _json_size([dict(i) if isinstance(i, Mapping) else i for i in items], "evidence", EVIDENCE_BYTES_MAX)
        out = []
        for index, item in enumerate(items):
            try:
                out.append(EvidencePayload.model_validate(item).to_wire())
            except ValidationError as exc:
                raise SchemaViolation(
                    f"evidence[{index}] is not an evidence payload", details=validation_details(exc)
                ) from None
        return out

    @operation(
        "tasks:write",
        tool="task_block",
        rule=_block_rule,
        wire=Wire(errors=(TaskNotFound, TaskAlreadyClaimed, IllegalTransition), summary="Report a blocker"),
    )
    async def block(self, task_id: str, claim_token: str, reason: str, on: Sequence[str] = ()) -> Task:
        """Set ``blocked`` and publish a ``blocker`` (``on``: what it waits for). The claim and its lease stay;
        a heartbeat resumes it."""
        check_task_id(task_id)
        _check_text(reason, "reason", 1, REASON_CHARS_MAX)
        waits = [_check_text(o, "on", 1, 500) for o in _check_list(on, "on", BLOCKED_BY_MAX)]

        def decide(state: _State, now: float) -> _State:
            self._fence(state, claim_token, now, "blocked", "block")
            blocker = {"reason": reason, "on": waits, "at": _at(now).isoformat()}
            return state.with_task(status="blocked", blocker=blocker, updated_at=_at(now))

        return (await self._move(task_id, decide))[0].task

    @staticmethod
    def _fence(state: _State, token: Any, now: float, wanted: str | None, op: str) -> None:
        """Refuse a write unless ``token`` is the current claim's and its lease runs (SOS-6012), and the move is
        legal (SOS-6013)."""
        task = state.task
        if not isinstance(token, str) or not token:
            raise InvalidArgument("claim_token must be the token a claim returned")
        if state.claim is None or _token_digest(task.id, token) != state.claim:
            held = token.partition(".")[0]
            raise TaskAlreadyClaimed(
                f"stale claim token for task {task.id}: it was for attempt {held}, the task is at attempt "
                f"{task.attempt}",
                details={"task_id": task.id, "attempt": task.attempt, "reason": "stale"},
            )
        if task.status in ("claimed", "in_progress", "blocked") and now >= _ts(task.lease_expires_at):
            raise TaskAlreadyClaimed(
                f"the lease on task {task.id} (attempt {task.attempt}) expired at {task.lease_expires_at}; claim it "
                "again",
                details={"task_id": task.id, "attempt": task.attempt, "reason": "expired"},
            )
        if wanted is not None:
            check_transition(task.id, task.status, wanted, op)

    # -- the gate -----------------------------------------------------------------------------------------------

    @operation(
        "tasks:write",
        tool="task_review",
        rule=_review_rule,
        wire=Wire(
            errors=(TaskNotFound, IllegalTransition, IdempotencyConflict, InsufficientFunds),
            summary="Record a reviewer's verdict",
        ),
    )
    async def review(
        self,
        task_id: str,
        *,
        reviewer: str | None = None,
        verdict: Verdict = "approve",
        reasons: Sequence[str] = (),
    ) -> Task:
        """Record ``reviewer``'s verdict on the current submission and publish a ``gate_verdict``: ``reject`` ends
        it ``failed`` (refunded), ``needs_changes`` returns it to the worker, and the ``approvals_required``-th
        approval makes it ``done`` (paid). The same verdict again is a replay; another one SOS-4009. SOS-5004 for
        someone who is not a named reviewer, or is the worker of the current attempt."""
        check_task_id(task_id)
        who = _check_agent(reviewer, "reviewer")
        if verdict not in _VERDICTS:
            raise InvalidArgument(f"verdict must be one of {', '.join(_VERDICTS)}, got {verdict!r}")
        why = [_check_text(r, "reason", 1, REASON_CHARS_MAX) for r in _check_list(reasons, "reasons", REASONS_MAX)]
        if verdict != "approve" and not why:
            raise InvalidArgument(f"a {verdict!r} verdict needs at least one reason")

        def decide(state: _State, now: float) -> _State | None:
            task = state.task
            if who not in task.reviewers:
                raise Forbidden(f"{who} is not a reviewer of task {task.id}", details={"task_id": task.id})
            if who == task.assignee:
                raise Forbidden(f"{who} worked on task {task.id} and cannot review it", details={"task_id": task.id})
            mine = [r for r in task.reviews if (r.reviewer, r.attempt, r.round) == (who, task.attempt, task.round)]
            if mine:
                if (mine[0].verdict, mine[0].reasons) == (verdict, why):
                    return None
                raise IdempotencyConflict(
                    f"{who} already gave {mine[0].verdict!r} on this submission of task {task.id}",
                    details={"task_id": task.id, "verdict": mine[0].verdict},
                )
            if task.status != "review":  # the gate decides only a submission under review
                check_transition(task.id, task.status, _VERDICT_TO[verdict], "review")
            return self._decided(
                state,
                Review(
                    reviewer=who,
                    verdict=verdict,
                    reasons=why,
                    attempt=task.attempt,
                    round=task.round,
                    decided_at=_at(now),
                ),
                now,
            )

        record = None
        if self.audit is not None:  # the record the guard gave a verdict before it was written in the swap's step
            record = self.audit.draft(
                "operation", actor="kernel", action="tasks.review", resource=task_id, details={"id": task_id}
            )
        state, changed = await self._move(task_id, decide, record)
        if not changed and state.task.status in TERMINAL:
            await self._settle(state.task)  # a retry after a crash between the verdict and the payout
        return state.task

    def _decided(self, state: _State, review: Review, now: float) -> _State:
        task = state.task
        reviews = [*task.reviews, review]
        if review.verdict == "reject":
            to, extra = "failed", {"outcome": "rejected", "completed_at": _at(now)}
        elif review.verdict == "needs_changes":
            to, extra = "in_progress", {"lease_expires_at": _at(now + state.claim_lease_s)}
        else:
            count = sum(1 for r in reviews if (r.attempt, r.round, r.verdict) == (task.attempt, task.round, "approve"))
            if count < task.approvals_required:
                return state.with_task(reviews=reviews, updated_at=_at(now))
            to, extra = "done", {"outcome": "approved", "completed_at": _at(now)}
        check_transition(task.id, task.status, to, "review")
        return state.with_task(status=to, reviews=reviews, updated_at=_at(now), **extra)

    # -- ending -------------------------------------------------------------------------------------------------

    @operation(
        "tasks:write",
        tool="task_cancel",
        rule=_cancel_rule,
        wire=Wire(errors=(TaskNotFound, IllegalTransition), summary="Cancel a task and refund its bounty"),
    )
    async def cancel(self, task_id: str) -> Task:
        """End the task ``canceled`` and refund its bounty to the funder (not once it is in review: the gate
        decides then). Canceling a canceled task is a replay."""
        check_task_id(task_id)

        def decide(state: _State, now: float) -> _State | None:
            if state.task.status == "canceled":
                return None
            check_transition(state.task.id, state.task.status, "canceled", "cancel")
            return state.with_task(
                status="canceled", outcome="canceled", completed_at=_at(now), updated_at=_at(now), lease_expires_at=None
            )

        state, changed = await self._move(task_id, decide)
        if not changed:
            await self._settle(state.task)
        return state.task

    @operation(
        ADMIN, tool="task_sweep", wire=Wire(summary="Expire due tasks and retry unfinished settlements (tasks:admin)")
    )
    async def sweep(self, *, limit: int = LIST_LIMIT_MAX) -> int:
        """Look at the ``limit`` oldest tasks of each status: end every unclaimed task past its ``expires_in_s``,
        publish every message a transition still owes the bus, settle every finished task again (moves nothing
        already moved), complete or free creates that stopped while funding (``FUNDING_S_MAX``), and purge the
        oldest finished tasks beyond ``TASKS_FINISHED_MAX`` (their ledger transfers stay). Returns how many tasks
        it looked at."""
        _check_int(limit, "limit", 1, LIST_LIMIT_MAX)
        looked = 0
        for status in STATUSES:
            for record in await self._store.records(self.tenant, status, limit):
                looked += 1
                state = _State.parse(record)
                if state.funding is not None:
                    await self._sweep_reservation(record, state)
                    continue
                task = await self._fresh(record)
                if task is not None and task.status in TERMINAL:
                    await self._settle(task)
        await self._purge(limit)
        return looked

    async def _sweep_reservation(self, record: TaskRecord, state: _State) -> None:
        """A create stopped between reserving and funding: complete it if the money moved, else free the slot
        once ``FUNDING_S_MAX`` passed (or at once if the funding was refused)."""
        found = await self._transfer(str(state.funding))
        if found is not None and found.status == "ok":
            await self._complete_funding(record, state)
        elif found is not None or await self._store.now() - record.created_at > FUNDING_S_MAX:
            await self._store.delete(self.tenant, record)

    async def _purge(self, limit: int) -> None:
        """Remove the oldest finished tasks beyond ``TASKS_FINISHED_MAX`` (at most ``limit``), each settled first
        and with nothing owed to the bus; ledger transfers are never touched."""
        excess = min(await self._store.finished_count(self.tenant) - TASKS_FINISHED_MAX, limit)
        if excess <= 0:
            return
        found = [r for s in sorted(TERMINAL) for r in await self._store.records(self.tenant, s, excess)]
        for record in sorted(found, key=lambda r: (r.created_at, r.id))[:excess]:
            state = _State.parse(record)
            if state.outbox:
                await self._flush(record, state)  # purged by a later sweep, once the bus has its messages
                continue
            await self._settle(state.task)
            await self._store.delete(self.tenant, record)

    # -- the machinery ------------------------------------------------------------------------------------------

    async def _move(self, task_id: str, decide: Decide, audit: AuditDraft | None = None) -> tuple[_State, bool]:
        """Decide on the stored task and write the decision if the task did not change meanwhile; then settle and
        publish. Returns the task and whether it changed (False: a replay or a read). ``audit``: the decision's
        record, written with it (not with an expiry decided first)."""
        for _ in range(SWAP_TRIES_MAX):
            record, now = await self._store.load(self.tenant, task_id)
            if record is None:
                raise TaskNotFound(f"no task {task_id}", details={"task_id": task_id})
            state = _State.parse(record)
            if state.funding is not None:
                raise TaskNotFound(f"no task {task_id} (its create is funding it)", details={"task_id": task_id})
            expired = self._expired(state, record, now)
            new = expired or decide(state, now)
            if new is None:
                if state.outbox:
                    await self._flush(record, state)  # a transition whose publisher stopped before the bus had it
                return state, False
            # the messages are owed in the same write as the transition, so a crash cannot lose them
            owed = self._messages(state.task, new.task)
            self._check_messages(owed)  # a transition whose messages the bus would refuse writes nothing
            new = replace(new, outbox=(*state.outbox, *owed))
            written = new.record(record.rev + 1, record.created_at)
            with _by_kernel(expired is not None):  # an expiry is the kernel's act, not the caller's who found it due
                draft = audit if expired is None else self._expiry_record(state.task, expired.task)
                stepped = draft is not None and self._store.audits_writes
                if await self._store.swap(self.tenant, record, written, **({"audit": draft} if stepped else {})):
                    if draft is not None and self.audit is not None:
                        await self.audit.append(draft, stepped=stepped)
                    if new.task.status in TERMINAL:
                        await self._settle(new.task)
                    await self._flush(written, new)
                    if new.task.outcome == "expired" and state.task.outcome != "expired":
                        continue  # the expiry was this call's side effect; now decide on the ended task
                    return new, True
        raise BackendFailure(f"task {task_id} changed under {SWAP_TRIES_MAX} decisions in a row; retry")

    def _expiry_record(self, old: Task, new: Task) -> AuditDraft | None:
        """The audit record of an expiry, by the kernel: the task, its move and the refund it owes (if any)."""
        if self.audit is None:
            return None
        refund = f"task:{old.id}:refund" if old.bounty and old.funded_by is not None else None
        details = {"id": old.id, "from": old.status, "to": new.status, "outcome": new.outcome, "refund": refund}
        return self.audit.draft(
            "operation", actor=KERNEL_ACTOR, action="tasks.expire", resource=old.id, details=details
        )

    @staticmethod
    def _expired(state: _State, record: TaskRecord, now: float) -> _State | None:
        task = state.task
        if task.expires_in_s is None or task.attempt or task.status not in ("backlog", "queued"):
            return None
        if now < record.created_at + task.expires_in_s:
            return None
        check_transition(task.id, task.status, "canceled", "expire")
        return state.with_task(status="canceled", outcome="expired", completed_at=_at(now), updated_at=_at(now))

    async def _flush(self, record: TaskRecord, state: _State) -> None:
        """Publish what the task owes the bus, then clear it from the record (a re-publish is deduplicated by the
        bus: each id was fixed when the outbox was written). A stored message the bus refuses (written before
        messages were checked with their transition) is dropped with an audit record, so it cannot make every
        later read of the task fail."""
        if not state.outbox:
            return
        await self._publish([m for m in state.outbox if await self._publishable(record.id, m)])
        sent = {m.get("message_id") for m in state.outbox}
        for _ in range(SWAP_TRIES_MAX):
            left = tuple(m for m in state.outbox if m.get("message_id") not in sent)
            if len(left) == len(state.outbox):
                return  # another caller cleared them
            if await self._store.swap(
                self.tenant, record, replace(state, outbox=left).record(record.rev + 1, record.created_at)
            ):
                return
            found, _ = await self._store.load(self.tenant, record.id)
            if found is None:
                return
            record, state = found, _State.parse(found)

    async def _settle(self, task: Task) -> None:
        """Pay out (done) or refund (failed, canceled) the bounty; fixed ids make a repeat move nothing. An expired
        task's refund is the kernel's act, whoever's call settles it."""
        if task.bounty == 0 or task.funded_by is None:
            return
        with _by_kernel(task.outcome == "expired"):
            await self._settle_bounty(task, task.funded_by)

    async def _settle_bounty(self, task: Task, funded_by: str) -> None:
        prefix = f"task:{task.id}"
        if task.status != "done":
            await self._ledger.transfer(
                id=f"{prefix}:refund",
                debit=ESCROW_ACCOUNT,
                credit=funded_by,
                amount=task.bounty,
                currency=task.currency,
                reason=f"bounty of task {task.id} refunded ({task.outcome})",
            )
            return
        approvers = [
            r.reviewer for r in task.reviews if (r.attempt, r.round, r.verdict) == (task.attempt, task.round, "approve")
        ]
        parts = split_bounty(task.bounty, task.reviewer_fee, approvers)
        batch = []
        for who, amount in parts.items():
            owner = who or str(task.assignee)
            await self._open(owner, task.currency)
            if amount > 0:
                batch.append(
                    {
                        "id": f"{prefix}:fee:{who}" if who else f"{prefix}:payout",
                        "debit": ESCROW_ACCOUNT,
                        "credit": owner,
                        "amount": amount,
                        "currency": task.currency,
                        "reason": f"task {task.id} {'review fee' if who else 'bounty'} (attempt {task.attempt})",
                    }
                )
        if batch:
            await self._ledger.transfer_many(batch)

    # -- messages -----------------------------------------------------------------------------------------------

    def _check_messages(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Refuse messages the bus would refuse, with its own check (schema, encoding, ``message_bytes_max``):
        SOS-4001/4005/4010, raised before the change that owes them is written."""
        limit = self._bus.limits.message_bytes_max
        for message in messages:
            try:
                _, data = self._bus.catalogue.parse_encoded(message)
            except SOSError:
                raise
            except (TypeError, ValueError) as exc:  # an encoder's refusal (UnicodeError is a ValueError)
                raise InvalidArgument(
                    f"the {message.get('type')} message of this change cannot be encoded ({type(exc).__name__})"
                ) from None
            if len(data) > limit:
                raise LimitExceeded(
                    f"the {message.get('type')} message of this change is {len(data)} bytes, over {limit}",
                    details={"limit": "message_bytes_max", "max": limit, "size": len(data)},
                )

    async def _publishable(self, task_id: str, message: Mapping[str, Any]) -> bool:
        """Whether a stored message passes :meth:`_check_messages`; if not, its drop is audited."""
        try:
            self._check_messages([message])
        except SOSError as exc:
            if self.audit is not None:
                details = {"id": task_id, "message_id": _safe(message.get("message_id")), "code": exc.code}
                draft = self.audit.draft(
                    "operation",
                    actor="kernel",
                    action="tasks.message_dropped",
                    resource=task_id,
                    outcome="error",
                    details={**details, "type": _safe(message.get("type"))},
                )
                await self.audit.append(draft, stepped=False)
            return False
        return True

    def _envelope(self, type: str, payload: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
        """A kernel message; its id is fresh (UUIDv7) so no agent can publish it first (the bus drops a repeat)."""
        return {
            "type": type,
            "source": KERNEL_SOURCE,
            "target": TASKS_CHANNEL,
            "timestamp": datetime.now(UTC).isoformat(),
            "version": "1.0",
            "message_id": message_id or new_message_id(),
            "payload": payload,
        }

    def _created_message(self, task: Task) -> dict[str, Any]:
        payload: dict[str, Any] = {"task_id": task.id, "title": task.title, "priority": task.priority}
        if task.description:
            payload["description"] = task.description
        if task.bounty:
            payload["bounty_cents"] = task.bounty // 10_000
        return self._envelope("task_created", payload)

    def _messages(self, old: Task, new: Task) -> list[dict[str, Any]]:
        """The messages of the transition ``old -> new``, each with a fresh id (stored with them in the outbox)."""
        out: list[dict[str, Any]] = []
        payload: dict[str, Any]
        tid = new.id
        if new.attempt != old.attempt:
            payload = {
                "task_id": tid,
                "claimed_at": _iso(new.updated_at),
                "claim_expires_at": _iso(new.lease_expires_at),
            }
            out.append(self._envelope("task_claimed", payload))
        if new.round != old.round:
            for item in new.evidence:
                payload = {**item, "subject_ref": item.get("subject_ref") or f"task:{tid}"}
                out.append(self._envelope("evidence", payload))
        if new.status == "blocked" and old.status != "blocked" and new.blocker is not None:
            blocker_id = new_message_id()
            payload = {"blocker_id": blocker_id, "task_id": tid, "reason": new.blocker["reason"], "severity": "medium"}
            if new.blocker["on"]:
                payload["blocked_on"] = new.blocker["on"]
            out.append(self._envelope("blocker", payload, blocker_id))
        for review in new.reviews[len(old.reviews) :]:
            payload = {
                "subject_ref": f"task:{tid}",
                "verdict": review.verdict,
                "reasons": review.reasons,
                "reviewer": review.reviewer,
                "gate": "tasks",
                "decided_at": _iso(review.decided_at),
            }
            out.append(self._envelope("gate_verdict", payload))
        if new.status in TERMINAL and old.status not in TERMINAL:
            status = "timeout" if new.outcome == "expired" else _COMPLETED[new.status]
            payload = {"task_id": tid, "status": status, "completed_at": _iso(new.completed_at)}
            if new.result and _utf8(new.result):  # a result stored before results were checked may have none
                payload["result"] = new.result
            out.append(self._envelope("task_completed", payload))
        return out

    async def _publish(self, messages: builtins.list[Mapping[str, Any]]) -> None:
        step = self._bus.limits.batch_max  # an outbox may hold more than one publish_many takes
        for start in range(0, len(messages), step):
            await self._bus.publish_many(messages[start : start + step])

    # last in the class: its name shadows the builtin in the class body
    @operation(
        "tasks:read", tool="task_list", wire=Wire("GET", summary="Tasks, oldest first, optionally of one status")
    )
    async def list(self, status: str | None = None, *, limit: int = 100) -> builtins.list[Task]:
        """Up to ``limit`` (1..1000) tasks, oldest first; ``status`` filters by one SOS status."""
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        _check_int(limit, "limit", 1, LIST_LIMIT_MAX)
        records = await self._store.records(self.tenant, status, limit)
        return [t for t in [await self._fresh(r) for r in records] if t is not None]


@contextlib.contextmanager
def _by_kernel(on: bool) -> Iterator[None]:
    """While ``on``, the audit actor is the kernel (``KERNEL_ACTOR``): what follows is an automatic transition or
    its settlement, not the act of the call that found it due."""
    token = act_as(KERNEL_ACTOR) if on else None
    try:
        yield
    finally:
        if token is not None:
            done_acting(token)


def _ts(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _utf8(value: Any) -> bool:
    """Whether ``value`` has a UTF-8 JSON form (what the bus stores)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except (TypeError, ValueError):
        return False
    return True


def _safe(value: Any) -> str:
    """``value`` as text an audit record can carry (lone surrogates escaped, cut to 100 characters)."""
    return str(value).encode("utf-8", "backslashreplace").decode()[:100]


def _share_full(creator: str | None) -> LimitExceeded:
    limit = TASKS_OPEN_PER_CREATOR_MAX
    return LimitExceeded(
        f"{creator} already created {limit} open tasks (TASKS_OPEN_PER_CREATOR_MAX, a share of TASKS_OPEN_MAX "
        f"{TASKS_OPEN_MAX}); nothing was written",
        details={"limit": "TASKS_OPEN_PER_CREATOR_MAX", "value": limit},
    )
