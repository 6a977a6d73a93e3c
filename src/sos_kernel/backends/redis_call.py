"""The one place where redis-py's exceptions become SOS errors, for every Redis store, and the bus's lean script
call."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

try:
    import hiredis

    HAVE_HIREDIS = True
except ImportError:  # the redis extra installs it; without it every call takes redis-py's own path
    HAVE_HIREDIS = False

from ..errors import BackendFailure, BackendUnavailable

__all__ = ["IDLE_CONNECTIONS_MAX", "LeanScript", "redis_call", "tenant_prefix"]

IDLE_CONNECTIONS_MAX = 16
"""Connections a :class:`LeanScript` keeps open between calls; more run at once when callers do, then close."""


async def redis_call(awaitable: Awaitable[Any]) -> Any:
    """Await a redis-py call; connection loss and time-outs raise SOS-6030, any other Redis error SOS-6031.

    redis-py's reply types are unions of bytes, str and None; each caller knows the real shape, hence ``Any``.
    """
    try:
        return await awaitable
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise BackendFailure(f"Redis error: {exc}") from exc


def tenant_prefix(tenant: str) -> str:
    """The key prefix of a tenant, with the hash tag that keeps a tenant on one Redis Cluster shard."""
    return f"sos:{{t:{tenant}}}:"


def _bulk(value: bytes | str | int) -> bytes:
    raw = value if type(value) is bytes else str(value).encode() if type(value) is int else value.encode()  # type: ignore[union-attr]
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


class _Link(asyncio.Protocol):
    """One of a :class:`LeanScript`'s connections once redis-py's handshake is done: the transport is taken over,
    a request is written to it as one piece and its reply parsed by hiredis as the bytes arrive, one call at a
    time. Anything it cannot account for (a reply nobody waits for, a second reply, a protocol error, the
    connection closing) fails the waiting call and closes the connection."""

    def __init__(self, conn: AbstractConnection, transport: asyncio.Transport) -> None:
        self.conn = conn
        self.transport = transport
        self.reader = hiredis.Reader(protocolError=redis_errors.InvalidResponse, replyError=redis_errors.ResponseError)
        self.waiter: asyncio.Future[Any] | None = None
        self.sent_at = 0.0
        self.lost = False

    def request(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        if self.transport.is_closing():  # closed by the server, not yet reported: never write into the void
            self.lost = True
            raise redis_errors.ConnectionError("the connection to Redis is closing")
        self.waiter = waiter = loop.create_future()
        self.sent_at = loop.time()
        self.transport.write(command)
        return waiter

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            reply = self.reader.gets()
        except redis_errors.InvalidResponse as exc:
            self.fail(exc)
            return
        if reply is False:
            return
        waiter = self.waiter
        if waiter is None or waiter.done() or self.reader.has_data():
            self.fail(redis_errors.InvalidResponse("Redis sent a reply no call was waiting for"))
            return
        self.waiter = None
        waiter.set_result(reply)

    def fail(self, exc: BaseException) -> None:
        """Fail the waiting call (if any) with ``exc`` and close the connection at once."""
        self.lost = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.transport.abort()

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(redis_errors.ConnectionError(f"Redis closed the connection: {exc or 'EOF'}"))


class _Pooled:
    """A connection a :class:`LeanScript` could not take over (no hiredis, an unfamiliar redis-py): calls
    go through redis-py's own send and read, with its time-outs."""

    lost = False

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn

    async def call(self, command: bytes) -> Any:
        await self.conn.send_packed_command(command)
        return await self.conn.read_response()


