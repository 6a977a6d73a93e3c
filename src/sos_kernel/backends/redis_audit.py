"""A tenant's audit record appended inside a Redis Lua script, in the same step as the effect it records.

:data:`AUDIT_LUA` defines, for a script to include, ``audit_append(records, head, b, details)``: it chains one
record (:mod:`sos_kernel.audit.chain`) after the tenant's head, computing its SHA-256 in Lua, and writes it as the
JSON the audit store reads. ``records`` and ``head`` are the tenant's ``sos:{t:T}:audit:records`` and
``sos:{t:T}:audit:head``, declared in the script's ``KEYS`` (same hash tag as the effect's keys, so one Cluster
slot); ``ARGV[b + 1 .. b + AUDIT_ARGS]`` are :func:`audit_args`. The function raises a Lua error before it writes
anything when either key holds a wrong type, so a script that calls it before its own writes never leaves an
effect without its record (a Lua error does not undo the writes made before it).
"""

from __future__ import annotations

import json
from typing import Any

from ..audit.chain import audit_genesis
from ..ledger.chain import canonical_metadata
from .redis_call import tenant_prefix

__all__ = ["AUDIT_ARGS", "AUDIT_LUA", "SHA256_LUA", "TIME_LUA", "audit_args", "audit_keys"]

SHA256_LUA = """
local SHA_K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2}
-- SHA-256 of msg: the digest (32 bytes) and its hex; LuaBitOp's int32 ops, sums wrapped by tobit
local function sha256(msg)
  local band, bor, bxor, ror, rshift, tobit = bit.band, bit.bor, bit.bxor, bit.ror, bit.rshift, bit.tobit
  local bits = #msg * 8
  local high, low = math.floor(bits / 4294967296), bits % 4294967296
  msg = msg .. '\\128' .. string.rep('\\0', (55 - #msg) % 64) .. struct.pack('>I4I4', high, low)
  local h0, h1, h2, h3 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
  local h4, h5, h6, h7 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  local w = {}
  for at = 1, #msg, 64 do
    for i = 0, 15 do
      local p = at + i * 4
      local b1, b2, b3, b4 = string.byte(msg, p, p + 3)
      w[i] = tobit(b1 * 16777216 + b2 * 65536 + b3 * 256 + b4)
    end
    for i = 16, 63 do
      local x, y = w[i - 15], w[i - 2]
      w[i] = tobit(w[i - 16] + bxor(ror(x, 7), ror(x, 18), rshift(x, 3)) + w[i - 7]
                   + bxor(ror(y, 17), ror(y, 19), rshift(y, 10)))
    end
    local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
    for i = 0, 63 do
      -- ch and maj in 3 and 4 calls; e and a left unwrapped (the bit ops wrap what they read, and the
      -- sums stay far below 2^51, where LuaBitOp stops being exact)
      local t1 = h + bxor(ror(e, 6), ror(e, 11), ror(e, 25)) + bxor(g, band(e, bxor(f, g))) + SHA_K[i + 1] + w[i]
      local t2 = bxor(ror(a, 2), ror(a, 13), ror(a, 22)) + bor(band(a, b), band(c, bor(a, b)))
      h, g, f, e, d, c, b, a = g, f, e, d + t1, c, b, a, t1 + t2
    end
    h0, h1, h2, h3 = tobit(h0 + a), tobit(h1 + b), tobit(h2 + c), tobit(h3 + d)
    h4, h5, h6, h7 = tobit(h4 + e), tobit(h5 + f), tobit(h6 + g), tobit(h7 + h)
  end
  local hex = bit.tohex
  return struct.pack('>i4i4i4i4i4i4i4i4', h0, h1, h2, h3, h4, h5, h6, h7),
         hex(h0) .. hex(h1) .. hex(h2) .. hex(h3) .. hex(h4) .. hex(h5) .. hex(h6) .. hex(h7)
end
"""

TIME_LUA = """
local function unhex(h) return (string.gsub(h, '..', function(x) return string.char(tonumber(x, 16)) end)) end
local function iso(sec, usec)
  -- the civil date of a day count (proleptic Gregorian), for the record's "at" in the form pydantic reads
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d, math.floor(rem / 3600),
                       math.floor(rem % 3600 / 60), rem % 60, usec)
end
"""

AUDIT_ARGS = 8
"""How many ``ARGV`` one record takes: genesis, kind, actor, action, resource, outcome, details, fields JSON."""

_APPEND = """
-- one record chained after the tenant's head; nothing written when kind (ARGV[b + 2]) is empty (no record given).
-- The head is read and the records hash written first: a wrong type fails there, before any write.
local function audit_append(records, head, b, details)
  if ARGV[b + 2] == '' then return end
  details = details or ARGV[b + 7]
  local aseq, aprev = 0, ARGV[b + 1]
  local ahead = redis.call('GET', head)
  if ahead then
    local sp = string.find(ahead, ' ', 1, true)
    aseq, aprev = tonumber(string.sub(ahead, 1, sp - 1)), string.sub(ahead, sp + 1)
  end
  aseq = aseq + 1
  local clock = redis.call('TIME')
  local sec, usec = tonumber(clock[1]), tonumber(clock[2])
  local function lp(v) return #v .. ':' .. v end
  local n = string.format('%d', aseq)
  local fields = '1:A' .. lp(n) .. lp(string.format('%d', sec * 1000000 + usec)) .. lp(ARGV[b + 2])
  fields = fields .. lp(ARGV[b + 3]) .. lp(ARGV[b + 4]) .. lp(ARGV[b + 5]) .. lp(ARGV[b + 6]) .. lp(details)
  local _, digest = sha256(unhex(aprev) .. fields)
  if details == '' then details = '{}' end
  local doc = '{"at":"' .. iso(sec, usec) .. '",' .. ARGV[b + 8] .. ',"details":' .. details .. ',"seq":' .. n
  doc = doc .. ',"prev":"' .. aprev .. '","digest":"' .. digest .. '"}'
  redis.call('HSET', records, n, doc)
  redis.call('SET', head, n .. ' ' .. digest)
end
"""

AUDIT_LUA = SHA256_LUA + TIME_LUA + _APPEND
"""The Lua a script includes to call ``audit_append``."""


def audit_keys(tenant: str) -> list[str]:
    """The tenant's audit records and head keys, for a script's ``KEYS``."""
    p = tenant_prefix(tenant)
    return [p + "audit:records", p + "audit:head"]


def audit_args(tenant: str, draft: Any) -> list[str]:
    """The ``AUDIT_ARGS`` arguments of ``audit_append`` for ``draft`` (an ``AuditDraft``; ``None``: no record).
    Its time is the Redis server's, taken in the script."""
    if draft is None:
        return [""] * AUDIT_ARGS
    fields = {
        "kind": draft.kind,
        "actor": draft.actor,
        "action": draft.action,
        "resource": draft.resource,
        "outcome": draft.outcome,
        "tenant": tenant,
    }
    text = json.dumps(fields, separators=(",", ":"))[1:-1]
    details = canonical_metadata(dict(draft.details))
    return [audit_genesis(tenant), draft.kind, draft.actor, draft.action, draft.resource, draft.outcome, details, text]
