"""One guard for every service: a session's services are the trusted ones behind their declared access rules.

:func:`guard` wraps a trusted service (``Bus``, ``Ledger``...) so that each operation declared on its class
(:mod:`sos_kernel.operations`) first passes the caller's checks, and nothing else is reachable: an undeclared
method or attribute of the trusted service does not exist on the guarded one. The wrapper has the trusted
method's signature, so a bad call raises the same ``TypeError``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, Protocol

import anyio

from ._exact import exact_equal
from ._text import invalid_text
from .contracts import RESERVED_AGENTS
from .errors import Forbidden, InvalidArgument
from .identity.models import Principal
from .operations import Access, Operation, OwnKind, declared, reserved_free, scoped_id

__all__ = ["REFUSAL_CHARS_MAX", "REFUSAL_DETAIL_CHARS_MAX", "Arguments", "Caller", "Hooks", "guard"]

CHANNEL_PREFIX = "sos:channel:"
_SPEAKING: frozenset[OwnKind] = frozenset({"source", "agent", "name"})
"""The kinds of owned argument that name who a call speaks or acts as (not an inbox read or a ledger account)."""
REFUSAL_CHARS_MAX = 1024
"""The longest message of a guard's refusal: one naming a huge argument does not echo it back in full."""
REFUSAL_DETAIL_CHARS_MAX = 256
"""The longest string value in a guard's refusal details."""


class Arguments(Protocol):
    """A call's arguments by name: a dict (for a rule), or a view over the call as made."""

    def __contains__(self, name: object) -> bool: ...
    def get(self, name: str, default: Any = None) -> Any: ...
    def __setitem__(self, name: str, value: Any) -> None: ...


class Hooks(Protocol):
    """What a tenant's governance adds to every guarded call (:class:`sos_kernel.governance.Governor`): the
    policy ``check`` after the scope checks, the audit record of a call that ran (``done``) or was refused;
    ``recorded`` names the operations whose success is recorded (the guard shields them from cancellation)."""

    def enter(self, principal: Principal) -> Any: ...
    def leave(self, token: Any) -> None: ...
    async def check(self, caller: Caller, op: Operation, arguments: Any) -> None: ...
    async def done(self, principal: Principal, op: Operation, arguments: Any, result: Any) -> None: ...
    async def refused(self, principal: Principal, op: Operation, exc: Forbidden, arguments: Any) -> None: ...
    def recorded(self, op: Operation) -> bool: ...


