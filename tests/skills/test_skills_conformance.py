"""Skills marketplace conformance on every backend, and the exact split as a property."""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import anyio
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import sos_kernel
from sos_kernel.contracts import SkillCard, SkillRevenueSplit, SkillVerification
from sos_kernel.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    LimitExceeded,
    SchemaViolation,
    SkillNotFound,
)
from sos_kernel.identity import AgentKey, Capability
from sos_kernel.skills import (
    FIXED_SHARES_MAX,
    SKILL_EVENT_TYPE,
    SkillDemand,
    SkillRecord,
    Skills,
    SkillStats,
    check_split,
    split_price,
)

from ..conftest import Api, Connect

pytestmark = pytest.mark.anyio


def skill(skill_id: str = "summarise", version: str = "1.0.0", **kw: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "schema_version": "1",
        "id": skill_id,
        "name": skill_id.title(),
        "version": version,
        "author_agent": "agent:author",
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "tags": ["text"],
        "runtime": {"entry_point": "skills/summarise.py", "backend": "local-python"},
    }
    card.update(kw)
    return card


def priced(price: int, split: dict[str, float] | None = None, **kw: Any) -> dict[str, Any]:
    commerce: dict[str, Any] = {"price_per_call_micros": price, "currency": "USD", "marketplace_listed": True}
    if split is not None:
        commerce["revenue_split"] = split
    return skill(commerce=commerce, **kw)


@pytest.fixture
async def skills(api: Api) -> Skills:
    led = api.ledger
    await led.open_account("system:treasury", "USD", allow_negative=True)
    await led.open_account("agent:caller", "USD")
    await led.transfer(id="fund", debit="system:treasury", credit="agent:caller", amount=1_000_000, currency="USD")
    return api.skills


async def test_publish_is_idempotent_and_versions_are_immutable(skills: Skills) -> None:
    first = await skills.publish(skill())
    assert first.verification is not None
    assert first.verification.status == "unverified"
    assert first.earnings is not None
    assert first.earnings.total_invocations == 0
    again = await skills.publish(skill())
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        await skills.publish(skill(description="changed"))
    # author-claimed verification and earnings are not taken from the card
    claimed = await skills.publish(
        skill(version="1.1.0", verification={"status": "human_verified"}, earnings={"total_invocations": 99})
    )
    assert claimed.verification is not None
    assert claimed.verification.status == "unverified"
    assert claimed.earnings is not None
    assert claimed.earnings.total_invocations == 0


async def test_semver_resolution(skills: Skills) -> None:
    for v in ("1.0.0", "1.2.0", "1.2.5", "1.10.0", "2.0.0-beta.1", "0.3.1"):
        await skills.publish(skill(version=v))
    assert await skills.versions("summarise") == ["0.3.1", "1.0.0", "1.2.0", "1.2.5", "1.10.0", "2.0.0-beta.1"]
    assert (await skills.get("summarise")).version == "1.10.0"
    assert (await skills.get("summarise", "^1.2")).version == "1.10.0"
    assert (await skills.get("summarise", "~1.2")).version == "1.2.5"
    assert (await skills.get("summarise", "^0.3")).version == "0.3.1"
    assert (await skills.get("summarise", ">=1.0 <1.2.5")).version == "1.2.0"
    assert (await skills.get("summarise", "2.0.0-beta.1")).version == "2.0.0-beta.1"
    with pytest.raises(SkillNotFound):
        await skills.get("summarise", "^3")
    with pytest.raises(SkillNotFound):
        await skills.get("nothing")
    with pytest.raises(InvalidArgument):
        await skills.get("summarise", "^x")


async def test_only_the_author_publishes_new_versions(skills: Skills) -> None:
    await skills.publish(skill())
    with pytest.raises(Forbidden):
        await skills.publish(skill(version="2.0.0", author_agent="agent:mallory"))
    with pytest.raises(Forbidden):
        await skills.publish(skill(version="2.0.0"), publisher="agent:mallory")
    assert (await skills.publish(skill(version="2.0.0"), publisher="agent:author")).version == "2.0.0"


