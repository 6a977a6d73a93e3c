"""Amounts on pages are integer micros written exactly: never through a float."""

from __future__ import annotations

import pytest

from sos_kernel.errors import InvalidArgument
from sos_kernel.server.ui import format_micros, parse_micros


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.00"),
        (1, "0.000001"),
        (10, "0.00001"),
        (1_500_000, "1.50"),
        (12_345_678, "12.345678"),
        (-2_000_000, "-2.00"),
        (-1, "-0.000001"),
        (1_234_567_890_123, "1,234,567.890123"),
        (9_007_199_254_740_993, "9,007,199,254.740993"),  # past a float's 53 bits: still exact
    ],
)
def test_format_micros_is_exact(micros: int, text: str) -> None:
    assert format_micros(micros) == text
    assert format_micros(micros, "USD") == f"{text} USD"


def test_parse_micros_reads_back_exactly() -> None:
    for micros in (0, 1, 10, 1_500_000, 12_345_678, 9_007_199_254_740_993):
        assert parse_micros(format_micros(micros).replace(",", "")) == micros
    assert parse_micros("0.1") == 100_000


@pytest.mark.parametrize("bad", [1.5, True, "12", None])
def test_format_refuses_what_is_not_integer_micros(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        format_micros(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "-1", "1e3", "0.0000001", "1,000", "nan", "1." + "0" * 30, " . "])
def test_parse_refuses_what_is_not_a_plain_decimal(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_micros(bad)
