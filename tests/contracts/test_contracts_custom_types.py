"""Deployment-defined message types: registered by namespaced name, with a pydantic payload or a JSON Schema."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from sos_kernel.contracts import DEFAULT_CATALOGUE, Message, TypeCatalogue, parse_message
from sos_kernel.errors import InvalidArgument, InvalidSource, SchemaViolation, UnknownType

ENVELOPE = {
    "source": "agent:alice",
    "target": "sos:channel:deploys",
    "timestamp": "2026-01-31T12:00:00Z",
    "version": "1.0",
    "message_id": "0b7c0a63-6d3e-4a53-9c63-93f4b1a3f0c1",
}
AUDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["action", "at"],
    "properties": {
        "action": {"enum": ["start", "stop"]},
        "at": {"type": "string", "format": "date-time"},
        "count": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}


class DeployPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    service: str
    replicas: int = Field(ge=1, le=100)
    strategy: Literal["rolling", "blue_green"] = "rolling"


@pytest.fixture
def catalogue() -> TypeCatalogue:
    cat = TypeCatalogue()
    cat.register("acme.deploy", DeployPayload)
    cat.register("acme.audit", AUDIT_SCHEMA)
    return cat


def _deploy(**payload: Any) -> dict[str, Any]:
    return {**ENVELOPE, "type": "acme.deploy", "payload": {"service": "api", "replicas": 3, **payload}}


def _audit(**payload: Any) -> dict[str, Any]:
    return {**ENVELOPE, "type": "acme.audit", "payload": {"action": "start", "at": "2026-01-31T12:00:00Z", **payload}}


def test_a_pydantic_payload_type_parses(catalogue: TypeCatalogue) -> None:
    message = catalogue.parse(_deploy())
    assert message.type == "acme.deploy"
    assert isinstance(message, Message)
    assert isinstance(message.payload, DeployPayload)  # type: ignore[attr-defined]
    assert message.payload.replicas == 3  # type: ignore[attr-defined]
    assert message.to_wire()["payload"] == {"service": "api", "replicas": 3, "strategy": "rolling"}
    assert catalogue.parse(message.to_json()) == message
    assert parse_message(json.dumps(_deploy()), catalogue=catalogue) == message


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"replicas": 0}, "payload.replicas"),
        ({"replicas": "3"}, "payload.replicas"),
        ({"strategy": "yolo"}, "payload.strategy"),
        ({"extra": 1}, "payload.extra"),
    ],
)
def test_an_invalid_pydantic_payload_is_4001(catalogue: TypeCatalogue, payload: dict[str, Any], loc: str) -> None:
    with pytest.raises(SchemaViolation) as info:
        catalogue.parse(_deploy(**payload))
    assert info.value.code == "SOS-4001"
    assert loc in [e["loc"] for e in info.value.details["errors"]]


def test_a_json_schema_payload_type_parses(catalogue: TypeCatalogue) -> None:
    message = catalogue.parse(_audit(count=2))
    assert message.type == "acme.audit"
    assert message.to_wire()["payload"] == {"action": "start", "at": "2026-01-31T12:00:00Z", "count": 2}
    assert catalogue.parse(message.to_json()) == message


@pytest.mark.parametrize(
    "payload",
    [{"action": "pause"}, {"count": -1}, {"at": "yesterday"}, {"bogus": True}, {"count": "2"}],
)
def test_an_invalid_json_schema_payload_is_4001(catalogue: TypeCatalogue, payload: dict[str, Any]) -> None:
    with pytest.raises(SchemaViolation) as info:
        catalogue.parse(_audit(**payload))
    assert [e["loc"] for e in info.value.details["errors"]] == ["payload"]


def test_missing_payload_and_envelope_faults_apply_to_custom_types(catalogue: TypeCatalogue) -> None:
    no_payload = {k: v for k, v in _audit().items() if k != "payload"}
    with pytest.raises(SchemaViolation):
        catalogue.parse(no_payload)
    with pytest.raises(InvalidSource):
        catalogue.parse({**_deploy(), "source": "alice"})
    with pytest.raises(SchemaViolation):
        catalogue.parse({**_deploy(), "bogus": 1})


def test_core_types_still_parse_in_an_extended_catalogue(catalogue: TypeCatalogue) -> None:
    send = {**ENVELOPE, "type": "send", "payload": {"text": "hi", "content_type": "text/plain"}}
    assert catalogue.parse(send) == parse_message(send)
    assert {"acme.audit", "acme.deploy", "send"} <= set(catalogue.names)
    assert "acme.deploy" in catalogue
    assert catalogue.get("acme.deploy").model_fields["type"].default == "acme.deploy"


def test_unregistered_custom_type_is_4004(catalogue: TypeCatalogue) -> None:
    with pytest.raises(UnknownType) as info:
        catalogue.parse({**_deploy(), "type": "acme.other"})
    assert info.value.code == "SOS-4004"
    assert "acme.deploy" in info.value.details["known_types"]
    with pytest.raises(UnknownType):
        catalogue.get("acme.other")


def test_custom_types_are_local_to_their_catalogue(catalogue: TypeCatalogue) -> None:
    with pytest.raises(UnknownType):
        parse_message(_deploy())
    with pytest.raises(UnknownType):
        TypeCatalogue().parse(_deploy())
    assert "acme.deploy" not in DEFAULT_CATALOGUE


@pytest.mark.parametrize(
    "name",
    [
        "deploy",
        "send",
        "Acme.deploy",
        "acme.",
        ".deploy",
        "acme..deploy",
        "acme deploy.x",
        "acme.Deploy",
        "1acme.x",
        "a." + "b" * 99,
        "acme/deploy",
        "",
    ],
)
def test_names_must_be_namespaced(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        TypeCatalogue().register(name, DeployPayload)
    assert info.value.code == "SOS-4005"
    assert info.value.http_status == 400


@pytest.mark.parametrize("name", [5, None, b"acme.deploy"])
def test_names_must_be_strings(name: Any) -> None:
    with pytest.raises(InvalidArgument):
        TypeCatalogue().register(name, DeployPayload)


@pytest.mark.parametrize("name", ["acme.deploy", "a.b", "acme.ops.deploy_v2", "my-co.deploy-request"])
def test_namespaced_names_are_accepted(name: str) -> None:
    model = TypeCatalogue().register(name, DeployPayload)
    assert issubclass(model, Message)


def test_a_name_registers_once(catalogue: TypeCatalogue) -> None:
    with pytest.raises(InvalidArgument, match="already registered"):
        catalogue.register("acme.deploy", AUDIT_SCHEMA)


@pytest.mark.parametrize("payload", [{"type": "no-such-type"}, {"minimum": "zero"}, str, 5, None])
def test_the_payload_must_be_a_model_or_a_valid_schema(payload: Any) -> None:
    cat = TypeCatalogue()
    with pytest.raises(InvalidArgument):
        cat.register("acme.bad", payload)
    assert "acme.bad" not in cat


def test_the_default_catalogue_is_read_only() -> None:
    with pytest.raises(InvalidArgument, match="read-only"):
        DEFAULT_CATALOGUE.register("acme.deploy", DeployPayload)
    assert "acme.deploy" not in DEFAULT_CATALOGUE


def test_a_payload_model_that_accepts_unknown_fields_is_refused() -> None:
    class Loose(BaseModel):
        service: str

    with pytest.raises(InvalidArgument):
        TypeCatalogue().register("acme.loose", Loose)


def _fresh_token() -> str:
    import uuid

    return uuid.uuid4().hex


class _Stamped(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    token: str = Field(default_factory=_fresh_token)


class _Wrapper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: list[_Stamped] = Field(default_factory=list)


def test_parse_encoded_keeps_wire_text_that_parses_back_the_same() -> None:
    wire = {
        "type": "send",
        "source": "agent:a",
        "target": "agent:b",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "version": "1.0",
        "message_id": "0b7f6a3e-58a2-4d8e-9f5e-1f8f3b1f1d2a",
        "payload": {"content_type": "text/plain", "text": "caf\u00e9"},
    }
    text = json.dumps(wire, indent=2)
    for given in (text, text.encode()):
        parsed, data = DEFAULT_CATALOGUE.parse_encoded(given)
        assert data == text.encode()
        assert parse_message(data) == parsed
    parsed, data = DEFAULT_CATALOGUE.parse_encoded(wire)
    assert data == parsed.to_json()
    assert DEFAULT_CATALOGUE.parse_encoded(parsed) == (parsed, parsed.to_json())


@pytest.mark.parametrize("payload_model", [_Stamped, _Wrapper])
def test_parse_encoded_re_encodes_types_that_fill_fresh_values(payload_model: type[BaseModel]) -> None:
    # A field filled with a fresh value when absent would read back different: such text is encoded again.
    catalogue = TypeCatalogue()
    catalogue.register("acme.stamped", payload_model)
    payload = {"text": "x"} if payload_model is _Stamped else {"inner": [{"text": "x"}]}
    text = json.dumps(
        {
            "type": "acme.stamped",
            "source": "agent:a",
            "target": "agent:b",
            "timestamp": "2026-01-01T00:00:00Z",
            "version": "1.0",
            "message_id": "0b7f6a3e-58a2-4d8e-9f5e-1f8f3b1f1d2a",
            "payload": payload,
        }
    )
    parsed, data = catalogue.parse_encoded(text)
    assert data == parsed.to_json() != text.encode()
    assert catalogue.parse(data) == parsed
