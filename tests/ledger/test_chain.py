"""The chain's canonical encoding is stable: fixed inputs give fixed bytes and digests (a change here is a new chain,
and files written before it would no longer pass ``check()``)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sos_kernel.ledger.chain import (
    account_digest,
    canonical_metadata,
    encode_fields,
    genesis,
    micros,
    record_digest,
    record_flags,
)
from sos_kernel.ledger.models import Transfer

AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _transfer(**changes: object) -> Transfer:
    fields: dict[str, object] = {
        "id": "t1",
        "kind": "pending",
        "debit": "agent:alice",
        "credit": "agent:bob",
        "currency": "USD",
        "amount": 250,
        "pending_id": None,
        "timeout_s": 60,
        "code": 7,
        "reason": "déjeuner",
        "metadata": {"z": 1, "a": "x", "n": None, "b": True},
        "timestamp": AT,
        "sequence": 3,
        "status": "ok",
        "state": "pending",
        "expires_at": datetime(2026, 12, 1, 12, 1, 0, 123456, tzinfo=UTC),
    }
    fields.update(changes)
    return Transfer(**fields)  # type: ignore[arg-type]


def test_fields_are_length_prefixed_in_utf8_bytes() -> None:
    assert encode_fields(("R", "", "abc")) == b"1:R0:3:abc"
    assert encode_fields(("é", "x")) == "2:é1:x".encode()  # the byte length, not the character count
    assert canonical_metadata({"z": 1, "a": "x"}) == '{"a":"x","z":1}'
    assert canonical_metadata({}) == ""
    assert micros(AT) == 1_796_126_400_123_456


def test_digests_of_fixed_inputs_do_not_change() -> None:
    first = genesis("default")
    assert first.hex() == hashlib.sha256(b"1:G18:sos-ledger-chain-17:default").hexdigest()
    asked = (
        '1:Q2:t17:pending11:agent:alice9:agent:bob3:USD0:2:601:79:déjeuner33:{"a":"x","b":true,"n":null,"z":1}'
    ).encode()
    outcome = b"1:R1:33:25016:17961264001234562:ok0:0:16:17961264601234562:00"
    t = _transfer()
    expected = hashlib.sha256(first + hashlib.sha256(asked).digest() + outcome).digest()
    assert record_digest(first, t, record_flags(t, False, False)) == expected
    assert expected.hex() == "6d40148d15f2b583b8b1f31e211a5a3757c4b9675281d9cd982e5375f1b64847"
    assert (
        account_digest("default", "agent:alice", "USD", True)
        == hashlib.sha256(b"1:A18:sos-ledger-chain-17:default11:agent:alice3:USD1:1").hexdigest()
    )


def test_every_field_state_and_flag_aside_changes_the_digest() -> None:
    prev = genesis("default")
    base = _transfer()
    digest = record_digest(prev, base, "00")
    for name, value in [
        ("id", "t2"),
        ("kind", "posted"),
        ("currency", "EUR"),
        ("pending_id", "h0"),
        ("timeout_s", 61),
        ("code", 8),
        ("error_code", "SOS-7001"),
        ("error_message", "no"),
        ("debit", "agent:carol"),
        ("credit", "agent:carol"),
        ("amount", 251),
        ("sequence", 4),
        ("reason", "lunch"),
        ("metadata", {}),
        ("timestamp", datetime(2026, 12, 1, 12, 0, 0, 123457, tzinfo=UTC)),
        ("status", "failed"),
        ("expires_at", None),
    ]:
        assert record_digest(prev, _transfer(**{name: value}), "00") != digest, name
    assert record_digest(prev, base, "10") != digest
    assert record_digest(genesis("other"), base, "00") != digest
    # state and captured change when a hold settles: check() derives them from the chain instead
    assert record_digest(prev, _transfer(state="posted", captured=250), "00") == digest
    assert record_flags(_transfer(status="failed"), True, True) == ""
