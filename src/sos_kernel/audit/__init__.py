"""The audit chain: every security-relevant event of a tenant as one hash-chained, checkpointed record.

``await kernel.audit.verify()`` walks the tenant's chain and names the first record it does not vouch for (edited,
deleted, inserted or reordered) and any checkpoint whose signature or digest disagrees; ``events(tenant,
limit=100, ...)`` pages records with filters; ``export(tenant)`` gives them as CloudEvents 1.0 (one JSON object
per record: write one per line for JSON Lines). Records are appended by the kernel only (:meth:`Audit.record` is
not an operation: no session or client can write one); what the kernel records is listed in
:data:`AUDITED_OPERATIONS` (and :data:`NOT_AUDITED` says why the rest are not security-relevant).

Guarantees: appends never fork a chain, under any concurrency of processes (each is one transaction on SQLite,
a ``WATCH``/``MULTI`` on the head on Redis). A rewrite of records up to a signed checkpoint is detected, even with
every digest recomputed; records after the newest checkpoint are protected by their digests only (an attacker who
can write the store and recompute SHA-256 could append forged records after it — take checkpoints as often as
that matters: ``checkpoint()``, and every ``AUDIT_CHECKPOINT_EVERY`` records).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from .._text import escaped
from ..errors import InvalidArgument
from ..identity.keys import AgentKey
from ..operations import Wire, operation, service
from .chain import ChainWalk, checkpoint_message, now
from .models import AuditDraft, AuditRecord, AuditReport, Checkpoint
from .store import AuditStore

__all__ = [
    "AUDITED_OPERATIONS",
    "AUDIT_CHECKPOINT_EVERY",
    "AUDIT_DETAILS_BYTES_MAX",
    "AUDIT_EXPORT_MAX",
    "AUDIT_FIELD_CHARS_MAX",
    "AUDIT_PAGE_MAX",
    "AUDIT_SCAN_MAX",
    "NOT_AUDITED",
    "STEP_RECORDED",
    "Audit",
    "AuditDraft",
    "AuditRecord",
    "AuditReport",
    "AuditStore",
    "Checkpoint",
    "acting",
    "cloudevent",
]

AUDIT_PAGE_MAX = 1000
"""The most records one ``events`` call returns."""
AUDIT_SCAN_MAX = 10_000
"""The most records one filtered ``events`` call reads to find its page (continue with ``after``)."""
AUDIT_EXPORT_MAX = 10_000
"""The most records one ``export`` call returns (continue with ``after``)."""
AUDIT_CHECKPOINT_EVERY = 256
"""A signed checkpoint is written after every this many records of a tenant."""
AUDIT_DETAILS_BYTES_MAX = 4096
"""The largest ``details`` of one record, as JSON (longer string values are cut, with a marker)."""
AUDIT_FIELD_CHARS_MAX = 512
"""The longest ``kind``, ``actor``, ``action``, ``resource`` or ``outcome`` of one record: a longer value is cut
and ends with ``…sha256:<digest of the whole value>``, so a refused call with a huge argument writes a bounded
record that still identifies it."""
_VERIFY_PAGE = 1000

AUDITED_OPERATIONS: dict[str, str] = {
    "bus.replay": "a dead letter put back into delivery",
    "registry.register": "an agent's card and key registered",
    "registry.deregister": "an agent removed",
    "ledger.open_account": "an account opened (its allow_negative flag)",
    "ledger.transfer": "a ledger write (its transfer id)",
    "ledger.transfer_many": "ledger writes (their transfer ids)",
    "ledger.hold": "a hold placed",
    "ledger.capture": "a hold captured",
    "ledger.void": "a hold voided",
    "ledger.transmute": "a currency conversion",
    "ledger.set_rate": "an exchange rate set",
    "ledger.set_price": "a price set",
    "ledger.record_usage": "usage recorded (and settled)",
    "ledger.check": "the ledger verified",
    "skills.publish": "a skill published",
    "skills.verify": "a skill verification",
    "skills.resolve_dispute": "a skill dispute resolved",
    "skills.record_invocation": "a skill invocation counted",
    "governance.set_policy": "a policy change",
    "governance.remove_policy": "a policy removed",
    "governance.approve": "an approval decision",
    "governance.deny": "an approval decision",
    "audit.checkpoint": "a checkpoint signed",
    "providers.register": "a provider card registered (where the server will send requests)",
    "providers.remove": "a provider removed",
    "providers.probe": "health probes run (outbound requests)",
    "tasks.create": "a task created and its bounty put in escrow",
    "tasks.claim": "a claim: who holds the task, for which attempt",
    "tasks.submit": "work submitted for review",
    "tasks.review": "a task verdict",
    "tasks.cancel": "a task canceled and its bounty refunded",
    "tasks.sweep": "expired tasks ended and refunded",
    "memory.forget": "a memory deleted",
}
"""Operations (``<service>.<name>``) whose every successful call through a session is one audit record; every
refusal of any operation is one too. A test holds this table and :data:`NOT_AUDITED` to cover every declared
operation of every served service."""

_READ = "a read: it changes nothing and reveals only what its scope allows"
NOT_AUDITED: dict[str, str] = {
    "bus.publish": "message traffic, not a security event (the bus keeps its own history)",
    "bus.publish_many": "message traffic, not a security event",
    "bus.split": "local: cuts a message into chunks, touches no store",
    "bus.send": "message traffic, not a security event",
    "bus.announce": "message traffic, not a security event",
    "bus.wake": "message traffic, not a security event",
    "bus.ask": "message traffic, not a security event",
    "bus.reply": "message traffic, not a security event",
    "bus.subscribe": "local: reading an inbox the session may read",
    "bus.history": _READ,
    "bus.history_entries": _READ,
    "bus.dead_letters": _READ,
    "bus.pending": _READ,
    "registry.heartbeat": "liveness, many per minute per agent",
    "registry.get": _READ,
    "registry.status": _READ,
    "registry.find": _READ,
    "ledger.balance": _READ,
    "ledger.get_transfer": _READ,
    "ledger.rate": _READ,
    "ledger.history": _READ,
    "ledger.balances": _READ,
    "ledger.price": _READ,
    "ledger.usage": _READ,
    "ledger.usage_summary": _READ,
    "skills.versions": _READ,
    "skills.get": _READ,
    "skills.find": _READ,
    "skills.marketplace": _READ,
    "skills.ancestors": _READ,
    "skills.descendants": _READ,
    "governance.get_policy": _READ,
    "governance.pending": _READ,
    "governance.check": _READ,
    "audit.events": _READ,
    "audit.verify": _READ,
    "audit.export": _READ,
    "providers.list": _READ,
    "providers.health": _READ,
    "engine.chat": "a model call: its charge is recorded as a ledger write, its usage as a usage event",
    "tasks.get": _READ,
    "tasks.list": _READ,
    "tasks.board": _READ,
    "tasks.heartbeat": "liveness of a claim, many per lease",
    "tasks.block": "a blocker, published on the bus",
    "memory.remember": "memory content, not a security event (access is checked, refusals are recorded)",
    "memory.remember_many": "memory content, not a security event (access is checked, refusals are recorded)",
    "memory.remember_message": "memory content, not a security event (access is checked, refusals are recorded)",
    "memory.recall": _READ,
    "memory.get": _READ,
    "memory.list": _READ,
    "memory.namespaces": _READ,
}
"""Declared operations that are not security-relevant, each with the reason."""

SELF_RECORDING = frozenset({"governance"})
"""Services whose operations write their own, richer records (the guard does not add one)."""

STEP_RECORDED = frozenset({"tasks.review", "skills.verify", "skills.resolve_dispute"})
"""Operations whose record the service writes itself, in the store's own step where the store allows it (the
guard does not add one): a task verdict, a skill verification."""

_ACTOR: ContextVar[str | None] = ContextVar("sos_audit_actor", default=None)


def acting() -> str:
    """Who the current call acts as: the session's agent (or ``token:<id>``) inside a guarded call, else
    ``kernel`` (the trusted handle)."""
    return _ACTOR.get() or "kernel"


def act_as(actor: str) -> Token[str | None]:
    """Name ``actor`` as the one acting until :func:`done_acting`."""
    return _ACTOR.set(actor)


def done_acting(token: Token[str | None]) -> None:
    """End :func:`act_as`."""
    _ACTOR.reset(token)


def _field(value: str) -> str:
    """``value`` (lone surrogates escaped), or its head and digest when longer than ``AUDIT_FIELD_CHARS_MAX``."""
    value = escaped(value)
    if len(value) <= AUDIT_FIELD_CHARS_MAX:
        return value
    import hashlib

    tail = "…sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value[: AUDIT_FIELD_CHARS_MAX - len(tail)] + tail


def _texts(value: Any) -> Any:
    """``value`` (decoded JSON) with every string, keys too, made valid text (:func:`escaped`)."""
    if isinstance(value, str):
        return escaped(value)
    if isinstance(value, dict):
        return {escaped(k): _texts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts(v) for v in value]
    return value


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    import json

    text = json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)
    if "\\ud" in text:  # a surrogate (a pair, or a lone one that no store or reader could encode): escape lone ones
        text = json.dumps(_texts(json.loads(text)), sort_keys=True, separators=(",", ":"))
    if len(text.encode()) <= AUDIT_DETAILS_BYTES_MAX:
        return json.loads(text)  # type: ignore[no-any-return]
    cut = {k: (v[:200] + "…" if isinstance(v, str) and len(v) > 200 else v) for k, v in json.loads(text).items()}
    text = json.dumps(cut, sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > AUDIT_DETAILS_BYTES_MAX:
        return {"truncated": True, "keys": sorted(cut)[:50]}
    return cut


@service("audit")
class Audit:
    """The audit chain of one tenant (see the module docstring). ``key`` signs its checkpoints;
    ``trusted_keys`` (public key hex), when given, are the only keys ``verify`` accepts on a checkpoint."""

    def __init__(
        self, store: AuditStore, tenant: str, key: AgentKey, trusted_keys: frozenset[str] | None = None
    ) -> None:
        self._store = store
        self.tenant = tenant
        self._key = key
        self._trusted = trusted_keys
        self._signed: dict[str, int] = {}
        """Per tenant, the newest checkpoint's sequence this handle knows of."""

    def draft(
        self,
        kind: str,
        *,
        actor: str,
        action: str = "",
        resource: str = "",
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> AuditDraft:
        """A record as :meth:`record` would append it (``actor="kernel"``: whoever is acting), for a store that
        appends it in the same step as the effect it records (a store declaring ``audits_writes``)."""
        return AuditDraft(
            at=now(),
            kind=_field(kind),
            actor=_field(acting() if actor == "kernel" else actor),
            action=_field(action),
            resource=_field(resource or ""),
            outcome=_field(outcome),
            details=_bounded(details or {}),
        )

    async def record(
        self,
        kind: str,
        *,
        actor: str,
        action: str = "",
        resource: str = "",
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> AuditRecord:
        """Append one record now (trusted code only: not an operation), and sign a checkpoint if one is due. The
        hook other services call: ``await kernel.audit.record("tool.call", actor=..., resource=...)``."""
        draft = self.draft(kind, actor=actor, action=action, resource=resource, outcome=outcome, details=details)
        where = tenant or self.tenant
        record = await self._store.append(where, draft)
        await self._due(where, record.seq, record.digest)
        return record

    async def append(self, draft: AuditDraft, *, stepped: bool, tenant: str | None = None) -> AuditRecord | None:
        """After an effect: append ``draft`` now, or, when the store already appended it in the effect's own
        step (``stepped``), only keep the checkpoints due. Returns the record this call appended."""
        where = tenant or self.tenant
        if stepped:
            await self.landed(where)
            return None
        record = await self._store.append(where, draft)
        await self._due(where, record.seq, record.digest)
        return record

    async def landed(self, tenant: str | None = None) -> None:
        """Sign the chain's head if it has crossed a multiple of ``AUDIT_CHECKPOINT_EVERY`` since the newest
        checkpoint: called after a store appended records in its own step (a ledger batch, a token issued)."""
        where = tenant or self.tenant
        seq, digest = await self._store.head(where)
        if digest is not None:
            await self._due(where, seq, digest)

    async def _due(self, tenant: str, seq: int, digest: str) -> None:
        """Sign record ``seq`` when the head crossed a multiple of ``AUDIT_CHECKPOINT_EVERY`` since the newest
        checkpoint, whoever appended the records in between."""
        if seq < AUDIT_CHECKPOINT_EVERY:
            return
        signed = self._signed.get(tenant)
        if signed is None or seq // AUDIT_CHECKPOINT_EVERY > signed // AUDIT_CHECKPOINT_EVERY:
            # the cache may be stale (another process signed): the store is asked before signing
            found = await self._store.checkpoints(tenant)
            signed = max((cp.seq for cp in found), default=0)
            self._signed[tenant] = signed
        if seq // AUDIT_CHECKPOINT_EVERY > signed // AUDIT_CHECKPOINT_EVERY:
            await self._sign(tenant, seq, digest)

    async def _sign(self, tenant: str, seq: int, digest: str) -> Checkpoint:
        at = now()
        signature = self._key.sign(checkpoint_message(tenant, seq, digest, at))
        cp = Checkpoint(
            tenant=tenant, seq=seq, digest=digest, at=at, public_key=self._key.public.hex, signature=signature
        )
        await self._store.put_checkpoint(cp)
        self._signed[tenant] = max(seq, self._signed.get(tenant, 0))
        return cp

    @operation("audit:read", tenant=("tenant",), wire=Wire("GET", summary="A page of the tenant's audit records"))
    async def events(
        self,
        tenant: str,
        limit: int = 100,
        after: int = 0,
        kind: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> list[AuditRecord]:
        """Up to ``limit`` (at most ``AUDIT_PAGE_MAX``) records with a sequence above ``after``, oldest first,
        matching every filter given (exact values). A filtered call reads at most ``AUDIT_SCAN_MAX`` records."""
        _check_page(limit, after, AUDIT_PAGE_MAX)
        filters = {k: v for k, v in {"kind": kind, "actor": actor, "action": action, "outcome": outcome}.items() if v}
        for name, value in filters.items():
            if not isinstance(value, str):
                raise InvalidArgument(f"{name} is a str, got {type(value).__name__}")
        found: list[AuditRecord] = []
        scanned, cursor = 0, after
        while len(found) < limit and scanned < AUDIT_SCAN_MAX:
            page = await self._store.page(tenant, cursor, min(_VERIFY_PAGE, AUDIT_SCAN_MAX - scanned))
            if not page:
                break
            scanned += len(page)
            cursor = page[-1].seq
            found += [r for r in page if all(getattr(r, k) == v for k, v in filters.items())]
        return found[:limit]

    @operation("audit:read", wire=Wire("GET", summary="Walk the tenant's audit chain and its checkpoints"))
    async def verify(self) -> AuditReport:
        """Recompute the tenant's chain from its first record; ``ok`` is False and ``problems`` names the first
        broken record (edited, deleted, inserted or out of order) and every checkpoint that disagrees."""
        walk = ChainWalk(self.tenant)
        cursor, intact = 0, True
        while intact:
            page = await self._store.page(self.tenant, cursor, _VERIFY_PAGE)
            if not page:
                break
            for r in page:
                if not walk.step(r):
                    intact = False
                    break
            cursor = page[-1].seq
        stored = await self._store.count(self.tenant)
        if intact and stored != walk.seq:
            walk.problems.append(f"the store holds {stored} records where the chain has {walk.seq}: one was inserted")
        checkpoints = await self._store.checkpoints(self.tenant)
        walk.check_points(checkpoints, self._trusted)
        return AuditReport(
            tenant=self.tenant,
            ok=not walk.problems,
            records=walk.seq,
            checkpoints=len(checkpoints),
            problems=walk.problems,
        )

    @operation("audit:admin", wire=Wire("POST", keyed=True, summary="Sign a checkpoint of the chain's head"))
    async def checkpoint(self) -> Checkpoint | None:
        """Sign the chain's head now (``None`` when the tenant has no record yet)."""
        seq, digest = await self._store.head(self.tenant)
        if digest is None:
            return None
        return await self._sign(self.tenant, seq, digest)

    @operation("audit:read", tenant=("tenant",), wire=Wire("GET", summary="Audit records as CloudEvents 1.0"))
    async def export(self, tenant: str, after: int = 0, limit: int = AUDIT_EXPORT_MAX) -> list[dict[str, Any]]:
        """Up to ``limit`` (at most ``AUDIT_EXPORT_MAX``) records after ``after`` as CloudEvents 1.0 objects
        (write one per line for JSON Lines)."""
        _check_page(limit, after, AUDIT_EXPORT_MAX)
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            page = await self._store.page(tenant, after, min(_VERIFY_PAGE, limit - len(found)))
            if not page:
                break
            found += [cloudevent(r) for r in page]
            after = page[-1].seq
        return found


def _check_page(limit: Any, after: Any, maximum: int) -> None:
    if type(limit) is not int or not 1 <= limit <= maximum:
        raise InvalidArgument(f"limit must be an int in 1..{maximum}, got {limit!r}")
    if type(after) is not int or after < 0:
        raise InvalidArgument(f"after must be an int >= 0, got {after!r}")


def cloudevent(r: AuditRecord) -> dict[str, Any]:
    """``r`` as a CloudEvents 1.0 event (structured JSON mode)."""
    return {
        "specversion": "1.0",
        "id": f"{r.tenant}:{r.seq}",
        "source": f"sos-kernel/tenants/{r.tenant}/audit",
        "type": f"sos.audit.{r.kind}",
        "time": r.at.isoformat(),
        "subject": r.resource or None,
        "datacontenttype": "application/json",
        "data": r.model_dump(mode="json"),
    }
