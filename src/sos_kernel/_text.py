"""Unicode text the kernel can store and send: no lone UTF-16 surrogate.

A Python ``str`` may hold a lone surrogate (``"\\ud800"``: JSON's ``\\ud800`` escape decodes to one), which no UTF-8
encoder, JSON schema check or Redis client accepts. :func:`invalid_text` finds one anywhere in a call's arguments
(so the guard refuses it before anything is written); :func:`escaped` turns one into visible text (``\\ud800``) for
what must be written or sent whatever it holds (an audit record, a stored value read back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["escaped", "invalid_text", "is_text"]


def is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (holds no lone surrogate); ASCII is checked first, as the usual case."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(value: str) -> str:
    """``value`` with each lone surrogate written as its ``\\uXXXX`` escape (visible text); valid text unchanged."""
    return value if is_text(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")


def invalid_text(value: Any, path: str) -> str | None:
    """Where (``path``, then ``.key`` / ``[i]`` / ``.field``) a string that is not valid text lies in ``value``,
    searching dicts (keys too), lists, tuples, sets, contract models and dataclasses; ``None`` if there is none."""
    if type(value) is str:  # the usual argument: no walk, no allocation
        return None if is_text(value) else path
    if value is None or isinstance(value, bool | int | float | bytes):
        return None
    if _find(value, None) is None:  # the usual case: no path is built
        return None
    return _find(value, path)


def _find(value: Any, path: str | None) -> str | None:
    """The first invalid string in ``value``: its path (``""`` when ``path`` is ``None``: not built)."""
    stack: list[tuple[Any, str | None]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not is_text(item):
                return where or ""
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                if isinstance(key, str) and not is_text(key):
                    return "" if where is None else f"{where}.{escaped(key)}"
                stack.append((sub, None if where is None else f"{where}.{key}"))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((sub, None if where is None else f"{where}[{i}]") for i, sub in enumerate(item))
        elif isinstance(item, BaseModel):
            fields = [(name, getattr(item, name)) for name in type(item).model_fields]
            fields.extend((item.model_extra or {}).items())
            stack.extend((sub, None if where is None else f"{where}.{name}") for name, sub in fields)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            fields = [(f.name, getattr(item, f.name)) for f in dataclasses.fields(item)]
            stack.extend((sub, None if where is None else f"{where}.{name}") for name, sub in fields)
    return None
