"""The service surfaces, as protocols: what a kernel session and a remote ``MumegaClient`` both offer.

One protocol per service (:class:`BusAPI`, :class:`RegistryAPI`, :class:`LedgerAPI`, :class:`SkillsAPI`), one for
a tenant's four services (:class:`ServicesAPI`) and one for the whole handle (:class:`SessionAPI`). ``Session``
(in-process, ``await kernel.session(token)``) and ``mumega_sdk.MumegaClient`` (over HTTP) are both checked against
them by mypy (see the bottom of this module and of ``mumega_sdk.client``), so code written against ``SessionAPI``
runs unchanged on either, with the same arguments, results and exceptions. The trusted in-process services
(``kernel.bus``, ``kernel.tenant(slug)``) satisfy them as well.

The signatures are those of the trusted services; a session and the client spell them out too (a test compares
every parameter). Where one takes ``**options`` (``announce``'s context, usage filters) it forwards them to the
service: an unknown option is refused (``TypeError`` in-process, SOS-4005 remotely).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime
    from types import TracebackType

    from .audit import AuditRecord, AuditReport, Checkpoint
    from .bus import DeadLetter, PublishReceipt
    from .contracts import AgentCard, ChunkMessage, Message, ProviderCard, SendMessage, SkillCard, UsageEvent
    from .governance import Approval, PolicyCheck, PolicyInfo
    from .identity.capability import Capability
    from .identity.keys import PublicKey
    from .identity.models import Principal
    from .ledger import Account, Balance, Price, Rate, Transfer, Transmutation, UsageSummaryRow
    from .memory import Hit, MemoryRecord, NamespaceInfo
    from .providers import ChatReply, ProviderHealth
    from .registry import AgentStatus, RegisteredAgent
    from .skills import Invocation
    from .tasks import Board, Claim, Task

__all__ = [
    "AuditAPI",
    "BusAPI",
    "ChatStreamAPI",
    "DeliveryAPI",
    "EngineAPI",
    "GovernanceAPI",
    "LedgerAPI",
    "MemoryAPI",
    "ProvidersAPI",
    "RegistryAPI",
    "ServicesAPI",
    "SessionAPI",
    "SkillsAPI",
    "SubscriptionAPI",
    "TasksAPI",
]


@runtime_checkable
class DeliveryAPI(Protocol):
    """One delivery of a message to a subscription: ack it once processed, or nack it to have it again."""

    @property
    def message(self) -> Message: ...
    @property
    def attempt(self) -> int: ...
    @property
    def position(self) -> str: ...
    @property
    def lease_token(self) -> str: ...
    async def ack(self) -> bool: ...
    async def nack(self, delay_s: float = 0.0, *, reason: str | None = None) -> bool: ...
    async def reply(
        self,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt: ...


class SubscriptionAPI(Protocol):
    """``async with bus.subscribe(address) as sub: async for delivery in sub: ...``."""

    @property
    def address(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def consumer(self) -> str: ...
    async def open(self) -> SubscriptionAPI: ...
    async def receive(self, timeout_s: float | None = None) -> DeliveryAPI | None: ...
    async def aclose(self) -> None: ...
    async def __aenter__(self) -> SubscriptionAPI: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def __aiter__(self) -> AsyncIterator[DeliveryAPI]: ...


class BusAPI(Protocol):
    """The bus: publish (idempotent by ``message_id``), subscribe (at-least-once with ack), history, dead letters."""

    async def publish(
        self, message: Message | Mapping[str, Any] | bytes | str, *, receipts: bool = False, chunking: bool = True
    ) -> PublishReceipt: ...
    async def publish_many(
        self, messages: Sequence[Message | Mapping[str, Any] | bytes | str], *, receipts: bool = False
    ) -> list[PublishReceipt]: ...
    async def send(
        self,
        source: str,
        target: str,
        text: str,
        *,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
        reply_to: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        trace_id: str | None = None,
        receipts: bool = False,
    ) -> PublishReceipt: ...
    async def announce(
        self, source: str, text: str | None = None, *, target: str = "sos:channel:global", **context: Any
    ) -> PublishReceipt: ...
    async def wake(
        self,
        source: str,
        target: str,
        text: str,
        *,
        priority: Literal["critical", "high", "normal", "low"] = "normal",
        ref_message_id: str | None = None,
    ) -> PublishReceipt: ...
    async def ask(
        self, source: str, target: str, question: str, *, timeout_s: float = 30.0, correlation_id: str | None = None
    ) -> SendMessage: ...
    async def reply(
        self,
        to: Message,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt: ...
    def split(self, message: Message) -> list[ChunkMessage]: ...
    def subscribe(
        self,
        address: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 5,
        prefetch: int = 16,
        start: Literal["earliest", "latest"] | None = None,
    ) -> SubscriptionAPI: ...
    async def history(self, address: str, *, after: str | None = None, limit: int = 100) -> list[Message]: ...
    async def history_entries(
        self, address: str, *, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, Message]]: ...
    async def dead_letters(self, address: str, *, group: str | None = None, limit: int = 100) -> list[DeadLetter]: ...
    async def pending(self, address: str, *, group: str | None = None) -> int: ...
    async def replay(self, dead_letter: DeadLetter) -> PublishReceipt: ...


class RegistryAPI(Protocol):
    """The agent registry: cards, heartbeats, status and search."""

    async def register(
        self,
        card: AgentCard | Mapping[str, Any],
        *,
        public_key: PublicKey | None = None,
        endpoints: Sequence[Mapping[str, str]] = (),
        signature: str | None = None,
        a2a: bool = False,
    ) -> RegisteredAgent: ...
    async def heartbeat(self, name: str) -> RegisteredAgent: ...
    async def deregister(self, name: str) -> None: ...
    async def get(self, name: str) -> RegisteredAgent: ...
    async def status(self, name: str) -> AgentStatus | None: ...
    async def find(
        self,
        *,
        skill: str | None = None,
        role: str | None = None,
        squad: str | None = None,
        tool: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[RegisteredAgent]: ...


class LedgerAPI(Protocol):
    """The ledger: integer micros, double entry, every write idempotent by a client-chosen id."""

    async def open_account(self, owner: str, currency: str, allow_negative: bool = False) -> Account: ...
    async def balance(self, owner: str, currency: str) -> Balance: ...
    async def balances(self) -> list[Balance]: ...
    async def transfer(
        self,
        *,
        id: str,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        code: int = 0,
        reason: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Transfer: ...
    async def transfer_many(self, transfers: Sequence[Mapping[str, Any]]) -> list[Transfer]: ...
    async def hold(
        self,
        *,
        id: str,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        timeout_s: int,
        code: int = 0,
        reason: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Transfer: ...
    async def capture(self, hold_id: str, amount: int | None = None, *, id: str | None = None) -> Transfer: ...
    async def void(self, hold_id: str, *, id: str | None = None) -> Transfer: ...
    async def get_transfer(self, id: str) -> Transfer: ...
    async def transmute(
        self,
        *,
        id: str,
        owner: str,
        amount: int,
        from_currency: str,
        to_currency: str,
        rate_num: int | None = None,
        rate_den: int | None = None,
        exchange: str | None = None,
    ) -> Transmutation: ...
    async def set_rate(
        self,
        from_currency: str,
        to_currency: str,
        *,
        rate_num: int,
        rate_den: int,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        exchange: str = "system:exchange",
    ) -> Rate: ...
    async def rate(self, from_currency: str, to_currency: str, *, at: datetime | None = None) -> Rate | None: ...
    async def history(self, owner: str, currency: str, *, after: int = 0, limit: int = 100) -> list[Transfer]: ...
    async def check(self) -> None: ...
    async def set_price(
        self,
        provider: str,
        model: str,
        *,
        input_per_mtok_micros: int,
        output_per_mtok_micros: int = 0,
        per_image_micros: int = 0,
        currency: str = "USD",
    ) -> Price: ...
    async def price(self, provider: str, model: str) -> Price | None: ...
    async def record_usage(self, event: UsageEvent | Mapping[str, Any], *, settle: bool = False) -> UsageEvent: ...
    async def usage(
        self,
        *,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[UsageEvent]: ...
    async def usage_summary(
        self,
        *,
        group_by: Sequence[str] = ("provider", "model"),
        window: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummaryRow]: ...


class SkillsAPI(Protocol):
    """The skills marketplace: immutable versions, verification, paid invocations."""

    async def publish(
        self,
        card: SkillCard | Mapping[str, Any],
        *,
        publisher: str | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> SkillCard: ...
    async def get(self, skill_id: str, version: str | None = None) -> SkillCard: ...
    async def versions(self, skill_id: str) -> list[str]: ...
    async def find(
        self,
        *,
        tag: str | None = None,
        backend: str | None = None,
        author: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[SkillCard]: ...
    async def marketplace(self, *, limit: int = 50, offset: int = 0) -> list[SkillCard]: ...
    async def ancestors(self, skill_id: str) -> list[SkillCard]: ...
    async def descendants(self, skill_id: str) -> list[SkillCard]: ...
    async def verify(
        self,
        skill_id: str,
        version: str,
        *,
        verifier: str,
        status: Literal["auto_verified", "human_verified", "disputed"],
        reason: str | None = None,
        sample_output_refs: Sequence[str] = (),
    ) -> SkillCard: ...
    async def resolve_dispute(
        self, skill_id: str, version: str, *, verifier: str, status: Literal["auto_verified", "human_verified"]
    ) -> SkillCard: ...
    async def record_invocation(
        self,
        skill_id: str,
        version: str | None = None,
        *,
        caller: str,
        tenant: str,
        invocation_id: str,
        max_price_micros: int | None = None,
    ) -> Invocation: ...


class ProvidersAPI(Protocol):
    """The provider matrix: cards, and each provider's shared circuit breaker."""

    async def register(self, card: ProviderCard | Mapping[str, Any]) -> ProviderCard: ...
    async def remove(self, provider_id: str) -> None: ...
    async def list(self, *, tier: str | None = None) -> list[ProviderCard]: ...
    async def health(self) -> dict[str, ProviderHealth]: ...
    async def probe(self) -> dict[str, ProviderHealth]: ...


