"""Identity and registry on Redis: the seat check and the use counters are Lua scripts, so each is one atomic step.

Keys::

    sos:tenants                          hash slug -> tenant JSON (times as epoch floats)
    sos:tokenidx:<digest>                the tenant slug a token digest belongs to (the only global token key)
    sos:{t:T}:token:<digest>             hash: id tenant agent scopes created expires revoked label
    sos:{t:T}:tokens                     list of the tenant's token digests, oldest first
    sos:{t:T}:linkuses                   hash use key (digest of the signed link) -> uses remaining
    sos:{t:T}:caprevoked                 set of revoked capability ids
    sos:{t:T}:registry                   hash name -> JSON {"card": <card JSON text>, "extras": <extras JSON text>}
    sos:{t:T}:registry:since / :seen     hashes name -> registered_at / last_seen (epoch floats)
    sos:{t:T}:audit:records / :head      the tenant's audit chain: the issue, revoke, use and revoke-capability
                                         scripts append an event's record there before their first write

Two kinds of key sit outside the tenant hash tag, on purpose: the tenant records (one hash, read before any
tenant is chosen; every operation on it is one command on one key) and the token index (a bearer token is looked
up by digest before its tenant is known). Only the digest is stored; the raw token never reaches Redis. Token
records live under their tenant's hash tag, so the issue script (the seat check) and the revoke script read and
write one slot, and a Redis Cluster spreads identity over its shards like every other service.

Issuing is an idempotent two-step over two slots: the index entry is written first, then the record (with the
seat check, atomically). A process that dies between the two leaves an index entry without a record: a lookup
reads it as "no such token" (the token was never handed out), so it is harmless; a refused seat deletes its
index entry. The record is the truth; the index only says which tenant's slot to read.

Upgrading a one-server deployment: earlier releases kept token records at the global ``sos:token:<digest>``.
:meth:`RedisIdentityStore.migrate` moves each one under its tenant's hash tag and writes its index entry, one
atomic script per token (a record already moved is never overwritten, so a revoke made meanwhile stands), then
sets ``sos:layout:tokens``; ``RedisBackend.connect`` runs it once per database (skipped when that key is set, and
on a cluster, which never held the old layout).

Records that a script updates in place (tokens, registry times) are hash fields, not JSON: Lua's ``cjson``
re-encodes numbers with 14 significant digits and empty arrays as objects, which would corrupt them. Floats are
written with Python's ``repr`` and read back exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..identity.models import Tenant, TokenInfo
from ..identity.store import IdentityStore, RegistryEntry, RegistryStore
from .redis_audit import AUDIT_LUA, audit_args, audit_keys
from .redis_call import RedisClient, redis_call, tenant_prefix

__all__ = ["RedisIdentityStore", "RedisRegistryStore"]

TENANTS_KEY = "sos:tenants"
TOKEN_INDEX_PREFIX = "sos:tokenidx:"
LEGACY_TOKEN_PREFIX = "sos:token:"
"""Where releases before the per-tenant layout kept token records (moved by :meth:`RedisIdentityStore.migrate`)."""
TOKEN_LAYOUT_KEY = "sos:layout:tokens"
TOKEN_LAYOUT = "2"
MIGRATE_SCAN_COUNT = 1_000

# KEYS: legacy record, new record, index entry. ARGV: tenant. One token moved atomically (one server only); a
# record already at its new place wins, so a change made there since is never overwritten by the old copy.
_MIGRATE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  local fields = redis.call('HGETALL', KEYS[1])
  if #fields == 0 then return 0 end
  redis.call('HSET', KEYS[2], unpack(fields))
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: tenant digest list, new token key, audit records and head. ARGV: the tenant's token prefix (same slot),
# digest, agent ('' = none), seats_max ('' = none), now (epoch s), the audit record (AUDIT_ARGS), then the token's
# field/value pairs. Seat rule: memory_identity.seat_taken's. The record is appended before the token is written.
_ISSUE = (
    AUDIT_LUA
    + """
