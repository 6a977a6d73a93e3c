"""A YAML policy is plain data: anchors, aliases, merge keys and tags beyond str, int, float, bool, null, seq and
map are refused with SOS-4001 naming their path, before anything is constructed; plain YAML loads as its JSON."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sos_kernel.errors import SchemaViolation
from sos_kernel.governance import load_policy

MERGED = """name: p
limits:
  - &a {id: x1, actions: [ledger.transfer], window_s: 60, spend_micros_max: 1}
  - &c {id: x2, actions: [ledger.hold], window_s: 60, spend_micros_max: 999999999}
  - <<: [*a, *c]
    id: x3
"""
"""Two limits merged into a third: the merged mapping repeats keys, and readers disagree on which copy wins."""


def laughs(levels: int) -> str:
    """A document whose last key, followed through its aliases, holds ``10**levels`` strings."""
    lines = ["name: p", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def refusal(text: str) -> dict[str, Any]:
    with pytest.raises(SchemaViolation) as info:
        load_policy(text, format="yaml")
    error = info.value.to_wire()["error"]
    assert error["code"] == "SOS-4001", error
    return dict(error)


def assert_not_plain(error: dict[str, Any], loc: str, kind: str, shown: str) -> None:
    assert error["details"] == {"errors": [{"loc": loc, "msg": f"{shown} is not plain data", "type": kind}]}
    assert error["message"].startswith(f"the YAML at {loc} holds {shown}; a policy document is plain data")


NOT_PLAIN = [
    ("merged limits", MERGED, "limits.0", "yaml_anchor", "an anchor (&a)"),
    (
        "merge key alone",
        "name: p\nlimits:\n  - <<: {id: x, window_s: 60}\n    actions: [a]\n    calls_max: 1\n",
        "limits.0.<<",
        "yaml_merge",
        "a merge key (<<)",
    ),
    ("merge tag", "name: p\n!!merge x: {id: y}\n", "x", "yaml_merge", "a merge key (<<)"),
    (
        "alias alone",
        "name: p\nrules:\n  - {id: r, effect: allow, actions: *x}\n",
        "rules.0.actions",
        "yaml_alias",
        "an alias (*x)",
    ),
    (
        "anchor alone",
        "name: p\nrules:\n  - &r {id: r, effect: allow, actions: [a]}\n",
        "rules.0",
        "yaml_anchor",
        "an anchor (&r)",
    ),
    ("anchored key", "name: p\n? &k version\n: 2\n", "version", "yaml_anchor", "an anchor (&k)"),
    ("anchored root", "&doc\nname: p\n", "(root)", "yaml_anchor", "an anchor (&doc)"),
    ("binary", "name: !!binary cA==\n", "name", "yaml_tag", "the tag 'tag:yaml.org,2002:binary'"),
    ("timestamp", "name: p\nreason: 2026-12-07\n", "reason", "yaml_tag", "the tag 'tag:yaml.org,2002:timestamp'"),
    ("set", "name: p\nreviewers: !!set {agent:a}\n", "reviewers", "yaml_tag", "the tag 'tag:yaml.org,2002:set'"),
    ("omap", "name: p\nrules: !!omap [a: 1]\n", "rules", "yaml_tag", "the tag 'tag:yaml.org,2002:omap'"),
    ("local tag", "name: !p x\n", "name", "yaml_tag", "the tag '!p'"),
    (
        "python tag",
        "name: !!python/name:os.system x\n",
        "name",
        "yaml_tag",
        "the tag 'tag:yaml.org,2002:python/name:os.system'",
    ),
]


@pytest.mark.parametrize(("case", "text", "loc", "kind", "shown"), NOT_PLAIN, ids=[n[0] for n in NOT_PLAIN])
def test_yaml_that_is_not_plain_data_is_refused_naming_its_path(
    case: str, text: str, loc: str, kind: str, shown: str
) -> None:
    assert_not_plain(refusal(text), loc, kind, shown)


def test_the_merged_limit_never_comes_out_with_the_larger_spend() -> None:
    error = refusal(MERGED)
    assert "999999999" not in json.dumps(error)
    assert_not_plain(error, "limits.0", "yaml_anchor", "an anchor (&a)")


@pytest.mark.parametrize("levels", [6, 9])
def test_nested_aliases_are_refused_at_the_first_anchor_without_expanding(levels: int) -> None:
    started = time.process_time()
    error = refusal(laughs(levels))
    assert time.process_time() - started < 0.5  # followed, 10**9 strings would take minutes and gigabytes
    assert_not_plain(error, "l0", "yaml_anchor", "an anchor (&l0)")


def test_explicit_standard_tags_are_plain_data() -> None:
    text = "name: !!str p\nversion: !!int 2\nreviewers: !!seq [agent:a]\napproval_timeout_s: !!float 60\n"
    assert load_policy(text, format="yaml") == load_policy(
        {"name": "p", "version": 2, "reviewers": ["agent:a"], "approval_timeout_s": 60.0}
    )


def test_a_repeated_key_is_still_refused_as_in_json() -> None:
    error = refusal("name: p\nrules: [{id: r, effect: allow, actions: [a], actions: [b]}]\n")
    assert error["details"]["errors"][0] == {
        "loc": "rules.0.actions",
        "msg": "repeated key 'actions'",
        "type": "json_duplicate_key",
    }


IDS = st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,20}", fullmatch=True)
PATTERNS = st.lists(
    st.from_regex(r"[a-zA-Z0-9*?][a-zA-Z0-9_.:*?/ -]{0,20}[a-z]", fullmatch=True), min_size=1, max_size=4
)
# YAML's line breaks beyond \n and \r (NEL, LS, PS) are left out of the JSON-form property: PyYAML's emitter writes
# them raw with allow_unicode, and any YAML reader then folds them (the emitter's doing, not the loader's); the
# safe-loader property below covers every character
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x85\u2028\u2029"), max_size=40)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid policy document in its JSON form: rules, limits, content rules and reviewers, ids unique."""
    ids = iter(draw(st.lists(IDS, min_size=9, max_size=9, unique=True)))
    rules = [
        {
            "id": next(ids),
            "effect": draw(st.sampled_from(["allow", "deny", "require_approval"])),
            "actions": draw(PATTERNS),
            **({"resources": draw(PATTERNS)} if draw(st.booleans()) else {}),
            "reason": draw(TEXT),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    limits = [
        {
            "id": next(ids),
            "actions": draw(PATTERNS),
            "window_s": draw(st.integers(1, 86_400)),
            "per": draw(st.sampled_from(["agent", "tenant"])),
            "spend_micros_max": draw(st.integers(0, 2**62)),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    content = [{"id": next(ids), "blocked": draw(PATTERNS)} for _ in range(draw(st.integers(0, 2)))]
    return {
        "name": draw(IDS),
        "version": draw(st.integers(1, 2**31)),
        "rules": rules,
        "limits": limits,
        "content": content,
        "reviewers": draw(st.lists(IDS.map("agent:{}".format), max_size=3)),
        "approval_timeout_s": draw(st.floats(1, 86_400, allow_nan=False)),
    }


@settings(max_examples=60, deadline=None)
@given(document=policies(), flow=st.booleans())
def test_a_plain_yaml_policy_loads_as_its_json_form(document: dict[str, Any], flow: bool) -> None:
    as_yaml = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    assert load_policy(as_yaml, format="yaml") == load_policy(json.dumps(document))


@settings(max_examples=60, deadline=None)
@given(reason=ANY_TEXT, flow=st.booleans())
def test_a_plain_yaml_policy_loads_as_the_safe_loader_reads_it(reason: str, flow: bool) -> None:
    document = {"name": "p", "rules": [{"id": "r", "effect": "allow", "actions": ["a"], "reason": reason}]}
    as_yaml = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    assert load_policy(as_yaml, format="yaml") == load_policy(yaml.safe_load(as_yaml))