class ChatStreamAPI(Protocol):
    """A streamed chat: its text pieces, then ``reply`` (set once the stream ended). ``provider`` is the provider
    the stream is committed to (the first that delivered a piece) and ``tried`` every provider called, in order."""

    provider: str
    reply: ChatReply | None
    tried: tuple[str, ...]

    def __aiter__(self) -> AsyncIterator[str]: ...
    async def aclose(self) -> None: ...
    async def collect_reply(self) -> ChatReply: ...


class EngineAPI(Protocol):
    """Chat through the provider matrix, charged once per call id to the session's agent."""

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
    ) -> ChatStreamAPI: ...
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
    ) -> ChatReply | ChatStreamAPI: ...


class TasksAPI(Protocol):
    """Squad tasks: fenced claims, evidence, review gates, escrowed bounties."""

    async def create(
        self,
        title: str,
        *,
        id: str | None = None,
        description: str = "",
        priority: Literal["critical", "high", "medium", "low"] = "medium",
        reviewers: Sequence[str] = (),
        approvals_required: int = 1,
        bounty: int = 0,
        currency: str = "USD",
        funded_by: str | None = None,
        blocked_by: Sequence[str] = (),
        lease_s: int = 300,
        expires_in_s: int | None = None,
        reviewer_fee: int = 0,
        created_by: str | None = None,
    ) -> Task: ...
    async def get(self, task_id: str) -> Task: ...
    async def list(self, status: str | None = None, *, limit: int = 100) -> list[Task]: ...
    async def board(self) -> Board: ...
    async def claim(self, task_id: str, *, agent: str | None = None, lease_s: int | None = None) -> Claim: ...
    async def heartbeat(self, task_id: str, claim_token: str) -> Task: ...
    async def submit(
        self,
        task_id: str,
        claim_token: str,
        evidence: Sequence[Mapping[str, Any]] = (),
        result: Mapping[str, Any] | None = None,
    ) -> Task: ...
    async def block(self, task_id: str, claim_token: str, reason: str, on: Sequence[str] = ()) -> Task: ...
    async def review(
        self,
        task_id: str,
        *,
        reviewer: str | None = None,
        verdict: Literal["approve", "reject", "needs_changes"] = "approve",
        reasons: Sequence[str] = (),
    ) -> Task: ...
    async def cancel(self, task_id: str) -> Task: ...
    async def sweep(self, *, limit: int = 1000) -> int: ...


