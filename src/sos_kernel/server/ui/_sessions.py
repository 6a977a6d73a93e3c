"""Dashboard sign-ins: server-side sessions behind a random cookie, bounded per tenant, expiring.

A sign-in with a tenant admin token creates a :class:`UISession` holding the kernel :class:`Session` of that
token (which re-validates it on every call) and a CSRF token; the browser holds only a random session id in an
HttpOnly cookie. The server keeps the id's SHA-256 digest, never the id or the admin token. Sessions live in this
server's memory: a restart or another server behind the same balancer asks for a new sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ...identity.models import Principal
from ...session import Session

__all__ = [
    "SESSION_ID_BYTES",
    "UI_SESSIONS_MAX",
    "UI_SESSIONS_PER_TENANT_MAX",
    "UI_SESSION_IDLE_S",
    "UI_SESSION_TTL_S",
    "UISession",
    "UISessions",
]

SESSION_ID_BYTES = 32
"""Random bytes in a session id (and in a CSRF token)."""
UI_SESSIONS_PER_TENANT_MAX = 32
"""Signed-in dashboard sessions kept per tenant; a new sign-in past this ends the tenant's oldest."""
UI_SESSIONS_MAX = 10_000
"""Signed-in dashboard sessions kept by one server, all tenants together; the least recently used goes first."""
UI_SESSION_IDLE_S = 30 * 60.0
"""A session unused this long is over."""
UI_SESSION_TTL_S = 8 * 3600.0
"""A session is over this long after its sign-in, used or not."""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class UISession:
    """One signed-in browser: the tenant admin's kernel session and the CSRF token its forms carry."""

    session: Session
    tenant: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(SESSION_ID_BYTES))
    created_s: float = field(default_factory=time.monotonic)
    seen_s: float = field(default_factory=time.monotonic)

    def csrf_ok(self, token: str | None) -> bool:
        """Whether a form's CSRF token is this session's (compared in constant time)."""
        return bool(token) and hmac.compare_digest(str(token).encode(), self.csrf.encode())


class UISessions:
    """Session id → :class:`UISession`, bounded per tenant and in all, expiring when idle and by age."""

    def __init__(
        self,
        *,
        per_tenant_max: int = UI_SESSIONS_PER_TENANT_MAX,
        sessions_max: int = UI_SESSIONS_MAX,
        idle_s: float = UI_SESSION_IDLE_S,
        ttl_s: float = UI_SESSION_TTL_S,
    ) -> None:
        self._per_tenant_max = per_tenant_max
        self._max = sessions_max
        self._idle_s = idle_s
        self._ttl_s = ttl_s
        self._by_digest: OrderedDict[str, UISession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def count(self, tenant: str) -> int:
        """Live sessions of ``tenant``."""
        return sum(1 for s in self._by_digest.values() if s.tenant == tenant)

    def create(self, session: Session) -> tuple[str, UISession]:
        """A new session for ``session``'s tenant: ``(cookie value, session)``; evicts past the bounds."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        ui = UISession(session, session.tenant)
        self._sweep()
        mine = [d for d, s in self._by_digest.items() if s.tenant == ui.tenant]
        for digest in mine[: max(0, len(mine) - self._per_tenant_max + 1)]:
            del self._by_digest[digest]
        self._by_digest[_digest(session_id)] = ui
        while len(self._by_digest) > self._max:
            self._by_digest.popitem(last=False)
        return session_id, ui

    def get(self, session_id: str | None) -> UISession | None:
        """The live session of a cookie value, or None (unknown, idle too long, or too old)."""
        if not session_id or len(session_id) > 2 * SESSION_ID_BYTES:
            return None
        digest = _digest(session_id)
        ui = self._by_digest.get(digest)
        if ui is None:
            return None
        now = time.monotonic()
        if now - ui.seen_s > self._idle_s or now - ui.created_s > self._ttl_s:
            del self._by_digest[digest]
            return None
        ui.seen_s = now
        self._by_digest.move_to_end(digest)
        return ui

    def forget(self, ended: Callable[[Principal], bool]) -> None:
        """End at once the sessions of the principals ``ended`` names (a revoked token, a suspended tenant)."""
        for digest in [d for d, s in self._by_digest.items() if ended(s.session.principal)]:
            del self._by_digest[digest]

    def end(self, session_id: str | None) -> None:
        """Forget a session (logout, or its token no longer valid)."""
        if session_id:
            self._by_digest.pop(_digest(session_id), None)

    def _sweep(self) -> None:
        now = time.monotonic()
        over = [
            d for d, s in self._by_digest.items() if now - s.seen_s > self._idle_s or now - s.created_s > self._ttl_s
        ]
        for digest in over:
            del self._by_digest[digest]
