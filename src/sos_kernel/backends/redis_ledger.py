"""The ledger on Redis: each batch is one Lua script, so the checks and the writes are one atomic step.

The script is the Redis twin of :mod:`sos_kernel.ledger.rules`; the conformance suite and the stateful model test
hold the two to the same behaviour. Amounts stay exact: balances are integers written with ``%d`` and every value
is at most 2**53 - 1, which Lua's doubles represent exactly. Time is the Redis server's (``TIME``), so hosts with
skewed clocks agree on when a hold expires.

Keys, all under the tenant's hash tag ``{t:<tenant>}``::

    sos:{t:T}:acct:<owner>:<currency>   hash: neg dp cp dpe cpe at digest (flags, posted/pending debits/credits)
    sos:{t:T}:accts                     set of "<owner>|<currency>"
    sos:{t:T}:xfer:<id>                 hash: the recorded transfer (request fields, seq, ts, status, error, state,
                                        digest: its link of the chain, hex)
    sos:{t:T}:xfers                     zset id -> seq (every recorded transfer)
    sos:{t:T}:hist:<owner>:<currency>   zset id -> seq (applied transfers touching the account)
    sos:{t:T}:holds                     zset hold id -> expiry (open holds)
    sos:{t:T}:lseq                      the tenant's ledger sequence
    sos:{t:T}:head                      the digest of the tenant's last record (32 bytes)
    sos:{t:T}:usage / usage:<id> / usage:n / prices   usage events and price entries
    sos:{t:T}:rates:<from>:<to>         hash: valid_from -> rate entry (the rate table)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..audit import acting
from ..audit.chain import audit_genesis
from ..ledger.chain import account_digest, canonical_metadata, genesis, request_digest
from ..ledger.models import Account, Balance, Price, Rate, Transfer, TransferRequest
from ..ledger.service import LEDGER_WRITE_IDS_MAX, ledger_write_action, ledger_write_ids
from ..ledger.store import Applied, LedgerStore, UsageQuery, load_rate, rate_key, rate_record
from .memory_ledger import usage_matches
from .redis_audit import SHA256_LUA, TIME_LUA
from .redis_call import ASYNC, Durability, RedisClient, Script, redis_call, tenant_prefix

__all__ = ["APPLY_SCRIPT", "RedisLedgerStore"]

_COMMON = """
local P = ARGV[1]
local function num(v) if v == false or v == nil then return 0 end return tonumber(v) end
local function fmt(n) return string.format('%d', n) end
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function acct_key(owner, cur) return P .. 'acct:' .. owner .. ':' .. cur end
local function load(owner, cur)
  local v = redis.call('HMGET', acct_key(owner, cur), 'neg', 'dp', 'cp', 'dpe', 'cpe')
  if not v[1] then return nil end
  return {neg = v[1] == '1', dp = num(v[2]), cp = num(v[3]), dpe = num(v[4]), cpe = num(v[5])}
end
local function save(owner, cur, a)
  redis.call('HSET', acct_key(owner, cur), 'dp', fmt(a.dp), 'cp', fmt(a.cp), 'dpe', fmt(a.dpe), 'cpe', fmt(a.cpe))
end
local function expire(now)
  local due = redis.call('ZRANGEBYSCORE', P .. 'holds', '-inf', string.format('%.6f', now))
  for _, hid in ipairs(due) do
    local h = redis.call('HMGET', P .. 'xfer:' .. hid, 'debit', 'credit', 'currency', 'amount')
    local amount = num(h[4])
    redis.call('HINCRBY', acct_key(h[1], h[3]), 'dpe', fmt(-amount))
    redis.call('HINCRBY', acct_key(h[2], h[3]), 'cpe', fmt(-amount))
    redis.call('HSET', P .. 'xfer:' .. hid, 'state', 'expired')
    redis.call('ZREM', P .. 'holds', hid)
  end
