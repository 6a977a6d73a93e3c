"""Governance: per-tenant policies over agents' actions, budgets, human approval, and governed tools.

See :mod:`sos_kernel.governance.policy` for the document format and the matching rules, and
:mod:`sos_kernel.governance.service` for how policies are enforced in the guard every operation passes.

``governed(fn, action="tool.search", resource=None)`` wraps a tool callable (sync or async) so each call is checked
against the policy first (no policy: refused, default deny), waits for approval when a rule says so, is counted
against the policy's limits and recorded in the audit chain, and is refused (``SOSError`` SOS-5004, before ``fn``
runs) when the policy does not allow it. It acts on the tenant of ``governance`` (default: the ``default`` tenant
of the kernel opened most recently in this process) as ``agent``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.from_thread
import sniffio

from ..errors import Forbidden
from .policy import (
    POLICY_BYTES_MAX,
    POLICY_FORMAT,
    POLICY_PATTERNS_MAX,
    POLICY_RULES_MAX,
    CompiledPolicy,
    Decision,
    Policy,
    compile_policy,
    load_policy,
    normalise,
)
from .service import (
    APPROVALS_PENDING_MAX,
    APPROVALS_PENDING_PER_AGENT_MAX,
    POLICY_CACHE_TTL_S,
    Approval,
    Budget,
    Governance,
    Governor,
    PolicyCache,
    PolicyCheck,
    PolicyInfo,
    held_budget,
    shown_arguments,
)
from .store import Charge, GovernanceStore

__all__ = [
    "APPROVALS_PENDING_MAX",
    "APPROVALS_PENDING_PER_AGENT_MAX",
    "POLICY_BYTES_MAX",
    "POLICY_CACHE_TTL_S",
    "POLICY_FORMAT",
    "POLICY_PATTERNS_MAX",
    "POLICY_RULES_MAX",
    "Approval",
    "Budget",
    "Charge",
    "CompiledPolicy",
    "Decision",
    "Governance",
    "GovernanceStore",
    "Governor",
    "Policy",
    "PolicyCache",
    "PolicyCheck",
    "PolicyInfo",
    "compile_policy",
    "governed",
    "held_budget",
    "load_policy",
    "normalise",
    "use",
]

F = TypeVar("F", bound=Callable[..., Any])

_default: list[Governance] = []
"""The governance ``governed`` uses when given none: set by :func:`use`."""


def use(governance: Governance | None) -> None:
    """Make ``governance`` the one :func:`governed` tools use by default (a kernel does this when it opens;
    ``None`` clears it)."""
    _default[:] = [] if governance is None else [governance]


def _deny(reason: str, **details: Any) -> NoReturn:
    raise Forbidden(reason, details=details)


def _texts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[str]:
    from .policy import scan_texts

    return scan_texts([*args, *kwargs.values()])  # the values, not the parameters' names


def _named(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """A tool call's arguments by parameter name (positional ones by position when its signature cannot bind)."""
    try:
        return list(inspect.signature(fn).bind(*args, **kwargs).arguments.items())
    except (TypeError, ValueError):
        return [*((str(i), a) for i, a in enumerate(args)), *kwargs.items()]


def governed(
    fn: F,
    *,
    action: str,
    resource: str | Callable[..., str | None] | None = None,
    governance: Governance | None = None,
    agent: str | None = None,
    tokens: Callable[..., int] | None = None,
) -> F:
    """``fn`` checked against the policy before every call (see the module docstring).

    ``resource`` is a name, or a function of the call's arguments giving one; ``tokens`` a function of the
    arguments giving the tokens the call will use (counted against ``tokens_max`` limits). Sync callables are
    checked on the kernel's event loop from the calling thread (call them from a worker thread, as LangGraph and
    CrewAI do, not from the loop's own thread).
    """
    if not callable(fn):
        raise TypeError("governed() wraps a callable")

    async def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        gov = governance if governance is not None else (_default[0] if _default else None)
        if gov is None:
            _deny(f"no kernel governs {action!r}: governed tools are denied by default", action=action)
        res = resource(*args, **kwargs) if callable(resource) else resource
        used = tokens(*args, **kwargs) if tokens is not None else 0
        try:
            await gov.enforce(
                action=action,
                resource=res,
                agent=agent,
                scopes=frozenset(),
                deny=_deny,
                texts=_texts(args, kwargs),
                tokens=used,
                required=True,
                arguments=lambda: shown_arguments(_named(fn, args, kwargs)),
            )
        except Forbidden as exc:
            await gov._audit.record(
                "denial",
                actor=agent or "tool",
                action=action,
                resource=res or "",
                outcome="denied",
                details={"reason": exc.message},
            )
            raise
        await gov._audit.record("tool.call", actor=agent or "tool", action=action, resource=res or "")

    if inspect.iscoroutinefunction(fn):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            await check(args, kwargs)
            return await fn(*args, **kwargs)

        return functools.wraps(fn)(run_async)  # type: ignore[return-value]

    def run_sync(*args: Any, **kwargs: Any) -> Any:
        gov = governance if governance is not None else (_default[0] if _default else None)
        token = getattr(gov, "loop_token", None)
        try:
            sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            pass
        else:
            raise RuntimeError("a governed sync tool cannot block its event loop: run it in a worker thread")
        if token is None:
            anyio.run(check, args, kwargs)  # no kernel loop to use (no governance): refused in a loop of its own
        else:
            anyio.from_thread.run(check, args, kwargs, token=token)
        return fn(*args, **kwargs)

    return functools.wraps(fn)(run_sync)  # type: ignore[return-value]
