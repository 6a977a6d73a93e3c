"""Policy documents and the matcher: the bypass list, glob semantics, loaders and bounds (pure, no engine)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sos_kernel.errors import InvalidArgument, LimitExceeded, SchemaViolation
from sos_kernel.governance import POLICY_BYTES_MAX, POLICY_RULES_MAX, compile_policy, load_policy
from sos_kernel.governance.policy import Glob

NOBODY: frozenset[str] = frozenset()


def full_width(text: str) -> str:
    """``text`` with its ASCII letters written as their full-width forms (U+FF41...)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() else c for c in text)


POLICY = {
    "name": "p",
    "rules": [
        {"id": "no-tool", "effect": "deny", "actions": ["tool.shell"]},
        {"id": "files", "effect": "allow", "actions": ["tool.read"], "resources": ["files/*"]},
        {"id": "search", "effect": "allow", "actions": ["tool.search"]},
        {"id": "shell-ok", "effect": "allow", "actions": ["tool.*"]},
    ],
}


def decide(action: str, resource: str | None = None, policy: dict[str, object] = POLICY) -> tuple[str, str | None]:
    d = compile_policy(policy).decide(action, resource, None, NOBODY)
    return d.effect, d.rule


def test_an_unknown_action_is_denied_naming_the_policy_and_the_missing_rule() -> None:
    d = compile_policy({"name": "p", "rules": [{"id": "a", "effect": "allow", "actions": ["tool.search"]}]}).decide(
        "tool.delete", None, None, NOBODY
    )
    assert (d.effect, d.rule) == ("deny", None)
    assert "policy 'p'" in d.reason
    assert "no rule allowing 'tool.delete'" in d.reason


def test_an_empty_policy_denies_everything() -> None:
    assert decide("ledger.transfer", policy={"name": "empty"}) == ("deny", None)


@pytest.mark.parametrize("spelling", ["tool.shell", "Tool.Shell", "TOOL.SHELL", "tool.shell ", " tool.shell\t"])
def test_case_and_whitespace_do_not_escape_a_deny_rule(spelling: str) -> None:
    assert decide(spelling) == ("deny", "no-tool")


@pytest.mark.parametrize("spelling", [full_width("tool.shell"), full_width("t") + "ool.shell", "tool\uff0eshell"])
def test_full_width_and_compatibility_letters_do_not_escape_a_deny_rule(spelling: str) -> None:
    assert decide(spelling) == ("deny", "no-tool")


@pytest.mark.parametrize(
    "resource", ["files/../secrets", "files/..", "files/./a", "files/%2e%2e/secrets", "files/%2E", "files\\x"]
)
def test_path_tricks_are_refused_not_matched(resource: str) -> None:
    with pytest.raises(InvalidArgument):
        decide("tool.read", resource)


def test_a_glob_in_a_resource_does_not_widen() -> None:
    policy = {
        "name": "p",
        "rules": [{"id": "one", "effect": "allow", "actions": ["tool.read"], "resources": ["files/a"]}],
    }
    assert decide("tool.read", "files/a", policy) == ("allow", "one")
    assert decide("tool.read", "files/*", policy) == ("deny", None)  # a '*' in the name is a literal character
    assert decide("tool.read", "files/?", policy) == ("deny", None)
    assert decide("tool.read", "files/**", policy) == ("deny", None)


