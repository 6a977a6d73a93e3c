"""Wire compatibility with SOS v0.4.1 for the 8 core message types.

Every message valid under a reference schema is accepted as the same type with the same data, and what we emit
(from parsed messages and from messages built in Python with defaults) validates under the reference schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from contract_support import (
    CORE_TYPE_NAMES,
    REPO_ROOT,
    canonical,
    from_schema,
    generation_schema,
    reference_schema,
    reference_validator,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from sos_kernel.contracts import (
    CORE_TYPES,
    AgentJoinedMessage,
    AgentJoinedPayload,
    AnnounceMessage,
    AnnouncePayload,
    AskMessage,
    AskPayload,
    Message,
    SendMessage,
    SendPayload,
    TaskClaimedMessage,
    TaskClaimedPayload,
    TaskCompletedMessage,
    TaskCompletedPayload,
    TaskCreatedMessage,
    TaskCreatedPayload,
    WakeMessage,
    WakePayload,
    parse_message,
)

STRATEGIES = {name: from_schema(generation_schema(name)) for name in CORE_TYPE_NAMES}
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_the_core_types_are_the_reference_types() -> None:
    assert sorted(CORE_TYPES) == sorted(CORE_TYPE_NAMES)


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_reference_valid_message_is_accepted_unchanged(name: str, data: st.DataObject) -> None:
    wire = data.draw(STRATEGIES[name], label=name)
    validator = reference_validator(name)
    assume(validator.is_valid(wire))

    message = parse_message(wire)

    assert type(message) is CORE_TYPES[name]
    assert message.type == name
    emitted = message.to_wire()
    validator.validate(emitted)
    schema = reference_schema(name)
    assert canonical(schema, emitted) == canonical(schema, wire)
    # The same message as JSON text and bytes parses to the same thing.
    text = json.dumps(wire)
    assert parse_message(text) == message
    assert parse_message(text.encode()) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31t12:00:00z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00.123456789+05:30", datetime(2026, 1, 31, 6, 30, 0, 123456, tzinfo=UTC)),
        ("2026-01-31T12:00:00-00:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ],
)
def test_timestamps_are_reemitted_in_utc_with_z(text: str, expected: datetime) -> None:
    wire = _send(timestamp=text)
    emitted = parse_message(wire).to_wire()
    assert emitted["timestamp"] == expected.isoformat().replace("+00:00", "Z")
    reference_validator("send").validate(emitted)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
def test_timestamps_without_a_utc_form_keep_their_offset(text: str) -> None:
    # Valid RFC 3339, accepted by the reference, but outside Python's datetime range once moved to UTC.
    message = parse_message(_send(timestamp=text))
    emitted = message.to_wire()
    assert emitted["timestamp"] == text
    sign = 1 if text[-6] == "+" else -1
    offset = timezone(sign * timedelta(hours=23, minutes=59))
    assert message.timestamp == datetime.fromisoformat(text[:-6]).replace(tzinfo=offset)
    reference_validator("send").validate(emitted)


# --- messages built in Python -----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


PYTHON_BUILT: dict[str, Callable[[], Message]] = {
    "announce": lambda: AnnounceMessage(source="agent:a"),
    "send": lambda: SendMessage(source="agent:a", target="agent:b", payload=SendPayload(text="hi")),
    "wake": lambda: WakeMessage(source="agent:a", target="agent:b", payload=WakePayload(text="wake up")),
    "ask": lambda: AskMessage(
        source="agent:a", target="agent:b", payload=AskPayload(question="status?", reply_channel="agent:a")
    ),
    "task_created": lambda: TaskCreatedMessage(
        source="agent:a", payload=TaskCreatedPayload(task_id="t-1", title="Ship it", priority="high")
    ),
    "task_claimed": lambda: TaskClaimedMessage(
        source="agent:a", payload=TaskClaimedPayload(task_id="t-1", claimed_at=_now())
    ),
    "task_completed": lambda: TaskCompletedMessage(
        source="agent:a", payload=TaskCompletedPayload(task_id="t-1", status="done", completed_at=_now())
    ),
    "agent_joined": lambda: AgentJoinedMessage(payload=AgentJoinedPayload(agent_name="bob", joined_at=_now())),
}
PYTHON_BUILT_FULL: dict[str, Callable[[], Message]] = {
    "announce": lambda: AnnounceMessage(
        source="agent:a", payload=AnnouncePayload(text="up", tool="sdk", pid=42, tty="/dev/pts/0", cwd="/w")
    ),
    "wake": lambda: WakeMessage(
        source="agent:a",
        target="agent:b",
        payload=WakePayload(text="wake up"),
        priority="critical",
        expires_at=datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    ),
    "task_completed": lambda: TaskCompletedMessage(
        source="agent:a",
        payload=TaskCompletedPayload(
            task_id="t-1",
            status="failed",
            completed_at=_now(),
            duration_s=3,
            artifacts=["s3://bucket/out.txt"],
            error={"code": "SOS-6021", "message": "the skill failed"},
        ),
    ),
    "agent_joined": lambda: AgentJoinedMessage(
        payload=AgentJoinedPayload(agent_name="bob", joined_at=_now(), tenant_id=None, agent_card={"name": "bob"})
    ),
}


@pytest.fixture(scope="module")
def own_validators() -> dict[str, Draft202012Validator]:
    """Validators of our own exported schemas (schemas/messages/*.json)."""
    out = {}
    for name in CORE_TYPE_NAMES:
        schema = json.loads((REPO_ROOT / "schemas" / "messages" / f"{name}_v1.json").read_text(encoding="utf-8"))
        out[name] = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return out


@pytest.mark.parametrize(
    ("name", "build"),
    [*PYTHON_BUILT.items(), *PYTHON_BUILT_FULL.items()],
    ids=[*PYTHON_BUILT, *(f"{n}-full" for n in PYTHON_BUILT_FULL)],
)
def test_python_built_messages_validate_under_the_reference(
    name: str, build: Callable[[], Message], own_validators: dict[str, Draft202012Validator]
) -> None:
    message = build()
    wire = message.to_wire()

    reference_validator(name).validate(wire)
    own_validators[name].validate(wire)
    assert wire["type"] == name
    assert wire["version"] == "1.0"
    assert wire["timestamp"].endswith("Z")
    assert parse_message(wire) == message
    assert parse_message(message.to_json()) == message


def test_python_defaults_follow_the_reference_defaults() -> None:
    built: dict[str, Any] = {name: build().to_wire() for name, build in PYTHON_BUILT.items()}
    for name, wire in built.items():
        for field, sub in reference_schema(name)["properties"].items():
            if "default" in sub:
                assert wire[field] == sub["default"], (name, field)


def test_python_built_messages_get_fresh_ids() -> None:
    first, second = PYTHON_BUILT["send"](), PYTHON_BUILT["send"]()
    assert first.message_id != second.message_id


def _send(**envelope: Any) -> dict[str, Any]:
    return {
        "type": "send",
        "source": "agent:alice",
        "target": "agent:bob",
        "timestamp": "2026-01-31T12:00:00Z",
        "version": "1.0",
        "message_id": "0b7c0a63-6d3e-4a53-9c63-93f4b1a3f0c1",
        "payload": {"text": "hi", "content_type": "text/plain"},
        **envelope,
    }
