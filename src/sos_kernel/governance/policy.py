"""Policy documents: typed, versioned, compiled once into a linear-time matcher.

A policy is a JSON object (or the same document in YAML or TOML)::

    {"format": 1, "name": "prod", "version": 3,
     "rules": [{"id": "pay", "effect": "allow", "actions": ["ledger.transfer"], "resources": ["agent:*"]},
               {"id": "no-shell", "effect": "deny", "actions": ["tool.shell*"]},
               {"id": "big", "effect": "require_approval", "actions": ["tool.deploy"]}],
     "limits": [{"id": "calls", "actions": ["tool.**"], "window_s": 60, "calls_max": 100}],
     "content": [{"id": "secrets", "blocked": ["password", "BEGIN*PRIVATE KEY"]}],
     "reviewers": ["agent:boss"], "approval_timeout_s": 300}

Decisions, first match wins in this order: a ``deny`` rule; a ``require_approval`` rule; an ``allow`` rule; else
**deny** (no rule allows it). A rule applies when one of its ``actions`` and one of its ``resources`` (default:
any) match, and, when it names ``agents`` or ``scopes``, the caller is one of them / holds one of them.

Patterns are globs, never regular expressions: ``?`` is one character, ``*`` any run of characters within a
``/``-separated segment, ``**`` as a whole segment any number of segments (within a segment it is ``*``); every
other character is literal. They
are matched segment by segment, each segment by a left-to-right scan for the literal pieces between stars, so a
check is linear in the name's length for each pattern (no backtracking). Names (actions, resources, agents) are
normalised before matching: Unicode NFKC, case-folded, stripped; a name holding a control character, a backslash,
a percent-escape (``%2e``), or a ``.``/``..`` segment is refused outright, so no spelling reaches a resource a rule
does not name. A ``*`` inside a checked name is an ordinary character: it never widens what the name matches.
Content rules compare text folded by :func:`fold_content`: NFKC, case-folded, invisible characters dropped
(:data:`INVISIBLE_RE`); look-alike letters of other scripts are not folded.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .._json import loads, repeated_key
from ..errors import InvalidArgument, LimitExceeded, MissingDependency, SchemaViolation

__all__ = [
    "APPROVAL_TIMEOUT_S_MAX",
    "CONTENT_DEPTH_MAX",
    "CONTENT_VALUES_MAX",
    "INVISIBLE_RE",
    "MARK_CATEGORIES",
    "POLICY_BYTES_MAX",
    "POLICY_FORMAT",
    "POLICY_PATTERNS_MAX",
    "POLICY_RULES_MAX",
    "YAML_PLAIN_TAGS",
    "CompiledPolicy",
    "ContentRule",
    "Decision",
    "Glob",
    "Limit",
    "Policy",
    "PolicyRule",
    "compile_policy",
    "fold_content",
    "load_policy",
    "normalise",
    "plain_yaml",
    "scan_texts",
    "unique_yaml_keys",
]

POLICY_FORMAT = 1
"""The document format this kernel reads (``"format"``)."""
POLICY_BYTES_MAX = 64 * 1024
"""The largest policy document, as compact JSON."""
POLICY_RULES_MAX = 256
"""Rules, limits and content rules of one policy, together."""
POLICY_PATTERNS_MAX = 2048
"""Patterns of one policy, all lists together."""
PATTERN_CHARS_MAX = 256
NAME_CHARS_MAX = 512
"""The longest action, resource or agent name a check accepts."""
CONTENT_CHARS_MAX = 256 * 1024
"""The most text one check scans for blocked content (longer text is refused, never scanned in part)."""
INVISIBLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff"
    "\x00-\x08\x0e-\x1f\x7f-\x9f"
    "\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]"
)
"""What content matching drops before it compares: every format character (Unicode category ``Cf``: zero-width
space and joiners, soft hyphen, word joiner, bidi controls, tags...) and every other default-ignorable code point
(variation selectors, the combining grapheme joiner, Hangul fillers), none of which a reader sees: ``pass`` + U+200B
+ ``word`` is ``password``. Also dropped: control characters (category ``Cc``: NUL, BEL, DEL, C1 controls such as
U+0085) but the whitespace ones (tab, line feed, vertical tab, form feed, carriage return, which a reader sees as a
break), and private-use characters (``Co``), which renderers show as nothing or as a box. Look-alike letters of
other scripts (Cyrillic U+0430 for ``a``) are not folded."""


MARK_CATEGORIES = frozenset({"Mn", "Me"})
"""The combining marks (categories ``Mn`` and ``Me``) content matching drops after composition: a mark that NFKC
composes with its letter (``e`` + U+0301 is ``é``) is part of that letter and kept; one left over is drawn on a
letter a reader still reads (U+0336 strikes ``s`` through, U+20DD encloses it), so ``pa\u0336ssword`` is
``password``. Blocked patterns lose the same marks, so a blocked word written with them still matches itself."""
CONTENT_DEPTH_MAX = 32
"""The deepest nesting of a call's arguments a content check scans (deeper arguments are refused, unscanned)."""
CONTENT_VALUES_MAX = 100_000
"""The most values (strings, keys, numbers, containers) of a call's arguments a content check scans (more are
refused, never scanned in part)."""
APPROVAL_TIMEOUT_S_MAX = 86_400.0
WINDOW_S_MAX = 31 * 86_400
DECISION_MEMO_MAX = 8192
"""Decisions a compiled policy remembers (by the exact names asked); the memo is emptied when full."""

