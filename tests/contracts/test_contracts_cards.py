"""AgentCard, SkillCard and UsageEvent against the SOS v0.4.1 card schemas, and the SkillCard invariants."""

from __future__ import annotations

import json
from typing import Any

import pytest
from contract_support import (
    CARD_NAMES,
    canonical,
    from_schema,
    iter_properties,
    reference_schema,
    reference_validator,
    set_path,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sos_kernel.contracts import (
    REVENUE_SPLIT_TOLERANCE,
    AgentCard,
    ProviderCard,
    SkillCard,
    SkillCommerce,
    SkillRevenueSplit,
    SkillRuntime,
    UsageEvent,
    WireRequired,
)

CARDS: dict[str, type[WireRequired]] = {
    "agent_card": AgentCard,
    "skill_card": SkillCard,
    "usage_event": UsageEvent,
    "provider_card": ProviderCard,
}
SPLIT_FIELDS = ("author", "operator", "network")
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@st.composite
def revenue_splits(draw: st.DrawFn) -> dict[str, float]:
    """A split whose set fields sum to 1.0 (up to float rounding)."""
    names = draw(st.lists(st.sampled_from(SPLIT_FIELDS), min_size=1, max_size=3, unique=True))
    weights = [draw(st.integers(0, 1000)) for _ in names]
    assume(sum(weights) > 0)
    return {name: weight / sum(weights) for name, weight in zip(names, weights, strict=True)}


@st.composite
def skill_cards(draw: st.DrawFn) -> dict[str, Any]:
    """Skill cards valid under the reference schema and under the two invariants it cannot express."""
    card: dict[str, Any] = draw(from_schema(reference_schema("skill_card")))
    commerce = card.get("commerce")
    if commerce is not None and "revenue_split" in commerce:
        commerce["revenue_split"] = draw(revenue_splits())
    if commerce is not None and commerce.get("marketplace_listed"):
        card.setdefault("runtime", {}).setdefault("entry_point", "skills/summarise.py:run")
    return card


STRATEGIES = {
    "agent_card": from_schema(reference_schema("agent_card")),
    "skill_card": skill_cards(),
    "usage_event": from_schema(reference_schema("usage_event")),
    "provider_card": from_schema(reference_schema("provider_card")),
}


@pytest.mark.parametrize("name", CARD_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_reference_valid_card_is_accepted_unchanged(name: str, data: st.DataObject) -> None:
    wire = data.draw(STRATEGIES[name], label=name)
    validator = reference_validator(name)
    assume(validator.is_valid(wire))

    card = CARDS[name].from_wire(wire)

    emitted = card.to_wire()
    validator.validate(emitted)
    schema = reference_schema(name)
    assert canonical(schema, emitted) == canonical(schema, wire)
    text = json.dumps(wire)
    assert CARDS[name].from_wire(text) == card
    assert CARDS[name].from_wire(text.encode()) == card
    assert CARDS[name].from_wire(card.to_json()) == card


# --- built in Python ----------------------------------------------------------------------------------------


PYTHON_BUILT = {
    "agent_card": lambda: AgentCard(name="bob", tool="sdk", type="remote", role="executor"),
    "skill_card": lambda: SkillCard(
        id="summarise",
        name="Summarise",
        version="1.0.0",
        author_agent="agent:bob",
        input_schema={"type": "object"},
        output_schema={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    ),
    "usage_event": lambda: UsageEvent(tenant="acme", provider="anthropic", model="claude-sonnet-4-6"),
    "provider_card": lambda: ProviderCard(
        id="claude", name="Claude", backend="claude-adapter", tier="primary", model="claude-sonnet-4-6"
    ),
}


@pytest.mark.parametrize("name", CARD_NAMES)
def test_python_built_cards_validate_under_the_reference(name: str) -> None:
    card = PYTHON_BUILT[name]()
    wire = card.to_wire()
    reference_validator(name).validate(wire)
    assert CARDS[name].from_wire(wire) == card
    for field, sub in reference_schema(name)["properties"].items():
        if "default" in sub:
            assert wire[field] == sub["default"], field


@pytest.mark.parametrize("name", CARD_NAMES)
def test_wire_cards_must_carry_every_required_field(name: str) -> None:
    wire = PYTHON_BUILT[name]().to_wire()
    for field in reference_schema(name)["required"]:
        broken = {k: v for k, v in wire.items() if k != field}
        assert not reference_validator(name).is_valid(broken)
        with pytest.raises(ValidationError) as info:
            CARDS[name].from_wire(broken)
        assert [(e["loc"], e["type"]) for e in info.value.errors()] == [((field,), "missing")]


@pytest.mark.parametrize("name", CARD_NAMES)
def test_cards_refuse_unknown_fields(name: str) -> None:
    wire = {**PYTHON_BUILT[name]().to_wire(), "bogus": 1}
    with pytest.raises(ValidationError, match="bogus"):
        CARDS[name].from_wire(wire)


def _card_paths(name: str, key: str) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    return [(name, path, sub) for path, sub in iter_properties(reference_schema(name)) if key in sub]


ENUMS = [case for name in CARD_NAMES for case in _card_paths(name, "enum") if len(case[1]) == 1]


@pytest.mark.parametrize(("name", "path", "sub"), ENUMS, ids=[f"{c[0]}:{'.'.join(c[1])}" for c in ENUMS])
def test_card_enums(name: str, path: tuple[str, ...], sub: dict[str, Any]) -> None:
    wire = PYTHON_BUILT[name]().to_wire()
    for value in sub["enum"]:
        assert CARDS[name].from_wire(set_path(wire, path, value)).to_wire()[path[0]] == value
    broken = set_path(wire, path, "bogus")
    assert not reference_validator(name).is_valid(broken)
    with pytest.raises(ValidationError):
        CARDS[name].from_wire(broken)


def test_agent_card_keeps_explicit_nulls_and_omits_absent_fields() -> None:
    wire = {**PYTHON_BUILT["agent_card"]().to_wire(), "project": None, "plan": None, "pid": None}
    emitted = AgentCard.from_wire(wire).to_wire()
    assert emitted == wire
    assert "model" not in emitted


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("name", "b"),
        ("name", "b" * 65),
        ("name", "Bob"),
        ("skills", ["a", "a"]),
        ("skills", ["Bad"]),
        ("cache_ttl_s", 86401),
        ("cache_ttl_s", "300"),
        ("last_cache_hit_rate", 1.5),
        ("last_cache_hit_rate", float("nan")),
        ("pid", True),
        ("summary", "s" * 281),
        ("registered_at", 1769860800),
        ("agent_card_version", "1.0"),
    ],
)
def test_agent_card_rejections(field: str, bad: Any) -> None:
    wire = {**PYTHON_BUILT["agent_card"]().to_wire(), field: bad}
    with pytest.raises(ValidationError) as info:
        AgentCard.from_wire(wire)
    assert info.value.errors()[0]["loc"][0] == field


def test_agent_card_takes_integral_floats_as_integers() -> None:
    wire = {**PYTHON_BUILT["agent_card"]().to_wire(), "cache_ttl_s": 300.0, "pid": 42.0, "last_cache_hit_rate": 1}
    emitted = AgentCard.from_wire(wire).to_wire()
    assert (emitted["cache_ttl_s"], emitted["pid"]) == (300, 42)
    assert type(emitted["cache_ttl_s"]) is int
    reference_validator("agent_card").validate(emitted)


# --- SkillCard invariants -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split",
    [
        {"author": 0.7, "operator": 0.2, "network": 0.1},
        {"author": 1.0},
        {"network": 1},
        {"author": 0.5, "operator": 0.5},
        {"author": 0.85, "operator": 0.1495},
        {"author": 0.3333, "operator": 0.3333, "network": 0.3333},
    ],
)
def test_revenue_split_summing_to_one_is_accepted(split: dict[str, float]) -> None:
    wire = _skill_wire(commerce={"revenue_split": split})
    assert SkillCard.from_wire(wire).to_wire()["commerce"]["revenue_split"] == split
    assert SkillRevenueSplit(**split) is not None


