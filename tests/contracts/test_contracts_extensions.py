"""Our extension types (receipt, chunk, command, blocker, gate_verdict, evidence): round trips, limits, refusals.

They share the core envelope, so a message of any of them is refused for the same envelope faults as a core type;
here we test their payloads. Wire faults are SOS-4001 with the payload path in ``details["errors"]``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contract_support import REPO_ROOT, set_path
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from sos_kernel.contracts import (
    EXTENSION_TYPES,
    AlertMessage,
    AlertPayload,
    ArtifactRef,
    BlockerMessage,
    BlockerPayload,
    ChunkMessage,
    ChunkPayload,
    CommandMessage,
    CommandPayload,
    EvidenceMessage,
    EvidencePayload,
    ExpectedEvidence,
    GateVerdictMessage,
    GateVerdictPayload,
    Message,
    ReceiptMessage,
    ReceiptPayload,
    parse_message,
)
from sos_kernel.contracts.messages import (
    ARGV_ITEMS_MAX,
    CHUNK_TOTAL_MAX,
    COMMAND_LINE_CHARS_MAX,
    REASON_CHARS_MAX,
    REASONS_MAX,
    REFS_MAX,
)
from sos_kernel.errors import SchemaViolation

MID = "0b7c0a63-6d3e-4a53-9c63-93f4b1a3f0c1"
WHOLE = b'{"type": "send", "payload": {"text": "' + b"x" * 100 + b'"}}'
DIGEST = hashlib.sha256(WHOLE).hexdigest()
T0 = datetime(2026, 1, 31, 12, tzinfo=UTC)
ENVELOPE: dict[str, Any] = {"source": "agent:alice", "target": "agent:bob"}

BUILT: dict[str, Callable[[], Message]] = {
    "receipt": lambda: ReceiptMessage(
        **ENVELOPE, payload=ReceiptPayload(message_id=MID, kind="processed", consumer="agent:bob", group="workers")
    ),
    "receipt-rejected": lambda: ReceiptMessage(
        **ENVELOPE, payload=ReceiptPayload(message_id=MID, kind="rejected", reason="dead-lettered", attempt=5)
    ),
    "chunk": lambda: ChunkMessage(
        **ENVELOPE,
        payload=ChunkPayload(
            group_id=MID,
            seq=1,
            total=2,
            sha256=DIGEST,
            size_bytes=len(WHOLE),
            data=base64.b64encode(WHOLE[60:]).decode(),
            inner_type="send",
        ),
    ),
    "command-argv": lambda: CommandMessage(
        **ENVELOPE,
        payload=CommandPayload(
            argv=["pytest", "-q", "tests"],
            cwd="/work",
            env={"CI": "1"},
            timeout_s=600,
            task_id="task_1",
            expect=ExpectedEvidence(exit_status=0, output_contains="passed"),
        ),
        correlation_id=MID,
    ),
    "command-line": lambda: CommandMessage(**ENVELOPE, payload=CommandPayload(command_line="make test | tee log")),
    "blocker": lambda: BlockerMessage(
        **ENVELOPE,
        payload=BlockerPayload(
            blocker_id=MID, task_id="task_1", reason="waiting on review", severity="high", blocked_on=["agent:carol"]
        ),
    ),
    "gate_verdict-approve": lambda: GateVerdictMessage(
        **ENVELOPE, payload=GateVerdictPayload(subject_ref="task:task_1", verdict="approve", reviewer="human:dana")
    ),
    "gate_verdict-reject": lambda: GateVerdictMessage(
        **ENVELOPE,
        payload=GateVerdictPayload(
            subject_ref="task:task_1",
            verdict="reject",
            reasons=["tests fail", "no changelog"],
            reviewer="agent:gatekeeper",
            gate="ci",
            evidence_refs=[MID],
        ),
    ),
    "alert-fired": lambda: AlertMessage(
        source="agent:watcher",
        target="sos:channel:alerts",
        payload=AlertPayload(
            alert_id="agent_offline:agent:bob",
            rule="agent_offline",
            state="fired",
            severity="critical",
            subject="agent:bob",
            text="agent:bob is offline",
            details={"last_seen_s": 900},
            fired_at=T0,
        ),
    ),
    "alert-resolved": lambda: AlertMessage(
        source="agent:watcher",
        target="sos:channel:alerts",
        payload=AlertPayload(
            alert_id="agent_offline:agent:bob",
            rule="agent_offline",
            state="resolved",
            severity="critical",
            subject="agent:bob",
            text="agent:bob is back online",
            fired_at=T0,
            resolved_at=T0 + timedelta(minutes=5),
        ),
    ),
    "evidence": lambda: EvidenceMessage(
        **ENVELOPE,
        payload=EvidencePayload(
            command_message_id=MID,
            argv=["pytest", "-q"],
            cwd="/work",
            exit_status=0,
            output_sha256=DIGEST,
            output_bytes=len(WHOLE),
            output_excerpt="12 passed",
            artifacts=[ArtifactRef(ref="s3://b/report.xml", sha256=DIGEST, size_bytes=10, media_type="text/xml")],
            started_at=T0,
            finished_at=T0 + timedelta(seconds=3),
            host="ci-1",
        ),
    ),
}


@pytest.fixture(scope="module")
def own_validators() -> dict[str, Draft202012Validator]:
    """Validators of our own exported schemas for the extension types."""
    out = {}
    for name in EXTENSION_TYPES:
        schema = json.loads((REPO_ROOT / "schemas" / "messages" / f"{name}_v1.json").read_text(encoding="utf-8"))
        out[name] = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return out


def test_every_extension_type_has_an_example() -> None:
    assert {case.split("-")[0] for case in BUILT} == set(EXTENSION_TYPES)


@pytest.mark.parametrize("case", BUILT)
def test_round_trip(case: str, own_validators: dict[str, Draft202012Validator]) -> None:
    message = BUILT[case]()
    wire = message.to_wire()

    assert parse_message(wire) == message
    assert parse_message(message.to_json()) == message
    assert parse_message(json.dumps(wire)).to_wire() == wire
    assert type(parse_message(wire)) is EXTENSION_TYPES[message.type]
    own_validators[message.type].validate(wire)


def _wire(case: str) -> dict[str, Any]:
    return BUILT[case]().to_wire()


def _refused(data: dict[str, Any], loc: str, error_type: str | None = None) -> None:
    with pytest.raises(SchemaViolation) as info:
        parse_message(data)
    errors = info.value.details["errors"]
    assert any(e["loc"] == loc or e["loc"].startswith(loc + ".") for e in errors), errors
    if error_type is not None:
        assert error_type in [e["type"] for e in errors], errors


# --- receipt ------------------------------------------------------------------------------------------------


def test_rejected_receipt_needs_a_reason() -> None:
    wire = _wire("receipt-rejected")
    del wire["payload"]["reason"]
    _refused(wire, "payload", "receipt_reason")
    _refused(set_path(_wire("receipt-rejected"), ("payload", "reason"), ""), "payload.reason")
    with pytest.raises(ValidationError):
        ReceiptPayload(message_id=MID, kind="rejected")


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("payload", "kind"), "lost"),
        (("payload", "message_id"), "nope"),
        (("payload", "attempt"), 0),
        (("payload", "consumer"), "bob"),
        (("payload", "group"), ""),
        (("payload", "group"), "g" * 201),
        (("payload", "reason"), "r" * (REASON_CHARS_MAX + 1)),
        (("payload", "at"), "yesterday"),
    ],
)
def test_receipt_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("receipt-rejected"), path, bad), ".".join(path))


# --- chunk --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seq", "total"), [(2, 2), (5, 2), (0, 0), (-1, 2), (0, CHUNK_TOTAL_MAX + 1)])
def test_chunk_seq_must_be_below_total(seq: int, total: int) -> None:
    wire = set_path(set_path(_wire("chunk"), ("payload", "seq"), seq), ("payload", "total"), total)
    _refused(wire, "payload")


def test_chunk_limits_accept_the_edges() -> None:
    wire = set_path(_wire("chunk"), ("payload", "total"), CHUNK_TOTAL_MAX)
    wire = set_path(wire, ("payload", "seq"), CHUNK_TOTAL_MAX - 1)
    assert parse_message(wire).to_wire() == wire
    single = set_path(set_path(_wire("chunk"), ("payload", "seq"), 0.0), ("payload", "total"), 1.0)
    assert parse_message(single).to_wire()["payload"]["total"] == 1


@pytest.mark.parametrize(
    "bad", [DIGEST.upper(), DIGEST[:-1], DIGEST + "0", "g" * 64, "", hashlib.sha1(WHOLE).hexdigest()]
)
def test_chunk_sha256_must_be_64_lower_hex(bad: str) -> None:
    _refused(set_path(_wire("chunk"), ("payload", "sha256"), bad), "payload.sha256")


@pytest.mark.parametrize("bad", ["not base64!", "YWJj===", "YW Jj", 123])
def test_chunk_data_is_base64(bad: Any) -> None:
    _refused(set_path(_wire("chunk"), ("payload", "data"), bad), "payload.data")


@pytest.mark.parametrize(
    ("path", "bad"),
    [(("payload", "size_bytes"), -1), (("payload", "group_id"), "x"), (("payload", "inner_type"), "")],
)
def test_chunk_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("chunk"), path, bad), ".".join(path))


# --- command ------------------------------------------------------------------------------------------------


def test_command_needs_exactly_one_of_argv_and_command_line() -> None:
    both = set_path(_wire("command-argv"), ("payload", "command_line"), "pytest -q")
    _refused(both, "payload", "command_form")
    neither = _wire("command-argv")
    del neither["payload"]["argv"]
    _refused(neither, "payload", "command_form")
    with pytest.raises(ValidationError):
        CommandPayload()
    with pytest.raises(ValidationError):
        CommandPayload(argv=["ls"], command_line="ls")


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("payload", "argv"), []),
        (("payload", "argv"), "pytest -q"),
        (("payload", "argv"), ["ok", 1]),
        (("payload", "argv"), ["a"] * (ARGV_ITEMS_MAX + 1)),
        (("payload", "timeout_s"), 0),
        (("payload", "timeout_s"), 86401),
        (("payload", "env"), {"CI": 1}),
        (("payload", "cwd"), ""),
        (("payload", "task_id"), "task 1"),
        (("payload", "expect", "exit_status"), "0"),
        (("payload", "expect", "artifacts"), ["r"] * (REFS_MAX + 1)),
        (("payload", "expect", "bogus"), 1),
    ],
)
def test_command_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("command-argv"), path, bad), ".".join(path))


def test_long_command_lines_travel_whole() -> None:
    line = "echo " + "x" * (COMMAND_LINE_CHARS_MAX - 5)
    wire = set_path(_wire("command-line"), ("payload", "command_line"), line)
    assert parse_message(wire).to_wire()["payload"]["command_line"] == line
    _refused(set_path(wire, ("payload", "command_line"), line + "x"), "payload.command_line", "string_too_long")
    _refused(set_path(wire, ("payload", "command_line"), ""), "payload.command_line")


# --- blocker ------------------------------------------------------------------------------------------------


def test_blocker_names_what_is_blocked() -> None:
    wire = _wire("blocker")
    del wire["payload"]["task_id"]
    _refused(wire, "payload", "blocker_subject")
    with_message = set_path(wire, ("payload", "message_id"), MID)
    assert parse_message(with_message).to_wire()["payload"]["message_id"] == MID


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("payload", "reason"), ""),
        (("payload", "severity"), "urgent"),
        (("payload", "status"), "closed"),
        (("payload", "blocked_on"), [""]),
        (("payload", "blocked_on"), ["r"] * (REFS_MAX + 1)),
        (("payload", "blocker_id"), "b-1"),
    ],
)
def test_blocker_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("blocker"), path, bad), ".".join(path))


def test_blocker_status_defaults_to_open() -> None:
    assert _wire("blocker")["payload"]["status"] == "open"


# --- gate_verdict -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", ["reject", "needs_changes"])
def test_verdict_other_than_approve_needs_reasons(verdict: str) -> None:
    wire = set_path(_wire("gate_verdict-approve"), ("payload", "verdict"), verdict)
    _refused(wire, "payload", "verdict_reasons")
    ok = set_path(wire, ("payload", "reasons"), ["flaky test"])
    assert parse_message(ok).to_wire()["payload"]["reasons"] == ["flaky test"]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("payload", "verdict"), "maybe"),
        (("payload", "reviewer"), "bob"),
        (("payload", "reviewer"), "robot:bob"),
        (("payload", "reasons"), [""]),
        (("payload", "reasons"), ["r"] * (REASONS_MAX + 1)),
        (("payload", "subject_ref"), ""),
        (("payload", "subject_ref"), "s" * 501),
        (("payload", "evidence_refs"), ["e"] * (REFS_MAX + 1)),
    ],
)
def test_gate_verdict_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("gate_verdict-reject"), path, bad), ".".join(path))


# --- evidence -----------------------------------------------------------------------------------------------


def test_evidence_says_what_ran() -> None:
    wire = _wire("evidence")
    del wire["payload"]["argv"]
    _refused(wire, "payload", "evidence_command")
    as_line = set_path(wire, ("payload", "command_line"), "pytest -q")
    assert parse_message(as_line).to_wire()["payload"]["command_line"] == "pytest -q"


def test_evidence_cannot_finish_before_it_starts() -> None:
    wire = set_path(_wire("evidence"), ("payload", "finished_at"), "2026-01-31T11:59:59Z")
    _refused(wire, "payload", "evidence_times")


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("payload", "output_sha256"), DIGEST.upper()),
        (("payload", "output_sha256"), DIGEST[:32]),
        (("payload", "output_bytes"), -1),
        (("payload", "exit_status"), "0"),
        (("payload", "exit_status"), None),
        (("payload", "artifacts"), [{"ref": "x", "sha256": "abc"}]),
        (("payload", "artifacts"), [{"ref": ""}]),
        (("payload", "argv"), []),
        (("payload", "command_message_id"), "cmd-1"),
        (("payload", "output_excerpt"), "x" * 16385),
    ],
)
def test_evidence_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("evidence"), path, bad), ".".join(path))


def test_evidence_requires_exit_status_and_output_digest() -> None:
    for field in ("exit_status", "output_sha256", "output_bytes"):
        wire = _wire("evidence")
        del wire["payload"][field]
        _refused(wire, f"payload.{field}", "missing")


def test_negative_exit_status_is_a_signal_and_allowed() -> None:
    wire = set_path(_wire("evidence"), ("payload", "exit_status"), -9)
    assert parse_message(wire).to_wire()["payload"]["exit_status"] == -9


# --- alert ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("payload", "state"), "firing"),
        (("payload", "rule"), "Agent Offline"),
        (("payload", "severity"), "fatal"),
        (("payload", "text"), ""),
    ],
)
def test_alert_refusals(path: tuple[str, ...], bad: Any) -> None:
    _refused(set_path(_wire("alert-fired"), path, bad), ".".join(path))


def test_a_resolved_alert_says_when_and_only_it_does() -> None:
    _refused(set_path(_wire("alert-resolved"), ("payload", "resolved_at"), None), "payload")
    _refused(set_path(_wire("alert-fired"), ("payload", "resolved_at"), "2026-01-31T12:05:00Z"), "payload")