class Caller:
    """Who a session acts for, and the checks of :mod:`sos_kernel.operations` applied to them.

    ``refresh`` re-validates the token (it raises the token's SOS-5xxx error); ``on_denial`` hears every refusal;
    ``hooks``, when given, check each call against the tenant's policy and record it (see :class:`Hooks`).
    """

    def __init__(
        self,
        principal: Principal,
        refresh: Callable[[], Awaitable[Principal]],
        on_denial: Callable[[Principal, str], None],
        hooks: Hooks | None = None,
    ) -> None:
        self.principal = principal
        self._refresh = refresh
        self._on_denial = on_denial
        self.denials = 0
        self.hooks = hooks

    async def refresh(self) -> Principal:
        """The principal as of now (SOS-5002, 5003, 5006 if the token no longer gives one)."""
        self.principal = await self._refresh()
        return self.principal

    async def need(self, scope: str) -> Principal:
        """The refreshed principal, if it holds ``scope``; else SOS-5004."""
        principal = await self.refresh()
        if not principal.allows(scope):
            self.deny(f"needs the {scope!r} scope", scope=scope)
        return principal

    def deny(self, reason: str, **details: Any) -> NoReturn:
        """Refuse (SOS-5004), counting the refusal and telling the denial hooks."""
        self.denials += 1
        self._on_denial(self.principal, reason)
        message = _clip(f"{self.principal.agent or 'this token'}: {reason}", REFUSAL_CHARS_MAX)
        raise Forbidden(message, details={k: _clip(v, REFUSAL_DETAIL_CHARS_MAX) for k, v in details.items()})

    def own(self, kind: OwnKind, name: str, value: Any) -> None:
        """Refuse unless ``value`` (argument ``name``) is the caller's own, as ``kind`` reads it.

        Only a plain ``str`` can be the caller's own: a subclass could compare equal here and be read otherwise
        by the service.
        """
        if type(value) is not str:
            self.deny(f"{name} must be a str naming the caller's own, got {type(value).__name__}", argument=name)
        agent = self.principal.agent
        if kind == "inbox" and isinstance(value, str) and value.startswith(CHANNEL_PREFIX):
            return
        if kind == "name" and isinstance(value, str):
            value = "agent:" + value.removeprefix("agent:")
        if value == agent and agent is not None:
            return
        if kind == "source":
            self.deny(f"may not send as {value!r} (sessions send as their own agent)", source=value)
        if kind == "account":
            self.deny(f"account {value!r} is not the session's own", owner=value)
        what = {"inbox": "inbox", "name": "agent"}.get(kind, name)
        self.deny(f"{what} {value!r} belongs to another agent", address=value)

    def unreserved(self, kind: OwnKind, name: str, value: Any) -> None:
        """Refuse (SOS-4005, nothing done) ``value`` (argument ``name``) naming a reserved agent (``agent:kernel``)
        as who a call speaks or acts as, whatever the caller's scopes: only the trusted in-process handle speaks
        as the kernel, so no session's message or record can pass for the kernel's own."""
        if kind not in _SPEAKING or type(value) is not str:
            return
        agent = "agent:" + value.removeprefix("agent:") if kind == "name" else value
        if agent in RESERVED_AGENTS:
            raise InvalidArgument(
                f"{name} {value!r} is reserved: the kernel's own messages come from it", details={"agent": agent}
            )

    def own_id(self, id: Any, lift: str, *, reading: bool = False) -> Any:
        """``id`` as the caller's: in its namespace (see :func:`scoped_id`), and, unless ``reading``, never ending
        with a suffix the kernel reserves (SOS-4005); unchanged for a caller holding ``lift``."""
        if self.principal.allows(lift):
            return id
        return scoped_id(self.principal.agent, id if reading else reserved_free(id))

    async def admit(self, access: Access, arguments: Arguments) -> Principal:
        """Apply ``access`` to the call's ``arguments`` (rewriting ids into the caller's namespace)."""
        principal = await self.need(access.scope)
        lifted = principal.allows(access.lift)
        if not lifted and (access.admin or _beyond(access.admin_unless, arguments)):
            self.deny(f"needs the {access.lift!r} scope", scope=access.lift)
        for name, kind in access.own.items():
            value = arguments.get(name)
            if not lifted:
                self.own(kind, name, value)
            self.unreserved(kind, name, value)
        for name in access.ids:
            if name in arguments:
                arguments[name] = self.own_id(arguments.get(name), access.lift)
        for name in access.tenant:
            if type(arguments.get(name)) is not str or arguments.get(name) != principal.tenant:
                self.deny(f"may not act for tenant {arguments.get(name)!r}", tenant=arguments.get(name))
        return principal


def _clip(value: Any, most: int) -> Any:
    """A string cut to ``most`` characters (ending ``…`` when cut); anything else as it is."""
    return value[: most - 1] + "…" if isinstance(value, str) and len(value) > most else value


def _beyond(admin_unless: Mapping[str, tuple[Any, ...]], arguments: Arguments) -> bool:
    """Whether an argument named in ``admin_unless`` holds a value other than those listed (type-exactly)."""
    for name, allowed in admin_unless.items():
        value = arguments.get(name, allowed[0])
        if not any(exact_equal(value, a) for a in allowed):
            return True
    return False


