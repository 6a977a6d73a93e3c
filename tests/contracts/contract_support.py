"""Shared support for the contract tests: the SOS v0.4.1 reference schemas, strategies for data valid under them,
and the comparison the round-trip properties use.

``from_schema`` is a small generator for the JSON Schema subset the reference schemas use. We do not use
``hypothesis_jsonschema.from_schema``: version 0.23.1 breaks on every object schema with the installed hypothesis
(it calls ``many.more()``, which hypothesis removed). Each drawn value is still checked with the reference
validator (format checker on) and ``assume``-d, so a generator bug can only lose examples, never invent a failure.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

REFERENCE_DIR = Path("/work/shared/reference/sos-v0.4.1/schemas")
REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_ADDRESS_PATTERN = r"^agent:[a-z][a-z0-9-]*$"

CORE_TYPE_NAMES = (
    "agent_joined",
    "announce",
    "ask",
    "send",
    "task_claimed",
    "task_completed",
    "task_created",
    "wake",
)
CARD_NAMES = ("agent_card", "skill_card", "usage_event", "provider_card")

Schema = Mapping[str, Any]
Path_ = tuple[str, ...]


# --- reference schemas ----------------------------------------------------------------------------------------


@cache
def reference_schema(name: str) -> dict[str, Any]:
    """A reference schema by type or card name (``"send"``, ``"skill_card"``), as stored."""
    sub = "" if name in CARD_NAMES else "messages/"
    data: dict[str, Any] = json.loads((REFERENCE_DIR / f"{sub}{name}_v1.json").read_text(encoding="utf-8"))
    return data


@cache
def reference_validator(name: str) -> Draft202012Validator:
    """A Draft 2020-12 validator of a reference schema with format checking on (date-time, uuid)."""
    return Draft202012Validator(reference_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def generation_schema(name: str) -> dict[str, Any]:
    """The reference schema to generate from: agent_joined's ``source`` gets the agent-address pattern.

    The agent_joined schema leaves ``source`` unconstrained, but SOS's publish step 4 refuses any message whose
    source is not ``agent:<name>`` (SOS-4003), whatever its type; that is tested in the mutation tests.
    """
    schema = copy.deepcopy(reference_schema(name))
    if name == "agent_joined":
        schema["properties"]["source"]["pattern"] = AGENT_ADDRESS_PATTERN
    return schema


def iter_properties(schema: Schema, prefix: Path_ = ()) -> Iterator[tuple[Path_, Schema]]:
    """Every named property of an object schema and of the objects nested in it, with its path."""
    for name, sub in schema.get("properties", {}).items():
        path = (*prefix, name)
        yield path, sub
        if sub.get("type") == "object":
            yield from iter_properties(sub, path)


def required_paths(schema: Schema, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every required property path: top-level, and inside nested objects (only reached when present)."""
    for name in schema.get("required", []):
        yield (*prefix, name)
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object":
            yield from required_paths(sub, (*prefix, name))


def get_path(data: Mapping[str, Any], path: Path_) -> Any:
    for key in path:
        data = data[key]
    return data


def set_path(data: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with ``path`` set to ``value``."""
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def del_path(data: dict[str, Any], path: Path_) -> dict[str, Any]:
    """A deep copy of ``data`` without ``path``."""
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


# --- strategies -----------------------------------------------------------------------------------------------

# Small, JSON-safe values for free-form objects (agent_card snapshots, results, metadata).
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ITEMS_DRAWN_MAX = 6
"""Arrays draw at most this many items (or the schema's maxItems if lower), to keep examples fast."""


@st.composite
def rfc3339_datetimes(draw: st.DrawFn) -> str:
    """RFC 3339 date-times as the reference's checker accepts them: any year 1-9999, any number of fraction
    digits, lower-case ``t``/``z``, offsets up to ±23:59 (so the far edges have no UTC form in Python)."""
    day = draw(st.dates(min_value=date(1, 1, 1)) | st.sampled_from([date(1, 1, 1), date(9999, 12, 31)]))
    hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    fraction = draw(st.just("") | st.from_regex(r"\.[0-9]{1,12}", fullmatch=True))
    zone = draw(
        st.sampled_from(["Z", "z", "+00:00", "-00:00"])
        | st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59))
    )
    sep = draw(st.sampled_from("Tt"))
    return f"{day.isoformat()}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


UUID_STRINGS = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
FORMATS: dict[str, st.SearchStrategy[str]] = {"date-time": rfc3339_datetimes(), "uuid": UUID_STRINGS}