_Id = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z0-9][a-z0-9_.:-]{0,63}$")]
_Pattern = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=PATTERN_CHARS_MAX)]
_Patterns = Annotated[list[_Pattern], Field(min_length=1, max_length=POLICY_PATTERNS_MAX)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PolicyRule(_Doc):
    """One rule: ``effect`` for ``actions`` on ``resources`` (default: any), for ``agents``/``scopes`` if named."""

    id: _Id
    effect: Literal["allow", "deny", "require_approval"]
    actions: _Patterns
    resources: _Patterns | None = None
    agents: _Patterns | None = None
    scopes: Annotated[list[_Pattern], Field(min_length=1, max_length=64)] | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] = ""


class Limit(_Doc):
    """A budget per ``window_s`` for ``actions``: calls, tokens, spend (micros), counted per agent or tenant."""

    id: _Id
    actions: _Patterns
    window_s: Annotated[int, Field(ge=1, le=WINDOW_S_MAX)]
    per: Literal["agent", "tenant"] = "agent"
    calls_max: Annotated[int, Field(ge=0)] | None = None
    tokens_max: Annotated[int, Field(ge=0)] | None = None
    spend_micros_max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Limit:
        if self.calls_max is None and self.tokens_max is None and self.spend_micros_max is None:
            raise ValueError("a limit sets at least one of calls_max, tokens_max, spend_micros_max")
        return self


class ContentRule(_Doc):
    """Text (message text, tool arguments) of ``actions`` must contain none of ``blocked`` (globs, unanchored,
    ``*`` spans anything), compared after the same normalisation as names."""

    id: _Id
    actions: _Patterns = Field(default_factory=lambda: ["**"])
    blocked: _Patterns


class Policy(_Doc):
    """A tenant's policy document (see the module docstring)."""

    format: Literal[1] = 1
    name: _Id
    version: Annotated[int, Field(ge=1)] = 1
    rules: Annotated[list[PolicyRule], Field(max_length=POLICY_RULES_MAX)] = Field(default_factory=list)
    limits: Annotated[list[Limit], Field(max_length=POLICY_RULES_MAX)] = Field(default_factory=list)
    content: Annotated[list[ContentRule], Field(max_length=POLICY_RULES_MAX)] = Field(default_factory=list)
    reviewers: Annotated[list[_Pattern], Field(max_length=64)] = Field(default_factory=list)
    approval_timeout_s: Annotated[float, Field(gt=0, le=APPROVAL_TIMEOUT_S_MAX)] = 300.0

    @model_validator(mode="after")
    def _bounded(self) -> Policy:
        items: list[Any] = [*self.rules, *self.limits, *self.content]
        if len(items) > POLICY_RULES_MAX:
            raise ValueError(f"a policy holds at most {POLICY_RULES_MAX} rules, limits and content rules")
        ids = [i.id for i in items]
        if len(ids) != len(set(ids)):
            raise ValueError("rule, limit and content rule ids must be unique within a policy")
        patterns = sum(len(_patterns_of(i)) for i in items) + len(self.reviewers)
        if patterns > POLICY_PATTERNS_MAX:
            raise ValueError(f"a policy holds at most {POLICY_PATTERNS_MAX} patterns")
        return self


