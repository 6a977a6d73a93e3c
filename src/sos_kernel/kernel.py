"""Opening a kernel: ``async with sos_kernel.open("sqlite:///sos.db") as kernel: ...``.

The URL picks the backend (``memory://``, ``sqlite:///path``, ``redis://host:port/db``). With no URL and no
``SOS_URL`` environment variable the kernel is embedded in ``./sos.db`` (SQLite, in the current working
directory). ``kernel`` is the trusted, in-process handle on the ``default`` tenant; ``kernel.tenant(slug)`` gives
the same API scoped to another tenant, whose data is namespaced apart from every other tenant's.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Collection, Generator, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._background import Background
from ._observe import Events
from .a2a_tasks import A2ATasks
from .audit import Audit
from .backends import Backend, Implements, open_backend
from .bus import Bus, BusLimits
from .checkpoints import Checkpoints
from .contracts import GateVerdictMessage, TypeCatalogue, build_message
from .errors import InvalidArgument, KernelClosed, SOSError
from .governance import Governance, Governor, PolicyCache, use
from .governance.service import GOVERNANCE_CHANNEL
from .identity.keys import AgentKey
from .identity.models import Principal
from .identity.service import Authenticator, Capabilities, ForgetHook, Tenants, Tokens, check_tenant
from .ledger import Ledger
from .memory import Embedder, LexicalEmbedder, Memory, MemoryLimits, MemoryStore
from .providers import Engine, ProviderRuntime, Providers
from .registry import REGISTRY_TTL_S, Registry
from .skills import SKILL_EVENT_TYPE, SkillExecutedPayload, Skills
from .tasks import Tasks

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
        self.tasks = Tasks(kernel.backend.tasks, slug, self.ledger, self.bus)
        self.bus.events = self.ledger.events = kernel.events
        self.memory = Memory(kernel.memory_store, slug, kernel.embedder, kernel.memory_limits, self.capabilities)
        self.audit = Audit(kernel.backend.audit, slug, kernel.audit_key, kernel.audit_trusted_keys)
        self.governance = Governance(kernel.backend.governance, slug, self.audit, kernel._policies, self._notify)
        self.governance.loop_token = kernel._loop_token
        self.governor = Governor(self.governance, self.audit)
        self.ledger.audit = self.audit.record
        self.ledger.landed = self.audit.landed
        self.tokens.audit = self.capabilities.audit = self.audit
        self.tasks.audit = self.skills.audit = self.audit
        self.checkpoints = Checkpoints(kernel.backend.checkpoints, slug)
        self.a2a_tasks = A2ATasks(kernel.backend.a2a_tasks, slug)

    async def _notify(self, kind: str, payload: dict[str, Any]) -> None:
        # approval requests and verdicts on the governance channel, for reviewers and dashboards; best effort
        message: dict[str, Any] = {"type": "gate_verdict", "source": "agent:kernel", "target": GOVERNANCE_CHANNEL}
        try:
            if kind == "gate_verdict":
                await self.bus.publish(build_message(GateVerdictMessage, {**message, "payload": payload}))
            else:
                await self.bus.send("agent:kernel", GOVERNANCE_CHANNEL, json.dumps({"approval": payload}))
        except SOSError:
            return

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
        provider_keys: Mapping[str, Any] | None = None,
        provider_hosts: Collection[str] | None = None,
        memory: str | MemoryStore | None = None,
        embedder: Embedder | None = None,
        memory_limits: MemoryLimits | None = None,
        audit_key: AgentKey | None = None,
        audit_trusted_keys: frozenset[str] | None = None,
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
        self.events = Events()
        """What the kernel does, counted per tenant, for listeners such as ``sos_kernel.ops.metrics``."""
        self._auth_cache: Authenticator | None = None
        self.on_forget: list[ForgetHook] = []
        """Called at once when a token is revoked or a tenant's status changes through this kernel, with a test of
        the principals it ends (a server ends its cached sessions of them); another process sees it within
        ``TOKEN_CACHE_TTL_S``."""
        self._sweeper = Background(self._sweep_chunks)
        self.provider_runtime = ProviderRuntime(provider_keys, provider_hosts)
        self._memory = memory
        self._memory_store: MemoryStore | None = memory if isinstance(memory, MemoryStore) else None
        self.embedder: Embedder = embedder if embedder is not None else LexicalEmbedder()
        self.memory_limits = memory_limits or MemoryLimits()
        _check_memory_options(memory, self.embedder, self.memory_limits)
        self.audit_key = audit_key or _audit_key()
        self.audit_trusted_keys = audit_trusted_keys
        self._policies = PolicyCache()
        self._loop_token: Any = None
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
        if self._memory_store is None and isinstance(self._memory, str):
            from .backends import open_memory_store

            try:
                self._memory_store = await open_memory_store(self._memory)
            except BaseException:
                await self.aclose()  # the backend is open: a kernel that failed to open holds nothing
                raise
        self._sweeper.start()
        self._loop_token = anyio.lowlevel.current_token()
        for view in self._tenants.values():
            view.governance.loop_token = self._loop_token
        use(self.governance)  # governed() tools act on the kernel opened most recently
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
        if self._tenants.get(DEFAULT_TENANT) is not None:
            from .governance import _default

            if _default and _default[0] is self._tenants[DEFAULT_TENANT].governance:
                use(None)
        try:
            await self._sweeper.aclose()
            await self.provider_runtime.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if self._memory_store is not None and isinstance(self._memory, str):
                        await self._memory_store.aclose()  # a store the kernel opened from a URL is its own
                finally:
                    if self._backend is not None:
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
    def tasks(self) -> Tasks:
        """The tasks (squad board) of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).tasks

    @property
    def memory(self) -> Memory:
        """The semantic memory of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).memory

    @property
    def memory_store(self) -> MemoryStore:
        """Where memories live: the ``memory=`` store given to :func:`open`, else the backend's own."""
        return self._memory_store or self.backend.memory

    @property
    def governance(self) -> Governance:
        """Policies, budgets and approvals of the ``default`` tenant (``set_policy`` takes any tenant)."""
        return self.tenant(DEFAULT_TENANT).governance

    @property
    def audit(self) -> Audit:
        """The audit chain of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).audit

    @property
    def registry(self) -> Registry:
        """The agent registry of the ``default`` tenant."""
        return self.tenant(DEFAULT_TENANT).registry

    @property
    def _auth(self) -> Authenticator:
        if self._auth_cache is None:
            self._auth_cache = Authenticator(self.backend.identity, self.on_forget)
        return self._auth_cache

    @property
    def tenants(self) -> Tenants:
        """Create and manage tenants (a system operation of this trusted handle)."""

        async def announce(slug: str, text: str) -> None:
            await self.tenant(slug).bus.send("agent:kernel", "sos:channel:system:events", text)

        tenants = Tenants(
            self.backend.identity, self._auth, tokens_of=lambda slug: self.tenant(slug).tokens, announce=announce
        )
        tenants.audit_of = lambda slug: self.tenant(slug).audit
        return tenants

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

        view = self.tenant(principal.tenant)
        return Session(view, principal, refresh, self._record_denial, view.governor)

    def _record_denial(self, principal: Principal, reason: str) -> None:
        self.denials[principal.tenant] += 1
        self.events.emit("denied", principal.tenant)
        for hook in list(self.on_denial):
            hook(principal, reason)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._backend else "new")
        return f"Kernel({self.url!r}, {state})"


def _audit_key() -> AgentKey:
    """``SOS_AUDIT_KEY`` (a 64-hex-digit Ed25519 seed) when set, else a key of this kernel's own."""
    seed = os.environ.get("SOS_AUDIT_KEY")
    if not seed:
        return AgentKey.generate()
    try:
        return AgentKey.from_seed(bytes.fromhex(seed))
    except ValueError as exc:
        raise InvalidArgument("SOS_AUDIT_KEY must be a 64-hex-digit Ed25519 seed") from exc


