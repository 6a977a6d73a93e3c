"""Sessions: the kernel's API scoped to one tenant and one principal, every call checked first.

``session = await kernel.session(token)`` gives ``session.bus``, ``session.registry``, ``session.ledger`` and
``session.skills`` with
the same methods, arguments, results and errors as the trusted kernel's, restricted to the token's tenant and
checked against its scopes before anything is read or written. Checks fail closed:

- the token must still be valid on every call (revocation and suspension apply within ``TOKEN_CACHE_TTL_S``);
- a session bound to ``agent:X`` publishes only as ``agent:X`` (another ``source`` is refused), reads only its own
  inbox (channels are shared), moves money only out of its own accounts, and registers only itself;
- ledger ids (transfers, holds, captures, voids, transmutes, skill invocations) that a session without
  ``ledger:admin`` chooses live in its agent's namespace (``X/<id>``), so no one else can squat or probe them; a
  transfer read by a non-party answers exactly as a missing one (SOS-4040);
- tenant-wide operations (other agents' inboxes and accounts, minting, exchange rates, prices, usage reports,
  balances of the whole tenant, ``check``) need the ``admin`` or ``ledger:admin`` scope;
- no call can reach another tenant's data: each session's services are the tenant's own.

Every refusal raises :class:`~sos_kernel.errors.Forbidden` (SOS-5004), increments ``session.denials`` and is
passed to the kernel's denial hooks (``kernel.on_denial``), where an audit trail can subscribe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from .bus import Bus, DeadLetter, PublishReceipt, Subscription
from .contracts import AgentCard, ChunkMessage, Message, SendMessage, SkillCard
from .errors import Forbidden, NotFound, SettlementRejected
from .identity.capability import Capability
from .identity.keys import PublicKey
from .identity.models import Principal, PrincipalView
from .ledger import EXCHANGE_ACCOUNT, Account, Balance, Ledger, Price, Rate, Transfer, Transmutation
from .registry import AgentStatus, RegisteredAgent, Registry
from .skills import Invocation, Skills

if TYPE_CHECKING:
    from datetime import datetime

    from .contracts import UsageEvent
    from .kernel import Kernel

__all__ = [
    "Session",
    "SessionBus",
    "SessionLedger",
    "SessionRegistry",
    "SessionSkills",
    "ledger_namespace",
    "scoped_id",
]


def ledger_namespace(principal: Principal) -> str | None:
    """The prefix of the ledger ids ``principal`` chooses: ``<agent name>/`` for an agent without ``ledger:admin``;
    ``None`` (the tenant-wide namespace) for ``ledger:admin`` and for a token without an agent, which cannot write."""
    if principal.allows("ledger:admin") or principal.agent is None:
        return None
    return principal.agent.removeprefix("agent:") + "/"


def scoped_id(principal: Principal, id: Any) -> Any:
    """``id`` in ``principal``'s namespace (unchanged if already in it, or if not a string: the ledger refuses it)."""
    prefix = ledger_namespace(principal)
    if prefix is None or not isinstance(id, str) or id.startswith(prefix):
        return id
    return prefix + id