async def test_lineage_needs_known_parents_and_walks_both_ways(skills: Skills) -> None:
    await skills.publish(skill("base-skill"))
    with pytest.raises(SkillNotFound) as info:
        await skills.publish(skill("fork-one", lineage=[{"parent_skill_id": "ghost", "relation": "forked"}]))
    assert info.value.code == "SOS-6020"
    await skills.publish(skill("fork-one", lineage=[{"parent_skill_id": "base-skill", "relation": "forked"}]))
    await skills.publish(skill("refined", lineage=[{"parent_skill_id": "fork-one", "relation": "refined"}]))
    assert [c.id for c in await skills.ancestors("refined")] == ["fork-one", "base-skill"]
    assert [c.id for c in await skills.descendants("base-skill")] == ["fork-one", "refined"]


async def test_find_marketplace_and_verification(skills: Skills) -> None:
    await skills.publish(priced(10, skill_id="alpha"))
    await skills.publish(priced(10, skill_id="bravo", tags=["code"]))
    await skills.publish(skill("hidden"))  # not listed
    await skills.publish(priced(10, skill_id="charlie"))
    assert [c.id for c in await skills.find(tag="code")] == ["bravo"]
    assert [c.id for c in await skills.find(listed=False)] == ["hidden"]
    assert [c.id for c in await skills.find(author="agent:author", backend="local-python")] == [
        "alpha",
        "bravo",
        "charlie",
        "hidden",
    ]
    await skills.verify(
        "charlie", "1.0.0", verifier="human:reviewer", status="human_verified", sample_output_refs=["sha256:abc"]
    )
    await skills.verify("bravo", "1.0.0", verifier="agent:ci", status="auto_verified")
    await skills.verify("alpha", "1.0.0", verifier="agent:ci", status="disputed", reason="wrong output")
    market = await skills.marketplace()
    assert [c.id for c in market] == ["charlie", "bravo"]
    assert [c.id for c in await skills.marketplace(limit=1, offset=1)] == ["bravo"]
    charlie = await skills.get("charlie")
    assert charlie.verification is not None
    assert charlie.verification.verified_by == ["human:reviewer"]
    assert charlie.verification.sample_output_refs == ["sha256:abc"]
    assert [c.id for c in await skills.find(status="disputed")] == ["alpha"]
    with pytest.raises(InvalidArgument):
        await skills.verify("bravo", "1.0.0", verifier="agent:ci", status="disputed")
    resolved = await skills.resolve_dispute("alpha", "1.0.0", verifier="human:reviewer", status="human_verified")
    assert resolved.verification is not None
    assert resolved.verification.status == "human_verified"
    assert next(c.id for c in await skills.marketplace()) in {"alpha", "charlie"}


async def test_find_refuses_filters_of_the_wrong_type(skills: Skills) -> None:
    await skills.publish(priced(10, skill_id="alpha"))
    for bad in ({"listed": "abc"}, {"listed": 1}):
        with pytest.raises(InvalidArgument) as info:
            await skills.find(**bad)
        assert info.value.code == "SOS-4005"
        assert info.value.details["field"] == next(iter(bad))
    assert [c.id for c in await skills.find(listed=True)] == ["alpha"]


@pytest.mark.live
async def test_paid_invocation_splits_exactly_and_counts_once(api: Api, skills: Skills) -> None:
    await skills.publish(priced(1_001, {"author": 0.7, "operator": 0.2, "network": 0.1}))
    inv = await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="inv-1")
    # operator floor(200.2) = 200, network floor(100.1) = 100, author gets the rest 701
    assert inv.payouts == {"author": 701, "operator": 200, "network": 100}
    assert sum(inv.payouts.values()) == inv.price_micros == 1_001
    again = await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="inv-1")
    assert again.replayed
    led = api.ledger
    assert (await led.balance("agent:caller", "USD")).posted == 1_000_000 - 1_001
    assert (await led.balance("agent:author", "USD")).posted == 701
    assert (await led.balance("system:operator", "USD")).posted == 200
    assert (await led.balance("system:network", "USD")).posted == 100
    card = await skills.get("summarise")
    assert card.earnings is not None
    assert (card.earnings.total_invocations, card.earnings.total_earned_micros) == (1, 1_001)
    assert card.earnings.invocations_by_tenant == {"default": 1}
    events = [m for m in await api.bus.history("sos:channel:skills") if m.type == SKILL_EVENT_TYPE]
    assert len(events) == 1
    await led.check()


