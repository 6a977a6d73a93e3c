"""What one server keeps between requests: sessions by token digest, idempotency keys, subscription leases."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..errors import Forbidden, IdempotencyConflict, InvalidArgument, MissingToken, SOSError
from ..identity.models import Principal
from ..identity.service import token_digest
from ..kernel import Kernel
from ..replies import RUNNING, Reply, ReplyBounds
from ..session import Session
from ..wire import json_bytes
from ._limits import LARGE_BODIES_MAX
from ._streams import Leases

__all__ = [
    "IDEMPOTENCY_BOUNDS",
    "IDEMPOTENCY_PRINCIPAL_KEYS_MAX",
    "IDEMPOTENCY_RUNNING_S",
    "IDEMPOTENCY_TENANT_KEYS_MAX",
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
IDEMPOTENCY_PRINCIPAL_KEYS_MAX = 1_000
"""Idempotency keys remembered per token; its own oldest is forgotten past this."""
IDEMPOTENCY_TENANT_KEYS_MAX = 10_000
"""Idempotency keys remembered per tenant, all its principals together; the tenant's oldest is forgotten past
this. No tenant's keys are ever forgotten for another tenant's."""
IDEMPOTENCY_TTL_S = 24 * 3600.0
"""How long a key's first response is replayed."""
IDEMPOTENCY_RUNNING_S = 300.0
"""How long a request holds its key before a retry may presume it dead and run again."""
IDEMPOTENCY_POLL_S = 0.05
"""How often a request waiting on a key another server holds looks again."""
IDEMPOTENCY_KEY_CHARS_MAX = 255
IDEMPOTENCY_BOUNDS = ReplyBounds(
    IDEMPOTENCY_PRINCIPAL_KEYS_MAX, IDEMPOTENCY_TENANT_KEYS_MAX, IDEMPOTENCY_TTL_S, IDEMPOTENCY_RUNNING_S
)
"""The default bounds of a server's idempotency records."""


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

    def forget(self, ended: Callable[[Principal], bool]) -> None:
        """Drop the cached sessions of the principals ``ended`` names (a revoked token, a suspended tenant)."""
        for digest in [d for d, s in self._cache.items() if ended(s.principal)]:
            del self._cache[digest]


