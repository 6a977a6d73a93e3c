"""Tenants, tokens, authentication and capability use.

Tokens are opaque ``sk-{tenant}-{32 hex}`` strings from :mod:`secrets`. Only their SHA-256 digest is stored and
looked up; the comparison is :func:`hmac.compare_digest`. A raw token is returned once by :meth:`Tokens.issue`
and never appears in a store, a log, a ``repr`` or an error message.

Authentication caches a verified token for at most ``TOKEN_CACHE_TTL_S`` (1 s): a revocation or a tenant
suspension made in this process takes effect at once (a lookup in flight meanwhile is not cached); one made by
another process or host within that bound.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .._text import is_text
from ..contracts import RESERVED_AGENTS
from ..errors import (
    Forbidden,
    IdempotencyConflict,
    InvalidArgument,
    InvalidToken,
    LimitExceeded,
    MissingToken,
    NotFound,
    TenantInactive,
    TokenExpired,
)
from .capability import Capability, use_keys
from .keys import PublicKey
from .models import (
    ADMIN_SCOPE,
    DEFAULT_AGENT_SCOPES,
    PLAN_SEATS,
    SCOPES,
    IssuedToken,
    Principal,
    Tenant,
    TenantStatus,
    TokenInfo,
)
from .store import IdentityStore

__all__ = [
    "TOKEN_CACHE_TTL_S",
    "TOKEN_CHARS_MAX",
    "AuditHook",
    "AuditLog",
    "Authenticator",
    "Capabilities",
    "ForgetHook",
    "Tenants",
    "Tokens",
    "check_tenant",
    "token_digest",
]

AuditHook = Callable[..., Awaitable[Any]]
"""``record(kind, *, actor, action="", resource="", outcome="ok", details=None)``: the tenant's audit chain
(:meth:`sos_kernel.audit.Audit.record`), set by the kernel; identity events are recorded through it."""


class AuditLog(Protocol):
    """The tenant's audit chain as identity uses it (:class:`sos_kernel.audit.Audit`), set by the kernel."""

    def draft(
        self,
        kind: str,
        *,
        actor: str,
        action: str = "",
        resource: str = "",
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> Any:
        """A record to append (an ``AuditDraft``)."""

    async def append(self, draft: Any, *, stepped: bool, tenant: str | None = None) -> Any:
        """After the effect: append ``draft``, or only the checkpoints due when the store did (``stepped``)."""


def _step(store: IdentityStore, draft: Any) -> dict[str, Any]:
    """The ``audit`` argument of a store write: the record, when the store appends it in the write's step."""
    return {"audit": draft} if draft is not None and store.audits_writes else {}


async def _recorded(log: AuditLog | None, store: IdentityStore, draft: Any, tenant: str | None = None) -> None:
    """After an effect: its record, unless the store appended it in the effect's own step."""
    if log is not None and draft is not None:
        await log.append(draft, stepped=store.audits_writes, tenant=tenant)


TOKEN_CACHE_TTL_S = 1.0
TOKEN_CACHE_MAX = 100_000
TOKEN_TTL_S_MAX = 10 * 365 * 24 * 3600
DEFAULT_CHANNELS = ("sos:channel:global", "sos:channel:tasks", "sos:channel:system:events")
_TOKEN_RE = re.compile(r"sk-[a-z][a-z0-9-]{1,62}-[0-9a-f]{32}")
TOKEN_CHARS_MAX = 3 + 63 + 1 + 32
"""The longest token ``_TOKEN_RE`` matches: anything longer is refused before it is hashed."""
_AGENT_RE = re.compile(r"^agent:[a-z][a-z0-9-]*$")


TENANT_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
_TENANT_RE = re.compile(TENANT_PATTERN)


def check_tenant(slug: str) -> str:
    """``slug`` if it is a valid tenant slug (``^[a-z][a-z0-9-]{1,62}$``), else SOS-4005."""
    if not isinstance(slug, str) or not _TENANT_RE.fullmatch(slug):
        raise InvalidArgument(
            f"tenant slug {slug!r} must be 2-63 lower-case letters, digits or dashes, starting with a letter",
            details={"pattern": TENANT_PATTERN},
        )
    return slug


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Tenants:
    """Creating and managing tenants: ``kernel.tenants`` (a system operation of the trusted kernel handle)."""

    def __init__(
        self,
        store: IdentityStore,
        auth: Authenticator,
        *,
        tokens_of: Callable[[str], Tokens],
        announce: Callable[[str, str], Awaitable[object]],
    ) -> None:
        # Two narrow hooks, not the kernel: a tenant's tokens, and a notice on its system channel.
        self._store = store
        self._auth = auth
        self._tokens_of = tokens_of
        self._announce = announce
        self.audit_of: Callable[[str], AuditLog] | None = None

    async def create(self, slug: str, plan: str = "starter", *, seats: int | None = None) -> tuple[Tenant, str]:
        """Sprout a tenant: record it (``provisioning``), set up its default channels, activate it, and issue its
        first admin token.

        Returns ``(tenant, admin_token)``; the admin token is shown only here. Raises SOS-4005 for a bad slug,
        plan or seat count and SOS-4009 if the slug is taken. A creation interrupted while ``provisioning`` is
        resumed by calling ``create`` again with the same slug.
        """
        check_tenant(slug)
        if plan not in PLAN_SEATS:
            raise InvalidArgument(f"plan {plan!r} is not one of {sorted(PLAN_SEATS)}")
        if seats is not None and (not isinstance(seats, int) or isinstance(seats, bool) or seats < 1):
            raise InvalidArgument("seats must be a positive int")
        tenant = Tenant(
            slug, plan, seats if seats is not None else PLAN_SEATS[plan], "provisioning", _now(), DEFAULT_CHANNELS
        )
        if not await self._store.create_tenant(tenant):
            existing = await self._store.get_tenant(slug)
            # A creation cut short (crash between recording and activating) is resumed, not refused forever.
            if existing is None or existing.status != "provisioning":
                raise IdempotencyConflict(f"tenant {slug!r} already exists", details={"slug": slug})
            tenant = existing
        await self._announce(slug, f"tenant {slug} sprouted on plan {plan}")
        tenant = replace(tenant, status="active")
        await self._put(tenant)
        issued = await self._tokens_of(slug).issue(scopes=[ADMIN_SCOPE], label="first admin")
        return tenant, issued.secret

    async def get(self, slug: str) -> Tenant:
        """The tenant; SOS-4040 if unknown."""
        found = await self._store.get_tenant(slug)
        if found is None:
            raise NotFound(f"no tenant {slug!r}", details={"slug": slug})
        return found

    async def list(self) -> list[Tenant]:
        """Every tenant."""
        return await self._store.list_tenants()

    async def set_status(self, slug: str, status: TenantStatus) -> Tenant:
        """Move a tenant to ``active``, ``suspended`` or ``cancelled``; its data is kept either way."""
        if status not in ("active", "suspended", "cancelled"):
            raise InvalidArgument("status is active, suspended or cancelled")
        tenant = replace(await self.get(slug), status=status)
        await self._put(tenant)
        self._auth.forget_tenant(slug)
        return tenant

    async def _put(self, tenant: Tenant) -> None:
        """Write the tenant's record with its ``tenant.status`` audit record (in one step where the store can)."""
        log = None if self.audit_of is None else self.audit_of(tenant.slug)
        draft = None
        if log is not None:
            draft = log.draft("tenant.status", actor="kernel", resource=f"tenant:{tenant.slug}", outcome=tenant.status)
        await self._store.put_tenant(tenant, **_step(self._store, draft))
        await _recorded(log, self._store, draft)

    async def suspend(self, slug: str) -> Tenant:
        """Refuse every session of the tenant (SOS-5006) until reactivated."""
        return await self.set_status(slug, "suspended")

    async def activate(self, slug: str) -> Tenant:
        """Let a suspended tenant act again."""
        return await self.set_status(slug, "active")

    async def cancel(self, slug: str) -> Tenant:
        """Refuse the tenant for good (its data is kept)."""
        return await self.set_status(slug, "cancelled")


class Tokens:
    """A tenant's bearer tokens: ``kernel.tenant(slug).tokens``."""

    def __init__(self, store: IdentityStore, tenant: str, auth: Authenticator) -> None:
        self._store = store
        self.tenant = tenant
        self._auth = auth
        self.audit: AuditLog | None = None

    async def issue(
        self,
        *,
        agent: str | None = None,
        scopes: Sequence[str] | None = None,
        expires_in_s: int | None = None,
        label: str = "",
    ) -> IssuedToken:
        """A new token for this tenant, optionally bound to ``agent`` (``agent:<name>``).

        ``scopes`` default to the agent scopes (``DEFAULT_AGENT_SCOPES``); see ``SCOPES`` for every scope. An
        agent-bound token takes a seat: issuing to a new agent beyond the tenant's seats raises SOS-4010.
        """
        if agent is not None and (not isinstance(agent, str) or not _AGENT_RE.fullmatch(agent)):
            raise InvalidArgument(f"agent {agent!r} must be an address like 'agent:<name>'")
        if agent in RESERVED_AGENTS:
            raise InvalidArgument(
                f"agent {agent!r} is reserved: the kernel's own messages come from it", details={"agent": agent}
            )
        chosen = tuple(scopes) if scopes is not None else DEFAULT_AGENT_SCOPES
        unknown = [s for s in chosen if s not in SCOPES]
        if unknown or not chosen:
            raise InvalidArgument(f"unknown scope(s) {unknown}; known: {sorted(SCOPES)}")
        if expires_in_s is not None and (
            not isinstance(expires_in_s, int)
            or isinstance(expires_in_s, bool)
            or not 1 <= expires_in_s <= TOKEN_TTL_S_MAX
        ):
            raise InvalidArgument(f"expires_in_s must be an int in 1..{TOKEN_TTL_S_MAX}")
        if not isinstance(label, str) or not is_text(label):
            raise InvalidArgument("label must be valid Unicode text", details={"argument": "label"})
        tenant = await self._store.get_tenant(self.tenant)
        if tenant is None:
            raise NotFound(f"no tenant {self.tenant!r}; create it with kernel.tenants.create", details={})
        now = _now()
        secret = f"sk-{self.tenant}-{secrets.token_hex(16)}"
        info = TokenInfo(
            id=f"tok_{uuid.uuid4().hex[:20]}",
            tenant=self.tenant,
            agent=agent,
            scopes=chosen,
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in_s) if expires_in_s else None,
            revoked_at=None,
            label=str(label)[:200],
        )
        draft = None
        if self.audit is not None:
            details = {"agent": agent, "scopes": list(chosen)}
            draft = self.audit.draft("token.issued", actor="kernel", resource=f"token:{info.id}", details=details)
        digest = token_digest(secret)
        if not await self._store.issue_token(digest, info, tenant.seats_max, now, **_step(self._store, draft)):
            raise LimitExceeded(
                f"tenant {self.tenant} uses all {tenant.seats_max} seat(s) of plan {tenant.plan}",
                details={"limit": "seats", "max": tenant.seats_max},
            )
        await _recorded(self.audit, self._store, draft)
        return IssuedToken(info.id, secret, self.tenant, agent, chosen, info.expires_at)

    async def revoke(self, token_id: str) -> None:
        """Revoke a token by id (effective at once in this process, within ``TOKEN_CACHE_TTL_S`` elsewhere)."""
        draft = None
        if self.audit is not None:
            draft = self.audit.draft("token.revoked", actor="kernel", resource=f"token:{token_id}")
        if not await self._store.revoke_token(self.tenant, token_id, _now(), **_step(self._store, draft)):
            raise NotFound(f"no live token {token_id!r} in tenant {self.tenant}", details={"id": token_id})
        self._auth.forget_token(token_id)
        await _recorded(self.audit, self._store, draft)

    async def list(self) -> list[TokenInfo]:
        """The tenant's tokens (ids, agents, scopes, times; never secrets)."""
        return await self._store.list_tokens(self.tenant)


