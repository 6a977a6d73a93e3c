"""Type-exact equality of JSON-like values: ``True`` is not ``1``, and ``5.0`` is not ``5``.

Python's ``==`` holds ``True == 1 == 1.0``. Where a value is a signed condition or a replayed request, that lets one
stand in for another that means something else (a boolean for a count, a float for micros), so the kernel compares
such values with :func:`exact_equal` instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["exact_equal"]


def exact_equal(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are equal and of the same type, recursively through dicts, lists and tuples."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(exact_equal(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(exact_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