class _Guard:
    """Shared checks: re-validate the token, require a scope, record denials."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def need(self, scope: str) -> Principal:
        principal = await self._session.refresh()
        if not principal.allows(scope):
            self.deny(f"needs the {scope!r} scope", scope=scope)
        return principal

    def deny(self, reason: str, **details: Any) -> NoReturn:
        self._session.denials += 1
        self._session._kernel._record_denial(self._session.principal, reason)
        raise Forbidden(f"{self._session.principal.agent or 'this token'}: {reason}", details=details)

    def own_agent(self, principal: Principal, address: str, what: str) -> None:
        if principal.admin or address == principal.agent:
            return
        self.deny(f"{what} {address!r} belongs to another agent", address=address)

    def own_or_channel(self, principal: Principal, address: str) -> None:
        if address.startswith("sos:channel:"):
            return
        self.own_agent(principal, address, "inbox")


class SessionBus(_Guard):
    """:class:`~sos_kernel.Bus` for one principal. Publishing needs ``bus:write``, reading ``bus:read``."""

    def __init__(self, session: Session, bus: Bus) -> None:
        super().__init__(session)
        self._bus = bus

    def _source(self, principal: Principal, source: str) -> None:
        if principal.admin or source == principal.agent:
            return
        self.deny(f"may not send as {source!r} (sessions send as their own agent)", source=source)

    async def publish(
        self, message: Message | Mapping[str, Any] | bytes | str, *, receipts: bool = False, chunking: bool = True
    ) -> PublishReceipt:
        """See :meth:`Bus.publish`; the message's source must be the session's agent."""
        principal = await self.need("bus:write")
        return await self._bus._publish(message, receipts, chunking, lambda m: self._source(principal, m.source))

    async def publish_many(
        self, messages: Sequence[Message | Mapping[str, Any] | bytes | str], *, receipts: bool = False
    ) -> list[PublishReceipt]:
        """See :meth:`Bus.publish_many`; every message's source must be the session's agent."""
        principal = await self.need("bus:write")
        return await self._bus._publish_many(messages, receipts, lambda m: self._source(principal, m.source))

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
    ) -> PublishReceipt:
        """See :meth:`Bus.send`."""
        self._source(await self.need("bus:write"), source)
        return await self._bus.send(
            source,
            target,
            text,
            content_type=content_type,
            reply_to=reply_to,
            correlation_id=correlation_id,
            headers=headers,
            trace_id=trace_id,
            receipts=receipts,
        )

    async def announce(
        self, source: str, text: str | None = None, *, target: str = "sos:channel:global", **context: Any
    ) -> PublishReceipt:
        """See :meth:`Bus.announce`."""
        self._source(await self.need("bus:write"), source)
        return await self._bus.announce(source, text, target=target, **context)

    async def wake(
        self,
        source: str,
        target: str,
        text: str,
        *,
        priority: Literal["critical", "high", "normal", "low"] = "normal",
        ref_message_id: str | None = None,
    ) -> PublishReceipt:
        """See :meth:`Bus.wake`."""
        self._source(await self.need("bus:write"), source)
        return await self._bus.wake(source, target, text, priority=priority, ref_message_id=ref_message_id)

    async def ask(
        self, source: str, target: str, question: str, *, timeout_s: float = 30.0, correlation_id: str | None = None
    ) -> SendMessage:
        """See :meth:`Bus.ask`."""
        self._source(await self.need("bus:write"), source)
        return await self._bus.ask(source, target, question, timeout_s=timeout_s, correlation_id=correlation_id)

    async def reply(
        self,
        to: Message,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt:
        """See :meth:`Bus.reply`; the reply is sent as the session's agent."""
        principal = await self.need("bus:write")
        sender = source or principal.agent
        if sender is not None:
            self._source(principal, sender)
        elif not principal.admin:
            self.deny("a token without an agent must name the reply's source")
        # An admin token without an agent replies as the kernel does: as the message's target.
        return await self._bus.reply(to, text, source=sender, content_type=content_type)

    def split(self, message: Message) -> list[ChunkMessage]:
        """See :meth:`Bus.split` (pure: no check needed)."""
        return self._bus.split(message)

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
    ) -> Subscription:
        """See :meth:`Bus.subscribe`; an agent session reads its own inbox and channels. Checked on entry."""
        sub = self._bus.subscribe(
            address,
            group=group,
            consumer=consumer,
            visibility_timeout_s=visibility_timeout_s,
            max_deliveries=max_deliveries,
            prefetch=prefetch,
            start=start,
        )
        original_open = sub.open

        async def guarded_open() -> Subscription:
            principal = await self.need("bus:read")
            self.own_or_channel(principal, address)
            return await original_open()

        sub.open = guarded_open  # type: ignore[method-assign]
        return sub

    async def history(self, address: str, *, after: str | None = None, limit: int = 100) -> list[Message]:
        """See :meth:`Bus.history`."""
        self.own_or_channel(await self.need("bus:read"), address)
        return await self._bus.history(address, after=after, limit=limit)

    async def history_entries(
        self, address: str, *, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, Message]]:
        """See :meth:`Bus.history_entries`."""
        self.own_or_channel(await self.need("bus:read"), address)
        return await self._bus.history_entries(address, after=after, limit=limit)

    async def dead_letters(self, address: str, *, group: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Bus.dead_letters`."""
        self.own_or_channel(await self.need("bus:read"), address)
        return await self._bus.dead_letters(address, group=group, limit=limit)

    async def replay(self, dead_letter: DeadLetter) -> PublishReceipt:
        """See :meth:`Bus.replay`."""
        self.own_or_channel(await self.need("bus:write"), dead_letter.address)
        return await self._bus.replay(dead_letter)


class SessionLedger(_Guard):
    """:class:`~sos_kernel.ledger.Ledger` for one principal: its own accounts with ``ledger:read``/``write``;
    anyone's, minting and prices with ``ledger:admin``."""

    def __init__(self, session: Session, ledger: Ledger) -> None:
        super().__init__(session)
        self._ledger = ledger

    async def _own(self, owner: str, write: bool) -> Principal:
        principal = await self.need("ledger:write" if write else "ledger:read")
        if principal.allows("ledger:admin") or owner == principal.agent:
            return principal
        self.deny(f"account {owner!r} is not the session's own", owner=owner)

    async def _admin(self) -> None:
        await self.need("ledger:admin")

    async def open_account(self, owner: str, currency: str, allow_negative: bool = False) -> Account:
        """See :meth:`Ledger.open_account`; an issuer (``allow_negative``) needs ``ledger:admin``."""
        if allow_negative:
            await self._admin()
        await self._own(owner, write=True)
        return await self._ledger.open_account(owner, currency, allow_negative)

    async def balance(self, owner: str, currency: str) -> Balance:
        """See :meth:`Ledger.balance`."""
        await self._own(owner, write=False)
        return await self._ledger.balance(owner, currency)

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
    ) -> Transfer:
        """See :meth:`Ledger.transfer`; the debit account must be the session's own, ``id`` is in its namespace."""
        principal = await self._own(debit, write=True)
        return await self._ledger.transfer(
            id=scoped_id(principal, id),
            debit=debit,
            credit=credit,
            amount=amount,
            currency=currency,
            code=code,
            reason=reason,
            metadata=metadata,
        )

    async def transfer_many(self, transfers: Sequence[Mapping[str, Any]]) -> list[Transfer]:
        """See :meth:`Ledger.transfer_many`; every debit is the session's own, every id in its namespace."""
        scoped = []
        for t in transfers:
            principal = await self._own(str(t.get("debit", "")), write=True)
            scoped.append({**t, "id": scoped_id(principal, t["id"])} if "id" in t else t)
        return await self._ledger.transfer_many(scoped)

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
    ) -> Transfer:
        """See :meth:`Ledger.hold`; the held account must be the session's own, ``id`` is in its namespace."""
        principal = await self._own(debit, write=True)
        return await self._ledger.hold(
            id=scoped_id(principal, id),
            debit=debit,
            credit=credit,
            amount=amount,
            currency=currency,
            timeout_s=timeout_s,
            code=code,
            reason=reason,
            metadata=metadata,
        )

    async def _party_transfer(self, principal: Principal, id: str) -> Transfer | None:
        """The transfer ``id`` names for ``principal`` (its own namespace first), if it is a party to it."""
        scoped = scoped_id(principal, id)
        for candidate in (scoped, id) if scoped != id else (id,):
            try:
                found = await self._ledger.get_transfer(candidate)
            except NotFound:
                continue
            if principal.allows("ledger:admin") or principal.agent in (found.debit, found.credit):
                return found
        return None

    async def _hold_of(self, hold_id: str) -> tuple[Principal, str]:
        """The session and the id of the hold it may settle: the payer's, or any for ``ledger:admin``."""
        principal = await self.need("ledger:write")
        if principal.allows("ledger:admin"):
            return principal, hold_id  # the ledger itself refuses (and records) a missing hold, as in-process
        hold = await self._party_transfer(principal, hold_id)
        if hold is None:  # missing and not the caller's answer alike
            raise SettlementRejected(f"no hold {hold_id}", details={"hold_id": hold_id})
        await self._own(hold.debit, write=True)
        return principal, hold.id

    async def capture(self, hold_id: str, amount: int | None = None, *, id: str | None = None) -> Transfer:
        """See :meth:`Ledger.capture`; only the payer of the hold (or ``ledger:admin``) settles it."""
        principal, found = await self._hold_of(hold_id)
        return await self._ledger.capture(found, amount, id=None if id is None else scoped_id(principal, id))

    async def void(self, hold_id: str, *, id: str | None = None) -> Transfer:
        """See :meth:`Ledger.void`."""
        principal, found = await self._hold_of(hold_id)
        return await self._ledger.void(found, id=None if id is None else scoped_id(principal, id))

    async def get_transfer(self, id: str) -> Transfer:
        """See :meth:`Ledger.get_transfer`; a party to the transfer or ``ledger:admin``. The session's own
        namespace is looked in first; a transfer the session is no party to is answered as a missing one."""
        principal = await self.need("ledger:read")
        found = await self._party_transfer(principal, id)
        if found is None:
            raise NotFound(f"no transfer {id}", details={"id": id})
        return found

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
    ) -> Transmutation:
        """See :meth:`Ledger.transmute`; the owner must be the session's agent. Explicit rate terms or an exchange
        other than the default need ``ledger:admin``: others convert at the rate in force."""
        if rate_num is not None or rate_den is not None or exchange not in (None, EXCHANGE_ACCOUNT):
            await self._admin()
        principal = await self._own(owner, write=True)
        return await self._ledger.transmute(
            id=scoped_id(principal, id),
            owner=owner,
            amount=amount,
            from_currency=from_currency,
            to_currency=to_currency,
            rate_num=rate_num,
            rate_den=rate_den,
            exchange=exchange,
        )

    async def set_rate(
        self,
        from_currency: str,
        to_currency: str,
        *,
        rate_num: int,
        rate_den: int,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        exchange: str = EXCHANGE_ACCOUNT,
    ) -> Rate:
        """See :meth:`Ledger.set_rate` (``ledger:admin``)."""
        await self._admin()
        return await self._ledger.set_rate(
            from_currency,
            to_currency,
            rate_num=rate_num,
            rate_den=rate_den,
            valid_from=valid_from,
            valid_until=valid_until,
            exchange=exchange,
        )

    async def rate(self, from_currency: str, to_currency: str, *, at: datetime | None = None) -> Rate | None:
        """See :meth:`Ledger.rate` (``ledger:read``)."""
        await self.need("ledger:read")
        return await self._ledger.rate(from_currency, to_currency, at=at)

    async def history(self, owner: str, currency: str, *, after: int = 0, limit: int = 100) -> list[Transfer]:
        """See :meth:`Ledger.history`."""
        await self._own(owner, write=False)
        return await self._ledger.history(owner, currency, after=after, limit=limit)

    async def balances(self) -> list[Balance]:
        """See :meth:`Ledger.balances` (``ledger:admin``)."""
        await self._admin()
        return await self._ledger.balances()

    async def check(self) -> None:
        """See :meth:`Ledger.check` (``ledger:admin``)."""
        await self._admin()
        await self._ledger.check()

    async def set_price(
        self,
        provider: str,
        model: str,
        *,
        input_per_mtok_micros: int,
        output_per_mtok_micros: int = 0,
        per_image_micros: int = 0,
        currency: str = "USD",
    ) -> Price:
        """See :meth:`Ledger.set_price` (``ledger:admin``)."""
        await self._admin()
        return await self._ledger.set_price(
            provider,
            model,
            input_per_mtok_micros=input_per_mtok_micros,
            output_per_mtok_micros=output_per_mtok_micros,
            per_image_micros=per_image_micros,
            currency=currency,
        )

    async def price(self, provider: str, model: str) -> Price | None:
        """See :meth:`Ledger.price`."""
        await self.need("ledger:read")
        return await self._ledger.price(provider, model)

    async def record_usage(self, event: UsageEvent | Mapping[str, Any], *, settle: bool = False) -> UsageEvent:
        """See :meth:`Ledger.record_usage` (``usage:write``; settling charges the tenant: ``ledger:admin``)."""
        await self.need("usage:write")
        if settle:
            await self._admin()
        return await self._ledger.record_usage(event, settle=settle)

    async def usage(self, **filters: Any) -> list[UsageEvent]:
        """See :meth:`Ledger.usage` (``ledger:admin``)."""
        await self._admin()
        return await self._ledger.usage(**filters)

    async def usage_summary(self, **options: Any) -> list[Any]:
        """See :meth:`Ledger.usage_summary` (``ledger:admin``)."""
        await self._admin()
        return await self._ledger.usage_summary(**options)


class SessionRegistry(_Guard):
    """:class:`~sos_kernel.registry.Registry` for one principal: read with ``registry:read``; an agent session
    registers, heartbeats and deregisters only itself (``registry:write``)."""

    def __init__(self, session: Session, registry: Registry) -> None:
        super().__init__(session)
        self._registry = registry

    async def _self(self, name: str) -> None:
        principal = await self.need("registry:write")
        self.own_agent(principal, f"agent:{name.removeprefix('agent:')}", "agent")

    async def register(
        self,
        card: AgentCard | Mapping[str, Any],
        *,
        public_key: PublicKey | None = None,
        endpoints: Sequence[Mapping[str, str]] = (),
        signature: str | None = None,
    ) -> RegisteredAgent:
        """See :meth:`Registry.register`."""
        name = card.name if isinstance(card, AgentCard) else str(dict(card).get("name", ""))
        await self._self(name)
        return await self._registry.register(card, public_key=public_key, endpoints=endpoints, signature=signature)

    async def heartbeat(self, name: str) -> RegisteredAgent:
        """See :meth:`Registry.heartbeat`."""
        await self._self(name)
        return await self._registry.heartbeat(name)

    async def deregister(self, name: str) -> None:
        """See :meth:`Registry.deregister`."""
        await self._self(name)
        await self._registry.deregister(name)

    async def get(self, name: str) -> RegisteredAgent:
        """See :meth:`Registry.get`."""
        await self.need("registry:read")
        return await self._registry.get(name)

    async def status(self, name: str) -> AgentStatus | None:
        """See :meth:`Registry.status`."""
        await self.need("registry:read")
        return await self._registry.status(name)

    async def find(
        self,
        *,
        skill: str | None = None,
        role: str | None = None,
        squad: str | None = None,
        tool: str | None = None,
        status: AgentStatus | None = None,
    ) -> list[RegisteredAgent]:
        """See :meth:`Registry.find`."""
        await self.need("registry:read")
        return await self._registry.find(skill=skill, role=role, squad=squad, tool=tool, status=status)


class SessionSkills(_Guard):
    """:class:`~sos_kernel.skills.Skills` for one principal: reading with ``skills:read``; publishing only the
    agent's own skills (``skills:publish``); invocations paid from the agent's own account in the session's tenant
    (``skills:invoke``); verdicts with ``skills:verify``."""

    def __init__(self, session: Session, skills: Skills) -> None:
        super().__init__(session)
        self._skills = skills

    async def publish(
        self,
        card: SkillCard | Mapping[str, Any],
        *,
        publisher: str | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> SkillCard:
        """See :meth:`Skills.publish`; the session's agent is the publisher (the default for an agent session), so
        a capability chain counts only when the session's agent is its leaf's subject (admin excepted)."""
        principal = await self.need("skills:publish")
        if not principal.admin and principal.agent is None:
            self.deny("publishing needs a token bound to an agent (or the admin scope)")
        if publisher is None and not principal.admin:
            publisher = principal.agent
        if not principal.admin and publisher != principal.agent:
            self.deny("may only publish as itself")
        return await self._skills.publish(card, publisher=publisher, capability=capability)

    async def record_invocation(
        self, skill_id: str, version: str | None = None, *, caller: str, tenant: str, invocation_id: str
    ) -> Invocation:
        """See :meth:`Skills.record_invocation`; the caller is the session's agent, the tenant the session's, and
        ``invocation_id`` (which names ledger transfers) is in the agent's namespace (see :func:`scoped_id`)."""
        principal = await self.need("skills:invoke")
        if tenant != principal.tenant:
            self.deny(f"may not record invocations for tenant {tenant!r}", tenant=tenant)
        self.own_agent(principal, caller, "account")
        return await self._skills.record_invocation(
            skill_id, version, caller=caller, tenant=tenant, invocation_id=scoped_id(principal, invocation_id)
        )

    async def verify(
        self,
        skill_id: str,
        version: str,
        *,
        verifier: str,
        status: Literal["auto_verified", "human_verified", "disputed"],
        reason: str | None = None,
        sample_output_refs: Sequence[str] = (),
    ) -> SkillCard:
        """See :meth:`Skills.verify`; the verifier is the session's agent."""
        principal = await self.need("skills:verify")
        self.own_agent(principal, verifier, "verifier")
        return await self._skills.verify(
            skill_id, version, verifier=verifier, status=status, reason=reason, sample_output_refs=sample_output_refs
        )

    async def resolve_dispute(
        self, skill_id: str, version: str, *, verifier: str, status: Literal["auto_verified", "human_verified"]
    ) -> SkillCard:
        """See :meth:`Skills.resolve_dispute`."""
        principal = await self.need("skills:verify")
        self.own_agent(principal, verifier, "verifier")
        return await self._skills.resolve_dispute(skill_id, version, verifier=verifier, status=status)

    async def get(self, skill_id: str, version: str | None = None) -> SkillCard:
        """See :meth:`Skills.get`."""
        await self.need("skills:read")
        return await self._skills.get(skill_id, version)

    async def versions(self, skill_id: str) -> list[str]:
        """See :meth:`Skills.versions`."""
        await self.need("skills:read")
        return await self._skills.versions(skill_id)

    async def find(
        self,
        *,
        tag: str | None = None,
        backend: str | None = None,
        author: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[SkillCard]:
        """See :meth:`Skills.find`."""
        await self.need("skills:read")
        return await self._skills.find(tag=tag, backend=backend, author=author, status=status, listed=listed)

    async def marketplace(self, *, limit: int = 50, offset: int = 0) -> list[SkillCard]:
        """See :meth:`Skills.marketplace`."""
        await self.need("skills:read")
        return await self._skills.marketplace(limit=limit, offset=offset)

    async def ancestors(self, skill_id: str) -> list[SkillCard]:
        """See :meth:`Skills.ancestors`."""
        await self.need("skills:read")
        return await self._skills.ancestors(skill_id)

    async def descendants(self, skill_id: str) -> list[SkillCard]:
        """See :meth:`Skills.descendants`."""
        await self.need("skills:read")
        return await self._skills.descendants(skill_id)


class Session(PrincipalView):
    """A principal's view of the kernel: ``.bus``, ``.registry``, ``.ledger``, ``.tenant``, ``.agent``."""

    def __init__(self, kernel: Kernel, principal: Principal, digest: str) -> None:
        self._kernel = kernel
        self._digest = digest
        self._principal = principal
        self.denials = 0
        view = kernel.tenant(principal.tenant)
        self.bus = SessionBus(self, view.bus)
        self.ledger = SessionLedger(self, view.ledger)
        self.registry = SessionRegistry(self, view.registry)
        self.skills = SessionSkills(self, view.skills)

    @property
    def principal(self) -> Principal:
        """Who the session acts as, as of its last check."""
        return self._principal

    async def refresh(self) -> Principal:
        """Re-validate the token now: its principal, or SOS-5002 (revoked), 5003 (expired), 5006 (tenant not
        active). Every session call does this first."""
        self._principal = await self._kernel._auth.principal_for_digest(self._digest)
        return self._principal

    def __repr__(self) -> str:
        return f"Session(tenant={self.tenant!r}, agent={self.agent!r})"