ForgetHook = Callable[[Callable[[Principal], bool]], None]
"""Told, at once, which principals a revocation or a tenant status change ends (a test on a :class:`Principal`)."""


class Authenticator:
    """Turns a bearer token into a :class:`Principal`, failing closed with SOS-5001..5003 / 5006.

    ``on_forget`` hooks are called inline by every forget (a revocation, a tenant status change through this
    process), so a server can end what it keeps for those principals before the revoke returns."""

    def __init__(self, store: IdentityStore, on_forget: list[ForgetHook] | None = None) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Principal]] = {}
        self.on_forget: list[ForgetHook] = on_forget if on_forget is not None else []
        self._forgets = 0  # a lookup that a forget overtook is not cached: it may predate the revocation

    def _forget(self, ended: Callable[[Principal], bool]) -> None:
        self._forgets += 1
        for key in [k for k, (_, p) in self._cache.items() if ended(p)]:
            del self._cache[key]
        for hook in list(self.on_forget):
            hook(ended)

    def forget_token(self, token_id: str) -> None:
        """Drop cached entries of a token (after revocation) and tell the ``on_forget`` hooks."""
        self._forget(lambda p: p.token_id == token_id)

    def forget_tenant(self, slug: str) -> None:
        """Drop cached entries of a tenant (after a status change) and tell the ``on_forget`` hooks."""
        self._forget(lambda p: p.tenant == slug)

    async def principal(self, token: str | None) -> Principal:
        """Who ``token`` is. Raises MissingToken, InvalidToken, TokenExpired or TenantInactive."""
        if not token:
            raise MissingToken("no bearer token; pass the token issued by tokens.issue")
        if not isinstance(token, str) or len(token) > TOKEN_CHARS_MAX:
            raise InvalidToken("the token is malformed (expected sk-<tenant>-<32 hex>)")
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(digest)  # the hot path, inlined: no second coroutine frame
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_TTL_S:
            return cached[1]  # only a well-formed token that its store knew was ever cached
        if not _TOKEN_RE.fullmatch(token):
            raise InvalidToken("the token is malformed (expected sk-<tenant>-<32 hex>)")
        return await self.principal_for_digest(digest)

    async def principal_for_digest(self, digest: str) -> Principal:
        """Like :meth:`principal`, for a token already reduced to its digest (sessions keep only that)."""
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_TTL_S:
            return cached[1]
        forgets = self._forgets
        principal = await self._lookup(digest)
        if forgets != self._forgets:
            return principal
        if len(self._cache) >= TOKEN_CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (time.monotonic(), principal)
        return principal

    async def _lookup(self, digest: str) -> Principal:
        found = await self._store.token_by_digest(digest)
        # The store finds the record by digest; comparing the stored digest in constant time keeps a lookup
        # structure that matched on a prefix or a collision from ever authenticating.
        if found is None or not hmac.compare_digest(found[0], digest):
            raise InvalidToken("unknown token")
        info = found[1]
        if info.revoked_at is not None:
            raise InvalidToken(f"token {info.id} was revoked", details={"token_id": info.id})
        if info.expires_at is not None and info.expires_at <= _now():
            raise TokenExpired(f"token {info.id} expired; issue a new one", details={"token_id": info.id})
        tenant = await self._store.get_tenant(info.tenant)
        if tenant is None or not tenant.active:
            status = tenant.status if tenant else "unknown"
            raise TenantInactive(f"tenant {info.tenant} is {status}", details={"tenant": info.tenant})
        return Principal(info.tenant, info.agent, frozenset(info.scopes), info.id)