class LeanScript:
    """A Lua script called with ``EVALSHA`` packed in one piece and sent on connections of its own.

    redis-py's general command path (pool lock, observability hooks, one encoder call per argument, a task per
    write time-out) costs more than the server spends on a small script; the bus's append is the kernel's
    hottest call, so it takes this path. Connections are opened by redis-py with the client's own settings (URL,
    TLS, credentials, database, client name), then taken over: requests are written straight to the transport
    and replies parsed by hiredis as they arrive. Where a connection cannot be taken over (hiredis missing, a
    redis-py without the stream attributes relied on) the call takes redis-py's send and read on it
    instead, with the same behaviour.

    The script is loaded on first use and again after a ``SCRIPT FLUSH`` or a server restart. A call that loses
    its connection or times out (the client's ``socket_timeout``) is sent once more on a fresh one (callers make
    scripts idempotent; the kept connections are dropped first, as they most likely died with it), then raises
    SOS-6030; a script error raises SOS-6031. A cancelled call closes its connection, so no reply is ever read by
    the wrong caller. A connection that closes while idle is dropped before it is used.
    """

    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self._client = client
        self._source = source
        self._head = b"$7\r\nEVALSHA\r\n" + _bulk(hashlib.sha1(source.encode()).hexdigest())
        self._idle: list[_Link | _Pooled] = []
        self._busy: set[_Link] = set()
        self._timer: asyncio.TimerHandle | None = None

    def pack(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> bytes:
        """The ``EVALSHA`` command for these keys and arguments, in RESP."""
        raw: list[bytes] = [k.encode() if isinstance(k, str) else k for k in keys]
        raw += [a if isinstance(a, bytes) else a.encode() if isinstance(a, str) else b"%d" % a for a in args]
        parts = [b"*%d\r\n" % (3 + len(raw)), self._head, b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys))]
        parts += [b"$%d\r\n%b\r\n" % (len(x), x) for x in raw]
        return b"".join(parts)

    async def __call__(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> Any:
        """Run the script; returns its reply as hiredis parses it (bytes, ints and lists)."""
        command = self.pack(keys, args)
        loaded = resent = False
        while True:  # at most three sends: one after loading the script, one after losing a connection
            try:
                reply = await self._send(command)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                if resent:
                    raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc
                resent = True
                await self.aclose()  # the connections kept beside it are most likely dead too: resend on a new one
                continue
            except redis_errors.RedisError as exc:
                raise BackendFailure(f"Redis error: {exc}") from exc
            if not isinstance(reply, redis_errors.ResponseError):
                return reply
            if loaded or not str(reply).startswith(("NOSCRIPT", "No matching script")):
                raise BackendFailure(f"Redis error: {reply}")
            loaded = True
            await redis_call(self._client.script_load(self._source))

    async def _send(self, command: bytes) -> Any:
        link = await self._link()
        try:
            if isinstance(link, _Link):
                loop = asyncio.get_running_loop()
                waiter = link.request(command, loop)
                self._busy.add(link)
                if self._timer is None and link.conn.socket_timeout:
                    self._timer = loop.call_later(link.conn.socket_timeout, self._expire, link.conn.socket_timeout)
                try:
                    reply = await waiter
                finally:
                    self._busy.discard(link)
            else:
                reply = await link.call(command)
        except redis_errors.ResponseError as exc:  # redis-py's path raises error replies; the reply was read whole
            await self._release(link)
            return exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close(link)
            raise
        await self._release(link)
        return reply

    async def _link(self) -> _Link | _Pooled:
        while self._idle:
            link = self._idle.pop()
            if not link.lost:
                return link
            await self._close(link)
        pool = self._client.connection_pool
        # RESP2 whatever the URL says: these connections only ever carry this script, whose replies are the same
        # in both, and RESP2 has no push messages that could come between a request and its reply. redis-py does
        # the handshake: TLS, AUTH, SELECT, CLIENT SETNAME/SETINFO.
        conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
        await conn.connect()  # type: ignore[no-untyped-call]
        writer = getattr(conn, "_writer", None)
        transport = getattr(writer, "transport", None)
        if not HAVE_HIREDIS or conn.protocol != 2 or not isinstance(transport, asyncio.Transport):
            return _Pooled(conn)
        link = _Link(conn, transport)
        transport.set_protocol(link)
        return link

    def _expire(self, timeout: float) -> None:
        """Fail the calls that have waited ``timeout`` seconds for a reply; look again when the next one would."""
        self._timer = None
        if not self._busy:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for link in [link for link in self._busy if now - link.sent_at >= timeout]:
            self._busy.discard(link)
            link.fail(redis_errors.TimeoutError(f"no reply from Redis in {timeout} s"))
        if self._busy:
            oldest = min(link.sent_at for link in self._busy)
            self._timer = loop.call_later(max(0.0, oldest + timeout - now), self._expire, timeout)

    async def _release(self, link: _Link | _Pooled) -> None:
        if len(self._idle) < IDLE_CONNECTIONS_MAX and not link.lost:
            self._idle.append(link)
        else:  # bounded: connections beyond what is kept close at once
            await self._close(link)

    @staticmethod
    async def _close(link: _Link | _Pooled) -> None:
        link.lost = True
        await link.conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        """Close the connections kept between calls."""
        idle, self._idle = self._idle, []
        if self._timer is not None and not self._busy:
            self._timer.cancel()
            self._timer = None
        for link in idle:
            await self._close(link)
