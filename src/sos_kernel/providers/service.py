"""The provider matrix (``kernel.providers``) and the engine that chats through it (``kernel.engine``).

Guarantees:

- **Validated matrix.** A card is a ProviderCard v1 (SOS-4001 otherwise), its backend has an adapter here and its
  URLs pass the operator's policy (:mod:`sos_kernel.providers.runtime`); nothing is written otherwise. A tenant holds
  at most ``PROVIDERS_PER_TENANT_MAX`` providers. Cards carry no keys.
- **Selection.** ``model`` picks the cards whose ``model`` (or ``id``) equals it; ``tier`` keeps one tier; the
  candidates are tried in tier order (primary, fallback, cheap, premium, local), then by id. A call walks them
  within itself: a provider whose breaker is open is skipped, a failure (timeout, 5xx, connection error, malformed
  answer) counts against its breaker and the next one is tried; 401/403/404/429 move on without counting; any other
  4xx is the request's fault and is raised at once (SOS-6042). The reply names the provider that answered. A
  stream walks them until one delivers its first piece: a failure before it fails over and is charged nothing.
- **Shared breakers.** Each provider's breaker (:mod:`sos_kernel.providers.breaker`) lives in the store, swapped by
  version, so every process sharing it sees the same state and one probe at a time in half-open.
- **Charged once.** A call with ``id`` is claimed in the store first: a retry of a finished call returns the first
  reply (``replayed=True``) and charges nothing; a retry while it runs raises SOS-6043. The answering provider
  alone is charged: its cost comes from the ledger's price for ``(provider id, model)`` (rounded up to a micro), or
  the card's ``cost_per_call_estimate_micros`` when no price is set, or 0. The agent's wallet pays
  ``system:usage`` through the transfer ``engine:<call id>`` (idempotent by id, across processes), and a UsageEvent
  v1 is recorded.
- **A retry is the same request.** The claim keeps the digest of (messages, model, tier, max_tokens, agent,
  stream); another request under a used id is refused with SOS-4009 naming the id, before anything is held or called.
- **Call ids are the caller's own.** Through a session an id is always keyed under the caller's identity
  (``<agent name>/<id>``, or ``@<token id>/<id>`` for a token bound to no agent), whatever scopes it holds: no lift
  reaches another agent's call, and an admin chatting for ``agent=`` keys its calls under its own identity.
- **Paid before delivered.** Before any provider is called the wallet must exist (SOS-7002) and hold the most the
  call can cost (price * (input bound + max_tokens), or the card's estimate) as the ledger hold
  ``engine:<call id>:hold:<attempt>`` (SOS-7001 otherwise). A finish captures the actual cost (at most the hold)
  as ``engine:<call id>``; a stream ended early after delivering text captures the cost of what it delivered;
  anything else voids the hold. Only the engine (or ``ledger:admin``) settles that hold; if it is gone or short
  when delivered text is settled, the rest is transferred from the wallet as ``engine:<call id>:charge:<attempt>``,
  still counted against the budgets, and what cannot be paid is audited (``engine.unpaid``), never dropped.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import anyio

from .._json import loads
from ..contracts import ProviderCard, UsageEvent, parse_card
from ..errors import (
    CallInProgress,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
    SchemaViolation,
    SettlementRejected,
    WalletNotFound,
)
from ..governance import Budget, held_budget
from ..ledger import Ledger, Price
from ..ledger.usage import USAGE_ACCOUNT
from ..operations import SPEND_HELD, Wire, operation, reserved_free, scoped_id, service
from .adapters import ADAPTERS, WIRE_ADAPTERS, Answer, Request, StreamState, local_answer
from .breaker import CLOSED, BreakerConfig, BreakerState, admit, record
from .models import ChatReply, ChatUsage, ProviderHealth
from .runtime import ProviderRuntime, http
from .store import CallClaim, ProviderStore

if TYPE_CHECKING:
    import httpx

    from ..guard import Caller
    from ..identity.models import Principal

__all__ = [
    "CALL_ID_CHARS_MAX",
    "CHAT_BYTES_MAX",
    "CHAT_MESSAGES_MAX",
    "MAX_TOKENS_MAX",
    "PROVIDERS_PER_TENANT_MAX",
    "REPLY_BYTES_MAX",
    "TIMEOUT_S_MAX",
    "ChatStream",
    "Engine",
    "Providers",
    "check_card",
]

_T = TypeVar("_T")

PROVIDERS_PER_TENANT_MAX = 64
CHAT_MESSAGES_MAX = 256
MESSAGE_BYTES_MAX = 256 * 1024
CHAT_BYTES_MAX = 1024 * 1024
MAX_TOKENS_MAX = 32_768
MAX_TOKENS_DEFAULT = 1024
TIMEOUT_S_MAX = 300
TIMEOUT_S_DEFAULT = 60
CALL_ID_CHARS_MAX = 128
REPLY_BYTES_MAX = 4 * 1024 * 1024
CALL_KEEP_S = 7 * 24 * 3600
"""How long a finished call's reply is kept to answer retries (its charge is once forever: the transfer id)."""
CAS_ATTEMPTS_MAX = 64
STREAM_S_MAX = 3600
"""The longest a streamed answer may run; past it the stream fails (and pays for what it delivered)."""
CHAT_HOLD_S = 2 * STREAM_S_MAX
"""How long a call's hold stays open if the process dies before settling it (the ledger releases it then)."""
INPUT_TOKENS_PER_MESSAGE = 16
"""Tokens a provider may add around each message, on top of one token per byte, in the held input bound."""
PROBE_TIMEOUT_S = 10.0
ROLES = ("system", "user", "assistant")
TIER_ORDER = ("primary", "fallback", "cheap", "premium", "local")
DEFAULT_BREAKER = BreakerConfig()
ADMIN = "ledger:admin"
UNCHARGED = "-"


