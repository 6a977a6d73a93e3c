"""The ledger's value types and fast paths: the fast constructors build the same frozen objects as the classes do,
and the plain-fields shortcut of the service accepts nothing its checks refuse."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from sos_kernel.ledger.models import AMOUNT_MICROS_MAX, Transfer, TransferRequest, new_request, new_transfer
from sos_kernel.ledger.service import (
    _check_meta,
    _plainly_valid,
    check_amount,
    check_currency,
    check_owner,
    check_transfer_id,
)

AT = datetime(2026, 12, 1, tzinfo=UTC)


def test_fast_constructors() -> None:
    cases = [
        (new_request, TransferRequest, ("r1", "posted", "agent:a", "agent:b", "USD", 5), {"metadata": {"k": 1}}),
        (new_request, TransferRequest, ("r2", "pending", "agent:a", "agent:b", "USD", 5, None, 60), {}),
        (
            new_transfer,
            Transfer,
            ("t1", "posted", "agent:a", "agent:b", "USD", 5, None, 0, 0, "", {}, AT, 1, "ok"),
            {"state": "pending", "expires_at": AT},
        ),
    ]
    for fast, cls, args, kwargs in cases:
        made, expected = fast(*args, **kwargs), cls(*args, **kwargs)
        assert type(made) is cls
        assert made == expected
        assert repr(made) == repr(expected)
        assert pickle.loads(pickle.dumps(made)) == expected
        assert dataclasses.replace(made, id="other") == dataclasses.replace(expected, id="other")
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.id = "changed"
    with pytest.raises(TypeError):
        new_request("r3", "posted")


class _Str(str):
    pass


_texts = st.one_of(
    st.sampled_from(["agent:alice", "system:mint", "tenant:acme", "USD", "MIND", "t-1", "", "x" * 201, "agent:Bad"]),
    st.text(max_size=12),
    st.builds(_Str, st.sampled_from(["agent:alice", "USD", "t1"])),
)
_numbers = st.one_of(
    st.integers(-2, 3), st.sampled_from([AMOUNT_MICROS_MAX, AMOUNT_MICROS_MAX + 1, 2**31 - 1, 2**31]), st.booleans()
)
_anything = st.one_of(_texts, _numbers, st.floats(allow_nan=False), st.none())


_VALID = {
    "id": "t-1",
    "debit": "agent:alice",
    "credit": "system:mint",
    "amount": 5,
    "currency": "USD",
    "code": 0,
    "reason": "",
}


@settings(max_examples=300)
@given(st.sampled_from(sorted(_VALID)), st.one_of(_texts, _numbers, _anything, st.just("r" * 501)))
def test_the_plain_fields_shortcut_accepts_only_what_the_checks_accept(name: str, value: Any) -> None:
    # the shortcut and the checks are both one test per field, so changing one field of a valid set covers them
    fields = {**_VALID, name: value}
    if not _plainly_valid(**fields):
        return
    check_transfer_id(fields["id"])
    check_owner(fields["debit"])
    check_owner(fields["credit"])
    check_currency(fields["currency"])
    check_amount(fields["amount"])
    _check_meta(fields["reason"], None, fields["code"])


def test_the_plain_fields_shortcut_remembers_owners_and_currencies_apart() -> None:
    # both are remembered once well-formed; a currency must never pass as an owner, nor an owner as a currency
    assert _plainly_valid(**_VALID)
    assert not _plainly_valid(**{**_VALID, "debit": _VALID["currency"]})
    assert not _plainly_valid(**{**_VALID, "credit": _VALID["currency"]})
    assert not _plainly_valid(**{**_VALID, "currency": _VALID["debit"]})