async def test_insufficient_funds_changes_no_counter(api: Api, skills: Skills) -> None:
    await skills.publish(priced(5_000_000))
    with pytest.raises(InsufficientFunds):
        await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="too-much")
    card = await skills.get("summarise")
    assert card.earnings is not None
    assert card.earnings.total_invocations == 0
    assert (await api.ledger.balance("agent:caller", "USD")).posted == 1_000_000
    await api.ledger.check()


async def test_free_skill_counts_without_money(skills: Skills) -> None:
    await skills.publish(skill())
    inv = await skills.record_invocation("summarise", caller="agent:nobody", tenant="default", invocation_id="free-1")
    assert (inv.price_micros, inv.transfers) == (0, ())
    assert (await skills.get("summarise")).earnings.total_invocations == 1  # type: ignore[union-attr]


async def test_a_caller_caps_the_price_it_pays(api: Api, skills: Skills) -> None:
    """A range picking up a price rise is refused under the caller's cap (SOS-4010), nothing charged or counted."""
    await skills.publish(priced(1_000))
    call = {"caller": "agent:caller", "tenant": "default", "max_price_micros": 1_000}
    first = await skills.record_invocation("summarise", "^1", invocation_id="cap-1", **call)
    assert first.price_micros == 1_000
    await skills.publish(priced(300_000, version="1.0.1"))
    with pytest.raises(LimitExceeded) as refused:
        await skills.record_invocation("summarise", "^1", invocation_id="cap-2", **call)
    assert refused.value.code == "SOS-4010"
    assert refused.value.details == {"limit": "max_price_micros", "max": 1_000, "price": 300_000, "version": "1.0.1"}
    assert (await api.ledger.balance("agent:caller", "USD")).posted == 1_000_000 - 1_000
    assert (await skills.get("summarise", "1.0.1")).earnings.total_invocations == 0  # type: ignore[union-attr]
    events = [m for m in await api.bus.history("sos:channel:skills") if m.type == SKILL_EVENT_TYPE]
    assert len(events) == 1
    pinned = await skills.record_invocation("summarise", "1.0.0", invocation_id="cap-3", **call)
    assert pinned.price_micros == 1_000
    uncapped = await skills.record_invocation(
        "summarise", "^1", caller="agent:caller", tenant="default", invocation_id="cap-4"
    )
    assert uncapped.price_micros == 300_000
    for bad in (-1, 1.5):
        with pytest.raises(InvalidArgument):
            await skills.record_invocation(
                "summarise", "^1", invocation_id="cap-5", **{**call, "max_price_micros": bad}
            )


async def test_an_author_invokes_its_own_paid_skill_for_free(api: Api, skills: Skills) -> None:
    """The author pays nothing (no transfer to itself, no fees) and its call is counted, not as demand."""
    await skills.publish(priced(1_001, {"author": 0.7, "operator": 0.2, "network": 0.1}))
    own = await skills.record_invocation("summarise", caller="agent:author", tenant="default", invocation_id="own-1")
    assert (own.price_micros, own.transfers, own.replayed) == (0, (), False)
    assert own.payouts == {"author": 0, "operator": 0, "network": 0}
    again = await skills.record_invocation("summarise", caller="agent:author", tenant="default", invocation_id="own-1")
    assert again.replayed
    paid = await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="own-2")
    assert paid.price_micros == 1_001
    earnings = (await skills.get("summarise")).earnings
    assert earnings is not None
    assert (earnings.total_invocations, earnings.total_earned_micros) == (2, 1_001)
    events = [m for m in await api.bus.history("sos:channel:skills") if m.type == SKILL_EVENT_TYPE]
    assert sorted(m.payload.price_micros for m in events) == [0, 1_001]
    await api.ledger.check()


async def test_concurrent_invocations_with_retries_count_once_each(api: Api, skills: Skills) -> None:
    await skills.publish(priced(10, {"author": 0.5, "operator": 0.5}))

    async def call(i: int) -> None:
        await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id=f"c{i % 8}")

    async with anyio.create_task_group() as tg:
        for i in range(24):  # every invocation id is sent three times
            tg.start_soon(call, i)
    card = await skills.get("summarise")
    assert card.earnings is not None
    assert card.earnings.total_invocations == 8
    assert (await api.ledger.balance("agent:caller", "USD")).posted == 1_000_000 - 80
    await api.ledger.check()


