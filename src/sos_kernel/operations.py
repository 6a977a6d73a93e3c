"""Operations, declared once beside the service method that implements them.

A service method becomes a public operation with :func:`operation`, which records who may call it and how it
travels::

    @operation("ledger:write", own={"debit": "account"}, ids=("id",), lift="ledger:admin")
    async def transfer(self, *, id: str, debit: str, ...) -> Transfer: ...

Everything else is derived from these declarations, so an operation is written once:

- a session (``await kernel.session(token)``) is one guard (:mod:`sos_kernel.guard`) that applies the access rule
  of every declared operation before calling the trusted service;
- the server (:mod:`sos_kernel.server`) publishes each operation at ``/v1/<service>/<name>`` with its request and
  response schemas and the error codes it can return;
- ``mumega_sdk.MumegaClient`` calls those routes with the same signature and rebuilds the same result types.

The Protocols of :mod:`sos_kernel.api` stay the typed contract: a test holds every declared operation's signature
equal to its Protocol method, and mypy proves the trusted services satisfy the Protocols.

Access rules, in the order a guard applies them (every refusal but a reserved agent's is SOS-5004, counted and
passed to the kernel's denial hooks):

1. the token is re-validated (revocation and suspension apply within ``TOKEN_CACHE_TTL_S``);
2. ``scope`` must be held (``admin`` holds every scope);
3. ``lift`` is needed outright when ``admin`` is set, or when an argument named in ``admin_unless`` is not one of
   the values listed for it (compared type-exactly: ``0`` is not ``False``);
4. each argument named in ``own`` must be the caller's own: ``source`` or ``agent`` (its ``agent:<name>``),
   ``name`` (its name, with or without ``agent:``), ``inbox`` (its own address or any ``sos:channel:``) or
   ``account`` (a ledger owner that is its agent). Holding ``lift`` waives these checks, but never lets a
   ``source``, ``agent`` or ``name`` argument name a reserved agent (``agent:kernel``: SOS-4005, whoever asks);
5. each argument named in ``tenant`` must be the caller's tenant;
6. each argument named in ``ids`` is recorded in the caller's namespace (see :func:`scoped_id`) unless the caller
   holds ``lift``;
7. ``rule``, when given, is the hand-written remainder: it receives the caller, the trusted service and the
   arguments, and makes the call itself (used where a check needs the store, e.g. the payer of a hold).

``tool`` names the operation's MCP tool (:mod:`sos_kernel.mcp`): ``<service>_<name>`` by default, ``""`` for none.

What a tenant's policy (:mod:`sos_kernel.governance`) counts is declared here too: ``spend`` names the arguments
holding the micros the call can move (summed against spend budgets), ``resource`` the arguments naming what it acts
on (each one checked against resource rules). An entry is an argument's name, or ``<list>[].<field>`` for that field
of every item of a list argument (a batch). An operation that moves money declares ``spend``. One whose cost is
not an argument (a model call's, known only as it runs; a skill's price, read from its card) declares
``spend=(SPEND_HELD,)``: the service counts its worst case against the policy's spend and token budgets before it
acts (:func:`sos_kernel.governance.held_budget`), then the actual.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .errors import InvalidArgument, SOSError

__all__ = [
    "KERNEL_ID_PREFIXES",
    "RESERVED_ID_SUFFIXES",
    "SPEND_HELD",
    "Access",
    "Operation",
    "OwnKind",
    "Rule",
    "Wire",
    "declared",
    "operation",
    "operation_hints",
    "reserved_free",
    "scoped_id",
    "service",
]

SPEND_HELD = "<held>"
"""A ``spend`` entry naming no argument: the service itself holds the call's worst-case spend and tokens against
the policy's budgets before it acts, and counts the actual once it is known."""

OwnKind = Literal["source", "agent", "name", "inbox", "account"]
Rule = Callable[..., Any]
"""A hand-written rule: ``(caller, trusted_service, arguments) -> result`` (awaitable for async operations); the
caller is a :class:`sos_kernel.guard.Caller`, left untyped here because the guard is built on this module."""

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_ATTR = "__sos_operation__"
_TOOL_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call an operation (see the module docstring for the order the rules apply in)."""

    scope: str
    own: Mapping[str, OwnKind] = field(default_factory=dict)
    lift: str = "admin"
    admin: bool = False
    admin_unless: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    tenant: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    rule: Rule | None = None


@dataclass(frozen=True, slots=True)
class Wire:
    """How an operation travels over HTTP: ``GET`` (arguments as query parameters) or ``POST`` (a JSON object).

    ``keyed``: the client sends an ``Idempotency-Key`` with every attempt (for writes without an id of their own).
    ``wait``: the argument holding how long the call may wait (the HTTP timeout grows by it). ``errors``: the
    SOS error classes the operation can raise beyond the ones every operation can (bad input, auth, runtime).
    ``unchecked``: arguments the service checks itself, whose JSON the route hands over without a type check
    first, so a bad value is refused with the service's own message, the same as in-process.
    """

    method: Literal["GET", "POST"] = "POST"
    keyed: bool = False
    wait: str | None = None
    errors: tuple[type[SOSError], ...] = ()
    summary: str = ""
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """One declared operation of a service class."""

    service: str
    name: str
    access: Access
    wire: Wire | None
    function: Callable[..., Any]
    tool: str | None = None
    spend: tuple[str, ...] = ()
    resource: tuple[str, ...] = ()

    @property
    def tool_name(self) -> str:
        """Its MCP tool's name: the declared ``tool``, else ``<service>_<name>``; ``""`` when it has none."""
        return f"{self.service}_{self.name}" if self.tool is None else self.tool

    @property
    def signature(self) -> inspect.Signature:
        """The trusted method's signature, without ``self``."""
        sig = inspect.signature(self.function)
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    @property
    def is_async(self) -> bool:
        """Whether the operation is a coroutine function (``subscribe`` and ``split`` are not)."""
        return inspect.iscoroutinefunction(self.function)

    @property
    def path(self) -> str:
        """Its HTTP path."""
        return f"/v1/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class _Declared:
    access: Access
    wire: Wire | None
    tool: str | None = None
    spend: tuple[str, ...] = ()
    resource: tuple[str, ...] = ()


