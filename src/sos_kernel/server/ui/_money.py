"""Amounts on pages: integer micros written as decimal text exactly, and decimal text read back exactly."""

from __future__ import annotations

import re

from ...errors import InvalidArgument

__all__ = ["MICROS_PER_UNIT", "PRICE_CHARS_MAX", "format_micros", "parse_micros"]

MICROS_PER_UNIT = 1_000_000
PRICE_CHARS_MAX = 24
"""The longest decimal amount a filter accepts (``parse_micros``)."""
_DECIMAL = re.compile(r"(\d{1,15})(?:\.(\d{1,6}))?")


def format_micros(amount: int, currency: str | None = None) -> str:
    """``amount`` micros as exact decimal text: at least 2 decimals, up to 6 (``1_500_000`` → ``1.50``,
    ``1`` → ``0.000001``), thousands grouped, ``currency`` appended. Never goes through a float; a non-int is
    SOS-4005."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidArgument(f"an amount must be integer micros, got {type(amount).__name__}")
    units, fraction = divmod(abs(amount), MICROS_PER_UNIT)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    text = f"{'-' if amount < 0 else ''}{units:,}.{digits}"
    return f"{text} {currency}" if currency else text


def parse_micros(text: str) -> int:
    """Decimal text (``12``, ``0.5``, at most 6 decimals, no sign, no exponent) as integer micros, exactly;
    anything else is SOS-4005."""
    match = _DECIMAL.fullmatch(text.strip()) if len(text) <= PRICE_CHARS_MAX else None
    if match is None:
        raise InvalidArgument("a price must be a decimal amount like 0.25 (at most 6 decimals)")
    units, fraction = match.group(1), match.group(2) or ""
    return int(units) * MICROS_PER_UNIT + int(fraction.ljust(6, "0"))
