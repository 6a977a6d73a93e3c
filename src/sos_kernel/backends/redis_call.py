"""The one place where redis-py's exceptions become SOS errors, for every Redis store, and its script call."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from ..errors import BackendFailure, BackendUnavailable, NotReplicated

__all__ = ["ASYNC", "Durability", "RedisClient", "Script", "durability_of", "redis_call", "tenant_prefix"]

RedisClient = aioredis.Redis | RedisCluster
"""What every Redis store runs on: one server (``redis://``) or a Redis Cluster (``redis+cluster://``). On a cluster
every command and script is routed by its keys' slot; all keys of one call share one slot (the tenant's hash tag)."""


async def redis_call(awaitable: Awaitable[Any]) -> Any:
    """Await a redis-py call; connection loss and time-outs raise SOS-6030, any other Redis error SOS-6031.

    redis-py's reply types are unions of bytes, str and None; each caller knows the real shape, hence ``Any``.
    """
    try:
        return await awaitable
    except _UNREACHABLE as exc:
        raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis_errors.RedisError as exc:
        raise BackendFailure(f"Redis error: {exc}") from exc


_UNREACHABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.RedisClusterUnreachableError,  # no node of the cluster answers
    redis_errors.ClusterDownError,  # a shard has no master yet (a failover under way)
)

_RESENDABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    redis_errors.MovedError,
    redis_errors.AskError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.RedisClusterUnreachableError,
)
"""A call that failed this way did not run, or runs again as a replay (the scripts are idempotent by id)."""

REPLICAS_MIN = 1
"""Replicas that must hold a write under ``durability=replicated`` before it is acknowledged (``WAIT``'s count)."""
REPLICATION_WAIT_MS = 1000
"""How long such a write waits for them (``WAIT``'s timeout) before it raises SOS-6033 NotReplicated."""


@dataclass(frozen=True, slots=True)
class Durability:
    """When a money or publish write is acknowledged: by the primary that took it (``replicas == 0``, Redis's
    asynchronous replication, the default) or once ``replicas`` replicas hold it (``durability=replicated``)."""

    replicas: int = 0
    timeout_ms: int = REPLICATION_WAIT_MS


ASYNC = Durability()
"""The default: acknowledged by the primary; a failover may lose the last writes it had not yet replicated."""


def durability_of(value: str) -> Durability:
    """The :class:`Durability` a ``?durability=`` URL parameter names (``async`` or ``replicated``)."""
    if value == "replicated":
        return Durability(REPLICAS_MIN)
    if value == "async":
        return ASYNC
    raise ValueError(f"durability must be 'async' (the default) or 'replicated', not {value!r}")


def tenant_prefix(tenant: str) -> str:
    """The key prefix of a tenant, with the hash tag that keeps a tenant on one Redis Cluster shard."""
    return f"sos:{{t:{tenant}}}:"


class Script:
    """A Lua script run through redis-py's public script call (``EVALSHA``, loaded again after a flush).

    On a cluster redis-py sends the ``EVALSHA`` to the master of its keys' slot and loads the script there on a
    ``NOSCRIPT`` reply. Every key a script touches is in the slot of its ``KEYS[1]``: passed in ``KEYS`` or built
    in Lua from the same tenant prefix (so the same hash tag), never a key of another slot.

    A call that loses its connection or times out (the client's ``socket_timeout``) is sent once more (callers
    make these scripts idempotent), then raises SOS-6030; a script error raises SOS-6031.
    """

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self._source = source
        self._script = client.register_script(source)

    async def __call__(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> Any:
        """Run the script; returns its reply (bytes, ints and lists)."""
        try:
            return await self._script(keys=list(keys), args=list(args))
        except _RESENDABLE:
            pass  # the connection died under this call, or its slot moved (a failover): one resend
        except redis_errors.RedisError as exc:
            raise BackendFailure(f"Redis error: {exc}") from exc
        try:
            return await redis_call(self._script(keys=list(keys), args=list(args)))
        except OSError as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc

    async def replicated(
        self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int], fence: str, durability: Durability
    ) -> Any:
        """Run the script, then ``WAIT`` for ``durability.replicas`` replicas on the same connection (the primary
        that took the write); SOS-6033 when they did not confirm in time.

        ``fence`` (a key in the slot of ``keys[0]``) is incremented between the two: a script that wrote nothing
        (a replay of an earlier write) still moves this connection's replication offset past everything the
        primary holds, so the ``WAIT`` covers the earlier write too. Same resend rule as a plain call.
        """
        for attempt in range(3):
            try:
                reply, acked = await self._run_and_wait(keys, args, fence, durability)
            except redis_errors.NoScriptError:
                await redis_call(self._client.script_load(self._source))
                continue
            except _RESENDABLE as exc:
                if attempt == 2:
                    raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc
                continue
            except redis_errors.RedisError as exc:
                raise BackendFailure(f"Redis error: {exc}") from exc
            if int(acked) < durability.replicas:
                raise NotReplicated(
                    f"the write was taken but {acked} of {durability.replicas} replicas confirmed it within "
                    f"{durability.timeout_ms} ms; retry with the same id (a replay, not a second write)",
                    details={"replicas": int(acked), "replicas_min": durability.replicas},
                )
            return reply
        raise BackendUnavailable("Redis is unreachable: the write could not be sent")

    async def _run_and_wait(
        self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int], fence: str, durability: Durability
    ) -> tuple[Any, Any]:
        client = self._client
        wait = ("WAIT", durability.replicas, durability.timeout_ms)
        if isinstance(client, RedisCluster):
            cpipe = client.pipeline(transaction=False)
            cpipe.evalsha(self._script.sha, len(keys), *keys, *args)
            cpipe.incr(fence)
            # WAIT goes to the master of the write's slot, on the connection that carried the write
            cpipe.execute_command(*wait, target_nodes=client.get_node_from_key(_text(keys[0])))
            # no redirection inside: a moved slot fails the call, which is resent whole to the new master
            reply, _, acked = await cpipe.execute(allow_redirections=False)
            return reply, acked
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        pipe.incr(fence)
        pipe.execute_command(*wait)
        reply, _, acked = await pipe.execute()
        return reply, acked


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