def from_schema(schema: Schema) -> st.SearchStrategy[Any]:
    """Values valid under ``schema`` (mostly: callers still check them with the reference validator)."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            base = {k: v for k, v in schema.items() if k != key}
            return st.one_of([from_schema(_merge(base, branch)) for branch in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": one}) for one in kind])
    builders = {
        "object": _objects,
        "array": _arrays,
        "string": _strings,
        "integer": _integers,
        "number": _numbers,
        "boolean": lambda _: st.booleans(),
        "null": lambda _: st.none(),
    }
    return builders[kind](schema) if kind in builders else JSON_VALUES


def _merge(base: Schema, branch: Schema) -> dict[str, Any]:
    merged = {**base, **branch}
    if "required" in base and "required" in branch:
        merged["required"] = sorted({*base["required"], *branch["required"]})
    return merged


def _objects(schema: Schema) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", []))
    extra = schema.get("additionalProperties", True)
    # Required names that no property describes (anyOf: {"required": ["$schema"]}) get any JSON value.
    fields = {name: from_schema(properties.get(name, {})) for name in sorted(required | properties.keys())}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {name: draw(value) for name, value in fields.items() if name in required or draw(st.booleans())}
        if extra is not False:
            values = JSON_VALUES if extra is True else from_schema(extra)
            keys = st.text(max_size=10).filter(lambda k: k not in fields)
            out.update(draw(st.dictionaries(keys, values, max_size=3)))
        return out

    return build()


def _arrays(schema: Schema) -> st.SearchStrategy[list[Any]]:
    items = from_schema(schema.get("items", {}))
    min_size = schema.get("minItems", 0)
    max_size = max(min_size, min(schema.get("maxItems", ITEMS_DRAWN_MAX), ITEMS_DRAWN_MAX))
    unique_by = (lambda v: json.dumps(v, sort_keys=True)) if schema.get("uniqueItems") else None
    return st.lists(items, min_size=min_size, max_size=max_size, unique_by=unique_by)


def _strings(schema: Schema) -> st.SearchStrategy[str]:
    min_size, max_size = schema.get("minLength", 0), schema.get("maxLength")
    pattern, fmt = schema.get("pattern"), schema.get("format")
    if fmt in FORMATS:
        strategy = FORMATS[fmt]
        if pattern:
            strategy = strategy.filter(re.compile(pattern).search)
    elif pattern:
        strategy = st.from_regex(pattern, fullmatch=True)
    else:
        strategy = st.text(min_size=min_size, max_size=max(min_size, min(max_size or 40, 40)))
        if max_size is not None and max_size > 40:
            # Strings at exactly the limit, drawn as one character repeated so they stay cheap.
            strategy |= st.characters(exclude_categories=["Cs"]).map(lambda c: c * max_size)
        return strategy
    if min_size or max_size is not None:
        upper = max_size if max_size is not None else float("inf")
        strategy = strategy.filter(lambda s: min_size <= len(s) <= upper)
    return strategy


def _integers(schema: Schema) -> st.SearchStrategy[int | float]:
    ints = st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    # JSON Schema counts an integral float (3.0) as an integer, and so must we.
    return ints | ints.filter(lambda i: abs(i) < 2**53).map(float)


def _numbers(schema: Schema) -> st.SearchStrategy[int | float]:
    low, high = schema.get("minimum"), schema.get("maximum")
    floats = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    return floats | st.integers(min_value=low, max_value=high)


# --- comparing wire data --------------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time as an aware datetime; fraction digits beyond microseconds are dropped."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    y, mo, d, h, mi, s, frac, z, sign, oh, om = match.groups()
    micros = int((frac or "0")[:6].ljust(6, "0"))
    offset = timedelta(0) if z else (1 if sign == "+" else -1) * timedelta(hours=int(oh), minutes=int(om))
    return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micros, tzinfo=timezone(offset))


def canonical(schema: Schema, value: Any) -> Any:
    """``value`` in a form where equal meaning compares equal.

    Date-times become the instant they name; schema defaults fill absent properties (a model may write
    ``"priority": "normal"`` where the sender left it out); numbers are tagged with their JSON Schema type so
    ``true`` never equals ``1`` and ``3.0`` equals ``3`` only where the schema says integer.
    """
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return canonical({k: v for k, v in schema.items() if k != key}, value)
    if isinstance(value, str) and schema.get("format") == "date-time":
        return ("instant", (parse_rfc3339(value) - _EPOCH) // timedelta(microseconds=1))
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        kinds = schema.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "integer" in kinds and float(value).is_integer():
            return ("int", int(value))
        if "number" in kinds:
            return ("number", float(value))
        return (type(value).__name__, value)  # free-form JSON: kept exactly as sent
    if isinstance(value, dict):
        props: Mapping[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        rest = extra if isinstance(extra, Mapping) else {}
        out = {key: canonical(props.get(key, rest), item) for key, item in value.items()}
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = canonical(sub, sub["default"])
        return out
    if isinstance(value, list):
        items = schema.get("items", {})
        return [canonical(items, item) for item in value]
    return value
