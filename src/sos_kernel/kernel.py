"""Opening a kernel: ``async with sos_kernel.open("sqlite:///sos.db") as kernel: ...``.

The URL picks the backend (``memory://``, ``sqlite:///path``, ``redis://host:port/db``). With no URL and no
``SOS_URL`` environment variable the kernel is embedded in ``./sos.db`` (SQLite, in the current working
directory). ``kernel`` is the trusted, in-process handle on the ``default`` tenant; ``kernel.tenant(slug)`` gives
the same API scoped to another tenant, whose data is namespaced apart from every other tenant's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Generator, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._background import Background
from .backends import Backend, Implements, open_backend
from .bus import Bus, BusLimits
from .checkpoints import Checkpoints
from .contracts import TypeCatalogue
from .errors import InvalidArgument, KernelClosed, SOSError
from .identity.models import Principal
from .identity.service import Authenticator, Capabilities, Tenants, Tokens, check_tenant
from .ledger import Ledger
from .providers import Engine, ProviderRuntime, Providers
from .registry import REGISTRY_TTL_S, Registry
from .skills import SKILL_EVENT_TYPE, SkillExecutedPayload, Skills

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DEFAULT_TENANT", "DEFAULT_URL", "Kernel", "TenantView", "check_tenant", "open"]

DEFAULT_URL = "sqlite:///sos.db"
"""The embedded default: ``sos.db`` in the current working directory."""
DEFAULT_TENANT = "default"


class TenantView:
    """The kernel's services scoped to one tenant."""

    def __init__(self, kernel: Kernel, slug: str) -> None:
        self.kernel = kernel
        self.slug = slug
        self.bus = Bus(kernel.backend.bus, slug, kernel.catalogue, kernel.limits, closed=kernel._closed)
        self.ledger = Ledger(kernel.backend.ledger, slug)
        self.registry = Registry(kernel.backend.registry, slug, self.bus, ttl_s=kernel.registry_ttl_s)
        self.tokens = Tokens(kernel.backend.identity, slug, kernel._auth)
        self.capabilities = Capabilities(kernel.backend.identity, slug)
        self.bus.agent_status = self.registry.status
        self.skills = Skills(kernel.backend.skills, slug, self.ledger, self.bus, self.capabilities)
        self.providers = Providers(kernel.backend.providers, slug, kernel.provider_runtime)
        self.engine = Engine(self.providers, self.ledger, kernel.backend.providers)
        self.checkpoints = Checkpoints(kernel.backend.checkpoints, slug)

    def __repr__(self) -> str:
        return f"TenantView({self.slug!r})"


