"""The ledger's value types: the fast constructors build the same frozen objects as the classes do."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime

import pytest

from sos_kernel.ledger.models import Transfer, TransferRequest, new_request, new_transfer

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
