"""Skills on Redis: a hash per version under the tenant's hash tag; claiming an id's owner with a version, and
counting an invocation, are each one Lua script.

Keys::

    sos:{t:<tenant>}:skill:<id>:<version>   hash: card digest verification invocations earned last_at
                                            by_tenant published
    sos:{t:<tenant>}:skill:<id>             set of versions
    sos:{t:<tenant>}:skills                 set of skill ids
    sos:{t:<tenant>}:skillowners            hash: skill id -> author who first published it
    sos:{t:<tenant>}:skillinv               set of counted invocation ids
    sos:{t:<tenant>}:skillbind              hash: invocation id -> the outcome it is bound to (set once)
    sos:{t:<tenant>}:skillcallers:<id>      set of the skill's callers other than its author
    sos:{t:<tenant>}:skillpayers:<id>       set of those of them who paid
    sos:{t:<tenant>}:skillcalled            set of skill ids with a noted caller
"""

from __future__ import annotations

import json
from typing import Any

from ..skills.store import SkillDemand, SkillRecord, SkillStats, SkillStore
from .redis_audit import AUDIT_LUA, audit_args, audit_keys
from .redis_call import RedisClient, redis_call, tenant_prefix

__all__ = ["RedisSkillStore"]

_PUT = """
redis.call('HSETNX', KEYS[4], ARGV[6], ARGV[7])
local owner = redis.call('HGET', KEYS[4], ARGV[6])
if owner ~= ARGV[7] then return {0, owner} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, owner} end
redis.call('HSET', KEYS[1], 'card', ARGV[1], 'digest', ARGV[2], 'verification', ARGV[3], 'invocations', '0',
           'earned', '0', 'last_at', '', 'by_tenant', '{}', 'published', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[6])
return {1, owner}
"""

_INVOKE = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
local by = cjson.decode(redis.call('HGET', KEYS[1], 'by_tenant'))
by[ARGV[2]] = (by[ARGV[2]] or 0) + 1
local parts = {}
for k, v in pairs(by) do parts[#parts + 1] = cjson.encode(k) .. ':' .. string.format('%d', v) end
redis.call('HINCRBY', KEYS[1], 'invocations', 1)
redis.call('HINCRBY', KEYS[1], 'earned', ARGV[3])
redis.call('HSET', KEYS[1], 'last_at', ARGV[4], 'by_tenant', '{' .. table.concat(parts, ',') .. '}')
return 1
"""

# KEYS: the version, audit records and head. ARGV: verification, then the audit record (appended first).
_VERIFY = (
    AUDIT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
audit_append(KEYS[2], KEYS[3], 1)
redis.call('HSET', KEYS[1], 'verification', ARGV[1])
return 1
"""
)

_FIELDS = ("card", "digest", "verification", "invocations", "earned", "last_at", "by_tenant", "published")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSkillStore(SkillStore):
    """Skill primitives as Redis commands and Lua scripts; a verification given an audit record appends it in its
    own script."""

    audits_writes: bool = True

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put = client.register_script(_PUT)
        self._invoke = client.register_script(_INVOKE)
        self._verify = client.register_script(_VERIFY)

    _p = staticmethod(tenant_prefix)

    async def _call(self, awaitable: Any) -> Any:
        return await redis_call(awaitable)

    async def put_version(self, tenant: str, record: SkillRecord, author: str) -> tuple[SkillRecord | None, str]:
        p = self._p(tenant)
        keys = [
            f"{p}skill:{record.skill_id}:{record.version}",
            f"{p}skill:{record.skill_id}",
            f"{p}skills",
            f"{p}skillowners",
        ]
        args: list[Any] = [
            record.card,
            record.digest,
            record.verification,
            repr(record.published_at),
            record.version,
            record.skill_id,
            author,
        ]
        inserted, owner = await self._call(self._put(keys=keys, args=args))
        if inserted:
            return None, _s(owner)
        return await self.get_version(tenant, record.skill_id, record.version), _s(owner)

    async def get_version(self, tenant: str, skill_id: str, version: str) -> SkillRecord | None:
        values = await self._call(self._r.hmget(f"{self._p(tenant)}skill:{skill_id}:{version}", _FIELDS))
        if values[0] is None:
            return None
        card, digest, verification, invocations, earned, last_at, by_tenant, published = values
        stats = SkillStats(int(invocations), int(earned), float(last_at) if last_at else None, json.loads(by_tenant))
        return SkillRecord(skill_id, version, bytes(card), _s(digest), bytes(verification), stats, float(published))

    async def versions(self, tenant: str, skill_id: str) -> list[str]:
        return [_s(v) for v in await self._call(self._r.smembers(f"{self._p(tenant)}skill:{skill_id}"))]

    async def skill_ids(self, tenant: str) -> list[str]:
        return sorted(_s(v) for v in await self._call(self._r.smembers(f"{self._p(tenant)}skills")))

    async def set_verification(
        self, tenant: str, skill_id: str, version: str, verification: bytes, audit: Any = None
    ) -> bool:
        keys = [f"{self._p(tenant)}skill:{skill_id}:{version}", *audit_keys(tenant)]
        return bool(await self._call(self._verify(keys=keys, args=[verification, *audit_args(tenant, audit)])))

    async def bind_invocation(self, tenant: str, invocation_id: str, binding: str) -> str:
        key = f"{self._p(tenant)}skillbind"
        # HSETNX decides the one binding; it is never changed or deleted, so a later HGET reads that one
        if await self._call(self._r.hsetnx(key, invocation_id, binding)):
            return binding
        return _s(await self._call(self._r.hget(key, invocation_id)))

    async def counted(self, tenant: str, invocation_id: str) -> bool:
        return bool(await self._call(self._r.sismember(f"{self._p(tenant)}skillinv", invocation_id)))

    async def record_invocation(
        self,
        tenant: str,
        skill_id: str,
        version: str,
        invocation_id: str,
        caller_tenant: str,
        price: int,
        now: float,
    ) -> bool:
        p = self._p(tenant)
        keys = [f"{p}skill:{skill_id}:{version}", f"{p}skillinv"]
        return bool(await self._call(self._invoke(keys=keys, args=[invocation_id, caller_tenant, price, repr(now)])))

    async def note_caller(self, tenant: str, skill_id: str, caller: str, paid: bool) -> None:
        p = self._p(tenant)
        async with self._r.pipeline(transaction=True) as pipe:  # one key slot (the tenant's tag): atomic
            pipe.sadd(f"{p}skillcallers:{skill_id}", caller)
            if paid:
                pipe.sadd(f"{p}skillpayers:{skill_id}", caller)
            pipe.sadd(f"{p}skillcalled", skill_id)
            await self._call(pipe.execute())

    async def demand(self, tenant: str) -> dict[str, SkillDemand]:
        p = self._p(tenant)
        skills = sorted(_s(v) for v in await self._call(self._r.smembers(f"{p}skillcalled")))
        async with self._r.pipeline(transaction=False) as pipe:
            for skill in skills:
                pipe.scard(f"{p}skillcallers:{skill}")
                pipe.scard(f"{p}skillpayers:{skill}")
            counts = await self._call(pipe.execute()) if skills else []
        return {skill: SkillDemand(int(counts[2 * i]), int(counts[2 * i + 1])) for i, skill in enumerate(skills)}
