"""Identity value types: tenants, tokens, scopes, principals."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "ADMIN_SCOPE",
    "DEFAULT_AGENT_SCOPES",
    "PLAN_SEATS",
    "SCOPES",
    "IssuedToken",
    "Principal",
    "PrincipalView",
    "Tenant",
    "TenantStatus",
    "TokenInfo",
]

TenantStatus = Literal["provisioning", "active", "suspended", "cancelled"]
Plan = Literal["starter", "growth", "scale"]

PLAN_SEATS: dict[str, int | None] = {"starter": 1, "growth": 5, "scale": None}
"""Agent seats per plan (None: unlimited). A seat is an agent holding at least one live token; admin tokens (not
bound to an agent) take no seat. Override per tenant with ``tenants.create(..., seats=N)``."""

ADMIN_SCOPE = "admin"
SCOPES: dict[str, str] = {
    ADMIN_SCOPE: "everything in the tenant: tokens, other agents' inboxes and accounts, system operations",
    "bus:read": "subscribe to and read the caller's inbox and channels",
    "bus:write": "publish as the caller's agent",
    "registry:read": "look agents up",
    "registry:write": "register, heartbeat and deregister the caller's own agent",
    "ledger:read": "read the caller's own accounts and transfers",
    "ledger:write": "open the caller's own accounts and move money out of them",
    "ledger:admin": "mint, settle, move any account's money, set prices, read usage",
    "usage:write": "record usage events for the caller's tenant",
    "skills:read": "look skills up and browse the marketplace",
    "skills:publish": "publish versions of the caller's own skills",
    "skills:invoke": "record invocations paid from the caller's own account",
    "skills:verify": "record verification verdicts and resolve disputes",
    "providers:read": "list the tenant's providers and their breakers' health",
    "providers:admin": "register and remove providers, run their health probes",
    "engine:chat": "chat through the tenant's providers, paid from the caller's own wallet",
    "tasks:read": "read the tenant's tasks and board",
    "tasks:write": "create tasks funded from the caller's own account, claim, work on and review them as itself",
    "tasks:admin": "act on any task as any agent (claims, reviews, cancels), sweep expired tasks",
    "memory:read": "recall, get and list memories of shared namespaces and the caller's own agent:<name>/...",
    "memory:write": "remember and forget in shared namespaces and the caller's own agent:<name>/...",
    "memory:admin": "read and write every namespace of the tenant, other agents' included",
    "governance:read": "read the tenant's policy, ask it about an action, list pending approvals",
    "governance:review": "approve or deny pending approvals, as a reviewer the policy names",
    "governance:admin": "set and remove the tenant's policy; decide any approval",
    "audit:read": "read, verify and export the tenant's audit chain",
    "audit:admin": "sign a checkpoint of the tenant's audit chain",
}
"""Every scope a token may carry, and what it allows."""

DEFAULT_AGENT_SCOPES: tuple[str, ...] = (
    "bus:read",
    "bus:write",
    "registry:read",
    "registry:write",
    "ledger:read",
    "ledger:write",
    "usage:write",
    "skills:read",
    "skills:publish",
    "skills:invoke",
    "providers:read",
    "engine:chat",
    "tasks:read",
    "tasks:write",
    "memory:read",
    "memory:write",
)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant: its slug, plan, seat limit (None: unlimited), status and creation time."""

    slug: str
    plan: str
    seats_max: int | None
    status: TenantStatus
    created_at: datetime
    channels: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """Only active tenants may act."""
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the kernel keeps about a token: never the token itself, only its digest (stored apart)."""

    id: str
    tenant: str
    agent: str | None
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    label: str = ""

    def live(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A newly issued token. ``secret`` is the bearer token: it is returned here once and never stored."""

    id: str
    secret: str
    tenant: str
    agent: str | None
    scopes: tuple[str, ...]
    expires_at: datetime | None

    def __repr__(self) -> str:  # never print the secret
        return f"IssuedToken(id={self.id!r}, tenant={self.tenant!r}, agent={self.agent!r}, scopes={self.scopes!r})"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session acts as: a tenant, optionally an agent, and the token's scopes."""

    tenant: str
    agent: str | None
    scopes: frozenset[str]
    token_id: str

    @property
    def admin(self) -> bool:
        """Holds the tenant's admin scope."""
        return ADMIN_SCOPE in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether the token carries ``scope`` (admin carries every scope)."""
        return self.admin or scope in self.scopes


class PrincipalView(ABC):
    """``tenant``, ``agent`` and ``scopes`` of a handle that holds a :class:`Principal` (a session, a client)."""

    @property
    @abstractmethod
    def principal(self) -> Principal:
        """Who the handle acts as."""

    @property
    def tenant(self) -> str:
        """The tenant slug of the token."""
        return self.principal.tenant

    @property
    def agent(self) -> str | None:
        """The agent address the token is bound to (None for a tenant-wide token)."""
        return self.principal.agent

    @property
    def scopes(self) -> frozenset[str]:
        """The token's scopes."""
        return self.principal.scopes
