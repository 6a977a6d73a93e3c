"""Sessions: the kernel's API scoped to one tenant and one principal, every call checked first.

``session = await kernel.session(token)`` gives ``session.bus``, ``session.registry``, ``session.ledger`` and
``session.skills`` (and ``session.memory``) with
the same methods, arguments, results and errors as the trusted kernel's, restricted to the token's tenant and
checked against its scopes before anything is read or written. Checks fail closed:

- the token must still be valid on every call (revocation and suspension apply within ``TOKEN_CACHE_TTL_S``);
- a session bound to ``agent:X`` publishes only as ``agent:X`` (another ``source`` is refused), reads only its own
  inbox (channels are shared), moves money only out of its own accounts, and registers only itself;
- ledger ids (transfers, holds, captures, voids, transmutes, skill invocations) that a session without
  ``ledger:admin`` chooses live in its agent's namespace (``X/<id>``), so no one else can squat or probe them; a
  transfer read by a non-party answers exactly as a missing one (SOS-4040);
- tenant-wide operations (other agents' inboxes and accounts, minting, exchange rates, prices, usage reports,
  balances of the whole tenant, ``check``) need the ``admin`` or ``ledger:admin`` scope;
- no call can reach another tenant's data: each session's services are the tenant's own.

Every refusal raises :class:`~sos_kernel.errors.Forbidden` (SOS-5004), increments ``session.denials`` and is
passed to the kernel's denial hooks (``kernel.on_denial``), and recorded in the tenant's audit chain. A tenant
with a policy (``kernel.governance.set_policy``) has every call checked against it too, after the scopes, and
refused (SOS-5004) when no rule allows it (see ``sos_kernel.governance``).

A session's services are the trusted ones behind one guard (:func:`sos_kernel.guard.guard`), which applies the
access rule declared beside each operation (:mod:`sos_kernel.operations`); nothing undeclared is reachable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from .api import (
    AuditAPI,
    BusAPI,
    EngineAPI,
    GovernanceAPI,
    LedgerAPI,
    MemoryAPI,
    ProvidersAPI,
    RegistryAPI,
    ServicesAPI,
    SkillsAPI,
    TasksAPI,
)
from .guard import Caller, Hooks, guard
from .identity.models import Principal, PrincipalView

__all__ = ["Session"]


class Session(PrincipalView):
    """A principal's view of one tenant's services: ``.bus``, ``.registry``, ``.ledger``, ``.skills``.

    Made by ``await kernel.session(token)``: ``services`` are the tenant's trusted services, ``refresh``
    re-validates the token and ``on_denial`` hears every refusal.
    """

    def __init__(
        self,
        services: ServicesAPI,
        principal: Principal,
        refresh: Callable[[], Awaitable[Principal]],
        on_denial: Callable[[Principal, str], None],
        hooks: Hooks | None = None,
    ) -> None:
        self._caller = Caller(principal, refresh, on_denial, hooks)
        self.bus = cast(BusAPI, guard(services.bus, self._caller))
        self.ledger = cast(LedgerAPI, guard(services.ledger, self._caller))
        self.registry = cast(RegistryAPI, guard(services.registry, self._caller))
        self.skills = cast(SkillsAPI, guard(services.skills, self._caller))
        self.providers = cast(ProvidersAPI, guard(services.providers, self._caller))
        self.engine = cast(EngineAPI, guard(services.engine, self._caller))
        self.tasks = cast(TasksAPI, guard(services.tasks, self._caller))
        self.memory = cast(MemoryAPI, guard(services.memory, self._caller))
        self.governance = cast(GovernanceAPI, guard(services.governance, self._caller))
        self.audit = cast(AuditAPI, guard(services.audit, self._caller))

    @property
    def principal(self) -> Principal:
        """Who the session acts as, as of its last check."""
        return self._caller.principal

    @property
    def denials(self) -> int:
        """Calls of this session that were refused (SOS-5004)."""
        return self._caller.denials

    async def refresh(self) -> Principal:
        """Re-validate the token now: its principal, or SOS-5002 (revoked), 5003 (expired), 5006 (tenant not
        active). Every session call does this first."""
        return await self._caller.refresh()

    async def need(self, scope: str) -> Principal:
        """The re-validated principal if it holds ``scope``; else SOS-5004 (counted as a denial)."""
        return await self._caller.need(scope)

    async def may_read(self, address: str) -> Principal:
        """The re-validated principal if it may read ``address`` (``bus:read``; its own inbox or a channel)."""
        principal = await self._caller.need("bus:read")
        if not principal.admin:
            self._caller.own("inbox", "address", address)
        return principal

    def __repr__(self) -> str:
        return f"Session(tenant={self.tenant!r}, agent={self.agent!r})"
