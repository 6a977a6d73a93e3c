"""The Redis backend: ``redis://host:port/db`` (``rediss://`` for TLS) — several processes on several hosts.

Needs ``pip install 'sos-kernel[redis]'`` (redis-py with hiredis). Works with Redis 7.0 and later.

Every key of a tenant carries the hash tag ``{t:<tenant>}``, so a Redis Cluster keeps one tenant on one shard and
every multi-key step stays a single atomic Lua script. Key layout (beside SOS v0.4.1's ``sos:stream:...``)::

    sos:{t:<tenant>}:stream:<address>           stream of entries: m=message_id d=JSON r=receipts [g=only group]
    sos:{t:<tenant>}:msgid:<source>:<message_id>  the entry id of a source's published message, expiring after the
                                                dedup window (the idempotency key is per source)
    sos:{t:<tenant>}:msgat:<address>:<message_id>  the earliest entry id on the address of a message with that id,
                                                from any source, for ``history(after=<message_id>)``; set once (NX:
                                                a later copy never moves it), living as long as the entry can be
                                                retained (the retention age, at least the dedup window)
    sos:{t:<tenant>}:msgid:<message_id>         written by versions that deduplicated per tenant: while one is within
                                                its window it holds the id for every source (read, never written)
    sos:{t:<tenant>}:dead:<address>:<group>     stream of dead letters: p=entry id d=JSON why=reason n=attempts
    sos:{t:<tenant>}:nackwhy:<address>:<group>  hash of the reasons pending entries were last nacked with:
                                                entry id -> "<attempt> <reason>" (gone on ack, bury, trim)
    sos:{t:<tenant>}:chunks:<source>:<group_id> hash of an unfinished chunk group: meta, held, n, p<seq> -> bytes;
                                                expires (PEXPIREAT) chunk_ttl_s after its first part
    sos:{t:<tenant>}:chunkgroups                hash of the tenant's unfinished groups: <source>:<group_id> ->
                                                "<expires ms> <size_bytes> <source>" (for quotas and sweeping)
    sos:{t:<tenant>}:bell:<process token>       stream of one entry that ends this process's shared read when a
                                                stream joins it; expires BELL_TTL_MS after the last join

Groups are Redis consumer groups on the address stream (``XREADGROUP``/``XACK``). A consumer (or an ask) with
nothing to take blocks in its own ``XREADGROUP ... >`` (``XREAD``) while the process has fewer than
``DIRECT_WAITS_MAX`` such waiters (Redis hands each new entry to one blocked consumer of a group); past them it
waits on its tenant's shared read (:mod:`.redis_watch`: one blocking ``XREAD`` per tenant and process over every
stream waited on), which wakes one consumer of a group per new entry, and the woken consumer takes it with a
non-blocking ``XREADGROUP ... >``. Either way the group's state is Redis's, so the delivery rules are the same.
The consumers of one group in one process share their blocking read (one of them reads for the process while the
others wait for it, see :meth:`RedisBusStore._read_together`), and a tenant's acks issued while its previous ack
call is in flight go together in the next one (``ACK_BATCH_MAX``): a read and an ack call carry what came
meanwhile instead of one entry each.
An ask reads its new reply channel with one blocking ``XREAD`` from ``0-0`` (nothing can precede its wait), and
every append to a reply channel (``sos:channel:reply-<32 hex>``) sets the stream to expire ``REPLY_CHANNEL_TTL_S``
later in the same script, so an answered ask spends no ``DEL``; ``Delivery.reply`` appends the reply and acks the
request in one script (``append_ack``), only while the hand-out still holds it (``XPENDING``: delivery count).
Each hand-out keeps its own lease: the Redis consumer is named ``<consumer>~<visibility ms>``, so the pending list
holds, with each entry's delivery time, the visibility its holder was given; a redelivery look (one script:
``XPENDING`` over at most ``REDELIVERY_SCAN_MAX`` entries, ``XCLAIM`` of the due ones) takes an entry only once
idle for its holder's visibility, whoever looks, by one consumer of a process at most every ``CLAIM_INTERVAL_S``
(sooner when an entry it saw falls due sooner), and its attempt count is the entry's delivery counter;
``nack(delay)`` moves the entry to consumer ``nack~<q>`` dated with ``XCLAIM ... TIME`` so it falls due exactly
after the delay. Retention:
an exact ``MINID`` (age) on every append, and ``XTRIM MAXLEN ~ count_max`` every 100th append per address.
Durability is Redis's own (configure AOF ``appendfsync everysec`` or ``always`` for a durable bus).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from ..bus import store as bus_store
from ..bus.store import (
    Appended,
    BusStore,
    ChunkPart,
    ChunkPut,
    ChunkQuota,
    Claimed,
    Entry,
    HistoryEntry,
    NackReason,
    Retention,
    StoredDeadLetter,
    foreign_fields,
    is_reply_channel,
)
from ..errors import BackendFailure, BackendUnavailable, InvalidArgument, InvalidURL
from . import Backend, Implements
from .redis_a2a_tasks import RedisA2ATaskStore
from .redis_call import ASYNC, Durability, RedisClient, Script, durability_of, redis_call, tenant_prefix
from .redis_checkpoints import RedisCheckpointStore
from .redis_governance import RedisAuditStore, RedisGovernanceStore
from .redis_identity import RedisIdentityStore, RedisRegistryStore
from .redis_ledger import RedisLedgerStore
from .redis_memory import RedisMemoryStore
from .redis_providers import RedisProviderStore
from .redis_replies import RedisReplyStore
from .redis_skills import RedisSkillStore
from .redis_tasks import RedisTaskStore
from .redis_watch import StreamWatcher, Watch

__all__ = ["RedisBackend", "RedisBusStore"]

_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")
REDELIVERY_SCAN_MAX = 512
"""Pending entries of a group one redelivery look examines at most (one ``XPENDING``, in entry order, going on
from where this process's last look stopped): bounded work per claim however many entries are in flight."""
CLAIM_INTERVAL_S = 1.0
"""How often, at most, one process looks for a group's abandoned entries: sooner when the lease is shorter
(every quarter of the visibility timeout), when its last look saw an entry falling due sooner, or a nack from this
process made an entry due."""
TRIM_EVERY_APPENDS = 100
ADDRESS_MEMO_MAX = 10_000
"""Per-address bookkeeping this process keeps (last seen id, appends since trim) is dropped past this many."""
DIRECT_WAITS_MAX = 16
"""Waiters of a process that block in a read of their own (one pool connection each, woken by Redis itself, one
round trip sooner); the others share their tenant's read (:mod:`.redis_watch`)."""
ACK_BATCH_MAX = 256
"""Acks of one tenant that one script call settles at most: the acks issued while the tenant's previous ack call is
in flight go together in the next."""
READ_HOLD_MAX_S = 0.02
"""How long, at most, a group's next read in this process waits for the entries its last read dealt to be acked or
nacked here: the entries that come meanwhile come in one read instead of one read each (a consumer busy with an
entry delays its idle peers' next read by this much at most)."""
WAKE_READS_MAX = 32
"""Reads of woken consumers a process runs at once (a publish to a channel wakes every subscriber of it): the rest
queue in the process rather than overflow redis-py's connection pool (100)."""

# Per message: KEYS stream, msgid (per source), legacy msgid, msgat; ARGV data, meta = receipts flag, trim flag,
# expire flag, message id[, "\n", only group]. The XADD goes first and SET NX GET records the id in the same step; a
# duplicate (the id was already recorded, earlier or in this batch) has its new entry deleted before the script ends,
# so no reader ever sees it; an id a legacy key holds is a duplicate before anything is added.
# Four commands for a new message (the legacy GET, XADD, SET, the msgat SET), in one call. Age retention is one
# XTRIM MINID per stream of the batch, at the end; a stream of an entry with the expire flag (a reply channel)
# expires ARGV[4] ms after it. ARGV[5]: the msgat key's life in s (SET NX only: the earliest entry keeps it; a reply
# channel's lives for the dedup window).
# Replies {entry id, duplicate flag} for each message, flat.
_APPEND = """
local count_max, minid, ttl, expire_ms, at_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local out = {}
local streams = {}
for i = 1, #KEYS / 4 do
  local skey, dkey, lkey, akey = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local data, meta = ARGV[2 * i + 4], ARGV[2 * i + 5]
  local rcpt = string.sub(meta, 1, 1)
  local cut = string.find(meta, '\\n', 4, true)
  streams[skey] = streams[skey] or string.sub(meta, 3, 3) == '1'
  if cut then
    out[2 * i - 1] = redis.call('XADD', skey, '*', 'm', string.sub(meta, 4, cut - 1), 'd', data, 'r', rcpt,
      'g', string.sub(meta, cut + 1))
    out[2 * i] = 0
  else
    local legacy = redis.call('GET', lkey)
    if legacy then
      out[2 * i - 1], out[2 * i] = legacy, 1
    else
      local id = redis.call('XADD', skey, '*', 'm', string.sub(meta, 4), 'd', data, 'r', rcpt)
      local first = redis.call('SET', dkey, id, 'NX', 'GET', 'EX', ttl)
      if first then
        redis.call('XDEL', skey, id)
        out[2 * i - 1], out[2 * i] = first, 1
      else
        redis.call('SET', akey, id, 'NX', 'EX', string.sub(meta, 3, 3) == '1' and ttl or at_ttl)
        out[2 * i - 1], out[2 * i] = id, 0
      end
    end
  end
  if string.sub(meta, 2, 2) == '1' then
    redis.call('XTRIM', skey, 'MAXLEN', '~', count_max)
  end
end
for skey, expire in pairs(streams) do
  redis.call('XTRIM', skey, 'MINID', minid)
  if expire then
    redis.call('PEXPIRE', skey, expire_ms)
  end
end
return out
"""

# One message (the common publish): flat arguments and a flat reply, less Lua than the batch script runs.
# KEYS stream, msgid (per source), legacy msgid, msgat; ARGV minid, dedup ttl, data, receipts flag, message id,
# count to trim to or '', only group or '', ms until the stream expires (a reply channel) or '', msgat life in s
# (set once: the earliest entry of the id on the address keeps it, as long as it can be retained). Replies the new
# entry id, or {first entry id} for a duplicate.
_APPEND_ONE_FN = """
local function append_one()
  local id
  if ARGV[7] ~= '' then
    id = redis.call('XADD', KEYS[1], 'MINID', ARGV[1], '*', 'm', ARGV[5], 'd', ARGV[3], 'r', ARGV[4], 'g', ARGV[7])
  else
    local legacy = redis.call('GET', KEYS[3])
    if legacy then
      return {legacy}
    end
    id = redis.call('XADD', KEYS[1], 'MINID', ARGV[1], '*', 'm', ARGV[5], 'd', ARGV[3], 'r', ARGV[4])
    local first = redis.call('SET', KEYS[2], id, 'NX', 'GET', 'EX', ARGV[2])
    if first then
      redis.call('XDEL', KEYS[1], id)
      id = {first}
    else
      redis.call('SET', KEYS[4], id, 'NX', 'EX', ARGV[9])
    end
  end
  if ARGV[6] ~= '' then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[6])
  end
  if ARGV[8] ~= '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[8])
  end
  return id
end
"""
_APPEND_ONE = _APPEND_ONE_FN + "return append_one()\n"

# A reply and the ack of the delivery it answers, in one step, only while that hand-out holds the entry (pending,
# its delivery count still the hand-out's attempt): the append as above, then (only once it succeeded) XACK and
# the nack reason's HDEL, as the ack script does. KEYS as above, then the acked entry's stream, its nack reasons;
# ARGV as above, then group, entry id, attempt. Replies {the append's reply, 1}, or {false, 0} with nothing written
# when the entry is not held.
_APPEND_ACK = (
    _APPEND_ONE_FN
    + """
local p = redis.call('XPENDING', KEYS[5], ARGV[10], ARGV[11], ARGV[11], 1)
if #p == 0 or p[1][4] ~= tonumber(ARGV[12]) then return {false, 0} end
local id = append_one()
local acked = redis.call('XACK', KEYS[5], ARGV[10], ARGV[11])
redis.call('HDEL', KEYS[6], ARGV[11])
return {id, acked}
"""
)

# Hands out due redeliveries as {id, data, receipts, attempts}... (data is the entry's whole field list when it has
# no 'd': an entry another program wrote, which the reader dead-letters), after {next scan start, ms until the
# earliest entry seen falls due or -1}. An entry is due once idle for ITS OWN hand-out's visibility, which the
# holder's consumer name carries ('<name>~<ms>'; a name without it, from older versions, counts the claimer's): so
# a peer with a shorter lease takes nothing early, and one with a longer lease takes a short hand-out on time.
# Examines at most ARGV[5] pending entries (REDELIVERY_SCAN_MAX) from ARGV[4]: one XPENDING, one XCLAIM (which
# drops entries trimmed while pending from the pending list; their nack reasons go here). KEYS stream, nack
# reasons; ARGV group, claiming consumer, count, scan start, scan max, claimer's visibility ms.
_RECLAIM = """
local key, grp, consumer = KEYS[1], ARGV[1], ARGV[2]
local count, scan, vis = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local pend = redis.call('XPENDING', key, grp, ARGV[4], '+', scan)
local ids, tries, soonest, seen = {}, {}, -1, 0
for _, p in ipairs(pend) do
  seen = seen + 1
  local left = (tonumber(string.match(p[2], '~(%d+)$')) or vis) - p[3]
  if left <= 0 then
    ids[#ids + 1] = p[1]
    tries[p[1]] = p[4]
    if #ids >= count then break end
  elseif soonest < 0 or left < soonest then
    soonest = left
  end
end
local nextstart = '-'
if seen > 0 and (#pend >= scan or seen < #pend) then nextstart = '(' .. pend[seen][1] end
local out = {nextstart, soonest}
if #ids == 0 then return out end
local function field(f, name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return false
end
local got = {}
for _, e in ipairs(redis.call('XCLAIM', key, grp, consumer, 0, unpack(ids))) do
  got[e[1]] = true
  out[#out + 1] = {e[1], field(e[2], 'd') or e[2], field(e[2], 'r'), tries[e[1]] + 1}
end
for _, id in ipairs(ids) do
  if not got[id] then redis.call('HDEL', KEYS[2], id) end
end
return out
"""

# KEYS stream, nack reasons; ARGV group, consumer, entry id, delay ms, visibility ms, "1" and the reason or "0",
# attempt (last: the hand-out's delivery count, which the entry must still have, as in the ack script). The entry
# moves to consumer 'nack~<q>' (q the least power of two >= the delay: a few names per group) dated so that it falls
# due exactly delay ms from now, whoever claims it.
_NACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][4] ~= tonumber(ARGV[#ARGV]) then return 0 end
local delay, q = tonumber(ARGV[4]), 1
while q < delay do q = q * 2 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2] .. '~' .. q, 0, ARGV[3], 'TIME', now + delay - q,
  'RETRYCOUNT', p[1][4], 'JUSTID')
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], ARGV[3], p[1][4] .. ' ' .. ARGV[7])
else
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return 1
"""

# Per ack: KEYS stream, nack reasons; ARGV group, entry id, attempt. Acks a batch of one tenant's acks, any groups
# (see ACK_BATCH_MAX), each only while its hand-out holds the entry (pending, its delivery count still the
# hand-out's attempt), forgetting its nack reason in the same step; replies 1 or 0 per ack (0: not held).
_ACK = """
local out = {}
for i = 1, #KEYS / 2 do
  local key, grp, id = KEYS[2 * i - 1], ARGV[3 * i - 2], ARGV[3 * i - 1]
  local p = redis.call('XPENDING', key, grp, id, id, 1)
  if #p == 0 or p[1][4] ~= tonumber(ARGV[3 * i]) then
    out[i] = 0
  else
    out[i] = redis.call('XACK', key, grp, id)
    redis.call('HDEL', KEYS[2 * i], id)
  end