local prefix, digest, agent, seats, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if agent ~= '' and seats ~= '' then
  local seated, n = {}, 0
  for _, d in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local t = redis.call('HMGET', prefix .. d, 'agent', 'expires', 'revoked')
    local live = t[3] == '' and (t[2] == '' or tonumber(t[2]) > now)
    if t[1] and t[1] ~= '' and live and not seated[t[1]] then
      seated[t[1]] = true
      n = n + 1
    end
  end
  if not seated[agent] and n >= tonumber(seats) then return 0 end
end
audit_append(KEYS[3], KEYS[4], 5)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 14))
redis.call('RPUSH', KEYS[1], digest)
return 1
"""
)

# KEYS: tenant digest list, audit records and head. ARGV: the tenant's token prefix (same slot), token id, now,
# the audit record.
_REVOKE = (
    AUDIT_LUA
    + """
for _, d in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local t = redis.call('HMGET', ARGV[1] .. d, 'id', 'revoked')
  if t[1] == ARGV[2] and t[2] == '' then
    audit_append(KEYS[2], KEYS[3], 3)
    redis.call('HSET', ARGV[1] .. d, 'revoked', ARGV[3])
    return 1
  end
end
return 0
"""
)

# KEYS: the tenant's use counters, audit records and head. ARGV: the audit record, then (use key, initial uses)
# pairs. All or none.
_CONSUME = (
    AUDIT_LUA
    + """
