"""The governance service: a tenant's policy, its budgets and its approvals, enforced in the one guard.

Governance is opt-in per tenant: a tenant without a policy works as before (its sessions are held to their scopes
only). ``set_policy`` turns it on, and from then on every operation of that tenant's sessions is checked against
the policy in the guard, after the scope checks, in-process and remote alike: **an action no rule allows is
refused** (SOS-5004, naming the policy and the missing rule). Removing the policy needs ``governance:admin``.
``governed(fn, ...)`` tools are stricter: with no policy they are refused (default deny).

The operations of ``governance`` and ``audit`` themselves are held to their scopes, not to the policy, so a policy
can never lock the tenant's admin out of changing it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn

import anyio
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from ..audit import AUDITED_OPERATIONS, SELF_RECORDING, STEP_RECORDED, Audit, AuditDraft, act_as, done_acting
from ..errors import Forbidden, InvalidArgument, NotFound
from ..identity.models import Principal
from ..operations import SPEND_HELD, Operation, Wire, operation, service
from .policy import CompiledPolicy, Decision, Limit, blocked_content, compile_policy, load_policy, scan_texts
from .store import Charge, GovernanceStore

__all__ = [
    "APPROVALS_PENDING_MAX",
    "APPROVALS_PENDING_PER_AGENT_MAX",
    "APPROVAL_ARGUMENTS_CHARS_MAX",
    "APPROVAL_ARGUMENT_CHARS_MAX",
    "APPROVAL_POLL_S",
    "GOVERNANCE_CHANNEL",
    "POLICY_CACHE_TTL_S",
    "Approval",
    "Budget",
    "Governance",
    "Governor",
    "PolicyCache",
    "PolicyCheck",
    "PolicyInfo",
    "held_budget",
    "shown_arguments",
]

POLICY_CACHE_TTL_S = 1.0
"""How long a process keeps a tenant's compiled policy before reading it again (a change made in this process
applies at once; one made by another process within this time)."""
APPROVALS_PENDING_MAX = 100
"""Pending approvals per tenant; a request beyond it is refused."""
APPROVALS_PENDING_PER_AGENT_MAX = 10
"""Pending approvals one agent may have waiting, so one agent cannot take the tenant's ``APPROVALS_PENDING_MAX``
(checked before the request is stored: requests racing from one agent can pass it by the number racing; the
tenant's bound is atomic in the store)."""
APPROVAL_ARGUMENT_CHARS_MAX = 512
"""The longest JSON an approval shows of one argument of the call it holds: a longer one is shown as its JSON text
cut to this many characters, ending ``…``."""
APPROVAL_ARGUMENTS_CHARS_MAX = 8192
"""The most JSON an approval shows of the call's arguments in all: the arguments past it are left out and named
under ``"…"``."""
SECRET_ARGUMENT_RE = re.compile(
    r"secret|passw|passphrase|pwd|api[_-]?key|private[_-]?key|signing[_-]?key|credential|auth(?!or(?!i))|bearer|cookie"
    r"|session|dsn|jwt|(^|[_-])token\Z|^key\Z",
    re.IGNORECASE,
)
"""Names an approval never shows the value of (it is ``REDACTED``), at any depth of an argument: a top-level
argument, a key of a mapping, the name of a name/value pair (``[["Authorization", "..."]]``,
``{"name": "Authorization", "value": "..."}``) or of a ``"Name: value"`` header line. A task's ``claim_token`` among
the operations, and any such argument of a governed tool (``headers.Authorization``, ``config.api_key``, ``auth``,
``private_key``, ``passphrase``, ``pwd``, ``dsn``, ``cookie``...); ``author`` and ``public_key`` are shown."""
SECRET_VALUE_RE = re.compile(r"\A\s*(bearer|basic)\s", re.IGNORECASE)
"""Values an approval never shows, whatever their name: an HTTP credential (``Bearer …``, ``Basic …``)."""
APPROVAL_ARGUMENT_DEPTH_MAX = 32
"""The deepest an approval looks into an argument for secrets: anything deeper is ``REDACTED``, unread."""
REDACTED = "<redacted>"
APPROVAL_POLL_S = 0.05
"""How often a call waiting for approval looks for the verdict."""
GOVERNANCE_CHANNEL = "sos:channel:governance"
"""Where approval requests and verdicts (``gate_verdict``) are published."""
EXEMPT_SERVICES = frozenset({"governance", "audit"})
LEDGER_WRITES = frozenset(
    {"ledger.transfer", "ledger.transfer_many", "ledger.hold", "ledger.capture", "ledger.void", "ledger.transmute"}
)
"""Operations whose record the ledger writes itself (``ledger.write``, in the transfer's own transaction on
SQLite), so the guard adds none."""
RESOURCE_ARGUMENTS = (
    "target",
    "credit",
    "address",
    "name",
    "owner",
    "skill_id",
    "hold_id",
    "to",
    "provider",
    "provider_id",
    "task_id",
    "namespace",
)
"""The arguments that name an operation's resource, first present wins."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyInfo(_Frozen):
    """A stored policy: its document's name and version, the store's revision, and the document's SHA-256."""

    tenant: str
    name: str
    version: int
    revision: int
    digest: str


class PolicyCheck(_Frozen):
    """What the policy says about an action (``effect``; ``rule`` is ``None`` when no rule allows it)."""

    effect: Literal["allow", "deny", "require_approval"]
    rule: str | None
    reason: str
    policy: str | None


class Approval(_Frozen):
    """A call waiting for a reviewer: ``state`` is ``pending``, ``approved``, ``denied`` or ``expired``.

    ``arguments`` are the call's arguments as the guard bound them (ids already in the caller's namespace), so the
    reviewer sees what is approved (the amount, the accounts): each shown as JSON of at most
    ``APPROVAL_ARGUMENT_CHARS_MAX`` characters, at most ``APPROVAL_ARGUMENTS_CHARS_MAX`` in all, secrets
    (``SECRET_ARGUMENT_RE``) redacted. The approval lets only this one call proceed."""

    id: str
    tenant: str
    agent: str | None
    action: str
    resource: str | None
    rule: str | None
    state: Literal["pending", "approved", "denied", "expired"]
    created_at: datetime
    expires_at: datetime
    reviewer: str | None = None
    reason: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)


