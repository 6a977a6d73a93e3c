"""Storage backends, chosen by URL through one alias table and imported lazily.

``memory://`` (in-process), ``sqlite:///path/to/file.db`` (the embedded default; durable; several processes on
one host), ``redis://host:port/db`` (several hosts; needs ``pip install 'sos-kernel[redis]'``),
``redis+cluster://host:port[,host:port...]/`` (a Redis Cluster; same extra). Each backend
declares what it implements in :class:`Implements`; tests and callers consult the declaration, never the name.
"""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

from ..a2a_tasks.store import A2ATaskStore
from ..audit.store import AuditStore
from ..bus.store import BusStore
from ..checkpoints.store import CheckpointStore
from ..errors import MissingDependency
from ..governance.store import GovernanceStore
from ..identity.store import IdentityStore, RegistryStore
from ..ledger.store import LedgerStore
from ..memory.store import MemoryStore
from ..providers.store import ProviderStore
from ..refusals import bad_url
from ..replies import ReplyStore
from ..skills.store import SkillStore
from ..tasks.store import TaskStore

__all__ = [
    "BACKEND_ALIASES",
    "MEMORY_ALIASES",
    "Backend",
    "Implements",
    "check_url",
    "open_backend",
    "open_memory_store",
    "resolve_backend",
]


@dataclass(frozen=True, slots=True)
class Implements:
    """What a backend guarantees.

    ``durable``: survives a process restart. ``multi_process``: several processes on one host share it.
    ``multi_host``: several hosts share it. ``push_wakeups``: a blocked reader is woken by the engine rather than
    by polling. ``trio``: works under trio as well as asyncio (the Redis client is asyncio-only).
    """

    durable: bool
    multi_process: bool
    multi_host: bool
    push_wakeups: bool
    trio: bool


