"""Tasks on Redis: a hash per task under the tenant's hash tag; inserting and each compare-and-set transition are
one Lua script, and the clock is the server's ``TIME`` (read in the same script as the record).

Keys::

    sos:{t:<tenant>}:task:<id>         hash: rev status created data
    sos:{t:<tenant>}:tasks             sorted set of task ids by creation time
    sos:{t:<tenant>}:tasks:s:<status>  sorted set of the ids in one status, by creation time
    sos:{t:<tenant>}:tasks:open        set of the ids not finished
"""

from __future__ import annotations

from typing import Any

from ..tasks.store import TaskRecord, TaskStore
from ..tasks.transitions import TERMINAL
from .redis_audit import AUDIT_LUA, audit_args, audit_keys
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisTaskStore"]

_INSERT = """
local found = redis.call('HMGET', KEYS[1], 'rev', 'status', 'created', 'data')
if found[1] then return {2, found[1], found[2], found[3], found[4]} end
if ARGV[5] == '1' and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[6]) then return {0} end
local share = tonumber(ARGV[8])
if ARGV[5] == '1' and share > 0 and redis.call('SCARD', KEYS[5]) >= share then
  -- the creator's set keeps ids of tasks since finished: drop those, then count again
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if redis.call('SISMEMBER', KEYS[3], id) == 0 then redis.call('SREM', KEYS[5], id) end
  end
  if redis.call('SCARD', KEYS[5]) >= share then return {0} end
end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'status', ARGV[2], 'created', ARGV[3], 'data', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[7])
if ARGV[5] == '1' then redis.call('SADD', KEYS[3], ARGV[7]) end
if ARGV[5] == '1' and share > 0 then redis.call('SADD', KEYS[5], ARGV[7]) end
return {1}
"""

_LOAD = """
return {redis.call('TIME'), redis.call('HMGET', KEYS[1], 'rev', 'status', 'created', 'data')}
"""

# KEYS: task, open, old and new status index, audit records and head. ARGV: 1-7 below, then the audit record
# (appended before the swap's first write; a resend finds the revision moved and writes nothing).
_SWAP = (
    AUDIT_LUA
    + """
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
audit_append(KEYS[5], KEYS[6], 7)
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'status', ARGV[3], 'data', ARGV[4])
if KEYS[3] ~= KEYS[4] then
  redis.call('ZREM', KEYS[3], ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
end
if ARGV[5] == '1' then redis.call('SADD', KEYS[2], ARGV[6]) else redis.call('SREM', KEYS[2], ARGV[6]) end
return 1
"""
)

_DELETE = """
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(task_id: str, fields: list[Any]) -> TaskRecord | None:
    rev, status, created, data = fields
    if rev is None:
        return None
    return TaskRecord(task_id, int(rev), _text(status), float(created), bytes(data))


class RedisTaskStore(TaskStore):
    """Task primitives as Lua scripts; a swap given an audit record appends it in its own script."""

    audits_writes: bool = True

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._insert = Script(client, _INSERT)
        self._load = Script(client, _LOAD)
        self._swap = Script(client, _SWAP)
        self._delete = Script(client, _DELETE)

    @staticmethod
    def _keys(tenant: str) -> tuple[str, str, str]:
        p = tenant_prefix(tenant)
        return f"{p}task:", f"{p}tasks", f"{p}tasks:open"

    async def insert(
        self, tenant: str, record: TaskRecord, open_max: int, creator: str | None = None, creator_open_max: int = 0
    ) -> tuple[TaskRecord | None, bool]:
        task, everything, open_ = self._keys(tenant)
        status = f"{everything}:s:{record.status}"
        args: list[bytes | str | int] = [record.rev, record.status, repr(record.created_at), record.data]
        args.append(int(record.status not in TERMINAL))
        share = creator_open_max if creator is not None else 0
        keys = [task + record.id, everything, open_, status, f"{open_}:by:{creator or '-'}"]
        reply = await self._insert(keys, [*args, open_max, record.id, share])
        if int(reply[0]) == 2:
            return _record(record.id, list(reply[1:])), False
        return None, int(reply[0]) == 1

    async def load(self, tenant: str, task_id: str) -> tuple[TaskRecord | None, float]:
        clock, fields = await self._load([self._keys(tenant)[0] + task_id], [])
        return _record(task_id, list(fields)), int(clock[0]) + int(clock[1]) / 1e6

    async def swap(self, tenant: str, expected: TaskRecord, record: TaskRecord, audit: Any = None) -> bool:
        task, everything, open_ = self._keys(tenant)
        keys = [task + record.id, open_, f"{everything}:s:{expected.status}", f"{everything}:s:{record.status}"]
        keys += audit_keys(tenant)
        is_open = int(record.status not in TERMINAL)
        args: list[bytes | str | int] = [expected.rev, record.rev, record.status, record.data, is_open, record.id]
        args += [repr(record.created_at), *audit_args(tenant, audit)]
        return int(await self._swap(keys, args)) == 1

    async def records(self, tenant: str, status: str | None, limit: int) -> list[TaskRecord]:
        task, everything, _ = self._keys(tenant)
        index = everything if status is None else f"{everything}:s:{status}"
        ids = [_text(i) for i in await redis_call(self._r.zrange(index, 0, limit - 1))]
        if not ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(task + task_id, ["rev", "status", "created", "data"])
        rows = await redis_call(pipe.execute())
        found = (_record(i, list(row)) for i, row in zip(ids, rows, strict=True))
        return [r for r in found if r is not None]

    async def open_count(self, tenant: str) -> int:
        return int(await redis_call(self._r.scard(self._keys(tenant)[2])))

    async def delete(self, tenant: str, expected: TaskRecord) -> bool:
        task, everything, open_ = self._keys(tenant)
        keys = [task + expected.id, everything, f"{everything}:s:{expected.status}", open_]
        return int(await self._delete(keys, [expected.rev, expected.id])) == 1

    async def finished_count(self, tenant: str) -> int:
        _, everything, open_ = self._keys(tenant)
        pipe = self._r.pipeline(transaction=True)
        pipe.zcard(everything)
        pipe.scard(open_)
        total, opened = await redis_call(pipe.execute())
        return int(total) - int(opened)

    async def now(self) -> float:
        seconds, micros = await redis_call(self._r.time())
        return int(seconds) + int(micros) / 1e6
