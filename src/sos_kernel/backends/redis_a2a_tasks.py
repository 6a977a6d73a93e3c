"""A2A tasks on Redis, under the tenant's hash tag; a put (with its bound) is one Lua script.

Keys (a member is ``<len>:<owner><task id>``: the owner length-prefixed, so no two owners' members collide)::

    sos:{t:<tenant>}:a2a:tasks     hash: member -> the task's bytes
    sos:{t:<tenant>}:a2a:order     sorted set: member -> first-insertion sequence
    sos:{t:<tenant>}:a2a:live      hash: member -> until when its task runs (wall-clock seconds; 0: finished)
    sos:{t:<tenant>}:a2a:caller    hash: member -> its caller (who is bounded)
    sos:{t:<tenant>}:a2a:seq       counter of the sequence
"""

from __future__ import annotations

from ..a2a_tasks.store import A2ATaskBounds, A2ATaskStore
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisA2ATaskStore"]

_PUT = """
local tasks, order, live, callers, seq, member = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1]
local data, now, caller = ARGV[2], tonumber(ARGV[4]), ARGV[5]
if redis.call('HEXISTS', tasks, member) == 1 then
  redis.call('HSET', tasks, member, data)
  redis.call('HSET', live, member, ARGV[3])
  return ''
end
local members = redis.call('ZRANGE', order, 0, -1)
local function running(m) return tonumber(redis.call('HGET', live, m) or '0') > now end
local kept, busy = 0, 0
for _, m in ipairs(members) do
  if redis.call('HGET', callers, m) == caller then
    kept = kept + 1
    if running(m) then busy = busy + 1 end
  end
end
if tonumber(ARGV[3]) > now and busy >= tonumber(ARGV[8]) then return 'a2a_running_tasks_per_caller_max' end
local function evict(own)
  for _, m in ipairs(members) do
    local theirs = not own or redis.call('HGET', callers, m) == caller
    if theirs and redis.call('HEXISTS', tasks, m) == 1 and not running(m) then
      redis.call('HDEL', tasks, m)
      redis.call('ZREM', order, m)
      redis.call('HDEL', live, m)
      redis.call('HDEL', callers, m)
      return true
    end
  end
  return false
end
-- a caller past its own bound makes room among its own records first, so it never evicts another's
if kept >= tonumber(ARGV[7]) and not evict(true) then return 'a2a_tasks_per_caller_max' end
if redis.call('HLEN', tasks) >= tonumber(ARGV[6]) and not evict(false) then return 'a2a_tasks_per_tenant_max' end
redis.call('ZADD', order, redis.call('INCR', seq), member)
redis.call('HSET', tasks, member, data)
redis.call('HSET', live, member, ARGV[3])
redis.call('HSET', callers, member, caller)
return ''
"""


def _owner(owner: str) -> str:
    return f"{len(owner)}:{owner}"


class RedisA2ATaskStore(A2ATaskStore):
    """A2A task primitives as Redis commands and a script."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put = Script(client, _PUT)

    @staticmethod
    def _keys(tenant: str) -> list[str]:
        base = f"{tenant_prefix(tenant)}a2a:"
        return [f"{base}tasks", f"{base}order", f"{base}live", f"{base}caller", f"{base}seq"]

    async def put(
        self,
        tenant: str,
        owner: str,
        caller: str,
        task_id: str,
        data: bytes,
        live_until: float,
        now: float,
        bounds: A2ATaskBounds,
    ) -> str:
        args: list[bytes | str | int] = [_owner(owner) + task_id, data, repr(live_until), repr(now), caller]
        args += [bounds.tasks_max, bounds.caller_tasks_max, bounds.caller_running_max]
        refused = await self._put(self._keys(tenant), args)
        return bytes(refused).decode() if refused else ""

    async def get(self, tenant: str, owner: str, task_id: str) -> bytes | None:
        found = await redis_call(self._r.hget(self._keys(tenant)[0], _owner(owner) + task_id))
        return None if found is None else bytes(found)

    async def owned(self, tenant: str, owner: str, limit: int) -> list[bytes]:
        tasks, order, *_ = self._keys(tenant)
        prefix = _owner(owner).encode()
        members = [m for m in await redis_call(self._r.zrange(order, 0, -1)) if bytes(m).startswith(prefix)][:limit]
        if not members:
            return []
        return [bytes(v) for v in await redis_call(self._r.hmget(tasks, members)) if v is not None]

    async def delete(self, tenant: str, owner: str, task_id: str) -> None:
        tasks, order, live, callers, _ = self._keys(tenant)
        member = _owner(owner) + task_id
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(tasks, member)
        pipe.zrem(order, member)
        pipe.hdel(live, member)
        pipe.hdel(callers, member)
        await redis_call(pipe.execute())