end
return out
"""

_BURY = """
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if n == 0 then return 0 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then return 0 end
local f = e[1][2]
local data = ''
for i = 1, #f, 2 do if f[i] == 'd' then data = f[i + 1] end end
if ARGV[5] == '1' then data = ARGV[6] end
local t = redis.call('TIME')
redis.call('XADD', KEYS[2], '*', 'p', ARGV[2], 'd', data, 'why', ARGV[3], 'n', ARGV[4], 'at', t[1] .. '.' .. t[2])
return 1
"""

_REVIVE = """
local e = redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2])
if #e == 0 then return false end
local f = e[1][2]
local data = false
for i = 1, #f, 2 do if f[i] == 'd' then data = f[i + 1] end end
redis.call('XDEL', KEYS[2], ARGV[2])
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', '', 'd', data, 'r', '0', 'g', ARGV[1])
"""

# Drops the tenant's expired groups (their part hashes too, named from the index field and this tenant's key
# prefix, so on the script's slot) and counts the live ones. KEYS index; ARGV now ms, key prefix, source. Sets
# the globals the put script reads.
_CHUNK_SWEEP = """
local function sweep(idx, now, prefix, source)
  local ag, ab, tg, tb = 0, 0, 0, 0
  local all = redis.call('HGETALL', idx)
  for i = 1, #all, 2 do
    local exp, size, src = string.match(all[i + 1], '^(%d+) (%d+) (.*)$')
    if tonumber(exp) <= now then
      redis.call('HDEL', idx, all[i])
      redis.call('DEL', prefix .. 'chunks:' .. all[i])
    else
      tg, tb = tg + 1, tb + tonumber(size)
      if src == source then ag, ab = ag + 1, ab + tonumber(size) end
    end
  end
  return ag, ab, tg, tb
