"""SOS v0.4.1's runtime dialect (``parse_message(data, dialect="sos-0.4")``) and its flat Redis encoding
(``from_sos_fields`` / ``to_sos_fields``), against the 37 entries SOS itself wrote (``redis-entries.json``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sos_kernel.contracts import (
    SOS_PROJECT_HEADER,
    SOS_REMEMBER_HEADER,
    AgentJoinedMessage,
    AskMessage,
    AskPayload,
    SendMessage,
    SendPayload,
    TaskClaimedMessage,
    from_sos_fields,
    parse_message,
    to_sos_fields,
)
from sos_kernel.errors import InvalidArgument, InvalidSource, LimitExceeded, MissingType, SchemaViolation

ENTRIES: list[dict[str, Any]] = json.loads(
    Path("/work/shared/reference/sos-v0.4.1/redis-entries.json").read_text(encoding="utf-8")
)
SOS = "sos-0.4"


def _as_dict(fields: dict[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) if v[:1] in "{[" else v for k, v in fields.items()}


SAMPLES: dict[str, dict[str, Any]] = {}
for _entry in ENTRIES:
    SAMPLES.setdefault(_entry["fields"]["type"], _as_dict(_entry["fields"]))
DEFAULT_TARGETS = {
    "task_created": "sos:channel:tasks",
    "task_claimed": "sos:channel:tasks",
    "task_completed": "sos:channel:tasks",
    "agent_joined": "sos:channel:system:events",
}


def sample(kind: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SAMPLES[kind])
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_every_type_has_a_sample() -> None:
    assert sorted(SAMPLES) == sorted(
        ["send", "wake", "ask", "announce", "task_created", "task_claimed", "task_completed", "agent_joined"]
    )


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{i}-{e['from']}" for i, e in enumerate(ENTRIES)])
def test_every_sos_entry_reads_and_writes_back_as_sos_wrote_it(entry: dict[str, Any]) -> None:
    message = from_sos_fields(entry["fields"])
    assert message.type == entry["fields"]["type"]
    assert message.message_id == entry["fields"]["message_id"]
    assert to_sos_fields(message) == entry["fields"]
    as_bytes = {k.encode(): v.encode() for k, v in entry["fields"].items()}
    assert from_sos_fields(as_bytes) == message


def test_entries_with_nulls_are_what_the_strict_parser_refuses() -> None:
    refused = 0
    for entry in ENTRIES:
        try:
            parse_message(_as_dict(entry["fields"]))
        except SchemaViolation:
            refused += 1
    assert refused == 13  # the count; the dialect reads all 37 (above)


# --- the runtime leniency, category by category ------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_missing_version_is_1_0(kind: str) -> None:
    data = sample(kind, version=...)
    assert parse_message(data, dialect=SOS).version == "1.0"
    with pytest.raises(SchemaViolation):
        parse_message(data)


@pytest.mark.parametrize("kind", sorted(DEFAULT_TARGETS))
def test_missing_default_target_is_filled(kind: str) -> None:
    data = sample(kind, target=..., version=...)
    assert parse_message(data, dialect=SOS).target == DEFAULT_TARGETS[kind]
    with pytest.raises(SchemaViolation):
        parse_message(sample(kind, target=...))


@pytest.mark.parametrize("kind", ["send", "wake", "ask"])
def test_targets_without_a_default_stay_required(kind: str) -> None:
    with pytest.raises(SchemaViolation):
        parse_message(sample(kind, target=...), dialect=SOS)


def test_agent_joined_without_source_is_from_the_kernel() -> None:
    message = parse_message(sample("agent_joined", source=...), dialect=SOS)
    assert isinstance(message, AgentJoinedMessage)
    assert message.source == "agent:kernel"
    with pytest.raises(SchemaViolation):
        parse_message(sample("send", source=...), dialect=SOS)


def test_explicit_nulls_in_optional_fields_are_absent() -> None:
    send = parse_message(sample("send", reply_to=None, correlation_id=None, headers=None, trace_id=None), dialect=SOS)
    assert isinstance(send, SendMessage)
    assert send.reply_to is None
    assert send.headers is None
    claimed = sample("task_claimed")
    claimed["payload"]["worker_info"] = {"model": None, "plan": "growth", "estimated_duration_s": None}
    parsed = parse_message(claimed, dialect=SOS)
    assert isinstance(parsed, TaskClaimedMessage)
    assert parsed.payload.worker_info is not None
    assert parsed.payload.worker_info.plan == "growth"
    assert parsed.payload.worker_info.model is None
    with pytest.raises(SchemaViolation):
        parse_message(claimed)
    completed = sample("task_completed")
    completed["payload"]["result"] = {"kept": None}
    assert parse_message(completed, dialect=SOS).payload.result == {"kept": None}  # type: ignore[attr-defined]
    joined = parse_message(sample("agent_joined"), dialect=SOS)
    assert "tenant_id" in joined.to_wire()["payload"]  # a meaningful null stays


def test_null_in_a_required_field_is_still_refused() -> None:
    data = sample("send")
    data["payload"]["text"] = None
    with pytest.raises(SchemaViolation):
        parse_message(data, dialect=SOS)
    with pytest.raises(SchemaViolation):
        parse_message(sample("send", payload=None), dialect=SOS)


def test_project_is_a_header_of_a_send_and_a_checked_scope_elsewhere() -> None:
    send = parse_message(sample("send", project="apollo"), dialect=SOS)
    assert isinstance(send, SendMessage)
    assert send.headers == {SOS_PROJECT_HEADER: "apollo"}
    assert to_sos_fields(send)["project"] == "apollo"
    assert "headers" not in to_sos_fields(send)
    task = parse_message(sample("task_created", project="apollo"), dialect=SOS)
    assert "project" not in task.to_wire()
    with pytest.raises(SchemaViolation):
        parse_message(sample("send", project=7), dialect=SOS)
    with pytest.raises(SchemaViolation):
        parse_message(sample("send", project="apollo"))


def test_remember_is_understood_on_a_send_only() -> None:
    data = sample("send")
    data["payload"]["remember"] = True
    send = parse_message(data, dialect=SOS)
    assert isinstance(send, SendMessage)
    assert send.headers == {SOS_REMEMBER_HEADER: "true"}
    fields = to_sos_fields(send)
    assert json.loads(fields["payload"])["remember"] is True
    assert from_sos_fields(fields) == send
    data["payload"]["remember"] = "yes"
    with pytest.raises(SchemaViolation):
        parse_message(data, dialect=SOS)
    wake = sample("wake")
    wake["payload"]["remember"] = True
    with pytest.raises(SchemaViolation):
        parse_message(wake, dialect=SOS)


@pytest.mark.parametrize(
    "change",
    [
        {"extra": "field"},
        {"timestamp": ...},
        {"message_id": ...},
        {"message_id": "not-a-uuid"},
        {"target": "nobody"},
        {"version": 1},
    ],
    ids=repr,
)
def test_nothing_more_is_relaxed(change: dict[str, Any]) -> None:
    with pytest.raises(SchemaViolation):
        parse_message(sample("send", **change), dialect=SOS)


@pytest.mark.parametrize("dialect", [None, SOS])
@pytest.mark.parametrize("value", [None, "", ...])
def test_a_null_or_empty_type_is_missing(value: Any, dialect: str | None) -> None:
    with pytest.raises(MissingType):
        parse_message(sample("send", type=value), dialect=dialect)


def test_a_bad_source_is_4003_here_where_sos_answers_4001() -> None:
    for dialect in (None, SOS):
        with pytest.raises(InvalidSource):
            parse_message(sample("send", source="kasra"), dialect=dialect)


def test_an_unknown_dialect_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        parse_message(sample("send"), dialect="sos-9")


def test_text_input_in_the_dialect() -> None:
    raw = json.dumps(sample("task_created", version=..., target=...))
    assert parse_message(raw, dialect=SOS).target == "sos:channel:tasks"
    assert parse_message(raw.encode(), dialect=SOS).type == "task_created"


def test_flat_integers_booleans_and_bounds() -> None:
    ask = AskMessage(
        source="agent:hadi",
        target="agent:kasra",
        payload=AskPayload(question="q?", reply_channel="agent:hadi"),
        timeout_s=30,
    )
    fields = to_sos_fields(ask)
    assert fields["timeout_s"] == "30"
    assert from_sos_fields(fields) == ask
    assert all(isinstance(v, str) for v in fields.values())
    with pytest.raises(LimitExceeded):
        from_sos_fields({f"f{i}": "x" for i in range(100)})
    with pytest.raises(SchemaViolation):
        from_sos_fields({b"type": b"send", b"source": b"\xff"})
    send = SendMessage(source="agent:a", target="agent:b", payload=SendPayload(text="hi"))
    assert from_sos_fields(to_sos_fields(send)) == send
