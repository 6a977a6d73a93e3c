"""Governance and audit stores on Redis, under the tenant's hash tag (one Cluster shard per tenant).

Keys::

    sos:{t:<tenant>}:gov:policy          hash: revision document
    sos:{t:<tenant>}:gov:c:<key>         a budget counter, expiring with its window
    sos:{t:<tenant>}:gov:approvals       hash: id -> document
    sos:{t:<tenant>}:gov:pending         sorted set: pending approval ids by deadline
    sos:{t:<tenant>}:audit:records       hash: sequence -> the record as JSON
    sos:{t:<tenant>}:audit:head          "<sequence> <digest>"
    sos:{t:<tenant>}:audit:checkpoints   hash: sequence -> the checkpoint as JSON

A budget's check-and-count, and an approval's decision, are each one Lua script; an audit append is a
``WATCH``/``MULTI`` transaction on the head (retried when another writer appended first), so chains never fork.
A policy change and an approval's request and decision append their audit record in their own script
(:mod:`~sos_kernel.backends.redis_audit`), before their effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from redis import exceptions as redis_errors

from ..audit.chain import chained
from ..audit.models import AuditDraft, AuditRecord, Checkpoint
from ..audit.store import AuditStore
from ..errors import InvariantViolation
from ..governance import store as _store
from ..governance.store import Charge, GovernanceStore
from ..ledger.chain import canonical_metadata
from .redis_audit import AUDIT_ARGS, AUDIT_LUA, audit_args, audit_keys
from .redis_call import RedisClient, Script, redis_call, tenant_prefix

__all__ = ["RedisAuditStore", "RedisGovernanceStore"]

# KEYS: policy, audit records and head. ARGV: document, the audit record, its details around the revision.
_PUT_POLICY = (
    AUDIT_LUA
    + f"""
local rev = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0') + 1
audit_append(KEYS[2], KEYS[3], 1, ARGV[{AUDIT_ARGS + 2}] .. string.format('%d', rev) .. ARGV[{AUDIT_ARGS + 3}])
redis.call('HSET', KEYS[1], 'revision', string.format('%d', rev), 'document', ARGV[1])
return rev
"""
)

# KEYS: policy, audit records and head. ARGV: the audit record.
_DELETE_POLICY = (
    AUDIT_LUA
    + """
if redis.call('HEXISTS', KEYS[1], 'document') == 0 then return 0 end
audit_append(KEYS[2], KEYS[3], 0)
redis.call('HDEL', KEYS[1], 'document')
return 1
"""
)

_CONSUME = """
local n = #KEYS
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count + tonumber(ARGV[2 * i - 1]) > tonumber(ARGV[2 * i]) then return i - 1 end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[2 * n + i])
end
return -1
"""

# KEYS: approvals, pending, decided, audit records and head. ARGV: 1-7 below, then the audit record.
_PUT_APPROVAL = (
    AUDIT_LUA
    + """
local limit = tonumber(ARGV[7])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, limit)) do
  redis.call('HDEL', KEYS[1], old)
  redis.call('ZREM', KEYS[2], old)
end
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[6], 'LIMIT', 0, limit)) do
  redis.call('HDEL', KEYS[1], old)
  redis.call('ZREM', KEYS[3], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 0 end
audit_append(KEYS[4], KEYS[5], 7)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
)

# KEYS: approvals, pending, decided, audit records and head. ARGV: id, document, the audit record.
_DECIDE = (
    AUDIT_LUA
    + """
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not deadline then return 0 end
audit_append(KEYS[4], KEYS[5], 2)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], deadline, ARGV[1])
return 1
"""
)