def _now() -> float:
    return time.time()


def breaker_config(card: ProviderCard) -> BreakerConfig:
    """The card's thresholds over the defaults (5 failures, 30 s, 1 probe)."""
    cb = card.circuit_breaker
    timeout_s = _timeout_s(card)
    d = DEFAULT_BREAKER
    if cb is None:
        return BreakerConfig(d.failure_threshold, d.recovery_s, d.half_open_max, timeout_s + 5)
    return BreakerConfig(
        d.failure_threshold if cb.failure_threshold is None else cb.failure_threshold,
        d.recovery_s if cb.recovery_window_seconds is None else float(cb.recovery_window_seconds),
        d.half_open_max if cb.half_open_max_requests is None else cb.half_open_max_requests,
        timeout_s + 5,
    )


def _timeout_s(card: ProviderCard) -> float:
    return float(min(card.timeout_seconds or TIMEOUT_S_DEFAULT, TIMEOUT_S_MAX))


class _Failure(Exception):
    """A provider failed in a way that counts against its breaker."""


class _Skip(Exception):
    """A provider refused for a reason of its own (auth, quota): try the next one, count nothing."""


def check_card(card: ProviderCard | Mapping[str, Any], runtime: ProviderRuntime) -> ProviderCard:
    """The card, validated (SOS-4001), with an adapter here and URLs ``runtime``'s policy allows (SOS-4005)."""
    parsed = parse_card(ProviderCard, card, "provider card")
    if parsed.backend not in ADAPTERS:
        raise InvalidArgument(
            f"provider {parsed.id!r}: backend {parsed.backend!r} has no adapter here (use one of "
            f"{', '.join(sorted(ADAPTERS))})",
            details={"backend": parsed.backend},
        )
    adapter = ADAPTERS[parsed.backend]
    runtime.check_url(parsed.backend, adapter.base(parsed), "endpoint")
    if parsed.health_probe_url is not None:
        runtime.check_url(parsed.backend, parsed.health_probe_url, "health_probe_url")
    return parsed


# -- the providers -------------------------------------------------------------------------------------------------


@service("providers")
class Providers:
    """The provider matrix of one tenant: ``kernel.providers`` or ``kernel.tenant(slug).providers``."""

    def __init__(self, store: ProviderStore, tenant: str, runtime: ProviderRuntime) -> None:
        self._store = store
        self.tenant = tenant
        self._runtime = runtime

    def __repr__(self) -> str:
        return f"Providers({self.tenant!r})"

    def _check(self, card: ProviderCard | Mapping[str, Any]) -> ProviderCard:
        return check_card(card, self._runtime)

    @operation(
        "providers:admin",
        wire=Wire(errors=(LimitExceeded,), summary="Add or replace a provider of the matrix (providers:admin)"),
    )
    async def register(self, card: ProviderCard | Mapping[str, Any]) -> ProviderCard:
        """Add the ProviderCard v1 ``card``, or replace the card of the same id (its breaker is kept)."""
        parsed = self._check(card)
        if not await self._store.put_card(self.tenant, parsed.id, parsed.to_json(), PROVIDERS_PER_TENANT_MAX):
            raise LimitExceeded(
                f"tenant {self.tenant!r} has {PROVIDERS_PER_TENANT_MAX} providers (the maximum)",
                details={"limit": PROVIDERS_PER_TENANT_MAX},
            )
        return parsed

    @operation(
        "providers:admin",
        wire=Wire(errors=(ProviderNotFound,), summary="Remove a provider and its breaker (providers:admin)"),
    )
    async def remove(self, provider_id: str) -> None:
        """Remove provider ``provider_id`` (SOS-6040 if there is none)."""
        if not isinstance(provider_id, str) or not await self._store.remove_card(self.tenant, provider_id):
            raise ProviderNotFound(f"no provider {provider_id!r}", details={"provider": str(provider_id)[:200]})

    @operation("providers:read", wire=Wire("GET", summary="The provider matrix, in selection order"))
    async def list(self, *, tier: str | None = None) -> list[ProviderCard]:
        """Every card (of ``tier`` when given), in selection order: tier order, then id."""
        if tier is not None and tier not in TIER_ORDER:
            raise InvalidArgument(f"tier must be one of {', '.join(TIER_ORDER)}, got {tier!r}")
        cards = [ProviderCard.model_validate_json(raw) for raw in await self._store.cards(self.tenant)]
        cards.sort(key=lambda c: (TIER_ORDER.index(c.tier), c.id))
        return [c for c in cards if tier is None or c.tier == tier]

    @operation("providers:read", wire=Wire("GET", summary="Each provider's breaker: closed, open or half_open"))
    async def health(self) -> dict[str, ProviderHealth]:
        """Each provider's breaker, by provider id, as every process sharing the store sees it."""
        return {card.id: await self._state(card) for card in await self.list()}

    async def _state(self, card: ProviderCard) -> ProviderHealth:
        """One provider's breaker."""
        s, _ = await self._store.breaker(self.tenant, card.id)
        since = datetime.fromtimestamp(s.since, UTC) if s.since else None
        return ProviderHealth(
            provider=card.id,
            state=s.state,
            failures=s.failures,
            since=since,
            tier=card.tier,
            model=card.model,
            backend=card.backend,
        )

    @operation("providers:admin", wire=Wire(summary="Run the health probes now (providers:admin)"))
    async def probe(self) -> dict[str, ProviderHealth]:
        """GET each card's ``health_probe_url`` (cards without one are left alone): a 2xx counts as a success for
        its breaker, anything else (or no answer within 10 s) as a failure. Returns :meth:`health`."""
        for card in await self.list():
            if card.health_probe_url is not None:
                ok = await self._probe_one(card.backend, card.health_probe_url)
                await self._outcome(card, ok)
        return await self.health()

    async def _probe_one(self, backend: str, url: str) -> bool:
        self._runtime.check_url(backend, url, "health_probe_url")
        try:
            response = await self._runtime.client.get(url, timeout=PROBE_TIMEOUT_S)
        except http().HTTPError:
            return False
        return 200 <= response.status_code < 300

    # -- the breakers, for the engine ----------------------------------------------------------------------------

    async def _swap(self, card: ProviderCard, step: Any) -> BreakerState | None:
        for _ in range(CAS_ATTEMPTS_MAX):
            s, version = await self._store.breaker(self.tenant, card.id)
            new = step(s)
            if new is None or new == s:
                return new  # type: ignore[no-any-return]
            if await self._store.swap_breaker(self.tenant, card.id, version, new):
                return new  # type: ignore[no-any-return]
        raise ProviderUnavailable(f"provider {card.id!r}: its breaker is too contended to update; retry")

    async def _admit(self, card: ProviderCard) -> BreakerState | None:
        """The breaker's state once it let one call through now (taking a probe slot when half-open), or None."""
        cfg = breaker_config(card)
        return await self._swap(card, lambda s: admit(s, cfg, _now()))

    async def _outcome(self, card: ProviderCard, ok: bool, admitted: BreakerState | None = None) -> None:
        """Record a call's outcome on the breaker (a success of a call admitted by a clean breaker changes
        nothing, so it is not even read)."""
        if ok and admitted == CLOSED:
            return
        cfg = breaker_config(card)
        await self._swap(card, lambda s: record(s, cfg, ok, _now()))

    async def _candidates(self, model: str | None, tier: str | None) -> builtins.list[ProviderCard]:
        """The cards a call may use, in the order they are tried (SOS-6040 when none matches)."""
        cards = await self.list(tier=tier)
        if model is not None:
            cards = [c for c in cards if model in (c.model, c.id)]
        if not cards:
            raise ProviderNotFound(
                f"no provider for model {model!r} and tier {tier!r} in tenant {self.tenant!r}",
                details={"model": model, "tier": tier},
            )
        return cards


