"""Properties of the kernel's one JSON parser: any object that names a key twice, at any depth and however the key
is escaped, is refused with SOS-4001 naming that key and its path; JSON without a repeated key reads as the
standard library reads it. The same holds for a message whose text repeats a key anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sos_kernel.contracts import AgentCard, parse_message
from sos_kernel.errors import SchemaViolation
from sos_kernel.wire import json_value

KEYS = st.text(st.characters(codec="utf-8", exclude_characters="."), max_size=8)
"""Object keys (no dot: a dot would make the expected dotted path ambiguous to read back)."""
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
TREES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


def _objects(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every object in ``tree``, the tree itself first."""
    found = [path] if isinstance(tree, dict) else []
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in children:
        found.extend(_objects(value, (*path, str(key))))
    return found


def _key_text(key: str, escaped: bool) -> str:
    # the same key written another way: each character as its \uXXXX escape (UTF-16 pairs above the BMP)
    if not escaped:
        return json.dumps(key, ensure_ascii=False)
    units = key.encode("utf-16-be")
    return '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'


def _render(value: Any, path: tuple[str, ...], at: tuple[str, ...], repeat: tuple[str, str, int, bool]) -> str:
    """``value`` as JSON text, the object at ``at`` given one more pair ``key: value`` at ``index``."""
    if isinstance(value, list):
        return "[" + ",".join(_render(v, (*path, str(i)), at, repeat) for i, v in enumerate(value)) + "]"
    if not isinstance(value, dict):
        return json.dumps(value)
    pairs = [f"{json.dumps(k, ensure_ascii=False)}:{_render(v, (*path, k), at, repeat)}" for k, v in value.items()]
    if path == at:
        key, text, index, escaped = repeat
        pairs.insert(min(index, len(pairs)), f"{_key_text(key, escaped)}:{text}")
    return "{" + ",".join(pairs) + "}"


@st.composite
def repeated(draw: st.DrawFn) -> tuple[str, str]:
    """JSON text with exactly one key repeated in one object, and the dotted path of that key."""
    tree = draw(st.dictionaries(KEYS, TREES, max_size=4))
    at = draw(st.sampled_from(_objects(tree)))
    host: Any = tree
    for part in at:
        host = host[int(part)] if isinstance(host, list) else host[part]
    key = draw(st.sampled_from(sorted(host)) if host else KEYS)
    if not host:
        host[key] = draw(SCALARS)
    copy = json.dumps(draw(TREES))
    text = _render(tree, (), at, (key, copy, draw(st.integers(0, 4)), draw(st.booleans())))
    return text, ".".join((*at, key))


@settings(max_examples=300, deadline=None)
@given(repeated(), st.booleans())
def test_a_repeated_key_at_any_depth_is_refused_naming_its_path(case: tuple[str, str], as_bytes: bool) -> None:
    text, loc = case
    with pytest.raises(SchemaViolation) as info:
        json_value(text.encode() if as_bytes else text)
    assert info.value.details["errors"] == [
        {"loc": loc, "msg": f"repeated key {loc.rsplit('.', 1)[-1]!r}", "type": "json_duplicate_key"}
    ]


@settings(max_examples=300, deadline=None)
@given(TREES)
def test_json_without_a_repeated_key_reads_as_the_standard_library_reads_it(tree: Any) -> None:
    text = json.dumps(tree, ensure_ascii=False)
    assert json_value(text) == json.loads(text) == json_value(text.encode())


@settings(max_examples=200, deadline=None)
@given(repeated())
def test_a_message_repeating_a_key_anywhere_is_refused(case: tuple[str, str]) -> None:
    # the repeat placed in the envelope (a key of its own), or anywhere inside a free-form result
    text, loc = case
    message = (
        '{"type":"task_completed","source":"agent:alice",'
        f'"payload":{{"task_id":"t-1","status":"done","result":{text}}}}}'
    )
    with pytest.raises(SchemaViolation) as info:
        parse_message(message.encode())
    assert info.value.details["errors"][0]["loc"] == f"payload.result.{loc}"
    assert info.value.details["errors"][0]["type"] == "json_duplicate_key"


def test_a_card_from_text_repeating_a_key_is_refused() -> None:
    card = AgentCard(name="alice", tool="sdk", type="service", role="service").to_json().decode()
    assert AgentCard.from_wire(card) == AgentCard.from_wire(card.encode()) == AgentCard.from_wire(json.loads(card))
    repeated = card.replace('"name":"alice"', '"name":"alice","name":"mallory"')
    for form in (repeated, repeated.encode()):
        with pytest.raises(SchemaViolation) as info:
            AgentCard.from_wire(form)
        assert info.value.details["errors"][0]["loc"] == "name"