end
"""

_AUDIT = """
-- the batch's audit record (sos_kernel.audit.chain), chained after the tenant's audit head in this same script,
-- so a ledger write never exists without its record; KEYS[2] the records, KEYS[3] the head "<seq> <digest>"
local function audit(first_seq, outcome, sec, usec)
  local A = 3 + tonumber(ARGV[2]) * 12
  if ARGV[A + 1] ~= '1' then return end
  local aseq, aprev = 0, ARGV[A + 2]
  local ahead = redis.call('GET', KEYS[3])
  if ahead then
    local sp = string.find(ahead, ' ', 1, true)
    aseq, aprev = tonumber(string.sub(ahead, 1, sp - 1)), string.sub(ahead, sp + 1)
  end
  aseq = aseq + 1
  local actor, action = ARGV[A + 4], ARGV[A + 6]
  local details = ARGV[A + 7] .. string.format('%d', first_seq) .. '}'
  local function lp(v) return #v .. ':' .. v end
  local fields = '1:A' .. lp(string.format('%d', aseq)) .. lp(string.format('%d', sec * 1000000 + usec))
  fields = fields .. lp('ledger.write') .. lp(actor) .. lp(action) .. lp('') .. lp(outcome) .. lp(details)
  local _, digest = sha256(unhex(aprev) .. fields)
  local doc = '{"at":"' .. iso(sec, usec) .. '","kind":"ledger.write","actor":' .. ARGV[A + 5]
  doc = doc .. ',"action":"' .. action .. '","resource":"","outcome":"' .. outcome .. '","details":' .. details
  doc = doc .. ',"tenant":' .. ARGV[A + 3] .. ',"seq":' .. string.format('%d', aseq) .. ',"prev":"' .. aprev
  doc = doc .. '","digest":"' .. digest .. '"}'
  redis.call('HSET', KEYS[2], string.format('%d', aseq), doc)
  redis.call('SET', KEYS[3], string.format('%d', aseq) .. ' ' .. digest)
end
"""

_APPLY = (
    _COMMON
    + SHA256_LUA
    + TIME_LUA
    + _AUDIT
    + """
local MAX = 9007199254740991
local n = tonumber(ARGV[2])
local F = 12
local reqs = {}
for i = 1, n do
  local b = 3 + (i - 1) * F
  reqs[i] = {id = ARGV[b + 1], kind = ARGV[b + 2], debit = ARGV[b + 3], credit = ARGV[b + 4], cur = ARGV[b + 5],
             amount = tonumber(ARGV[b + 6]), pid = ARGV[b + 7], timeout = tonumber(ARGV[b + 8]), code = ARGV[b + 9],
             reason = ARGV[b + 10], meta = ARGV[b + 11], asked = ARGV[b + 12]}