class Idempotency:
    """Replays the first response to an ``Idempotency-Key`` (per tenant, principal, route and key), from the
    kernel's reply store (:mod:`sos_kernel.replies`): in the process on ``memory://``, in the database on SQLite
    and Redis, so a restarted server or another server on the same store replays it too.

    A successful response and a non-retryable error are kept for ``bounds.ttl_s``; a retryable error is not, so a
    retry runs again. The same key with a different body is SOS-4009. A request arriving while the first one with
    its key still runs (here or in another server) waits for its answer: two at once run once.
    """

    def __init__(self, kernel: Kernel, bounds: ReplyBounds) -> None:
        self._kernel = kernel
        self.bounds = bounds
        self._running: dict[tuple[str, str, str], anyio.Event] = {}

    @staticmethod
    def check_key(key: str) -> str:
        """``key`` if it is 1-255 printable ASCII characters, else SOS-4005."""
        if not 1 <= len(key) <= IDEMPOTENCY_KEY_CHARS_MAX or not key.isascii() or not key.isprintable():
            raise InvalidArgument("Idempotency-Key must be 1-255 printable ASCII characters")
        return key

    async def _wait(self, slot: tuple[str, str, str]) -> None:
        # woken at once by a request of this server; one of another server's is seen by polling
        event = self._running.get(slot)
        with anyio.move_on_after(IDEMPOTENCY_POLL_S):
            await (event.wait() if event is not None else anyio.sleep(IDEMPOTENCY_POLL_S))

    async def _claim(self, slot: tuple[str, str, str], fingerprint: str) -> Reply | None:
        """The stored answer for ``slot``, or None once this request holds the key (waiting while another runs)."""
        store = self._kernel.backend.replies
        while True:
            found = await store.claim(*slot, fingerprint, self.bounds)
            if found is None:
                return None
            if not hmac.compare_digest(found.fingerprint, fingerprint):
                raise IdempotencyConflict("this Idempotency-Key was used with a different request body")
            if found.status != RUNNING:
                return found
            await self._wait(slot)

    async def _settle(
        self, slot: tuple[str, str, str], fingerprint: str, reply: Reply | None, done: anyio.Event
    ) -> None:
        store = self._kernel.backend.replies
        try:
            with anyio.CancelScope(shield=True):
                if reply is None:
                    await store.release(*slot, fingerprint)
                else:
                    await store.finish(*slot, reply, self.bounds.ttl_s)
        finally:
            if self._running.get(slot) is done:
                del self._running[slot]
            done.set()

    async def run(
        self,
        scope: tuple[str, str, str],
        body: bytes,
        compute: Callable[[], Awaitable[tuple[int, bytes]]],
    ) -> tuple[int, bytes, bool]:
        """``(status, body, replayed)`` for ``scope`` = ``(tenant, principal, key)``: the stored response, or a
        fresh one from ``compute``."""
        fingerprint = hashlib.sha256(body).hexdigest()
        found = await self._claim(scope, fingerprint)
        if found is not None:
            return found.status, found.body, True
        done = self._running[scope] = anyio.Event()
        try:
            status, content = await compute()
        except SOSError as exc:
            kept = None if exc.retryable else Reply(fingerprint, exc.http_status, error_bytes(exc))
            await self._settle(scope, fingerprint, kept, done)
            raise
        except BaseException:
            await self._settle(scope, fingerprint, None, done)
            raise
        await self._settle(scope, fingerprint, Reply(fingerprint, status, content), done)
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
        idempotency: ReplyBounds = IDEMPOTENCY_BOUNDS,
        large_bodies_max: int = LARGE_BODIES_MAX,
    ) -> None:
        self.kernel = kernel
        self.sessions = Sessions(kernel)
        self.idempotency = Idempotency(kernel, idempotency)
        if not isinstance(large_bodies_max, int) or large_bodies_max < 1:
            raise InvalidArgument(f"large_bodies_max must be an int >= 1, got {large_bodies_max!r}")
        self.large_bodies = anyio.CapacityLimiter(large_bodies_max)
        """Large request bodies being read or answered; its ``borrowed_tokens`` is how many are in flight."""
        self.leases = Leases(linger_s)
        self.request_bytes_max = request_bytes_max
        self.ping_s = ping_s
        self._admin_digest = token_digest(admin_token) if admin_token else None
        self.metrics: Any = None
        """The app's :class:`sos_kernel.ops.metrics.Metrics`, when it serves ``GET /metrics``."""
        self.metrics_digest: str | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` when this state closes, before its leases and the latest added first: what a mounted
        endpoint started (an A2A follow, an ask) ends while the kernel is still open."""
        self._closers.append(closer)

    def check_admin(self, token: str | None) -> None:
        """Server-admin routes (creating tenants) need the admin token given to ``create_app``."""
        if self._admin_digest is None:
            raise Forbidden("tenant creation is disabled on this server (start it with an admin token)")
        if not token:
            raise MissingToken("no bearer token; this route needs the server admin token")
        if not hmac.compare_digest(token_digest(token), self._admin_digest):
            raise Forbidden("this route needs the server admin token")

    def check_metrics(self, token: str | None, client_host: str | None) -> None:
        """``GET /metrics`` names tenants: with a metrics token only its holder (or the server admin) reads it;
        without one, only clients on the loopback interface."""
        if self.metrics_digest is None:
            if client_host is not None and _loopback(client_host):
                return
            raise Forbidden("metrics are readable from the loopback interface only (or start with a metrics token)")
        if not token:
            raise MissingToken("no bearer token; GET /metrics needs the metrics token")
        digest = token_digest(token)
        if not hmac.compare_digest(digest, self.metrics_digest) and not (
            self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest)
        ):
            raise Forbidden("GET /metrics needs the metrics token or the server admin token")

    async def aclose(self) -> None:
        """Close what mounted endpoints started (:meth:`on_close`), then every subscription lease (the kernel is the
        caller's to close)."""
        if self.metrics is not None:
            self.metrics.detach()
        with anyio.CancelScope(shield=True):
            for closer in reversed(self._closers):
                await closer()
            await self.leases.aclose()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