class Backend(ABC):
    """One engine's stores for every service, opened from a URL and closed with ``aclose()``."""

    name: ClassVar[str]
    implements: ClassVar[Implements]
    bus: BusStore
    ledger: LedgerStore
    identity: IdentityStore
    registry: RegistryStore
    skills: SkillStore
    replies: ReplyStore
    providers: ProviderStore
    tasks: TaskStore
    memory: MemoryStore
    governance: GovernanceStore
    audit: AuditStore
    checkpoints: CheckpointStore
    a2a_tasks: A2ATaskStore

    @classmethod
    @abstractmethod
    async def connect(cls, url: str, **options: Any) -> Backend:
        """Open the engine named by ``url``; raises SOS-6030 when it cannot be reached."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and files. Idempotent."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


BACKEND_ALIASES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("sos_kernel.backends.memory", "MemoryBackend", None),
    "sqlite": ("sos_kernel.backends.sqlite", "SQLiteBackend", None),
    "redis": ("sos_kernel.backends.redis", "RedisBackend", "redis"),
    "rediss": ("sos_kernel.backends.redis", "RedisBackend", "redis"),
    "redis+cluster": ("sos_kernel.backends.redis", "RedisBackend", "redis"),
    "rediss+cluster": ("sos_kernel.backends.redis", "RedisBackend", "redis"),
}
"""URL scheme → (module, class, extra that provides its engine client)."""


KERNEL_URLS = "memory://, sqlite:///path/to/file.db or redis://host:port/0"
"""What a kernel URL looks like, as refusals say it."""


def check_url(url: str, field: str = "URL", expected: str = "a URL") -> SplitResult:
    """``url``'s parts, or SOS-4006 when it cannot name anything: a control character (raw or percent-encoded,
    like ``%00``), a malformed host (``[::1``) or a port that is not an integer in 0-65535."""
    if not isinstance(url, str):
        raise bad_url(field, url, expected)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in unquote(url)):
        raise bad_url(field, url, f"{expected} (it contains a control character)", url=repr(url)[:200])
    try:
        parts = urlsplit(url)
        for host in parts.netloc.rpartition("@")[2].split(","):  # a cluster URL lists several host:port seeds
            urlsplit(f"//{host}").port  # noqa: B018 -- reading it validates it
    except ValueError as exc:
        raise bad_url(field, url, f"{expected} ({exc})", url=url) from None
    return parts


def _slashes_fixed(url: str) -> str | None:
    """``url`` with its ``scheme:`` written ``scheme://`` (``sqlite:/sos.db`` -> ``sqlite:///sos.db``)."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() not in BACKEND_ALIASES:
        return None
    if scheme.lower() == "sqlite":
        return f"{scheme}:///{rest.lstrip('/')}"
    return f"{scheme}://{rest.lstrip('/')}"


def resolve_backend(url: str) -> type[Backend]:
    """The backend class for ``url``'s scheme, imported on first use.

    Raises SOS-4006 for a malformed URL (see :func:`check_url`), a scheme not followed by ``://`` (with the URL
    probably meant) or an unknown scheme (with the closest known one), and SOS-6032 when the backend's extra is not
    installed (with the pip command that fixes it).
    """
    known = sorted(BACKEND_ALIASES)
    if not isinstance(url, str) or "://" not in url:
        fixed = _slashes_fixed(url) if isinstance(url, str) else None
        what = f"a kernel URL: {KERNEL_URLS}" + (" (the scheme is followed by '://')" if fixed else "")
        raise bad_url("URL", url, what, fixed, known=known)
    scheme = check_url(url, "URL", f"a kernel URL: {KERNEL_URLS}").scheme.lower()
    target = BACKEND_ALIASES.get(scheme)
    if target is None:
        close = difflib.get_close_matches(scheme, list(BACKEND_ALIASES), n=1)
        meant = close[0] + url[len(scheme) :] if close else None
        what = f"a kernel URL: no backend {scheme!r} (known: {', '.join(known)})"
        closest = close[0] if close else None
        raise bad_url("URL", url, what, meant, scheme=scheme, known=known, closest=closest)
    module_name, class_name, extra = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith("sos_kernel"):
            raise
        pip = f"pip install 'sos-kernel[{extra}]'"
        raise MissingDependency(
            f"the {scheme} backend needs the {exc.name!r} package: {pip}", details={"pip": pip, "missing": exc.name}
        ) from exc
    backend: type[Backend] = getattr(module, class_name)
    return backend


async def open_backend(url: str, **options: Any) -> Backend:
    """Resolve and connect the backend for ``url``."""
    return await resolve_backend(url).connect(url, **options)


MEMORY_ALIASES: dict[str, tuple[str, str, str]] = {
    "postgresql": ("sos_kernel.backends.pgvector_memory", "PgVectorMemoryStore", "pgvector"),
    "postgres": ("sos_kernel.backends.pgvector_memory", "PgVectorMemoryStore", "pgvector"),
}
"""Memory URL scheme (``sos_kernel.open(url, memory=...)``) → (module, class, extra that provides its client)."""


async def open_memory_store(url: str) -> MemoryStore:
    """The memory store a ``memory=`` URL names, connected; SOS-4006 for an unknown scheme, SOS-6032 for a
    missing extra, SOS-6030 when the engine cannot be reached."""
    scheme = check_url(url, "memory URL", "a memory URL: postgresql://user@host/db").scheme.lower()
    target = MEMORY_ALIASES.get(scheme)
    if target is None:
        raise bad_url(
            "memory URL", url, f"a memory URL: postgresql://user@host/db (known: {', '.join(MEMORY_ALIASES)})"
        )
    module_name, class_name, extra = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("sos_kernel"):
            raise
        pip = f"pip install 'sos-kernel[{extra}]'"
        raise MissingDependency(
            f"the {scheme} memory store needs the {exc.name!r} package: {pip}",
            details={"pip": pip, "missing": exc.name},
        ) from exc
    store: MemoryStore = await getattr(module, class_name).connect(url)
    return store