async def test_bad_cards_give_field_paths(skills: Skills) -> None:
    with pytest.raises(SchemaViolation) as info:
        await skills.publish(skill(version="one"))
    assert info.value.details["errors"][0]["loc"] == "version"
    with pytest.raises(SchemaViolation):
        await skills.publish(priced(10, {"author": 0.7, "operator": 0.2}))  # sums to 0.9
    with pytest.raises(SchemaViolation):
        await skills.publish(skill(commerce={"marketplace_listed": True}, runtime={"backend": "custom"}))


@settings(max_examples=300, deadline=None)
@given(
    price=st.integers(min_value=0, max_value=2**53 - 1),
    shares=st.lists(st.integers(min_value=0, max_value=1000), min_size=3, max_size=3).filter(lambda s: sum(s) > 0),
)
def test_split_parts_always_sum_to_the_price(price: int, shares: list[int]) -> None:
    # an author share of 0 with network = 1 - operator in floats can sum over 1 by 1e-17: refused (next test)
    assume(shares[0] > 0)
    total = sum(shares)
    author, operator = shares[0] / total, shares[1] / total
    split = SkillRevenueSplit(author=author, operator=operator, network=max(0.0, 1 - author - operator))
    parts = split_price(price, split)
    assert sum(parts.values()) == price
    assert all(v >= 0 for v in parts.values())
    assert all(isinstance(v, int) for v in parts.values())


ATTACK_SPLIT = {"operator": 0.5005, "network": 0.5005}
"""Within the schema's ±0.001 of 1, but operator and network alone take 1.001 of the price."""


def _share(draw: st.DrawFn) -> float:
    exact = st.decimals(min_value=0, max_value=1, places=4).map(float)
    return draw(st.one_of(exact, st.floats(min_value=0, max_value=1)))


@st.composite
def _splits(draw: st.DrawFn) -> dict[str, float]:
    """Splits the schema accepts, many of them with operator + network just over 1."""
    operator = _share(draw)
    network = draw(st.one_of(st.just(1 - operator), st.just(1.0005 - operator), st.floats(0, 1)))
    author = 1 - operator - network + draw(st.floats(min_value=-0.001, max_value=0.001))
    split = {"operator": operator, "network": min(max(network, 0.0), 1.0)}
    if draw(st.booleans()):
        split["author"] = min(max(author, 0.0), 1.0)
    return split


@settings(max_examples=500, deadline=None)
@given(price=st.integers(min_value=0, max_value=2**63 - 1), wire=_splits())
@example(price=1_000_000, wire=ATTACK_SPLIT)
def test_any_split_check_split_accepts_pays_exactly_the_price_and_no_negative_part(
    price: int, wire: dict[str, float]
) -> None:
    try:
        split = SkillRevenueSplit.model_validate(wire)
    except ValidationError:
        assume(False)
        return
    fixed = Fraction(str(wire["operator"])) + Fraction(str(wire["network"]))
    if fixed > FIXED_SHARES_MAX:  # refused at publish, and never paid by
        with pytest.raises(InvalidArgument) as info:
            check_split(split)
        assert info.value.code == "SOS-4005"
        with pytest.raises(InvalidArgument):
            split_price(price, split)
        return
    check_split(split)
    parts = split_price(price, split)
    assert all(type(v) is int and v >= 0 for v in parts.values())
    assert sum(parts.values()) == price


@pytest.mark.parametrize("price", [1_000_000, 1, 0])
async def test_a_split_whose_operator_and_network_exceed_the_price_is_refused_at_publish(
    api: Api, skills: Skills, price: int
) -> None:
    """The attack's split (1.001 of the price to operator and network) writes nothing, in-process and remote."""
    with pytest.raises(InvalidArgument) as info:
        await skills.publish(priced(price, ATTACK_SPLIT))
    assert info.value.code == "SOS-4005"
    assert info.value.details["field"] == "commerce.revenue_split"
    assert await skills.versions("summarise") == []
    # the most operator and network may take together is all of it: the author then gets nothing, never less
    await skills.publish(priced(1_000_000, {"author": 0.0, "operator": 0.5, "network": 0.5}))
    inv = await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="all")
    assert inv.payouts == {"author": 0, "operator": 500_000, "network": 500_000}
    assert (await api.ledger.balance("agent:caller", "USD")).posted == 0
    await api.ledger.check()