class RedisGovernanceStore(GovernanceStore):
    """Policies, counters and approvals on Redis; a write given an audit record appends it in its own script."""

    audits_writes: bool = True

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put_policy = client.register_script(_PUT_POLICY)  # not resent: a resend would count twice
        self._delete_policy = client.register_script(_DELETE_POLICY)
        self._consume = Script(client, _CONSUME)
        self._put_approval = client.register_script(_PUT_APPROVAL)
        self._decide = client.register_script(_DECIDE)

    async def get_policy(self, tenant: str) -> tuple[int, str] | None:
        rev, doc = await redis_call(self._r.hmget(tenant_prefix(tenant) + "gov:policy", ["revision", "document"]))
        if rev is None or not doc:
            return None
        return int(rev), doc.decode()

    async def put_policy(self, tenant: str, document: str, audit: Any = None) -> int:
        keys = [tenant_prefix(tenant) + "gov:policy", *audit_keys(tenant)]
        args = [document, *audit_args(tenant, audit), *_around_revision(audit)]
        return int(await redis_call(self._put_policy(keys=keys, args=args)))

    async def delete_policy(self, tenant: str, audit: Any = None) -> bool:
        keys = [tenant_prefix(tenant) + "gov:policy", *audit_keys(tenant)]
        return bool(await redis_call(self._delete_policy(keys=keys, args=audit_args(tenant, audit))))

    async def consume(self, tenant: str, charges: Sequence[Charge], now: float) -> int:
        if not charges:
            return -1
        keys = [tenant_prefix(tenant) + "gov:c:" + c.key for c in charges]
        args: list[bytes | str | int] = []
        for c in charges:
            args += [c.amount, c.maximum]
        args += [int(c.expires_at * 1000) + 1 for c in charges]
        return int(await self._consume(keys, args))

    async def put_approval(
        self, tenant: str, id: str, document: str, expires_at: float, pending_max: int, now: float, audit: Any = None
    ) -> bool:
        p = tenant_prefix(tenant)
        kept = repr(now - _store.APPROVALS_DECIDED_KEPT_S)
        args: list[bytes | str | int] = [
            id,
            document,
            repr(expires_at),
            repr(now),
            pending_max,
            kept,
            _store.APPROVALS_PURGE_MAX,
            *audit_args(tenant, audit),
        ]
        keys = [p + "gov:approvals", p + "gov:pending", p + "gov:decided", *audit_keys(tenant)]
        return bool(await redis_call(self._put_approval(keys=keys, args=args)))

    async def get_approval(self, tenant: str, id: str) -> str | None:
        found = await redis_call(self._r.hget(tenant_prefix(tenant) + "gov:approvals", id))
        return None if found is None else bytes(found).decode()

    async def decide_approval(self, tenant: str, id: str, document: str, audit: Any = None) -> bool:
        p = tenant_prefix(tenant)
        keys = [p + "gov:approvals", p + "gov:pending", p + "gov:decided", *audit_keys(tenant)]
        return bool(await redis_call(self._decide(keys=keys, args=[id, document, *audit_args(tenant, audit)])))

    async def list_approvals(self, tenant: str, now: float) -> list[str]:
        p = tenant_prefix(tenant)
        ids = await redis_call(self._r.zrangebyscore(p + "gov:pending", f"({now!r}", "+inf"))
        if not ids:
            return []
        docs = await redis_call(self._r.hmget(p + "gov:approvals", ids))
        return [bytes(d).decode() for d in docs if d is not None]


_REVISION = 9_007_199_254_740_991
"""A stand-in revision: the record's details are cut around it, and the script puts the new revision there."""


def _around_revision(audit: Any) -> list[str]:
    """The record's canonical details with ``revision`` added, as the text before and after its value."""
    if audit is None:
        return ["", ""]
    text = canonical_metadata({**audit.details, "revision": _REVISION})
    head, tail = text.split(f'"revision":{_REVISION}')
    return [head + '"revision":', tail]


def _parse(tenant: str, seq: int, raw: Any) -> AuditRecord:
    try:
        return AuditRecord.model_validate_json(raw)
    except ValidationError as exc:
        raise InvariantViolation(f"audit record {seq} of {tenant!r} is malformed", details={"seq": seq}) from exc


def _head(raw: Any) -> tuple[int, str | None]:
    if not raw:
        return 0, None
    seq, digest = bytes(raw).decode().split()
    return int(seq), digest


class RedisAuditStore(AuditStore):
    """The audit chain as a hash of JSON records per tenant."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client

    async def append(self, tenant: str, draft: AuditDraft) -> AuditRecord:
        p = tenant_prefix(tenant)
        while True:
            record = await redis_call(self._append(p, tenant, draft))
            if record is not None:
                return record  # type: ignore[no-any-return]

    async def _append(self, p: str, tenant: str, draft: AuditDraft) -> AuditRecord | None:
        """One try; ``None`` when another writer appended first (then chain after its record)."""
        async with self._r.pipeline(transaction=True) as pipe:
            await pipe.watch(p + "audit:head")
            head: Any = await pipe.get(p + "audit:head")
            seq, digest = _head(head)
            record = chained(tenant, digest, seq, draft)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(p + "audit:records", str(record.seq), record.model_dump_json())
            pipe.set(p + "audit:head", f"{record.seq} {record.digest}")
            try:
                await pipe.execute()
            except redis_errors.WatchError:
                return None
            return record

    async def page(self, tenant: str, after: int, limit: int) -> list[AuditRecord]:
        p = tenant_prefix(tenant)
        head, _ = await self.head(tenant)
        # a record written past the head behind the store's back is still read (and refused by verify)
        last = max(head, await self.count(tenant))
        found: list[AuditRecord] = []
        seq = after + 1
        while seq <= last and len(found) < limit:
            fields = [str(s) for s in range(seq, min(last, seq + limit) + 1)]
            raws = await redis_call(self._r.hmget(p + "audit:records", fields))
            for field, raw in zip(fields, raws, strict=True):
                if raw is not None and len(found) < limit:
                    found.append(_parse(tenant, int(field), raw))
            seq = int(fields[-1]) + 1
        return found

    async def head(self, tenant: str) -> tuple[int, str | None]:
        return _head(await redis_call(self._r.get(tenant_prefix(tenant) + "audit:head")))

    async def count(self, tenant: str) -> int:
        return int(await redis_call(self._r.hlen(tenant_prefix(tenant) + "audit:records")))

    async def put_checkpoint(self, checkpoint: Checkpoint) -> None:
        key = tenant_prefix(checkpoint.tenant) + "audit:checkpoints"
        await redis_call(self._r.hsetnx(key, str(checkpoint.seq), checkpoint.model_dump_json()))

    async def checkpoints(self, tenant: str) -> list[Checkpoint]:
        raw = await redis_call(self._r.hgetall(tenant_prefix(tenant) + "audit:checkpoints"))
        found = [Checkpoint.model_validate_json(v) for v in raw.values()]
        return sorted(found, key=lambda cp: cp.seq)
