"""The kernel's tools, transport-neutral: a few curated ones for conversation, and one per declared operation.

A :class:`Tool` is a name, a description, a JSON Schema of its arguments and an async call on a session. The MCP
server (``sos_kernel.mcp``) and the framework adapters (``sos_kernel.integrations.langchain``, ``.crewai``) are all
built on :class:`Toolbox`, so an operation declared on a service in ``SERVICES`` is a tool everywhere, with no glue.

Every tool runs through the session it is given (``Session`` or ``MumegaClient``), so each call passes the guard of
that session's principal: the same scopes, the same ownership checks, the same SOS error codes. :func:`invoke` runs
one and returns its JSON-ready result, or raises an ``SOSError`` (a call its operation's signature refuses is
``InvalidArgument``).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .api import SessionAPI
from .contracts import SendMessage, TypeCatalogue, build_message
from .errors import InvalidArgument, LimitExceeded, WalletNotFound
from .operations import Operation, declared
from .server._routes_ops import SERVICES, Arguments, arguments_schema
from .session import Session
from .tasks import LIST_LIMIT_MAX
from .wire import encode

__all__ = [
    "ASK_TIMEOUT_S_MAX",
    "INBOX_LIMIT_MAX",
    "INBOX_REMOTE_WAIT_S",
    "INBOX_WAIT_S_MAX",
    "STATUS_CURRENCIES",
    "STATUS_TASKS_MAX",
    "Tool",
    "Toolbox",
    "catalogue_of",
    "invoke",
    "session_tools",
]

INBOX_LIMIT_MAX = 100
"""The most messages one ``inbox`` call returns."""
INBOX_WAIT_S_MAX = 60.0
"""The longest an ``inbox`` call waits for a first message."""
ASK_TIMEOUT_S_MAX = 300.0
"""The longest an ``ask`` tool call waits for its reply."""
INBOX_REMOTE_WAIT_S = 1.0
"""The least a remote session's ``inbox`` waits: one long poll, which answers as soon as messages are there."""
STATUS_CURRENCIES = ("USD", "MIND")
"""The currencies ``status`` reports a balance in when not told which."""
STATUS_TASKS_MAX = 50
"""The most open tasks ``status`` lists (oldest first): the agent's claims, then the submissions awaiting its
review."""
_WORKING = ("claimed", "in_progress", "blocked", "review")
_DEFS_REF = "#/$defs/{model}"