def open(
    url: str | None = None, memory: str | MemoryStore | None = None, embedder: Embedder | None = None, **options: Any
) -> Kernel:
    """A kernel on ``url`` (default: ``$SOS_URL``, else ``sqlite:///sos.db`` in the working directory).

    Use as ``async with sos_kernel.open(url) as kernel`` or ``kernel = await sos_kernel.open(url)``. Options:
    ``limits=BusLimits(...)``, ``catalogue=TypeCatalogue()``, ``backend=<Backend instance>``,
    ``provider_keys={provider id: key or {"key", "backend", "tenants"}}`` and ``provider_hosts=[host or
    host:port]`` (see docs/providers.md),
    ``audit_key=AgentKey`` (signs the audit chain's checkpoints; default ``$SOS_AUDIT_KEY``, else a new key),
    ``audit_trusted_keys=frozenset({public key hex})`` (the only keys ``audit.verify`` accepts) and the backend's
    own options (see docs/backends.md). ``memory`` puts memories elsewhere than the backend (a ``postgresql://``
    URL for pgvector, or a ``MemoryStore``); ``embedder`` embeds memory texts (default: ``LexicalEmbedder()``);
    ``memory_limits=MemoryLimits(...)`` bounds memory per tenant. Raises SOS-4006 for an unknown scheme,
    SOS-6032 for a missing extra, SOS-6030 when the engine cannot be reached.
    """
    return Kernel(url, memory=memory, embedder=embedder, **options)


def _check_memory_options(memory: Any, embedder: Any, limits: Any) -> None:
    if memory is not None and not isinstance(memory, str | MemoryStore):
        raise InvalidArgument("memory must be a memory URL (postgresql://...) or a MemoryStore")
    if not isinstance(embedder, Embedder):
        raise InvalidArgument("embedder must have name, dimensions and an async embed(texts)")
    if not isinstance(limits, MemoryLimits):
        raise InvalidArgument("memory_limits must be a MemoryLimits")