end
"""

# KEYS index, group hash; ARGV field, source, meta, total, size_bytes, seq, data, ttl ms, key prefix, then the
# quotas: agent groups, agent bytes, tenant groups, tenant bytes. Replies {'refused', name}, {'pending'} or
# {'done', part 0, part 1, ...}; a complete group is deleted in the same step.
_PUT_CHUNK = (
    _CHUNK_SWEEP
    + """
local idx, key = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total, size, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[8])
local ag, ab, tg, tb = sweep(idx, now, ARGV[9], ARGV[2])
local meta = redis.call('HGET', key, 'meta')
if not meta then
  if ag + 1 > tonumber(ARGV[10]) then return {'refused', 'agent_chunk_groups_max'} end
  if ab + size > tonumber(ARGV[11]) then return {'refused', 'agent_chunk_bytes_max'} end
  if tg + 1 > tonumber(ARGV[12]) then return {'refused', 'tenant_chunk_groups_max'} end
  if tb + size > tonumber(ARGV[13]) then return {'refused', 'tenant_chunk_bytes_max'} end
  redis.call('HSET', key, 'meta', ARGV[3], 'held', 0, 'n', 0)
  redis.call('PEXPIREAT', key, now + ttl)
  redis.call('HSET', idx, ARGV[1], (now + ttl) .. ' ' .. size .. ' ' .. ARGV[2])
  redis.call('PEXPIRE', idx, ttl)
elseif meta ~= ARGV[3] then
  return {'refused', 'conflict'}
end
local field = 'p' .. ARGV[6]
local had = redis.call('HEXISTS', key, field)
local held = tonumber(redis.call('HGET', key, 'held')) - redis.call('HSTRLEN', key, field) + #ARGV[7]
if held > size then return {'refused', 'size_bytes'} end
redis.call('HSET', key, field, ARGV[7], 'held', held)
local n = redis.call('HINCRBY', key, 'n', 1 - had)
if n < total then return {'pending'} end
local out = {'done'}
for i = 0, total - 1 do out[#out + 1] = redis.call('HGET', key, 'p' .. i) end
redis.call('DEL', key)
redis.call('HDEL', idx, ARGV[1])
return out
"""
)

# KEYS index; ARGV key prefix. Replies {groups dropped, groups left}.
_SWEEP_CHUNKS = (
    _CHUNK_SWEEP
    + """
local t = redis.call('TIME')
local before = redis.call('HLEN', KEYS[1])
local _, _, left = sweep(KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1], '')
return {before - left, left}
"""
)


_Ack = tuple[str, str, str, int]
"""One ack: address, group, entry id and the hand-out's attempt."""


class _AckBatch:
    """Acks of one tenant sent in one call, each ``(address, group, position, attempt)``; ``acked`` (one flag per
    ack) once it answered, None if it failed."""

    __slots__ = ("acked", "done", "positions")

    def __init__(self, first: _Ack) -> None:
        self.positions = [first]
        self.done = anyio.Event()
        self.acked: list[bool] | None = None


class _AckQueue:
    """A tenant's acks in this process: the batch in flight and the one gathering behind it."""

    __slots__ = ("open", "sending")

    def __init__(self) -> None:
        self.open: _AckBatch | None = None
        self.sending: _AckBatch | None = None


