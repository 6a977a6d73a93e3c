"""Default message ids: UUIDv7, time-ordered, unique, and valid wherever a message id is."""

from __future__ import annotations

import time
import uuid

from sos_kernel.contracts import SendMessage, SendPayload, new_message_id, parse_message


def test_new_ids_are_version_7_uuids_carrying_the_time_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_message_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    for text in ids:
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
    assert len(set(ids)) == len(ids)


def test_ids_made_later_sort_later_by_their_time_prefix() -> None:
    first = new_message_id()
    time.sleep(0.002)  # the time prefix is in ms: ids 2 ms apart must be ordered, whatever their random bits
    second = new_message_id()
    assert first < second


def test_models_use_them_and_the_wire_takes_them() -> None:
    msg = SendMessage(source="agent:a", target="agent:b", payload=SendPayload(text="x"))
    assert uuid.UUID(msg.message_id).version == 7
    assert parse_message(msg.to_json()) == msg
    other = msg.model_copy(update={"message_id": str(uuid.uuid4())})  # any UUID stays a valid message id
    assert parse_message(other.to_json()).message_id == other.message_id
