"""Bad input is refused with SOS's error for the fault, in SOS's publish-time order.

Table-driven: each case starts from a full, valid example of a core type (every optional field set) and breaks
one thing. The cases are derived from the reference schemas (their required fields, maxLength, enum, integer,
pattern and date-time properties), so a field the reference constrains cannot be left untested. Where the broken
message is a schema fault, the reference validator must refuse it too, so the case is a real fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from contract_support import (
    CORE_TYPE_NAMES,
    Path_,
    del_path,
    get_path,
    iter_properties,
    reference_schema,
    reference_validator,
    required_paths,
    set_path,
)

from sos_kernel.contracts import CORE_TYPES, parse_message
from sos_kernel.errors import InvalidSource, MissingType, SchemaViolation, SOSError, UnknownType

MID = "0b7c0a63-6d3e-4a53-9c63-93f4b1a3f0c1"
MID2 = "5f1d2c3b-4a59-4e8f-8c7d-6b5a49382716"
MID3 = "A1B2C3D4-E5F6-4789-8ABC-DEF012345678"
TS = "2026-01-31T12:00:00Z"
TS2 = "2026-02-01T08:30:00.250+01:00"
ENVELOPE = {"source": "agent:alice", "target": "agent:bob", "timestamp": TS, "version": "1.0", "message_id": MID}

VALID: dict[str, dict[str, Any]] = {
    "announce": {
        **ENVELOPE,
        "type": "announce",
        "target": "sos:channel:global",
        "payload": {"text": "hello", "tool": "sdk", "pid": 4242, "tty": "/dev/pts/1", "cwd": "/work"},
        "agent_card_ref": "sos:registry:alice",
    },
    "send": {
        **ENVELOPE,
        "type": "send",
        "payload": {"text": "hi **bob**", "content_type": "text/markdown"},
        "reply_to": MID2,
        "correlation_id": MID3,
        "headers": {"priority": "high", "tenant": "acme"},
    },
    "wake": {
        **ENVELOPE,
        "type": "wake",
        "payload": {"text": "you have mail"},
        "priority": "high",
        "expires_at": TS2,
        "ref_message_id": MID2,
    },
    "ask": {
        **ENVELOPE,
        "type": "ask",
        "payload": {"question": "status?", "reply_channel": "sos:channel:replies"},
        "timeout_s": 30,
        "correlation_id": MID3,
    },
    "task_created": {
        **ENVELOPE,
        "type": "task_created",
        "target": "sos:channel:tasks",
        "payload": {
            "task_id": "task_1",
            "title": "Ship the release",
            "priority": "critical",
            "description": "Tag, build and publish.",
            "assignee": "bob",
            "skill_id": "release",
            "project": "acme",
            "labels": ["release", "urgent"],
            "token_budget": 100000,
            "bounty_cents": 500,
        },
    },
    "task_claimed": {
        **ENVELOPE,
        "type": "task_claimed",
        "target": "sos:channel:tasks",
        "payload": {
            "task_id": "task_1",
            "claimed_at": TS,
            "claim_expires_at": TS2,
            "worker_info": {"model": "sonnet-4.6", "plan": "growth", "estimated_duration_s": 600},
        },
    },
    "task_completed": {
        **ENVELOPE,
        "type": "task_completed",
        "target": "sos:channel:tasks",
        "payload": {
            "task_id": "task_1",
            "status": "failed",
            "completed_at": TS2,
            "result": {"partial": True, "count": 3},
            "duration_s": 42,
            "artifacts": ["s3://bucket/log.txt", "/tmp/out.json"],
            "tokens_spent": 1234,
            "cost_cents": 7,
            "error": {"code": "SOS-6021", "message": "the skill failed", "traceback": "Traceback ..."},
        },
    },
    "agent_joined": {
        **ENVELOPE,
        "type": "agent_joined",
        "source": "agent:kernel",
        "target": "sos:channel:system:events",
        "payload": {
            "agent_name": "bob",
            "joined_at": TS,
            "tenant_id": None,
            "agent_card": {"name": "bob", "tool": "sdk"},
            "source_host": "host-1",
            "expiry_at": TS2,
        },
    },
}

BAD_SOURCES = ["Agent:X", "bob", "agent:", "agent:Bob", "agent:1bob", "agent:bob_1", "sos:channel:x", " agent:bob"]
NOT_RFC3339 = [
    1769860800,
    1769860800.5,
    "1769860800",
    "2026-01-31",
    "2026-01-31 12:00:00Z",
    "2026-01-31T12:00:00",
    "2026-01-31T12:00Z",
    "2026-01-31T23:59:60Z",
    "2026-02-30T12:00:00Z",
    "2026-01-31T12:00:00Z\n",
]


def _paths(predicate: Any) -> Iterator[tuple[str, Path_, dict[str, Any]]]:
    for name in CORE_TYPE_NAMES:
        for path, sub in iter_properties(reference_schema(name)):
            if predicate(path, sub):
                yield name, path, sub


def _id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}:{'.'.join(case[1])}"


def _schema_violation(
    name: str, data: Any, loc: str | None = None, *, reference_judges: bool = True
) -> SchemaViolation:
    """Parse ``data``, expect SOS-4001 with an error at ``loc`` (or inside it), and check the reference agrees."""
    with pytest.raises(SchemaViolation) as info:
        parse_message(data)
    err = info.value
    assert err.code == "SOS-4001"
    assert err.http_status == 422
    assert not err.retryable
    if loc is not None:
        locs = [e["loc"] for e in err.details["errors"]]
        assert any(found == loc or found.startswith(loc + ".") for found in locs), err.details
    if reference_judges and isinstance(data, dict) and not _has_trailing_newline(data):
        assert not reference_validator(name).is_valid(data)
    return err


def _has_trailing_newline(data: Any) -> bool:
    # JSON Schema patterns are ECMA-262: '$' does not match before a final newline, so "agent:bob\n" fails
    # '^agent:[a-z][a-z0-9-]*$'. Python's re (used by the jsonschema package, and by its date-time checker)
    # lets '$' match there, so the reference validator cannot be the judge of these cases.
    if isinstance(data, dict):
        return any(_has_trailing_newline(v) for v in data.values())
    return isinstance(data, str) and data.endswith("\n")


def test_the_examples_are_valid() -> None:
    for name, example in VALID.items():
        reference_validator(name).validate(example)
        # Every property the reference names is present, so every mutation below has something to break.
        for path, _ in iter_properties(reference_schema(name)):
            get_path(example, path)
        assert type(parse_message(example)) is CORE_TYPES[name]


# --- type: 4002, 4004 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_no_type_is_4002(name: str) -> None:
    with pytest.raises(MissingType) as info:
        parse_message(del_path(VALID[name], ("type",)))
    assert info.value.code == "SOS-4002"
    assert "send" in info.value.details["known_types"]


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_unknown_type_is_4004_naming_the_closest(name: str) -> None:
    typo = name[:-2] + name[-1] + name[-2]  # swap the last two letters: 'send' -> 'sedn'
    with pytest.raises(UnknownType) as info:
        parse_message(set_path(VALID[name], ("type",), typo))
    err = info.value
    assert err.code == "SOS-4004"
    assert err.details["closest"] == name
    assert f"did you mean {name!r}" in err.message
    assert err.details["type"] == typo


def test_unknown_type_names_the_closest_match() -> None:
    with pytest.raises(UnknownType, match="did you mean 'send'"):
        parse_message(set_path(VALID["send"], ("type",), "sned"))


@pytest.mark.parametrize("bad", ["SEND", "nonsense", 5, ["send"], {"t": 1}])
def test_type_that_is_not_a_known_name_is_4004(bad: Any) -> None:
    # a null or empty type counts as missing, SOS-4002, as in SOS (tests/contracts/test_sos_dialect.py)
    with pytest.raises(UnknownType) as info:
        parse_message(set_path(VALID["send"], ("type",), bad))
    assert info.value.code == "SOS-4004"


# --- unknown fields: 4001 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_extra_top_level_field_is_4001(name: str) -> None:
    _schema_violation(name, set_path(VALID[name], ("priority_boost",), 1), loc="priority_boost")


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_extra_payload_field_is_4001(name: str) -> None:
    _schema_violation(name, set_path(VALID[name], ("payload", "bogus"), "x"), loc="payload.bogus")


@pytest.mark.parametrize(
    ("name", "path"),
    [("task_claimed", ("payload", "worker_info")), ("task_completed", ("payload", "error"))],
)
def test_extra_field_in_a_nested_object_is_4001(name: str, path: Path_) -> None:
    _schema_violation(name, set_path(VALID[name], (*path, "bogus"), 1), loc=".".join((*path, "bogus")))


def test_trace_id_is_our_one_extra_envelope_field() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    message = parse_message({**VALID["send"], "trace_id": trace_id})
    assert message.trace_id == trace_id
    assert message.to_wire()["trace_id"] == trace_id
    _schema_violation("send", {**VALID["send"], "trace_id": "0" * 32}, loc="trace_id")


# --- source: 4003 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_SOURCES)
@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_bad_source_is_4003(name: str, bad: str) -> None:
    with pytest.raises(InvalidSource) as info:
        parse_message(set_path(VALID[name], ("source",), bad))
    err = info.value
    assert err.code == "SOS-4003"
    assert err.details["source"] == bad
    assert "agent:<name>" in err.message


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_schema_error_wins_over_bad_source(name: str) -> None:
    # SOS checks the schema (step 3) before the source (step 4).
    data = set_path(set_path(VALID[name], ("source",), "Agent:X"), ("bogus",), 1)
    err = _schema_violation(name, data)
    assert {e["loc"] for e in err.details["errors"]} >= {"bogus"}


@pytest.mark.parametrize("bad", [None, 5, ["agent:bob"]])
def test_source_of_the_wrong_json_type_is_4001(bad: Any) -> None:
    _schema_violation("send", set_path(VALID["send"], ("source",), bad), loc="source")


def test_order_missing_type_wins_over_everything() -> None:
    data = set_path(del_path(VALID["send"], ("type",)), ("source",), "bob")
    with pytest.raises(MissingType):
        parse_message(set_path(data, ("bogus",), 1))


def test_order_unknown_type_wins_over_schema_and_source() -> None:
    data = set_path(set_path(VALID["send"], ("type",), "sned"), ("source",), "bob")
    with pytest.raises(UnknownType):
        parse_message(del_path(data, ("payload",)))


# --- required fields: 4001 with the field's path ---------------------------------------------------------------

REQUIRED = [
    (name, path) for name in CORE_TYPE_NAMES for path in required_paths(reference_schema(name)) if path != ("type",)
]


@pytest.mark.parametrize(("name", "path"), REQUIRED, ids=[_id(c) for c in REQUIRED])
def test_missing_required_field_is_4001_at_its_path(name: str, path: Path_) -> None:
    err = _schema_violation(name, del_path(VALID[name], path), loc=".".join(path))
    assert [e["type"] for e in err.details["errors"]] == ["missing"]


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_all_missing_envelope_fields_are_listed(name: str) -> None:
    data = {"type": name}
    err = _schema_violation(name, data)
    locs = {e["loc"] for e in err.details["errors"]}
    assert locs == set(reference_schema(name)["required"]) - {"type"}


# --- limits, enums, patterns, types: 4001 ------------------------------------------------------------------------

TOO_LONG = list(_paths(lambda _, sub: "maxLength" in sub))


@pytest.mark.parametrize(("name", "path", "sub"), TOO_LONG, ids=[_id(c) for c in TOO_LONG])
def test_text_over_max_length_is_4001(name: str, path: Path_, sub: dict[str, Any]) -> None:
    limit = sub["maxLength"]
    assert parse_message(set_path(VALID[name], path, "é" * limit)).to_wire() is not None
    err = _schema_violation(name, set_path(VALID[name], path, "é" * (limit + 1)), loc=".".join(path))
    assert err.details["errors"][0]["type"] == "string_too_long"


TOO_SHORT = list(_paths(lambda _, sub: sub.get("minLength", 0) > 0))


@pytest.mark.parametrize(("name", "path", "sub"), TOO_SHORT, ids=[_id(c) for c in TOO_SHORT])
def test_text_under_min_length_is_4001(name: str, path: Path_, sub: dict[str, Any]) -> None:
    _schema_violation(name, set_path(VALID[name], path, ""), loc=".".join(path))


ENUMS = list(_paths(lambda _, sub: "enum" in sub))


@pytest.mark.parametrize(("name", "path", "sub"), ENUMS, ids=[_id(c) for c in ENUMS])
def test_value_outside_the_enum_is_4001(name: str, path: Path_, sub: dict[str, Any]) -> None:
    for value in sub["enum"]:
        parse_message(set_path(VALID[name], path, value))
    for bad in ["bogus", sub["enum"][0].upper(), None, 1]:
        _schema_violation(name, set_path(VALID[name], path, bad), loc=".".join(path))


PATTERNS = list(_paths(lambda path, sub: "pattern" in sub and path != ("source",)))


@pytest.mark.parametrize(("name", "path", "sub"), PATTERNS, ids=[_id(c) for c in PATTERNS])
@pytest.mark.parametrize("bad", ["", "has space", "UPPER:case", "agent:bob\n", "x" * 300 + "!"])
def test_value_not_matching_the_pattern_is_4001(name: str, path: Path_, sub: dict[str, Any], bad: str) -> None:
    _schema_violation(name, set_path(VALID[name], path, bad), loc=".".join(path))


INTEGERS = list(_paths(lambda _, sub: sub.get("type") == "integer"))


@pytest.mark.parametrize(("name", "path", "sub"), INTEGERS, ids=[_id(c) for c in INTEGERS])
@pytest.mark.parametrize("bad", ["1", True, False, 1.5, None, [1]])
def test_non_integer_for_an_integer_is_4001(name: str, path: Path_, sub: dict[str, Any], bad: Any) -> None:
    _schema_violation(name, set_path(VALID[name], path, bad), loc=".".join(path))


@pytest.mark.parametrize(("name", "path", "sub"), INTEGERS, ids=[_id(c) for c in INTEGERS])
def test_integer_bounds(name: str, path: Path_, sub: dict[str, Any]) -> None:
    low = sub.get("minimum", -(2**40))
    # JSON Schema: an integral float is an integer; it comes back as a JSON integer.
    emitted = parse_message(set_path(VALID[name], path, float(low))).to_wire()
    assert get_path(emitted, path) == low
    assert type(get_path(emitted, path)) is int
    if "minimum" in sub:
        _schema_violation(name, set_path(VALID[name], path, low - 1), loc=".".join(path))
    if "maximum" in sub:
        parse_message(set_path(VALID[name], path, sub["maximum"]))
        _schema_violation(name, set_path(VALID[name], path, sub["maximum"] + 1), loc=".".join(path))


STRINGS = list(_paths(lambda path, sub: sub.get("type") == "string" and "const" not in sub and path != ("source",)))


@pytest.mark.parametrize(("name", "path", "sub"), STRINGS, ids=[_id(c) for c in STRINGS])
@pytest.mark.parametrize("bad", [1, True, None, ["x"], {"x": 1}])
def test_non_string_for_a_string_is_4001(name: str, path: Path_, sub: dict[str, Any], bad: Any) -> None:
    _schema_violation(name, set_path(VALID[name], path, bad), loc=".".join(path))


DATETIMES = list(_paths(lambda _, sub: sub.get("format") == "date-time"))


@pytest.mark.parametrize(("name", "path", "sub"), DATETIMES, ids=[_id(c) for c in DATETIMES])
@pytest.mark.parametrize("bad", NOT_RFC3339, ids=repr)
def test_timestamp_that_is_not_rfc3339_is_4001(name: str, path: Path_, sub: dict[str, Any], bad: Any) -> None:
    _schema_violation(name, set_path(VALID[name], path, bad), loc=".".join(path))


@pytest.mark.parametrize(
    ("name", "path", "bad"),
    [
        ("task_created", ("payload", "labels"), ["a", "a"]),
        ("task_completed", ("payload", "artifacts"), ["x", "x"]),
        ("task_created", ("payload", "labels"), "release"),
        ("task_created", ("payload", "labels"), [1]),
        ("send", ("headers",), {"priority": 1}),
        ("send", ("headers",), ["priority"]),
        ("send", ("payload",), "hi"),
        ("announce", ("payload",), None),
        ("task_completed", ("payload", "result"), [1, 2]),
        ("agent_joined", ("payload", "agent_card"), "bob"),
        ("agent_joined", ("payload", "tenant_id"), 5),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_other_schema_faults_are_4001(name: str, path: Path_, bad: Any) -> None:
    _schema_violation(name, set_path(VALID[name], path, bad), loc=".".join(path))


# --- input forms --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_bytes_str_and_dict_parse_the_same(name: str) -> None:
    text = json.dumps(VALID[name])
    forms = [VALID[name], text, text.encode(), bytearray(text.encode())]
    parsed = [parse_message(form) for form in forms]
    assert all(p == parsed[0] for p in parsed)
    assert parse_message(parsed[0]) is parsed[0]


MUTANTS: list[tuple[str, dict[str, Any], type[SOSError]]] = [
    ("no-type", del_path(VALID["wake"], ("type",)), MissingType),
    ("unknown-type", set_path(VALID["wake"], ("type",), "waek"), UnknownType),
    ("extra-field", set_path(VALID["wake"], ("bogus",), 1), SchemaViolation),
    ("missing-payload", del_path(VALID["wake"], ("payload",)), SchemaViolation),
    ("bad-source", set_path(VALID["wake"], ("source",), "bob"), InvalidSource),
    ("int-timestamp", set_path(VALID["wake"], ("timestamp",), 1769860800), SchemaViolation),
]


@pytest.mark.parametrize(("case", "data", "error"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_bytes_str_and_dict_fail_the_same(case: str, data: dict[str, Any], error: type[SOSError]) -> None:
    text = json.dumps(data)
    found = []
    for form in (data, text, text.encode()):
        with pytest.raises(error) as info:
            parse_message(form)
        found.append((type(info.value), info.value.message, info.value.details))
    assert found[0] == found[1] == found[2]


@pytest.mark.parametrize(
    "raw",
    [b"{not json", "{", b"", "   ", b'{"type": "send",}', b"\xff\xfe{}", "{'type': 'send'}", b"NaN", "-Infinity"],
    ids=repr,
)
def test_invalid_json_is_4001(raw: bytes | str) -> None:
    with pytest.raises(SchemaViolation) as info:
        parse_message(raw)
    assert info.value.details["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    # Python's json module reads them; taking them would turn them into null on the way out.
    text = json.dumps(VALID["task_completed"]).replace('"count": 3', f'"count": {constant}')
    assert constant in text
    with pytest.raises(SchemaViolation) as info:
        parse_message(text)
    assert info.value.details["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("raw", ["[]", json.dumps([VALID["send"]]), "5", "null", '"send"', "true"])
def test_json_that_is_not_an_object_is_4001(raw: str) -> None:
    for form in (raw, raw.encode()):
        with pytest.raises(SchemaViolation) as info:
            parse_message(form)
        assert info.value.details["errors"][0]["loc"] == "(root)"


@pytest.mark.parametrize("value", [[VALID["send"]], 5, None, object()], ids=lambda v: type(v).__name__)
def test_python_value_that_is_not_a_mapping_is_4001(value: Any) -> None:
    with pytest.raises(SchemaViolation):
        parse_message(value)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")], ids=repr)
@pytest.mark.parametrize(
    ("name", "path"),
    [("task_completed", ("payload", "result")), ("agent_joined", ("payload", "agent_card"))],
)
def test_nan_and_infinity_in_free_form_objects_are_4001(name: str, path: Path_, number: float) -> None:
    nested = {"a": [1, {"b": number}]}
    # Such a dict never comes from JSON, so the reference (which sees only JSON) has no say here.
    _schema_violation(name, set_path(VALID[name], path, nested), loc=".".join(path), reference_judges=False)