end
local existing = {}
for i = 1, n do
  if redis.call('EXISTS', P .. 'xfer:' .. reqs[i].id) == 1 then existing[#existing + 1] = reqs[i].id end
end
if #existing > 0 then return {'existing', existing} end
local clock = redis.call('TIME')
local sec, usec = tonumber(clock[1]), tonumber(clock[2])
local now = sec + usec / 1000000
expire(now)
if n == 0 then return {'ok', {}} end

local accts, holds = {}, {}
local function acct(owner, cur)
  local k = owner .. '|' .. cur
  if accts[k] == nil then accts[k] = load(owner, cur) or false end
  return accts[k] or nil
end
local function hold(hid)
  if holds[hid] == nil then
    local h = redis.call('HMGET', P .. 'xfer:' .. hid, 'kind', 'status', 'state', 'amount', 'debit', 'credit',
                         'currency', 'expires')
    if not h[1] then holds[hid] = false else
      holds[hid] = {kind = h[1], status = h[2], state = h[3], amount = num(h[4]), debit = h[5], credit = h[6],
                    cur = h[7], expires = num(h[8]), changed = false}
    end
  end
  return holds[hid] or nil
end

local fail_code, fail_msg, fail_id = nil, nil, nil
local moved = {}
for i = 1, n do
  local r = reqs[i]
  local code, msg = nil, nil
  if r.kind == 'posted' or r.kind == 'pending' then
    local d, c = acct(r.debit, r.cur), acct(r.credit, r.cur)
    if d == nil or c == nil then
      local who = r.credit
      if d == nil then who = r.debit end
      code, msg = 'SOS-7002', 'no ' .. r.cur .. ' account for ' .. who .. '; open it first'
    elseif (not d.neg) and d.dp + d.dpe + r.amount > d.cp then
      code = 'SOS-7001'
      msg = r.debit .. ' has ' .. fmt(d.cp - d.dp - d.dpe) .. ' ' .. r.cur
      msg = msg .. ' micros available, needs ' .. fmt(r.amount)
    elseif d.dp + d.dpe + r.amount > MAX or c.cp + c.cpe + r.amount > MAX then
      -- posted + pending, so that capturing a hold can never pass the cap (sums above 2^53 still compare > MAX)
      code, msg = 'SOS-4010', 'a balance would pass AMOUNT_MICROS_MAX (' .. fmt(MAX) .. ')'
    elseif r.kind == 'posted' then
      d.dp = d.dp + r.amount; c.cp = c.cp + r.amount
    else
      d.dpe = d.dpe + r.amount; c.cpe = c.cpe + r.amount
    end
    moved[i] = r.amount
  else
    local h = hold(r.pid)
    if h == nil or h.kind ~= 'pending' or h.status ~= 'ok' or h.debit ~= r.debit or h.credit ~= r.credit then
      -- a settlement built when no hold existed carries no accounts: it stays 'no hold' (see rules._resolve_hold)
      code, msg = 'SOS-7020', 'no hold ' .. r.pid
    elseif h.state ~= 'pending' or (h.expires > 0 and h.expires <= now) then
      local st = h.state
      if st == 'pending' then st = 'expired' end
      code, msg = 'SOS-7020', 'hold ' .. r.pid .. ' is already ' .. st
    else
      local amount = h.amount
      if r.kind == 'post_pending' then amount = r.amount end
      if r.kind == 'post_pending' and amount > h.amount then
        code, msg = 'SOS-7020', 'capture of ' .. fmt(amount) .. ' exceeds hold ' .. r.pid .. ' of ' .. fmt(h.amount)
      else
        local d, c = acct(h.debit, h.cur), acct(h.credit, h.cur)
        d.dpe = d.dpe - h.amount; c.cpe = c.cpe - h.amount
        if r.kind == 'post_pending' then
          d.dp = d.dp + amount; c.cp = c.cp + amount
          h.state = 'posted'; h.captured = amount
        else
          h.state = 'voided'; h.captured = 0; amount = 0
        end
        h.changed = true
        moved[i] = amount
      end
    end
  end
  if code then fail_code, fail_msg, fail_id = code, msg, r.id; break end
end

local seq0 = redis.call('INCRBY', P .. 'lseq', n) - n
-- times from TIME's integers, so the chain's microseconds and the stored text agree exactly
local frac = string.format('.%06d', usec)
local ts = fmt(sec) .. frac
local head = redis.call('GET', P .. 'head') or ARGV[3]
local function lp(v) return #v .. ':' .. v end
local out = {}
for i = 1, n do
  local r = reqs[i]
  local seq = seq0 + i
  local key = P .. 'xfer:' .. r.id
  local status, ecode, emsg, state, expires, amount = 'ok', '', '', '', '', r.amount
  local debit, credit, cur = r.debit, r.credit, r.cur
  local flags, expires_us = '', ''
  if fail_code then
    status, ecode = 'failed', fail_code
    if r.id == fail_id then emsg = fail_msg else emsg = 'linked transfer ' .. fail_id .. ' failed: ' .. fail_msg end
  else
    amount = moved[i]
    local da, ca = accts[debit .. '|' .. cur], accts[credit .. '|' .. cur]
    flags = (da.neg and '1' or '0') .. (ca.neg and '1' or '0')
    if r.kind == 'pending' then
      state = 'pending'
      expires = fmt(sec + r.timeout) .. frac
      expires_us = fmt((sec + r.timeout) * 1000000 + usec)
      redis.call('ZADD', P .. 'holds', expires, r.id)
    end
    redis.call('ZADD', P .. 'hist:' .. debit .. ':' .. cur, seq, r.id)
    redis.call('ZADD', P .. 'hist:' .. credit .. ':' .. cur, seq, r.id)
  end
  -- the chain (sos_kernel.ledger.chain): SHA-256 of the previous digest, the request digest the client computed
  -- and the canonical encoding of the outcome (2 blocks for a plain transfer)
  local outcome = '1:R' .. lp(fmt(seq)) .. lp(fmt(amount)) .. lp(fmt(sec * 1000000 + usec)) .. lp(status)
  outcome = outcome .. lp(ecode) .. lp(emsg) .. lp(expires_us) .. lp(flags)
  local digest
  head, digest = sha256(head .. r.asked .. outcome)
  redis.call('HSET', key, 'id', r.id, 'kind', r.kind, 'debit', debit, 'credit', credit, 'currency', cur,
             'amount', fmt(amount), 'pid', r.pid, 'timeout', fmt(r.timeout), 'code', r.code, 'reason', r.reason,
             'meta', r.meta, 'ts', ts, 'seq', fmt(seq), 'status', status, 'ecode', ecode, 'emsg', emsg,
             'state', state, 'captured', '0', 'expires', expires, 'digest', digest)
  redis.call('ZADD', P .. 'xfers', seq, r.id)
  out[i] = {fmt(seq), status, ecode, emsg, fmt(amount), state, expires}
end
redis.call('SET', P .. 'head', head)
audit(seq0 + 1, fail_code and 'failed' or 'ok', sec, usec)
if not fail_code then
  for k, a in pairs(accts) do
    if a then
      local sep = string.find(k, '|', 1, true)
      save(string.sub(k, 1, sep - 1), string.sub(k, sep + 1), a)
    end
  end
  for hid, h in pairs(holds) do
    if h and h.changed then
      redis.call('HSET', P .. 'xfer:' .. hid, 'state', h.state, 'captured', fmt(h.captured))
      redis.call('ZREM', P .. 'holds', hid)
    end
  end
end
return {'ok', out, ts}
"""
)

APPLY_SCRIPT = _APPLY
"""The batch script (see :meth:`RedisLedgerStore.batch_arguments`), for a script that embeds it as a function."""

_BALANCE = (
    _COMMON
    + """
expire(now_s())
local v = redis.call('HMGET', KEYS[1], 'neg', 'dp', 'cp', 'dpe', 'cpe')
if not v[1] then return false end
return v
"""
)

_OPEN = """
local created = redis.call('HSETNX', KEYS[1], 'neg', ARGV[1])
if created == 1 then
  redis.call('HSET', KEYS[1], 'dp', '0', 'cp', '0', 'dpe', '0', 'cpe', '0', 'at', ARGV[2], 'digest', ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[3])
end
return {created, redis.call('HGET', KEYS[1], 'neg'), redis.call('HGET', KEYS[1], 'at')}
"""

_PUT_USAGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('GET', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[2])
return {1, ARGV[1]}
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(h: dict[bytes, bytes]) -> Transfer:
    f = {_s(k): _s(v) for k, v in h.items()}
    return Transfer.from_record(
        {
            "id": f["id"],
            "kind": f["kind"],
            "debit": f["debit"],
            "credit": f["credit"],
            "currency": f["currency"],
            "amount": int(f["amount"]),
            "pending_id": f.get("pid") or None,
            "timeout_s": int(f.get("timeout") or 0),
            "code": int(f.get("code") or 0),
            "reason": f.get("reason", ""),
            "metadata": json.loads(f.get("meta") or "{}"),
            "ts": float(f["ts"]),
            "seq": int(f["seq"]),
            "status": f["status"],
            "error_code": f.get("ecode") or None,
            "error_message": f.get("emsg") or None,
            "state": f.get("state") or None,
            "captured": int(f.get("captured") or 0),
            "expires_at": float(f["expires"]) if f.get("expires") else None,
        }
    )


def _audit_args(tenant: str, requests: Sequence[TransferRequest]) -> list[Any]:
    """What the script needs to chain the batch's ``ledger.write`` audit record (see ``ledger_write_record``):
    its details as canonical JSON up to the first transfer's sequence, which only the script knows."""
    if not requests:
        return ["0"]
    actor = acting()
    ids = ledger_write_ids([r.id for r in requests[:LEDGER_WRITE_IDS_MAX]])
    details = canonical_metadata({"count": len(requests), "ids": ids})[:-1] + ',"sequence":'
    action = ledger_write_action(requests[0].kind)
    return ["1", audit_genesis(tenant), json.dumps(tenant), actor, json.dumps(actor), action, details]


class RedisLedgerStore(LedgerStore):
    """Ledger primitives as Redis Lua scripts. The audit record of every applied batch is chained in the batch's
    own script (``audits_writes``): no ledger write exists without its record, whatever fails after it."""

    audits_writes: bool = True

    def __init__(self, client: RedisClient, durability: Durability = ASYNC) -> None:
        self._r = client
        self._durability = durability
        self._apply = Script(client, _APPLY)  # the transfer path; idempotent by id, so a resend is safe
        self._balance = client.register_script(_BALANCE)
        self._open = client.register_script(_OPEN)
        self._put_usage = client.register_script(_PUT_USAGE)

    async def aclose(self) -> None:
        """Nothing of its own to close: its scripts run on the client's connection pool."""

    _p = staticmethod(tenant_prefix)

    async def _call(self, awaitable: Any) -> Any:
        return await redis_call(awaitable)

    async def open_account(
        self, tenant: str, owner: str, currency: str, allow_negative: bool, now: float
    ) -> tuple[Account, bool]:
        p = self._p(tenant)
        keys = [f"{p}acct:{owner}:{currency}", f"{p}accts"]
        created, neg, at = await self._call(
            self._open(
                keys=keys,
                args=[
                    int(allow_negative),
                    f"{now:.6f}",
                    f"{owner}|{currency}",
                    account_digest(tenant, owner, currency, allow_negative),
                ],
            )
        )
        return Account(owner, currency, _s(neg) == "1", datetime.fromtimestamp(float(at), UTC)), bool(created)

    async def balance(self, tenant: str, owner: str, currency: str, now: float) -> Balance | None:
        p = self._p(tenant)
        row = await self._call(self._balance(keys=[f"{p}acct:{owner}:{currency}"], args=[p]))
        if not row:
            return None
        neg, dp, cp, dpe, cpe = (_s(v) for v in row)
        return Balance(owner, currency, int(dp), int(cp), int(dpe), int(cpe), neg == "1")

    async def apply(self, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        keys, args = self.batch_arguments(tenant, requests)
        return await self.applied(tenant, requests, await self.run(self._apply, tenant, keys, args))

    # -- the hook for a script that embeds the batch (a paid invocation: see redis_skills) -------------------

    def batch_arguments(self, tenant: str, requests: Sequence[TransferRequest]) -> tuple[list[str], list[Any]]:
        """``KEYS`` and ``ARGV`` of :data:`APPLY_SCRIPT` for ``requests``. The script reads its arguments by
        position from the first, so a script embedding it may pass more keys and arguments after these."""
        p = self._p(tenant)
        args: list[Any] = [p, len(requests), genesis(tenant)]
        for r in requests:
            meta = canonical_metadata(r.metadata)
            asked = request_digest(
                r.id, r.kind, r.debit, r.credit, r.currency, r.pending_id, r.timeout_s, r.code, r.reason, meta
            )
            args += [
                r.id,
                r.kind,
                r.debit,
                r.credit,
                r.currency,
                r.amount,
                r.pending_id or "",
                r.timeout_s,
                r.code,
                r.reason,
                meta,
                asked,
            ]
        args += _audit_args(tenant, requests)
        return [f"{p}lseq", f"{p}audit:records", f"{p}audit:head"], args

    async def run(self, script: Script, tenant: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that writes the tenant's money with this store's durability (``WAIT`` for its replicas)."""
        if self._durability.replicas:  # acknowledged once a replica holds it (WAIT on the tenant's primary)
            return await script.replicated(keys, args, f"{self._p(tenant)}fence", self._durability)
        return await script(keys, args)

    async def applied(self, tenant: str, requests: Sequence[TransferRequest], reply: Any) -> Applied:
        """What :data:`APPLY_SCRIPT` did, from its reply."""
        if _s(reply[0]) == "existing":
            return Applied([], await self.transfers(tenant, [_s(i) for i in reply[1]]))
        out = []
        for r, row in zip(requests, reply[1], strict=True):
            seq, status, ecode, emsg, amount, state, expires = (_s(v) for v in row)
            out.append(
                Transfer.from_record(
                    {
                        **_request_record(r),
                        "amount": int(amount),
                        "ts": float(_s(reply[2])),
                        "seq": int(seq),
                        "status": status,
                        "error_code": ecode or None,
                        "error_message": emsg or None,
                        "state": state or None,
                        "expires_at": float(expires) if expires else None,
                    }
                )
            )
        return Applied(out, {})

    async def transfers(self, tenant: str, ids: Sequence[str]) -> dict[str, Transfer]:
        if not ids:
            return {}
        p = self._p(tenant)
        pipe = self._r.pipeline(transaction=False)
        for transfer_id in ids:
            pipe.hgetall(f"{p}xfer:{transfer_id}")
        rows = await self._call(pipe.execute())
        return {i: _record(h) for i, h in zip(ids, rows, strict=True) if h}

    async def _by_ids(self, tenant: str, ids: Sequence[Any]) -> list[Transfer]:
        found = await self.transfers(tenant, [_s(i) for i in ids])
        return [found[_s(i)] for i in ids if _s(i) in found]

    async def history(self, tenant: str, owner: str, currency: str, after_seq: int, limit: int) -> list[Transfer]:
        key = f"{self._p(tenant)}hist:{owner}:{currency}"
        ids = await self._call(self._r.zrangebyscore(key, f"({after_seq}", "+inf", start=0, num=limit))
        return await self._by_ids(tenant, ids)

    async def balances(self, tenant: str) -> list[Balance]:
        p = self._p(tenant)
        members = sorted(_s(m) for m in await self._call(self._r.smembers(f"{p}accts")))
        pipe = self._r.pipeline(transaction=False)
        for member in members:
            owner, currency = member.split("|", 1)
            pipe.hmget(f"{p}acct:{owner}:{currency}", "neg", "dp", "cp", "dpe", "cpe")
        rows = await self._call(pipe.execute())
        out = []
        for member, row in zip(members, rows, strict=True):
            owner, currency = member.split("|", 1)
            neg, dp, cp, dpe, cpe = (_s(v) for v in row)
            out.append(Balance(owner, currency, int(dp), int(cp), int(dpe), int(cpe), neg == "1"))
        return out

    async def all_transfers(self, tenant: str, after_seq: int, limit: int) -> list[Transfer]:
        ids = await self._call(
            self._r.zrangebyscore(f"{self._p(tenant)}xfers", f"({after_seq}", "+inf", start=0, num=limit)
        )
        return await self._by_ids(tenant, ids)

    async def put_usage(self, tenant: str, event_id: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        p = self._p(tenant)
        keys = [f"{p}usage:{event_id}", f"{p}usage", f"{p}usage:n"]
        created, stored = await self._call(self._put_usage(keys=keys, args=[json.dumps(record), event_id]))
        kept: dict[str, Any] = json.loads(stored)
        return kept, bool(created)

    async def usage(self, tenant: str, query: UsageQuery, limit: int) -> list[dict[str, Any]]:
        p = self._p(tenant)
        ids = await self._call(self._r.zrange(f"{p}usage", 0, -1))
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            values = await self._call(self._r.mget([f"{p}usage:{_s(i)}" for i in ids[start : start + 500]]))
            for value in values:
                record = json.loads(value)
                if usage_matches(record, query):
                    out.append(record)
                    if len(out) >= limit:
                        return out
        return out

    async def set_price(self, tenant: str, price: Price) -> None:
        value = json.dumps(
            [price.input_per_mtok_micros, price.output_per_mtok_micros, price.per_image_micros, price.currency]
        )
        await self._call(self._r.hset(f"{self._p(tenant)}prices", f"{price.provider}\x1f{price.model}", value))

    async def price(self, tenant: str, provider: str, model: str) -> Price | None:
        value = await self._call(self._r.hget(f"{self._p(tenant)}prices", f"{provider}\x1f{model}"))
        if value is None:
            return None
        inp, out, img, currency = json.loads(value)
        return Price(provider, model, inp, out, img, currency)

    async def set_rate(self, tenant: str, rate: Rate) -> None:
        key = f"{self._p(tenant)}rates:{rate.from_currency}:{rate.to_currency}"
        await self._call(self._r.hset(key, rate_key(rate), rate_record(rate)))

    async def rates(self, tenant: str, from_currency: str, to_currency: str) -> list[Rate]:
        found = await self._call(self._r.hvals(f"{self._p(tenant)}rates:{from_currency}:{to_currency}"))
        return [load_rate(from_currency, to_currency, value) for value in found]

    async def chain(self, tenant: str, after_seq: int, limit: int) -> list[tuple[Transfer, str]]:
        p = self._p(tenant)
        ids = [
            _s(i)
            for i in await self._call(self._r.zrangebyscore(f"{p}xfers", f"({after_seq}", "+inf", start=0, num=limit))
        ]
        pipe = self._r.pipeline(transaction=False)
        for transfer_id in ids:
            pipe.hgetall(f"{p}xfer:{transfer_id}")
        rows = await self._call(pipe.execute())
        return [(_record(h), _s(h.get(b"digest", b""))) for h in rows if h]

    async def account_digests(self, tenant: str) -> dict[tuple[str, str], str]:
        p = self._p(tenant)
        members = sorted(_s(m) for m in await self._call(self._r.smembers(f"{p}accts")))
        pipe = self._r.pipeline(transaction=False)
        for member in members:
            owner, currency = member.split("|", 1)
            pipe.hget(f"{p}acct:{owner}:{currency}", "digest")
        rows = await self._call(pipe.execute())
        out: dict[tuple[str, str], str] = {}
        for member, digest in zip(members, rows, strict=True):
            owner, currency = member.split("|", 1)
            out[(owner, currency)] = _s(digest or b"")
        return out


def _request_record(r: TransferRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "debit": r.debit,
        "credit": r.credit,
        "currency": r.currency,
        "pending_id": r.pending_id,
        "timeout_s": r.timeout_s,
        "code": r.code,
        "reason": r.reason,
        "metadata": r.metadata,
    }
