"""A validator for wire text and dicts with no Python callbacks on the common path.

The contract models check three wire rules in Python: the fields SOS requires must be present even where Python
construction would fill them, ``null`` is refused where SOS gives it no meaning (both ``mode="before"`` model
validators), and timestamps are RFC 3339 text (a ``BeforeValidator``). Each callback from pydantic-core into
Python costs little alone, but inside a publish loop they make validation several times slower than the same
checks done in Rust. This module rewrites the catalogue's pydantic-core schema so the rules are schema
constraints: required fields lose their defaults, non-nullable optional fields lose their ``nullable`` wrapper
(absent still means ``None``), and the timestamp check becomes a string pattern in front of the datetime parser.

pydantic-core builds a nested model from the model's own prebuilt validator when the class is complete; the
rewritten schema is built while the classes it names are marked incomplete, so every model in it is built from
the rewritten text. The result is checked on known bad input before it is used (:func:`wire_validator` returns
None when a check fails, and the catalogue then keeps the models' own validation).

The rewritten validator only ever refuses more than the models do: it is a fast path, and the catalogue falls
back to the models' own validation (and their exact errors) for anything it refuses.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from pydantic_core import SchemaValidator, ValidationError

from ._types import WireModel, WireRequired

__all__ = ["RFC3339_PATTERN", "wire_validator"]

RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
"""The text the models' timestamp check accepts, as an anchored ASCII pattern for pydantic-core's regex engine."""

_WIRE_CHECKS = frozenset({"_no_stray_nulls", "_rfc3339_text"})
_BUILD_LOCK = threading.Lock()


def wire_validator(core_schema: Any, probes: list[tuple[Any, bool]]) -> SchemaValidator | None:
    """A validator for ``core_schema`` with the wire rules as schema constraints, or None when it cannot be built
    or does not judge every ``(data, valid)`` probe as the models do."""
    try:
        rewritten = _rewrite(copy.copy(core_schema))
        if _has_wire_checks(rewritten):
            return None  # a model whose rules could not be expressed: keep the models' own validation
        with _built_inline(_models_in(rewritten)):
            validator = SchemaValidator(rewritten)
    except Exception:  # any failure to build only means no fast path
        return None
    for data, valid in probes:
        try:
            validator.validate_python(data)
        except ValidationError:
            if valid:
                return None
        else:
            if not valid:
                return None
    return validator


@contextmanager
def _built_inline(classes: set[type[BaseModel]]) -> Iterator[None]:
    # pydantic-core reuses a complete class's own validator for a nested model schema; marked incomplete for the
    # duration of the build, each class is built from the (rewritten) schema in front of it instead.
    with _BUILD_LOCK:
        flipped = [cls for cls in classes if cls.__dict__.get("__pydantic_complete__") is True]
        for cls in flipped:
            cls.__pydantic_complete__ = False
        try:
            yield
        finally:
            for cls in flipped:
                cls.__pydantic_complete__ = True


def _models_in(node: Any) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            cls = item.get("cls")
            if item.get("type") == "model" and isinstance(cls, type) and issubclass(cls, BaseModel):
                found.add(cls)
            stack.extend(v for k, v in item.items() if k not in ("cls", "metadata", "serialization"))
    return found


def _has_wire_checks(node: Any) -> bool:
    if isinstance(node, list):
        return any(_has_wire_checks(item) for item in node)
    if not isinstance(node, dict):
        return False
    if _function_name(node) in _WIRE_CHECKS:
        return True
    return any(_has_wire_checks(v) for k, v in node.items() if k not in ("cls", "metadata", "serialization"))


def _function_name(node: dict[str, Any]) -> str:
    function = node.get("function")
    return getattr(function.get("function"), "__name__", "") if isinstance(function, dict) else ""


def _rewrite(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "model" and isinstance(node.get("cls"), type) and issubclass(node["cls"], WireModel):
        return _rewrite_model(node)
    if kind == "function-before" and _function_name(node) == "_rfc3339_text":
        return {
            "type": "chain",
            "steps": [{"type": "str", "pattern": RFC3339_PATTERN, "strict": True}, {**_rewrite(node["schema"])}],
        }
    # Functions, classes and serialisers are kept as they are; only nested schemas are rewritten.
    return {k: v if k in ("cls", "function", "serialization", "metadata") else _rewrite(v) for k, v in node.items()}


def _rewrite_model(node: dict[str, Any]) -> dict[str, Any]:
    cls: type[WireModel] = node["cls"]
    required = cls.wire_required if issubclass(cls, WireRequired) else frozenset()
    # Peel the validators around the fields: the wire check goes, any other stays in its place.
    kept: list[dict[str, Any]] = []
    inner = node["schema"]
    while isinstance(inner, dict) and str(inner.get("type", "")).startswith("function-") and "schema" in inner:
        if _function_name(inner) not in _WIRE_CHECKS:
            kept.append({k: v for k, v in inner.items() if k != "schema"})
        inner = inner["schema"]
    if not isinstance(inner, dict) or inner.get("type") != "model-fields":
        return {k: v if k in ("cls", "serialization", "metadata") else _rewrite(v) for k, v in node.items()}
    fields = {}
    for name, field in inner["fields"].items():
        schema = _rewrite(field["schema"])
        if schema.get("type") == "default":
            if name in required:
                schema = schema["schema"]  # the wire must carry it
            elif schema.get("default", ...) is None and name not in cls.nullable:
                strict = _without_null(schema["schema"])
                if strict is None:  # cannot express it: keep the model's own checks (and so no fast path)
                    return {k: v if k in ("cls", "serialization", "metadata") else _rewrite(v) for k, v in node.items()}
                schema = {**schema, "schema": strict}
        fields[name] = {**field, "schema": schema}
    rebuilt: dict[str, Any] = {**inner, "fields": fields}
    for wrapper in reversed(kept):
        rebuilt = {**wrapper, "schema": rebuilt}
    return {**node, "schema": rebuilt}


def _without_null(schema: dict[str, Any]) -> dict[str, Any] | None:
    # The schema refusing null where ``schema`` took it; None when null is not taken by a plain wrapper.
    if schema.get("type") == "nullable":
        return dict(schema["schema"])
    if schema.get("type") == "function-after":
        inner = _without_null(schema["schema"])
        return None if inner is None else {**schema, "schema": inner}
    return None
