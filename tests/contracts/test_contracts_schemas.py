"""The JSON Schema files under ``schemas/`` are fresh, valid Draft 2020-12, and agree with the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contract_support import REPO_ROOT, del_path, set_path
from jsonschema import Draft202012Validator

from sos_kernel.contracts import (
    CORE_TYPES,
    EXTENSION_TYPES,
    AskMessage,
    AskPayload,
    SendMessage,
    SendPayload,
    TaskCompletedMessage,
    TaskCompletedPayload,
    TaskCreatedMessage,
    TaskCreatedPayload,
    UsageEvent,
)
from sos_kernel.contracts.schemas import SCHEMA_DIALECT, check_schemas, export_schemas, generate_schemas

SCHEMAS_DIR = REPO_ROOT / "schemas"
SCHEMA_FILES = sorted(SCHEMAS_DIR.rglob("*.json"))


def test_schemas_are_fresh() -> None:
    assert check_schemas(SCHEMAS_DIR) == [], "run `python -m sos_kernel.contracts.schemas export`"


def test_there_is_a_schema_per_type_and_card() -> None:
    names = {p.relative_to(SCHEMAS_DIR).as_posix() for p in SCHEMA_FILES}
    expected = {f"messages/{t}_v1.json" for t in {**CORE_TYPES, **EXTENSION_TYPES}}
    expected |= {"agent_card_v1.json", "skill_card_v1.json", "usage_event_v1.json", "provider_card_v1.json"}
    assert names == expected


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.relative_to(SCHEMAS_DIR).as_posix())
def test_every_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["additionalProperties"] is False
    assert schema["$id"].endswith(path.relative_to(SCHEMAS_DIR).as_posix())


def test_check_reports_missing_stale_and_extra(tmp_path: Path) -> None:
    written = export_schemas(tmp_path)
    assert len(written) == len(generate_schemas())
    assert check_schemas(tmp_path) == []

    (tmp_path / "messages" / "send_v1.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "agent_card_v1.json").unlink()
    (tmp_path / "messages" / "old_v0.json").write_text("{}\n", encoding="utf-8")

    assert sorted(check_schemas(tmp_path)) == [
        "extra: messages/old_v0.json",
        "missing: agent_card_v1.json",
        "stale: messages/send_v1.json",
    ]
    export_schemas(tmp_path)
    assert check_schemas(tmp_path) == []
    assert not (tmp_path / "messages" / "old_v0.json").exists()


def test_wire_required_fields_are_required_in_the_schemas() -> None:
    for rel, schema in generate_schemas().items():
        name = rel.removeprefix("messages/").removesuffix("_v1.json")
        model = {**CORE_TYPES, **EXTENSION_TYPES}.get(name)
        if model is not None:
            assert set(schema["required"]) == set(model.wire_required), rel


def _keywords(node: object) -> set[str]:
    if isinstance(node, dict):
        found = set(node)
        for key, value in node.items():
            if key != "properties":  # property names are not keywords
                found |= _keywords(value)
            else:
                for sub in value.values():
                    found |= _keywords(sub)
        return found
    if isinstance(node, list):
        return set().union(*(_keywords(item) for item in node)) if node else set()
    return set()


@pytest.mark.parametrize("rel", sorted(generate_schemas()))
def test_generated_schemas_use_json_schema_keywords_only(rel: str) -> None:
    # pydantic writes constraints it cannot place on the type (e.g. after a BeforeValidator) as raw "ge"/"le",
    # which JSON Schema ignores: the bound would silently vanish from the exported schema.
    assert not _keywords(generate_schemas()[rel]) & {"ge", "gt", "le", "lt", "multiple_of", "min_length"}


@pytest.mark.parametrize(
    ("rel", "path", "bad"),
    [
        ("messages/send_v1.json", ("payload", "content_type"), None),
        ("messages/task_created_v1.json", ("payload", "token_budget"), -1),
        ("messages/task_completed_v1.json", ("payload", "cost_cents"), -1),
        ("messages/ask_v1.json", ("timeout_s",), 0),
        ("usage_event_v1.json", ("cost_micros",), -1),
    ],
)
def test_generated_schemas_refuse_what_the_models_refuse(rel: str, path: tuple[str, ...], bad: object) -> None:
    now = "2026-01-31T12:00:00Z"
    examples = {
        "messages/send_v1.json": SendMessage(source="agent:a", target="agent:b", payload=SendPayload(text="hi")),
        "messages/task_created_v1.json": TaskCreatedMessage(
            source="agent:a", payload=TaskCreatedPayload(task_id="t", title="T", priority="low", token_budget=1)
        ),
        "messages/task_completed_v1.json": TaskCompletedMessage(
            source="agent:a",
            payload=TaskCompletedPayload.model_validate({"task_id": "t", "status": "done", "completed_at": now}),
        ),
        "messages/ask_v1.json": AskMessage(
            source="agent:a", target="agent:b", payload=AskPayload(question="?", reply_channel="agent:a")
        ),
        "usage_event_v1.json": UsageEvent(tenant="acme", provider="p", model="m"),
    }
    wire = examples[rel].to_wire()
    validator = Draft202012Validator(generate_schemas()[rel], format_checker=Draft202012Validator.FORMAT_CHECKER)
    validator.validate(wire)
    broken = del_path(wire, path) if bad is None else set_path(wire, path, bad)
    assert not validator.is_valid(broken)
