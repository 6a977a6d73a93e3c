"""A2A tasks on Redis, under the tenant's hash tag; a put (with its bound) is one Lua script.

Keys (a member is ``<len>:<owner><task id>``: the owner length-prefixed, so no two owners' members collide)::

    sos:{t:<tenant>}:a2a:tasks     hash: member -> the task's bytes
    sos:{t:<tenant>}:a2a:order     sorted set: member -> first-insertion sequence
    sos:{t:<tenant>}:a2a:done      set: members whose task is finished
    sos:{t:<tenant>}:a2a:seq       counter of the sequence
"""

from __future__ import annotations

from ..a2a_tasks.store import A2ATaskStore
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisA2ATaskStore"]

_PUT = """
local tasks, order, done, seq, member = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
if redis.call('HEXISTS', tasks, member) == 0 then
  if redis.call('HLEN', tasks) >= tonumber(ARGV[4]) then
    local victim = nil
    for _, m in ipairs(redis.call('ZRANGE', order, 0, -1)) do
      if redis.call('SISMEMBER', done, m) == 1 then victim = m break end
    end
    if not victim then return 0 end
    redis.call('HDEL', tasks, victim)
    redis.call('ZREM', order, victim)
    redis.call('SREM', done, victim)
  end
  redis.call('ZADD', order, redis.call('INCR', seq), member)
end
redis.call('HSET', tasks, member, ARGV[2])
if ARGV[3] == '1' then redis.call('SADD', done, member) else redis.call('SREM', done, member) end
return 1
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
        return [f"{base}tasks", f"{base}order", f"{base}done", f"{base}seq"]

    async def put(self, tenant: str, owner: str, task_id: str, data: bytes, finished: bool, tasks_max: int) -> bool:
        args: list[bytes | str | int] = [_owner(owner) + task_id, data, "1" if finished else "0", tasks_max]
        return bool(await self._put(self._keys(tenant), args))

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
        tasks, order, done, _ = self._keys(tenant)
        member = _owner(owner) + task_id
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(tasks, member)
        pipe.zrem(order, member)
        pipe.srem(done, member)
        await redis_call(pipe.execute())
