"""Memories on Redis, per tenant and namespace under the tenant's hash tag; each write one Lua script.

Keys::

    sos:{t:<tenant>}:memspaces          hash: namespace -> "<dimensions>\\t<embedder>" (a namespace exists while listed)
    sos:{t:<tenant>}:memver             hash: namespace -> version, bumped by every write (never removed)
    sos:{t:<tenant>}:memusage           hash: count, bytes of the tenant's memories
    sos:{t:<tenant>}:memgroups          hash: "c:<group>", "b:<group>" -> count, bytes of each owner group's
                                        memories (``group_of``: an agent's own namespaces, "" the shared ones);
                                        "layout" once they were summed (see below)
    sos:{t:<tenant>}:memexp             sorted set: "<namespace>\\n<id>" scored by expiry (memories with a TTL)
    sos:{t:<tenant>}:mem:<namespace>    hash: id -> the memory (JSON header, newline, float32 vector)
    sos:{t:<tenant>}:memmeta:<ns>       hash: id -> "<size> <digest> <expires>" (what the scripts compare)
    sos:{t:<tenant>}:memids:<ns>        sorted set of ids, all scored 0 (paging by id with ZRANGEBYLEX)
    sos:{t:<tenant>}:memlog:<ns>        sorted set: "<version>\\n<id>" scored by version, the ids each of the last
                                        LOG_VERSIONS_MAX writes changed

Search is exact and does not fetch every vector per query: each process keeps a numpy snapshot per namespace. A
query costs one ``HGET`` of the namespace's version when nothing changed; when it moved, the snapshot fetches the
ids logged since its version and only their memories (a whole ``HGETALL`` only when it is more than
``LOG_VERSIONS_MAX`` writes behind), so another process's writes are seen by the next query.

Upgrade: data written before the groups were kept has no ``layout`` field in ``memgroups``. A write or delete that
finds none answers ``upgrade`` and changes nothing; the store then sums every group once from the namespaces'
``memmeta`` sizes in one script (which sets ``layout``, and changes nothing if another process did it first or if
a namespace came or went since it listed them: then it lists again) and retries the write. Every process writing
a tenant's memories must run a version that keeps the groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import BackendFailure
from ..memory.store import (
    LOG_VERSIONS_MAX,
    MemoryStore,
    PutOutcome,
    Quota,
    Snapshot,
    SnapshotCache,
    Space,
    StoredMemory,
    group_of,
)
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisMemoryStore"]

_PUT = """
if redis.call('HEXISTS', KEYS[9], 'layout') == 0 then return {'upgrade'} end
local ns, space, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = redis.call('HGET', KEYS[1], ns)
if cur and cur ~= space then return {'space', cur} end
if not cur and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {'namespaces'} end
if not cur and tonumber(ARGV[8]) > 0 then
  local n, g = 0, ARGV[7]
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    if g == '' then
      if string.sub(name, 1, 6) ~= 'agent:' then n = n + 1 end
    elseif name == g or string.sub(name, 1, #g + 1) == g .. '/' then
      n = n + 1
    end
  end
  if n >= tonumber(ARGV[8]) then return {'group'} end
end
local count = tonumber(redis.call('HGET', KEYS[3], 'count') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
local count0, bytes0 = count, bytes
local existing, fresh = {}, {}
for i = 12, #ARGV, 5 do
  local id = ARGV[i]
  local meta = redis.call('HGET', KEYS[6], id)
  local keep = false
  if meta then
    local size, digest, exp = string.match(meta, '^(%d+) (%S+) ?(.*)$')
    if exp == '' or tonumber(exp) > now then
      if digest ~= ARGV[i + 3] then return {'conflict', id, redis.call('HGET', KEYS[5], id)} end
      existing[#existing + 1] = id
      existing[#existing + 1] = redis.call('HGET', KEYS[5], id)
      keep = true
    else
      count = count - 1
      bytes = bytes - tonumber(size)
    end
  end
  if not keep then
    fresh[#fresh + 1] = i
    count = count + 1
    bytes = bytes + tonumber(ARGV[i + 2])
  end
end
if count > tonumber(ARGV[5]) then return {'memories'} end
if bytes > tonumber(ARGV[6]) then return {'bytes'} end
local held = tonumber(redis.call('HGET', KEYS[9], 'c:' .. ARGV[9]) or '0') + count - count0
local held_bytes = tonumber(redis.call('HGET', KEYS[9], 'b:' .. ARGV[9]) or '0') + bytes - bytes0
if tonumber(ARGV[10]) > 0 and held > tonumber(ARGV[10]) then return {'group_memories'} end
if tonumber(ARGV[11]) > 0 and held_bytes > tonumber(ARGV[11]) then return {'group_bytes'} end
for _, i in ipairs(fresh) do
  local id = ARGV[i]
  redis.call('HSET', KEYS[5], id, ARGV[i + 1])
  redis.call('HSET', KEYS[6], id, ARGV[i + 2] .. ' ' .. ARGV[i + 3] .. ' ' .. ARGV[i + 4])
  redis.call('ZADD', KEYS[7], 0, id)
  if ARGV[i + 4] ~= '' then
    redis.call('ZADD', KEYS[4], ARGV[i + 4], ns .. '\\n' .. id)
  else
    redis.call('ZREM', KEYS[4], ns .. '\\n' .. id)
  end
end
if #fresh > 0 then
  redis.call('HSET', KEYS[1], ns, space)
  redis.call('HSET', KEYS[3], 'count', string.format('%d', count), 'bytes', string.format('%d', bytes))
  redis.call('HSET', KEYS[9], 'c:' .. ARGV[9], string.format('%d', held), 'b:' .. ARGV[9],
    string.format('%d', held_bytes))
  local v = redis.call('HINCRBY', KEYS[2], ns, 1)
  for _, i in ipairs(fresh) do redis.call('ZADD', KEYS[8], v, v .. '\\n' .. ARGV[i]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', v - LOGMAX)
end
local out = {'ok'}
for _, v in ipairs(existing) do out[#out + 1] = v end
return out
"""

_DELETE = """
if redis.call('HEXISTS', KEYS[9], 'layout') == 0 then return -1 end
local removed, freed, gone = 0, 0, {}
for i = 3, #ARGV do
  local meta = redis.call('HGET', KEYS[6], ARGV[i])
  if meta then
    gone[#gone + 1] = ARGV[i]
    redis.call('HDEL', KEYS[5], ARGV[i])
    redis.call('HDEL', KEYS[6], ARGV[i])
    redis.call('ZREM', KEYS[7], ARGV[i])
    redis.call('ZREM', KEYS[4], ARGV[1] .. '\\n' .. ARGV[i])
    removed = removed + 1
    freed = freed + tonumber(string.match(meta, '^(%d+)'))
  end
end
if removed > 0 then
  redis.call('HINCRBY', KEYS[3], 'count', -removed)
  redis.call('HINCRBY', KEYS[3], 'bytes', -freed)
  redis.call('HINCRBY', KEYS[9], 'c:' .. ARGV[2], -removed)
  redis.call('HINCRBY', KEYS[9], 'b:' .. ARGV[2], -freed)
  local v = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  for _, id in ipairs(gone) do redis.call('ZADD', KEYS[8], v, v .. '\\n' .. id) end
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', v - LOGMAX)
  if redis.call('HLEN', KEYS[6]) == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return removed
"""

_UPGRADE = """
if redis.call('HEXISTS', KEYS[1], 'layout') == 1 then return 1 end
if redis.call('HLEN', KEYS[2]) ~= #ARGV then return 0 end
local sums = {}
for i, name in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[2], name) == 0 then return 0 end
  local g = ''
  if string.sub(name, 1, 6) == 'agent:' then
    local cut = string.find(name, '/', 1, true)
    g = cut and string.sub(name, 1, cut - 1) or name
  end
  local s = sums[g] or {0, 0}
  for _, meta in ipairs(redis.call('HVALS', KEYS[i + 2])) do
    s[1] = s[1] + 1
    s[2] = s[2] + tonumber(string.match(meta, '^(%d+)'))
  end
  sums[g] = s
end
for g, s in pairs(sums) do
  redis.call('HSET', KEYS[1], 'c:' .. g, string.format('%d', s[1]), 'b:' .. g, string.format('%d', s[2]))
end
redis.call('HSET', KEYS[1], 'layout', '1')
return 1
"""
UPGRADE_ATTEMPTS_MAX = 100
"""How often an upgrade lists a tenant's namespaces again when they changed meanwhile before it gives up."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisMemoryStore(MemoryStore):
    """Memory primitives as Redis commands and Lua scripts (see the module docstring)."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put = Script(client, _PUT.replace("LOGMAX", str(LOG_VERSIONS_MAX)))
        self._delete = Script(client, _DELETE.replace("LOGMAX", str(LOG_VERSIONS_MAX)))
        self._upgrade_script = Script(client, _UPGRADE)
        self._cache = SnapshotCache()

    @staticmethod
    def _keys(tenant: str, namespace: str) -> list[str]:
        p = tenant_prefix(tenant)
        return [
            f"{p}memspaces",
            f"{p}memver",
            f"{p}memusage",
            f"{p}memexp",
            f"{p}mem:{namespace}",
            f"{p}memmeta:{namespace}",
            f"{p}memids:{namespace}",
            f"{p}memlog:{namespace}",
            f"{p}memgroups",
        ]

    async def _upgrade(self, tenant: str) -> None:
        """Sum each owner group's count and bytes of a tenant stored before they were kept (module docstring)."""
        p = tenant_prefix(tenant)
        for _ in range(UPGRADE_ATTEMPTS_MAX):
            names = [_s(n) for n in await redis_call(self._r.hkeys(f"{p}memspaces"))]
            keys = [f"{p}memgroups", f"{p}memspaces", *(f"{p}memmeta:{n}" for n in names)]
            if int(await self._upgrade_script(keys, names)):
                return
        raise BackendFailure(f"the memory groups of tenant {tenant!r} could not be summed: its namespaces kept moving")

    async def space(self, tenant: str, namespace: str) -> Space | None:
        found = await redis_call(self._r.hget(f"{tenant_prefix(tenant)}memspaces", namespace))
        return Space.decode(_s(found)) if found is not None else None

    async def put_many(
        self, tenant: str, namespace: str, space: Space, memories: Sequence[StoredMemory], quota: Quota, now: float
    ) -> PutOutcome:
        args: list[bytes | str | int] = [
            namespace,
            space.encode(),
            repr(now),
            quota.namespaces_max,
            quota.memories_max,
            quota.bytes_max,
            quota.group,
            quota.group_namespaces_max,
            group_of(namespace),
            quota.group_memories_max,
            quota.group_bytes_max,
        ]
        for m in memories:
            args += [m.id, m.blob(), m.size_bytes, m.digest, "" if m.expires is None else repr(m.expires)]
        reply = await self._put(self._keys(tenant, namespace), args)
        if _s(reply[0]) == "upgrade":
            await self._upgrade(tenant)
            reply = await self._put(self._keys(tenant, namespace), args)
        status = _s(reply[0])
        if status == "space":
            return PutOutcome("space", space=Space.decode(_s(reply[1])))
        if status == "conflict":
            id = _s(reply[1])
            return PutOutcome("conflict", {id: StoredMemory.from_blob(id, reply[2])})
        if status != "ok":
            return PutOutcome(status)  # type: ignore[arg-type]
        pairs = reply[1:]
        existing = {_s(pairs[i]): StoredMemory.from_blob(_s(pairs[i]), pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return PutOutcome(existing=existing)

    async def get(self, tenant: str, namespace: str, id: str) -> StoredMemory | None:
        blob = await redis_call(self._r.hget(f"{tenant_prefix(tenant)}mem:{namespace}", id))
        return StoredMemory.from_blob(id, blob) if blob is not None else None

    async def delete(self, tenant: str, namespace: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        args = [namespace, group_of(namespace), *dict.fromkeys(ids)]
        removed = int(await self._delete(self._keys(tenant, namespace), args))
        if removed < 0:  # stored before the groups were kept: sum them, then delete
            await self._upgrade(tenant)
            removed = int(await self._delete(self._keys(tenant, namespace), args))
        return removed

    async def page(self, tenant: str, namespace: str, after: str | None, limit: int) -> list[StoredMemory]:
        p = tenant_prefix(tenant)
        start = "-" if after is None else "(" + after
        ids = [_s(i) for i in await redis_call(self._r.zrangebylex(f"{p}memids:{namespace}", start, "+", 0, limit))]
        if not ids:
            return []
        blobs = await redis_call(self._r.hmget(f"{p}mem:{namespace}", ids))
        return [StoredMemory.from_blob(i, b) for i, b in zip(ids, blobs, strict=True) if b is not None]

    async def namespaces(self, tenant: str) -> list[tuple[str, Space, int]]:
        p = tenant_prefix(tenant)
        spaces = {_s(k): Space.decode(_s(v)) for k, v in (await redis_call(self._r.hgetall(f"{p}memspaces"))).items()}
        names = sorted(spaces)
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hlen(f"{p}memmeta:{name}")
            counts = await redis_call(pipe.execute())
        return [(name, spaces[name], int(count)) for name, count in zip(names, counts, strict=True)]

    async def expired(self, tenant: str, now: float, limit: int) -> list[tuple[str, str]]:
        members = await redis_call(
            self._r.zrangebyscore(f"{tenant_prefix(tenant)}memexp", "-inf", repr(now), start=0, num=limit)
        )
        return [tuple(_s(m).split("\n", 1)) for m in members]  # type: ignore[misc]

    async def snapshot(self, tenant: str, namespace: str) -> Snapshot | None:
        keys = self._keys(tenant, namespace)
        raw_version = await redis_call(self._r.hget(keys[1], namespace))
        version = int(raw_version) if raw_version is not None else None
        cached = self._cache.latest(tenant, namespace)
        if cached is not None and cached[0] == version:
            return cached[1]
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hget(keys[1], namespace)
            pipe.hget(keys[0], namespace)
            pipe.zrangebyscore(keys[7], (cached[0] + 1) if cached else "+inf", "+inf", withscores=True)
            raw_version, raw_space, logged = await redis_call(pipe.execute())
        if raw_space is None:
            return None
        version, space = int(raw_version), Space.decode(_s(raw_space))
        if cached is not None and cached[1].space == space and logged and int(logged[0][1]) == cached[0] + 1:
            await self._catch_up(keys, cached[1], [_s(m).split("\n", 1)[1] for m, _ in logged])
            return self._cache.put(tenant, namespace, int(logged[-1][1]), cached[1])
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hget(keys[1], namespace)
            pipe.hgetall(keys[4])
            raw_version, rows = await redis_call(pipe.execute())
        memories = [StoredMemory.from_blob(_s(id), blob) for id, blob in rows.items()]
        return self._cache.put(tenant, namespace, int(raw_version), Snapshot.build(memories, space))

    async def _catch_up(self, keys: list[str], snapshot: Snapshot, logged: list[str]) -> None:
        # a memory read after a later write is newer than the log says: the next refresh applies that write again
        ids = list(dict.fromkeys(logged))
        blobs = await redis_call(self._r.hmget(keys[4], ids))
        upserts = [StoredMemory.from_blob(i, b) for i, b in zip(ids, blobs, strict=True) if b is not None]
        snapshot.apply(upserts, [i for i, b in zip(ids, blobs, strict=True) if b is None])
