"""What the memory service returns, and the limits it enforces per tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Hit", "MemoryLimits", "MemoryRecord", "NamespaceInfo"]


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One remembered text: its id in its namespace, text, metadata and times (``expires_at`` None: no TTL).

    ``replayed`` is True when ``remember`` found the same content already stored under this id.
    """

    id: str
    namespace: str
    text: str
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """One recall result: cosine similarity ``score`` in [-1, 1] (higher is closer)."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """A namespace: how many memories it holds (expired ones not yet purged included), its embedder (``""``
    when its vectors came from callers) and dimensions."""

    name: str
    count: int
    embedder: str
    dimensions: int


AGENT_NAMESPACES_SHARE_DIVISOR = 10
"""One agent's own namespaces (``agent:<name>`` and under it) are at most ``namespaces_max`` divided by this: a
tenth, so a few agents cannot take every namespace of the tenant (it takes ten, each with a token)."""
SHARED_NAMESPACES_SHARE_DIVISOR = 10
"""The shared namespaces (every name not starting ``agent:``) are at most ``namespaces_max`` divided by this: with
an agent's own tenth, one agent reaches at most a fifth of the tenant's namespaces."""
AGENT_STORAGE_SHARE_DIVISOR = 2
"""One agent's own namespaces hold at most ``memories_max`` and ``bytes_max`` divided by this, together."""
SHARED_STORAGE_SHARE_DIVISOR = 4
"""The shared namespaces hold at most ``memories_max`` and ``bytes_max`` divided by this, together: with an agent's
own half, one agent fills at most three quarters of the tenant's memories and bytes, so another still stores."""


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """Per-tenant bounds of the memory service; a call beyond one is refused (SOS-4010) and writes nothing.

    ``memories_max`` and ``bytes_max`` (text + metadata JSON + 4 bytes per dimension) bound a tenant's stored
    memories, ``namespaces_max`` its namespaces, of which one agent's own are at most
    :attr:`agent_namespaces_max` and the shared ones at most :attr:`shared_namespaces_max`, so no agent can take
    the namespaces another needs. Likewise one agent's own namespaces hold at most :attr:`agent_memories_max`
    memories and :attr:`agent_bytes_max` bytes, the shared ones at most :attr:`shared_memories_max` and
    :attr:`shared_bytes_max`; the others bound one call.
    """

    memories_max: int = 1_000_000
    bytes_max: int = 4 * 1024**3
    namespaces_max: int = 1_000
    text_chars_max: int = 32_768
    metadata_bytes_max: int = 8_192
    k_max: int = 1_000
    dimensions_max: int = 4_096
    where_terms_max: int = 32
    batch_max: int = 1_000
    list_limit_max: int = 1_000
    ttl_s_max: float = 10 * 365 * 86_400.0

    @property
    def agent_namespaces_max(self) -> int:
        """One agent's own namespaces: ``namespaces_max // AGENT_NAMESPACES_SHARE_DIVISOR``, at least 1."""
        return max(1, self.namespaces_max // AGENT_NAMESPACES_SHARE_DIVISOR)

    @property
    def shared_namespaces_max(self) -> int:
        """The tenant's shared namespaces: ``namespaces_max // SHARED_NAMESPACES_SHARE_DIVISOR``, at least 1."""
        return max(1, self.namespaces_max // SHARED_NAMESPACES_SHARE_DIVISOR)

    @property
    def agent_memories_max(self) -> int:
        """One agent's own memories: ``memories_max // AGENT_STORAGE_SHARE_DIVISOR``, at least 1."""
        return max(1, self.memories_max // AGENT_STORAGE_SHARE_DIVISOR)

    @property
    def shared_memories_max(self) -> int:
        """The shared namespaces' memories: ``memories_max // SHARED_STORAGE_SHARE_DIVISOR``, at least 1."""
        return max(1, self.memories_max // SHARED_STORAGE_SHARE_DIVISOR)

    @property
    def agent_bytes_max(self) -> int:
        """One agent's own bytes: ``bytes_max // AGENT_STORAGE_SHARE_DIVISOR``, at least 1."""
        return max(1, self.bytes_max // AGENT_STORAGE_SHARE_DIVISOR)

    @property
    def shared_bytes_max(self) -> int:
        """The shared namespaces' bytes: ``bytes_max // SHARED_STORAGE_SHARE_DIVISOR``, at least 1."""
        return max(1, self.bytes_max // SHARED_STORAGE_SHARE_DIVISOR)