class _GroupRead:
    """A group's consumers in this process that wait for new entries: whether one of them is reading for all, and
    the positions its last read handed out that are not yet acked or nacked here."""

    __slots__ = ("_done", "_settled", "reader", "reading", "unsettled", "waiting")

    def __init__(self) -> None:
        self.reading = False
        self.reader = ""  # the consumer that read last
        self.waiting = 0
        self.unsettled: set[str] = set()
        self._done = anyio.Event()
        self._settled = anyio.Event()

    async def read_done(self, timeout_s: float) -> None:
        """Return when the read in flight has ended, or after ``timeout_s``."""
        self.waiting += 1
        try:
            with anyio.move_on_after(timeout_s):
                await self._done.wait()
        finally:
            self.waiting -= 1

    def idle(self) -> bool:
        """Nobody reads or waits, and nothing handed out waits to be settled here."""
        return not (self.reading or self.waiting or self.unsettled)

    def begin(self, consumer: str) -> bool:
        """``consumer`` reads next; True when another consumer still works on the last read's entries (worth
        holding the read for)."""
        self.reading = True
        return consumer != self.reader and bool(self.unsettled)

    def end(self, consumer: str, positions: list[str]) -> None:
        """``consumer``'s read ended, handing it ``positions``: the waiting consumers look again (one reads next)."""
        self.reading = False
        self.reader = consumer
        self.unsettled = set(positions)
        self._done.set()
        self._done = anyio.Event()

    async def settled(self) -> None:
        """Return once the entries the last read handed out are all acked or nacked in this process."""
        while self.unsettled:
            await self._settled.wait()

    def settle(self, position: str) -> bool:
        """``position`` was acked or nacked here; True when that leaves nothing to settle."""
        if position in self.unsettled:
            self.unsettled.discard(position)
            if not self.unsettled:
                self._settled.set()
                self._settled = anyio.Event()
        return not self.unsettled


def _entry_id(value: str, what: str = "position") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidArgument(f"{value!r} is not a {what} of this bus (a Redis stream id like '1700000000000-0')")
    return value


