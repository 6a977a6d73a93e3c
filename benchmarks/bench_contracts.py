"""``parse_message`` against its raw floors, measured in the same run.

The input is a few thousand distinct ~400-byte messages of the 8 SOS v0.4.1 core types, built with the models and
encoded with ``to_json()``. Each is parsed by:

- ``parse_message`` (bytes, and the same messages as dicts);
- the raw pydantic floor: a ``TypeAdapter`` of a discriminated union of the 8 core models, ``validate_json`` on the
  same bytes and ``validate_python`` on the same dicts;
- raw ``jsonschema``: a ``Draft202012Validator`` of the SOS v0.4.1 reference schema chosen by ``type``, on
  ``json.loads`` of the bytes, without and with format checking (``date-time``, ``uuid``).

Rounds are short and interleaved (every case once per round, in alternating order), so that a burst of load on a
noisy machine hits a case and its floor alike. The table shows each case's median rate, and each ratio is the median
of the per-round ratios (a case and its floor timed in the same round), which is steadier than a ratio of medians.
Target: ``parse_message`` at >= 0.8x of the raw pydantic floor.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Union

import jsonschema
from pydantic import Field, TypeAdapter

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
    WorkerInfo,
    parse_message,
)

MESSAGES_PER_TYPE = 500
MESSAGE_BYTES_TARGET = 400
TARGET_RATIO = 0.8
ROUNDS = 25
ROUND_SECONDS_MIN = 0.08
"""Each case runs whole passes over the messages until a round lasts at least this long."""
SEED = 20240501
REFERENCE_SCHEMAS_ENV = "SOS_REFERENCE_SCHEMAS"
_REPO = Path(__file__).resolve().parents[1]
_REFERENCE_DEFAULT = _REPO.parent / "shared" / "reference" / "sos-v0.4.1" / "schemas" / "messages"

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "tempor")

Builder = Callable[[random.Random, datetime, str], Message]


# --- the messages ----------------------------------------------------------------------------------------------


def _agent(rng: random.Random) -> str:
    return "agent:" + rng.choice(["alice", "bob", "carol", "dave", "erin", "frank"]) + f"-{rng.randrange(100)}"


def _announce(rng: random.Random, now: datetime, filler: str) -> Message:
    payload = AnnouncePayload(text=filler, tool="claude-code", pid=rng.randrange(1, 1 << 22), cwd="/srv/agents/x")
    return AnnounceMessage(source=_agent(rng), timestamp=now, payload=payload)


def _send(rng: random.Random, now: datetime, filler: str) -> Message:
    return SendMessage(
        source=_agent(rng),
        target=_agent(rng),
        timestamp=now,
        payload=SendPayload(text=filler, content_type=rng.choice(["text/plain", "text/markdown"])),
        correlation_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    )


def _wake(rng: random.Random, now: datetime, filler: str) -> Message:
    return WakeMessage(
        source=_agent(rng),
        target=_agent(rng),
        timestamp=now,
        payload=WakePayload(text=filler or "wake up"),
        priority=rng.choice(["critical", "high", "normal", "low"]),
        expires_at=now + timedelta(minutes=5),
    )


def _ask(rng: random.Random, now: datetime, filler: str) -> Message:
    return AskMessage(
        source=_agent(rng),
        target=_agent(rng),
        timestamp=now,
        payload=AskPayload(question=filler, reply_channel=_agent(rng)),
        timeout_s=rng.randrange(1, 3600),
    )


def _task_created(rng: random.Random, now: datetime, filler: str) -> Message:
    payload = TaskCreatedPayload(
        task_id=f"task-{rng.getrandbits(40):x}",
        title="Review the ledger settlement path",
        priority=rng.choice(["critical", "high", "medium", "low"]),
        description=filler,
        labels=["ledger", "review"],
        token_budget=rng.randrange(1000, 100_000),
    )
    return TaskCreatedMessage(source=_agent(rng), timestamp=now, payload=payload)


def _task_claimed(rng: random.Random, now: datetime, filler: str) -> Message:
    payload = TaskClaimedPayload(
        task_id=f"task-{rng.getrandbits(40):x}",
        claimed_at=now,
        claim_expires_at=now + timedelta(minutes=10),
        worker_info=WorkerInfo(model="claude-sonnet-" + filler, plan="growth", estimated_duration_s=600),
    )
    return TaskClaimedMessage(source=_agent(rng), timestamp=now, payload=payload)


def _task_completed(rng: random.Random, now: datetime, filler: str) -> Message:
    payload = TaskCompletedPayload(
        task_id=f"task-{rng.getrandbits(40):x}",
        status="done",
        completed_at=now,
        result={"summary": filler, "files_changed": rng.randrange(1, 40)},
        duration_s=rng.randrange(1, 5000),
        tokens_spent=rng.randrange(1, 1_000_000),
        cost_cents=rng.randrange(1, 10_000),
    )
    return TaskCompletedMessage(source=_agent(rng), timestamp=now, payload=payload)


def _agent_joined(rng: random.Random, now: datetime, filler: str) -> Message:
    payload = AgentJoinedPayload(
        agent_name=_agent(rng).removeprefix("agent:"),
        joined_at=now,
        tenant_id=f"tenant-{rng.randrange(1000)}",
        source_host="worker-" + filler,
        expiry_at=now + timedelta(seconds=600),
    )
    return AgentJoinedMessage(timestamp=now, payload=payload)


BUILDERS: dict[str, Builder] = {
    "announce": _announce,
    "send": _send,
    "wake": _wake,
    "ask": _ask,
    "task_created": _task_created,
    "task_claimed": _task_claimed,
    "task_completed": _task_completed,
    "agent_joined": _agent_joined,
}


def _sized(build: Builder, rng: random.Random, now: datetime) -> bytes:
    # Build once without filler, then pad the free-text field so the message is MESSAGE_BYTES_TARGET long.
    state = rng.getstate()
    bare = len(build(rng, now, "x").to_json())
    rng.setstate(state)
    filler = "-".join(rng.choice(_WORDS) for _ in range(80))[: max(1, MESSAGE_BYTES_TARGET - bare + 1)]
    return build(rng, now, filler.strip("-") or "x").to_json()


def build_messages(per_type: int = MESSAGES_PER_TYPE, seed: int = SEED) -> list[bytes]:
    """``per_type`` distinct encoded messages of each core type, interleaved, deterministic for a seed."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batches = []
    for build in BUILDERS.values():
        batch = []
        for i in range(per_type):
            now = start + timedelta(seconds=i, microseconds=rng.randrange(1_000_000))
            batch.append(_sized(build, rng, now))
        batches.append(batch)
    return [message for group in zip(*batches, strict=True) for message in group]