# -- the engine ----------------------------------------------------------------------------------------------------


def _check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise InvalidArgument("messages must be a non-empty list of {role, content} objects")
    if len(messages) > CHAT_MESSAGES_MAX:
        raise LimitExceeded(f"a chat takes at most {CHAT_MESSAGES_MAX} messages", details={"limit": CHAT_MESSAGES_MAX})
    out, total = [], 0
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise InvalidArgument(f"messages[{i}] must be an object with exactly 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES or type(role) is not str or type(content) is not str:
            raise InvalidArgument(f"messages[{i}]: role is one of {', '.join(ROLES)} and content a string")
        size = len(content.encode("utf-8", errors="surrogatepass"))
        if size > MESSAGE_BYTES_MAX:
            raise LimitExceeded(
                f"messages[{i}] is over {MESSAGE_BYTES_MAX} bytes", details={"limit": MESSAGE_BYTES_MAX}
            )
        total += size
        out.append({"role": role, "content": content})
    if total > CHAT_BYTES_MAX:
        raise LimitExceeded(f"the messages are over {CHAT_BYTES_MAX} bytes in all", details={"limit": CHAT_BYTES_MAX})
    return out


def _check_call(model: Any, tier: Any, id: Any, max_tokens: Any) -> int:
    if model is not None and (type(model) is not str or not 1 <= len(model) <= 200):
        raise InvalidArgument("model must be a non-empty string of at most 200 characters")
    if tier is not None and tier not in TIER_ORDER:
        raise InvalidArgument(f"tier must be one of {', '.join(TIER_ORDER)}, got {tier!r}")
    if id is not None and (type(id) is not str or not 1 <= len(id) <= CALL_ID_CHARS_MAX or not id.isprintable()):
        raise InvalidArgument(f"id must be 1-{CALL_ID_CHARS_MAX} printable characters")
    if max_tokens is None:
        return MAX_TOKENS_DEFAULT
    if type(max_tokens) is not int or not 1 <= max_tokens <= MAX_TOKENS_MAX:
        raise InvalidArgument(f"max_tokens must be an int in 1..{MAX_TOKENS_MAX}")
    return max_tokens


def usage_event_id(tenant: str, call_id: str) -> str:
    """The UsageEvent id of a call: a UUID derived from the tenant and the call id, so every attempt shares it."""
    digest = hashlib.sha256(f"{tenant}\x00{call_id}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def request_digest(
    messages: list[dict[str, str]],
    model: str | None,
    tier: str | None,
    max_tokens: int,
    agent: str | None,
    stream: bool,
) -> str:
    """The SHA-256 (hex) of everything that makes a chat request: a call id answers only a retry with this digest."""
    request = {"messages": messages, "model": model, "tier": tier, "max_tokens": max_tokens, "agent": agent}
    text = json.dumps({**request, "stream": stream}, sort_keys=True, separators=(",", ":"))  # ASCII: escapes all
    return hashlib.sha256(text.encode()).hexdigest()


def caller_call_id(principal: Principal, id: Any) -> Any:
    """``id`` keyed under the caller's identity, lifted by no scope: ``<agent name>/<id>`` for an agent's token,
    ``@<token id>/<id>`` for a token bound to no agent (agent names start with a letter, so the two never meet).
    A non-string id is passed on for the engine to refuse; an id ending with a reserved suffix is SOS-4005."""
    if principal.agent is not None:
        return scoped_id(principal.agent, reserved_free(id))
    if not isinstance(id, str) or not id:
        return id
    prefix = f"@{principal.token_id}/"
    return id if id.startswith(prefix) else prefix + reserved_free(id)


async def _chat_rule(caller: Caller, engine: Engine, arguments: dict[str, Any]) -> Any:
    """The session's agent pays: a session without ``ledger:admin`` chats only for itself, and needs an agent.
    The call id is always the caller's own (:func:`caller_call_id`), ``ledger:admin`` or not."""
    principal = caller.principal
    if arguments.get("id") is not None:
        arguments = {**arguments, "id": caller_call_id(principal, arguments["id"])}
    agent = arguments.get("agent")
    if not principal.allows(ADMIN):
        if principal.agent is None:
            caller.deny("chatting needs a token bound to an agent (whose wallet pays) or ledger:admin")
        if agent is None:
            agent = principal.agent
        caller.own("agent", "agent", agent)
    elif agent is None:
        agent = principal.agent
    caller.unreserved("agent", "agent", agent)
    return await engine.chat(**{**arguments, "agent": agent})


class ChatStream:
    """A streamed chat: ``async for text in stream`` yields the answer's pieces; ``reply`` is the
    :class:`ChatReply` once the stream ended (charged as a whole call). Close it with ``aclose()`` or ``async
    with``; a stream closed early pays for the text it delivered (nothing if none) and counts as neither success
    nor failure."""

    def __init__(
        self,
        pieces: AsyncIterator[str],
        provider: str,
        tried: tuple[str, ...],
        abandon: Callable[[], Awaitable[None]] | None = None,
        slot: _Slot | None = None,
    ) -> None:
        self._pieces = pieces
        self.provider = provider
        self.tried = tried
        self.reply: ChatReply | None = None
        self._abandon = abandon
        self._slot = slot
        self._started = False

    def __del__(self) -> None:
        if self._slot is not None:
            self._slot.leave()  # a stream dropped unread gives its concurrency slot back

    def __repr__(self) -> str:
        return f"ChatStream(provider={self.provider!r}, done={self.reply is not None})"

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        self._started = True
        return await self._pieces.__anext__()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading (idempotent)."""
        if not self._started and self._abandon is not None:
            abandon, self._abandon = self._abandon, None
            await abandon()
        aclose = getattr(self._pieces, "aclose", None)
        if aclose is not None:
            await aclose()

    async def collect_reply(self) -> ChatReply:
        """Read to the end and return the reply."""
        async for _ in self:
            pass
        if self.reply is None:
            raise ProviderUnavailable(f"provider {self.provider!r}: the stream ended without a reply")
        return self.reply


class _Slot:
    """A running call's place in the runtime's counts, given back once."""

    def __init__(self, runtime: ProviderRuntime, tenant: str, who: str) -> None:
        self._runtime, self._tenant, self._who = runtime, tenant, who
        self.held = True

    def leave(self) -> None:
        if self.held:
            self.held = False
            self._runtime.leave(self._tenant, self._who)


class _Call:
    """One chat call's state: its claim, its candidates and what was tried."""

    def __init__(
        self,
        engine: Engine,
        messages: list[dict[str, str]],
        max_tokens: int,
        call_id: str,
        agent: str | None,
        digest: str,
    ):
        self.engine = engine
        self.messages = messages
        self.max_tokens = max_tokens
        self.call_id = call_id
        self.agent = agent
        self.attempt = uuid.uuid4().hex
        self.digest = digest
        self.token = f"{self.attempt}.{digest}"  # the claim's token: a retry reads the request's digest from it
        self.tried: list[str] = []
        self.reasons: dict[str, str] = {}
        self.currency = "USD"
        self.prices: dict[str, Price | None] = {}  # read once per call, at the check
        self.hold_id = f"engine:{call_id}:hold:{self.attempt}"  # one per attempt: a retry never meets a spent hold
        self.held = 0  # micros still held for this attempt
        self.unpaid = 0  # micros of delivered text the agent could not be charged (its hold was gone)
        self.budget: Budget | None = None  # the policy's spend and token budgets, held until settled
        size = sum(len(m["content"].encode("utf-8", errors="surrogatepass")) for m in messages)
        self.input_bound = size + INPUT_TOKENS_PER_MESSAGE * len(messages)


@service("engine")
class Engine:
    """Chat through the tenant's providers: ``kernel.engine``, ``session.engine`` (see the module docstring)."""

    def __init__(self, providers: Providers, ledger: Ledger, store: ProviderStore) -> None:
        self._providers = providers
        self.tenant = providers.tenant
        self._ledger = ledger
        self._store = store
        self._runtime = providers._runtime
        self._opened: set[str] = set()  # currencies whose system:usage account is known to exist

    def __repr__(self) -> str:
        return f"Engine({self.tenant!r})"

    @overload
    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        tier: str | None = None,
        id: str | None = None,
        max_tokens: int | None = None,
        stream: Literal[False] = False,
        agent: str | None = None,
    ) -> ChatReply: ...
    @overload
    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        tier: str | None = None,
        id: str | None = None,
        max_tokens: int | None = None,
        stream: Literal[True],
        agent: str | None = None,
    ) -> ChatStream: ...
    @operation(
        "engine:chat",
        lift=ADMIN,
        rule=_chat_rule,
        spend=(SPEND_HELD,),
        wire=Wire(
            errors=(
                ProviderNotFound,
                ProviderUnavailable,
                ProviderRejected,
                CallInProgress,
                InsufficientFunds,
                WalletNotFound,
                IdempotencyConflict,
                LimitExceeded,
            ),
            summary="Chat through the provider matrix; charged once per id to the session's agent",
        ),
    )
    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        tier: str | None = None,
        id: str | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        agent: str | None = None,
    ) -> ChatReply | ChatStream:
        """Answer ``messages`` (``{"role", "content"}`` objects) with the first eligible provider.

        ``agent`` pays (a session's own agent by default; a trusted call without one is metered, not charged).
        ``stream=True`` returns a :class:`ChatStream` (failover happens before its first piece). See the module
        docstring for selection, failover, breakers and charging.
        """
        checked = _check_messages(messages)
        tokens = _check_call(model, tier, id, max_tokens)
        if type(stream) is not bool:
            raise InvalidArgument("stream must be a bool")
        if agent is not None and (type(agent) is not str or not agent.startswith("agent:")):
            raise InvalidArgument(f"agent must be an agent:<name> address, got {agent!r}")
        cards = await self._providers._candidates(model, tier)
        digest = request_digest(checked, model, tier, tokens, agent, stream)
        call = _Call(self, checked, tokens, id or str(uuid.uuid4()), agent, digest)
        call.budget = held_budget()
        who = agent or UNCHARGED
        self._runtime.enter(self.tenant, who)
        try:
            claim = await self._store.claim_call(self.tenant, call.call_id, call.token, _now(), self._lease_s(cards))
            _same_request(call, claim)
            if claim.outcome == "done" and claim.reply is not None:
                self._runtime.leave(self.tenant, who)  # a finished call is answered again, whatever the wallet holds
                reply = ChatReply.model_validate_json(claim.reply).model_copy(update={"replayed": True})
                return _replayed_stream(reply) if stream else reply
            if claim.outcome != "claimed":
                raise CallInProgress(f"call {call.call_id!r} is running; retry when it ends", details={"id": id})
            cards = await self._precheck(call, cards)
        except BaseException as exc:
            await self._release_hold(call)
            if not isinstance(exc, CallInProgress):
                with anyio.CancelScope(shield=True):
                    await self._store.release_call(self.tenant, call.call_id, call.token)
            self._runtime.leave(self.tenant, who)
            raise
        if stream:
            return await self._open_stream(call, cards)
        try:
            return await self._answer(call, cards)
        except BaseException:
            await self._release_hold(call)
            with anyio.CancelScope(shield=True):
                await self._store.release_call(self.tenant, call.call_id, call.token)
            raise
        finally:
            self._runtime.leave(self.tenant, who)

    @staticmethod
    def _lease_s(cards: list[ProviderCard]) -> float:
        return sum(_timeout_s(c) for c in cards) + 30.0

    async def _precheck(self, call: _Call, cards: list[ProviderCard]) -> list[ProviderCard]:
        """Hold the most the call can cost on the agent's wallet before any provider is called (SOS-7001/7002)."""
        first = cards[0]
        price = call.prices[first.id] = await self._ledger.price(first.id, first.model)
        call.currency = price.currency if price is not None else "USD"
        if call.agent is None:
            await self._hold_budget(call, 0)  # metered, not charged: it spends tokens, no money
            return cards
        for card in cards[1:]:
            call.prices[card.id] = await self._ledger.price(card.id, card.model)
        cards = [c for c in cards if (p := call.prices[c.id]) is None or p.currency == call.currency]
        balance = await self._ledger.balance(call.agent, call.currency)  # SOS-7002 before any hold
        most = max(self._most(call, c) for c in cards)
        if most > 0 and not balance.allow_negative and balance.available < most:
            raise InsufficientFunds(
                f"{call.agent} has {balance.available} {call.currency} micros; a call may cost {most}",
                details={"available": balance.available, "estimate": most, "currency": call.currency},
            )
        await self._hold_budget(call, most)
        if most <= 0:
            return cards
        await self._usage_account(call.currency)
        hold = await self._ledger.hold(
            id=call.hold_id,
            debit=call.agent,
            credit=USAGE_ACCOUNT,
            amount=most,
            currency=call.currency,
            timeout_s=CHAT_HOLD_S,
            reason=f"chat hold {call.call_id}"[:200],
        )
        call.held = hold.amount
        return cards

    @staticmethod
    async def _hold_budget(call: _Call, most: int) -> None:
        """Count the call's most (``most`` micros, its input bound and ``max_tokens``) against the policy's spend
        and token budgets, before any provider is called (SOS-5004 when one would pass its limit)."""
        if call.budget is not None:
            await call.budget.hold(most, call.input_bound + call.max_tokens)

    @staticmethod
    async def _settle_budget(call: _Call, spent: int, tokens: int) -> None:
        """Keep what the call spent and used counted against the budgets and give back the rest of its hold."""
        budget, call.budget = call.budget, None
        if budget is not None:
            with anyio.CancelScope(shield=True):
                await budget.settle(spent if call.agent is not None else 0, tokens)

    def _most(self, call: _Call, card: ProviderCard) -> int:
        """The most ``card`` can cost for this call: its price over the input bound and max_tokens, else its
        estimate (candidates priced in another currency than the first are dropped: they cannot be held for)."""
        price = call.prices.get(card.id)
        if price is None:
            return card.cost_per_call_estimate_micros or 0
        return price.cost_micros(call.input_bound, call.max_tokens, 0)

    async def _usage_account(self, currency: str) -> None:
        if currency not in self._opened:
            await self._ledger.open_account(USAGE_ACCOUNT, currency)
            self._opened.add(currency)  # accounts are never removed

    async def _release_hold(self, call: _Call) -> None:
        """Void the call's hold, if one is still open, and give its budget back (shielded: it runs on every way
        out)."""
        if call.held:
            call.held = 0
            with anyio.CancelScope(shield=True), contextlib.suppress(SettlementRejected):
                await self._ledger.void(call.hold_id)
        await self._settle_budget(call, 0, 0)

    async def _charge_delivered(self, call: _Call, card: ProviderCard, delivered: int) -> None:
        """An attempt that ended early after text was delivered pays for it: the input bound and one token per
        delivered byte at the card's price (the card's estimate when unpriced), never more than the hold."""
        price = call.prices.get(card.id)
        if price is not None:
            cost = price.cost_micros(call.input_bound, delivered, 0)
        else:
            cost = card.cost_per_call_estimate_micros or 0
        await self._settle_budget(call, min(cost, call.held), call.input_bound + delivered)
        if not call.held:
            return
        held, call.held = call.held, 0
        with anyio.CancelScope(shield=True):
            if min(cost, held) <= 0:
                with contextlib.suppress(SettlementRejected):
                    await self._ledger.void(call.hold_id)
                return
            try:
                await self._ledger.capture(call.hold_id, min(cost, held))
            except SettlementRejected:
                await self._charge_unheld(call, min(cost, held), call.currency)

    # -- non-streaming ----------------------------------------------------------------------------------------

    async def _answer(self, call: _Call, cards: list[ProviderCard]) -> ChatReply:
        card, admitted, answer = await self._failover(call, cards, lambda card: self._call_once(card, call))
        await self._providers._outcome(card, True, admitted)
        return await self._settle(call, card, answer)

    async def _failover(
        self, call: _Call, cards: list[ProviderCard], attempt: Callable[[ProviderCard], Awaitable[_T]]
    ) -> tuple[ProviderCard, BreakerState, _T]:
        """The first card, in matrix order, whose breaker admits the call and whose ``attempt`` succeeds, with its
        admission. A failure counts against that card's breaker and the walk goes on; a skip (4xx that is no fault
        of the provider) moves on without counting; a rejection of the request is raised at once; SOS-6041 when
        no card answered. The caller reports the success (a stream only once it has ended)."""
        for card in cards:
            admitted = await self._providers._admit(card)
            if admitted is None:
                call.reasons[card.id] = "breaker open"
                continue
            call.tried.append(card.id)
            try:
                return card, admitted, await attempt(card)
            except _Failure as exc:
                call.reasons[card.id] = str(exc)
                await self._providers._outcome(card, False)
            except _Skip as exc:
                call.reasons[card.id] = str(exc)
                await self._providers._outcome(card, True, admitted)
            except ProviderRejected:
                await self._providers._outcome(card, True, admitted)
                raise
        raise self._unavailable(call)

    def _unavailable(self, call: _Call) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"no provider answered ({'; '.join(f'{k}: {v}' for k, v in call.reasons.items())})",
            details={"tried": list(call.tried), "reasons": dict(call.reasons)},
        )

    def _request(self, card: ProviderCard, call: _Call, stream: bool) -> tuple[Request, str | None]:
        adapter = WIRE_ADAPTERS[card.backend]
        base = adapter.base(card)
        self._runtime.check_url(card.backend, base, "endpoint")  # the policy may have changed since registration
        key = self._runtime.key(card.backend, card.id, base, self.tenant)
        return adapter.build(card, call.messages, call.max_tokens, stream, key), key

    async def _call_once(self, card: ProviderCard, call: _Call) -> Answer:
        if card.backend == "local":
            found = local_answer(card, call.messages, call.max_tokens)
            if found is None:
                raise _Failure("local://fail")
            return found
        request, key = self._request(card, call, False)
        response = await self._send(card, request, key)
        try:
            raw = await _read_capped(response)
        finally:
            await response.aclose()
        try:
            return WIRE_ADAPTERS[card.backend].parse(loads(raw))
        except SchemaViolation as exc:  # a repeated key (`usage`, `content`) has no one reading: nothing is charged
            raise _Failure(f"a malformed answer ({_repeated(exc)})") from None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Failure("a malformed answer") from None

    async def _send(self, card: ProviderCard, request: Request, key: str | None) -> httpx.Response:
        client, h = self._runtime.client, http()
        built = client.build_request("POST", request.url, headers=request.headers, json=request.body)
        built.extensions["timeout"] = h.Timeout(_timeout_s(card)).as_dict()
        try:
            response = await client.send(built, stream=True)
        except h.TimeoutException:
            raise _Failure("timed out") from None
        except h.HTTPError as exc:
            raise _Failure(f"connection failed ({type(exc).__name__})") from None
        status = response.status_code
        if status < 300:
            return response
        body = (await _read_capped(response, 2000)).decode("utf-8", errors="replace")
        await response.aclose()
        if key:
            body = body.replace(key, "***")
        if status >= 500 or status == 408:
            raise _Failure(f"HTTP {status}")
        if status in (401, 403, 404, 429):
            raise _Skip(f"HTTP {status}")
        raise ProviderRejected(
            f"provider {card.id!r} refused the request (HTTP {status})",
            details={"provider": card.id, "status": status, "body": body[:500]},
        )

    async def _settle(self, call: _Call, card: ProviderCard, answer: Answer) -> ChatReply:
        price = call.prices[card.id] if card.id in call.prices else await self._ledger.price(card.id, card.model)
        if price is not None:
            cost, currency = price.cost_micros(answer.input_tokens, answer.output_tokens, 0), price.currency
        else:
            cost, currency = card.cost_per_call_estimate_micros or 0, call.currency
        if call.agent is not None:
            cost = await self._capture(call, cost, currency)
        await self._settle_budget(call, cost, answer.input_tokens + answer.output_tokens)
        await self._meter(call, card, answer, cost, currency)
        reply = ChatReply(
            id=call.call_id,
            text=answer.text,
            provider=card.id,
            model=card.model,
            usage=ChatUsage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens),
            cost_micros=cost,
            currency=currency,
            tried=tuple(call.tried),
        )
        await self._store.finish_call(
            self.tenant, call.call_id, call.token, reply.model_dump_json().encode(), _now(), CALL_KEEP_S
        )
        return reply

    async def _capture(self, call: _Call, cost: int, currency: str) -> int:
        """Post the call's cost from its hold as ``engine:<call id>`` (the rest is released) and return what was
        charged: at most the hold. An earlier attempt that already posted that id leaves this one paying under
        its own hold's capture id, so every delivered answer is paid; a hold that is gone or short is made up by
        :meth:`_charge_unheld` (the cost still counts against the budgets and is metered)."""
        held, call.held = call.held, 0
        if held <= 0 or currency != call.currency:
            if held:
                with anyio.CancelScope(shield=True):
                    await self._ledger.void(call.hold_id)
            return 0
        cost = min(cost, held)
        with anyio.CancelScope(shield=True):
            if cost <= 0:
                await self._ledger.void(call.hold_id)
                return 0
            try:
                try:
                    await self._ledger.capture(call.hold_id, cost, id=f"engine:{call.call_id}")
                except IdempotencyConflict:
                    await self._ledger.capture(call.hold_id, cost)
            except SettlementRejected:
                await self._charge_unheld(call, cost, currency)
        return cost

    async def _charge_unheld(self, call: _Call, cost: int, currency: str) -> None:
        """Charge ``cost`` for delivered text whose hold could not be captured (it was released or settled by
        someone else): what was already posted from the hold counts, the rest is transferred from the agent as
        ``engine:<call id>:charge:<attempt>``. What the agent cannot pay is kept in ``call.unpaid`` (metered) and
        audited, never dropped."""
        if call.agent is None:
            return
        hold = await self._ledger.get_transfer(call.hold_id)
        posted = hold.captured if hold.ok and hold.state == "posted" else 0
        rest = cost - posted
        if rest <= 0:
            return
        try:
            await self._ledger.transfer(
                id=f"engine:{call.call_id}:charge:{call.attempt}",
                debit=call.agent,
                credit=USAGE_ACCOUNT,
                amount=rest,
                currency=currency,
                reason=f"chat {call.call_id} delivered without its hold"[:200],
            )
        except (InsufficientFunds, WalletNotFound, IdempotencyConflict) as exc:
            call.unpaid = rest
            await self._unpaid(call, rest, currency, exc.code)

    async def _unpaid(self, call: _Call, amount: int, currency: str, code: str) -> None:
        """Record in the tenant's audit chain that ``amount`` of a delivered chat could not be charged."""
        if self._ledger.audit is not None:
            details = {"call_id": call.call_id, "hold_id": call.hold_id, "unpaid_micros": amount, "currency": currency}
            await self._ledger.audit(
                "engine.unpaid", actor="kernel", resource=str(call.agent), outcome=code, details=details
            )

    async def _meter(self, call: _Call, card: ProviderCard, answer: Answer, cost: int, currency: str) -> None:
        event = UsageEvent(
            id=usage_event_id(self.tenant, call.call_id),
            tenant=self.tenant,
            provider=card.id,
            model=card.model,
            endpoint="engine.chat",
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            cost_micros=cost,
            cost_currency=currency,
            metadata={"call_id": call.call_id, "agent": call.agent}
            | ({"unpaid_micros": call.unpaid} if call.unpaid else {}),
        )
        try:
            await self._ledger.record_usage(event)
        except IdempotencyConflict:
            # an earlier attempt of this call (its claim lapsed) or an admin wrote that id: keep this attempt's own
            attempt = usage_event_id(self.tenant, f"{call.call_id}\x00{call.attempt}")
            metadata = {**(event.metadata or {}), "attempt": call.attempt}
            await self._ledger.record_usage(event.model_copy(update={"id": attempt, "metadata": metadata}))

    # -- streaming --------------------------------------------------------------------------------------------

    async def _open_stream(self, call: _Call, cards: list[ProviderCard]) -> ChatStream:
        who = call.agent or UNCHARGED
        try:
            card, _, opened = await self._failover(call, cards, lambda card: self._open_one(card, call))
            return self._stream(call, card, opened)
        except BaseException:
            await self._release_hold(call)
            with anyio.CancelScope(shield=True):
                await self._store.release_call(self.tenant, call.call_id, call.token)
            self._runtime.leave(self.tenant, who)
            raise

    def _stream(self, call: _Call, card: ProviderCard, opened: _Opened) -> ChatStream:
        slot = _Slot(self._runtime, self.tenant, call.agent or UNCHARGED)

        async def abandon() -> None:  # closed before its first piece was read: nothing was delivered
            with anyio.CancelScope(shield=True):
                await opened.aclose()
                await self._store.release_call(self.tenant, call.call_id, call.token)
            await self._release_hold(call)
            slot.leave()

        holder: list[weakref.ref[ChatStream]] = []  # weak: a dropped stream is freed at once, with no cycle
        stream = ChatStream(self._pieces(call, card, opened, holder, slot), card.id, tuple(call.tried), abandon, slot)
        holder.append(weakref.ref(stream))
        return stream

    async def _open_one(self, card: ProviderCard, call: _Call) -> _Opened:
        """``card``'s answer up to its first piece: until a piece is in hand a failure fails over, so an attempt
        that delivered nothing is never committed to (nor charged)."""
        state = StreamState()
        if card.backend == "local":
            return await _first_piece(card, None, _local_pieces(await self._call_once(card, call), state), state)
        request, key = self._request(card, call, True)
        response = await self._send(card, request, key)
        return await _first_piece(card, response, _sse_pieces(card, response, state), state)

    async def _pieces(
        self,
        call: _Call,
        card: ProviderCard,
        opened: _Opened,
        holder: list[weakref.ref[ChatStream]],
        slot: _Slot,
    ) -> AsyncIterator[str]:
        state, finished, delivered = opened.state, False, 0
        deadline = _now() + STREAM_S_MAX
        try:
            piece = opened.first
            while piece is not None:
                if _now() > deadline:
                    raise _Failure(f"the answer ran past {STREAM_S_MAX} s")
                state.parts.append(piece)
                delivered += len(piece.encode("utf-8", errors="surrogatepass"))
                yield piece
                piece = await anext(opened.source, None)
            finished = True
        except _Failure as exc:
            await self._providers._outcome(card, False)
            raise ProviderUnavailable(
                f"provider {card.id!r} failed mid-stream: {exc}", details={"provider": card.id}
            ) from None
        finally:
            with anyio.CancelScope(shield=True):
                await opened.aclose()
                if not finished:
                    await self._charge_delivered(call, card, delivered)
                    await self._store.release_call(self.tenant, call.call_id, call.token)
                slot.leave()
        await self._providers._outcome(card, True)
        answer = Answer("".join(state.parts), state.input_tokens, state.output_tokens)
        try:
            reply = await self._settle(call, card, answer)
            stream = holder[0]()
            if stream is not None:
                stream.reply = reply
        except BaseException:
            await self._release_hold(call)
            with anyio.CancelScope(shield=True):
                await self._store.release_call(self.tenant, call.call_id, call.token)
            raise