class RedisBusStore(BusStore):
    """Bus primitives as Redis stream commands and Lua scripts."""

    expires_reply_channels: ClassVar[bool] = True

    def __init__(self, client: RedisClient, durability: Durability = ASYNC) -> None:
        self._r = client
        self._durability = durability
        self._append = Script(client, _APPEND)
        self._append_one = Script(client, _APPEND_ONE)
        self._append_ack = Script(client, _APPEND_ACK)
        self._reclaim_script = client.register_script(_RECLAIM)
        self._nack = client.register_script(_NACK)
        self._ack = client.register_script(_ACK)
        self._bury = client.register_script(_BURY)
        self._revive = client.register_script(_REVIVE)
        self._put_chunk = client.register_script(_PUT_CHUNK)
        self._sweep_chunks = client.register_script(_SWEEP_CHUNKS)
        self._chunk_tenants: set[str] = set()
        self._last: dict[tuple[str, str], str] = {}
        self._appends: dict[tuple[str, str], int] = {}
        self._claim_at: dict[tuple[str, str, str], float] = {}
        self._scan_from: dict[tuple[str, str, str], str] = {}
        self._due_at: dict[tuple[str, str, str], float] = {}
        self._acks: dict[str, _AckQueue] = {}
        self._together: dict[tuple[str, str, str], _GroupRead] = {}
        self._watcher = StreamWatcher(client)
        self._wake_reads: anyio.CapacityLimiter | None = None  # made on first use: it needs a running event loop
        self._direct = 0
        self.direct_waits_max = DIRECT_WAITS_MAX

    async def aclose(self) -> None:
        """Stop the shared reads; its scripts run on the client's connection pool."""
        await self._watcher.aclose()

    def watching(self, tenant: str) -> int:
        """How many of ``tenant``'s streams this process's shared read covers (for diagnostics and tests)."""
        return self._watcher.watching(tenant)

    @staticmethod
    def _k(tenant: str, *parts: str) -> str:
        return tenant_prefix(tenant) + ":".join(parts)

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        return await redis_call(awaitable)

    async def append(self, tenant: str, items: Sequence[tuple[str, Entry]], retention: Retention) -> list[Appended]:
        keys: list[str] = []
        # Age retention is exact on every append (MINID, from this host's clock: on the XADD of one message, once
        # per stream at the end of a batch); count retention is an approximate MAXLEN trim on every
        # TRIM_EVERY_APPENDS-th append per address from this process.
        minid = max(0, int((time.time() - retention.age_s) * 1000))
        prefix = tenant_prefix(tenant)
        if len(items) == 1:
            one_keys, one_args = self._one(tenant, items[0][0], items[0][1], retention, minid)
            return [_appended(await self._run(self._append_one, prefix, one_keys, one_args))]
        args: list[bytes | str | int] = [
            retention.count_max,
            minid,
            max(1, int(retention.dedup_window_s)),
            self._reply_ttl_ms(),
            _msgat_ttl_s(retention, ""),
        ]
        for address, entry in items:
            keys += _append_keys(prefix, address, entry)
            flags = ("1" if entry.receipts else "0") + ("1" if self._trim_due(tenant, address) else "0")
            flags += "1" if is_reply_channel(address) else "0"
            meta = flags + entry.message_id
            if entry.only_group:
                meta += "\n" + entry.only_group
            args += [entry.data, meta]
        flat = await self._run(self._append, prefix, keys, args)
        return [Appended(flat[i].decode(), flat[i + 1] == 1) for i in range(0, len(flat), 2)]

    def _one(
        self, tenant: str, address: str, entry: Entry, retention: Retention, minid: int
    ) -> tuple[list[str], list[bytes | str | int]]:
        """The keys and arguments of the one-message append script."""
        prefix = tenant_prefix(tenant)
        keys = _append_keys(prefix, address, entry)
        args: list[bytes | str | int] = [
            minid,
            max(1, int(retention.dedup_window_s)),
            entry.data,
            "1" if entry.receipts else "0",
            entry.message_id,
            retention.count_max if self._trim_due(tenant, address) else "",
            entry.only_group or "",
            self._expire_ms(address),
            _msgat_ttl_s(retention, address),
        ]
        return keys, args

    async def append_ack(
        self,
        tenant: str,
        items: Sequence[tuple[str, Entry]],
        retention: Retention,
        address: str,
        group: str,
        position: str,
        attempt: int,
    ) -> tuple[list[Appended], bool]:
        """One script call: the hold checked (``XPENDING``: pending, delivery count ``attempt``), the entry
        appended, then the pending entry acked (a reply and the delivery it answers; all keys under the tenant's
        hash tag, so one slot). Not held: nothing written. A script that fails before its ack leaves it pending."""
        if len(items) != 1:
            raise InvalidArgument(f"append_ack on Redis stores one entry; got {len(items)}")
        minid = max(0, int((time.time() - retention.age_s) * 1000))
        keys, args = self._one(tenant, items[0][0], items[0][1], retention, minid)
        keys += [self._k(tenant, "stream", address), self._k(tenant, "nackwhy", address, group)]
        args += [group, _entry_id(position), attempt]
        reply, acked = await self._run(self._append_ack, tenant_prefix(tenant), keys, args)
        self._settle((tenant, address, group), position)
        return ([_appended(reply)], True) if acked else ([], False)

    async def _run(self, script: Script, prefix: str, keys: list[str], args: list[bytes | str | int]) -> Any:
        # durability=replicated: the publish is acknowledged once a replica holds it (WAIT on its primary)
        if self._durability.replicas:
            return await script.replicated(keys, args, prefix + "fence", self._durability)
        return await script(keys, args)

    @staticmethod
    def _reply_ttl_ms() -> int:
        return max(1, int(bus_store.REPLY_CHANNEL_TTL_S * 1000))  # read per call: tests shorten it

    def _expire_ms(self, address: str) -> int | str:
        """When a write to ``address`` must set its stream to expire (a reply channel), in ms; else ''."""
        return self._reply_ttl_ms() if is_reply_channel(address) else ""

    def _trim_due(self, tenant: str, address: str) -> int:
        key = (tenant, address)
        if len(self._appends) >= ADDRESS_MEMO_MAX:  # bounded: reply channels come and go
            self._appends.clear()
        count = self._appends.get(key, 0)
        self._appends[key] = count + 1
        return 1 if count % TRIM_EVERY_APPENDS == 0 else 0

    def _remember(self, tenant: str, address: str, position: str) -> None:
        if len(self._last) >= ADDRESS_MEMO_MAX:  # a forgotten address only costs one wait of up to WAIT_CAP_S
            self._last.clear()
        self._last[(tenant, address)] = position

    async def ensure_group(self, tenant: str, address: str, group: str, start: Literal["earliest", "latest"]) -> None:
        key = self._k(tenant, "stream", address)
        try:
            await self._r.xgroup_create(key, group, id="0" if start == "earliest" else "$", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BackendFailure(f"Redis error: {exc}") from exc
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc

    async def delete_group(self, tenant: str, address: str, group: str) -> None:
        key = self._k(tenant, "stream", address)
        await self._call(self._r.xgroup_destroy(key, group))
        await self._call(
            self._r.delete(self._k(tenant, "dead", address, group), self._k(tenant, "nackwhy", address, group))
        )

    async def drop_address(self, tenant: str, address: str) -> None:
        # the stream holds its groups and pending sets; a reply channel has no dead letters (no group consumes it)
        key = self._k(tenant, "stream", address)
        await self._call(self._r.delete(key))
        self._last.pop((tenant, address), None)
        self._watcher.forget(tenant, key)

    async def claim(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int
    ) -> list[Claimed]:
        return await self.claim_wait(tenant, address, group, consumer, count, visibility_ms, 0.0)

    async def claim_wait(
        self, tenant: str, address: str, group: str, consumer: str, count: int, visibility_ms: int, timeout_s: float
    ) -> list[Claimed]:
        """As :meth:`BusStore.claim_wait`. Each hand-out's lease is its own: the Redis consumer is named
        ``<consumer>~<visibility ms>``, so the pending list records, with the delivery time, when the entry falls
        due, and a redelivery look (:data:`_RECLAIM`) takes an entry only once that hand-out's deadline (or a nack's
        delay) has passed, whoever looks. A wait for new entries ends by the time an entry seen pending falls due."""
        memo = (tenant, address, group)
        out = await self._claim_wait(memo, f"{consumer}~{visibility_ms}", count, visibility_ms, timeout_s)
        if out:  # their lease ends then: a consumer of this process waiting meanwhile looks again by that time
            if len(self._due_at) >= ADDRESS_MEMO_MAX:
                self._due_at.clear()
            self._due_at[memo] = min(self._due_at.get(memo, float("inf")), time.monotonic() + visibility_ms / 1000)
            self._claim_at[memo] = min(self._claim_at.get(memo, 0.0), self._due_at[memo])
        return out

    async def _claim_wait(
        self, memo: tuple[str, str, str], consumer: str, count: int, visibility_ms: int, timeout_s: float
    ) -> list[Claimed]:
        tenant, address, group = memo
        key = self._k(tenant, "stream", address)
        out, due_in_s = await self._reclaim(key, memo, consumer, count, visibility_ms)
        if due_in_s is not None:
            timeout_s = min(timeout_s, due_in_s)
        if out or timeout_s <= 0:
            return out if len(out) >= count else out + (await self._read_new(key, group, consumer, count - len(out)))[0]
        together = self._together.get(memo)
        if self._direct < self.direct_waits_max or (together is not None and together.reading):
            return await self._read_together(key, memo, consumer, count, timeout_s)
        # Nothing due: wait on the tenant's shared read (no connection of our own), skipping the read when nothing
        # can be left for this consumer since it last drained the stream.
        watch = await self._watcher.watch(tenant, key, None)
        if watch.must_read(group, consumer):
            out, drained = await self._read_marked(watch, key, group, consumer, count)
            if out or not drained:
                return out
        woken = await watch.wait(group, consumer, watch.gen, timeout_s)
        if not woken and not watch.must_read(group, consumer):
            return []
        try:
            return (await self._read_marked(watch, key, group, consumer, count))[0]
        except BaseException:
            if woken:  # the entry it was woken for is still there: the group's next consumer reads it
                watch.owe(group)
            raise

    async def _read_together(
        self, key: str, memo: tuple[str, str, str], consumer: str, count: int, timeout_s: float
    ) -> list[Claimed]:
        """New entries for a consumer of the group: ONE consumer of the group in this process at a time blocks in
        ``XREADGROUP ... >`` (a read of its own, one of the process's ``direct_waits_max``) and takes what it reads,
        up to its ``count``, as a consumer reading alone would; the others wait for that read to end and then
        one of them reads. A consumer reading after another starts once the other's entries are acked or nacked
        here (at most ``READ_HOLD_MAX_S``), so its read carries what came meanwhile instead of one read per entry
        (a lone consumer coming back for more reads at once)."""
        together = self._together.get(memo)
        if together is None:
            if len(self._together) >= ADDRESS_MEMO_MAX:  # groups whose last entries were never settled here
                self._together = {m: t for m, t in self._together.items() if t.reading or t.waiting}
            together = self._together[memo] = _GroupRead()
        deadline = anyio.current_time() + timeout_s
        try:
            while (remaining := deadline - anyio.current_time()) > 0:
                if together.reading:
                    await together.read_done(remaining)
                    continue
                if self._direct >= self.direct_waits_max:
                    return []  # no read of its own left: its next claim waits on the tenant's shared read
                hold = together.begin(consumer)
                self._direct += 1
                rows: list[Claimed] = []
                try:
                    if hold:
                        with anyio.move_on_after(min(remaining, READ_HOLD_MAX_S)):
                            await together.settled()
                    block_ms = max(1, int((deadline - anyio.current_time()) * 1000))
                    rows = (await self._read_new(key, memo[2], consumer, count, block_ms))[0]
                finally:
                    self._direct -= 1
                    together.end(consumer, [row.position for row in rows])
                return rows
            return []
        finally:
            if together.idle() and self._together.get(memo) is together:
                del self._together[memo]

    async def _read_marked(
        self, watch: Watch, key: str, group: str, consumer: str, count: int
    ) -> tuple[list[Claimed], bool]:
        if self._wake_reads is None:
            self._wake_reads = anyio.CapacityLimiter(WAKE_READS_MAX)
        async with self._wake_reads:
            mark = watch.reading(group)
            out, drained = await self._read_new(key, group, consumer, count)
        if drained:
            watch.drained(group, consumer, mark)
        return out, drained

    async def _read_new(
        self, key: str, group: str, consumer: str, count: int, block_ms: int | None = None
    ) -> tuple[list[Claimed], bool]:
        """New entries for ``group`` (``XREADGROUP ... >``, blocking up to ``block_ms`` when given), and whether the
        read drained the stream."""
        mine = group.encode()
        while True:
            reply = await self._call(self._r.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms))
            rows: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1] if reply else []
            others = [entry_id for entry_id, f in rows if f.get(b"g", mine) != mine]
            if others:  # a replay meant for another group: settled here, never delivered
                await self._call(self._r.xack(key, group, *others))
            out = [
                Claimed(_s(entry_id), _data(f.get(b"d", f)), 1, f.get(b"r") == b"1")
                for entry_id, f in rows
                if f.get(b"g", mine) == mine
            ]
            if out or len(rows) < count or block_ms is not None:
                return out, len(rows) < count

    async def _reclaim(
        self, key: str, memo: tuple[str, str, str], consumer: str, count: int, visibility_ms: int
    ) -> tuple[list[Claimed], float | None]:
        """Due redeliveries, and (when this look saw the whole pending list) in how many seconds the earliest
        entry seen pending falls due."""
        now = time.monotonic()
        if self._claim_at.get(memo, 0.0) > now:
            due_at = self._due_at.get(memo)
            return [], None if due_at is None else max(0.0, due_at - now)
        if len(self._claim_at) >= ADDRESS_MEMO_MAX:  # a forgotten group only looks for abandoned entries sooner
            self._claim_at.clear()
            self._scan_from.clear()
            self._due_at.clear()
        self._due_at.pop(memo, None)
        # set before the call: the other consumers of this process skip the scan meanwhile
        self._claim_at[memo] = now + min(CLAIM_INTERVAL_S, visibility_ms / 4000)
        start = self._scan_from.pop(memo, "-")
        reply = await self._call(
            self._reclaim_script(
                keys=[key, self._k(memo[0], "nackwhy", memo[1], memo[2])],
                args=[memo[2], consumer, count, start, REDELIVERY_SCAN_MAX, visibility_ms],
            )
        )
        after, soonest, rows = _s(reply[0]), int(reply[1]), reply[2:]
        due_in_s: float | None = None
        if after != "-":  # the look stopped short of the list's end: the next claim goes on from there
            self._scan_from[memo] = after
            self._claim_at[memo] = now
        elif start == "-" and soonest >= 0:
            due_in_s = soonest / 1000
            self._claim_at[memo] = min(self._claim_at[memo], now + due_in_s)
            self._due_at[memo] = now + due_in_s
        out = [Claimed(_s(pos), _data(data), int(attempts), rcpt == b"1") for pos, data, rcpt, attempts in rows]
        return out, due_in_s

    def _due_in(self, memo: tuple[str, str, str], delay_ms: int) -> None:
        at = time.monotonic() + delay_ms / 1000
        if at < self._claim_at.get(memo, 0.0):
            self._claim_at[memo] = at

    async def ack(self, tenant: str, address: str, group: str, position: str, attempt: int) -> bool:
        """Acked on the server when it returns, as one call per ack would be: a tenant's acks (any address and
        group: its keys share one slot) issued while its previous ack call is in flight wait for it and then go in
        one call (up to ``ACK_BATCH_MAX``), so a lone ack costs one round trip and concurrent consumers, of one
        group or of many (a channel's subscribers), share theirs."""
        ack = (address, group, _entry_id(position), attempt)
        queue = self._acks.get(tenant)
        if queue is None:
            queue = self._acks[tenant] = _AckQueue()
        batch = queue.open
        if batch is not None and len(batch.positions) < ACK_BATCH_MAX:
            index = len(batch.positions)
            batch.positions.append(ack)
            await batch.done.wait()
            done = batch.acked[index] if batch.acked is not None else None
            if done is None:  # its call failed or was cancelled: our own call reports the failure
                done = (await self._ack_now(tenant, [ack]))[0]
        elif batch is not None:  # a full batch waits: this ack goes on its own
            done = (await self._ack_now(tenant, [ack]))[0]
        else:
            done = await self._ack_first(tenant, queue, ack)
        self._settle((tenant, address, group), ack[2])
        return done

    async def _ack_first(self, tenant: str, queue: _AckQueue, ack: _Ack) -> bool:
        batch = queue.open = _AckBatch(ack)
        try:
            if queue.sending is not None:
                await queue.sending.done.wait()
            queue.open, queue.sending = None, batch  # acks from now on form the next batch
            acked = batch.acked = await self._ack_now(tenant, batch.positions)
        finally:
            if queue.open is batch:
                queue.open = None
            if queue.sending is batch:
                queue.sending = None
            batch.done.set()
            if queue.open is None and queue.sending is None and self._acks.get(tenant) is queue:
                del self._acks[tenant]
        return acked[0]

    def _settle(self, memo: tuple[str, str, str], position: str) -> None:
        together = self._together.get(memo)
        if together is not None and together.settle(position) and together.idle():
            del self._together[memo]

    async def _ack_now(self, tenant: str, acks: list[_Ack]) -> list[bool]:
        keys: list[str] = []
        args: list[str | int] = []
        for address, group, position, attempt in acks:
            keys += [self._k(tenant, "stream", address), self._k(tenant, "nackwhy", address, group)]
            args += [group, position, attempt]
        return [bool(n) for n in await self._call(self._ack(keys=keys, args=args))]

    async def nack(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        attempt: int,
        delay_ms: int,
        visibility_ms: int,
        reason: str | None = None,
    ) -> bool:
        keys = [self._k(tenant, "stream", address), self._k(tenant, "nackwhy", address, group)]
        kept = ["0"] if reason is None else ["1", reason]
        args: list[Any] = [group, "nack", _entry_id(position), delay_ms, visibility_ms, *kept, attempt]
        done = bool(await self._call(self._nack(keys=keys, args=args)))
        self._settle((tenant, address, group), position)
        if done:
            self._due_in((tenant, address, group), delay_ms)
            if delay_ms == 0:  # due now: a waiting consumer of the group looks at once
                self._watcher.nudge(tenant, keys[0], group)
        return done

    async def nack_reason(self, tenant: str, address: str, group: str, position: str) -> NackReason | None:
        kept = await self._call(self._r.hget(self._k(tenant, "nackwhy", address, group), _entry_id(position)))
        if kept is None:
            return None
        attempt, _, reason = _s(kept).partition(" ")
        return NackReason(int(attempt), reason)

    async def bury(
        self,
        tenant: str,
        address: str,
        group: str,
        position: str,
        reason: str,
        attempts: int,
        data: bytes | None = None,
    ) -> bool:
        keys = [
            self._k(tenant, "stream", address),
            self._k(tenant, "dead", address, group),
            self._k(tenant, "nackwhy", address, group),
        ]
        args: list[Any] = [group, _entry_id(position), reason, attempts, "0" if data is None else "1", data or b""]
        done = bool(await self._call(self._bury(keys=keys, args=args)))
        self._settle((tenant, address, group), position)
        return done

    async def dead_letters(self, tenant: str, address: str, group: str, limit: int) -> list[StoredDeadLetter]:
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self._call(
            self._r.xrange(self._k(tenant, "dead", address, group), count=limit)
        )
        out = []
        for dead_id, f in rows:
            out.append(
                StoredDeadLetter(
                    _s(dead_id),
                    address,
                    group,
                    _s(f[b"p"]),
                    bytes(f[b"d"]),
                    _s(f[b"why"]),
                    int(f[b"n"]),
                    float(f[b"at"]),
                )
            )
        return out

    async def revive(self, tenant: str, address: str, group: str, dead_id: str) -> Appended | None:
        keys = [self._k(tenant, "stream", address), self._k(tenant, "dead", address, group)]
        pos = await self._call(self._revive(keys=keys, args=[group, _entry_id(dead_id, "dead letter id"), 1 << 30]))
        return Appended(_s(pos), False) if pos else None

    async def lookup(self, tenant: str, source: str, message_id: str) -> Appended | None:
        # one slot (the tenant's hash tag): the source's key, then a legacy key that holds the id for any source
        keys = [self._k(tenant, "msgid", source, message_id), self._k(tenant, "msgid", message_id)]
        own, legacy = await self._call(self._r.mget(keys))
        pos = own or legacy
        return Appended(_s(pos), True) if pos else None

    async def locate(self, tenant: str, address: str, message_id: str) -> str | None:
        # a legacy key was the id's only entry (dedup was per tenant), so it names the entry the reader saw
        keys = [self._k(tenant, "msgat", address, message_id), self._k(tenant, "msgid", message_id)]
        earliest, legacy = await self._call(self._r.mget(keys))
        pos = earliest or legacy
        return _s(pos) if pos else None

    async def history(self, tenant: str, address: str, after: str | None, limit: int) -> list[HistoryEntry]:
        key = self._k(tenant, "stream", address)
        start = "(" + _entry_id(after) if after else "-"
        seen = _entry_id(after) if after else "0-0"  # where a wait after this read starts: nothing is skipped
        out: list[HistoryEntry] = []
        while len(out) < limit:
            asked = limit - len(out)
            rows: list[tuple[bytes, dict[bytes, bytes]]] = await self._call(
                self._r.xrange(key, min=start, max="+", count=asked)
            )
            if not rows:
                break
            out += _entries(rows)
            seen = _s(rows[-1][0])
            start = "(" + seen
            if len(rows) < asked:  # the read reached the stream's end: no second read to find nothing
                break
        self._remember(tenant, address, seen)
        return out

    async def read_wait(
        self, tenant: str, address: str, after: str | None, limit: int, timeout_s: float
    ) -> list[HistoryEntry]:
        """One blocking ``XREAD`` from ``after`` (the stream's start when None) while the process has a read of its
        own to spare (``direct_waits_max``), else the tenant's shared read wakes it and one ``XRANGE`` reads. Both
        start at ``after``, so nothing appended meanwhile is missed, and an ask needs no read before its wait."""
        key = self._k(tenant, "stream", address)
        start = _entry_id(after) if after else "0-0"
        deadline = anyio.current_time() + timeout_s
        while True:
            remaining = deadline - anyio.current_time()
            if self._direct < self.direct_waits_max:
                rows = await self._read_own(key, start, limit, remaining)
            else:
                rows = await self._read_shared(tenant, key, start, limit, remaining)
            out = _entries(rows)
            if out or not rows or remaining <= 0:
                return out
            start = _s(rows[-1][0])  # only replays meant for one group: read on past them

    async def _read_own(
        self, key: str, start: str, limit: int, timeout_s: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        self._direct += 1
        try:
            block = max(1, int(timeout_s * 1000)) if timeout_s > 0 else None
            reply = await self._call(self._r.xread({key: start}, count=limit, block=block))
        finally:
            self._direct -= 1
        return reply[0][1] if reply else []

    async def _read_shared(
        self, tenant: str, key: str, start: str, limit: int, timeout_s: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        watch = await self._watcher.watch(tenant, key, start)
        if not watch.ahead_of(start):
            await watch.wait(None, "", watch.gen, timeout_s)
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self._call(
            self._r.xrange(key, min="(" + start, max="+", count=limit)
        )
        return rows

    async def end_reply_channel(self, tenant: str, address: str, answered: bool) -> None:
        """Answered: the reply's append set the stream to expire (``REPLY_CHANNEL_TTL_S``), so only this process's
        interest in it ends, without a command; not answered: dropped now (a late reply's own append recreates it,
        expiring)."""
        if not answered:
            await self.drop_address(tenant, address)
            return
        self._last.pop((tenant, address), None)
        self._watcher.forget(tenant, self._k(tenant, "stream", address))

    async def pending_count(self, tenant: str, address: str, group: str) -> int:
        try:
            info = await self._r.xpending(self._k(tenant, "stream", address), group)
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return 0
            raise BackendFailure(f"Redis error: {exc}") from exc
        return int(info["pending"])

    async def wait(self, tenant: str, address: str, timeout_s: float) -> None:
        key = self._k(tenant, "stream", address)
        last = self._last.get((tenant, address))
        if self._direct < self.direct_waits_max:  # few waiters: a blocking read of its own
            self._direct += 1
            try:
                await self._call(self._r.xread({key: last or "$"}, count=1, block=max(1, int(timeout_s * 1000))))
            finally:
                self._direct -= 1
            return
        watch = await self._watcher.watch(tenant, key, last)
        if last is None or not watch.ahead_of(last):
            await watch.wait(None, "", watch.gen, timeout_s)

    async def put_chunk(self, tenant: str, part: ChunkPart, quota: ChunkQuota) -> ChunkPut:
        prefix = tenant_prefix(tenant)
        field = part.source + ":" + part.group_id
        args: list[Any] = [
            field,
            part.source,
            part.meta,
            part.total,
            part.size_bytes,
            part.seq,
            part.data,
            max(1, int(quota.ttl_s * 1000)),
            prefix,
            quota.agent_groups_max,
            quota.agent_bytes_max,
            quota.tenant_groups_max,
            quota.tenant_bytes_max,
        ]
        reply = await self._call(self._put_chunk(keys=[prefix + "chunkgroups", prefix + "chunks:" + field], args=args))
        if len(self._chunk_tenants) < ADDRESS_MEMO_MAX:  # beyond it, Redis's own expiry still drops the parts
            self._chunk_tenants.add(tenant)
        status = _s(reply[0])
        if status == "refused":
            return ChunkPut(refused=_s(reply[1]))
        return ChunkPut(parts=[bytes(p) for p in reply[1:]]) if status == "done" else ChunkPut()

    async def sweep_chunks(self) -> int:
        dropped = 0
        for tenant in list(self._chunk_tenants):
            prefix = tenant_prefix(tenant)
            gone, left = await self._call(self._sweep_chunks(keys=[prefix + "chunkgroups"], args=[prefix]))
            dropped += int(gone)
            if int(left) == 0:
                self._chunk_tenants.discard(tenant)
        return dropped

    async def chunk_usage(self, tenant: str) -> tuple[int, int]:
        groups, held = 0, 0
        async for key in self._r.scan_iter(match=tenant_prefix(tenant) + "chunks:*", count=1000):
            fields = await self._call(self._r.hgetall(key))
            if fields:
                groups += 1
                held += sum(len(v) for k, v in fields.items() if k.startswith(b"p"))
        return groups, held


def _msgat_ttl_s(retention: Retention, address: str) -> int:
    """How long an address's earliest-entry key of an id lives: as long as its entry can be retained (and never
    less than the dedup window), so ``history(after=<id>)`` finds the earliest entry while it can be read; on a
    reply channel (its stream expires within a minute) the dedup window, as before."""
    window = max(1, int(retention.dedup_window_s))
    return window if is_reply_channel(address) else max(window, math.ceil(retention.age_s))


def _append_keys(prefix: str, address: str, entry: Entry) -> list[str]:
    """The append scripts' keys for one entry: its stream, its source's dedup key, the legacy per-tenant dedup key
    and the address's earliest-entry key of its id."""
    return [
        prefix + "stream:" + address,
        prefix + "msgid:" + entry.source + ":" + entry.message_id,
        prefix + "msgid:" + entry.message_id,
        prefix + "msgat:" + address + ":" + entry.message_id,
    ]


def _appended(reply: Any) -> Appended:
    # the one-message append script replies the new entry id, or {first entry id} for a duplicate
    if isinstance(reply, list):
        return Appended(reply[0].decode(), True)
    return Appended(reply.decode(), False)


def _entries(rows: list[tuple[bytes, dict[bytes, bytes]]]) -> list[HistoryEntry]:
    # entries with a 'g' field replay a dead letter to one group: never part of an address's history
    return [HistoryEntry(_s(entry_id), _data(f.get(b"d", f))) for entry_id, f in rows if b"g" not in f]


def _data(value: Any) -> bytes:
    # an entry without our 'd' field comes back as its fields: kept, as JSON, for its dead letter
    return bytes(value) if isinstance(value, bytes) else foreign_fields(value)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBackend(Backend):
    """``redis://host:port/db``: shared by processes on many hosts; Redis Streams and consumer groups."""

    name: ClassVar[str] = "redis"
    implements: ClassVar[Implements] = Implements(
        durable=True, multi_process=True, multi_host=True, push_wakeups=True, trio=False
    )

    def __init__(self, client: RedisClient, durability: Durability = ASYNC) -> None:
        self.client = client
        self.durability = durability
        self.bus: RedisBusStore = RedisBusStore(client, durability)
        self.ledger: RedisLedgerStore = RedisLedgerStore(client, durability)
        self.identity: RedisIdentityStore = RedisIdentityStore(client)
        self.registry = RedisRegistryStore(client)
        self.skills = RedisSkillStore(client)
        self.providers = RedisProviderStore(client)
        self.checkpoints = RedisCheckpointStore(client)
        self.a2a_tasks = RedisA2ATaskStore(client)
        self.replies = RedisReplyStore(client)
        self.tasks = RedisTaskStore(client)
        self.memory = RedisMemoryStore(client)
        self.governance = RedisGovernanceStore(client)
        self.audit = RedisAuditStore(client)

    @classmethod
    async def connect(cls, url: str, **options: Any) -> RedisBackend:
        """Open ``redis://`` / ``rediss://`` (one server) or ``redis+cluster://h:p[,h:p...]/`` /
        ``rediss+cluster://`` (a Redis Cluster, from any of its nodes); ``?durability=replicated`` makes money
        and publish writes wait for a replica (see :class:`~.redis_call.Durability`)."""
        if options:
            raise InvalidArgument(f"unknown redis option(s): {', '.join(sorted(options))}")
        try:
            base, durability = _split_durability(url)
            client = _cluster_client(base) if _is_cluster(base) else _server_client(base)
        except ValueError as exc:
            raise InvalidURL(f"bad Redis URL {url!r}: {exc}") from exc
        try:
            await client.ping()
        except (redis_errors.RedisError, redis_errors.RedisClusterUnreachableError, OSError) as exc:
            await client.aclose()
            raise BackendUnavailable(f"cannot reach Redis at {url}: {exc}") from exc
        backend = cls(client, durability)
        if not _is_cluster(base):
            try:
                await backend.identity.migrate()  # token records of earlier releases; one GET once done
            except BaseException:
                await client.aclose()
                raise
        return backend

    async def aclose(self) -> None:
        try:
            try:
                await self.bus.aclose()
            finally:
                await self.ledger.aclose()
        finally:
            await self.client.aclose()


REDIS_CONNECTIONS_MAX = 512
"""Connections a process opens to one Redis server (per cluster node), unless the URL sets ``max_connections``:
every waiting subscription's blocking read holds one while it waits, so the client library's default (100) is
too few for a server with many subscribers; kept under a default file-descriptor limit (1,024)."""
REDIS_CONNECTION_WAIT_S = 10.0
"""How long a command waits for a free connection of a full pool before it fails (SOS-6030)."""
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_SEEDS_MAX = 64
"""How many ``host:port`` seed nodes a cluster URL may list (any one that answers is enough)."""


def _is_cluster(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def _split_durability(url: str) -> tuple[str, Durability]:
    """``url`` without its ``durability`` parameter, and the durability it asked for (the others stay)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    asked = [v for k, v in query if k == "durability"]
    if len(asked) > 1:
        raise ValueError("durability is given more than once")
    durability = durability_of(asked[0]) if asked else ASYNC
    rest = urlencode([(k, v) for k, v in query if k != "durability"])
    return urlunsplit(parts._replace(query=rest)), durability


def _server_client(url: str) -> aioredis.Redis:
    # One resend on a fresh connection when a pooled one turns out dead (a server restart, a failover,
    # an idle timeout): the stores' writes are keyed by ids or deliver at least once, so a resend is safe.
    # A burst past the pool's size waits for a connection rather than failing (blocking reads hold theirs).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS_MAX,
        timeout=REDIS_CONNECTION_WAIT_S,
        decode_responses=False,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis.from_pool(pool)


def _cluster_client(url: str) -> RedisCluster:
    """A cluster client seeded with every ``host:port`` of the URL; it discovers the slots itself and follows
    MOVED/ASK. A failover's connection errors are retried (with backoff) while it learns the new master."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if path not in ("", "0"):
        raise ValueError("a Redis Cluster has one database: the path is '/' or '/0'")
    if query:
        raise ValueError(f"unknown cluster URL parameter(s): {query}")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    seeds = [_seed(h) for h in hosts.split(",") if h]
    if not seeds or len(seeds) > CLUSTER_SEEDS_MAX:
        raise ValueError(f"a cluster URL lists 1 to {CLUSTER_SEEDS_MAX} host:port seed nodes")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=scheme.lower() == "rediss+cluster",
        decode_responses=False,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 6),
        max_connections=REDIS_CONNECTIONS_MAX,
    )


def _seed(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{hostport!r} is not host:port")
    return host.strip("[]"), int(port)