def _patterns_of(item: Any) -> list[str]:
    found: list[str] = []
    for name in ("actions", "resources", "agents", "scopes", "blocked"):
        found.extend(getattr(item, name, None) or [])
    return found


def load_policy(source: Any, *, format: str | None = None) -> Policy:
    """A :class:`Policy` from a dict, a ``Policy``, or text in JSON, YAML or TOML (``format``: ``json``, ``yaml``,
    ``toml``; guessed when omitted). Raises SOS-4001 for a document that is not a valid policy, or YAML that is not
    plain data (an anchor, alias, merge key or tag outside ``YAML_PLAIN_TAGS``, refused before construction),
    SOS-4010 when it is larger than ``POLICY_BYTES_MAX``."""
    if isinstance(source, Policy):
        return source
    if isinstance(source, bytes):
        source = source.decode("utf-8", "replace")
    if isinstance(source, str):
        if len(source.encode()) > POLICY_BYTES_MAX:
            raise LimitExceeded(f"a policy document is at most {POLICY_BYTES_MAX} bytes")
        source = _parse_text(source, format)
    if not isinstance(source, Mapping):
        raise SchemaViolation(f"a policy is a JSON object, got {type(source).__name__}")
    try:
        size = len(json.dumps(source, separators=(",", ":"), default=str))
    except (TypeError, ValueError) as exc:
        raise SchemaViolation(f"a policy holds a value JSON cannot carry: {exc}") from exc
    if size > POLICY_BYTES_MAX:
        raise LimitExceeded(f"a policy document is at most {POLICY_BYTES_MAX} bytes", details={"bytes": size})
    try:
        policy = Policy.model_validate(dict(source))
    except ValidationError as exc:
        problems = [{"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()[:20]]
        raise SchemaViolation(
            f"not a valid policy: {problems[0]['loc']}: {problems[0]['msg']}", details={"errors": problems}
        ) from None
    for item in [*policy.rules, *policy.limits, *policy.content]:
        for pattern in _patterns_of(item):
            Glob(pattern)  # refuses a malformed pattern now, not at the first check
    return policy


def _parse_text(text: str, format: str | None) -> Any:
    kind = (format or "").lower() or ("json" if text.lstrip().startswith("{") else None)
    try:
        if kind == "json":
            return loads(text)  # a repeated key is SOS-4001 naming it, as everywhere
        if kind == "toml":
            return tomllib.loads(text)
        if kind is None:
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                pass  # not TOML: read it as YAML
        if kind in ("yaml", "yml", None):
            try:
                yaml: Any = importlib.import_module("yaml")
            except ModuleNotFoundError as exc:
                raise MissingDependency("a YAML policy needs PyYAML: pip install pyyaml") from exc
            return plain_yaml(yaml, text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SchemaViolation(f"the policy is not valid {kind or 'YAML'}: {exc}") from exc
    except Exception as exc:  # PyYAML's own error tree
        if type(exc).__module__.startswith("yaml"):
            raise SchemaViolation(f"the policy is not valid YAML: {exc}") from exc
        raise
    raise InvalidArgument(f"unknown policy format {format!r} (json, yaml or toml)")


YAML_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)
"""The only node tags a YAML policy may hold, implicit or explicit: plain data, as JSON would carry it."""


def plain_yaml(yaml: Any, text: str) -> Any:
    """The value of the YAML ``text`` once it is known to be plain data: checked while its node tree is composed
    (before anything is constructed), each node once, then constructed from that same tree."""
    loader = _plain_loader(yaml)(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        unique_yaml_keys(yaml, root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _plain_loader(yaml: Any) -> Any:
    """PyYAML's safe loader whose composer refuses an anchor, an alias, a merge key and any tag outside
    ``YAML_PLAIN_TAGS`` (SOS-4001 naming the path) as it meets them: an alias is never followed, let alone
    expanded, and the safe loader's other tags (binary, timestamp, set, omap, pairs, merge) never construct."""

    class PlainLoader(yaml.SafeLoader):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.sos_paths: list[tuple[str, ...]] = [()]

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            path = _yaml_path(self.sos_paths[-1], parent, index, event)
            if isinstance(event, yaml.AliasEvent):
                raise _not_plain(path, f"an alias (*{event.anchor})", "yaml_alias")
            if event.anchor is not None:
                raise _not_plain(path, f"an anchor (&{event.anchor})", "yaml_anchor")
            self.sos_paths.append(path)
            try:
                node = super().compose_node(parent, index)
            finally:
                self.sos_paths.pop()
            if node.tag not in YAML_PLAIN_TAGS or (parent is not None and index is None and node.value == "<<"):
                merge = node.tag == "tag:yaml.org,2002:merge" or node.value == "<<"
                what = "a merge key (<<)" if merge else f"the tag {node.tag!r}"
                raise _not_plain(path, what, "yaml_merge" if merge else "yaml_tag")
            return node

    return PlainLoader


def _yaml_path(above: tuple[str, ...], parent: Any, index: Any, event: Any) -> tuple[str, ...]:
    """The path of the node about to be composed: a value by its key, an item by its index, a key as itself."""
    if parent is None:
        return above
    if isinstance(index, int):
        return (*above, str(index))
    if index is None:  # a key: named by its own text when it is a scalar
        return (*above, str(getattr(event, "value", "(key)")))
    return (*above, str(index.value))


def _not_plain(path: tuple[str, ...], what: str, kind: str) -> SchemaViolation:
    """The refusal of ``what`` at ``path`` in a YAML policy, worded as a repeated key's refusal."""
    where = ".".join(path) if path else "(root)"
    return SchemaViolation(
        f"the YAML at {where} holds {what}; a policy document is plain data "
        "(no anchors, aliases, merge keys or tags beyond str, int, float, bool, null, seq and map)",
        details={"errors": [{"loc": where, "msg": f"{what} is not plain data", "type": kind}]},
    )


def unique_yaml_keys(yaml: Any, root: Any) -> None:
    """SOS-4001 for a mapping of the composed YAML ``root`` that names a key twice (PyYAML keeps the last copy), as
    :func:`loads` for JSON. ``root`` must hold no alias (compose it with :func:`plain_yaml`'s loader)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(root, ())]
    while stack:  # the tree holds no alias (refused while composing): each node is met once
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                if name in keys:
                    raise repeated_key(name, path)
                keys.add(name)
                stack.append((value, (*path, name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(node.value))


_PERCENT_RE = re.compile(r"%[0-9a-fA-F]{2}")


def normalise(name: Any, what: str = "name") -> str:
    """``name`` as policies match it: NFKC, case-folded, stripped. Raises SOS-4005 for a name no rule may be asked
    about: not a string, empty, too long, holding a control character, a backslash, a percent-escape, or a ``.``
    or ``..`` path segment."""
    if type(name) is not str:
        raise InvalidArgument(f"a {what} is a str, got {type(name).__name__}")
    text = unicodedata.normalize("NFKC", name).casefold().strip()
    if not text or len(text) > NAME_CHARS_MAX:
        raise InvalidArgument(f"a {what} is 1 to {NAME_CHARS_MAX} characters", details={what: name[:100]})
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text) or "\\" in text:
        raise InvalidArgument(f"{what} {name[:100]!r} holds a control character or a backslash")
    if _PERCENT_RE.search(text):
        raise InvalidArgument(f"{what} {name[:100]!r} is percent-encoded; send it decoded")
    if any(seg in (".", "..") for seg in text.split("/")):
        raise InvalidArgument(f"{what} {name[:100]!r} holds a '.' or '..' segment")
    return text


class Glob:
    """A compiled glob (see the module docstring); :meth:`match` is linear in the name's length."""

    __slots__ = ("exact", "groups", "pattern", "unanchored")

    def __init__(self, pattern: str, *, unanchored: bool = False) -> None:
        self.pattern = pattern
        self.unanchored = unanchored
        text = unicodedata.normalize("NFKC", pattern).casefold().strip()
        if not text:
            raise InvalidArgument(f"empty pattern {pattern!r}")
        segments = [text] if unanchored else text.split("/")
        self.exact = text if not any(c in text for c in "*?") else None
        # runs of non-'**' segments, split at each '**' segment; each segment as its literal pieces between stars
        groups: list[list[list[str]]] = [[]]
        for seg in segments:
            if seg == "**" and not unanchored:
                groups.append([])
            else:
                groups[-1].append(re.sub(r"\*+", "*", seg).split("*"))
        self.groups = groups

    def match(self, name: str) -> bool:
        """Whether the normalised ``name`` matches."""
        if self.exact is not None:
            return name == self.exact if not self.unanchored else self.exact in name
        if self.unanchored:
            return _find_pieces(["", *self.groups[0][0], ""], name, 0, len(name)) >= 0
        segments = name.split("/")
        groups = self.groups
        if len(groups) == 1:
            return len(segments) == len(groups[0]) and all(map(_segment, groups[0], segments))
        first, last = groups[0], groups[-1]
        if len(segments) < len(first) + len(last):
            return False
        if not all(map(_segment, first, segments)) or not all(
            map(_segment, last, segments[len(segments) - len(last) :])
        ):
            return False
        pos, end = len(first), len(segments) - len(last)
        for group in groups[1:-1]:  # leftmost placement of each group is optimal: no backtracking needed
            found = _place(group, segments, pos, end)
            if found < 0:
                return False
            pos = found + len(group)
        return True


def _place(group: list[list[str]], segments: list[str], start: int, end: int) -> int:
    for i in range(start, end - len(group) + 1):
        if all(_segment(p, s) for p, s in zip(group, segments[i : i + len(group)], strict=True)):
            return i
    return -1


def _eq_at(piece: str, text: str, at: int) -> bool:
    if "?" not in piece:
        return text.startswith(piece, at)
    if at + len(piece) > len(text):
        return False
    return all(p == "?" or p == t for p, t in zip(piece, text[at : at + len(piece)], strict=True))


def _find(piece: str, text: str, start: int, end: int) -> int:
    if "?" not in piece:
        return text.find(piece, start, end)
    for i in range(start, end - len(piece) + 1):
        if _eq_at(piece, text, i):
            return i
    return -1


def _segment(pieces: list[str], text: str) -> bool:
    """Whether one segment matches: ``pieces`` are its literal runs between stars."""
    if len(pieces) == 1:
        return len(text) == len(pieces[0]) and _eq_at(pieces[0], text, 0)
    return _find_pieces(pieces, text, 0, len(text)) >= 0


def _find_pieces(pieces: list[str], text: str, start: int, end: int) -> int:
    first, last = pieces[0], pieces[-1]
    if end - start < len(first) + len(last) or not _eq_at(first, text, start):
        return -1
    if not _eq_at(last, text, end - len(last)):
        return -1
    pos, stop = start + len(first), end - len(last)
    for piece in pieces[1:-1]:  # leftmost match of each piece is optimal for '*': a single scan
        found = _find(piece, text, pos, stop)
        if found < 0:
            return -1
        pos = found + len(piece)
    return start


class _PatternSet:
    """Patterns compiled for one question: exact names in a set, ``<literal>*`` prefixes in one ``startswith``
    (C speed, still linear), every other glob matched by :class:`Glob`."""

    __slots__ = ("any", "exact", "globs", "prefixes")

    def __init__(self, patterns: Iterable[str] | None) -> None:
        compiled = [Glob(p) for p in patterns] if patterns is not None else []
        self.any = patterns is None or any(g.pattern.strip() == "**" for g in compiled)
        self.exact = frozenset(g.exact for g in compiled if g.exact is not None)
        prefixes = [g for g in compiled if _prefix(g) is not None]
        self.prefixes = tuple(str(_prefix(g)) for g in prefixes)
        self.globs = tuple(g for g in compiled if g.exact is None and g not in prefixes)

    def match(self, name: str | None) -> bool:
        if self.any:
            return True
        if name is None:
            return False
        if name in self.exact:
            return True
        if self.prefixes and "/" not in name and name.startswith(self.prefixes):
            return True
        return any(g.match(name) for g in self.globs) or (
            "/" in name and any(Glob(p + "*").match(name) for p in self.prefixes)
        )


def _prefix(g: Glob) -> str | None:
    """The literal before the one trailing ``*`` of a one-segment glob (``tool.search*``), else ``None``."""
    text = g.pattern.strip()
    if g.exact is not None or not text.endswith("*") or any(c in text[:-1] for c in "*?/"):
        return None
    return unicodedata.normalize("NFKC", text[:-1]).casefold()


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy says about one action: ``effect``, the ``rule`` that decided (``None``: no rule allowed it),
    and the ``limits`` and ``content`` rules that apply."""

    effect: Literal["allow", "deny", "require_approval"]
    rule: str | None
    reason: str
    limits: tuple[Limit, ...] = ()
    content: tuple[tuple[str, tuple[str, ...], tuple[Glob, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: PolicyRule
    actions: _PatternSet
    resources: _PatternSet
    agents: _PatternSet | None
    scopes: _PatternSet | None


class CompiledPolicy:
    """A policy ready to check: every pattern compiled once; decisions remembered per exact question."""

    def __init__(self, policy: Policy, revision: int = 0) -> None:
        self.policy = policy
        self.revision = revision
        self.reviewers = _PatternSet(policy.reviewers) if policy.reviewers else None
        rules = [
            _CompiledRule(
                r,
                _PatternSet(r.actions),
                _PatternSet(r.resources),
                _PatternSet(r.agents) if r.agents is not None else None,
                _PatternSet(r.scopes) if r.scopes is not None else None,
            )
            for r in policy.rules
        ]
        order = {"deny": 0, "require_approval": 1, "allow": 2}
        self._rules = sorted(rules, key=lambda c: order[c.rule.effect])  # stable: document order within an effect
        self._limits = [(_PatternSet(li.actions), li) for li in policy.limits]
        self._content = [(_PatternSet(c.actions), c.id, *_blocked(c.blocked)) for c in policy.content]
        self._memo: dict[tuple[str, str | None, str | None, frozenset[str]], Decision] = {}

    def decide(self, action: str, resource: str | None, agent: str | None, scopes: frozenset[str]) -> Decision:
        """The decision for these (raw) names; SOS-4005 for a name :func:`normalise` refuses."""
        key = (action, resource, agent, scopes)
        found = self._memo.get(key)
        if found is None:
            found = self._decide(action, resource, agent, scopes)
            if len(self._memo) >= DECISION_MEMO_MAX:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _decide(self, action: str, resource: str | None, agent: str | None, scopes: frozenset[str]) -> Decision:
        act = normalise(action, "action")
        res = None if resource is None else normalise(resource, "resource")
        who = None if agent is None else normalise(agent, "agent")
        limits = tuple(li for pats, li in self._limits if pats.match(act))
        content = tuple((cid, lits, globs) for pats, cid, lits, globs in self._content if pats.match(act))
        for c in self._rules:
            if not (c.actions.match(act) and c.resources.match(res)):
                continue
            if c.agents is not None and not c.agents.match(who):
                continue
            if c.scopes is not None and not any(c.scopes.match(s) for s in scopes):
                continue
            reason = c.rule.reason or f"rule {c.rule.id!r} of policy {self.policy.name!r}"
            return Decision(c.rule.effect, c.rule.id, reason, limits, content)
        where = f" on {res!r}" if res is not None else ""
        reason = f"policy {self.policy.name!r} (version {self.policy.version}) has no rule allowing {act!r}{where}"
        return Decision("deny", None, reason, limits, content)

    def may_review(self, agent: str | None) -> bool:
        """Whether ``agent`` is one of the policy's reviewers."""
        if agent is None or self.reviewers is None:
            return False
        return self.reviewers.match(normalise(agent, "agent"))


def _blocked(patterns: Iterable[str]) -> tuple[tuple[str, ...], tuple[Glob, ...]]:
    """Blocked patterns as plain substrings (``password``, ``*secret*``) and the remaining globs."""
    literals, globs = [], []
    for p in patterns:
        g = Glob(fold_content(p) or p, unanchored=True)  # a pattern written with invisible characters matches too
        pieces = [piece for piece in g.groups[0][0] if piece]
        if len(pieces) == 1 and "?" not in pieces[0]:
            literals.append(pieces[0])
        else:
            globs.append(g)
    return tuple(literals), tuple(globs)


class _Unscannable(Exception):
    """Arguments beyond what a content check scans (``CONTENT_DEPTH_MAX``, ``CONTENT_VALUES_MAX``)."""


def scan_texts(values: Iterable[Any]) -> Iterator[str]:
    """Every string in ``values``, at any depth: mapping keys and values, list, tuple and set items, a pydantic
    model's fields, bytes as UTF-8. Raises ``_Unscannable`` (read by :func:`blocked_content`) past
    ``CONTENT_DEPTH_MAX`` levels or ``CONTENT_VALUES_MAX`` values, so nothing is ever skipped."""
    stack: list[tuple[Any, int]] = [(v, 0) for v in values]
    seen = len(stack)
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            yield value
            continue
        if isinstance(value, bytes | bytearray):
            yield bytes(value).decode("utf-8", "replace")
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping):
            items: list[Any] = [x for pair in value.items() for x in pair]
        elif isinstance(value, list | tuple | set | frozenset):
            items = list(value)
        else:
            continue  # numbers, booleans, None: no text
        seen += len(items)
        if depth >= CONTENT_DEPTH_MAX or seen > CONTENT_VALUES_MAX:
            raise _Unscannable
        stack.extend((item, depth + 1) for item in items)


def fold_content(text: str) -> str:
    """``text`` as content rules compare it: NFKC, case-folded, without the characters no reader sees
    (:data:`INVISIBLE_RE`; normalised again when some were dropped, as they could have kept a letter and its mark
    apart), and without the combining marks left over after composition (:data:`MARK_CATEGORIES`)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    if norm.isascii() and norm.isprintable():
        return norm
    shown = INVISIBLE_RE.sub("", norm)
    if len(shown) != len(norm):
        shown = unicodedata.normalize("NFKC", shown)
    return "".join(ch for ch in shown if unicodedata.category(ch) not in MARK_CATEGORIES)


def blocked_content(decision: Decision, texts: Iterable[str]) -> str | None:
    """The id of the first content rule whose blocked pattern occurs in one of ``texts``, else ``None``; text
    beyond what a check scans is refused whole: ``content-too-long`` (``CONTENT_CHARS_MAX``) or
    ``content-too-large`` (``CONTENT_DEPTH_MAX``, ``CONTENT_VALUES_MAX``)."""
    if not decision.content:
        return None
    total = 0
    try:
        for text in texts:
            total += len(text)
            if total > CONTENT_CHARS_MAX:
                return "content-too-long"
            norm = fold_content(text)
            for cid, literals, globs in decision.content:
                if any(lit in norm for lit in literals) or any(g.match(norm) for g in globs):
                    return cid
    except _Unscannable:
        return "content-too-large"
    return None


def compile_policy(policy: Any, revision: int = 0) -> CompiledPolicy:
    """``policy`` (anything :func:`load_policy` reads) compiled for checking."""
    return CompiledPolicy(load_policy(policy), revision)