class _Opened:
    """A provider's streamed answer with its first piece in hand (``first`` is None: it ended with none)."""

    def __init__(
        self, response: httpx.Response | None, source: AsyncGenerator[str, None], state: StreamState, first: str | None
    ) -> None:
        self.response, self.source, self.state, self.first = response, source, state, first

    async def aclose(self) -> None:
        """Stop reading the provider (idempotent)."""
        await self.source.aclose()
        if self.response is not None:
            await self.response.aclose()


async def _first_piece(
    card: ProviderCard, response: httpx.Response | None, source: AsyncGenerator[str, None], state: StreamState
) -> _Opened:
    """Read ``source`` to its first piece within the card's timeout (the claim's lease counts on it)."""
    opened = _Opened(response, source, state, None)
    try:
        with anyio.fail_after(_timeout_s(card)):
            opened.first = await anext(source, None)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await opened.aclose()
        if isinstance(exc, TimeoutError):
            raise _Failure("timed out before its first piece") from None
        raise
    return opened


async def _local_pieces(answer: Answer, state: StreamState) -> AsyncGenerator[str, None]:
    state.input_tokens, state.output_tokens = answer.input_tokens, answer.output_tokens
    words = answer.text.split(" ")
    for i, word in enumerate(words):
        yield word if i == len(words) - 1 else word + " "