async def test_a_version_stored_with_a_split_over_the_price_is_never_charged(
    kernel: sos_kernel.Kernel, api: Api, skills: Skills
) -> None:
    """A card written before publish refused such splits: invoking it is SOS-4005 and charges and counts nothing."""
    card = SkillCard.model_validate(priced(1_000_000, ATTACK_SPLIT))
    stored = SkillRecord(
        card.id, card.version, card.to_json(), "digest", SkillVerification().to_json(), SkillStats(), time.time()
    )
    await kernel.backend.skills.put_version("default", stored, card.author_agent)
    with pytest.raises(InvalidArgument) as info:
        await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="old")
    assert info.value.code == "SOS-4005"
    assert "summarise 1.0.0" in info.value.message
    assert (await api.ledger.balance("agent:caller", "USD")).posted == 1_000_000
    assert (await skills.get("summarise")).earnings.total_invocations == 0  # type: ignore[union-attr]
    assert not [m for m in await api.bus.history("sos:channel:skills") if m.type == SKILL_EVENT_TYPE]
    await api.ledger.check()


async def test_a_capability_holder_may_publish_someone_elses_skill(kernel: sos_kernel.Kernel, skills: Skills) -> None:
    from datetime import UTC, datetime, timedelta

    from sos_kernel.identity import AgentKey, Capability

    await skills.publish(skill())
    issuer = AgentKey.generate()
    kernel.tenant("default").capabilities.trust(issuer.public)
    grant = Capability.issue(
        issuer,
        issuer="tenant:default",
        subject="agent:maintainer",
        action="skills:publish",
        resource="skill:summarise",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    published = await skills.publish(skill(version="1.1.0"), publisher="agent:maintainer", capability=[grant])
    assert (published.version, published.author_agent) == ("1.1.0", "agent:author")
    with pytest.raises(Forbidden):  # the capability lets the holder publish for the author, not become the author
        await skills.publish(
            skill(version="1.1.1", author_agent="agent:maintainer"), publisher="agent:maintainer", capability=[grant]
        )
    other = Capability.issue(
        issuer,
        issuer="tenant:default",
        subject="agent:maintainer",
        action="skills:publish",
        resource="skill:another",
    )
    with pytest.raises(Forbidden):
        await skills.publish(skill(version="1.2.0"), publisher="agent:maintainer", capability=[other])
    kernel.tenant("default").capabilities.distrust(issuer.key_id)
    with pytest.raises(Forbidden):
        await skills.publish(skill(version="1.3.0"), publisher="agent:maintainer", capability=[grant])


# --- capabilities presented to publish -------------------------------------------------------------------------------


def _child(parent: Capability, key: AgentKey, **fields: Any) -> Capability:
    """A child of ``parent`` with fields chosen by hand (its id too), validly signed with ``key``."""
    body: dict[str, Any] = {
        **parent.model_dump(exclude={"signature", "subject_key"}),
        "issuer": parent.subject,
        "key_id": key.key_id,
        "parent_id": parent.id,
        **fields,
    }
    unsigned = Capability(**body)
    return unsigned.model_copy(update={"signature": key.sign(unsigned.canonical())})


async def _publish_outcomes(session: Any, chain: list[Capability], versions: list[str]) -> list[str]:
    out = []
    for version in versions:
        try:
            await session.skills.publish(skill(version=version), capability=chain)
        except Forbidden as exc:
            out.append(exc.code)
        else:
            out.append("ok")
    return out


@pytest.fixture
async def crew(kernel: sos_kernel.Kernel, connect: Connect) -> dict[str, Any]:
    """Tenant ``acme``: sessions for agent:author (who owns ``summarise``), agent:maintainer and agent:thief, and an
    issuer key the tenant trusts."""
    await kernel.tenants.create("acme", plan="growth")
    tokens = kernel.tenant("acme").tokens
    crew: dict[str, Any] = {}
    for name in ("author", "maintainer", "thief"):
        crew[name] = await connect((await tokens.issue(agent=f"agent:{name}")).secret)
    await crew["author"].skills.publish(skill())
    crew["issuer"] = AgentKey.generate()
    kernel.tenant("acme").capabilities.trust(crew["issuer"].public)
    return crew


def _grant(crew: dict[str, Any], subject: str, resource: str, **kw: Any) -> Capability:
    return Capability.issue(
        crew["issuer"], issuer="tenant:acme", subject=subject, action="skills:publish", resource=resource, **kw
    )


async def test_a_capability_counts_only_for_its_leafs_subject(
    kernel: sos_kernel.Kernel, connect: Connect, crew: dict[str, Any]
) -> None:
    grant = _grant(crew, "agent:maintainer", "skill:summarise")
    with pytest.raises(Forbidden) as info:  # a chain seen on the wire is not a right of whoever replays it
        await crew["thief"].skills.publish(skill(version="1.1.0"), capability=[grant])
    assert info.value.code == "SOS-5004"
    assert (await crew["maintainer"].skills.publish(skill(version="1.1.0"), capability=[grant])).version == "1.1.0"
    # a token with no agent is nobody's subject, and not the author either
    anonymous = await connect((await kernel.tenant("acme").tokens.issue(scopes=["skills:publish"])).secret)
    for chain in ([grant], None):
        with pytest.raises(Forbidden):
            await anonymous.skills.publish(skill(version="1.2.0"), capability=chain)
    # the tenant's admin is not bound to the chain's subject
    admin = await connect((await kernel.tenant("acme").tokens.issue(scopes=["admin"])).secret)
    assert (await admin.skills.publish(skill(version="1.3.0"), capability=[grant])).version == "1.3.0"
    assert await crew["author"].skills.versions("summarise") == ["1.0.0", "1.1.0", "1.3.0"]


async def test_a_publish_grants_use_limit_cannot_be_reset_or_drained_by_a_colliding_id(crew: dict[str, Any]) -> None:
    maintainer_key, thief_key = AgentKey.generate(), AgentKey.generate()
    limited = _grant(crew, "agent:maintainer", "skill:summarise", uses=1)
    side = _grant(crew, "agent:maintainer", "skill:side-*", subject_key=maintainer_key.public)
    # The maintainer signs, under an unrelated unlimited grant, a child with the limited grant's id.
    seed = _child(side, maintainer_key, id=limited.id, resource="skill:side-tool", uses_remaining=1_000_000)
    await crew["maintainer"].skills.publish(skill("side-tool"), capability=[side, seed])
    versions = [f"1.{i}.0" for i in range(1, 21)]
    assert await _publish_outcomes(crew["maintainer"], [limited], versions) == ["ok"] + ["SOS-5004"] * 19
    # re-publishing the same version writes nothing and spends nothing
    assert await _publish_outcomes(crew["maintainer"], [limited], ["1.1.0"]) == ["ok"]
    # The reverse: the thief drains a grant it does not hold by spending a child with its id.
    victims = _grant(crew, "agent:maintainer", "skill:summarise", uses=3)
    thiefs = _grant(crew, "agent:thief", "skill:side-*", subject_key=thief_key.public)
    drain = _child(thiefs, thief_key, id=victims.id, resource="skill:side-drain", uses_remaining=1)
    await crew["thief"].skills.publish(skill("side-drain"), capability=[thiefs, drain])
    versions = [f"2.{i}.0" for i in range(4)]
    assert await _publish_outcomes(crew["maintainer"], [victims], versions) == ["ok"] * 3 + ["SOS-5004"]


async def test_a_chain_that_changes_a_constraints_type_is_refused(crew: dict[str, Any]) -> None:
    key = AgentKey.generate()
    constraints = {"versions_max": 5, "review": True}
    grant = _grant(crew, "agent:maintainer", "skill:summarise", subject_key=key.public, constraints=constraints)
    for changed in ({"versions_max": 5.0}, {"review": 1}, {"versions_max": True}):
        child = _child(grant, key, constraints={**constraints, **changed})
        with pytest.raises(Forbidden) as info:
            await crew["maintainer"].skills.publish(skill(version="1.1.0"), capability=[grant, child])
        assert info.value.code == "SOS-5004"
    published = await crew["maintainer"].skills.publish(skill(version="1.1.0"), capability=[grant, _child(grant, key)])
    assert published.version == "1.1.0"


async def test_a_republish_that_changes_only_a_values_type_is_a_conflict(skills: Skills) -> None:
    await skills.publish(skill(input_schema={"type": "object", "maxProperties": 1}))
    for changed in (1.0, True):
        with pytest.raises(IdempotencyConflict):
            await skills.publish(skill(input_schema={"type": "object", "maxProperties": changed}))
    assert (await skills.publish(skill(input_schema={"type": "object", "maxProperties": 1}))).version == "1.0.0"


async def test_concurrent_first_publishes_of_a_new_id_give_it_exactly_one_owner(skills: Skills) -> None:
    ids = [f"raced-{i}" for i in range(40)]
    refused: list[str] = []

    async def publish(skill_id: str, author: str, version: str) -> None:
        try:
            await skills.publish(skill(skill_id, version, author_agent=author))
        except Forbidden:
            refused.append(skill_id)

    async with anyio.create_task_group() as tg:
        for skill_id in ids:  # alice and bob claim every new id at the same moment
            tg.start_soon(publish, skill_id, "agent:alice", "1.0.0")
            tg.start_soon(publish, skill_id, "agent:bob", "2.0.0")
    assert sorted(refused) == sorted(ids)
    for skill_id in ids:
        versions = await skills.versions(skill_id)
        authors = {(await skills.get(skill_id, v)).author_agent for v in versions}
        assert (len(versions), len(authors)) == (1, 1), (skill_id, versions, authors)


async def test_a_paid_invocation_whose_last_leg_cannot_pay_moves_nothing_and_replays_alike(
    api: Api, skills: Skills
) -> None:
    await skills.publish(priced(1_000, {"author": 0.85, "operator": 0.10, "network": 0.05}))
    led = api.ledger
    # the caller holds 990: the author's 850 and the operator's 100 fit, the network's 50 does not
    await led.transfer(
        id="drain", debit="agent:caller", credit="system:treasury", amount=1_000_000 - 990, currency="USD"
    )
    for _ in range(2):  # the first attempt, then its replay
        with pytest.raises(InsufficientFunds) as caught:
            await skills.record_invocation("summarise", caller="agent:caller", tenant="default", invocation_id="short")
        assert caught.value.code == "SOS-7001"
    for part in ("author", "operator", "network"):
        assert (await led.get_transfer(f"skill:short:{part}")).status == "failed"
    assert (await led.balance("agent:caller", "USD")).posted == 990
    for owner in ("agent:author", "system:operator", "system:network"):
        assert (await led.balance(owner, "USD")).posted == 0
    card = await skills.get("summarise")
    assert card.earnings is not None
    assert (card.earnings.total_invocations, card.earnings.total_earned_micros) == (0, 0)
    assert not [m for m in await api.bus.history("sos:channel:skills") if m.type == SKILL_EVENT_TYPE]
    await led.check()


async def _outcome(api: Api, skills: Skills) -> tuple[int, dict[str, tuple[int, int]], int]:
    """The caller's balance, each skill's (invocations, earned) and the number of skill events."""
    counters = {}
    for skill_id in ("free", "paid", "other"):
        e = (await skills.get(skill_id)).earnings
        counters[skill_id] = (e.total_invocations or 0, e.total_earned_micros or 0) if e else (0, 0)
    events = [m for m in await api.bus.history("sos:channel:skills") if m.type == SKILL_EVENT_TYPE]
    return (await api.ledger.balance("agent:caller", "USD")).posted, counters, len(events)


async def test_an_invocation_id_is_bound_to_one_skill_version_caller_and_price(api: Api, skills: Skills) -> None:
    await skills.publish(skill("free"))
    await skills.publish(priced(1_000, skill_id="paid"))
    await skills.publish(priced(1_000, skill_id="other"))  # same price and author as "paid"
    first = await skills.record_invocation("free", caller="agent:caller", tenant="default", invocation_id="q1")
    assert not first.replayed
    await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="q2")
    before = await _outcome(api, skills)
    reuses = [
        ("paid", "agent:caller", "q1"),  # a paid skill on a free skill's id
        ("other", "agent:caller", "q2"),  # another paid skill of equal price and author
        ("free", "agent:caller", "q2"),  # a free skill on a paid skill's id
        ("free", "agent:someone", "q1"),  # the same skill for another caller
    ]
    for skill_id, caller, invocation_id in reuses:
        with pytest.raises(IdempotencyConflict) as caught:
            await skills.record_invocation(skill_id, caller=caller, tenant="default", invocation_id=invocation_id)
        assert caught.value.code == "SOS-4009"
        assert caught.value.details == {"invocation_id": invocation_id}
        assert await _outcome(api, skills) == before, (skill_id, invocation_id)
    for skill_id, invocation_id in (("free", "q1"), ("paid", "q2")):  # a true replay still replays, exactly
        again = await skills.record_invocation(
            skill_id, caller="agent:caller", tenant="default", invocation_id=invocation_id
        )
        assert (again.replayed, again.skill_id, again.invocation_id) == (True, skill_id, invocation_id)
    assert await _outcome(api, skills) == before
    assert before[0] == 1_000_000 - 1_000
    assert before[1] == {"free": (1, 0), "paid": (1, 1_000), "other": (0, 0)}
    await api.ledger.check()