class MemoryAPI(Protocol):
    """Semantic memory per tenant and agent (see :mod:`sos_kernel.memory.service`)."""

    async def remember(
        self,
        namespace: str,
        text: str,
        *,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: Sequence[float] | None = None,
        ttl_s: float | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> MemoryRecord: ...
    async def remember_many(
        self,
        namespace: str,
        memories: Sequence[Mapping[str, Any]],
        *,
        capability: Sequence[Capability] | None = None,
    ) -> list[MemoryRecord]: ...
    async def forget(self, namespace: str, id: str, *, capability: Sequence[Capability] | None = None) -> bool: ...
    async def remember_message(
        self,
        message: Message,
        *,
        namespace: str | None = None,
        ttl_s: float | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> MemoryRecord: ...
    async def recall(
        self,
        namespace: str,
        query: str | Sequence[float],
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> list[Hit]: ...
    async def get(self, namespace: str, id: str, *, capability: Sequence[Capability] | None = None) -> MemoryRecord: ...
    async def namespaces(self) -> list[NamespaceInfo]: ...
    async def list(
        self,
        namespace: str,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 100,
        after: str | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> list[MemoryRecord]: ...


class GovernanceAPI(Protocol):
    """Policies, approvals and the policy's answer about an action (see ``docs/governance.md``)."""

    async def set_policy(self, tenant: str, policy: dict[str, Any] | str) -> PolicyInfo: ...
    async def get_policy(self, tenant: str) -> dict[str, Any] | None: ...
    async def remove_policy(self, tenant: str) -> bool: ...
    async def check(self, action: str, resource: str | None = None, agent: str | None = None) -> PolicyCheck: ...
    async def pending(self) -> list[Approval]: ...
    async def approve(self, id: str, reason: str = "", *, reviewer: str | None = None) -> Approval: ...
    async def deny(self, id: str, reason: str = "", *, reviewer: str | None = None) -> Approval: ...


class AuditAPI(Protocol):
    """The tenant's audit chain (see ``docs/audit.md``)."""

    async def events(
        self,
        tenant: str,
        limit: int = 100,
        after: int = 0,
        kind: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> list[AuditRecord]: ...
    async def verify(self) -> AuditReport: ...
    async def checkpoint(self) -> Checkpoint | None: ...
    async def export(self, tenant: str, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]: ...


class ServicesAPI(Protocol):
    """One tenant's services: a trusted ``kernel.tenant(slug)``, a ``Session`` or a ``MumegaClient``."""

    @property
    def bus(self) -> BusAPI: ...
    @property
    def registry(self) -> RegistryAPI: ...
    @property
    def ledger(self) -> LedgerAPI: ...
    @property
    def skills(self) -> SkillsAPI: ...
    @property
    def providers(self) -> ProvidersAPI: ...
    @property
    def engine(self) -> EngineAPI: ...
    @property
    def tasks(self) -> TasksAPI: ...
    @property
    def memory(self) -> MemoryAPI: ...
    @property
    def governance(self) -> GovernanceAPI: ...
    @property
    def audit(self) -> AuditAPI: ...


class SessionAPI(ServicesAPI, Protocol):
    """A principal's handle: ``Session`` in-process, ``MumegaClient`` remotely."""

    @property
    def tenant(self) -> str: ...
    @property
    def agent(self) -> str | None: ...
    @property
    def principal(self) -> Principal: ...
    async def refresh(self) -> Principal: ...