class Capabilities:
    """Verifying capabilities against trusted issuer keys, consuming their uses, and revoking them."""

    def __init__(self, store: IdentityStore, tenant: str) -> None:
        self._store = store
        self.tenant = tenant
        self._trusted: dict[str, PublicKey] = {}
        self.audit: AuditLog | None = None

    def trust(self, key: PublicKey) -> None:
        """Trust ``key`` as a root issuer (add several to rotate)."""
        self._trusted[key.key_id] = key

    def distrust(self, key_id: str) -> None:
        """Stop trusting a root issuer key."""
        self._trusted.pop(key_id, None)

    async def check(self, chain: Sequence[Capability], *, action: str, resource: str) -> Capability:
        """Verify the chain (signatures, narrowing, expiry, revocation) without spending a use."""
        revoked = await self._store.revoked_capabilities(self.tenant, [c.id for c in chain])
        return Capability.verify(chain, trusted_keys=self._trusted, action=action, resource=resource, revoked=revoked)

    async def use(self, chain: Sequence[Capability], *, action: str, resource: str) -> Capability:
        """Verify the chain and spend one use of every link that has ``uses_remaining`` (atomically: all or
        none). Raises SOS-5004 when the chain is invalid or a link has no uses left.

        A link's counter starts at its own ``uses_remaining`` the first time that exact link (same signed content,
        same signing key) is used; no other link, whatever its id, can seed, reset or spend it."""
        leaf = await self.check(chain, action=action, resource=resource)
        draft = self._used(chain, leaf, action, resource)
        if all(c.uses_remaining is None for c in chain):
            if self.audit is not None:  # no counter to spend: the record is the only write
                await self.audit.append(draft, stepped=False)
            return leaf
        # Counters are keyed by signer key and signed content, never by the id a signer chose (see use_keys).
        keys = use_keys(chain, self._trusted)
        limited = [(k, n) for k, c in zip(keys, chain, strict=True) if (n := c.uses_remaining) is not None]
        if not await self._store.consume_uses(self.tenant, limited, **_step(self._store, draft)):
            raise Forbidden("a capability in the chain has no uses left", details={"link": leaf.id})
        await _recorded(self.audit, self._store, draft)
        return leaf

    def _used(self, chain: Sequence[Capability], leaf: Capability, action: str, resource: str) -> Any:
        # the chain's ids record the delegation the use relied on
        if self.audit is None:
            return None
        return self.audit.draft(
            "capability.used",
            actor=leaf.subject,
            action=action,
            resource=resource,
            details={"capability": leaf.id, "chain": [c.id for c in chain][:32]},
        )

    async def revoke(self, capability_id: str) -> None:
        """Revoke a capability; every capability delegated from it stops verifying too."""
        if not isinstance(capability_id, str) or not capability_id:
            raise InvalidArgument("capability_id must be a non-empty string")
        draft = None
        if self.audit is not None:
            draft = self.audit.draft("capability.revoked", actor="kernel", resource=f"capability:{capability_id}")
        await self._store.revoke_capability(self.tenant, capability_id, **_step(self._store, draft))
        await _recorded(self.audit, self._store, draft)
