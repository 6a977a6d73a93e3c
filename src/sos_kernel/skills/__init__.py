"""The skills marketplace: versioned SkillCards with provenance, verification, and invocations that pay exactly.

Guarantees:

- **Immutable versions.** ``(id, version)`` is written once. Re-publishing the same content is idempotent;
  different content under the same version raises SOS-4009. The author's ``earnings`` and ``verification`` fields
  are not taken from the card: the kernel keeps them (a skill starts ``unverified`` with no earnings).
- **Owned ids.** Once a skill id exists, only its first author (or the holder of a capability for
  ``skills:publish`` on ``skill:<id>``) may publish further versions (SOS-5004); the first publish of a new id
  claims it atomically, so of two authors publishing it at once exactly one owns it. A capability chain counts only
  for the publisher its leaf names as subject, and each new version published with it spends one use of every
  limited link (an idempotent re-publish spends nothing).
- **Provenance.** Every ``lineage`` parent must be a published skill (SOS-6020). Lineage is provenance only: a fork's
  upstream authors are not paid by invocations of the fork (they earn from their own skill's invocations); the
  chain is always walkable with :meth:`Skills.ancestors` and :meth:`Skills.descendants`.
- **Exact payouts.** A paid invocation charges the caller ``price_per_call_micros`` and pays author, operator
  (``system:operator``) and network (``system:network``) through one linked ledger batch with ids
  ``skill:<invocation_id>:<part>``. ``operator = floor(price * operator_share)``, ``network = floor(price *
  network_share)`` computed on the shares as exact decimals, and the author receives the rest — so the parts always
  sum to the price and any rounding favours the author. No ``revenue_split`` means the author gets everything.
  A split whose operator and network shares sum (exactly) over ``FIXED_SHARES_MAX`` (1) is refused at publish
  (SOS-4005, nothing written), whatever the price: their parts could exceed the price and the author's be negative.
  A card stored with such a split before this rule existed is never charged for: its invocations are refused
  (SOS-4005, nothing written), so no caller ever pays more than the price.
- **One step per invocation.** The invocation id's binding, the charge (the linked batch), the count and the
  ``sos.skill_executed`` message are written by one step of the store (:meth:`SkillStore.invoke`). On SQLite it is
  one write transaction: the message exists iff the charge and the count do, whatever fails or is killed when.
  Memory does it all in one step of the event loop (no checkpoint). On Redis the binding, charge and count are one
  script and the message is appended right after it (a crash between the two leaves that call unannounced). Stores
  on different engines take several atomic steps, and a retry of an interrupted invocation completes the charge
  and count without charging again.
- **Counted once.** Invocations are idempotent by ``invocation_id``: a retry returns the first outcome and neither
  charges nor counts again. The first use binds the id to its (skill, version, caller, tenant, price) in one atomic
  step of the store, before any money moves; a use for any other outcome raises SOS-4009 and charges and counts
  nothing. Insufficient funds raise SOS-7001 and change no counter (and, as ledger ids never flip,
  a retry of that invocation id fails the same way: use a new id).
- **Capped by the caller.** ``max_price_micros`` refuses (SOS-4010, nothing charged or counted) a resolved version
  priced higher; the skill's author invoking its own skill pays nothing (counted, never demand).
- **Held to spend budgets.** An invocation declares ``SPEND_HELD``: under a policy limiting the caller's spend, the
  resolved version's price is held against it before any money moves (SOS-5004 when it would pass, nothing charged
  or counted), kept when charged, given back otherwise; a replay holds nothing.
- **Observable.** Every counted invocation has one ``sos.skill_executed`` message on ``sos:channel:skills``; a failed
  charge or a refused id has none.
- **Ranked by who calls, not how often.** The marketplace orders by verification, then by :meth:`Skills.demand`:
  distinct callers other than the skill's author, a paying one weighing ``MARKETPLACE_PAYING_CALLER_WEIGHT``. An
  author invoking its own skill, or any one caller looping, cannot move a skill up (``total_invocations`` still
  counts every call). A caller is demand only when it invoked for itself: the session's own agent
  (:func:`sos_kernel.audit.acting`), never a caller an admin session or the trusted handle names.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from .. import _trace
from ..audit import Audit, acting
from ..bus.store import Entry
from ..contracts import (
    SkillCard,
    SkillEarnings,
    SkillRevenueSplit,
    SkillVerification,
    WireModel,
    new_message_id,
    parse_card,
    validation_details,
)
from ..errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    SchemaViolation,
    SkillNotFound,
    WalletNotFound,
)
from ..governance import held_budget
from ..identity.capability import Capability
from ..ledger import Ledger, Transfer
from ..ledger.models import TransferRequest
from ..operations import SPEND_HELD, Wire, operation, service
from .semver import Version, matches, parse_range
from .store import InvocationStep, SkillBounds, SkillDemand, SkillRecord, SkillStats, SkillStore

if TYPE_CHECKING:
    from ..bus import Bus
    from ..guard import Caller
    from ..identity.service import Capabilities

__all__ = [
    "FIXED_SHARES_MAX",
    "MARKETPLACE_PAYING_CALLER_WEIGHT",
    "NETWORK_ACCOUNT",
    "OPERATOR_ACCOUNT",
    "SKILLS_PER_AUTHOR_MAX",
    "SKILLS_PER_TENANT_MAX",
    "SKILL_CARD_BYTES_MAX",
    "SKILL_EVENT_TYPE",
    "SKILL_VERSIONS_MAX",
    "VERIFICATION_RANK",
    "Invocation",
    "SkillDemand",
    "SkillExecutedPayload",
    "SkillRecord",
    "SkillStats",
    "SkillStore",
    "Skills",
    "check_split",
    "demand_score",
    "split_price",
]

OPERATOR_ACCOUNT = "system:operator"
NETWORK_ACCOUNT = "system:network"
SKILL_EVENT_TYPE = "sos.skill_executed"
SKILLS_CHANNEL = "sos:channel:skills"
MARKETPLACE_LIMIT_MAX = 500
LINEAGE_DEPTH_MAX = 64
PRICED_CARDS_MAX = 1024
"""Versions an invocation keeps per tenant view, by (id, version): the parsed card, its checked split and the parts of
the binding and message that depend only on the version; past it they are all forgotten (a version is written once,
so a kept one never goes stale; forgetting one costs one read and one parse)."""
CHOSEN_VERSIONS_MAX = 1024
"""(skill id, requested version) an invocation remembers per tenant view with the version list it chose from, so a
repeat call whose fresh list is the same skips the semver sort; past it they are all forgotten."""
VERIFICATION_RANK = {"human_verified": 3, "auto_verified": 2, "unverified": 1, "disputed": 0}
"""Marketplace order: verification (human > auto > unverified; disputed skills are not listed), then demand
(:func:`demand_score`, most first), then id."""
NOTED_CALLERS_MAX = 65_536
"""(skill, caller, paid) notes an invocation remembers per tenant view as already in the store, so a repeat caller
costs no write; past it they are all forgotten (a note is idempotent: forgetting one costs one write)."""
FIXED_SHARES_MAX = 1
"""The most a ``revenue_split``'s operator and network shares may sum to, read as exact decimals: their floored parts
then never exceed any price, so the author's rest is never negative."""
SKILL_CARD_BYTES_MAX = 65_536
"""The most bytes a published card may take as stored JSON (``input_schema``, ``output_schema`` and ``metadata``
included); a larger one is SOS-4010 with nothing written."""
SKILL_VERSIONS_MAX = 100
"""The most versions one skill id may have; the next new version is SOS-4010 (a replay of a stored one passes)."""
SKILLS_PER_TENANT_MAX = 1000
"""The most skill ids a tenant may hold; a new id past it is SOS-4010."""
SKILLS_PER_AUTHOR_MAX = 100
"""The most skill ids one author may own (a tenth of ``SKILLS_PER_TENANT_MAX``), so one agent cannot fill the
tenant's skills and lock the others out; a new id past it is SOS-4010."""
MARKETPLACE_PAYING_CALLER_WEIGHT = 3
"""What one distinct paying caller weighs in the marketplace's demand score; a caller that only called for free
weighs 1, the author and repeat calls nothing."""


