"""What one server keeps between requests: sessions by token digest, idempotency keys, subscription leases."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from ..errors import Forbidden, IdempotencyConflict, InvalidArgument, MissingToken, SOSError
from ..identity.service import token_digest
from ..kernel import Kernel
from ..session import Session
from ..wire import json_bytes
from ._streams import Leases

__all__ = [
    "IDEMPOTENCY_KEYS_MAX",
    "IDEMPOTENCY_TTL_S",
    "SESSIONS_MAX",
    "Idempotency",
    "ServerState",
    "Sessions",
    "error_bytes",
    "json_bytes",
]

SESSIONS_MAX = 10_000
"""Sessions kept (one per token seen); the least recently used is dropped past this."""
IDEMPOTENCY_KEYS_MAX = 10_000
"""Idempotency keys remembered per server; the oldest is forgotten past this."""
IDEMPOTENCY_TTL_S = 24 * 3600.0
"""How long a key's first response is replayed."""
IDEMPOTENCY_KEY_CHARS_MAX = 255


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def error_bytes(error: SOSError) -> bytes:
    """The error's envelope as JSON. An argument it quotes that JSON cannot carry (``timeout_s=nan``) travels as
    text, so refusing a bad number never becomes a failure to write the refusal."""
    return json_bytes(_finite(error.to_wire()))


class Sessions:
    """Bearer token → :class:`Session`, one per token digest, for the server's life (bounded).

    A cached session is still checked on every call: each session method re-validates its token (revocation and
    suspension apply within the kernel's token cache bound).
    """

    def __init__(self, kernel: Kernel, sessions_max: int = SESSIONS_MAX) -> None:
        self._kernel = kernel
        self._max = sessions_max
        self._cache: OrderedDict[str, Session] = OrderedDict()

    async def get(self, token: str | None) -> Session:
        """The session of ``token``; SOS-5001/5002/5003/5006 as ``kernel.session`` raises them."""
        if not token:
            raise MissingToken("no bearer token; send 'Authorization: Bearer <token>'")
        digest = token_digest(token)
        found = self._cache.get(digest)
        if found is not None:
            self._cache.move_to_end(digest)
            return found
        session = await self._kernel.session(token)
        self._cache[digest] = session
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return session


@dataclass(frozen=True, slots=True)
class Stored:
    """The first response to an idempotency key."""

    fingerprint: str
    status: int
    body: bytes
    at: float


class Idempotency:
    """Replays the first response to an ``Idempotency-Key`` (per principal, route and key).

    A successful response and a non-retryable error are kept for ``IDEMPOTENCY_TTL_S``; a retryable error is not,
    so a retry runs again. The same key with a different body is SOS-4009. A retry arriving while the first
    request still runs waits for it.
    """

    def __init__(self, keys_max: int = IDEMPOTENCY_KEYS_MAX, ttl_s: float = IDEMPOTENCY_TTL_S) -> None:
        self._max = keys_max
        self._ttl_s = ttl_s
        self._stored: OrderedDict[tuple[str, ...], Stored] = OrderedDict()
        self._running: dict[tuple[str, ...], anyio.Event] = {}

    @staticmethod
    def check_key(key: str) -> str:
        """``key`` if it is 1-255 printable ASCII characters, else SOS-4005."""
        if not 1 <= len(key) <= IDEMPOTENCY_KEY_CHARS_MAX or not key.isascii() or not key.isprintable():
            raise InvalidArgument("Idempotency-Key must be 1-255 printable ASCII characters")
        return key

    def _lookup(self, scope: tuple[str, ...], fingerprint: str) -> Stored | None:
        found = self._stored.get(scope)
        if found is None:
            return None
        if time.monotonic() - found.at > self._ttl_s:
            del self._stored[scope]
            return None
        if not hmac.compare_digest(found.fingerprint, fingerprint):
            raise IdempotencyConflict("this Idempotency-Key was used with a different request body")
        return found

    def _keep(self, scope: tuple[str, ...], stored: Stored) -> None:
        self._stored[scope] = stored
        while len(self._stored) > self._max:
            self._stored.popitem(last=False)

    async def run(
        self, scope: tuple[str, ...], body: bytes, compute: Callable[[], Awaitable[tuple[int, bytes]]]
    ) -> tuple[int, bytes, bool]:
        """``(status, body, replayed)``: the stored response to ``scope`` or a fresh one from ``compute``."""
        fingerprint = hashlib.sha256(body).hexdigest()
        while (running := self._running.get(scope)) is not None:
            await running.wait()
        found = self._lookup(scope, fingerprint)
        if found is not None:
            return found.status, found.body, True
        done = self._running[scope] = anyio.Event()
        try:
            status, content = await compute()
        except SOSError as exc:
            if not exc.retryable:
                self._keep(scope, Stored(fingerprint, exc.http_status, error_bytes(exc), time.monotonic()))
            raise
        finally:
            del self._running[scope]
            done.set()
        self._keep(scope, Stored(fingerprint, status, content, time.monotonic()))
        return status, content, False


class ServerState:
    """Everything one app keeps: the kernel, sessions, idempotency keys and subscription leases."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        admin_token: str | None,
        request_bytes_max: int,
        linger_s: float,
        ping_s: float,
    ) -> None:
        self.kernel = kernel
        self.sessions = Sessions(kernel)
        self.idempotency = Idempotency()
        self.leases = Leases(linger_s)
        self.request_bytes_max = request_bytes_max
        self.ping_s = ping_s
        self._admin_digest = token_digest(admin_token) if admin_token else None

    def check_admin(self, token: str | None) -> None:
        """Server-admin routes (creating tenants) need the admin token given to ``create_app``."""
        if self._admin_digest is None:
            raise Forbidden("tenant creation is disabled on this server (start it with an admin token)")
        if not token:
            raise MissingToken("no bearer token; this route needs the server admin token")
        if not hmac.compare_digest(token_digest(token), self._admin_digest):
            raise Forbidden("this route needs the server admin token")

    async def aclose(self) -> None:
        """Close every subscription lease (the kernel is the caller's to close)."""
        with anyio.CancelScope(shield=True):
            await self.leases.aclose()
