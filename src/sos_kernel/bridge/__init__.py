"""The SOS bridge: one kernel tenant and a running SOS v0.4.1 deployment's Redis, both ways.

``SOSBridge(services, "redis://host:6379/0", tenant="acme")`` (or ``sos bridge --sos-redis URL --url KERNEL_URL``)
runs with the operator rights of ONE tenant: ``services`` is a trusted ``kernel.tenant(slug)`` or a client holding
that tenant's admin token. Guarantees:

- **SOS → kernel, exactly once.** Every entry of SOS's inbox streams (``sos:stream:{scope}:agent:*``), broadcast
  stream and squad streams is read in the ``sos-0.4`` dialect and published into the kernel. The bridge keeps, in
  SOS's Redis, the last entry id it finished per stream and moves it only after the kernel accepted the entry;
  the kernel's publish is idempotent by ``message_id``, so a restart resumes where it stopped, skips nothing, and
  the entries of a page that may be published again after a crash are duplicates the kernel drops.
- **Kernel → SOS, exactly once.** Messages kernel agents publish to ``agent:sos-<name>`` are written to that SOS
  agent's inbox stream in SOS's flat encoding, then ``PUBLISH``-ed on ``sos:wake:<name>`` and
  ``sos:channel:agent:<name>``; the write, a per-message marker (kept ``dedupe_ttl_s``) and the bridge's kernel
  position move in one Lua script, so a retry or restart never writes a message twice.
- **Namespaced sources.** An SOS agent ``agent:x`` is ``agent:sos-x`` in the kernel (``SOS_AGENT_PREFIX``), a
  remote peer registered by the bridge (card ``type: remote``, ``session: sos-bridge``) and heartbeated while
  its SOS registry hash lives. It can never speak as a kernel agent: if ``agent:sos-x`` is a kernel agent the
  bridge did not register, its entries are refused. The other way, a kernel agent whose name an SOS agent holds
  is neither advertised in SOS's registry nor bridged.
- **No loops.** A message that came from SOS (its source is an SOS peer, or its id was bridged in) is never
  written back to SOS; an entry the bridge wrote to SOS (its marker exists) is never read back; registry hashes
  the bridge writes carry ``bridged_by`` and are not imported as SOS agents.
- **Never stuck.** An entry that does not parse, or that the kernel refuses (SOS-4xxx), is dead-lettered in
  ``sos:bridge:{tenant}:{scope}:dead`` with its reason and raw fields (at most ``raw_bytes_max`` bytes), counted
  and logged, and the position moves past it. An unreachable kernel or Redis stops the round without moving
  any position; the next round retries.
- **Bounded.** Every count and size is a named field of :class:`BridgeLimits`.

``status()`` reports what moved, what was refused, the recent errors and the lag; each round that moved or
refused something logs one line on ``sos_kernel.bridge``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..bus.store import POISON_RAW_BYTES_MAX
from ..contracts import CORE_TYPES, AgentCard, AskMessage, Message, from_sos_fields, parse_message, to_sos_fields
from ..errors import BackendUnavailable, InvalidArgument, SOSError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..api import ServicesAPI
    from ..registry import RegisteredAgent

__all__ = ["BRIDGE_SESSION", "SOS_AGENT_PREFIX", "BridgeLimits", "BridgeStatus", "SOSBridge"]

log = logging.getLogger("sos_kernel.bridge")

SOS_AGENT_PREFIX = "sos-"
"""An SOS agent ``agent:x`` is ``agent:sos-x`` in the kernel."""
BRIDGE_SESSION = "sos-bridge"
"""The ``session`` of a peer's card in the kernel registry: what marks it as made by the bridge."""
SOS_NAME_CHARS_MAX = 60
"""Longest SOS agent name bridged: the kernel name adds the prefix and must stay within 64 characters."""
BACKOFF_MAX_S = 5.0
"""Longest wait between rounds while the kernel or SOS's Redis is unreachable."""
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")

# KEYS inbox stream, marker, out hash; ARGV ttl, out field, position, wake 1, wake 2, wake payload, field pairs...
# The marker makes a resend (a retry, a restart) write nothing; the position moves in the same step.
_WRITE_OUT = """
local wrote = 0
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  local fields = {}
  for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  redis.call('PUBLISH', ARGV[4], ARGV[6])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  wrote = 1
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return wrote
"""


@dataclass(frozen=True, slots=True)
class BridgeLimits:
    """Every bound the bridge keeps.

    - ``entries_per_poll_max``: entries read per stream (and kernel messages per SOS agent) in one round.
    - ``streams_max``: SOS streams followed; ``peers_max``: SOS agents (and kernel agents) bridged.
    - ``dedupe_ids_max``: message ids bridged into the kernel remembered in memory (loop check);
      ``dedupe_ttl_s``: how long the marker of a message written to SOS is kept (the kernel's dedup window).
    - ``raw_bytes_max``: bytes of a refused entry's raw fields kept in the dead-letter stream;
      ``dead_letters_max``: entries that stream keeps (older ones are trimmed).
    - ``errors_kept_max``: recent errors ``status()`` shows.
    - ``poll_interval_s``: pause between rounds; ``registry_interval_s``: how often registries are synced and
      heartbeats sent; ``registry_ttl_s``: the TTL of the SOS registry hashes of kernel agents.
    """

    entries_per_poll_max: int = 100
    streams_max: int = 1000
    peers_max: int = 1000
    dedupe_ids_max: int = 100_000
    dedupe_ttl_s: int = 24 * 3600
    raw_bytes_max: int = POISON_RAW_BYTES_MAX
    dead_letters_max: int = 10_000
    errors_kept_max: int = 50
    poll_interval_s: float = 0.2
    registry_interval_s: float = 30.0
    registry_ttl_s: int = 300