@pytest.mark.parametrize(
    "split",
    [
        {"author": 0.85, "operator": 0.1},
        {"author": 0.7, "operator": 0.2, "network": 0.2},
        {"author": 0.5},
        {"author": 0.85, "operator": 0.148},
        {"author": 0.0},
    ],
)
def test_revenue_split_not_summing_to_one_is_rejected(split: dict[str, float]) -> None:
    wire = _skill_wire(commerce={"revenue_split": split})
    # The reference schema cannot express the sum; SOS enforces it beside the schema, and so do we.
    reference_validator("skill_card").validate(wire)
    with pytest.raises(ValidationError) as info:
        SkillCard.from_wire(wire)
    assert info.value.errors()[0]["type"] == "revenue_split_sum"
    with pytest.raises(ValidationError):
        SkillRevenueSplit(**split)


@settings(max_examples=60, deadline=None)
@given(
    split=st.fixed_dictionaries(
        {},
        optional={name: st.floats(0, 1) | st.sampled_from([0.0, 0.1, 0.2, 0.7, 0.85, 1.0]) for name in SPLIT_FIELDS},
    ).filter(bool)
)
def test_revenue_split_is_accepted_exactly_when_it_sums_to_one(split: dict[str, float]) -> None:
    total = sum(split[name] for name in SPLIT_FIELDS if name in split)
    if abs(total - 1.0) <= REVENUE_SPLIT_TOLERANCE:
        assert SkillRevenueSplit(**split).model_dump(exclude_none=True) == split
    else:
        with pytest.raises(ValidationError):
            SkillRevenueSplit(**split)


