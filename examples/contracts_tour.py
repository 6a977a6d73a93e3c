"""A tour of the wire contracts: build messages, round-trip them, see every parse error, add a custom type.

Run it with ``python examples/contracts_tour.py``; it prints what it does and exits 0.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from sos_kernel.contracts import (
    DEFAULT_CATALOGUE,
    MESSAGE_BYTES_MAX,
    AskMessage,
    AskPayload,
    SendMessage,
    SendPayload,
    TaskCreatedMessage,
    TaskCreatedPayload,
    TypeCatalogue,
    WireModel,
    parse_message,
)
from sos_kernel.errors import SOSError


def build_messages() -> list[SendMessage | AskMessage | TaskCreatedMessage]:
    """Three core messages; message_id, timestamp and version are filled in for us."""
    hello = SendMessage(source="agent:alice", target="agent:bob", payload=SendPayload(text="hello, bob"))
    question = AskMessage(
        source="agent:alice",
        target="agent:bob",
        payload=AskPayload(question="is the build green?", reply_channel="agent:alice"),
        timeout_s=30,
    )
    task = TaskCreatedMessage(
        source="agent:alice",
        payload=TaskCreatedPayload(task_id="build-42", title="Fix the flaky test", priority="high"),
    )
    return [hello, question, task]


def round_trip(messages: list[SendMessage | AskMessage | TaskCreatedMessage]) -> None:
    print("== round trip: to_json() -> parse_message() gives back an equal message")
    for message in messages:
        wire = message.to_json()
        back = parse_message(wire)
        if back != message:
            raise SystemExit(f"round trip changed {message!r} into {back!r}")
        print(f"{type(back).__name__:<20} {len(wire):>4} bytes  {wire.decode()[:90]}...")


def expect_error(label: str, code: str, data: Any, catalogue: TypeCatalogue | None = None) -> None:
    try:
        parse_message(data, catalogue=catalogue)
    except SOSError as exc:
        if exc.code != code:
            raise SystemExit(f"{label}: expected {code}, got {exc.code}: {exc.message}") from exc
        print(f"{exc.code}  {type(exc).__name__:<16} {label:<30} {exc.message[:70]}")
        return
    raise SystemExit(f"{label}: expected {code}, but the message was accepted")


def show_errors(good: dict[str, Any]) -> None:
    print("\n== every parse error, in SOS's order of checks")
    without_type = {k: v for k, v in good.items() if k != "type"}
    expect_error("no 'type'", "SOS-4002", without_type)
    expect_error("a misspelt type", "SOS-4004", {**good, "type": "sned"})
    expect_error("text above 16384 chars", "SOS-4001", {**good, "payload": {"text": "x" * 16385}})
    expect_error("an unknown field", "SOS-4001", {**good, "priority": "high"})
    expect_error("source without 'agent:'", "SOS-4003", {**good, "source": "alice"})
    expect_error("not JSON at all", "SOS-4001", b"{not json")
    expect_error("32 MiB + 1 byte of input", "SOS-4010", b" " * (MESSAGE_BYTES_MAX + 1))


class DeployRequest(WireModel):
    """A payload model: WireModel refuses unknown fields and is immutable, like the kernel's own payloads."""

    service: str = Field(min_length=1, max_length=100)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    replicas: int = Field(default=1, ge=1, le=100, strict=True)


ALERT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["level", "text"],
    "additionalProperties": False,
    "properties": {"level": {"enum": ["info", "warning", "critical"]}, "text": {"type": "string", "maxLength": 500}},
}


def custom_types() -> None:
    print("\n== custom types live in a catalogue of their own, under a namespaced name")
    catalogue = TypeCatalogue()
    deploy = catalogue.register("acme.deploy_request", DeployRequest)
    catalogue.register("acme.alert", ALERT_SCHEMA)
    request = deploy(source="agent:ci", target="agent:deployer", payload=DeployRequest(service="api", version="1.4.2"))
    parsed = parse_message(request.to_json(), catalogue=catalogue)
    print(f"{parsed.type}: {json.dumps(parsed.to_wire()['payload'])}")
    alert = {**request.to_wire(), "type": "acme.alert", "payload": {"level": "warning", "text": "disk at 91%"}}
    print(f"acme.alert: {json.dumps(parse_message(alert, catalogue=catalogue).to_wire()['payload'])}")
    expect_error("alert with a bad level", "SOS-4001", {**alert, "payload": {"level": "meh", "text": "?"}}, catalogue)
    expect_error("custom type, default catalogue", "SOS-4004", alert)
    try:
        DEFAULT_CATALOGUE.register("acme.other", DeployRequest)
    except SOSError as exc:
        print(f"{exc.code}  {type(exc).__name__:<16} {'register on the default':<30} {exc.message[:70]}")


def main() -> int:
    messages = build_messages()
    round_trip(messages)
    show_errors(messages[0].to_wire())
    custom_types()
    print("\nall good")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
