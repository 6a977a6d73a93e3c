"""The one wording of every refusal of an address, an id, an amount or a URL.

Each refusal says what was given, what was wrong with it, what a valid one looks like and, when one is close,
which valid value was probably meant::

    target 'agent:Bob' is not a bus address: use agent:<name> or sos:channel:<name> (a name is lower-case
    letters, digits and dashes, starting with a letter); did you mean 'agent:bob'?

The kernel raises these errors in-process; the server sends them as they are and the client raises them again,
and the command line prints them: the same code, message and details everywhere. Details carry ``field``,
``value`` (its repr, cut to ``VALUE_CHARS_MAX``), ``expected`` and, when there is one, ``suggestion``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InputError, InvalidArgument, InvalidURL

__all__ = [
    "AMOUNT_RULE",
    "NAME_RULE",
    "VALUE_CHARS_MAX",
    "bad_address",
    "bad_amount",
    "bad_id",
    "bad_owner",
    "bad_url",
    "refusal",
    "shown",
]

VALUE_CHARS_MAX = 80
"""The longest a refused value is quoted in a message (details keep up to 200 characters)."""
DETAILS_VALUE_CHARS_MAX = 200
NAME_RULE = "a name is lower-case letters, digits and dashes, starting with a letter"
AMOUNT_RULE = "an integer of micros (1 USD = 1000000 micros; money is never a float)"
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def shown(value: object) -> str:
    """``value`` as a refusal quotes it: its repr, cut to ``VALUE_CHARS_MAX``; besides str and int, with its type."""
    text = repr(value)
    if len(text) > VALUE_CHARS_MAX:
        text = text[: VALUE_CHARS_MAX - 1] + "…"
    if type(value) in (str, int):
        return text
    kind = type(value).__name__
    return f"{text} ({'an' if kind[:1] in 'aeiou' else 'a'} {kind})"


def refusal(field: str, value: object, expected: str, suggestion: object = None) -> str:
    """The sentence: ``<field> <value> is not <expected>[; did you mean <suggestion>?]``."""
    hint = f"; did you mean {suggestion!r}?" if suggestion is not None else ""
    return f"{field} {shown(value)} is not {expected}{hint}"


def _details(field: str, value: object, expected: str, suggestion: object, extra: dict[str, Any]) -> dict[str, Any]:
    found = {"field": field, "value": repr(value)[:DETAILS_VALUE_CHARS_MAX], "expected": expected, **extra}
    if suggestion is not None:
        found["suggestion"] = suggestion
    return found


def _refuse(
    cls: type[InputError], field: str, value: object, expected: str, suggestion: object = None, **extra: Any
) -> InputError:
    message = refusal(field, value, expected, suggestion)
    return cls(message, details=_details(field, value, expected, suggestion, extra))


def _name_like(text: str) -> str | None:
    """``text`` as a valid name (lower-cased, ``_`` and spaces as dashes), or None when that is not enough."""
    name = text.strip().lower().replace("_", "-").replace(" ", "-")
    return name if _NAME_RE.fullmatch(name) else None


def _address_suggestion(value: object, prefixes: tuple[str, ...]) -> str | None:
    if not isinstance(value, str) or len(value) > DETAILS_VALUE_CHARS_MAX:
        return None
    for prefix in prefixes:
        if value.lower().startswith(prefix):
            name = _name_like(value[len(prefix) :])
            return prefix + name if name else None
    name = _name_like(value.split(":")[-1])
    return prefixes[0] + name if name else None


def bad_address(
    field: str, value: object, *, agent_only: bool = False, cls: type[InputError] = InvalidArgument, **extra: Any
) -> InputError:
    """A bus address refused: ``agent:<name>`` (and, unless ``agent_only``, ``sos:channel:<name>``)."""
    if agent_only:
        expected = f"an agent address: use agent:<name> ({NAME_RULE})"
        prefixes: tuple[str, ...] = ("agent:",)
    else:
        expected = f"a bus address: use agent:<name> or sos:channel:<name> ({NAME_RULE})"
        prefixes = ("agent:", "sos:channel:")
    return _refuse(cls, field, value, expected, _address_suggestion(value, prefixes), **extra)


def bad_owner(field: str, value: object, **extra: Any) -> InputError:
    """An account owner refused: ``agent:<name>``, ``tenant:<slug>`` or ``system:<name>``."""
    expected = f"agent:<name>, tenant:<slug> or system:<name> ({NAME_RULE})"
    suggestion = _address_suggestion(value, ("agent:", "tenant:", "system:"))
    return _refuse(InvalidArgument, field, value, expected, suggestion, **extra)


def bad_amount(field: str, value: object, **extra: Any) -> InputError:
    """An amount refused: not an ``int`` (a float, a bool, text) or not positive."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _refuse(InvalidArgument, field, value, f"a positive {AMOUNT_RULE}", **extra)
    return _refuse(InvalidArgument, field, value, AMOUNT_RULE, **extra)


def bad_id(field: str, value: object, rule: str, **extra: Any) -> InputError:
    """An id refused; ``rule`` says what a valid one is made of."""
    return _refuse(InvalidArgument, field, value, f"a valid {field}: {rule}", **extra)


def bad_url(field: str, value: object, expected: str, suggestion: str | None = None, **extra: Any) -> InputError:
    """A URL refused (SOS-4006): ``expected`` lists what it may be; ``suggestion`` the URL probably meant."""
    return _refuse(InvalidURL, field, value, expected, suggestion, **extra)
