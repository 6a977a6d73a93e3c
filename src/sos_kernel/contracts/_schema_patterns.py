"""JSON Schema ``pattern`` with JSON Schema's own end anchor, for the payloads of user-registered message types.

JSON Schema patterns are ECMA-262 regular expressions, where ``$`` (no multiline flag) matches only at the end of
the text. The ``jsonschema`` library runs them with Python's ``re.search``, where ``$`` also matches before a final
newline, so ``^[a-z]+$`` would take ``"abc\\n"``. The validator class here rewrites each anchor ``$`` to ``\\Z``
first for ``pattern`` (which ``propertyNames`` uses for keys too). ``patternProperties`` is left as it is: there a
wider match only applies a subschema to one more key, and ``additionalProperties`` must agree with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["anchored_validator_class", "ecma_anchored"]


def ecma_anchored(pattern: str) -> str:
    """``pattern`` with every ``$`` that is an anchor (not escaped, not in a character class) written ``\\Z``."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            ch = r"\Z"
        out.append(ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(ecma_anchored(pattern))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def anchored_validator_class() -> Any:
    """Draft 2020-12's validator class with the ``pattern`` above (jsonschema is imported on first use)."""
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})
