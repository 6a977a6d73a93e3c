"""The one place where redis-py's exceptions become SOS errors, for every Redis store, and its script call."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from ..errors import BackendFailure, BackendUnavailable

__all__ = ["Script", "redis_call", "tenant_prefix"]


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


class Script:
    """A Lua script run through redis-py's public script call (``EVALSHA``, loaded again after a flush).

    A call that loses its connection or times out (the client's ``socket_timeout``) is sent once more (callers
    make these scripts idempotent), then raises SOS-6030; a script error raises SOS-6031.
    """

    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self._script = client.register_script(source)

    async def __call__(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> Any:
        """Run the script; returns its reply (bytes, ints and lists)."""
        try:
            return await self._script(keys=list(keys), args=list(args))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
            pass  # the connection most likely died under this call: one resend on a fresh one
        except redis_errors.RedisError as exc:
            raise BackendFailure(f"Redis error: {exc}") from exc
        try:
            return await redis_call(self._script(keys=list(keys), args=list(args)))
        except OSError as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc
