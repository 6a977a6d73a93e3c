"""The agent registry: who is here, what they can do, and whether they are online.

Cards are SOS v0.4.1 Agent Cards; the registry adds an optional Ed25519 public key, endpoints and a card
signature. Status is derived from ``last_seen``: ``online`` within ``ttl_s`` (default 300 s, SOS's heartbeat TTL),
``stale`` within ``STALE_FACTOR`` times ``ttl_s``, ``offline`` after. The first registration of a name publishes
``agent_joined`` on ``sos:channel:system:events``; re-registering updates the card and publishes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..bus import Bus
from ..contracts import RESERVED_AGENTS, AgentCard, AgentJoinedMessage, AgentJoinedPayload, parse_card
from ..errors import AgentNotFound, Forbidden, InvalidArgument, LimitExceeded
from ..identity.keys import AgentKey, PublicKey
from ..identity.store import RegistryEntry, RegistryStore
from ..operations import Wire, operation, service

if TYPE_CHECKING:
    from ..guard import Caller

__all__ = [
    "AGENT_CARD_BYTES_MAX",
    "AGENT_CARD_FIELD_CHARS_MAX",
    "AGENT_CARD_LIST_ITEMS_MAX",
    "AGENT_CARD_LIST_ITEM_CHARS_MAX",
    "REGISTRY_TTL_S",
    "STALE_FACTOR",
    "AgentStatus",
    "RegisteredAgent",
    "Registry",
    "sign_card",
    "verify_card",
]

REGISTRY_TTL_S = 300.0
STALE_FACTOR = 3
ENDPOINTS_MAX = 16
AGENT_CARD_BYTES_MAX = 65_536
"""The most bytes one registration may store: the card's JSON plus its endpoints, key and signature."""
AGENT_CARD_FIELD_CHARS_MAX = 4096
"""The longest free-text field of a card (``model``, ``session``, ``project``, ``tenant_subdomain``, ``host``,
``cwd``; a path's ``PATH_MAX``)."""
AGENT_CARD_LIST_ITEMS_MAX = 256
"""The most entries of a card's ``skills`` and of its ``squads``."""
AGENT_CARD_LIST_ITEM_CHARS_MAX = 128
"""The longest entry of a card's ``skills`` or ``squads``."""
_FREE_TEXT = ("model", "session", "project", "tenant_subdomain", "host", "cwd")
SYSTEM_EVENTS = "sos:channel:system:events"

AgentStatus = Literal["online", "stale", "offline"]