class PolicyCache:
    """Compiled policies by tenant, shared by a kernel's tenant views (see ``POLICY_CACHE_TTL_S``)."""

    def __init__(self, ttl_s: float = POLICY_CACHE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._found: dict[str, tuple[float, CompiledPolicy | None]] = {}

    def get(self, tenant: str) -> tuple[bool, CompiledPolicy | None]:
        hit = self._found.get(tenant)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, tenant: str, compiled: CompiledPolicy | None) -> None:
        self._found[tenant] = (time.monotonic() + self.ttl_s, compiled)

    def forget(self, tenant: str) -> None:
        self._found.pop(tenant, None)


def _document(policy: Any) -> str:
    return load_policy(policy).model_dump_json()


async def _review_rule(caller: Any, governance: Governance, arguments: dict[str, Any]) -> Approval:
    """A reviewer listed in the policy decides (as itself); ``governance:admin`` may decide as any reviewer. No one
    decides an approval they requested, admin included (an agentless token decides no agentless request)."""
    principal: Principal = caller.principal
    decide = governance.approve if arguments.get("verdict", "approve") == "approve" else governance.deny
    requested = await governance._approval(arguments["id"])
    if requested is not None and requested.agent == principal.agent:
        caller.deny("may not decide an approval it requested", approval=arguments["id"], agent=principal.agent)
    if not principal.allows("governance:admin"):
        compiled = await governance.compiled()
        if compiled is None or not compiled.may_review(principal.agent):
            caller.deny("is not a reviewer of the tenant's policy", agent=principal.agent)
        arguments["reviewer"] = principal.agent
    elif arguments.get("reviewer") is None:
        arguments["reviewer"] = principal.agent or "admin"
    caller.unreserved("agent", "reviewer", arguments["reviewer"])
    return await decide(arguments["id"], arguments.get("reason", ""), reviewer=arguments["reviewer"])


async def _approve_rule(caller: Any, governance: Governance, arguments: dict[str, Any]) -> Approval:
    return await _review_rule(caller, governance, {**arguments, "verdict": "approve"})


async def _deny_rule(caller: Any, governance: Governance, arguments: dict[str, Any]) -> Approval:
    return await _review_rule(caller, governance, {**arguments, "verdict": "deny"})