class Kernel:
    """The coordination kernel over one backend. Open with :func:`open`; close with ``aclose()``.

    ``bus`` (and the other services as they land) act on the ``default`` tenant; ``tenant(slug)`` scopes them.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Backend | None = None,
        limits: BusLimits | None = None,
        catalogue: TypeCatalogue | None = None,
        registry_ttl_s: float = REGISTRY_TTL_S,
        provider_keys: Mapping[str, str] | None = None,
        provider_hosts: Collection[str] | None = None,
        **options: Any,
    ) -> None:
        self.url = url or os.environ.get("SOS_URL") or DEFAULT_URL
        self._backend = backend
        self._options = options
        self.limits = limits or BusLimits()
        self.catalogue = catalogue or TypeCatalogue()
        if SKILL_EVENT_TYPE not in self.catalogue:
            self.catalogue.register(SKILL_EVENT_TYPE, SkillExecutedPayload)
        self._closed = anyio.Event()
        self._tenants: dict[str, TenantView] = {}
        self.registry_ttl_s = float(registry_ttl_s)
        self.on_denial: list[Callable[[Principal, str], None]] = []
        self.denials: Counter[str] = Counter()
        self._auth_cache: Authenticator | None = None
        self._sweeper = Background(self._sweep_chunks)
        self.provider_runtime = ProviderRuntime(provider_keys, provider_hosts)
        if not isinstance(self.limits, BusLimits):
            raise InvalidArgument("limits must be a BusLimits")
        if not (self.limits.chunk_ttl_s > 0 and self.limits.chunk_sweep_interval_s > 0):
            raise InvalidArgument("chunk_ttl_s and chunk_sweep_interval_s must be > 0")

    async def connect(self) -> Kernel:
        """Open the backend (done for you by ``async with`` or ``await``)."""
        if self._closed.is_set():
            raise KernelClosed("this kernel was closed; open a new one")
        if self._backend is None:
            self._backend = await open_backend(self.url, **self._options)
        self._sweeper.start()
        return self

    async def _sweep_chunks(self) -> None:
        # Unfinished chunk groups expire on a timer even on a bus nobody publishes chunks to any more.
        period_s = min(self.limits.chunk_sweep_interval_s, self.limits.chunk_ttl_s)
        while True:
            await anyio.sleep(period_s)
            try:
                await self.backend.bus.sweep_chunks()
            except SOSError:
                continue  # the engine is away: the next tick, or the next part published, sweeps

    def __await__(self) -> Generator[Any, None, Kernel]:
        return self.connect().__await__()

    async def __aenter__(self) -> Kernel:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the backend; later calls raise SOS-6005. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            await self._sweeper.aclose()
            await self.provider_runtime.aclose()
        finally:
            if self._backend is not None:
                with anyio.CancelScope(shield=True):
                    await self._backend.aclose()

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` ran."""
        return self._closed.is_set()

    @property
    def backend(self) -> Backend:
        """The connected backend."""
        if self._backend is None:
            raise KernelClosed("the kernel is not open; use 'async with sos_kernel.open(...)' or 'await'")
        return self._backend

    @property
    def implements(self) -> Implements:
        """What the backend guarantees (durable, multi-process, multi-host, push wake-ups)."""
        return self.backend.implements

    def tenant(self, slug: str) -> TenantView:
        """The same API scoped to tenant ``slug``."""
        check_tenant(slug)
        view = self._tenants.get(slug)
        if view is None:
            view = self._tenants[slug] = TenantView(self, slug)
        return view

    @property
    def bus(self) -> Bus:
        """The bus of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).bus

    @property
    def ledger(self) -> Ledger:
        """The ledger of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).ledger

    @property
    def skills(self) -> Skills:
        """The skills marketplace of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).skills

    @property
    def providers(self) -> Providers:
        """The provider matrix of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).providers

    @property
    def engine(self) -> Engine:
        """The engine (chat through the providers) of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).engine

    @property
    def registry(self) -> Registry:
        """The agent registry of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).registry

    @property
    def _auth(self) -> Authenticator:
        if self._auth_cache is None:
            self._auth_cache = Authenticator(self.backend.identity)
        return self._auth_cache

    @property
    def tenants(self) -> Tenants:
        """Create and manage tenants (a system operation of this trusted handle)."""

        async def announce(slug: str, text: str) -> None:
            await self.tenant(slug).bus.send("agent:kernel", "sos:channel:system:events", text)

        return Tenants(
            self.backend.identity, self._auth, tokens_of=lambda slug: self.tenant(slug).tokens, announce=announce
        )

    async def session(self, token: str | None) -> Session:
        """The kernel's API scoped to ``token``'s tenant and principal, every call checked (see ``session``).

        Raises SOS-5001 (no token), 5002 (unknown or revoked), 5003 (expired), 5006 (tenant not active).
        """
        from .identity.service import token_digest
        from .session import Session

        principal = await self._auth.principal(token)
        digest = token_digest(str(token))
        auth = self._auth

        async def refresh() -> Principal:
            return await auth.principal_for_digest(digest)

        return Session(self.tenant(principal.tenant), principal, refresh, self._record_denial)

    def _record_denial(self, principal: Principal, reason: str) -> None:
        self.denials[principal.tenant] += 1
        for hook in list(self.on_denial):
            hook(principal, reason)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._backend else "new")
        return f"Kernel({self.url!r}, {state})"


def open(url: str | None = None, **options: Any) -> Kernel:
    """A kernel on ``url`` (default: ``$SOS_URL``, else ``sqlite:///sos.db`` in the working directory).

    Use as ``async with sos_kernel.open(url) as kernel`` or ``kernel = await sos_kernel.open(url)``. Options:
    ``limits=BusLimits(...)``, ``catalogue=TypeCatalogue()``, ``backend=<Backend instance>``,
    ``provider_keys={provider id: key}`` and ``provider_hosts=[host, ...]`` (see docs/providers.md) and the
    backend's own options (see docs/backends.md). Raises SOS-4006 for an unknown scheme, SOS-6032 for a missing
    extra, SOS-6030 when the engine cannot be reached.
    """
    return Kernel(url, **options)