@dataclass(slots=True)
class BridgeStatus:
    """What the bridge has done since it started (see :meth:`SOSBridge.status`).

    ``lag_s`` is the age of the oldest SOS entry not yet bridged at the end of the last round (0 when caught up).
    """

    tenant: str
    scope: str
    rounds: int = 0
    bridged_in: int = 0
    bridged_out: int = 0
    loops_skipped: int = 0
    out_of_scope: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    lag_s: float = 0.0
    streams: int = 0
    sos_agents: list[str] = field(default_factory=list)
    kernel_agents: list[str] = field(default_factory=list)
    last_round_at: float | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class SOSBridge:
    """A kernel tenant bridged to an SOS deployment's Redis; see the module docstring for the guarantees.

    Use it as ``async with SOSBridge(...) as bridge: await bridge.run()`` (or call :meth:`sync_once` for one
    round). ``project`` scopes the bridge to ``sos:stream:project:{project}:...`` streams and entries (global
    streams when None); ``peers`` names SOS agents to bridge even before they appear in SOS's registry.
    """

    def __init__(
        self,
        services: ServicesAPI,
        sos_redis: str | aioredis.Redis,
        *,
        tenant: str,
        project: str | None = None,
        peers: Sequence[str] = (),
        limits: BridgeLimits | None = None,
    ) -> None:
        if project is not None and not _NAME_RE.fullmatch(project.replace("_", "-")):
            raise InvalidArgument(f"project {project!r} must be letters, digits, '-' or '_'")
        for name in peers:
            self._check_sos_name(name)
        self.services = services
        self.tenant = tenant
        self.project = project
        self.limits = limits or BridgeLimits()
        self.scope = "global" if project is None else f"project:{project}"
        self._url = sos_redis if isinstance(sos_redis, str) else None
        self._r: aioredis.Redis | None = None if isinstance(sos_redis, str) else sos_redis
        self._state = f"sos:bridge:{tenant}:{self.scope}:"
        self._configured = tuple(peers)
        self._sos_agents: dict[str, str] = {}  # SOS agent -> status from its registry hash
        self._inboxes: set[str] = set(peers)  # SOS agents with an inbox stream (or configured)
        self._kernel_agents: dict[str, RegisteredAgent] = {}
        self._peers: set[str] = set()  # kernel names of the peers the bridge registered
        self._collisions: set[str] = set()
        self._bridged_in: OrderedDict[str, None] = OrderedDict()
        self._registry_due = 0.0
        self._fresh_round = -1  # the round in which the kernel registry was last read for an unknown target
        self._status = BridgeStatus(tenant, self.scope)
        self._write_out: Any = None

    @staticmethod
    def _check_sos_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > SOS_NAME_CHARS_MAX:
            raise InvalidArgument(f"SOS agent name {name!r} must match ^[a-z][a-z0-9-]*$, at most 60 characters")
        return name

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> SOSBridge:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect to SOS's Redis (when given a URL); SOS-6030 if it cannot be reached."""
        if self._r is None:
            try:
                import redis.asyncio as aioredis
            except ImportError:  # pragma: no cover - the extra is installed in every test run
                raise InvalidArgument("the bridge needs redis-py: pip install 'sos-kernel[redis]'") from None
            self._r = aioredis.Redis.from_url(str(self._url), socket_connect_timeout=5)
        self._write_out = self._redis.register_script(_WRITE_OUT)
        await self._call(self._redis.ping())

    async def aclose(self) -> None:
        """Close the Redis connection the bridge opened (a client passed in stays open)."""
        if self._url is not None and self._r is not None:
            await self._r.aclose()
            self._r = None

    @property
    def _redis(self) -> aioredis.Redis:
        if self._r is None:
            raise InvalidArgument("open the bridge first: 'async with SOSBridge(...)'")
        return self._r

    async def _call(self, awaitable: Any) -> Any:
        from ..backends.redis_call import redis_call

        return await redis_call(awaitable)

    async def _scan(self, pattern: str, most: int) -> list[str]:
        """Up to ``most`` keys matching ``pattern`` (a SCAN walk; keys may repeat across its pages)."""
        found: dict[str, None] = {}
        cursor = 0
        while True:
            cursor, keys = await self._call(self._redis.scan(cursor, match=pattern, count=500))
            for key in keys:
                found[_text(key)] = None
            if not int(cursor) or len(found) >= most:
                return list(found)[:most]

    def status(self) -> BridgeStatus:
        """A snapshot of the counters, the lag, the recent errors and who is bridged."""
        return dataclasses.replace(
            self._status,
            errors=list(self._status.errors),
            sos_agents=sorted(self._sos_agents),
            kernel_agents=sorted(self._exported()),
        )

    # -- rounds ---------------------------------------------------------------------------------------------------

    async def run(self, stop: anyio.Event | None = None) -> None:
        """Bridge until ``stop`` is set (or the task is cancelled). A failed round is logged, kept in ``status()``
        and retried with a back-off up to ``BACKOFF_MAX_S``."""
        stop = stop or anyio.Event()
        wait = self.limits.poll_interval_s
        while not stop.is_set():
            try:
                await self.sync_once()
                wait = self.limits.poll_interval_s
            except SOSError as exc:
                self._error(f"round failed: {exc.code} {exc.message}")
                wait = min(BACKOFF_MAX_S, wait * 2)
            with anyio.move_on_after(wait):
                await stop.wait()

    async def sync_once(self) -> BridgeStatus:
        """One round: the registries (every ``registry_interval_s``), then SOS → kernel, then kernel → SOS."""
        before = (self._status.bridged_in, self._status.bridged_out, self._status.refused)
        now = time.time()
        if now >= self._registry_due:
            await self._sync_registries()
            self._registry_due = now + self.limits.registry_interval_s
        await self._pull()
        await self._push()
        self._status.rounds += 1
        self._status.last_round_at = time.time()
        after = (self._status.bridged_in, self._status.bridged_out, self._status.refused)
        if after != before:
            log.info(
                "bridge %s %s: in %d out %d refused %d lag %.3fs",
                self.tenant,
                self.scope,
                after[0] - before[0],
                after[1] - before[1],
                after[2] - before[2],
                self._status.lag_s,
            )
        return self.status()

    def _error(self, text: str) -> None:
        log.warning("bridge %s %s: %s", self.tenant, self.scope, text)
        errors = self._status.errors
        errors.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}")
        del errors[: -self.limits.errors_kept_max]

    # -- registries -----------------------------------------------------------------------------------------------

    async def _sync_registries(self) -> None:
        await self._read_sos_registry()
        await self._read_kernel_registry()
        await self._register_peers()
        await self._advertise_kernel_agents()

    async def _read_sos_registry(self) -> None:
        found: dict[str, str] = {}
        for key in await self._scan("sos:registry:*", self.limits.peers_max * 2):
            name = key.removeprefix("sos:registry:")
            if not _NAME_RE.fullmatch(name) or len(name) > SOS_NAME_CHARS_MAX:
                continue
            fields = {_text(k): _text(v) for k, v in (await self._call(self._redis.hgetall(key))).items()}
            if not fields or "bridged_by" in fields:
                continue  # gone, or a kernel agent the bridge advertised
            if self.project is not None and fields.get("project") not in (None, "", self.project):
                continue
            if len(found) >= self.limits.peers_max:
                self._error(f"more than peers_max={self.limits.peers_max} SOS agents; the rest are not bridged")
                break
            found[name] = fields.get("status", "online")
        self._sos_agents = found
        self._inboxes.update(found)

    async def _read_kernel_registry(self) -> None:
        agents = await self.services.registry.find()
        self._peers = {a.card.name for a in agents if a.card.session == BRIDGE_SESSION}
        self._kernel_agents = {a.card.name: a for a in agents if a.card.session != BRIDGE_SESSION}

    def _kernel_name(self, sos_name: str) -> str:
        return SOS_AGENT_PREFIX + sos_name

    def _collides(self, sos_name: str) -> bool:
        """Whether the kernel name of an SOS agent belongs to a kernel agent the bridge did not register."""
        return self._kernel_name(sos_name) in self._kernel_agents

    async def _register_peers(self) -> None:
        for name, sos_status in self._sos_agents.items():
            kernel_name = self._kernel_name(name)
            if self._collides(name):
                if name not in self._collisions:
                    self._collisions.add(name)
                    self._error(f"SOS agent {name!r} not bridged: {kernel_name!r} is a kernel agent")
                continue
            if kernel_name in self._peers:
                await self.services.registry.heartbeat(kernel_name)
                continue
            card = AgentCard(
                name=kernel_name,
                tool="service",
                type="remote",
                role="executor",
                session=BRIDGE_SESSION,
                project=self.project,
                summary=f"SOS agent {name} (SOS status {sos_status[:40]}), reached through the bridge",
            )
            await self.services.registry.register(card)
            self._peers.add(kernel_name)

    def _exported(self) -> list[str]:
        """Kernel agents advertised in SOS's registry: online, in scope, and no SOS agent holds their name."""
        return [
            name
            for name, agent in self._kernel_agents.items()
            if agent.status == "online"
            and name not in self._sos_agents
            and (self.project is None or agent.card.project == self.project)
        ][: self.limits.peers_max]

    async def _advertise_kernel_agents(self) -> None:
        for name in self._exported():
            card = self._kernel_agents[name].card
            fields: dict[Any, Any] = {
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in card.to_wire().items()
                if v is not None and k in ("name", "tool", "type", "role", "project", "skills", "squads", "summary")
            }
            fields.update(
                status="online",
                last_seen=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                bridged_by=f"sos-kernel:{self.tenant}",
            )
            key = f"sos:registry:{name}"
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.limits.registry_ttl_s)
            await self._call(pipe.execute())

    # -- SOS -> kernel --------------------------------------------------------------------------------------------

    async def _streams(self) -> list[str]:
        base = f"sos:stream:{self.scope}:"
        keys = [base + "broadcast"]
        for pattern in (base + "agent:*", base + "squad:*"):
            keys += await self._scan(pattern, self.limits.streams_max)
        if len(keys) > self.limits.streams_max:
            self._error(f"more than streams_max={self.limits.streams_max} SOS streams; the rest wait")
            keys = keys[: self.limits.streams_max]
        for key in keys:
            name = key.removeprefix(base + "agent:")
            if name != key and _NAME_RE.fullmatch(name) and len(name) <= SOS_NAME_CHARS_MAX:
                self._inboxes.add(name)
        return keys

    async def _pull(self) -> None:
        streams = await self._streams()
        self._status.streams = len(streams)
        positions = await self._call(self._redis.hgetall(self._state + "in"))
        done = {_text(k): _text(v) for k, v in positions.items()}
        oldest_ms: int | None = None
        for key in streams:
            behind = await self._pull_stream(key, done.get(key, "0-0"))
            if behind is not None:
                oldest_ms = behind if oldest_ms is None else min(oldest_ms, behind)
        self._status.lag_s = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)

    async def _pull_stream(self, key: str, last: str) -> int | None:
        """Bridge one page of ``key`` after ``last``; the time (ms) of the first entry left, None if caught up."""
        count = self.limits.entries_per_poll_max
        rows = await self._call(self._redis.xrange(key, min="(" + last, max="+", count=count + 1))
        page = rows[:count]
        marked = await self._marked([_text(f.get(b"message_id", f.get("message_id", ""))) for _, f in page])
        finished: str | None = None
        try:
            for (entry_id, fields), ours in zip(page, marked, strict=True):
                await self._bridge_in(key, _text(entry_id), fields, ours)
                finished = _text(entry_id)
        finally:
            # once a page (and where a round stops): a replay after a crash is dropped by the kernel's dedupe
            if finished is not None:
                with anyio.CancelScope(shield=True):
                    await self._call(self._redis.hset(self._state + "in", key, finished))
        return _id_ms(_text(rows[count][0])) if len(rows) > count else None

    async def _marked(self, message_ids: list[str]) -> list[bool]:
        """Which of ``message_ids`` the bridge wrote to SOS itself (one round trip for a page)."""
        if not message_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.exists(self._state + "sent:" + message_id)
        return [bool(found) for found in await self._call(pipe.execute())]

    async def _bridge_in(self, key: str, entry_id: str, fields: dict[Any, Any], ours: bool) -> None:
        text = {_text(k): _text(v) for k, v in fields.items()}
        try:
            message = from_sos_fields(text)
        except SOSError as exc:
            await self._refuse(key, entry_id, text, f"unreadable: {exc.code} {exc.message}")
            return
        if self.project is not None and text.get("project", self.project) != self.project:
            self._status.out_of_scope += 1
            return
        if ours:
            self._status.loops_skipped += 1  # the bridge wrote it: never read back
            return
        source = message.source.removeprefix("agent:")
        if self._collides(source):
            await self._refuse(key, entry_id, text, f"source {message.source} would speak as a kernel agent")
            return
        await self._know_targets(message)
        try:
            mapped = parse_message(self._into_kernel(message))
            await self.services.bus.publish(mapped)
        except BackendUnavailable:
            raise
        except SOSError as exc:
            if exc.code.startswith("SOS-6"):
                raise  # the kernel failed: the position stays, the next round retries
            await self._refuse(key, entry_id, text, f"refused by the kernel: {exc.code} {exc.message}")
            return
        self._remember(mapped.message_id)
        self._status.bridged_in += 1

    async def _know_targets(self, message: Message) -> None:
        """Read the kernel registry again (once a round) when an entry names an agent neither side is known to
        have: a kernel agent registered since the last sync must not be taken for an SOS agent."""
        names = [message.target] + ([message.payload.reply_channel] if isinstance(message, AskMessage) else [])
        unknown = [
            n
            for n in (a.removeprefix("agent:") for a in names if a.startswith("agent:"))
            if n not in self._kernel_agents and n not in self._sos_agents
        ]
        if unknown and self._fresh_round != self._status.rounds:
            self._fresh_round = self._status.rounds
            await self._read_kernel_registry()

    def _into_kernel(self, message: Message) -> dict[str, Any]:
        wire = message.to_wire()
        wire["source"] = "agent:" + self._kernel_name(message.source.removeprefix("agent:"))
        wire["target"] = self._kernel_address(message.target)
        if isinstance(message, AskMessage):
            wire["payload"]["reply_channel"] = self._kernel_address(message.payload.reply_channel)
        return wire

    def _kernel_address(self, address: str) -> str:
        """An SOS address as the kernel knows it: a kernel agent or a channel as it is, an SOS agent prefixed."""
        if not address.startswith("agent:"):
            return address
        name = address.removeprefix("agent:")
        if name in self._kernel_agents and name not in self._sos_agents:
            return address
        return "agent:" + self._kernel_name(name)

    def _remember(self, message_id: str) -> None:
        self._bridged_in[message_id] = None
        while len(self._bridged_in) > self.limits.dedupe_ids_max:
            self._bridged_in.popitem(last=False)

    async def _refuse(self, key: str, entry_id: str, fields: dict[str, str], reason: str) -> None:
        raw = json.dumps(fields, ensure_ascii=False).encode()[: self.limits.raw_bytes_max]
        dead: dict[Any, Any] = {"stream": key, "id": entry_id, "reason": reason[:1000], "raw": raw}
        await self._call(
            self._redis.xadd(self._state + "dead", dead, maxlen=self.limits.dead_letters_max, approximate=True)
        )
        self._status.refused += 1
        self._error(f"{key} {entry_id}: {reason}")

    # -- kernel -> SOS --------------------------------------------------------------------------------------------

    async def _push(self) -> None:
        kernel_side = set(self._kernel_agents) - set(self._sos_agents)  # an inbox of a kernel agent, in SOS
        names = sorted(n for n in self._inboxes - kernel_side if not self._collides(n))[: self.limits.peers_max]
        positions = await self._call(self._redis.hgetall(self._state + "out"))
        done = {_text(k): _text(v) for k, v in positions.items()}
        for name in names:
            address = "agent:" + self._kernel_name(name)
            page = await self.services.bus.history_entries(
                address, after=done.get(address), limit=self.limits.entries_per_poll_max
            )
            for position, message in page:
                await self._bridge_out(name, address, position, message)

    async def _bridge_out(self, name: str, address: str, position: str, message: Message) -> None:
        sender = message.source.removeprefix("agent:")
        if sender.startswith(SOS_AGENT_PREFIX) or sender in self._peers or message.message_id in self._bridged_in:
            self._status.loops_skipped += 1  # it came from SOS: never written back
            await self._call(self._redis.hset(self._state + "out", address, position))
            return
        reason = self._out_refusal(sender, message)
        if reason is not None:
            await self._refuse(address, position, {"message": message.to_json().decode()}, reason)
            await self._call(self._redis.hset(self._state + "out", address, position))
            return
        fields = to_sos_fields(message.model_copy(update={"target": f"agent:{name}"}))
        if self.project is not None:
            fields["project"] = self.project
        stream = f"sos:stream:{self.scope}:agent:{name}"
        wake = json.dumps(fields)
        flat = [item for pair in fields.items() for item in pair]
        args = [self.limits.dedupe_ttl_s, address, position, f"sos:wake:{name}", f"sos:channel:agent:{name}", wake]
        keys = [stream, self._state + "sent:" + message.message_id, self._state + "out"]
        if await self._call(self._write_out(keys=keys, args=[*args, *flat])):
            self._status.bridged_out += 1
        else:
            self._status.loops_skipped += 1

    def _out_refusal(self, sender: str, message: Message) -> str | None:
        if sender in self._sos_agents:
            return f"kernel agent {message.source} has the name of an SOS agent; it would speak as that agent"
        if message.type not in CORE_TYPES:
            return f"type {message.type!r} is not one SOS v0.4.1 knows"
        if self.project is not None and sender not in self._exported():
            return f"{message.source} is not an online agent of project {self.project!r}"
        return None
