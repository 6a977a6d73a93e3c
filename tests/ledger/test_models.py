"""The ledger's value types, and the plain-fields shortcut of the service, which accepts nothing its checks refuse."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from sos_kernel.ledger.models import AMOUNT_MICROS_MAX
from sos_kernel.ledger.service import (
    _check_meta,
    _plainly_valid,
    check_amount,
    check_currency,
    check_owner,
    check_transfer_id,
)

AT = datetime(2026, 12, 1, tzinfo=UTC)


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