class _Shape:
    """Where each named parameter of an operation is found in a call, so a check reads only what it needs."""

    __slots__ = ("name", "names", "positions", "required")

    def __init__(self, op: Operation) -> None:
        params = [p for p in op.signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        self.name = op.name
        self.names = tuple(p.name for p in op.signature.parameters.values())
        self.positions = {p.name: i for i, p in enumerate(params) if p.kind is not p.KEYWORD_ONLY}
        self.required = frozenset(p.name for p in params if p.default is p.empty)


class _Bound:
    """One call's arguments, read and rewritten by name without binding them all (the checks touch a few)."""

    __slots__ = ("args", "kwargs", "shape")

    def __init__(self, shape: _Shape, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.shape = shape
        self.args = args
        self.kwargs = kwargs

    def _index(self, name: str) -> int | None:
        i = self.shape.positions.get(name)
        return i if i is not None and i < len(self.args) else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self._index(name) is not None or name in self.kwargs)

    def get(self, name: str, default: Any = None) -> Any:
        i = self._index(name)
        if i is not None:
            return self.args[i]
        if name in self.kwargs:
            return self.kwargs[name]
        if name in self.shape.required:  # the call is malformed: refuse it as the trusted method would
            raise TypeError(f"{self.shape.name}() missing required argument: {name!r}")
        return default

    def __setitem__(self, name: str, value: Any) -> None:
        i = self._index(name)
        if i is None:
            self.kwargs[name] = value
        else:
            self.args = (*self.args[:i], value, *self.args[i + 1 :])


def _text_only(shape: _Shape, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse (SOS-4005, naming the argument) a call with a string that is not valid Unicode text anywhere in its
    arguments: no store, encoder or schema downstream could keep or send it."""
    for value in args:
        if not ((type(value) is str and value.isascii()) or type(value) in _SCALARS):
            names = shape.names
            for i, arg in enumerate(args):  # the unusual argument: walk it, naming where
                _refuse_invalid(arg, names[i] if i < len(names) else f"[{i}]")
            break
    if kwargs:
        for key, value in kwargs.items():
            if not ((type(value) is str and value.isascii()) or type(value) in _SCALARS):
                _refuse_invalid(value, key)


_SCALARS = frozenset({int, float, bool, type(None), bytes})


def _refuse_invalid(value: Any, name: str) -> None:
    where = invalid_text(value, name)
    if where is not None:
        message = f"argument {where!r} is not valid Unicode text (it holds a lone UTF-16 surrogate)"
        raise InvalidArgument(_clip(message, REFUSAL_CHARS_MAX), details={"argument": _clip(where, 256)})


def _method(op: Operation) -> Callable[..., Any]:
    signature = op.signature
    access, rule, name = op.access, op.access.rule, op.name
    shape = _Shape(op)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return dict(signature.bind(*args, **kwargs).arguments)

    if not op.is_async:  # a local operation (subscribe, split): its rule, if any, defers the check

        def local(self: _Guarded, *args: Any, **kwargs: Any) -> Any:
            _text_only(shape, args, kwargs)
            if rule is not None:
                caller = self._caller
                arguments = bind(args, kwargs)
                if caller.hooks is not None:  # the deferred check passes the tenant's policy too
                    return rule(_Opening(caller, caller.hooks, op, arguments), self._target, arguments)
                return rule(caller, self._target, arguments)
            return getattr(self._target, name)(*args, **kwargs)

        return functools.wraps(op.function)(local)

    if rule is not None:

        async def ruled(self: _Guarded, *args: Any, **kwargs: Any) -> Any:
            _text_only(shape, args, kwargs)
            arguments = bind(args, kwargs)
            caller, target = self._caller, self._target
            if caller.hooks is not None:
                return await _governed(caller, caller.hooks, op, arguments, lambda: rule(caller, target, arguments))
            await caller.admit(access, arguments)
            return await rule(caller, self._target, arguments)

        return functools.wraps(op.function)(ruled)

    async def guarded(self: _Guarded, *args: Any, **kwargs: Any) -> Any:
        _text_only(shape, args, kwargs)
        call = _Bound(shape, args, kwargs)
        caller = self._caller
        if caller.hooks is not None:
            target = getattr(self._target, name)
            return await _governed(caller, caller.hooks, op, call, lambda: target(*call.args, **call.kwargs))
        await caller.admit(access, call)
        return await getattr(self._target, name)(*call.args, **call.kwargs)

    return functools.wraps(op.function)(guarded)


async def _governed(
    caller: Caller, hooks: Hooks, op: Operation, arguments: Any, run: Callable[[], Awaitable[Any]]
) -> Any:
    """Admit, check against the policy, run, and record (a refusal, by the guard or the service, is recorded).

    An operation whose success is recorded runs with its record in a shielded scope: a caller cancelled meanwhile
    is cancelled once both are done, so an effect never lands without its record (these operations do not wait
    on others; the waiting ones, ``ask``, ``receive``, stay cancellable). A refusal's record is shielded too."""
    token = hooks.enter(caller.principal)  # the services' own records name who acted
    try:
        if hooks.recorded(op):
            with anyio.CancelScope(shield=True):
                return await _checked(caller, hooks, op, arguments, run)
        return await _checked(caller, hooks, op, arguments, run)
    finally:
        hooks.leave(token)


async def _checked(
    caller: Caller, hooks: Hooks, op: Operation, arguments: Any, run: Callable[[], Awaitable[Any]]
) -> Any:
    """Admit, check the policy, run, and record: a refusal's record shielded, a success's through ``done``."""
    try:
        await caller.admit(op.access, arguments)
        await hooks.check(caller, op, arguments)
        result = await run()
    except Forbidden as exc:
        with anyio.CancelScope(shield=True):
            await hooks.refused(caller.principal, op, exc, arguments)
        raise
    await hooks.done(caller.principal, op, arguments, result)
    return result


class _Opening:
    """The caller a local operation's rule sees under governance: the scope check its deferred ``need`` makes
    (when a subscription opens) also passes the tenant's policy, and a refusal is recorded as any other."""

    __slots__ = ("_arguments", "_caller", "_hooks", "_op")

    def __init__(self, caller: Caller, hooks: Hooks, op: Operation, arguments: dict[str, Any]) -> None:
        self._caller = caller
        self._hooks = hooks
        self._op = op
        self._arguments = arguments

    def __getattr__(self, name: str) -> Any:
        return getattr(self._caller, name)

    async def need(self, scope: str) -> Principal:
        """The refreshed principal if it holds ``scope`` and the tenant's policy allows the operation; else 5004."""
        caller, hooks = self._caller, self._hooks
        token = hooks.enter(caller.principal)
        try:
            try:
                principal = await caller.need(scope)
                await hooks.check(caller, self._op, self._arguments)
            except Forbidden as exc:
                with anyio.CancelScope(shield=True):
                    await hooks.refused(caller.principal, self._op, exc, self._arguments)
                raise
            return principal
        finally:
            hooks.leave(token)


class _Guarded:
    __slots__ = ("_caller", "_target")

    def __init__(self, target: Any, caller: Caller) -> None:
        self._target = target
        self._caller = caller

    def __repr__(self) -> str:
        return f"guarded {type(self._target).__name__} for {self._caller.principal.agent or 'a token'}"


_CLASSES: dict[type, type[_Guarded]] = {}


def _guarded_class(cls: type) -> type[_Guarded]:
    found = _CLASSES.get(cls)
    if found is None:
        methods = {name: _method(op) for name, op in declared(cls).items()}
        namespace = {"__slots__": (), "__doc__": cls.__doc__, **methods}
        found = _CLASSES[cls] = type(f"Guarded{cls.__name__}", (_Guarded,), namespace)
    return found


def guard(target: Any, caller: Caller) -> Any:
    """``target``'s declared operations, each checked for ``caller`` before it runs; nothing else of ``target``."""
    return _guarded_class(type(target))(target, caller)