def operation(
    scope: str,
    *,
    own: Mapping[str, OwnKind] | None = None,
    lift: str = "admin",
    admin: bool = False,
    admin_unless: Mapping[str, tuple[Any, ...]] | None = None,
    tenant: tuple[str, ...] = (),
    ids: tuple[str, ...] = (),
    rule: Rule | None = None,
    wire: Wire | None = None,
    local: bool = False,
    tool: str | None = None,
    spend: tuple[str, ...] = (),
    resource: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Declare the decorated service method a public operation (see the module docstring).

    ``wire`` defaults to ``Wire()`` (a ``POST``); ``local=True`` keeps the operation in-process (and in the client,
    which implements it itself): it gets no route. ``tool`` names its MCP tool (default ``<service>_<name>``; ``""``
    keeps it out of MCP). ``spend`` and ``resource`` declare what a policy counts and checks (see the module
    docstring).
    """
    if tool is not None and tool and not _TOOL_RE.fullmatch(tool):
        raise ValueError(f"tool name {tool!r} must match {_TOOL_RE.pattern}")
    access = Access(scope, dict(own or {}), lift, admin, dict(admin_unless or {}), tenant, ids, rule)
    declared_wire = None if local else (wire or Wire())

    def mark(function: F) -> F:
        setattr(function, _ATTR, _Declared(access, declared_wire, tool, spend, resource))
        return function

    return mark


_REGISTRY: dict[type, dict[str, Operation]] = {}


def service(name: str) -> Callable[[C], C]:
    """Name the decorated class's declared operations as the service ``name`` (the ``/v1/<name>/`` prefix)."""

    def collect(cls: C) -> C:
        found: dict[str, Operation] = {}
        for attr, value in vars(cls).items():
            mark = getattr(value, _ATTR, None)
            if isinstance(mark, _Declared):
                found[attr] = Operation(name, attr, mark.access, mark.wire, value, mark.tool, mark.spend, mark.resource)
        _REGISTRY[cls] = found
        return cls

    return collect


def declared(cls: type) -> dict[str, Operation]:
    """The operations declared on service class ``cls``, by name, in definition order."""
    found = _REGISTRY.get(cls)
    if found is None:
        raise TypeError(f"{cls.__name__} is not a service class (decorate it with @service(name))")
    return found


def operation_hints(op: Operation) -> tuple[dict[str, Any], Any]:
    """The resolved types of ``op``'s parameters (by name) and of its result."""
    hints = typing.get_type_hints(op.function)
    result = hints.pop("return", Any)
    return hints, result


RESERVED_ID_SUFFIXES = (":capture", ":void")
"""Endings of the ids the kernel derives for a hold's settlement (``<hold id>:capture``); no caller may choose one,
or it could record it first and block whoever settles the hold (an escrow's release)."""
KERNEL_ID_PREFIXES = ("engine:", "task:", "skill:")
"""Namespaces of the transfers and holds the kernel's services place on an agent's behalf (a chat's hold, a task's
bounty, a skill's charge). A caller's own ids are always ``<name>/<id>``, so it cannot create one; and only the
service that placed a hold (or ``ledger:admin``) settles it: its payer may not void or capture it."""


def kernel_namespace(id: Any) -> str | None:
    """The kernel-reserved namespace ``id`` lies in (one of :data:`KERNEL_ID_PREFIXES`), or ``None``."""
    if isinstance(id, str):
        for prefix in KERNEL_ID_PREFIXES:
            if id.startswith(prefix):
                return prefix
    return None


def reserved_free(id: Any) -> Any:
    """``id`` unless it ends with a reserved suffix (SOS-4005); a non-string is passed on for the service to refuse."""
    if isinstance(id, str) and id.endswith(RESERVED_ID_SUFFIXES):
        raise InvalidArgument(
            f"id {id!r} ends with a suffix the kernel reserves for settling holds ({', '.join(RESERVED_ID_SUFFIXES)})",
            details={"id": id},
        )
    return id


def scoped_id(agent: str | None, id: Any) -> Any:
    """``id`` in ``agent``'s namespace: ``<name>/<id>`` for ``agent:<name>``, unchanged if it is already there.

    Ids an agent chooses (transfers, holds, invocations) are recorded this way, so another agent can neither squat
    nor probe them; a non-string ``id`` is passed on for the service to refuse.
    """
    if agent is None or not isinstance(id, str) or not id:
        return id  # the service refuses what is not an id
    prefix = agent.removeprefix("agent:") + "/"
    return id if id.startswith(prefix) else prefix + id