def demand_score(demand: SkillDemand | None) -> int:
    """The marketplace's demand score: each distinct caller other than the author once, a paying one weighted."""
    if demand is None:
        return 0
    return demand.callers + (MARKETPLACE_PAYING_CALLER_WEIGHT - 1) * demand.paying_callers


class SkillExecutedPayload(WireModel):
    """Body of a ``sos.skill_executed`` message."""

    skill_id: str
    version: str
    invocation_id: str
    caller: str
    tenant: str
    price_micros: int
    currency: str


@dataclass(frozen=True, slots=True)
class Invocation:
    """A counted invocation: who called which version, what it cost and who got what (micros)."""

    invocation_id: str
    skill_id: str
    version: str
    caller: str
    tenant: str
    price_micros: int
    currency: str
    payouts: dict[str, int]
    transfers: tuple[Transfer, ...]
    replayed: bool


def split_price(price: int, split: SkillRevenueSplit | None) -> dict[str, int]:
    """Exact parts of ``price`` for author, operator and network (see the module docstring for the rule): each part
    is ≥ 0 and they sum to ``price``. SOS-4005 for a price that is not an int ≥ 0, or a split whose operator and
    network shares sum over ``FIXED_SHARES_MAX`` (see :func:`check_split`)."""
    if type(price) is not int or price < 0:
        raise InvalidArgument(f"price must be an int >= 0 micros, got {price!r}", details={"field": "price"})
    if split is None:
        return {"author": price, "operator": 0, "network": 0}
    check_split(split)
    operator, network = _floor_part(price, split.operator), _floor_part(price, split.network)
    parts = {"author": price - operator - network, "operator": operator, "network": network}
    if min(parts.values()) < 0 or sum(parts.values()) != price:  # check_split makes this unreachable
        raise InvalidArgument(f"revenue_split cannot pay {price} exactly: {parts}", details={"field": "revenue_split"})
    return parts


def _exact(share: float | None) -> Fraction:
    # the decimal the card wrote (its shortest repr), not the binary float nearest it
    return Fraction(str(share or 0))