# --- the floors ------------------------------------------------------------------------------------------------


def raw_pydantic_adapter() -> TypeAdapter[Any]:
    """A bare ``TypeAdapter`` of the discriminated union of the 8 core models: no catalogue, no wire context."""
    union: Any = Annotated[Union[tuple(CORE_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


def reference_schema_dir() -> Path:
    """Where the SOS v0.4.1 message schemas are (``$SOS_REFERENCE_SCHEMAS`` overrides the default)."""
    return Path(os.environ.get(REFERENCE_SCHEMAS_ENV, _REFERENCE_DEFAULT))


def jsonschema_validators(directory: Path, *, formats: bool) -> dict[str, Any]:
    """One ``Draft202012Validator`` per core type, keyed by type name."""
    checker = jsonschema.FormatChecker() if formats else None
    validators = {}
    for name in CORE_TYPES:
        schema = json.loads((directory / f"{name}_v1.json").read_text(encoding="utf-8"))
        validators[name] = jsonschema.Draft202012Validator(schema, format_checker=checker)
    return validators


def _jsonschema_parse(validators: dict[str, Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        obj = json.loads(data)
        validators[obj["type"]].validate(obj)
        return obj

    return parse


# --- timing ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One way of validating every message; ``floor`` names the case its ratio is taken against."""

    name: str
    func: Callable[[Any], Any]
    items: Sequence[Any]
    floor: str | None = None
    note: str = ""
    inverse: bool = False
    """Show the floor's speed as a multiple of this case's (for the slower baselines) rather than the reverse."""
    passes: int = 1
    window: int = 0
    """Items per round when one pass over all of them is longer than a round (the slow baselines)."""
    offset: int = 0
    rates: list[float] = field(default_factory=list)

    def one_round(self) -> float:
        func, items = self.func, self._round_items()
        started = time.perf_counter()
        for _ in range(self.passes):
            for item in items:
                func(item)
        elapsed = time.perf_counter() - started
        rate = self.passes * len(items) / elapsed
        self.rates.append(rate)
        return rate

    def _round_items(self) -> Sequence[Any]:
        if not self.window:
            return self.items
        # Consecutive windows, wrapping around, so that successive rounds cover every item.
        start, self.offset = self.offset, (self.offset + self.window) % len(self.items)
        chosen = self.items[start : start + self.window]
        return [*chosen, *self.items[: self.window - len(chosen)]]

    def calibrate(self) -> None:
        # One untimed pass warms caches and tells how many passes (or items) make a round of ROUND_SECONDS_MIN.
        started = time.perf_counter()
        for item in self.items:
            self.func(item)
        elapsed = max(time.perf_counter() - started, 1e-9)
        if elapsed > ROUND_SECONDS_MIN:
            self.window = min(len(self.items), math.ceil(ROUND_SECONDS_MIN / (elapsed / len(self.items))))
        else:
            self.passes = math.ceil(ROUND_SECONDS_MIN / elapsed)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def _check_agreement(messages: list[bytes], adapter: TypeAdapter[Any], validators: dict[str, Any] | None) -> None:
    # Correctness before speed: every path must accept every message, as the same type.
    for data in messages:
        ours = parse_message(data)
        raw = adapter.validate_json(data)
        if type(ours) is not type(raw) or ours != raw:
            raise RuntimeError(f"parse_message and the raw adapter disagree on {data!r}")
        if validators is not None:
            obj = json.loads(data)
            validators[obj["type"]].validate(obj)


def build_cases(messages: list[bytes]) -> list[Case]:
    """Every case, in table order, on the same messages."""
    dicts = [json.loads(m) for m in messages]
    adapter = raw_pydantic_adapter()
    directory = reference_schema_dir()
    cases = [
        Case("parse_message(bytes)", parse_message, messages, floor="pydantic validate_json"),
        Case("pydantic validate_json", adapter.validate_json, messages, note="raw floor: union of 8 core models"),
    ]
    if (directory / "send_v1.json").exists():
        plain = jsonschema_validators(directory, formats=False)
        _check_agreement(messages, adapter, plain)
        with_formats = jsonschema_validators(directory, formats=True)
        cases += [
            Case(
                "jsonschema",
                _jsonschema_parse(plain),
                messages,
                floor="parse_message(bytes)",
                note="json.loads + reference schema",
                inverse=True,
            ),
            Case(
                "jsonschema + formats",
                _jsonschema_parse(with_formats),
                messages,
                floor="parse_message(bytes)",
                note="json.loads + reference schema + formats",
                inverse=True,
            ),
        ]
    else:
        _check_agreement(messages, adapter, None)
        print(f"(reference schemas not found in {directory}; set {REFERENCE_SCHEMAS_ENV} to add the jsonschema rows)")
    cases += [
        Case("parse_message(dict)", parse_message, dicts, floor="pydantic validate_python"),
        Case("pydantic validate_python", adapter.validate_python, dicts, note="raw floor, dict input"),
    ]
    return cases


def run(cases: list[Case], rounds: int = ROUNDS) -> None:
    """Calibrate every case, then time ``rounds`` interleaved rounds of all of them."""
    for case in cases:
        case.calibrate()
    for index in range(rounds):
        for case in cases if index % 2 == 0 else reversed(cases):
            case.one_round()


def paired_ratio(case: Case, floor: Case) -> float:
    """The median over rounds of ``case``'s rate divided by ``floor``'s rate in the same round."""
    return statistics.median(ours / theirs for ours, theirs in zip(case.rates, floor.rates, strict=True))


def render(cases: list[Case], messages: list[bytes]) -> str:
    """The results as a Markdown table (readable as plain text too)."""
    by_name = {case.name: case for case in cases}
    mean_bytes = statistics.fmean(len(m) for m in messages)
    lines = [
        f"pydantic {version('pydantic')}, pydantic-core {version('pydantic-core')}, jsonschema {version('jsonschema')}",
        f"{len(messages)} distinct messages ({len(messages) // len(BUILDERS)} per type), mean {mean_bytes:.0f} bytes",
        f"{len(cases[0].rates)} interleaved rounds of >= {ROUND_SECONDS_MIN} s; median rates; ratios paired by round",
        "",
        f"| {'case':<26} | {'msgs/s':>9} | {'us/msg':>6} | {'min..max msgs/s':>17} | {'ratio':<36} | note",
        f"|{'-' * 28}|{'-' * 10}:|{'-' * 7}:|{'-' * 18}:|{'-' * 38}|------",
    ]
    for case in cases:
        ratio = ""
        if case.floor is not None and case.floor in by_name and case.inverse:
            ratio = f"{case.floor} is {paired_ratio(by_name[case.floor], case):.1f}x this"
        elif case.floor is not None and case.floor in by_name:
            ratio = f"{paired_ratio(case, by_name[case.floor]):.2f}x of {case.floor}"
        spread = f"{min(case.rates) / 1e3:.0f}k..{max(case.rates) / 1e3:.0f}k"
        row = f"| {case.name:<26} | {case.median:>9,.0f} | {1e6 / case.median:>6.2f} | {spread:>17} | {ratio:<36} |"
        lines.append(f"{row} {case.note}".rstrip())
    return "\n".join(lines)


def summary(cases: list[Case]) -> str:
    """The ratios the project tracks, one per line."""
    by_name = {case.name: case for case in cases}
    lines = []
    for case_name, floor_name, label in (
        ("parse_message(bytes)", "pydantic validate_json", "raw pydantic (bytes)"),
        ("parse_message(dict)", "pydantic validate_python", "raw pydantic (dicts)"),
    ):
        ratio = paired_ratio(by_name[case_name], by_name[floor_name])
        verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
        lines.append(f"{'parse_message / ' + label + ':':<37} {ratio:.2f}x  ({verdict} the {TARGET_RATIO}x target)")
    for floor_name in ("jsonschema", "jsonschema + formats"):
        if floor_name in by_name:
            ratio = paired_ratio(by_name["parse_message(bytes)"], by_name[floor_name])
            lines.append(f"{'parse_message / ' + floor_name + ':':<37} {ratio:.1f}x")
    return "\n".join(lines)


def main() -> None:
    """Build the messages, check every path agrees on them, time every case, print the table and the ratios."""
    messages = build_messages()
    cases = build_cases(messages)
    run(cases)
    print(render(cases, messages))
    print()
    print(summary(cases))


if __name__ == "__main__":
    main()
