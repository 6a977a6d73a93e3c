"""The reply store seam: the first answer to an ``Idempotency-Key``, kept per tenant and principal.

A record is keyed by ``(tenant, principal, key)``. :meth:`ReplyStore.claim` is the one atomic step that makes a
keyed request run once: it returns the live record under the key, or writes a *running* record (``status`` 0)
and returns None, in which case the caller runs the request and then :meth:`~ReplyStore.finish` es (stores its
answer) or :meth:`~ReplyStore.release` s the key (the request failed in a way a retry may repeat).

Bounds hold per tenant and per principal (:class:`ReplyBounds`): making room for a principal's new record drops
that principal's own oldest records first, and only past the tenant's bound the tenant's oldest (of any of its
principals). Records of one tenant are never dropped to make room for another's. Records live where the backend
keeps its data: in the process for ``memory://``, in the database for SQLite and Redis, so a restarted server or
a second server on the same store replays them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["RUNNING", "Reply", "ReplyBounds", "ReplyStore"]

RUNNING = 0
"""The ``status`` of a record whose request has not answered yet."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A stored answer: the request's fingerprint, the HTTP status (``RUNNING`` while it runs) and the body."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ReplyBounds:
    """How many records a principal and a tenant keep, how long an answer is kept, and how long a running claim
    stands before another request may take the key over (its first request is presumed dead)."""

    principal_keys_max: int
    tenant_keys_max: int
    ttl_s: float
    running_s: float


class ReplyStore(ABC):
    """Primitive reply operations; each is atomic."""

    @abstractmethod
    async def claim(self, tenant: str, principal: str, key: str, fingerprint: str, bounds: ReplyBounds) -> Reply | None:
        """The live record under the key (nothing written), or None after writing a running record for
        ``fingerprint`` that stands for ``bounds.running_s`` (dropping the oldest records beyond the bounds)."""

    @abstractmethod
    async def finish(self, tenant: str, principal: str, key: str, reply: Reply, ttl_s: float) -> None:
        """Store ``reply`` for ``ttl_s`` in place of the running record of the same fingerprint (if it is still
        there)."""

    @abstractmethod
    async def release(self, tenant: str, principal: str, key: str, fingerprint: str) -> None:
        """Drop the running record of ``fingerprint`` under the key, so the next request with it runs."""