def _card_bytes(card: AgentCard) -> bytes:
    body = card.model_dump(mode="json", exclude_none=True, exclude={"last_seen"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_card(card: AgentCard, key: AgentKey) -> str:
    """``ed25519:<hex>`` over the card's canonical JSON (without ``last_seen``, which heartbeats change)."""
    return key.sign(_card_bytes(card))


def verify_card(card: AgentCard, signature: str, public_key: PublicKey) -> bool:
    """Whether ``signature`` signs ``card`` with ``public_key``; anyone holding the key can check it."""
    return public_key.verify(_card_bytes(card), signature)


def _check_size(card: AgentCard, extras: bytes) -> None:
    """SOS-4010 naming the bound a card passes (see the constants); SOS's own cards are far inside every one."""
    for field in _FREE_TEXT:
        value = getattr(card, field)
        if value is not None and len(value) > AGENT_CARD_FIELD_CHARS_MAX:
            _too_big(f"{field} is {len(value)} characters", "AGENT_CARD_FIELD_CHARS_MAX", AGENT_CARD_FIELD_CHARS_MAX)
    for field in ("skills", "squads"):
        items = getattr(card, field) or []
        if len(items) > AGENT_CARD_LIST_ITEMS_MAX:
            _too_big(f"{field} has {len(items)} entries", "AGENT_CARD_LIST_ITEMS_MAX", AGENT_CARD_LIST_ITEMS_MAX)
        longest = max(map(len, items), default=0)
        if longest > AGENT_CARD_LIST_ITEM_CHARS_MAX:
            limit = AGENT_CARD_LIST_ITEM_CHARS_MAX
            _too_big(f"an entry of {field} is {longest} characters", "AGENT_CARD_LIST_ITEM_CHARS_MAX", limit)
    size = len(card.to_json()) + len(extras)
    if size > AGENT_CARD_BYTES_MAX:
        _too_big(f"the registration is {size} bytes as JSON", "AGENT_CARD_BYTES_MAX", AGENT_CARD_BYTES_MAX)


def _too_big(what: str, limit: str, value: int) -> None:
    raise LimitExceeded(
        f"agent card: {what}; at most {value} ({limit}); nothing was written",
        details={"limit": limit, "value": value},
    )


def _name(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument("an agent name is 'name' or 'agent:name'")
    return value.removeprefix("agent:")


@dataclass(frozen=True, slots=True)
class RegisteredAgent:
    """A registered agent: its card, derived status and the registry's additions."""

    card: AgentCard
    status: AgentStatus
    registered_at: datetime
    last_seen: datetime
    public_key: PublicKey | None
    endpoints: tuple[dict[str, str], ...]
    signature: str | None
    a2a: bool = False
    """Whether the agent opted in to be served as an A2A agent (``sos serve`` at ``/a2a/{tenant}/{name}/``)."""

    @property
    def address(self) -> str:
        """``agent:<name>``."""
        return f"agent:{self.card.name}"

    def to_a2a(self, url: str | None = None) -> dict[str, Any]:
        """An A2A AgentCard (JSON dict) for this agent, with its endpoints and public key."""
        return self.card.to_a2a(
            url=url,
            endpoints=self.endpoints,
            public_key=self.public_key.hex if self.public_key else None,
            key_id=self.public_key.key_id if self.public_key else None,
        )


# The registry's access rule that is not a declaration (see sos_kernel.operations).


async def _register_rule(caller: Caller, registry: Registry, arguments: dict[str, Any]) -> RegisteredAgent:
    """An agent session registers only itself: the card's ``name`` is its own (admin: any)."""
    card = arguments["card"]
    if isinstance(card, Mapping) and not isinstance(card, AgentCard):
        card = dict(card)  # one snapshot, checked and then parsed: a mapping could read one way here, another there
    name = card.name if isinstance(card, AgentCard) else (card.get("name", "") if isinstance(card, dict) else "")
    if not caller.principal.admin:
        caller.own("name", "agent", name)
    options = {k: v for k, v in arguments.items() if k != "card"}
    return await registry.register(card, **options)


@service("registry")
class Registry:
    """The registry API of one tenant: ``kernel.registry`` or ``kernel.tenant(slug).registry``."""

    def __init__(self, store: RegistryStore, tenant: str, bus: Bus, *, ttl_s: float = REGISTRY_TTL_S) -> None:
        self._store = store
        self.tenant = tenant
        self._bus = bus
        self.ttl_s = ttl_s

    def _status(self, last_seen: float, now: float) -> AgentStatus:
        age = now - last_seen
        if age <= self.ttl_s:
            return "online"
        return "stale" if age <= self.ttl_s * STALE_FACTOR else "offline"

    def _view(self, entry: RegistryEntry, now: float) -> RegisteredAgent:
        extras = json.loads(entry.extras)
        card = AgentCard.model_validate_json(entry.card).model_copy(
            update={"last_seen": datetime.fromtimestamp(entry.last_seen, UTC)}
        )
        return RegisteredAgent(
            card=card,
            status=self._status(entry.last_seen, now),
            registered_at=datetime.fromtimestamp(entry.registered_at, UTC),
            last_seen=datetime.fromtimestamp(entry.last_seen, UTC),
            public_key=PublicKey.from_hex(extras["public_key"]) if extras.get("public_key") else None,
            endpoints=tuple(extras.get("endpoints", ())),
            signature=extras.get("signature"),
            a2a=extras.get("a2a") is True,
        )

    @operation(
        "registry:write",
        rule=_register_rule,
        wire=Wire(errors=(LimitExceeded,), summary="Register or update an agent card"),
    )
    async def register(
        self,
        card: AgentCard | Mapping[str, Any],
        *,
        public_key: PublicKey | None = None,
        endpoints: Sequence[Mapping[str, str]] = (),
        signature: str | None = None,
        a2a: bool = False,
    ) -> RegisteredAgent:
        """Register or update an agent. A ``signature`` must verify with ``public_key`` (SOS-5004 otherwise).

        ``a2a=True`` opts the agent in to be served as an A2A agent by ``sos serve``. A registration replaces the
        previous one whole (as ``endpoints`` and ``public_key`` are replaced), so re-registering without
        ``a2a=True`` turns the A2A endpoint off; SOS-4005 for an ``a2a`` that is not a bool.

        Raises SOS-4001 for a card that fails its schema, SOS-4010 for one past a bound (``AGENT_CARD_BYTES_MAX``
        for the whole registration, ``AGENT_CARD_FIELD_CHARS_MAX``, ``AGENT_CARD_LIST_ITEMS_MAX``,
        ``AGENT_CARD_LIST_ITEM_CHARS_MAX``), with nothing written. The first registration of a name publishes
        ``agent_joined`` on ``sos:channel:system:events``.
        """
        parsed = self._parse(card)
        if f"agent:{parsed.name}" in RESERVED_AGENTS:
            raise InvalidArgument(
                f"agent name {parsed.name!r} is reserved: the kernel's own messages come from it",
                details={"agent": f"agent:{parsed.name}"},
            )
        if signature is not None and (public_key is None or not verify_card(parsed, signature, public_key)):
            raise Forbidden("the card signature does not verify with the given public key")
        if len(endpoints) > ENDPOINTS_MAX or not all(isinstance(e, Mapping) and "url" in e for e in endpoints):
            raise InvalidArgument(f"endpoints are at most {ENDPOINTS_MAX} mappings with a 'url'")
        if not isinstance(a2a, bool):
            raise InvalidArgument(f"a2a must be true or false, got {a2a!r}", details={"field": "a2a"})
        now = time.time()
        extras = {
            "public_key": public_key.hex if public_key else None,
            "endpoints": [dict(e) for e in endpoints],
            "signature": signature,
            "a2a": a2a,
        }
        extras_json = json.dumps(extras).encode()
        _check_size(parsed, extras_json)
        entry = RegistryEntry(parsed.name, parsed.to_json(), extras_json, now, now)
        created = await self._store.put(self.tenant, entry)
        stored = await self._store.get(self.tenant, parsed.name)
        view = self._view(stored or entry, now)
        if created:
            await self._announce(view, now)
        return view

    @staticmethod
    def _parse(card: AgentCard | Mapping[str, Any]) -> AgentCard:
        return parse_card(AgentCard, card, "agent card")

    async def _announce(self, view: RegisteredAgent, now: float) -> None:
        message = AgentJoinedMessage(
            target=SYSTEM_EVENTS,
            payload=AgentJoinedPayload(
                agent_name=view.card.name,
                joined_at=view.registered_at,
                tenant_id=self.tenant,
                agent_card=view.card.to_wire(),
                expiry_at=datetime.fromtimestamp(now, UTC) + timedelta(seconds=self.ttl_s),
            ),
        )
        await self._bus.publish(message)

    @operation(
        "registry:write", own={"name": "name"}, wire=Wire(errors=(AgentNotFound,), summary="Mark an agent seen now")
    )
    async def heartbeat(self, name: str) -> RegisteredAgent:
        """Mark the agent seen now; SOS-6002 if it is not registered."""
        agent = _name(name)
        now = time.time()
        if not await self._store.touch(self.tenant, agent, now):
            raise AgentNotFound(f"agent {agent!r} is not registered", details={"agent": agent})
        return await self.get(agent)

    @operation("registry:read", wire=Wire("GET", errors=(AgentNotFound,), summary="One agent"))
    async def get(self, name: str) -> RegisteredAgent:
        """The agent; SOS-6002 if it is not registered."""
        agent = _name(name)
        entry = await self._store.get(self.tenant, agent)
        if entry is None:
            raise AgentNotFound(f"agent {agent!r} is not registered", details={"agent": agent})
        return self._view(entry, time.time())

    @operation("registry:read", wire=Wire("GET", summary="An agent's status: online, stale, offline, or null"))
    async def status(self, name: str) -> AgentStatus | None:
        """The agent's status, or None when it is not registered."""
        entry = await self._store.get(self.tenant, _name(name))
        return self._status(entry.last_seen, time.time()) if entry else None

    @operation("registry:read", wire=Wire("GET", summary="Agents matching every filter given"))
    async def find(
        self,
        *,
        skill: str | None = None,
        role: str | None = None,
        squad: str | None = None,
        tool: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[RegisteredAgent]:
        """Agents matching every filter given, by name; SOS-4005 for a ``status`` that is not one."""
        if status is not None and status not in get_args(AgentStatus):
            raise InvalidArgument(f"status {status!r} is not one of: {', '.join(get_args(AgentStatus))}")
        now = time.time()
        out = []
        for entry in await self._store.list(self.tenant):
            view = self._view(entry, now)
            card = view.card
            if skill is not None and skill not in (card.skills or []):
                continue
            if squad is not None and squad not in (card.squads or []):
                continue
            if (role is not None and card.role != role) or (tool is not None and card.tool != tool):
                continue
            if status is not None and view.status != status:
                continue
            out.append(view)
        return out

    @operation("registry:write", own={"name": "name"}, wire=Wire(keyed=True, summary="Remove an agent"))
    async def deregister(self, name: str) -> None:
        """Remove the agent; SOS-6002 if it is not registered."""
        agent = _name(name)
        if not await self._store.delete(self.tenant, agent):
            raise AgentNotFound(f"agent {agent!r} is not registered", details={"agent": agent})
