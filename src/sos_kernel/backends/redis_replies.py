"""Idempotency replies on Redis: a hash per record, expired by Redis; each primitive one Lua script.

Keys (``<p>`` = SHA-256 of the principal, ``<k>`` of the key, 32 hex digits each)::

    sos:{t:<tenant>}:reply:<p>:<k>    hash: fp status body       (PEXPIRE: running_s, then ttl_s)
    sos:{t:<tenant>}:replies:<p>      sorted set of the principal's record keys, scored by expiry (ms)
    sos:{t:<tenant>}:replies          sorted set of the tenant's record keys, scored by expiry (ms)

A record's score is the latest time it can expire (its claim time plus ``ttl_s``), so the lowest scores are the
oldest records; members past their score are removed before a bound is counted.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..replies import Reply, ReplyBounds, ReplyStore
from .redis_call import RedisClient, redis_call, tenant_prefix

__all__ = ["RedisReplyStore"]

# A running record has status '0' (RUNNING).
# KEYS: record, principal set, tenant set. ARGV: fp, running_ms, score_ms, now_ms, principal max, tenant max, prefix
_CLAIM = """
local rec = redis.call('HMGET', KEYS[1], 'fp', 'status', 'body')
if rec[1] then return rec end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
local prefix = ARGV[7]
local function evict(set, keep)
  local excess = redis.call('ZCARD', set) - keep
  if excess <= 0 then return end
  for _, m in ipairs(redis.call('ZRANGE', set, 0, excess - 1)) do
    redis.call('DEL', m)
    redis.call('ZREM', KEYS[3], m)
    redis.call('ZREM', prefix .. 'replies:' .. string.sub(m, #prefix + 7, #prefix + 38), m)
  end
end
evict(KEYS[2], tonumber(ARGV[5]) - 1)
evict(KEYS[3], tonumber(ARGV[6]) - 1)
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'status', '0', 'body', '')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
return false
"""

# KEYS: record. ARGV: fp, status, body, ttl_ms
_FINISH = """
local rec = redis.call('HMGET', KEYS[1], 'fp', 'status')
if rec[1] ~= ARGV[1] or rec[2] ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: record, principal set, tenant set. ARGV: fp
_RELEASE = """
local rec = redis.call('HMGET', KEYS[1], 'fp', 'status')
if rec[1] ~= ARGV[1] or rec[2] ~= '0' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
return 1
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RedisReplyStore(ReplyStore):
    """Reply primitives as Lua scripts under the tenant's hash tag."""

    def __init__(self, client: RedisClient) -> None:
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _keys(tenant: str, principal: str, key: str) -> list[str]:
        p, who = tenant_prefix(tenant), _digest(principal)
        return [f"{p}reply:{who}:{_digest(key)}", f"{p}replies:{who}", f"{p}replies"]

    async def claim(self, tenant: str, principal: str, key: str, fingerprint: str, bounds: ReplyBounds) -> Reply | None:
        now_ms = int(time.time() * 1000)
        args: list[Any] = [
            fingerprint,
            max(1, int(bounds.running_s * 1000)),
            now_ms + int(bounds.ttl_s * 1000),
            now_ms,
            bounds.principal_keys_max,
            bounds.tenant_keys_max,
            tenant_prefix(tenant),
        ]
        found = await redis_call(self._claim(keys=self._keys(tenant, principal, key), args=args))
        if not found:
            return None
        fp, status, body = found
        return Reply(fp.decode(), int(status), bytes(body))

    async def finish(self, tenant: str, principal: str, key: str, reply: Reply, ttl_s: float) -> None:
        args: list[Any] = [reply.fingerprint, reply.status, reply.body, max(1, int(ttl_s * 1000))]
        await redis_call(self._finish(keys=self._keys(tenant, principal, key)[:1], args=args))

    async def release(self, tenant: str, principal: str, key: str, fingerprint: str) -> None:
        await redis_call(self._release(keys=self._keys(tenant, principal, key), args=[fingerprint]))