async def test_a_paid_call_on_an_id_counted_without_a_binding_moves_nothing(
    kernel: sos_kernel.Kernel, api: Api, skills: Skills
) -> None:
    await skills.publish(skill("free"))
    await skills.publish(priced(1_000, skill_id="paid"))
    await skills.publish(priced(1_000, skill_id="other"))
    # an id counted by an earlier release, which kept no binding: the store's count alone
    assert await kernel.backend.skills.record_invocation("default", "free", "1.0.0", "old", "default", 0, 1.0)
    before = await _outcome(api, skills)
    with pytest.raises(IdempotencyConflict) as caught:
        await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="old")
    assert caught.value.code == "SOS-4009"
    assert await _outcome(api, skills) == before
    assert before[0] == 1_000_000
    await api.ledger.check()


async def test_an_invocation_ids_binding_and_count_are_each_set_once_in_any_order(kernel: sos_kernel.Kernel) -> None:
    # the store's primitives: bound then counted, counted (with no binding) then bound; neither ever changes
    store = kernel.backend.skills
    await kernel.skills.publish(skill("free"))
    count = ("default", "free", "1.0.0")
    assert await store.bind_invocation("default", "a", "x") == "x"
    assert not await store.counted("default", "a")
    assert await store.bind_invocation("default", "a", "y") == "x"
    assert await store.record_invocation(*count, "a", "default", 0, 1.0)
    assert not await store.record_invocation(*count, "a", "default", 0, 2.0)
    assert await store.counted("default", "a")
    assert await store.bind_invocation("default", "a", "y") == "x"
    assert await store.record_invocation(*count, "b", "default", 0, 3.0)
    assert await store.counted("default", "b")
    assert await store.bind_invocation("default", "b", "z") == "z"
    assert await store.bind_invocation("default", "b", "w") == "z"
    assert not await store.record_invocation(*count, "b", "default", 0, 4.0)
    assert await store.counted("default", "b")
    assert not await store.counted("acme", "a")
    assert await store.bind_invocation("acme", "a", "y") == "y"  # per tenant
    e = (await kernel.skills.get("free")).earnings
    assert e is not None
    assert e.total_invocations == 2


