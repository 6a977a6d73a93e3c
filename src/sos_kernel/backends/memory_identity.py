"""In-process identity and registry stores (the reference for the other engines)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..identity.models import Tenant, TokenInfo
from ..identity.store import IdentityStore, RegistryEntry, RegistryStore

__all__ = ["MemoryIdentityStore", "MemoryRegistryStore", "seat_taken"]


def seat_taken(tokens: Sequence[TokenInfo], agent: str | None, seats_max: int | None, now: datetime) -> bool:
    """Whether issuing a token to ``agent`` would exceed ``seats_max`` given the tenant's ``tokens``."""
    if agent is None or seats_max is None:
        return False
    seated = {t.agent for t in tokens if t.agent is not None and t.live(now)}
    return agent not in seated and len(seated) >= seats_max


class MemoryIdentityStore(IdentityStore):
    """Dicts; every method runs without awaiting, so it is atomic on one event loop. Given an audit log
    (``audit``, set by the memory backend), a write given a record appends it in the same step."""

    def __init__(self, audit: Any = None) -> None:
        self.audit = audit
        self.audits_writes = audit is not None
        self._tenants: dict[str, Tenant] = {}
        self._tokens: dict[str, TokenInfo] = {}
        self._by_tenant: dict[str, list[str]] = {}
        self._uses: dict[tuple[str, str], int] = {}
        self._revoked: set[tuple[str, str]] = set()

    async def create_tenant(self, tenant: Tenant) -> bool:
        if tenant.slug in self._tenants:
            return False
        self._tenants[tenant.slug] = tenant
        return True

    async def get_tenant(self, slug: str) -> Tenant | None:
        return self._tenants.get(slug)

    async def list_tenants(self) -> list[Tenant]:
        return [self._tenants[s] for s in sorted(self._tenants)]

    async def put_tenant(self, tenant: Tenant, audit: Any = None) -> None:
        self._record(tenant.slug, audit)
        self._tenants[tenant.slug] = tenant

    def _record(self, tenant: str, draft: Any) -> None:
        """Append ``draft`` (an ``AuditDraft``) before the effect, in its step: a failed append leaves none."""
        if draft is not None and self.audit is not None:
            self.audit.append_now(tenant, draft)

    async def issue_token(
        self, digest: str, info: TokenInfo, seats_max: int | None, now: datetime, audit: Any = None
    ) -> bool:
        tokens = [self._tokens[d] for d in self._by_tenant.get(info.tenant, [])]
        if seat_taken(tokens, info.agent, seats_max, now):
            return False
        self._record(info.tenant, audit)
        self._tokens[digest] = info
        self._by_tenant.setdefault(info.tenant, []).append(digest)
        return True

    async def token_by_digest(self, digest: str) -> tuple[str, TokenInfo] | None:
        found = self._tokens.get(digest)
        return (digest, found) if found is not None else None

    async def list_tokens(self, tenant: str) -> list[TokenInfo]:
        return [self._tokens[d] for d in self._by_tenant.get(tenant, [])]

    async def revoke_token(self, tenant: str, token_id: str, now: datetime, audit: Any = None) -> bool:
        for digest in self._by_tenant.get(tenant, []):
            info = self._tokens[digest]
            if info.id == token_id and info.revoked_at is None:
                self._record(tenant, audit)
                self._tokens[digest] = replace(info, revoked_at=now)
                return True
        return False

    async def consume_uses(self, tenant: str, links: Sequence[tuple[str, int]], audit: Any = None) -> bool:
        counts = {key: self._uses.get((tenant, key), initial) for key, initial in links}
        if any(n <= 0 for n in counts.values()):
            return False
        self._record(tenant, audit)
        for key, n in counts.items():
            self._uses[(tenant, key)] = n - 1
        return True

    async def revoke_capability(self, tenant: str, capability_id: str, audit: Any = None) -> None:
        self._record(tenant, audit)
        self._revoked.add((tenant, capability_id))

    async def revoked_capabilities(self, tenant: str, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if (tenant, i) in self._revoked}


class MemoryRegistryStore(RegistryStore):
    """Agent cards in a dict."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], RegistryEntry] = {}

    async def put(self, tenant: str, entry: RegistryEntry) -> bool:
        old = self._entries.get((tenant, entry.name))
        if old is not None:
            entry = replace(entry, registered_at=old.registered_at)
        self._entries[(tenant, entry.name)] = entry
        return old is None

    async def touch(self, tenant: str, name: str, now: float) -> bool:
        old = self._entries.get((tenant, name))
        if old is None:
            return False
        self._entries[(tenant, name)] = replace(old, last_seen=now)
        return True

    async def get(self, tenant: str, name: str) -> RegistryEntry | None:
        return self._entries.get((tenant, name))

    async def list(self, tenant: str) -> list[RegistryEntry]:
        return [e for (t, _), e in sorted(self._entries.items()) if t == tenant]

    async def delete(self, tenant: str, name: str) -> bool:
        return self._entries.pop((tenant, name), None) is not None