def test_star_stays_within_a_segment_and_double_star_crosses() -> None:
    one = {"name": "p", "rules": [{"id": "one", "effect": "allow", "actions": ["x"], "resources": ["files/*"]}]}
    assert decide("x", "files/a", one) == ("allow", "one")
    assert decide("x", "files/a/b", one) == ("deny", None)
    deep = {"name": "p", "rules": [{"id": "deep", "effect": "allow", "actions": ["x"], "resources": ["files/**/z"]}]}
    assert decide("x", "files/z", deep) == ("allow", "deep")
    assert decide("x", "files/a/b/z", deep) == ("allow", "deep")
    assert decide("x", "files/a/b/y", deep) == ("deny", None)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("a*b", "ab", True),
        ("a*b", "axxb", True),
        ("a*b", "axxbx", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("*a*a*a*b", "a" * 50, False),
        ("*a*a*a*b", "a" * 50 + "b", True),
        ("a.b", "axb", False),  # '.' is literal: no regular expression from users
        ("[ab]", "a", False),
        ("(a|b)", "(a|b)", True),
    ],
)
def test_glob_semantics(pattern: str, name: str, matches: bool) -> None:
    assert Glob(pattern).match(name) is matches


def test_a_pathological_pattern_matches_in_one_pass() -> None:
    # the classic exponential case for backtracking matchers finishes at once here
    assert Glob("*a" * 30 + "*b").match("a" * 20_000) is False


def test_double_star_inside_a_segment_is_a_star() -> None:
    assert Glob("files/a**").match("files/abc")
    assert not Glob("files/a**").match("files/a/b")
    assert Glob("tool.**").match("tool.search")


def test_deny_wins_over_allow_and_approval_over_allow() -> None:
    policy = {
        "name": "p",
        "rules": [
            {"id": "allow", "effect": "allow", "actions": ["**"]},
            {"id": "ask", "effect": "require_approval", "actions": ["tool.deploy"]},
            {"id": "never", "effect": "deny", "actions": ["tool.rm"]},
        ],
    }
    assert decide("tool.rm", policy=policy) == ("deny", "never")
    assert decide("tool.deploy", policy=policy) == ("require_approval", "ask")
    assert decide("tool.ls", policy=policy) == ("allow", "allow")


def test_rules_for_agents_and_scopes() -> None:
    policy = compile_policy(
        {
            "name": "p",
            "rules": [
                {"id": "bots", "effect": "allow", "actions": ["tool.*"], "agents": ["agent:bot-*"]},
                {"id": "admins", "effect": "allow", "actions": ["**"], "scopes": ["admin"]},
            ],
        }
    )
    assert policy.decide("tool.x", None, "agent:bot-1", NOBODY).rule == "bots"
    assert policy.decide("tool.x", None, "agent:alice", NOBODY).rule is None
    assert policy.decide("tool.x", None, "agent:alice", frozenset({"admin"})).rule == "admins"


def test_content_rules_block_text_after_normalisation() -> None:
    from sos_kernel.governance.policy import blocked_content

    policy = compile_policy(
        {
            "name": "p",
            "rules": [{"id": "all", "effect": "allow", "actions": ["**"]}],
            "content": [{"id": "secrets", "blocked": ["password", "begin*private key"]}],
        }
    )
    d = policy.decide("bus.send", None, None, NOBODY)
    assert blocked_content(d, ["hello"]) is None
    assert blocked_content(d, ["my PASSWORD is"]) == "secrets"
    assert blocked_content(d, [full_width("password")]) == "secrets"
    assert blocked_content(d, ["-----BEGIN RSA PRIVATE KEY-----"]) == "secrets"


def test_loads_json_yaml_and_toml_to_the_same_policy() -> None:
    as_json = json.dumps(POLICY)
    as_yaml = """
name: p
rules:
  - {id: no-tool, effect: deny, actions: [tool.shell]}
  - {id: files, effect: allow, actions: [tool.read], resources: ["files/*"]}
  - {id: search, effect: allow, actions: [tool.search]}
  - {id: shell-ok, effect: allow, actions: ["tool.*"]}
"""
    as_toml = """
name = "p"
[[rules]]
id = "no-tool"
effect = "deny"
actions = ["tool.shell"]
[[rules]]
id = "files"
effect = "allow"
actions = ["tool.read"]
resources = ["files/*"]
[[rules]]
id = "search"
effect = "allow"
actions = ["tool.search"]
[[rules]]
id = "shell-ok"
effect = "allow"
actions = ["tool.*"]
"""
    expected = load_policy(POLICY)
    assert load_policy(as_json) == expected
    assert load_policy(as_yaml, format="yaml") == expected
    assert load_policy(as_toml) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "p", "rules": [{"id": "a", "effect": "maybe", "actions": ["x"]}]},
        {"name": "p", "rules": [{"id": "a", "effect": "allow", "actions": []}]},
        {"name": "p", "rules": [{"id": "a", "effect": "allow", "actions": ["x"], "regex": ".*"}]},
        {"name": "p", "format": 2},
        {"name": "p", "rules": [{"id": "a", "effect": "allow", "actions": ["x"]}] * 2},
        {"name": "p", "limits": [{"id": "l", "actions": ["x"], "window_s": 60}]},
        {"rules": []},
    ],
)
def test_invalid_documents_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(SchemaViolation):
        load_policy(bad)