def _floor_part(price: int, share: float | None) -> int:
    exact = _exact(share)
    return price * exact.numerator // exact.denominator


def check_split(split: SkillRevenueSplit | None, subject: str = "revenue_split") -> None:
    """SOS-4005 unless the operator's and network's shares, read as exact decimals, sum to at most
    ``FIXED_SHARES_MAX``: the author receives the rest of every price (its own share in the card is not read), which
    must never be negative. ``subject`` names the split in the message."""
    if split is None:
        return
    fixed = _exact(split.operator) + _exact(split.network)
    if fixed > FIXED_SHARES_MAX:
        raise InvalidArgument(
            f"{subject}: operator {split.operator} + network {split.network} = {float(fixed)} of the price, over "
            f"{FIXED_SHARES_MAX}; the author receives the rest of the price, which cannot be negative",
            details={"field": "commerce.revenue_split", "operator": split.operator, "network": split.network},
        )


def _digest(card: SkillCard) -> str:
    body = card.model_dump(mode="json", exclude_none=True, exclude={"earnings", "verification", "updated_at"})
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _parse(card: SkillCard | Mapping[str, Any]) -> SkillCard:
    return parse_card(SkillCard, card, "skill card")


def _invoked_itself(caller: str) -> bool:
    # acting() is the session's agent, "token:<id>" for one bound to none, "kernel" for the trusted handle
    return caller.startswith("agent:") and caller == acting()


# The skills' access rule that is not a declaration (see sos_kernel.operations).


async def _publish_rule(caller: Caller, skills: Skills, arguments: dict[str, Any]) -> SkillCard:
    """The session's agent is the publisher (its default), so a capability chain counts only when the session's
    agent is its leaf's subject; an admin may publish for anyone."""
    principal = caller.principal
    publisher = arguments.get("publisher")
    if not principal.admin:
        if principal.agent is None:
            caller.deny("publishing needs a token bound to an agent (or the admin scope)")
        if publisher is None:
            publisher = principal.agent
        caller.own("agent", "publisher", publisher)  # type-exact: only a plain str can be the caller's own
    caller.unreserved("agent", "publisher", publisher)
    return await skills.publish(arguments["card"], publisher=publisher, capability=arguments.get("capability"))