Call = Callable[[SessionAPI, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """One tool: its name, description, input schema, the scope it needs to be listed, and its call."""

    name: str
    description: str
    schema: dict[str, Any]
    call: Call
    scope: str | None
    lift: str | None = None
    own: Mapping[str, str] = field(default_factory=dict)

    def listed_for(self, principal_allows: Callable[[str], bool]) -> bool:
        """Whether a principal sees the tool: it holds the scope (and the lift, for admin-only operations)."""
        held = self.scope is None or principal_allows(self.scope)
        return held and (self.lift is None or principal_allows(self.lift))

    def schema_for(self, agent: str | None) -> dict[str, Any]:
        """The input schema, with the caller's own arguments defaulting to its agent (no longer required)."""
        if not self.own or agent is None:
            return self.schema
        schema = copy.deepcopy(self.schema)
        for name in self.own:
            prop = schema["properties"].get(name)
            if prop is not None:
                prop["default"] = agent
                prop["description"] = f"defaults to your own agent, {agent}"
        schema["required"] = [n for n in schema.get("required", []) if n not in self.own]
        return schema


def _obj(required: tuple[str, ...], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _int(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def _me(session: SessionAPI) -> str:
    agent = session.agent
    if agent is None:
        raise InvalidArgument(
            "this token is not bound to an agent: conversational tools act as the token's agent (use the bus_* tools, "
            "which take a source, or a token issued for an agent)"
        )
    return agent


def _take(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = args.get(name)
    if value is None:  # absent or null: the default
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(f"bad argument {name!r}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _bounded(args: dict[str, Any], name: str, default: float, limit: float, what: str) -> float:
    value = _take(args, name, (int, float), default)
    if isinstance(value, bool) or not 0 <= value <= limit:
        raise LimitExceeded(
            f"{name} must be between 0 and {limit} {what}, got {value!r}",
            details={"limit": name, "max": limit},
        )
    return float(value)


def _address(name: str) -> str:
    """``bob`` → ``agent:bob``; full addresses (``agent:``, ``sos:channel:``) unchanged."""
    return name if ":" in name else f"agent:{name}"


# -- curated tools -----------------------------------------------------------------------------------------------


async def _send(session: SessionAPI, args: dict[str, Any]) -> Any:
    me, to, text = _me(session), _take(args, "to", str), _take(args, "text", str)
    if to is None or text is None:
        raise InvalidArgument("send needs 'to' and 'text'")
    options = {k: _take(args, k, str) for k in ("content_type", "reply_to", "correlation_id")}
    message_id = _take(args, "message_id", str)
    if message_id is None:
        options = {k: v for k, v in options.items() if v is not None}
        return await session.bus.send(me, _address(to), text, **options)
    payload = {"text": text, "content_type": options["content_type"] or "text/plain"}
    fields = {"source": me, "target": _address(to), "message_id": message_id, "payload": payload}
    fields |= {"reply_to": options["reply_to"], "correlation_id": options["correlation_id"]}
    return await session.bus.publish(build_message(SendMessage, fields))


def _delivered(message: Any, position: str, attempt: int | None = None) -> dict[str, Any]:
    found = {"position": position, "message": encode(message)}
    return found if attempt is None else {**found, "attempt": attempt}


async def _inbox(session: SessionAPI, args: dict[str, Any]) -> Any:
    me = _me(session)
    limit = _take(args, "limit", int, 10)
    if not 1 <= limit <= INBOX_LIMIT_MAX:
        raise LimitExceeded(f"limit must be 1..{INBOX_LIMIT_MAX}", details={"limit": "limit", "max": INBOX_LIMIT_MAX})
    if _take(args, "peek", bool, False):
        entries = await session.bus.history_entries(me, after=_take(args, "after", str), limit=limit)
        return {"messages": [_delivered(m, p) for p, m in entries], "consumed": False}
    wait_s = _bounded(args, "wait_s", 0.0, INBOX_WAIT_S_MAX, "seconds")
    if not isinstance(session, Session):  # what is waiting reaches a remote session in one poll, not at once
        wait_s = max(wait_s, INBOX_REMOTE_WAIT_S)
    found: list[dict[str, Any]] = []
    async with session.bus.subscribe(me, prefetch=limit) as sub:
        delivery = await sub.receive(timeout_s=wait_s)
        while delivery is not None:
            found.append(_delivered(delivery.message, delivery.position, delivery.attempt))
            await delivery.ack()
            delivery = await sub.receive(timeout_s=0) if len(found) < limit else None
    return {"messages": found, "consumed": True}


async def _ask(session: SessionAPI, args: dict[str, Any]) -> Any:
    me, to, text = _me(session), _take(args, "to", str), _take(args, "text", str)
    if to is None or text is None:
        raise InvalidArgument("ask needs 'to' and 'text'")
    timeout_s = _bounded(args, "timeout_s", 30.0, ASK_TIMEOUT_S_MAX, "seconds")
    return await session.bus.ask(me, _address(to), text, timeout_s=timeout_s)


async def _broadcast(session: SessionAPI, args: dict[str, Any]) -> Any:
    text, channel = _take(args, "text", str), _take(args, "channel", str, "global")
    if text is None:
        raise InvalidArgument("broadcast needs 'text'")
    return await session.bus.send(_me(session), f"sos:channel:{channel.removeprefix('sos:channel:')}", text)


_FIND = ("skill", "role", "squad", "tool", "status")


async def _peers(session: SessionAPI, args: dict[str, Any]) -> Any:
    filters = {k: _take(args, k, str) for k in _FIND}
    return await session.registry.find(**{k: v for k, v in filters.items() if v is not None})


async def _balances(session: SessionAPI, me: str, currencies: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for currency in currencies:
        try:
            found[currency] = encode(await session.ledger.balance(me, currency))
        except WalletNotFound:
            continue  # no account in that currency: nothing to report
    return found


def _awaits_review(task: Any, me: str) -> bool:
    if task.status != "review" or me not in task.reviewers or me == task.assignee:
        return False
    return not any((r.reviewer, r.attempt, r.round) == (me, task.attempt, task.round) for r in task.reviews)


async def _open_tasks(session: SessionAPI, me: str) -> list[dict[str, Any]]:
    """The open tasks the agent works on (its current claim) or must review (a submission it has not judged)."""
    found: list[dict[str, Any]] = []
    for status in _WORKING:
        for task in await session.tasks.list(status, limit=LIST_LIMIT_MAX):
            role = "worker" if task.assignee == me else "reviewer" if _awaits_review(task, me) else None
            if role is not None:
                found.append({"id": task.id, "title": task.title, "status": task.status, "role": role,
                              "attempt": task.attempt, "bounty": task.bounty, "currency": task.currency})  # fmt: skip
    found.sort(key=lambda t: t["role"] != "worker")  # its own claims first (sorting is stable)
    return found[:STATUS_TASKS_MAX]


async def _status(session: SessionAPI, args: dict[str, Any]) -> Any:
    principal = await session.refresh()
    currencies = _take(args, "currencies", list, list(STATUS_CURRENCIES))
    if not all(isinstance(c, str) for c in currencies) or len(currencies) > len(STATUS_CURRENCIES) + 8:
        raise InvalidArgument("currencies must be a short list of currency codes")
    reads = principal.agent is not None and principal.allows("ledger:read")
    wallets = await _balances(session, principal.agent or "", currencies) if reads else {}
    answer: dict[str, Any] = {
        "agent": principal.agent,
        "tenant": principal.tenant,
        "scopes": sorted(principal.scopes),
        "wallets": wallets,
        "services": [s for s in _service_names() if hasattr(session, s)],
    }
    if principal.agent is not None and principal.allows("tasks:read") and hasattr(session, "tasks"):
        answer["tasks"] = await _open_tasks(session, principal.agent)
    return answer


async def _wallet_balance(session: SessionAPI, args: dict[str, Any]) -> Any:
    return await session.ledger.balance(_me(session), _take(args, "currency", str, "USD"))


async def _transfer(session: SessionAPI, args: dict[str, Any]) -> Any:
    fields: dict[str, Any] = {k: args.get(k) for k in ("id", "to", "amount_micros")}
    missing = [k for k, v in fields.items() if v is None]
    if missing:
        raise InvalidArgument(f"missing argument {missing[0]!r} to transfer", details={"argument": missing[0]})
    return await session.ledger.transfer(
        id=fields["id"],
        debit=_me(session),
        credit=_address(_take(args, "to", str)),
        amount=fields["amount_micros"],
        currency=_take(args, "currency", str, "USD"),
        reason=_take(args, "reason", str, ""),
    )


async def _skills_find(session: SessionAPI, args: dict[str, Any]) -> Any:
    filters = {k: _take(args, k, str) for k in ("tag", "backend", "author", "status")}
    return await session.skills.find(**{k: v for k, v in filters.items() if v is not None})


async def _skill_invoke(session: SessionAPI, args: dict[str, Any]) -> Any:
    skill_id, invocation_id = _take(args, "skill_id", str), _take(args, "invocation_id", str)
    if skill_id is None or invocation_id is None:
        raise InvalidArgument("skill_invoke needs 'skill_id' and 'invocation_id'")
    return await session.skills.record_invocation(
        skill_id, _take(args, "version", str), caller=_me(session), tenant=session.tenant, invocation_id=invocation_id
    )


_TO = _str("the recipient: an agent name ('bob'), 'agent:bob', or a channel 'sos:channel:<name>'")

CURATED: tuple[tuple[Tool, tuple[str, str] | None], ...] = (
    (
        Tool(
            "send",
            "Send a text message from you to another agent's inbox (or a channel). Pass message_id (a UUID you "
            "choose) to make a retry safe: the same id is delivered once.",
            _obj(
                ("to", "text"),
                to=_TO,
                text=_str("the message"),
                content_type=_str("text/plain or text/markdown", enum=["text/plain", "text/markdown"]),
                reply_to=_str("the message_id this answers"),
                correlation_id=_str("a thread id shared by related messages"),
                message_id=_str("a UUID naming this message, for idempotent retries"),
            ),
            _send,
            "bus:write",
        ),
        ("bus", "send"),
    ),
    (
        Tool(
            "inbox",
            "Read the messages waiting in your inbox, oldest first, and acknowledge them (they are not returned "
            "again). peek=true lists your inbox's stored messages instead, consuming nothing (page with 'after').",
            _obj(
                (),
                limit=_int(f"how many messages, 1..{INBOX_LIMIT_MAX} (default 10)", minimum=1, maximum=INBOX_LIMIT_MAX),
                peek={"type": "boolean", "description": "list without consuming (default false)"},
                wait_s={
                    "type": "number",
                    "description": f"wait up to this long for a first message (0..{INBOX_WAIT_S_MAX})",
                },
                after=_str("peek only: the position to list after"),
            ),
            _inbox,
            "bus:read",
        ),
        None,
    ),
    (
        Tool(
            "ask",
            "Ask another agent a question and wait for its reply (up to timeout_s); SOS-6004 if none comes in time.",
            _obj(
                ("to", "text"),
                to=_TO,
                text=_str("the question"),
                timeout_s={
                    "type": "number",
                    "description": f"seconds to wait (default 30, at most {ASK_TIMEOUT_S_MAX})",
                },
            ),
            _ask,
            "bus:write",
        ),
        ("bus", "ask"),
    ),
    (
        Tool(
            "broadcast",
            "Post a text message to a channel every subscriber sees (default: the global channel).",
            _obj(("text",), text=_str("the message"), channel=_str("the channel name (default 'global')")),
            _broadcast,
            "bus:write",
        ),
        None,
    ),
    (
        Tool(
            "peers",
            "Find registered agents, optionally by skill, role, squad, tool or status (online, busy, offline...).",
            _obj((), **{k: _str(f"only agents with this {k}") for k in _FIND}),
            _peers,
            "registry:read",
        ),
        ("registry", "find"),
    ),
    (
        Tool(
            "status",
            "Who you are: your agent, tenant, scopes, wallet balances (integer micros), the services available and "
            "your open tasks (claimed by you, or awaiting your review).",
            _obj((), currencies={"type": "array", "items": {"type": "string"}, "description": "currency codes"}),
            _status,
            None,
        ),
        None,
    ),
    (
        Tool(
            "wallet_balance",
            "Your wallet balance in one currency, in integer micros (1 unit = 1,000,000 micros).",
            _obj((), currency=_str("a currency code (default USD)")),
            _wallet_balance,
            "ledger:read",
        ),
        ("ledger", "balance"),
    ),
    (
        Tool(
            "transfer",
            "Pay another agent from your wallet. 'id' is yours to choose and makes the transfer idempotent: a retry "
            "with the same id returns the first outcome and never pays twice.",
            _obj(
                ("id", "to", "amount_micros"),
                id=_str("a unique id for this transfer (e.g. 'pay-task-42')"),
                to=_str("the agent paid: 'bob' or 'agent:bob'"),
                amount_micros=_int("the amount in integer micros (1 unit = 1,000,000)", minimum=1),
                currency=_str("a currency code (default USD)"),
                reason=_str("why (kept with the transfer)"),
            ),
            _transfer,
            "ledger:write",
        ),
        ("ledger", "transfer"),
    ),
    (
        Tool(
            "skills_find",
            "Find published skills, optionally by tag, backend, author or status.",
            _obj((), **{k: _str(f"only skills with this {k}") for k in ("tag", "backend", "author", "status")}),
            _skills_find,
            "skills:read",
        ),
        ("skills", "find"),
    ),
    (
        Tool(
            "skill_invoke",
            "Record (and, for a priced skill, pay for) one invocation of a skill as you. invocation_id is yours to "
            "choose and makes it idempotent. Running the skill itself is up to you.",
            _obj(
                ("skill_id", "invocation_id"),
                skill_id=_str("the skill"),
                invocation_id=_str("a unique id for this invocation"),
                version=_str("a version (default: the latest)"),
            ),
            _skill_invoke,
            "skills:invoke",
        ),
        ("skills", "record_invocation"),
    ),
)
"""The curated tools, each with the operation it stands for (which then gets no derived tool)."""


# -- derived tools -----------------------------------------------------------------------------------------------


def _service_names() -> list[str]:
    return [op.service for cls in SERVICES for op in list(declared(cls).values())[:1]]


def _derived_call(op: Operation, catalogue: TypeCatalogue, own: tuple[str, ...]) -> Call:
    arguments = Arguments(op)

    async def call(session: SessionAPI, args: dict[str, Any]) -> Any:
        agent = session.agent
        if agent is not None:
            args = {**{name: agent for name in own}, **args}  # the guard's own arguments default to the caller
        kwargs = arguments.decode(args, catalogue)
        return await getattr(getattr(session, op.service), op.name)(**kwargs)

    return call


_OWN_DEFAULTS = ("source", "agent", "name", "inbox", "account")


def _derived(op: Operation, catalogue: TypeCatalogue) -> Tool:
    defs: dict[str, Any] = {}
    schema = arguments_schema(op, defs, _DEFS_REF)
    if defs:
        schema["$defs"] = defs
    summary = op.wire.summary if op.wire is not None and op.wire.summary else ""
    doc = (op.function.__doc__ or "").strip()
    description = f"{summary + '. ' if summary else ''}{doc}".strip() or f"{op.service}.{op.name}"
    access = op.access
    own = {name: kind for name, kind in access.own.items() if kind in _OWN_DEFAULTS}
    call = _derived_call(op, catalogue, tuple(own))
    return Tool(op.tool_name, description, schema, call, access.scope, access.lift if access.admin else None, own)


class Toolbox:
    """Every tool: the curated ones, then one per routed operation of ``SERVICES`` not covered by a curated tool
    and not kept out of the tools (``tool=""``). Tool names are unique (a clash is a ``ValueError``)."""

    def __init__(self, catalogue: TypeCatalogue) -> None:
        tools = [tool for tool, _ in CURATED]
        covered = {op for _, op in CURATED if op is not None}
        for cls in SERVICES:
            for op in declared(cls).values():
                if op.wire is None or not op.tool_name or (op.service, op.name) in covered:
                    continue
                tools.append(_derived(op, catalogue))
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool


def catalogue_of(session: SessionAPI, catalogue: TypeCatalogue | None = None) -> TypeCatalogue:
    """The catalogue that reads messages given to the derived ``bus_*`` tools: ``catalogue`` when given, else the
    session's (a client's or a kernel session's), else the core types."""
    found = catalogue if catalogue is not None else getattr(session, "catalogue", None)
    return found if isinstance(found, TypeCatalogue) else TypeCatalogue()


async def invoke(tool: Tool, session: SessionAPI, arguments: Mapping[str, Any]) -> Any:
    """Run ``tool`` as ``session``'s principal: its JSON-ready result, or an ``SOSError`` (a call the operation's
    signature refuses is ``InvalidArgument``, nothing done)."""
    try:
        return encode(await tool.call(session, dict(arguments)))
    except TypeError as exc:
        raise InvalidArgument(f"bad arguments to {tool.name}: {exc}") from exc


def session_tools(
    session: SessionAPI, names: Iterable[str] | None = None, catalogue: TypeCatalogue | None = None
) -> list[Tool]:
    """The tools a framework adapter offers ``session``: those named in ``names`` (an unknown name is a
    ``ValueError``), else every tool its principal's scopes allow. Listing is a convenience, not the check: every
    call still passes the session's guard."""
    toolbox = Toolbox(catalogue_of(session, catalogue))
    if names is None:
        return [t for t in toolbox.tools.values() if t.listed_for(session.principal.allows)]
    wanted = list(names)
    unknown = [n for n in wanted if n not in toolbox.tools]
    if unknown:
        raise ValueError(f"no kernel tool {unknown[0]!r} (known: {', '.join(sorted(toolbox.tools))})")
    return [toolbox.tools[n] for n in wanted]
