"""Checkpoints on Redis, under the tenant's hash tag; a put (with its bound and pruning), a batch of writes and a
thread's deletion are each one Lua script.

Keys (``<t>`` is ``<len>:<thread>``, ``<n>`` is ``<len>:<namespace>``: length-prefixed, so no two collide)::

    sos:{t:<tenant>}:graph:threads                   set: thread ids with checkpoints
    sos:{t:<tenant>}:graph:<t>:ns                    set: namespaces of the thread
    sos:{t:<tenant>}:graph:<t>:<n>:ids               sorted set (all scores 0, so by id): checkpoint ids
    sos:{t:<tenant>}:graph:<t>:<n>:cp:<id>           hash: parent, state, metadata
    sos:{t:<tenant>}:graph:<t>:<n>:w:<id>            hash: "<task>\\0<idx>" -> "<channel>\\0<path>\\0<value>"
"""

from __future__ import annotations

from collections.abc import Sequence

from ..checkpoints.store import CheckpointRow, CheckpointStore, WriteRow
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisCheckpointStore"]

_PUT = """
local threads, base = KEYS[1], ARGV[1]
if redis.call('SISMEMBER', threads, ARGV[2]) == 0 then
  if redis.call('SCARD', threads) >= tonumber(ARGV[8]) then return 0 end
  redis.call('SADD', threads, ARGV[2])
end
redis.call('SADD', ARGV[9], ARGV[3])
redis.call('ZADD', base .. 'ids', 0, ARGV[4])
redis.call('HSET', base .. 'cp:' .. ARGV[4], 'parent', ARGV[5], 'state', ARGV[6], 'metadata', ARGV[7])
local extra = redis.call('ZCARD', base .. 'ids') - tonumber(ARGV[10])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', base .. 'ids', 0, extra - 1)) do
    redis.call('DEL', base .. 'cp:' .. old, base .. 'w:' .. old)
  end
  redis.call('ZREMRANGEBYRANK', base .. 'ids', 0, extra - 1)
end
return 1
"""

_WRITES = """
for i = 1, #ARGV, 3 do
  if ARGV[i + 2] == '1' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

_DELETE = """
local tbase = ARGV[1]
for _, n in ipairs(redis.call('SMEMBERS', tbase .. 'ns')) do
  local base = tbase .. string.len(n) .. ':' .. n .. ':'
  for _, id in ipairs(redis.call('ZRANGE', base .. 'ids', 0, -1)) do
    redis.call('DEL', base .. 'cp:' .. id, base .. 'w:' .. id)
  end
  redis.call('DEL', base .. 'ids')
end
redis.call('DEL', tbase .. 'ns')
redis.call('SREM', KEYS[1], ARGV[2])
return 1
"""


def _part(value: str) -> str:
    return f"{len(value)}:{value}"


class RedisCheckpointStore(CheckpointStore):
    """Checkpoint primitives as Redis commands and scripts."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put = Script(client, _PUT)
        self._writes = Script(client, _WRITES)
        self._delete = Script(client, _DELETE)

    def _thread(self, tenant: str, thread: str) -> str:
        return f"{tenant_prefix(tenant)}graph:{_part(thread)}:"

    def _base(self, tenant: str, thread: str, ns: str) -> str:
        return f"{self._thread(tenant, thread)}{_part(ns)}:"

    async def put(self, tenant: str, row: CheckpointRow, threads_max: int, per_thread_max: int) -> bool:
        tbase, base = self._thread(tenant, row.thread), self._base(tenant, row.thread, row.ns)
        args: list[bytes | str | int] = [
            base,
            row.thread,
            row.ns,
            row.checkpoint_id,
            row.parent_id,
            row.state,
            row.metadata,
        ]
        args += [threads_max, f"{tbase}ns", per_thread_max]
        return bool(await self._put([f"{tenant_prefix(tenant)}graph:threads"], args))

    async def put_writes(
        self, tenant: str, thread: str, ns: str, checkpoint_id: str, writes: Sequence[WriteRow]
    ) -> None:
        if not writes:
            return
        args: list[bytes | str | int] = []
        for w in writes:
            value = w.channel.encode() + b"\x00" + w.task_path.encode() + b"\x00" + w.value
            args += [f"{w.task_id}\x00{w.idx}", value, "1" if w.idx < 0 else "0"]
        await self._writes([f"{self._base(tenant, thread, ns)}w:{checkpoint_id}"], args)

    async def _row(self, tenant: str, thread: str, ns: str, checkpoint_id: str) -> CheckpointRow | None:
        key = f"{self._base(tenant, thread, ns)}cp:{checkpoint_id}"
        parent, state, metadata = await redis_call(self._r.hmget(key, ["parent", "state", "metadata"]))
        if state is None:
            return None
        return CheckpointRow(thread, ns, checkpoint_id, parent.decode(), bytes(state), bytes(metadata))

    async def get(self, tenant: str, thread: str, ns: str, checkpoint_id: str | None) -> CheckpointRow | None:
        if checkpoint_id is None:
            ids = await redis_call(self._r.zrange(f"{self._base(tenant, thread, ns)}ids", -1, -1))
            if not ids:
                return None
            checkpoint_id = ids[0].decode()
        return await self._row(tenant, thread, ns, checkpoint_id)

    async def _ids(self, tenant: str, thread: str, ns: str, before: str | None) -> list[str]:
        top = f"({before}" if before is not None else "+"
        ids = await redis_call(self._r.zrevrangebylex(f"{self._base(tenant, thread, ns)}ids", top, "-"))
        return [i.decode() for i in ids]

    async def find(
        self, tenant: str, thread: str | None, ns: str | None, before: str | None, limit: int | None
    ) -> list[CheckpointRow]:
        if thread is None:
            members = await redis_call(self._r.smembers(f"{tenant_prefix(tenant)}graph:threads"))
            threads = sorted((m.decode() for m in members), reverse=True)
        else:
            threads = [thread]
        found: list[CheckpointRow] = []
        for th in threads:
            spaces = await redis_call(self._r.smembers(f"{self._thread(tenant, th)}ns"))
            names = [n.decode() for n in spaces]
            ordered = sorted(
                [(cid, n) for n in names if ns in (None, n) for cid in await self._ids(tenant, th, n, before)],
                reverse=True,
            )
            for cid, n in ordered:
                if limit is not None and len(found) >= limit:
                    return found
                row = await self._row(tenant, th, n, cid)
                if row is not None:
                    found.append(row)
        return found

    async def writes(self, tenant: str, thread: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        kept = await redis_call(self._r.hgetall(f"{self._base(tenant, thread, ns)}w:{checkpoint_id}"))
        rows = []
        for field, value in kept.items():
            task, idx = field.decode().rsplit("\x00", 1)
            channel, path, data = bytes(value).split(b"\x00", 2)
            rows.append(WriteRow(task, int(idx), channel.decode(), data, path.decode()))
        return sorted(rows, key=lambda w: (w.task_id, w.idx))

    async def delete_thread(self, tenant: str, thread: str) -> None:
        await self._delete([f"{tenant_prefix(tenant)}graph:threads"], [self._thread(tenant, thread), thread])