def test_bounds() -> None:
    many = [{"id": f"r{i}", "effect": "allow", "actions": ["x"]} for i in range(POLICY_RULES_MAX + 1)]
    with pytest.raises(SchemaViolation):
        load_policy({"name": "p", "rules": many})
    with pytest.raises(LimitExceeded):
        load_policy({"name": "p", "rules": [{"id": "a", "effect": "allow", "actions": ["x" * 200] * 400}]})
    assert POLICY_BYTES_MAX == 64 * 1024


MONEY_PARAMETERS = frozenset({"amount", "bounty", "reviewer_fee", "transfers"})


def test_every_operation_that_moves_money_declares_its_spend() -> None:
    from sos_kernel.operations import declared
    from sos_kernel.server._routes_ops import SERVICES

    undeclared = [
        f"{op.service}.{op.name}"
        for cls in SERVICES
        for op in declared(cls).values()
        if MONEY_PARAMETERS & set(op.signature.parameters) and not op.spend
    ]
    assert undeclared == []


HELD_SPEND = frozenset({"engine.chat", "skills.record_invocation"})
"""Operations whose cost is not an argument (a model call's is known only as it runs, a skill's price is its
card's): they hold it against the budgets themselves, before any money moves."""


def test_operations_that_charge_as_they_run_hold_their_spend() -> None:
    from sos_kernel.operations import SPEND_HELD, declared
    from sos_kernel.server._routes_ops import SERVICES

    held = {f"{op.service}.{op.name}" for cls in SERVICES for op in declared(cls).values() if SPEND_HELD in op.spend}
    assert held == HELD_SPEND
    for cls in SERVICES:  # the marker names no argument, so it never reads one as micros
        assert all(SPEND_HELD not in op.signature.parameters for op in declared(cls).values())