@service("skills")
class Skills:
    """The skills API of one tenant: ``kernel.skills`` or ``kernel.tenant(slug).skills``."""

    def __init__(self, store: SkillStore, tenant: str, ledger: Ledger, bus: Bus, capabilities: Capabilities) -> None:
        self._store = store
        self.tenant = tenant
        self._ledger = ledger
        self._bus = bus
        self._capabilities = capabilities
        self._opened: set[tuple[str, str]] = set()  # receiving accounts known to exist (accounts are never removed)
        self._priced: dict[tuple[str, str], _Priced] = {}  # see PRICED_CARDS_MAX
        self._chosen: dict[tuple[str, str | None], tuple[list[str], str]] = {}  # see CHOSEN_VERSIONS_MAX
        self.audit: Audit | None = None
        """The tenant's audit chain (set by the kernel): each verification is recorded, in the store's step where
        it allows it (``audits_writes``)."""
        self._noted: set[tuple[str, str, bool]] = set()  # see NOTED_CALLERS_MAX

    # -- reading ------------------------------------------------------------------------------------------------

    def _view(self, record: SkillRecord) -> SkillCard:
        card = SkillCard.model_validate_json(record.card)
        stats = record.stats
        earnings = SkillEarnings(
            total_invocations=stats.total_invocations,
            total_earned_micros=stats.total_earned_micros,
            currency=card.commerce.currency if card.commerce else "USD",
            last_invocation_at=datetime.fromtimestamp(stats.last_invocation_at, UTC)
            if stats.last_invocation_at
            else None,
            invocations_by_tenant=dict(stats.invocations_by_tenant),
        )
        verification = SkillVerification.model_validate_json(record.verification)
        return card.model_copy(update={"earnings": earnings, "verification": verification})

    @operation("skills:read", wire=Wire("GET", errors=(SkillNotFound,), summary="Published versions, oldest first"))
    async def versions(self, skill_id: str) -> list[str]:
        """Published versions, oldest first by semantic version order."""
        found = await self._store.versions(self.tenant, skill_id)
        return sorted(found, key=Version.parse)

    async def _choose(self, skill_id: str, version: str | None) -> str:
        """The published version ``version`` names (exact, range, or the latest release); SOS-6020 if none."""
        if not isinstance(skill_id, str) or not skill_id:
            raise InvalidArgument("skill_id must be a non-empty string")
        available = await self._store.versions(self.tenant, skill_id)
        key = (skill_id, version)
        kept = self._chosen.get(key)
        if kept is not None and kept[0] == available:  # the same versions (read just now) choose the same one
            return kept[1]
        if version is not None and version in available:
            self._keep_choice(key, available, version)
            return version
        bounds = parse_range(version or "*")
        fitting = [v for v in sorted(available, key=Version.parse) if matches(Version.parse(v), bounds)]
        if not fitting:
            wanted = f" matching {version!r}" if version else ""
            raise SkillNotFound(f"no skill {skill_id!r}{wanted}", details={"skill_id": skill_id, "version": version})
        self._keep_choice(key, available, fitting[-1])
        return fitting[-1]

    def _keep_choice(self, key: tuple[str, str | None], available: list[str], chosen: str) -> None:
        if len(self._chosen) >= CHOSEN_VERSIONS_MAX:
            self._chosen.clear()
        self._chosen[key] = (available, chosen)

    async def _choose_unread(self, skill_id: str, version: str | None) -> tuple[str, list[str] | None]:
        """The version to invoke, and the versions it was chosen from when they were not read for this call: a
        store that ``checks_choice`` reads them inside the invocation's step instead (one statement, no read
        transaction) and refuses a stale choice, so a version published since is still invoked at once."""
        kept = self._chosen.get((skill_id, version)) if self._store.checks_choice else None
        if kept is not None:
            return kept[1], kept[0]
        return await self._choose(skill_id, version), None

    async def _resolve(self, skill_id: str, version: str | None) -> SkillRecord:
        chosen = await self._choose(skill_id, version)
        record = await self._store.get_version(self.tenant, skill_id, chosen)
        if record is None:  # versions are never removed: only a store that lost data gets here
            raise SkillNotFound(f"no skill {skill_id!r} {chosen}", details={"skill_id": skill_id, "version": chosen})
        return record

    @operation(
        "skills:read",
        wire=Wire("GET", errors=(SkillNotFound,), summary="A skill: latest release, exact version or range"),
    )
    async def get(self, skill_id: str, version: str | None = None) -> SkillCard:
        """The latest release, an exact version, or the highest release in a range (``^1.2``, ``~1.2``,
        ``>=1.0 <2``). SOS-6020 when nothing matches."""
        return self._view(await self._resolve(skill_id, version))

    async def _latest_all(self) -> list[SkillCard]:
        out = []
        for skill_id in await self._store.skill_ids(self.tenant):
            try:
                out.append(await self.get(skill_id))
            except SkillNotFound:  # only prereleases published: not a listed release
                continue
        return out

    @operation("skills:read", wire=Wire("GET", summary="The latest release of every skill matching all filters"))
    async def find(
        self,
        *,
        tag: str | None = None,
        backend: str | None = None,
        author: str | None = None,
        status: str | None = None,
        listed: bool | None = None,
    ) -> list[SkillCard]:
        """The latest release of every skill matching all filters given, by id. A filter of the wrong type (over
        HTTP: ``listed`` other than ``true``/``false``) is SOS-4005."""
        for name, value in (("tag", tag), ("backend", backend), ("author", author), ("status", status)):
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(f"{name} is a string", details={"field": name})
        if listed is not None and not isinstance(listed, bool):
            raise InvalidArgument("listed is true or false", details={"field": "listed"})
        out = []
        for card in await self._latest_all():
            if tag is not None and tag not in (card.tags or []):
                continue
            if backend is not None and (card.runtime is None or card.runtime.backend != backend):
                continue
            if author is not None and card.author_agent != author:
                continue
            if status is not None and (card.verification is None or card.verification.status != status):
                continue
            if listed is not None and bool(card.commerce and card.commerce.marketplace_listed) != listed:
                continue
            out.append(card)
        return out

    @operation("skills:read", wire=Wire("GET", summary="Listed skills, best first"))
    async def marketplace(self, *, limit: int = 50, offset: int = 0) -> list[SkillCard]:
        """The public view: listed, not disputed skills, ordered by ``VERIFICATION_RANK``, then demand (distinct
        callers other than the author, paying ones weighted: :func:`demand_score`; most first), then id; paged by
        ``offset``/``limit``."""
        if not isinstance(limit, int) or not 1 <= limit <= MARKETPLACE_LIMIT_MAX or not isinstance(offset, int):
            raise InvalidArgument(f"limit is 1..{MARKETPLACE_LIMIT_MAX} and offset an int >= 0")
        listed = [c for c in await self.find(listed=True) if c.verification and c.verification.status != "disputed"]
        demand = await self.demand()

        def rank(card: SkillCard) -> tuple[int, int, str]:
            status = card.verification.status if card.verification else "unverified"
            return (-VERIFICATION_RANK[status], -demand_score(demand.get(card.id)), card.id)

        return sorted(listed, key=rank)[max(0, offset) : max(0, offset) + limit]

    async def demand(self) -> dict[str, SkillDemand]:
        """Each invoked skill's distinct callers other than its author (any version), and how many of them paid;
        a skill nobody else has called is absent. The trusted handle's (the public marketplace reads it)."""
        return await self._store.demand(self.tenant)

    @operation(
        "skills:read", wire=Wire("GET", errors=(SkillNotFound,), summary="Skills this one derives from, nearest first")
    )
    async def ancestors(self, skill_id: str) -> list[SkillCard]:
        """Every skill this one derives from (through the lineage of each latest release), nearest first."""
        return await self._walk(skill_id, up=True)

    @operation(
        "skills:read", wire=Wire("GET", errors=(SkillNotFound,), summary="Skills deriving from this one, nearest first")
    )
    async def descendants(self, skill_id: str) -> list[SkillCard]:
        """Every skill that derives from this one, nearest first."""
        return await self._walk(skill_id, up=False)

    async def _walk(self, skill_id: str, *, up: bool) -> list[SkillCard]:
        await self.get(skill_id)
        everything = {c.id: c for c in await self._latest_all()}
        children: dict[str, list[str]] = {}
        for card in everything.values():
            for link in card.lineage or []:
                children.setdefault(link.parent_skill_id, []).append(card.id)
        seen, frontier, out = {skill_id}, [skill_id], []
        for _ in range(LINEAGE_DEPTH_MAX):
            nxt = []
            for current in frontier:
                node = everything.get(current)
                if up:
                    related = [p.parent_skill_id for p in (node.lineage or [])] if node else []
                else:
                    related = children.get(current, [])
                for rid in related:
                    if rid not in seen and rid in everything:
                        seen.add(rid)
                        nxt.append(rid)
                        out.append(everything[rid])
            frontier = nxt
        return out

    # -- publishing and verification ----------------------------------------------------------------------------

    @operation(
        "skills:publish",
        rule=_publish_rule,
        wire=Wire(
            errors=(IdempotencyConflict, LimitExceeded),
            summary="Publish a skill version (idempotent by id and version)",
        ),
    )
    async def publish(
        self,
        card: SkillCard | Mapping[str, Any],
        *,
        publisher: str | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> SkillCard:
        """Publish a version (see the module docstring). ``publisher`` is who asks (sessions pass their agent);
        a ``capability`` chain for ``skills:publish`` on ``skill:<id>`` whose leaf's subject is ``publisher`` lets
        someone other than the author publish, spending one use of its limited links per new version.
        Raises SOS-4001 (bad card), 4005 (a ``revenue_split`` whose operator and network shares sum over
        ``FIXED_SHARES_MAX``), 4009 (version exists with other content), 5004 (not the owner, a chain that is not the
        publisher's, or no uses left), 6020 (unknown lineage parent), 4010 (a card over ``SKILL_CARD_BYTES_MAX``, or
        a new version past ``SKILL_VERSIONS_MAX``, ``SKILLS_PER_TENANT_MAX`` or ``SKILLS_PER_AUTHOR_MAX``, counted in
        the store's atomic step)."""
        parsed = _parse(card)
        clean = parsed.model_copy(update={"earnings": None, "verification": None})
        stored = clean.to_json()
        if len(stored) > SKILL_CARD_BYTES_MAX:
            raise LimitExceeded(
                f"the card of {parsed.id} {parsed.version} is {len(stored)} bytes as JSON; at most "
                f"{SKILL_CARD_BYTES_MAX} (SKILL_CARD_BYTES_MAX); nothing was written",
                details={"limit": "SKILL_CARD_BYTES_MAX", "value": SKILL_CARD_BYTES_MAX, "bytes": len(stored)},
            )
        check_split(parsed.commerce.revenue_split if parsed.commerce else None)
        await self._check_owner(parsed, publisher, capability)
        for link in parsed.lineage or []:
            if not await self._store.versions(self.tenant, link.parent_skill_id):
                raise SkillNotFound(
                    f"lineage parent {link.parent_skill_id!r} is not a published skill",
                    details={"parent_skill_id": link.parent_skill_id},
                )
        record = SkillRecord(
            parsed.id,
            parsed.version,
            stored,
            _digest(parsed),
            SkillVerification().model_dump_json().encode(),
            SkillStats(),
            time.time(),
        )
        if capability and await self._store.get_version(self.tenant, parsed.id, parsed.version) is None:
            await self._capabilities.use(capability, action="skills:publish", resource=f"skill:{parsed.id}")
        # The pre-check above races with a concurrent first publish; the store's claim is the atomic decision.
        bounds = SkillBounds(SKILL_VERSIONS_MAX, SKILLS_PER_TENANT_MAX, SKILLS_PER_AUTHOR_MAX)
        existing, owner = await self._store.put_version(self.tenant, record, parsed.author_agent, bounds)
        if owner != parsed.author_agent:
            raise Forbidden(f"skill {parsed.id} belongs to {owner}", details={"skill_id": parsed.id})
        if existing is not None and existing.digest != record.digest:
            raise IdempotencyConflict(
                f"{parsed.id} {parsed.version} is already published with other content; publish a new version",
                details={"skill_id": parsed.id, "version": parsed.version},
            )
        return self._view(existing or record)

    async def _check_owner(
        self, card: SkillCard, publisher: str | None, capability: Sequence[Capability] | None
    ) -> None:
        versions = await self.versions(card.id)
        owner = card.author_agent
        if versions:
            owner = SkillCard.model_validate_json(
                (await self._store.get_version(self.tenant, card.id, versions[0])).card  # type: ignore[union-attr]
            ).author_agent
            # Provenance holds even for a capability holder: new versions keep the skill's author (and its payouts).
            if card.author_agent != owner:
                raise Forbidden(f"skill {card.id} belongs to {owner}", details={"skill_id": card.id})
        if capability:
            leaf = await self._capabilities.check(capability, action="skills:publish", resource=f"skill:{card.id}")
            # A chain is a right of its leaf's subject, not of whoever presents it.
            if publisher is not None and publisher != leaf.subject:
                raise Forbidden(
                    f"the capability is granted to {leaf.subject}, not to {publisher}",
                    details={"skill_id": card.id, "link": leaf.id},
                )
            return
        if publisher is not None and publisher != owner:
            raise Forbidden(f"only {owner} may publish {card.id}", details={"skill_id": card.id})

    @operation(
        "skills:verify",
        own={"verifier": "agent"},
        wire=Wire(keyed=True, errors=(SkillNotFound,), summary="Record a verification verdict"),
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
        """Record a verifier's verdict: ``auto_verified`` / ``human_verified``, or ``disputed`` with a reason.

        The verifier is added to ``verified_by`` and the sample refs to ``sample_output_refs``. A disputed skill
        leaves the marketplace until :meth:`resolve_dispute`.
        """
        return await self._verify(skill_id, version, verifier, status, reason, sample_output_refs, "skills.verify")

    async def _verify(
        self,
        skill_id: str,
        version: str,
        verifier: str,
        status: Literal["auto_verified", "human_verified", "disputed"],
        reason: str | None,
        sample_output_refs: Sequence[str],
        action: str,
    ) -> SkillCard:
        if status not in ("auto_verified", "human_verified", "disputed"):
            raise InvalidArgument("status is auto_verified, human_verified or disputed")
        if status == "disputed" and not reason:
            raise InvalidArgument("a dispute needs a reason")
        record = await self._resolve(skill_id, version)
        current = SkillVerification.model_validate_json(record.verification)
        refs = list(dict.fromkeys([*(current.sample_output_refs or []), *sample_output_refs]))
        verifiers = list(dict.fromkeys([*(current.verified_by or []), verifier]))
        try:
            updated = SkillVerification(
                status=status,
                verified_by=verifiers,
                sample_output_refs=refs or None,
                verified_at=datetime.now(UTC),
                dispute_reason=reason if status == "disputed" else None,
            )
        except ValidationError as exc:
            raise SchemaViolation("bad verification", details=validation_details(exc)) from None
        draft = None
        if self.audit is not None:  # the record the guard gave a verification before it was written in its step
            draft = self.audit.draft(
                "operation", actor="kernel", action=action, resource=skill_id, details={"id": record.skill_id}
            )
        stepped = draft is not None and self._store.audits_writes
        step = {"audit": draft} if stepped else {}
        written = await self._store.set_verification(
            self.tenant, record.skill_id, record.version, updated.to_json(), **step
        )
        if written and draft is not None and self.audit is not None:
            await self.audit.append(draft, stepped=stepped)
        return await self.get(record.skill_id, record.version)

    @operation(
        "skills:verify",
        own={"verifier": "agent"},
        wire=Wire(keyed=True, errors=(SkillNotFound,), summary="Close a dispute with a fresh verdict"),
    )
    async def resolve_dispute(
        self, skill_id: str, version: str, *, verifier: str, status: Literal["auto_verified", "human_verified"]
    ) -> SkillCard:
        """Close a dispute with a fresh verdict; SOS-4005 if the version is not disputed."""
        record = await self._resolve(skill_id, version)
        if SkillVerification.model_validate_json(record.verification).status != "disputed":
            raise InvalidArgument(f"{skill_id} {version} is not disputed")
        return await self._verify(skill_id, version, verifier, status, None, (), "skills.resolve_dispute")

    # -- invocations --------------------------------------------------------------------------------------------

    @operation(
        "skills:invoke",
        own={"caller": "agent"},
        tenant=("tenant",),
        ids=("invocation_id",),
        spend=(SPEND_HELD,),
        wire=Wire(
            errors=(SkillNotFound, InsufficientFunds, WalletNotFound, IdempotencyConflict),
            summary="Record a paid invocation, split exactly (idempotent by invocation_id)",
        ),
    )
    async def record_invocation(
        self,
        skill_id: str,
        version: str | None = None,
        *,
        caller: str,
        tenant: str,
        invocation_id: str,
        max_price_micros: int | None = None,
    ) -> Invocation:
        """Count one invocation and, for a priced skill, charge ``caller`` and pay the split (module docstring).

        ``max_price_micros`` caps what the caller pays, in the resolved version's currency: a version priced higher
        (a range picking up a price rise) is refused with SOS-4010 and nothing is charged or counted. The skill's
        author invoking its own skill pays nothing (its invocation is counted, free).

        Idempotent by ``invocation_id``. Raises SOS-6020 (unknown skill), 7001 (caller cannot pay), 7002 (caller
        has no account in the skill's currency), 4009 (the id is bound to another skill, version, caller, tenant or
        price; nothing is charged or counted), 4005 (the version was stored with a ``revenue_split`` this release
        refuses at publish: nothing is charged or counted, publish a new version), 5004 (under the tenant's policy,
        the version's price would pass the caller's spend budget: nothing is charged or counted).
        """
        for name, value in (("caller", caller), ("tenant", tenant), ("invocation_id", invocation_id)):
            if not isinstance(value, str) or not value:  # they go into the message as they are
                raise InvalidArgument(f"{name} must be a non-empty string", details={"field": name})
        if max_price_micros is not None and (type(max_price_micros) is not int or max_price_micros < 0):
            raise InvalidArgument(
                f"max_price_micros must be an int >= 0 or None, got {max_price_micros!r}",
                details={"field": "max_price_micros"},
            )
        chosen, unread = await self._choose_unread(skill_id, version)
        while True:
            priced = await self._invoked(skill_id, chosen)
            if caller == priced.card.author_agent and priced.price > 0:
                priced = priced.for_author()  # an author does not pay itself (nor fees) for its own skill
            if max_price_micros is not None and priced.price > max_price_micros:
                raise LimitExceeded(
                    f"skill {priced.card.id} {priced.card.version} costs {priced.price} {priced.currency} micros,"
                    f" over max_price_micros={max_price_micros}",
                    details={
                        "limit": "max_price_micros",
                        "max": max_price_micros,
                        "price": priced.price,
                        "version": priced.card.version,
                    },
                )
            invoked = await self._budgeted(priced, unread, caller, tenant, invocation_id)
            if invoked is not None:
                return invoked
            # a version was published since the kept choice: nothing was written, choose again from a read
            self._chosen.pop((skill_id, version), None)
            chosen, unread = await self._choose(skill_id, version), None

    async def _budgeted(
        self, priced: _Priced, unread: list[str] | None, caller: str, tenant: str, invocation_id: str
    ) -> Invocation | None:
        """:meth:`_invoke`, its price held against the spend budgets of the caller's policy (when one limits the
        call) before any money moves: SOS-5004 when a budget would pass. What was not charged (a refusal, a replay,
        a stale choice) is given back. A retry of a counted invocation holds nothing."""
        budget = held_budget()
        if budget is None or priced.price == 0 or await self._store.counted(self.tenant, invocation_id):
            return await self._invoke(priced, unread, caller, tenant, invocation_id)
        await budget.hold(priced.price, 0)
        spent = 0
        try:
            invoked = await self._invoke(priced, unread, caller, tenant, invocation_id)
            spent = invoked.price_micros if invoked is not None and not invoked.replayed else 0
            return invoked
        finally:
            await budget.settle(spent, 0)

    async def _invoke(
        self, priced: _Priced, unread: list[str] | None, caller: str, tenant: str, invocation_id: str
    ) -> Invocation | None:
        """Charge and count one invocation of the chosen version in the store's one step; ``None`` when the choice
        was stale (nothing written)."""
        card, price, currency = priced.card, priced.price, priced.currency
        # everything is checked and built before the store's step, so bad input writes nothing
        charge = await self._charge(priced, caller, invocation_id) if price > 0 else []
        now = time.time()
        binding = f"{priced.binding}{_ascii(caller)},{_ascii(tenant)},{price}]"
        message = self._message(priced, invocation_id, caller, tenant, now)
        step = InvocationStep(
            self.tenant, card.id, card.version, invocation_id, tenant, price, now, binding, charge, message, unread
        )
        invoked = await self._store.invoke(step, self._ledger.store, self._bus.store, self._bus.retention)
        if invoked.stale:
            return None
        if invoked.bound != binding:
            raise IdempotencyConflict(
                f"invocation id {invocation_id!r} was used for another skill, version, caller, tenant or price;"
                " use a new id",
                details={"invocation_id": invocation_id},
            )
        transfers: tuple[Transfer, ...] = ()
        if invoked.applied is not None:  # raises a recorded failure, or a replay's conflict
            transfers = tuple(await self._ledger.settle(charge, invoked.applied))
        if invoked.announces:
            self._bus.count_appended(int(invoked.counted))
        elif invoked.counted:  # the store's step does not append it: right after, as the step counted it
            appended = await self._bus.store.append(self.tenant, [message], self._bus.retention)
            self._bus.count_appended(sum(not a.duplicate for a in appended))
        await self._note_caller(card, caller, price)
        return Invocation(
            invocation_id,
            card.id,
            card.version,
            caller,
            tenant,
            price,
            currency,
            dict(priced.payouts),  # the caller's own copy
            transfers,
            replayed=not invoked.counted,
        )

    async def _note_caller(self, card: SkillCard, caller: str, price: int) -> None:
        """Note a counted invocation's caller for the marketplace's demand (idempotent, so a retry notes one cut
        short). Only an agent invoking for itself is demand (the session's own agent, :func:`acting`): a caller
        named by an admin session or the trusted handle is not, nor the author's own calls."""
        note = (card.id, caller, price > 0)
        if caller == card.author_agent or not _invoked_itself(caller) or note in self._noted:
            return
        await self._store.note_caller(self.tenant, *note)
        if len(self._noted) >= NOTED_CALLERS_MAX:
            self._noted.clear()
        self._noted.add(note)

    async def _invoked(self, skill_id: str, chosen: str) -> _Priced:
        """The chosen version, its card read, parsed and priced once per (id, version): a version is written once,
        so a kept one never goes stale (only which version a range picks can change, and that is checked on every
        call). A refused split is refused on every call, never kept."""
        priced = self._priced.get((skill_id, chosen))
        if priced is None:
            record = await self._store.get_version(self.tenant, skill_id, chosen)
            if record is None:  # versions are never removed: only a store that lost data gets here
                raise SkillNotFound(
                    f"no skill {skill_id!r} {chosen}", details={"skill_id": skill_id, "version": chosen}
                )
            priced = _priced(SkillCard.model_validate_json(record.card))
            if len(self._priced) >= PRICED_CARDS_MAX:
                self._priced.clear()
            self._priced[(skill_id, chosen)] = priced
        return priced

    async def _charge(self, priced: _Priced, caller: str, invocation_id: str) -> list[TransferRequest]:
        """The linked batch that pays the split, checked as ``transfer_many`` checks one (nothing is written but the
        receiving accounts, opened once)."""
        currency = priced.currency
        batch = []
        for part, receiver, amount, reason in priced.parts:
            if (receiver, currency) not in self._opened:
                await self._ledger.open_account(receiver, currency)
                self._opened.add((receiver, currency))
            batch.append(
                {
                    "id": f"skill:{invocation_id}:{part}",
                    "debit": caller,
                    "credit": receiver,
                    "amount": amount,
                    "currency": currency,
                    "reason": reason,
                }
            )
        return self._ledger.check_batch(batch)

    def _message(self, priced: _Priced, invocation_id: str, caller: str, tenant: str, now: float) -> tuple[str, Entry]:
        """The ``sos.skill_executed`` message as the bus stores it: the JSON ``json.dumps`` writes for its body
        (compact, not ASCII-escaped), the version's fields encoded once, the call's strings encoded here (a kernel
        message of a fixed shape built from checked fields; ``SkillExecutedPayload`` is its contract). Its id is a
        fresh UUIDv7: one derived from the invocation id could be published first by another agent of the tenant,
        and the bus's dedup would then drop this one. SOS-4010 if over ``message_bytes_max``."""
        message_id = new_message_id()
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        trace = ""
        if _trace.enabled() and (trace_id := _trace.current_trace_id()) is not None:
            trace = f',"trace_id":{_text(trace_id)}'  # its delivery joins the caller's trace
        data = (
            f'{_MESSAGE_HEAD}"{stamp}","version":"1.0","message_id":"{message_id}",{priced.payload}'
            f'"invocation_id":{_text(invocation_id)},"caller":{_text(caller)},"tenant":{_text(tenant)},'
            f"{priced.payload_tail}{trace}}}"
        ).encode()
        limit = self._bus.limits.message_bytes_max
        if len(data) > limit:
            raise LimitExceeded(
                f"the invocation's message would be {len(data)} bytes, over message_bytes_max={limit}",
                details={"limit": "message_bytes_max", "max": limit, "size": len(data)},
            )
        return SKILLS_CHANNEL, Entry(message_id, data, source="agent:kernel")  # the source _MESSAGE_HEAD writes


_text = json.JSONEncoder(ensure_ascii=False).encode  # a str as the message's JSON writes it
_ascii = json.JSONEncoder().encode  # a str as the binding's JSON writes it
_MESSAGE_HEAD = f'{{"type":"{SKILL_EVENT_TYPE}","source":"agent:kernel","target":"{SKILLS_CHANNEL}","timestamp":'
_RECEIVERS = {"operator": OPERATOR_ACCOUNT, "network": NETWORK_ACCOUNT}


@dataclass(frozen=True, slots=True)
class _Priced:
    """What invoking one version needs that depends only on the version (its content never changes)."""

    card: SkillCard
    price: int
    currency: str
    payouts: dict[str, int]  # read only: an Invocation gets a copy
    parts: tuple[tuple[str, str, int, str], ...]  # (part, receiver, amount, reason) of each part paid
    binding: str  # the binding's JSON up to the caller
    payload: str  # the message payload's JSON up to the invocation id
    payload_tail: str  # and from the price on

    def for_author(self) -> _Priced:
        """This version as its author invokes it: free, nothing to pay to anyone."""
        return replace(
            self,
            price=0,
            payouts=dict.fromkeys(self.payouts, 0),
            parts=(),
            payload_tail=f'"price_micros":0,"currency":{_text(self.currency)}}}',
        )


def _priced(card: SkillCard) -> _Priced:
    """A version's invocation constants; SOS-4005 if it was stored with a split refused now (:func:`check_split`)."""
    commerce = card.commerce
    price = (commerce.price_per_call_micros or 0) if commerce else 0
    currency = commerce.currency if commerce else "USD"
    split = commerce.revenue_split if commerce else None
    check_split(split, f"skill {card.id} {card.version} was stored with a revenue_split refused now")
    payouts = split_price(price, split)
    receivers = {"author": card.author_agent, **_RECEIVERS}
    parts = tuple(
        (part, receivers[part], amount, f"skill {card.id} {card.version} ({part})")
        for part, amount in payouts.items()
        if amount > 0
    )
    return _Priced(
        card,
        price,
        currency,
        payouts,
        parts,
        binding=f"[{_ascii(card.id)},{_ascii(card.version)},",
        payload=f'"payload":{{"skill_id":{_text(card.id)},"version":{_text(card.version)},',
        payload_tail=f'"price_micros":{price},"currency":{_text(currency)}}}',
    )
