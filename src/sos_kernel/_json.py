"""The one parser for JSON the kernel takes from outside: strict JSON, each key at most once per object.

JSON leaves an object that names a key twice to each reader: Python keeps the last copy, other parsers the first,
so a record holding ``{"amount": 1, "amount": 1000000}`` would mean two things to two readers. :func:`loads`
refuses such text with SOS-4001, naming the key and its path, before anything can act on it or store it; it also
refuses NaN and Infinity, which are not JSON, unless told otherwise. Text that is not JSON raises ``ValueError``,
which each caller words for its input (a message, a request body, a file).

The standard library's parser (with ``object_pairs_hook``) is the definition; pydantic's own parser, ``jiter``,
is a faster first pass that finds repeated keys too, and any text it refuses is judged again by the definition.
"""

from __future__ import annotations

import json
from typing import Any

import jiter

from .errors import SchemaViolation

__all__ = ["DUPLICATE_KEY_ERROR_TYPE", "KEY_CHARS_SHOWN_MAX", "loads", "repeated_key"]

DUPLICATE_KEY_ERROR_TYPE = "json_duplicate_key"
"""The ``type`` of the refusal's entry in ``details["errors"]``."""

KEY_CHARS_SHOWN_MAX = 100
"""A repeated key is shown cut to this many characters (a key can be as long as the text)."""


def loads(data: bytes | bytearray | str, *, allow_nan: bool = False) -> Any:
    """The value of the JSON text ``data`` (``NaN`` and ``Infinity`` read as floats only with ``allow_nan``: a
    request body keeps them, so the service refuses the argument as it does in-process).

    Raises ``SchemaViolation`` (SOS-4001) when an object names a key twice, at any depth (``details["errors"]``:
    ``[{"loc": "payload.amount", "msg", "type": "json_duplicate_key"}]``), and ``ValueError`` when ``data`` is not
    JSON or not UTF-8.
    """
    try:
        raw = data if type(data) is bytes else data.encode() if isinstance(data, str) else bytes(data)
        return jiter.from_json(raw, catch_duplicate_keys=True, allow_inf_nan=allow_nan, cache_mode="keys")
    except ValueError:  # not JSON, a repeated key, or text jiter reads otherwise: the definition decides
        return _checked(data, allow_nan)


class _Repeated(Exception):
    """An object named a key twice (found by the hook; its path is found afterwards)."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Repeated
    return found


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _checked(data: bytes | bytearray | str, allow_nan: bool) -> Any:
    constant = None if allow_nan else _not_json
    try:
        return json.loads(data, object_pairs_hook=_unique, parse_constant=constant)
    except _Repeated:
        raise _refusal(json.loads(data, object_pairs_hook=_Pairs, parse_constant=constant)) from None


class _Pairs(list[tuple[str, Any]]):
    """An object as its key/value pairs in order, repeats kept: what the refusal walks to name the path."""


def _refusal(tree: Any) -> SchemaViolation:
    """The refusal of the first repeated key in document order (an object's own keys before its children's)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(tree, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Pairs):
            seen: set[str] = set()
            for key, _ in value:
                if key in seen:
                    return repeated_key(key, path)
                seen.add(key)
            stack.extend((v, (*path, k)) for k, v in reversed(value))
        elif isinstance(value, list):
            stack.extend((v, (*path, str(i))) for i, v in reversed(list(enumerate(value))))
    raise ValueError("no repeated key")  # unreachable: the hook found one


def _text(key: str) -> str:
    # a lone surrogate written as its escape: the refusal is stored (audit) and sent as UTF-8
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def repeated_key(key: str, path: tuple[str, ...]) -> SchemaViolation:
    """The refusal of ``key`` repeated in the object at ``path`` (its keys and indices from the root)."""
    shown = _text(key if len(key) <= KEY_CHARS_SHOWN_MAX else key[:KEY_CHARS_SHOWN_MAX] + "…")
    where = ".".join(_text(p) for p in path) if path else "(root)"
    loc = f"{where}.{shown}" if path else shown
    return SchemaViolation(
        f"the object at {where} repeats the key {shown!r}; a key may appear once in an object "
        "(readers disagree on which copy counts)",
        details={"errors": [{"loc": loc, "msg": f"repeated key {shown!r}", "type": DUPLICATE_KEY_ERROR_TYPE}]},
    )
