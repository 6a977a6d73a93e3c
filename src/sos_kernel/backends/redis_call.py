"""The one place where redis-py's exceptions become SOS errors, for every Redis store, and the bus's lean script
call."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

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


class LeanScript:
    """A Lua script called with ``EVALSHA`` packed in one piece and sent on connections of its own.

    redis-py's general command path (pool lock, observability hooks, one encoder call per argument) costs more
    than the server spends on a small script; the bus's append is the kernel's hottest call, so it takes this
    path. The connections are redis-py's, made with the client's own settings (URL, TLS, credentials, health
    checks) and its RESP parser. The script is loaded on first use and again after a ``SCRIPT FLUSH`` or a
    server restart. A call that loses its connection is sent once more on a fresh one (callers make scripts
    idempotent; the kept connections are dropped first, as they most likely died with it), then raises SOS-6030;
    a script error raises SOS-6031. A cancelled call closes its connection, so no reply is ever read by the
    wrong caller.
    """

    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self._client = client
        self._source = source
        self._head = b"$7\r\nEVALSHA\r\n" + _bulk(hashlib.sha1(source.encode()).hexdigest())
        self._idle: list[AbstractConnection] = []

    def pack(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> bytes:
        """The ``EVALSHA`` command for these keys and arguments, in RESP."""
        raw: list[bytes] = [k.encode() if isinstance(k, str) else k for k in keys]
        raw += [a if isinstance(a, bytes) else a.encode() if isinstance(a, str) else b"%d" % a for a in args]
        parts = [b"*%d\r\n" % (3 + len(raw)), self._head, b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys))]
        parts += [b"$%d\r\n%b\r\n" % (len(x), x) for x in raw]
        return b"".join(parts)

    async def __call__(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> Any:
        """Run the script; returns its reply as redis-py's parser gives it (bytes, ints and lists)."""
        command = self.pack(keys, args)
        loaded = resent = False
        while True:  # at most three sends: one after loading the script, one after losing a connection
            try:
                return await self._send(command)
            except redis_errors.NoScriptError as exc:
                if loaded:
                    raise BackendFailure(f"Redis error: {exc}") from exc
                loaded = True
                await redis_call(self._client.script_load(self._source))
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                if resent:
                    raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc
                resent = True
                await self.aclose()  # the connections kept beside it are most likely dead too: resend on a new one
            except redis_errors.RedisError as exc:
                raise BackendFailure(f"Redis error: {exc}") from exc

    async def _send(self, command: bytes) -> Any:
        conn = self._idle.pop() if self._idle else self._connection()
        try:
            await conn.send_packed_command(command)
            reply = await conn.read_response()
        except redis_errors.ResponseError:
            await self._release(conn)  # the reply was read whole: the connection is clean
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            raise
        await self._release(conn)
        return reply

    def _connection(self) -> AbstractConnection:
        pool = self._client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    async def _release(self, conn: AbstractConnection) -> None:
        if len(self._idle) < IDLE_CONNECTIONS_MAX:
            self._idle.append(conn)
        else:  # bounded: connections beyond what is kept close at once
            await conn.disconnect()

    async def aclose(self) -> None:
        """Close the connections kept between calls."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