def test_content_matching_drops_every_format_character() -> None:
    """Every character of Unicode category Cf this Python knows is dropped before content rules compare, so a
    Unicode release adding one is noticed here."""
    import sys
    import unicodedata

    from sos_kernel.governance.policy import INVISIBLE_RE, fold_content

    kept = [hex(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    kept = [c for c in kept if INVISIBLE_RE.fullmatch(chr(int(c, 16))) is None]
    assert kept == []
    assert fold_content("Pass\u200bWord") == "password"
    assert fold_content("e\u200b\u0301") == "\u00e9"  # a letter and its mark, kept apart, are composed again
    assert fold_content("p\u0430ssword") != "password"  # look-alike letters of other scripts are not folded


def test_content_matching_drops_controls_leftover_marks_and_private_use() -> None:
    """Control characters (but the whitespace ones), combining marks left after composition and private-use
    characters split no blocked word; a mark that composes with its letter stays part of it."""
    from sos_kernel.governance.policy import fold_content

    for hidden in (
        "\x00",
        "\x07",
        "\x1f",
        "\x7f",
        "\x85",
        "\u0336",
        "\u0338",
        "\u20d2",
        "\u20dd",
        "\ue000",
        "\U0010fffd",
    ):
        assert fold_content(f"Pass{hidden}word") == "password", repr(hidden)
    assert fold_content("pass\tword") == "pass\tword"  # a break a reader sees, as a space is
    assert fold_content("pass\nword") == "pass\nword"
    assert fold_content("cafe\u0301") == fold_content("caf\u00e9") == "caf\u00e9"  # composed: an accented letter
    assert fold_content("\u0915\u094d\u0937") == fold_content("\u0915\u0937")  # a blocked form matches itself


def test_an_approval_shows_arguments_bounded_and_no_secret() -> None:
    from sos_kernel.governance.service import (
        APPROVAL_ARGUMENT_CHARS_MAX,
        APPROVAL_ARGUMENTS_CHARS_MAX,
        REDACTED,
        SECRET_ARGUMENT_RE,
        shown_arguments,
    )
    from sos_kernel.operations import declared
    from sos_kernel.server._routes_ops import SERVICES

    names = {p for cls in SERVICES for op in declared(cls).values() for p in op.signature.parameters}
    assert {n for n in names if SECRET_ARGUMENT_RE.search(n)} == {"claim_token"}  # the one secret an operation takes
    shown = shown_arguments([("amount", 9_900_000), ("claim_token", "1.abc"), ("text", "x" * 10_000)])
    assert shown["amount"] == 9_900_000
    assert shown["claim_token"] == REDACTED
    assert len(shown["text"]) == APPROVAL_ARGUMENT_CHARS_MAX
    many = shown_arguments((f"a{i}", "y" * 400) for i in range(100))
    assert len(json.dumps(many)) < APPROVAL_ARGUMENTS_CHARS_MAX + 64 * 8
    assert "a99" not in many
    assert len(many["…"]) == 64  # the left-out arguments are named, at most 64 of them


def test_an_approval_redacts_secrets_at_any_depth_and_by_any_common_name() -> None:
    from sos_kernel.governance.service import APPROVAL_ARGUMENT_DEPTH_MAX, REDACTED, shown_arguments

    flat = ["auth", "access_token", "bearer", "private_key", "key", "pwd", "passphrase", "signing_key"]
    flat += ["authorization", "dsn", "cookie", "session_id", "client_secret", "Api-Key"]
    shown = shown_arguments([(name, "sk-live-123") for name in flat])
    assert shown == dict.fromkeys(flat, REDACTED)
    shown = shown_arguments(
        [
            ("headers", {"Authorization": "Bearer sk-live-123", "Accept": "text/plain"}),
            ("config", {"db": {"dsn": "postgres://u:pw@h/db", "pool": 4}, "api_key": "sk-456"}),
            ("pairs", [["X-Api-Key", "sk-789"], ["Accept", "*/*"]]),
            ("har", [{"name": "Cookie", "value": "sid=1"}, {"name": "Accept", "value": "*/*"}]),
            ("lines", ["Authorization: Basic dTpw", "Accept: */*"]),
            ("note", "Bearer sk-000"),
            ("author", "agent:alice"),
            ("public_key", "ed25519:abc"),
            ("deep", _nested(APPROVAL_ARGUMENT_DEPTH_MAX + 5)),
        ]
    )
    assert shown["headers"] == {"Authorization": REDACTED, "Accept": "text/plain"}
    assert shown["config"] == {"db": {"dsn": REDACTED, "pool": 4}, "api_key": REDACTED}
    assert shown["pairs"] == [["X-Api-Key", REDACTED], ["Accept", "*/*"]]
    assert shown["har"] == [{"name": "Cookie", "value": REDACTED}, {"name": "Accept", "value": "*/*"}]
    assert shown["lines"] == [REDACTED, "Accept: */*"]
    assert shown["note"] == REDACTED
    assert (shown["author"], shown["public_key"]) == ("agent:alice", "ed25519:abc")
    assert "sk-" not in json.dumps(shown)


def _nested(depth: int) -> Any:
    value: Any = "sk-deep"
    for _ in range(depth):
        value = {"x": value}
    return value