async def test_only_an_agent_invoking_for_itself_is_demand(
    kernel: sos_kernel.Kernel, connect: Connect, crew: dict[str, Any]
) -> None:
    """In-process and over HTTP: the maintainer calling as itself is demand; callers an admin token, a token bound to
    no agent, or the trusted handle name are counted as invocations but are not demand."""
    acme = kernel.tenant("acme")
    await crew["maintainer"].skills.record_invocation(
        "summarise", caller="agent:maintainer", tenant="acme", invocation_id="own"
    )
    issued = await acme.tokens.issue(scopes=["admin"])
    admin = await connect(issued.secret)
    for n in range(5):
        await admin.skills.record_invocation("summarise", caller=f"agent:s{n}", tenant="acme", invocation_id=f"a{n}")
        await acme.skills.record_invocation("summarise", caller=f"agent:t{n}", tenant="acme", invocation_id=f"t{n}")
    # an admin token's own "token:<id>" actor is not an agent either
    await admin.skills.record_invocation("summarise", caller=f"token:{issued.id}", tenant="acme", invocation_id="tok")
    assert (await acme.skills.demand())["summarise"] == SkillDemand(callers=1, paying_callers=0)
    assert (await acme.skills.get("summarise")).earnings.total_invocations == 12  # type: ignore[union-attr]
