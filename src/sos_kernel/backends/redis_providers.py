"""Providers on Redis, under the tenant's hash tag; a breaker swap and each call-record step is one Lua script.

Keys::

    sos:{t:<tenant>}:providers              hash: provider id -> card JSON
    sos:{t:<tenant>}:breakers               hash: provider id -> "<version>|<state JSON>"
    sos:{t:<tenant>}:call:<call id>         string: "r|<token>" while running, "d|<token>|<reply>" once done
                                            (both with an expiry: the claim's lease, then how long replies are kept)
"""

from __future__ import annotations

from typing import Any

from ..providers._codec import dump_breaker, load_breaker
from ..providers.breaker import CLOSED, BreakerState
from ..providers.store import CallClaim, ProviderStore
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisProviderStore"]

_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

_SWAP = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if cur then version = tonumber(string.match(cur, '^(%d+)|')) end
if version ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], (version + 1) .. '|' .. ARGV[3])
return 1
"""

_CLAIM = """
if redis.call('SET', KEYS[1], 'r|' .. ARGV[1], 'NX', 'PX', ARGV[2]) then return {'claimed'} end
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], 'r|' .. ARGV[1], 'PX', ARGV[2])
  return {'claimed'}
end
if string.sub(cur, 1, 2) == 'd|' then return {'done', cur} end
return {'running', cur}
"""

_FINISH = """
if redis.call('GET', KEYS[1]) == 'r|' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'd|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == 'r|' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisProviderStore(ProviderStore):
    """Provider primitives as Redis commands and Lua scripts."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put = Script(client, _PUT)
        self._swap = Script(client, _SWAP)
        self._claim = Script(client, _CLAIM)
        self._finish = Script(client, _FINISH)
        self._release = Script(client, _RELEASE)

    _p = staticmethod(tenant_prefix)

    async def put_card(self, tenant: str, provider_id: str, card: bytes, count_max: int) -> bool:
        done = await self._put([self._p(tenant) + "providers"], [provider_id, card, count_max])
        return bool(done)

    async def remove_card(self, tenant: str, provider_id: str) -> bool:
        p = self._p(tenant)
        await redis_call(self._r.hdel(p + "breakers", provider_id))
        return bool(await redis_call(self._r.hdel(p + "providers", provider_id)))

    async def cards(self, tenant: str) -> list[bytes]:
        found: dict[Any, Any] = await redis_call(self._r.hgetall(self._p(tenant) + "providers"))
        by_id = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in found.items()}
        return [v if isinstance(v, bytes) else str(v).encode() for _, v in sorted(by_id.items())]

    async def breaker(self, tenant: str, provider_id: str) -> tuple[BreakerState, int]:
        raw = await redis_call(self._r.hget(self._p(tenant) + "breakers", provider_id))
        if raw is None:
            return CLOSED, 0
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        version, _, state = text.partition("|")
        return load_breaker(state), int(version)

    async def swap_breaker(self, tenant: str, provider_id: str, version: int, state: BreakerState) -> bool:
        done = await self._swap([self._p(tenant) + "breakers"], [provider_id, version, dump_breaker(state)])
        return bool(done)

    def _call_key(self, tenant: str, call_id: str) -> str:
        return f"{self._p(tenant)}call:{call_id}"

    async def claim_call(self, tenant: str, call_id: str, token: str, now: float, lease_s: float) -> CallClaim:
        reply = await self._claim([self._call_key(tenant, call_id)], [token, _ms(lease_s)])
        outcome = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if outcome == "claimed":
            return CallClaim("claimed")
        parts = bytes(reply[1]).split(b"|", 2)  # r|<token> or d|<token>|<reply>
        token = parts[1].decode()
        return CallClaim("done", parts[2], token) if outcome == "done" else CallClaim("running", None, token)

    async def finish_call(self, tenant: str, call_id: str, token: str, reply: bytes, now: float, keep_s: float) -> None:
        await self._finish([self._call_key(tenant, call_id)], [token, reply, _ms(keep_s)])

    async def release_call(self, tenant: str, call_id: str, token: str) -> None:
        await self._release([self._call_key(tenant, call_id)], [token])
