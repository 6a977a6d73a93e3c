"""Semantic versions and ranges, enough for skill lookup.

Versions are ``MAJOR.MINOR.PATCH`` with an optional ``-prerelease`` and ``+build`` (build is ignored when
ordering). A prerelease orders before its release. Ranges: an exact version, ``*`` (any release), ``^1.2``
(compatible: ``>=1.2.0 <2.0.0``; for 0.x, ``^0.3`` is ``>=0.3.0 <0.4.0``), ``~1.2`` (``>=1.2.0 <1.3.0``), and
comparators ``>=``, ``>``, ``<=``, ``<``, ``=`` that may be combined with spaces (``>=1.0 <2``). A range never
picks a prerelease; name one exactly to get it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from ..errors import InvalidArgument

__all__ = ["Version", "matches", "parse_range"]

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")
_PARTIAL_RE = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_COMPARATOR_RE = re.compile(r"^(>=|<=|>|<|=)?(.+)$")


def _pre_key(pre: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    """A parsed semantic version."""

    major: int
    minor: int
    patch: int
    pre: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``1.2.3``, ``1.2.3-beta.1`` or ``1.2.3+build``; SOS-4005 otherwise."""
        found = _VERSION_RE.fullmatch(text) if isinstance(text, str) else None
        if found is None:
            raise InvalidArgument(f"{text!r} is not a semantic version like 1.2.3")
        return cls(int(found[1]), int(found[2]), int(found[3]), found[4] or "")

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, _pre_key(self.pre) if self.pre else ())

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


Bound = tuple[str, Version]


def _partial(text: str) -> tuple[int, int | None, int | None]:
    found = _PARTIAL_RE.fullmatch(text)
    if found is None:
        raise InvalidArgument(f"{text!r} is not a version or partial version")
    return int(found[1]), int(found[2]) if found[2] else None, int(found[3]) if found[3] else None


def _caret(text: str) -> list[Bound]:
    major, minor, patch = _partial(text)
    low = Version(major, minor or 0, patch or 0)
    if major > 0 or minor is None:
        high = Version(major + 1, 0, 0)
    elif minor > 0 or patch is None:
        high = Version(0, minor + 1, 0)
    else:
        high = Version(0, 0, (patch or 0) + 1)
    return [(">=", low), ("<", high)]


def _tilde(text: str) -> list[Bound]:
    major, minor, patch = _partial(text)
    low = Version(major, minor or 0, patch or 0)
    high = Version(major + 1, 0, 0) if minor is None else Version(major, minor + 1, 0)
    return [(">=", low), ("<", high)]


def _comparator(part: str) -> list[Bound]:
    found = _COMPARATOR_RE.fullmatch(part)
    if found is None:  # pragma: no cover - the pattern matches any non-empty text
        raise InvalidArgument(f"bad range part {part!r}")
    op, rest = found[1] or "=", found[2]
    if _VERSION_RE.fullmatch(rest):
        return [(op, Version.parse(rest))]
    major, minor, patch = _partial(rest)
    return [(op, Version(major, minor or 0, patch or 0))]


def parse_range(text: str) -> list[Bound]:
    """The bounds of a range expression (see the module docstring); SOS-4005 when it is malformed."""
    if not isinstance(text, str) or not text.strip() or len(text) > 100:
        raise InvalidArgument("a version range is a non-empty string of at most 100 characters")
    bounds: list[Bound] = []
    for part in text.split():
        if part == "*":
            continue
        if part.startswith("^"):
            bounds += _caret(part[1:])
        elif part.startswith("~"):
            bounds += _tilde(part[1:])
        else:
            bounds += _comparator(part)
    return bounds


def matches(version: Version, bounds: list[Bound]) -> bool:
    """Whether a release ``version`` satisfies every bound (prereleases only match an exact ``=``)."""
    if version.pre and not any(op == "=" and bound == version for op, bound in bounds):
        return False
    for op, bound in bounds:
        ok = {
            "=": version == bound,
            ">=": version >= bound,
            ">": version > bound,
            "<=": version <= bound,
            "<": version < bound,
        }[op]
        if not ok:
            return False
    return True