@pytest.mark.parametrize("bad", [-0.1, 1.1, "0.5", True, None])
def test_revenue_split_fractions_are_numbers_in_range(bad: Any) -> None:
    with pytest.raises(ValidationError):
        SkillCard.from_wire(_skill_wire(commerce={"revenue_split": {"author": bad, "operator": 1.0}}))


def test_listed_skill_needs_an_entry_point() -> None:
    listed = {"marketplace_listed": True, "price_per_call_micros": 5000}
    for runtime in (None, {}, {"backend": "langgraph"}):
        wire = _skill_wire(commerce=listed, runtime=runtime)
        reference_validator("skill_card").validate(wire)
        with pytest.raises(ValidationError) as info:
            SkillCard.from_wire(wire)
        assert info.value.errors()[0]["type"] == "listed_needs_entry_point"
    card = SkillCard.from_wire(_skill_wire(commerce=listed, runtime={"entry_point": "skills/s.py:run"}))
    assert card.commerce is not None
    assert card.commerce.marketplace_listed
    # Not listed: no entry point needed.
    SkillCard.from_wire(_skill_wire(commerce={"marketplace_listed": False}))
    SkillCard.from_wire(_skill_wire(commerce={"price_per_call_micros": 0}))


def test_listed_skill_built_in_python() -> None:
    base = PYTHON_BUILT["skill_card"]().model_dump()
    with pytest.raises(ValidationError):
        SkillCard(**{**base, "commerce": SkillCommerce(marketplace_listed=True)})
    card = SkillCard(
        **{**base, "commerce": SkillCommerce(marketplace_listed=True), "runtime": SkillRuntime(entry_point="s.py")}
    )
    reference_validator("skill_card").validate(card.to_wire())


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("id", "ab"),
        ("id", "Summarise"),
        ("version", "1.0"),
        ("author_agent", "bob"),
        ("input_schema", {"properties": {}}),
        ("output_schema", "string"),
        ("tags", ["t"] * 21),
        ("tags", [""]),
        ("schema_version", "2"),
        ("authored_by_ai", "yes"),
        ("lineage", [{"parent_skill_id": "x", "relation": "copied"}]),
        ("runtime", {"memory_mb": 32}),
        ("runtime", {"timeout_seconds": 3601}),
        ("earnings", {"currency": "usd"}),
        ("earnings", {"invocations_by_tenant": {"acme": -1}}),
        ("verification", {"verified_by": ["bob"]}),
        ("metadata", {"x": float("inf")}),
    ],
)
def test_skill_card_rejections(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        SkillCard.from_wire(_skill_wire(**{field: bad}))
    assert info.value.errors()[0]["loc"][0] == field


def test_skill_card_integral_floats_are_integers() -> None:
    wire = _skill_wire(runtime={"timeout_seconds": 60.0, "memory_mb": 128.0}, commerce={"price_per_call_micros": 5.0})
    emitted = SkillCard.from_wire(wire).to_wire()
    assert emitted["runtime"] == {"timeout_seconds": 60, "memory_mb": 128}
    assert emitted["commerce"]["price_per_call_micros"] == 5


# --- UsageEvent ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("id", "0B7C0A63-6D3E-4A53-9C63-93F4B1A3F0C1"),
        ("id", "not-a-uuid"),
        ("tenant", ""),
        ("cost_micros", -1),
        ("cost_micros", 1.5),
        ("cost_micros", "100"),
        ("cost_currency", "usd"),
        ("occurred_at", "2026-01-31t12:00:00Z"),
        ("occurred_at", "2026-01-31T12:00Z"),
        ("occurred_at", 1769860800),
        ("received_at", "2026-01-31 12:00:00Z"),
        ("schema_version", 1),
    ],
)
def test_usage_event_rejections(field: str, bad: Any) -> None:
    wire = {**PYTHON_BUILT["usage_event"]().to_wire(), field: bad}
    assert not reference_validator("usage_event").is_valid(wire)
    with pytest.raises(ValidationError) as info:
        UsageEvent.from_wire(wire)
    assert info.value.errors()[0]["loc"][0] == field


def test_usage_event_cost_is_integer_micros() -> None:
    wire = {**PYTHON_BUILT["usage_event"]().to_wire(), "cost_micros": 2500.0, "input_tokens": 10}
    emitted = UsageEvent.from_wire(wire).to_wire()
    assert emitted["cost_micros"] == 2500
    assert type(emitted["cost_micros"]) is int
    assert emitted["cost_currency"] == "USD"


def _skill_wire(**fields: Any) -> dict[str, Any]:
    wire = PYTHON_BUILT["skill_card"]().to_wire()
    wire.update({k: v for k, v in fields.items() if v is not None})
    return wire
