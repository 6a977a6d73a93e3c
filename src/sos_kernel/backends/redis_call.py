"""The one place where redis-py's exceptions become SOS errors, for every Redis store."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis import exceptions as redis_errors

from ..errors import BackendFailure, BackendUnavailable

__all__ = ["redis_call", "tenant_prefix"]


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
