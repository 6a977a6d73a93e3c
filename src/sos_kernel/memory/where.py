"""The ``where`` filter of ``recall`` and ``list``: equality and ``$in`` on metadata, all terms required.

Grammar (a JSON object; every key must hold)::

    where     = { key: condition, ... }            1..where_terms_max terms in all
    key       = a metadata key (a non-empty str of at most 256 characters)
    condition = scalar                             metadata[key] equals scalar
              | {"$eq": scalar}                    the same, spelled out
              | {"$in": [scalar, ...]}             metadata[key] equals one of them (1+ scalars)
    scalar    = str | int | float | bool | null

Equality is type-exact (``1`` is not ``1.0`` nor ``true``), so a filter means the same in-process and over JSON;
a key the memory's metadata lacks never matches (not even ``null``). Anything else (an unknown operator, a list
where a scalar belongs, an empty ``$in``, too many terms) is refused with SOS-4005 before anything is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._exact import exact_equal
from ..errors import InvalidArgument

__all__ = ["WHERE_KEY_CHARS_MAX", "Matcher", "compile_where"]

WHERE_KEY_CHARS_MAX = 256
_SCALARS = (str, int, float, bool, type(None))
_MISSING = object()

Matcher = Callable[[Mapping[str, Any]], bool]


def _bad(reason: str, where: Any) -> InvalidArgument:
    text = repr(where)
    return InvalidArgument(f"bad where filter: {reason}", details={"where": text[:500]})


def _scalar(value: Any) -> bool:
    return type(value) in _SCALARS and not (isinstance(value, float) and value != value)


def _condition(key: str, condition: Any, where: Any) -> tuple[Any, ...]:
    if _scalar(condition):
        return (condition,)
    if not isinstance(condition, Mapping) or len(condition) != 1:
        raise _bad(f"{key!r} must be a scalar, {{'$eq': scalar}} or {{'$in': [scalars]}}", where)
    ((op, operand),) = condition.items()
    if op == "$eq" and _scalar(operand):
        return (operand,)
    if op == "$in" and isinstance(operand, list | tuple) and operand and all(_scalar(v) for v in operand):
        return tuple(operand)
    raise _bad(f"{key!r}: unknown operator or operand {op!r} (known: '$eq' with a scalar, '$in' with a list)", where)


def compile_where(where: Mapping[str, Any] | None, terms_max: int) -> Matcher | None:
    """A predicate over a memory's metadata for ``where`` (None for no filter); SOS-4005 when malformed."""
    if where is None:
        return None
    if not isinstance(where, Mapping) or not where:
        raise _bad("it must be a non-empty object of metadata key -> condition", where)
    terms: list[tuple[str, tuple[Any, ...]]] = []
    for key, condition in where.items():
        if not isinstance(key, str) or not key or len(key) > WHERE_KEY_CHARS_MAX:
            raise _bad(f"keys are non-empty strings of at most {WHERE_KEY_CHARS_MAX} characters", where)
        terms.append((key, _condition(key, condition, where)))
    if sum(len(values) for _, values in terms) > terms_max:
        raise _bad(f"at most {terms_max} terms (keys and $in values) in all", where)

    def matches(metadata: Mapping[str, Any]) -> bool:
        for key, values in terms:
            value = metadata.get(key, _MISSING)
            if value is _MISSING or not any(exact_equal(value, v) for v in values):
                return False
        return True

    return matches
