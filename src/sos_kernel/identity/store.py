"""The identity and registry store seams: small atomic primitives per engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import Tenant, TokenInfo

__all__ = ["IdentityStore", "RegistryEntry", "RegistryStore"]


class IdentityStore(ABC):
    """Tenants, token digests, and capability use counters / revocations.

    ``audits_writes``: the writes that take ``audit`` (an :class:`~sos_kernel.audit.AuditDraft`) append it to the
    tenant's audit chain in the same step as their effect (none when they write nothing); a store that does not
    declare it ignores ``audit`` and the service appends the record right after."""

    audits_writes: bool = False

    @abstractmethod
    async def create_tenant(self, tenant: Tenant) -> bool:
        """Store a new tenant; False (and nothing written) if the slug exists."""

    @abstractmethod
    async def get_tenant(self, slug: str) -> Tenant | None:
        """The tenant, or None."""

    @abstractmethod
    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, by slug."""

    @abstractmethod
    async def put_tenant(self, tenant: Tenant, audit: Any = None) -> None:
        """Replace an existing tenant's record (status, plan, seats)."""

    @abstractmethod
    async def issue_token(
        self, digest: str, info: TokenInfo, seats_max: int | None, now: datetime, audit: Any = None
    ) -> bool:
        """Store a token under its digest, atomically refusing (False) when ``info.agent`` is a new seat and the
        tenant already has ``seats_max`` agents with live tokens."""

    @abstractmethod
    async def token_by_digest(self, digest: str) -> tuple[str, TokenInfo] | None:
        """The stored digest and token record whose SHA-256 digest is ``digest``."""

    @abstractmethod
    async def list_tokens(self, tenant: str) -> list[TokenInfo]:
        """The tenant's tokens (no digests), oldest first."""

    @abstractmethod
    async def revoke_token(self, tenant: str, token_id: str, now: datetime, audit: Any = None) -> bool:
        """Mark a token revoked; False if unknown in this tenant (or already revoked)."""

    @abstractmethod
    async def consume_uses(self, tenant: str, links: Sequence[tuple[str, int]], audit: Any = None) -> bool:
        """Spend one use of every ``(use_key, initial_uses)`` atomically: all or none; False when any link has
        none left. A counter is created at ``initial_uses`` only when its key is first spent; afterwards
        ``initial_uses`` is ignored. ``use_key`` is :func:`~sos_kernel.identity.capability.use_keys`'s digest of
        the signed link, never a capability id a signer could choose."""

    @abstractmethod
    async def revoke_capability(self, tenant: str, capability_id: str, audit: Any = None) -> None:
        """Record a capability id as revoked (its descendants fail verification too)."""

    @abstractmethod
    async def revoked_capabilities(self, tenant: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are revoked."""


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """A registry record: the card's JSON, its extras (public key, endpoints, signature) and its times."""

    name: str
    card: bytes
    extras: bytes
    registered_at: float
    last_seen: float


class RegistryStore(ABC):
    """Agent cards per tenant."""

    @abstractmethod
    async def put(self, tenant: str, entry: RegistryEntry) -> bool:
        """Create or replace an agent's entry (keeping the first ``registered_at``); True when it was new."""

    @abstractmethod
    async def touch(self, tenant: str, name: str, now: float) -> bool:
        """Set ``last_seen``; False if the agent is unknown."""

    @abstractmethod
    async def get(self, tenant: str, name: str) -> RegistryEntry | None:
        """The entry, or None."""

    @abstractmethod
    async def list(self, tenant: str) -> list[RegistryEntry]:
        """Every entry of the tenant, by name."""

    @abstractmethod
    async def delete(self, tenant: str, name: str) -> bool:
        """Remove the entry; False if unknown."""