@service("governance")
class Governance:
    """The governance API of one tenant: ``kernel.governance`` or ``kernel.tenant(slug).governance``."""

    def __init__(
        self,
        store: GovernanceStore,
        tenant: str,
        audit: Audit,
        cache: PolicyCache,
        notify: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self.tenant = tenant
        self._audit = audit
        self._cache = cache
        self._notify = notify
        self.loop_token: Any = None
        """The kernel's event loop (set when it opens): where governed sync tools run their checks."""

    async def compiled(self, tenant: str | None = None) -> CompiledPolicy | None:
        """The tenant's compiled policy (``None``: governance is off for it), cached ``POLICY_CACHE_TTL_S``."""
        slug = tenant or self.tenant
        hit, compiled = self._cache.get(slug)
        if hit:
            return compiled
        found = await self._store.get_policy(slug)
        compiled = None if found is None else compile_policy(json.loads(found[1]), found[0])
        self._cache.put(slug, compiled)
        return compiled

    @operation("governance:admin", tenant=("tenant",), wire=Wire(keyed=True, summary="Set the tenant's policy"))
    async def set_policy(self, tenant: str, policy: dict[str, Any] | str) -> PolicyInfo:
        """Replace ``tenant``'s policy with ``policy`` (a dict in the documented format, or its JSON, YAML or TOML
        text, read by ``load_policy``; see ``sos_kernel.governance.policy``). From now on every operation of its
        sessions is checked against it, and an action no rule allows is refused. Raises SOS-4001 for an invalid
        document, SOS-4010 for one too large."""
        if not isinstance(tenant, str):
            raise InvalidArgument("tenant is a str")
        document = _document(policy)
        parsed = load_policy(json.loads(document))
        digest = hashlib.sha256(document.encode()).hexdigest()
        draft = self._audit.draft(
            "policy.set",
            actor="kernel",
            action="governance.set_policy",
            resource=f"policy:{parsed.name}",
            details={"version": parsed.version, "digest": digest},
        )
        revision = await self._store.put_policy(tenant, document, **self._step(draft))
        self._cache.forget(tenant)
        info = PolicyInfo(tenant=tenant, name=parsed.name, version=parsed.version, revision=revision, digest=digest)
        if not self._store.audits_writes:  # the store adds the revision to the record it appends
            draft = draft.model_copy(update={"details": {**draft.details, "revision": revision}})
        await self._recorded(draft, tenant)
        return info

    def _step(self, draft: AuditDraft) -> dict[str, Any]:
        """The ``audit`` argument of a store write: the record, when the store appends it in the write's step."""
        return {"audit": draft} if self._store.audits_writes else {}

    async def _recorded(self, draft: AuditDraft, tenant: str | None = None) -> None:
        """After an effect: its record, unless the store appended it in the effect's own step."""
        await self._audit.append(draft, stepped=self._store.audits_writes, tenant=tenant)

    @operation("governance:read", tenant=("tenant",), wire=Wire("GET", summary="The tenant's policy"))
    async def get_policy(self, tenant: str) -> dict[str, Any] | None:
        """``tenant``'s policy document as stored, or ``None`` when it has none (governance off)."""
        found = await self._store.get_policy(tenant)
        return None if found is None else dict(json.loads(found[1]))

    @operation("governance:admin", tenant=("tenant",), wire=Wire(keyed=True, summary="Remove the tenant's policy"))
    async def remove_policy(self, tenant: str) -> bool:
        """Remove ``tenant``'s policy (governance off again); False when it had none."""
        draft = self._audit.draft("policy.removed", actor="kernel", action="governance.remove_policy")
        removed = await self._store.delete_policy(tenant, **self._step(draft))
        self._cache.forget(tenant)
        if removed:
            await self._recorded(draft, tenant)
        return removed

    @operation("governance:read", wire=Wire("GET", summary="What the policy says about an action"))
    async def check(self, action: str, resource: str | None = None, agent: str | None = None) -> PolicyCheck:
        """The policy's decision for ``action`` on ``resource`` by ``agent``, without acting or counting."""
        compiled = await self.compiled()
        if compiled is None:
            return PolicyCheck(effect="allow", rule=None, reason="the tenant has no policy", policy=None)
        decision = compiled.decide(action, resource, agent, frozenset())
        return PolicyCheck(
            effect=decision.effect, rule=decision.rule, reason=decision.reason, policy=compiled.policy.name
        )

    @operation("governance:read", wire=Wire("GET", summary="Approvals waiting for a reviewer"))
    async def pending(self) -> list[Approval]:
        """The tenant's pending approvals, soonest deadline first."""
        docs = await self._store.list_approvals(self.tenant, time.time())
        return [Approval.model_validate_json(d) for d in docs]

    @operation("governance:review", lift="governance:admin", rule=_approve_rule, wire=Wire(summary="Approve"))
    async def approve(self, id: str, reason: str = "", *, reviewer: str | None = None) -> Approval:
        """Approve pending approval ``id``: the call waiting for it proceeds. SOS-4040 if there is no such
        pending approval (decided, expired or unknown)."""
        return await self._decide(id, "approved", reason, reviewer)

    @operation("governance:review", lift="governance:admin", rule=_deny_rule, wire=Wire(summary="Deny"))
    async def deny(self, id: str, reason: str = "", *, reviewer: str | None = None) -> Approval:
        """Deny pending approval ``id``: the call waiting for it is refused (SOS-5004)."""
        return await self._decide(id, "denied", reason, reviewer)

    async def _decide(
        self, id: str, state: Literal["approved", "denied"], reason: str, reviewer: str | None
    ) -> Approval:
        if not isinstance(id, str) or not isinstance(reason, str) or len(reason) > 500:
            raise InvalidArgument("id is a str; reason a str of at most 500 characters")
        found = await self._store.get_approval(self.tenant, id)
        approval = None if found is None else Approval.model_validate_json(found)
        if approval is None or approval.state != "pending" or approval.expires_at <= datetime.now(UTC):
            raise NotFound(f"no pending approval {id!r}", details={"id": id})
        decided = approval.model_copy(update={"state": state, "reviewer": reviewer or "kernel", "reason": reason})
        draft = self._audit.draft(
            f"approval.{state}",
            actor=decided.reviewer or "kernel",
            action=approval.action,
            resource=approval.resource or "",
            outcome=state,
            details={"approval": id, "reason": reason},
        )
        if not await self._store.decide_approval(self.tenant, id, decided.model_dump_json(), **self._step(draft)):
            raise NotFound(f"no pending approval {id!r} (decided or expired meanwhile)", details={"id": id})
        await self._recorded(draft)
        await self._publish("gate_verdict", _verdict(decided))
        return decided

    async def _approval(self, id: Any) -> Approval | None:
        found = await self._store.get_approval(self.tenant, id) if isinstance(id, str) else None
        return None if found is None else Approval.model_validate_json(found)

    async def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        if self._notify is not None:
            await self._notify(kind, payload)

    # -- enforcement: called by the guard (Governor) and by governed tools -----------------------------------------

    async def enforce(
        self,
        *,
        action: str,
        resource: str | None,
        agent: str | None,
        scopes: frozenset[str],
        deny: Callable[..., NoReturn],
        texts: Iterable[str] = (),
        tokens: int = 0,
        spend_micros: int = 0,
        required: bool = False,
        also: Iterable[str | None] = (),
        arguments: Callable[[], dict[str, Any]] | None = None,
    ) -> Decision | None:
        """Check one action against the tenant's policy, wait for approval if a rule says so, and count it against
        its limits; ``deny(reason, **details)`` refuses. With no policy: ``None``, unless ``required``. ``also``
        names more resources the action acts on (a batch's accounts): each must be allowed as ``resource`` is.
        ``arguments`` gives the call's arguments as an approval shows them (:func:`shown_arguments`)."""
        compiled = await self.compiled()
        if compiled is None:
            if required:
                deny(f"tenant {self.tenant!r} has no policy: governed actions are denied by default", action=action)
            return None
        name = compiled.policy.name
        try:
            decision = compiled.decide(action, resource, agent, scopes)
            for more in also:  # a refusal, or else an approval, on any resource decides the call
                other = compiled.decide(action, more, agent, scopes)
                if decision.effect != "deny" and other.effect != "allow" and other.effect != decision.effect:
                    decision, resource = other, more
        except InvalidArgument as exc:
            deny(f"policy {name!r}: {exc.message}", policy=name, action=str(action)[:200])
        where = {"policy": name, "rule": decision.rule, "action": action, "resource": resource}
        if decision.effect == "deny":
            deny(decision.reason, **where)
        blocked = blocked_content(decision, texts)
        if blocked in ("content-too-long", "content-too-large"):
            reason = f"policy {name!r}: the call's arguments are beyond what a content check scans ({blocked})"
            deny(reason, **{**where, "rule": blocked})
        if blocked is not None:
            deny(f"content rule {blocked!r} of policy {name!r} blocks this text", **{**where, "rule": blocked})
        if decision.effect == "require_approval":
            shown = arguments() if arguments is not None else {}
            await self._wait_for_approval(compiled, decision, action, resource, agent, deny, shown)
        await self._charge(compiled, decision.limits, agent, tokens, spend_micros, deny, where)
        return decision

    async def _charge(
        self,
        compiled: CompiledPolicy,
        limits: tuple[Limit, ...],
        agent: str | None,
        tokens: int,
        spend: int,
        deny: Callable[..., NoReturn],
        where: dict[str, Any],
    ) -> None:
        if not limits:
            return
        charges = self._charges(compiled, limits, agent, 1, tokens, spend)
        over = await self._store.consume(self.tenant, [c for _, _, c in charges], time.time())
        if over >= 0:
            self._refuse(compiled, charges[over], deny, where)

    @staticmethod
    def _charges(
        compiled: CompiledPolicy, limits: tuple[Limit, ...], agent: str | None, calls: int, tokens: int, spend: int
    ) -> list[tuple[Limit, str, Charge]]:
        """What one call counts against each limit that sets a maximum, in the limits' current windows."""
        now = time.time()
        charges: list[tuple[Limit, str, Charge]] = []
        for li in limits:
            window = int(now // li.window_s)
            who = "*" if li.per == "tenant" else (agent or "-")
            end = (window + 1) * li.window_s
            for what, amount, most in (
                ("calls", calls, li.calls_max),
                ("tokens", tokens, li.tokens_max),
                ("spend", spend, li.spend_micros_max),
            ):
                if most is not None:
                    key = f"{compiled.revision}:{li.id}:{who}:{what}:{window}"
                    charges.append((li, what, Charge(key, amount, most, float(end))))
        return charges

    @staticmethod
    def _refuse(
        compiled: CompiledPolicy,
        charge: tuple[Limit, str, Charge],
        deny: Callable[..., NoReturn],
        where: dict[str, Any],
    ) -> NoReturn:
        li, what, c = charge
        deny(
            f"limit {li.id!r} of policy {compiled.policy.name!r}: {what} over {c.maximum} per {li.window_s} s",
            **{**where, "rule": li.id, "limit": what},
        )

    async def _wait_for_approval(
        self,
        compiled: CompiledPolicy,
        decision: Decision,
        action: str,
        resource: str | None,
        agent: str | None,
        deny: Callable[..., NoReturn],
        arguments: dict[str, Any],
    ) -> None:
        created = datetime.now(UTC)
        timeout_s = compiled.policy.approval_timeout_s
        approval = Approval(
            id="apr-" + secrets.token_hex(8),
            tenant=self.tenant,
            agent=agent,
            action=action,
            resource=resource,
            rule=decision.rule,
            state="pending",
            created_at=created,
            expires_at=created + timedelta(seconds=timeout_s),
            arguments=arguments,
        )
        where = {"policy": compiled.policy.name, "rule": decision.rule, "approval": approval.id}
        waiting = [Approval.model_validate_json(d) for d in await self._store.list_approvals(self.tenant, time.time())]
        if sum(1 for a in waiting if a.agent == agent) >= APPROVALS_PENDING_PER_AGENT_MAX:
            deny(f"{agent or 'this token'} already has {APPROVALS_PENDING_PER_AGENT_MAX} pending approvals", **where)
        draft = self._audit.draft(
            "approval.requested",
            actor=agent or "-",
            action=action,
            resource=resource or "",
            outcome="pending",
            details={"approval": approval.id, "rule": decision.rule},
        )
        stored = await self._store.put_approval(
            self.tenant,
            approval.id,
            approval.model_dump_json(),
            approval.expires_at.timestamp(),
            APPROVALS_PENDING_MAX,
            time.time(),
            **self._step(draft),
        )
        if not stored:
            deny(f"the tenant already has {APPROVALS_PENDING_MAX} pending approvals", **where)
        await self._recorded(draft)
        # the tenant's channel announces the request; its arguments are for reviewers (governance:read) only
        await self._publish("approval", approval.model_dump(mode="json", exclude={"arguments"}))
        final = await self._await_verdict(approval, timeout_s)
        if final.state != "approved":
            deny(f"approval {approval.id} was {final.state} ({final.reason or 'no reason given'})", **where)

    async def _await_verdict(self, approval: Approval, timeout_s: float) -> Approval:
        with anyio.move_on_after(timeout_s):
            while True:
                found = await self._store.get_approval(self.tenant, approval.id)
                current = Approval.model_validate_json(found) if found else approval
                if current.state != "pending":
                    return current
                await anyio.sleep(APPROVAL_POLL_S)
        expired = approval.model_copy(update={"state": "expired", "reason": "timed out"})
        draft = self._audit.draft(
            "approval.expired",
            actor="kernel",
            action=approval.action,
            resource=approval.resource or "",
            outcome="expired",
            details={"approval": approval.id},
        )
        if await self._store.decide_approval(self.tenant, approval.id, expired.model_dump_json(), **self._step(draft)):
            await self._recorded(draft)
            return expired
        found = await self._store.get_approval(self.tenant, approval.id)  # decided as it timed out
        return Approval.model_validate_json(found) if found else expired


def _verdict(a: Approval) -> dict[str, Any]:
    return {
        "subject_ref": f"approval:{a.id}",
        "verdict": "approve" if a.state == "approved" else "reject",
        "reasons": [] if a.state == "approved" else [a.reason or a.state],
        "reviewer": a.reviewer or "kernel",
    }


def _declared(arguments: Any, path: str) -> list[Any]:
    """The values at ``path``: an argument's name, or ``<list>[].<field>`` for that field of each item."""
    name, _, field = path.partition("[].")
    if name not in arguments:
        return []
    value = arguments.get(name)
    if not field:
        return [value]
    if not isinstance(value, list | tuple):
        return []  # the service refuses what is not a batch
    return [item.get(field) if isinstance(item, Mapping) else None for item in value]


def _spend(op: Operation, arguments: Any) -> int:
    """The micros a call can move, as its operation declares (``spend``); what is not an int the service refuses."""
    values = (v for path in op.spend for v in _declared(arguments, path))
    return sum(v for v in values if type(v) is int and v > 0)


def _resources(op: Operation, arguments: Any) -> list[str | None]:
    """Every resource a call acts on, as its operation declares (``resource``); else the first of
    ``RESOURCE_ARGUMENTS`` present. Never empty (``[None]``: it names none)."""
    if not op.resource:
        return [_resource(arguments)]
    found = [v for path in op.resource for v in _declared(arguments, path) if isinstance(v, str)]
    return list(dict.fromkeys(found)) or [None]


def _resource(arguments: Any) -> str | None:
    for name in RESOURCE_ARGUMENTS:
        if name in arguments:
            value = arguments.get(name)
            if isinstance(value, str):
                return value
    return None


_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {}


def _parameters(op: Operation) -> tuple[str, ...]:
    names = _PARAMETERS.get((op.service, op.name))
    if names is None:
        names = _PARAMETERS[(op.service, op.name)] = tuple(op.signature.parameters)
    return names


def _texts(op: Operation, arguments: Any) -> Iterator[str]:
    """Every string of every argument of the call, read lazily (only a content rule reads them)."""
    return scan_texts(arguments.get(n) for n in _parameters(op) if n in arguments)


def shown_arguments(arguments: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A call's ``(name, value)`` arguments as an approval shows them: JSON values, each at most
    ``APPROVAL_ARGUMENT_CHARS_MAX`` characters of JSON (else that JSON cut, as a string ending ``…``), at most
    ``APPROVAL_ARGUMENTS_CHARS_MAX`` in all (the rest named under ``"…"``), a secret's value ``REDACTED``."""
    shown: dict[str, Any] = {}
    left_out: list[str] = []
    total = 0
    for name, value in arguments:
        if total > APPROVAL_ARGUMENTS_CHARS_MAX:
            left_out.append(name)
            continue
        jsonable = REDACTED if SECRET_ARGUMENT_RE.search(name) else _redacted(_jsonable(value), 0)
        text = json.dumps(jsonable, ensure_ascii=False)
        if len(text) > APPROVAL_ARGUMENT_CHARS_MAX:
            jsonable = text[: APPROVAL_ARGUMENT_CHARS_MAX - 1] + "…"
            text = jsonable
        total += len(name) + len(text)
        if total > APPROVAL_ARGUMENTS_CHARS_MAX:
            left_out.append(name)
            continue
        shown[name] = jsonable
    if left_out:
        shown["…"] = left_out[:64]
    return shown


def _redacted(value: Any, depth: int) -> Any:
    """The JSON ``value`` with every secret (:data:`SECRET_ARGUMENT_RE`, :data:`SECRET_VALUE_RE`) ``REDACTED``."""
    if depth > APPROVAL_ARGUMENT_DEPTH_MAX:
        return REDACTED
    if isinstance(value, str):
        name, colon, _ = value.partition(":")
        secret = SECRET_VALUE_RE.match(value) or (colon and SECRET_ARGUMENT_RE.search(name.strip()))
        return REDACTED if secret else value
    if isinstance(value, dict):
        named = next((value[k] for k in ("name", "key") if isinstance(value.get(k), str)), "")
        if named and "value" in value and SECRET_ARGUMENT_RE.search(named):  # {"name": "Authorization", "value": ...}
            return {**value, "value": REDACTED}
        return {k: REDACTED if SECRET_ARGUMENT_RE.search(str(k)) else _redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        first = value[0] if len(value) == 2 and isinstance(value[0], str) else ":"
        if ":" not in first and SECRET_ARGUMENT_RE.search(first):  # a header pair, not two "Name: value" lines
            return [first, REDACTED]
        return [_redacted(v, depth + 1) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """``value`` as JSON values (models as their fields, bytes in base64); what has no JSON form, by its type."""
    try:
        return to_jsonable_python(value, fallback=lambda v: f"<{type(v).__name__}>", bytes_mode="base64")
    except (ValueError, TypeError, RecursionError):
        return f"<{type(value).__name__}>"


def _result_ids(result: Any) -> dict[str, Any]:
    if isinstance(result, list | tuple):
        ids = [getattr(r, "id", None) for r in result[:100]]
        return {"ids": [i for i in ids if isinstance(i, str)]}
    for name in ("id", "skill_id", "invocation_id", "name"):
        value = getattr(result, name, None)
        if isinstance(value, str):
            return {name: value}
    return {}


class Budget:
    """The spend and token budgets of one guarded call whose operation declares ``SPEND_HELD`` (a chat): the
    service holds its worst case before it acts (:meth:`hold`, refused with SOS-5004 when a limit would pass) and
    gives back what it did not use once the actual is known (:meth:`settle`). Check and count are one atomic step of
    the store, so calls racing from any number of processes never spend past a limit."""

    def __init__(
        self,
        governance: Governance,
        compiled: CompiledPolicy,
        limits: tuple[Limit, ...],
        agent: str | None,
        deny: Callable[..., NoReturn],
        where: dict[str, Any],
    ) -> None:
        self._governance = governance
        self._compiled = compiled
        self._limits = limits
        self._agent = agent
        self._deny = deny
        self._where = where
        self._held: list[tuple[str, Charge]] = []

    async def hold(self, spend_micros: int, tokens: int) -> None:
        """Count ``spend_micros`` and ``tokens`` (the call's most) against every limit of the call's rule."""
        if spend_micros < 0 or tokens < 0:
            raise InvalidArgument("a held budget is never negative")
        g = self._governance
        found = g._charges(self._compiled, self._limits, self._agent, 0, tokens, spend_micros)
        charges = [c for c in found if c[1] != "calls"]  # the guard counted the call itself
        over = await g._store.consume(g.tenant, [c for _, _, c in charges], time.time())
        if over >= 0:
            g._refuse(self._compiled, charges[over], self._deny, self._where)
        self._held = [(what, c) for _, what, c in charges]

    async def settle(self, spend_micros: int, tokens: int) -> None:
        """Keep ``spend_micros`` and ``tokens`` (what the call used, at most what it held) counted and give the rest
        back (once; later calls do nothing)."""
        held, self._held = self._held, []
        used = {"spend": max(spend_micros, 0), "tokens": max(tokens, 0)}
        back = [
            Charge(c.key, -(c.amount - used[what]), c.maximum, c.expires_at)
            for what, c in held
            if used[what] < c.amount
        ]
        if back:
            g = self._governance
            await g._store.consume(g.tenant, back, time.time())


_RECORDED: dict[Any, bool] = {}
"""Whether each operation (by its function: a fixed set) is recorded after its effect: asked on every call."""

_BUDGET: ContextVar[Budget | None] = ContextVar("sos_held_budget", default=None)


def held_budget() -> Budget | None:
    """The budget the running guarded call must hold its spend against (its operation declares ``SPEND_HELD``
    and the tenant's policy limits it); ``None`` for a trusted call or one no limit applies to."""
    return _BUDGET.get()


class Governor:
    """The guard's hook: the policy check before each operation of a session, and its audit record after."""

    def __init__(self, governance: Governance, audit: Audit) -> None:
        self.governance = governance
        self.audit = audit

    def enter(self, principal: Principal) -> Any:
        """Name the session's principal as the actor of the records the call's services write."""
        return act_as(principal.agent or f"token:{principal.token_id}"), _BUDGET.set(None)

    def leave(self, token: Any) -> None:
        """End :meth:`enter`."""
        acting, budget = token
        _BUDGET.reset(budget)
        done_acting(acting)

    async def check(self, caller: Any, op: Operation, arguments: Any) -> None:
        """Refuse (through ``caller.deny``) what the tenant's policy does not allow."""
        if op.service in EXEMPT_SERVICES:
            return
        if not (await self.governance.compiled()):
            return
        principal: Principal = caller.principal
        first, *others = _resources(op, arguments)
        decision = await self.governance.enforce(
            action=f"{op.service}.{op.name}",
            resource=first,
            agent=principal.agent,
            scopes=principal.scopes,
            deny=caller.deny,
            texts=_texts(op, arguments),
            spend_micros=_spend(op, arguments),
            also=others,
            arguments=lambda: shown_arguments((n, arguments.get(n)) for n in _parameters(op) if n in arguments),
        )
        if SPEND_HELD in op.spend and decision is not None and decision.limits:
            compiled = await self.governance.compiled()
            if compiled is not None:
                where = {"policy": compiled.policy.name, "rule": decision.rule, "action": f"{op.service}.{op.name}"}
                _BUDGET.set(Budget(self.governance, compiled, decision.limits, principal.agent, caller.deny, where))

    async def done(self, principal: Principal, op: Operation, arguments: Any, result: Any) -> None:
        """Record a successful security-relevant operation (see ``AUDITED_OPERATIONS``)."""
        action = f"{op.service}.{op.name}"
        if action in STEP_RECORDED:  # the service records it, in the store's own step where the store allows it
            return
        if action in AUDITED_OPERATIONS and op.service not in SELF_RECORDING and action not in LEDGER_WRITES:
            await self.audit.record(
                "operation",
                actor=principal.agent or f"token:{principal.token_id}",
                action=action,
                resource=_resource(arguments) or "",
                details=_result_ids(result),
            )

    def recorded(self, op: Operation) -> bool:
        """Whether a successful call of ``op`` is recorded after its effect (see ``AUDITED_OPERATIONS``): not a
        ledger write, which every store records in the write's own step, so a cancelled caller cannot split them."""
        found = _RECORDED.get(op.function)
        if found is None:
            action = f"{op.service}.{op.name}"
            found = _RECORDED[op.function] = action in AUDITED_OPERATIONS and action not in LEDGER_WRITES
        return found

    async def refused(self, principal: Principal, op: Operation, exc: Forbidden, arguments: Any) -> None:
        """Record a refusal (every one is security-relevant)."""
        details = {k: v for k, v in exc.details.items() if isinstance(v, str | int | None)}
        await self.audit.record(
            "denial",
            actor=principal.agent or f"token:{principal.token_id}",
            action=f"{op.service}.{op.name}",
            resource=_resource(arguments) or "",
            outcome="denied",
            details={"reason": exc.message, **details},
        )
