"""The public marketplace: the ``marketplace_listed`` skill cards of active tenants, and nothing else.

Cards come from each active tenant's ``skills.marketplace()`` (listed, not disputed; listing is the publisher's
opt-in); a detail page is looked up in that same listed set, so an unlisted, disputed or private skill, or one of
a suspended tenant, answers 404 exactly as an id that does not exist. Reads are bounded and the listing is kept
``MARKETPLACE_CACHE_S`` so anonymous traffic cannot make the server walk every tenant on every request.

One ranking across tenants: verification, then demand (distinct callers other than the skill's author, a paying one
weighing ``MARKETPLACE_PAYING_CALLER_WEIGHT``: :func:`sos_kernel.skills.demand_score`), then tenant and id. An author
calling its own skill, or one caller calling in a loop, moves nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from ...contracts import SkillCard
from ...errors import InvalidArgument, NotFound
from ...kernel import Kernel
from ...skills import VERIFICATION_RANK, SkillDemand, demand_score
from ._money import parse_micros

__all__ = [
    "MARKETPLACE_CACHE_S",
    "MARKETPLACE_PER_TENANT_MAX",
    "MARKETPLACE_QUERY_CHARS_MAX",
    "MARKETPLACE_RESULTS_MAX",
    "MARKETPLACE_TENANTS_MAX",
    "VERIFICATIONS",
    "Listing",
    "Marketplace",
    "Query",
]

MARKETPLACE_RESULTS_MAX = 60
"""Cards one marketplace page (or its JSON twin) answers."""
MARKETPLACE_QUERY_CHARS_MAX = 100
"""The longest search text or tag a marketplace query accepts."""
MARKETPLACE_TENANTS_MAX = 1_000
"""Active tenants whose listed skills the marketplace reads."""
MARKETPLACE_PER_TENANT_MAX = 200
"""Listed skills read per tenant."""
MARKETPLACE_CACHE_S = 5.0
"""How long one read of the listing serves every visitor."""
VERIFICATIONS = ("unverified", "auto_verified", "human_verified")


@dataclass(frozen=True)
class Listing:
    """One listed card and its tenant."""

    tenant: str
    card: SkillCard
    demand: SkillDemand = field(default_factory=SkillDemand)

    @property
    def verification(self) -> str:
        return self.card.verification.status if self.card.verification else "unverified"

    @property
    def price_micros(self) -> int:
        commerce = self.card.commerce
        return (commerce.price_per_call_micros or 0) if commerce else 0

    @property
    def currency(self) -> str:
        return self.card.commerce.currency if self.card.commerce else "USD"

    def public(self) -> dict[str, Any]:
        """The card as the JSON twin shows it: what a buyer needs, nothing of the tenant's internals."""
        card = self.card
        return {
            "tenant": self.tenant,
            "id": card.id,
            "name": card.name,
            "version": card.version,
            "description": card.description,
            "tags": list(card.tags or ()),
            "author_agent": card.author_agent,
            "verification": self.verification,
            "price_per_call_micros": self.price_micros,
            "currency": self.currency,
            "invocations": (card.earnings.total_invocations or 0) if card.earnings else 0,
            "callers": self.demand.callers,
            "paying_callers": self.demand.paying_callers,
        }

    def rank(self) -> tuple[int, int, str, str]:
        """Where it stands in the marketplace (lowest first)."""
        return (-VERIFICATION_RANK[self.verification], -demand_score(self.demand), self.tenant, self.card.id)


@dataclass(frozen=True)
class Query:
    """A marketplace search: text, a tag, a highest price (micros) and a verification status, all optional."""

    text: str = ""
    tag: str = ""
    price_max_micros: int | None = None
    verification: str = ""

    @classmethod
    def parse(cls, params: dict[str, str]) -> Query:
        """From query parameters ``q``, ``tag``, ``price_max`` (decimal), ``verification``; bad ones SOS-4005."""
        text, tag = params.get("q", "").strip(), params.get("tag", "").strip()
        for name, value in (("q", text), ("tag", tag)):
            if len(value) > MARKETPLACE_QUERY_CHARS_MAX:
                raise InvalidArgument(f"{name} must be at most {MARKETPLACE_QUERY_CHARS_MAX} characters")
        price = params.get("price_max", "").strip()
        verification = params.get("verification", "").strip()
        if verification and verification not in VERIFICATIONS:
            raise InvalidArgument(f"verification must be one of {', '.join(VERIFICATIONS)}")
        return cls(text.lower(), tag, parse_micros(price) if price else None, verification)

    def matches(self, listing: Listing) -> bool:
        card = listing.card
        if self.tag and self.tag not in (card.tags or ()):
            return False
        if self.verification and listing.verification != self.verification:
            return False
        if self.price_max_micros is not None and listing.price_micros > self.price_max_micros:
            return False
        haystack = " ".join([card.name, card.description or "", *(card.tags or ())]).lower()
        return self.text in haystack


class Marketplace:
    """The listed cards of every active tenant, read through the kernel's skills services, cached briefly."""

    def __init__(self, kernel: Kernel, cache_s: float = MARKETPLACE_CACHE_S) -> None:
        self._kernel = kernel
        self._cache_s = cache_s
        self._read_at = -float("inf")
        self._listings: list[Listing] = []
        self._lock = anyio.Lock()

    async def listings(self) -> list[Listing]:
        """Every listed card of the active tenants (bounded), in marketplace order (:meth:`Listing.rank`)."""
        async with self._lock:
            if time.monotonic() - self._read_at >= self._cache_s:
                self._listings = await self._read()
                self._read_at = time.monotonic()
            return self._listings

    async def _read(self) -> list[Listing]:
        tenants = [t for t in await self._kernel.tenants.list() if t.active][:MARKETPLACE_TENANTS_MAX]
        out: list[Listing] = []
        for tenant in sorted(tenants, key=lambda t: t.slug):
            skills = self._kernel.tenant(tenant.slug).skills
            cards = await skills.marketplace(limit=MARKETPLACE_PER_TENANT_MAX)
            demand = await skills.demand()
            listed = [c for c in cards if c.commerce and c.commerce.marketplace_listed]
            out.extend(Listing(tenant.slug, c, demand.get(c.id, SkillDemand())) for c in listed)
        return sorted(out, key=Listing.rank)

    async def search(self, query: Query) -> list[Listing]:
        """The listings matching ``query``, at most ``MARKETPLACE_RESULTS_MAX``."""
        return [x for x in await self.listings() if query.matches(x)][:MARKETPLACE_RESULTS_MAX]

    async def tags(self) -> list[str]:
        return sorted({t for x in await self.listings() for t in (x.card.tags or ())})[:MARKETPLACE_RESULTS_MAX]

    async def card(self, tenant: str, skill_id: str) -> Listing:
        """One listed card; SOS-4040 for anything not listed right now (whatever exists behind the id)."""
        for listing in await self.listings():
            if listing.tenant == tenant and listing.card.id == skill_id:
                return listing
        raise NotFound("no such skill in the marketplace")