async def _sse_pieces(card: ProviderCard, response: httpx.Response, state: StreamState) -> AsyncGenerator[str, None]:
    adapter, size, h = WIRE_ADAPTERS[card.backend], 0, http()
    try:
        async for line in response.aiter_lines():
            size += len(line)
            if size > REPLY_BYTES_MAX:
                raise _Failure(f"the answer is over {REPLY_BYTES_MAX} bytes")
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            piece = adapter.event(loads(data), state)
            if piece:
                yield piece
    except h.TimeoutException:
        raise _Failure("timed out") from None
    except h.HTTPError as exc:
        raise _Failure(f"connection failed ({type(exc).__name__})") from None
    except SchemaViolation as exc:
        raise _Failure(f"a malformed event ({_repeated(exc)})") from None
    except (ValueError, AttributeError, TypeError):
        raise _Failure("a malformed event") from None


def _same_request(call: _Call, claim: CallClaim) -> None:
    """Refuse (SOS-4009, naming the id) a request other than the one that holds or finished ``call``'s id; a claim
    recorded without a digest answers as before."""
    held = None if claim.token is None else claim.token.partition(".")[2]
    if claim.outcome != "claimed" and held and held != call.digest:
        raise IdempotencyConflict(
            f"call id {call.call_id!r} was used for another request (messages, model, tier, max_tokens, agent or "
            "stream differ); use a new id",
            details={"id": call.call_id},
        )


def _repeated(refusal: SchemaViolation) -> str:
    """Where a provider's answer repeated a key, for the call's reasons."""
    return f"repeated key at {refusal.details['errors'][0]['loc']}"


async def _read_capped(response: httpx.Response, cap: int = REPLY_BYTES_MAX) -> bytes:
    chunks, size, h = [], 0, http()
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                if cap < REPLY_BYTES_MAX:
                    break  # an error body: its start is enough
                raise _Failure(f"the answer is over {REPLY_BYTES_MAX} bytes")
            chunks.append(chunk)
    except h.TimeoutException:
        raise _Failure("timed out") from None
    except h.HTTPError as exc:
        raise _Failure(f"connection failed ({type(exc).__name__})") from None
    return b"".join(chunks)


def _replayed_stream(reply: ChatReply) -> ChatStream:
    async def once() -> AsyncIterator[str]:
        yield reply.text

    stream = ChatStream(once(), reply.provider, reply.tried)
    stream.reply = reply
    return stream