local counts, order = {}, {}
for i = 9, #ARGV, 2 do
  local id = ARGV[i]
  if counts[id] == nil then order[#order + 1] = id end
  counts[id] = tonumber(redis.call('HGET', KEYS[1], id) or ARGV[i + 1])
end
for _, id in ipairs(order) do
  if counts[id] <= 0 then return 0 end
end
audit_append(KEYS[2], KEYS[3], 0)
for _, id in ipairs(order) do
  redis.call('HSET', KEYS[1], id, string.format('%d', counts[id] - 1))
end
return 1
"""
)

# KEYS: revoked capability ids, audit records and head. ARGV: the audit record, the capability id.
_REVOKE_CAPABILITY = (
    AUDIT_LUA
    + """
audit_append(KEYS[2], KEYS[3], 0)
redis.call('SADD', KEYS[1], ARGV[9])
return 1
"""
)

# KEYS: audit records and head. ARGV: the audit record.
_RECORD = (
    AUDIT_LUA
    + """
audit_append(KEYS[1], KEYS[2], 0)
return 1
"""
)

# KEYS: registry, since, seen. ARGV: name, record JSON, registered_at, last_seen. Returns 1 when new.
_PUT = """
local new = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return new
"""

# KEYS: registry, seen. ARGV: name, now.
_TOUCH = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: registry, since, seen. ARGV: name.
_DELETE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return n
"""


_call = redis_call


_p = tenant_prefix


def _token_prefix(tenant: str) -> str:
    """Where a tenant's token records live: under its hash tag, with the digest list the scripts walk."""
    return f"{_p(tenant)}token:"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _f(value: datetime | None) -> str:
    return repr(value.timestamp()) if value is not None else ""


def _dt(value: str) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _tenant_json(t: Tenant) -> str:
    record = {
        "slug": t.slug,
        "plan": t.plan,
        "seats_max": t.seats_max,
        "status": t.status,
        "created_at": t.created_at.timestamp(),
        "channels": list(t.channels),
    }
    return json.dumps(record)


def _tenant(raw: bytes) -> Tenant:
    r = json.loads(raw)
    created = datetime.fromtimestamp(r["created_at"], UTC)
    return Tenant(r["slug"], r["plan"], r["seats_max"], r["status"], created, tuple(r["channels"]))


def _token_fields(t: TokenInfo) -> list[str]:
    return [
        *("id", t.id, "tenant", t.tenant, "agent", t.agent or "", "scopes", json.dumps(list(t.scopes))),
        *("created", _f(t.created_at), "expires", _f(t.expires_at), "revoked", _f(t.revoked_at), "label", t.label),
    ]


def _token(raw: dict[bytes, bytes]) -> TokenInfo:
    f = {_s(k): _s(v) for k, v in raw.items()}
    return TokenInfo(
        id=f["id"],
        tenant=f["tenant"],
        agent=f["agent"] or None,
        scopes=tuple(json.loads(f["scopes"])),
        created_at=datetime.fromtimestamp(float(f["created"]), UTC),
        expires_at=_dt(f["expires"]),
        revoked_at=_dt(f["revoked"]),
        label=f["label"],
    )


class RedisIdentityStore(IdentityStore):
    """Identity primitives as Redis commands and Lua scripts. A write given an audit record appends it in its own
    script, before its effect (``audits_writes``); a tenant's record (outside every tenant's hash tag) is written
    right after its audit record, so a status change never exists without its record."""

    audits_writes: bool = True

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._revoke_capability = client.register_script(_REVOKE_CAPABILITY)
        self._record = client.register_script(_RECORD)
        self._issue = client.register_script(_ISSUE)
        self._revoke = client.register_script(_REVOKE)
        self._consume = client.register_script(_CONSUME)
        self._migrate = client.register_script(_MIGRATE)

    async def migrate(self) -> int:
        """Move token records of the earlier global layout under their tenants' hash tags (see the module
        docstring); how many were moved. Idempotent and safe beside other processes doing the same; once done it
        marks the database, so later calls cost one ``GET``. One server only: a cluster never held that layout."""
        if _s(await _call(self._r.get(TOKEN_LAYOUT_KEY)) or b"") == TOKEN_LAYOUT:
            return 0
        moved = 0
        async for key in self._r.scan_iter(match=LEGACY_TOKEN_PREFIX + "*", count=MIGRATE_SCAN_COUNT):
            digest = _s(key)[len(LEGACY_TOKEN_PREFIX) :]
            tenant = await _call(self._r.hget(key, "tenant"))
            if tenant is None:
                continue
            keys = [key, _token_prefix(_s(tenant)) + digest, TOKEN_INDEX_PREFIX + digest]
            moved += int(await _call(self._migrate(keys=keys, args=[_s(tenant)])))
        await _call(self._r.set(TOKEN_LAYOUT_KEY, TOKEN_LAYOUT))
        return moved

    async def create_tenant(self, tenant: Tenant) -> bool:
        return bool(await _call(self._r.hsetnx(TENANTS_KEY, tenant.slug, _tenant_json(tenant))))

    async def get_tenant(self, slug: str) -> Tenant | None:
        raw = await _call(self._r.hget(TENANTS_KEY, slug))
        return _tenant(raw) if raw is not None else None

    async def list_tenants(self) -> list[Tenant]:
        rows: dict[bytes, bytes] = await _call(self._r.hgetall(TENANTS_KEY))
        return [_tenant(rows[k]) for k in sorted(rows)]

    async def put_tenant(self, tenant: Tenant, audit: Any = None) -> None:
        if audit is not None:  # the record first: the tenants hash is in no tenant's slot
            await _call(self._record(keys=audit_keys(tenant.slug), args=audit_args(tenant.slug, audit)))
        await _call(self._r.hset(TENANTS_KEY, tenant.slug, _tenant_json(tenant)))

    async def issue_token(
        self, digest: str, info: TokenInfo, seats_max: int | None, now: datetime, audit: Any = None
    ) -> bool:
        prefix = _token_prefix(info.tenant)
        keys = [f"{_p(info.tenant)}tokens", prefix + digest, *audit_keys(info.tenant)]
        seats = "" if seats_max is None else str(seats_max)
        args = [prefix, digest, info.agent or "", seats, repr(now.timestamp())]
        args += [*audit_args(info.tenant, audit), *_token_fields(info)]
        # index first (see the module docstring): a record is never written that no lookup can reach
        await _call(self._r.set(TOKEN_INDEX_PREFIX + digest, info.tenant))
        issued = bool(await _call(self._issue(keys=keys, args=args)))
        if not issued:
            await _call(self._r.delete(TOKEN_INDEX_PREFIX + digest))
        return issued

    async def token_by_digest(self, digest: str) -> tuple[str, TokenInfo] | None:
        tenant = await _call(self._r.get(TOKEN_INDEX_PREFIX + digest))
        if tenant is None:
            return None
        raw: dict[bytes, bytes] = await _call(self._r.hgetall(_token_prefix(_s(tenant)) + digest))
        return (digest, _token(raw)) if raw else None  # no record: an issue that never finished

    async def list_tokens(self, tenant: str) -> list[TokenInfo]:
        digests = await _call(self._r.lrange(f"{_p(tenant)}tokens", 0, -1))
        prefix = _token_prefix(tenant)
        pipe = self._r.pipeline(transaction=False)
        for digest in digests:
            pipe.hgetall(prefix + _s(digest))
        rows: list[dict[bytes, bytes]] = await _call(pipe.execute())
        return [_token(row) for row in rows if row]

    async def revoke_token(self, tenant: str, token_id: str, now: datetime, audit: Any = None) -> bool:
        args = [_token_prefix(tenant), token_id, repr(now.timestamp()), *audit_args(tenant, audit)]
        return bool(await _call(self._revoke(keys=[f"{_p(tenant)}tokens", *audit_keys(tenant)], args=args)))

    async def consume_uses(self, tenant: str, links: Sequence[tuple[str, int]], audit: Any = None) -> bool:
        if not links:
            return True
        args = [*audit_args(tenant, audit), *(part for key, initial in links for part in (key, str(int(initial))))]
        keys = [f"{_p(tenant)}linkuses", *audit_keys(tenant)]
        return bool(await _call(self._consume(keys=keys, args=args)))

    async def revoke_capability(self, tenant: str, capability_id: str, audit: Any = None) -> None:
        keys = [f"{_p(tenant)}caprevoked", *audit_keys(tenant)]
        await _call(self._revoke_capability(keys=keys, args=[*audit_args(tenant, audit), capability_id]))

    async def revoked_capabilities(self, tenant: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        flags = await _call(self._r.smismember(f"{_p(tenant)}caprevoked", list(ids)))
        return {i for i, flag in zip(ids, flags, strict=True) if flag}


class RedisRegistryStore(RegistryStore):
    """Agent cards in per-tenant hashes; times in hashes beside them so scripts update them exactly."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._put = client.register_script(_PUT)
        self._touch = client.register_script(_TOUCH)
        self._delete = client.register_script(_DELETE)

    @staticmethod
    def _keys(tenant: str) -> list[str]:
        p = _p(tenant)
        return [f"{p}registry", f"{p}registry:since", f"{p}registry:seen"]

    async def put(self, tenant: str, entry: RegistryEntry) -> bool:
        record = json.dumps({"card": entry.card.decode(), "extras": entry.extras.decode()}, ensure_ascii=False)
        args = [entry.name, record, repr(entry.registered_at), repr(entry.last_seen)]
        return bool(await _call(self._put(keys=self._keys(tenant), args=args)))

    async def touch(self, tenant: str, name: str, now: float) -> bool:
        registry, _, seen = self._keys(tenant)
        return bool(await _call(self._touch(keys=[registry, seen], args=[name, repr(now)])))

    async def get(self, tenant: str, name: str) -> RegistryEntry | None:
        pipe = self._r.pipeline(transaction=True)
        for key in self._keys(tenant):
            pipe.hget(key, name)
        record, since, seen = await _call(pipe.execute())
        if record is None or since is None or seen is None:
            return None
        return _entry(name, record, since, seen)

    async def list(self, tenant: str) -> list[RegistryEntry]:
        pipe = self._r.pipeline(transaction=True)
        for key in self._keys(tenant):
            pipe.hgetall(key)
        records, since, seen = await _call(pipe.execute())
        out = []
        for raw_name in sorted(records):
            if raw_name in since and raw_name in seen:
                out.append(_entry(_s(raw_name), records[raw_name], since[raw_name], seen[raw_name]))
        return out

    async def delete(self, tenant: str, name: str) -> bool:
        return bool(await _call(self._delete(keys=self._keys(tenant), args=[name])))


def _entry(name: str, record: bytes, since: bytes, seen: bytes) -> RegistryEntry:
    body = json.loads(record)
    return RegistryEntry(name, body["card"].encode(), body["extras"].encode(), float(since), float(seen))
