"""Capabilities: signed, delegable rights that can only narrow.

A capability says *subject may do action on resource* (SOS v0.4.1's fields: id, subject, action, resource,
constraints, issued_at, expires_at, issuer, signature ``ed25519:<hex>`` over the canonical JSON of the other
fields, uses_remaining, parent_id). We add ``key_id`` (which issuer key signed it, so issuers can rotate) and
``subject_key`` (the subject's public key, so a delegation it signs can be verified offline).

The narrowing rule, checked when delegating **and** when verifying every link of a chain:

- **actions**: ``action`` is a comma-separated set of patterns: ``ns:verb`` (exact), ``ns:*`` (every verb of a
  namespace) or ``*``. Each child pattern must be covered by a parent pattern.
- **resources**: a pattern is a literal (matches itself) or a literal ending in ``*`` (matches every resource that
  starts with the part before ``*``; ``*`` alone matches all). No other ``*`` is allowed. A child pattern is
  narrower when every resource it matches is matched by the parent: a literal inside the parent's pattern, or a
  prefix that extends the parent's prefix. This makes "narrower" a string test, always decidable.
- **expiry** no later than the parent's (a child of an expiring parent must expire);
- **uses** no more than the parent's ``uses_remaining`` (when the parent has a limit, the child must too);
- **constraints**: every parent constraint is kept with the same value and type (a child may add its own).

Verification is offline: the root must be signed by a trusted issuer key; each child must name its parent
(``parent_id``), be issued by the parent's subject and be signed with the parent's ``subject_key``. Any revoked,
expired, tampered or widening link fails the whole chain with :class:`~sos_kernel.errors.Forbidden` (SOS-5004).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import uuid
from collections.abc import Container, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .._exact import exact_equal
from ..errors import Forbidden, InvalidArgument
from .keys import AgentKey, PublicKey

__all__ = [
    "Capability",
    "action_covers",
    "actions_narrower",
    "resource_matches",
    "resource_narrower",
    "use_keys",
]

ACTION_PATTERNS_MAX = 32
RESOURCE_CHARS_MAX = 500


@functools.lru_cache(maxsize=4096)
def _actions(value: str) -> tuple[str, ...]:
    parts = [p.strip() for p in value.split(",")]
    if not parts or len(parts) > ACTION_PATTERNS_MAX or any(not p for p in parts):
        raise InvalidArgument(f"action {value!r} must be 1-{ACTION_PATTERNS_MAX} comma-separated patterns")
    for p in parts:
        if p != "*" and ("*" in p[:-1] or ":" not in p or (p.endswith("*") and not p.endswith(":*"))):
            raise InvalidArgument(f"action pattern {p!r} must be 'ns:verb', 'ns:*' or '*'")
    return tuple(parts)


def _pattern_covers(parent: str, child: str) -> bool:
    if parent == "*" or parent == child:
        return True
    return parent.endswith(":*") and child.startswith(parent[:-1])


def action_covers(pattern_set: str, action: str) -> bool:
    """Whether the action set ``pattern_set`` allows the concrete ``action``."""
    return any(_pattern_covers(p, action) for p in _actions(pattern_set))


def actions_narrower(child: str, parent: str) -> bool:
    """Whether every pattern of ``child`` is covered by a pattern of ``parent``."""
    parents = _actions(parent)
    return all(any(_pattern_covers(p, c) for p in parents) for c in _actions(child))


def _check_resource(pattern: str) -> str:
    if not isinstance(pattern, str) or not 1 <= len(pattern) <= RESOURCE_CHARS_MAX or "*" in pattern[:-1]:
        raise InvalidArgument(f"resource pattern {pattern!r}: a literal, or a literal ending in a single '*'")
    return pattern


def resource_matches(pattern: str, resource: str) -> bool:
    """Whether ``pattern`` (literal, or prefix ending in ``*``) matches the concrete ``resource``."""
    _check_resource(pattern)
    return resource.startswith(pattern[:-1]) if pattern.endswith("*") else resource == pattern


def resource_narrower(child: str, parent: str) -> bool:
    """Whether every resource ``child`` matches is matched by ``parent``."""
    _check_resource(child)
    _check_resource(parent)
    if not parent.endswith("*"):
        return child == parent
    if child.endswith("*"):
        return child[:-1].startswith(parent[:-1])
    return child.startswith(parent[:-1])


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""One encoder for every canonical form: json.dumps with options would build a new encoder per call."""


def _sorted_json(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, or None when it holds a float or a very large integer.

    For such values pydantic-core's compact JSON is byte-for-byte ``_CANONICAL``'s (a property test holds the two
    together) at a fifth of the cost; floats are the one place their formats differ.
    """
    if type(value) is dict and all(_plain_scalar(v) for v in value.values()):
        return dict(sorted(value.items()))  # the common case: a flat mapping of strings, booleans and integers
    if isinstance(value, float) or (isinstance(value, int) and not -(2**63) <= value < 2**63):
        return None  # floats, and integers past 64 bits, take the reference encoder
    if isinstance(value, dict):
        out = {}
        for key in sorted(value):
            item = _sorted_json(value[key])
            if item is None and value[key] is not None:
                return None
            out[key] = item
        return out
    if isinstance(value, list):
        items = [_sorted_json(v) for v in value]
        if any(i is None and v is not None for i, v in zip(items, value, strict=True)):
            return None
        return items
    return value


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    return kind is str or kind is bool or value is None or (kind is int and -(2**63) <= value < 2**63)


def _json_time(value: datetime | None) -> str | None:
    # The same text pydantic's JSON mode gives an aware datetime: ISO 8601, UTC written as "Z".
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _check_uses(uses: int | None) -> None:
    if uses is not None and (type(uses) is not int or uses < 0):
        raise InvalidArgument(f"uses must be a non-negative int or None, got {uses!r}")


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None, name: str) -> datetime | None:
    # A naive time cannot be compared with a chain's aware times (TypeError): refuse it where it comes in.
    if value is not None and value.tzinfo is None:
        raise InvalidArgument(f"{name} must carry a timezone (e.g. datetime.now(UTC)), got a naive datetime")
    return value


class Capability(BaseModel):
    """A signed right. Build roots with :meth:`issue`, children with :meth:`delegate`; check with :meth:`verify`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    subject: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=2000)
    resource: str = Field(min_length=1, max_length=RESOURCE_CHARS_MAX)
    constraints: dict[str, Any] = Field(default_factory=dict)
    issued_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    issuer: str = Field(min_length=1, max_length=200)
    key_id: str
    subject_key: str | None = None
    uses_remaining: int | None = Field(default=None, ge=0, strict=True)  # True or 5.0 is not a count
    parent_id: str | None = None
    signature: str = ""

    # -- signing ---------------------------------------------------------------------------------------------

    def canonical(self) -> bytes:
        """The signed bytes: canonical JSON (sorted keys, no spaces, UTF-8) of every field but ``signature``."""
        # Built by hand rather than with model_dump(mode="json"), which dominated verify, and encoded by
        # pydantic-core, which writes datetimes exactly as pydantic's JSON mode does; the bytes are the same:
        # tests compare the two on every field.
        constraints = _sorted_json(self.constraints) if self.constraints else self.constraints
        if constraints is None:  # floats format differently in the two encoders: keep the reference one
            fields = self._signed_fields(self.constraints, _json_time(self.expires_at), _json_time(self.issued_at))
            return _CANONICAL.encode(fields).encode()
        return pydantic_core.to_json(self._signed_fields(constraints, self.expires_at, self.issued_at))

    def _signed_fields(self, constraints: Any, expires_at: Any, issued_at: Any) -> dict[str, Any]:
        """Every field but ``signature``, with the three whose encoding differs between the encoders given."""
        return {
            "action": self.action,
            "constraints": constraints,
            "expires_at": expires_at,
            "id": self.id,
            "issued_at": issued_at,
            "issuer": self.issuer,
            "key_id": self.key_id,
            "parent_id": self.parent_id,
            "resource": self.resource,
            "subject": self.subject,
            "subject_key": self.subject_key,
            "uses_remaining": self.uses_remaining,
        }

    @classmethod
    def issue(
        cls,
        key: AgentKey,
        *,
        issuer: str,
        subject: str,
        action: str,
        resource: str,
        subject_key: PublicKey | None = None,
        expires_at: datetime | None = None,
        uses: int | None = None,
        constraints: Mapping[str, Any] | None = None,
    ) -> Capability:
        """A root capability signed by ``key`` (an issuer key the verifier trusts)."""
        _actions(action)
        _check_resource(resource)
        _aware(expires_at, "expires_at")
        _check_uses(uses)
        unsigned = cls(
            subject=subject,
            action=action,
            resource=resource,
            constraints=dict(constraints or {}),
            issued_at=_now(),
            expires_at=expires_at,
            issuer=issuer,
            key_id=key.key_id,
            subject_key=subject_key.hex if subject_key else None,
            uses_remaining=uses,
        )
        return unsigned.model_copy(update={"signature": key.sign(unsigned.canonical())})

    def delegate(
        self,
        key: AgentKey,
        *,
        subject: str,
        action: str | None = None,
        resource: str | None = None,
        subject_key: PublicKey | None = None,
        expires_at: datetime | None = None,
        uses: int | None = None,
        constraints: Mapping[str, Any] | None = None,
    ) -> Capability:
        """A child for ``subject``, signed by this capability's subject with ``key``; it must narrow this one.

        Omitted fields inherit this capability's values. Raises SOS-5004 when the child would widen anything or
        ``key`` is not this capability's ``subject_key``.
        """
        if self.subject_key is None or key.public.hex != self.subject_key:
            raise Forbidden("delegate with the key named in this capability's subject_key")
        _aware(expires_at, "expires_at")
        _check_uses(uses)
        merged = {**self.constraints, **dict(constraints or {})}
        child = Capability(
            subject=subject,
            action=action or self.action,
            resource=resource or self.resource,
            constraints=merged,
            issued_at=_now(),
            expires_at=expires_at or self.expires_at,
            issuer=self.subject,
            key_id=key.key_id,
            subject_key=subject_key.hex if subject_key else None,
            uses_remaining=uses if uses is not None else self.uses_remaining,
            parent_id=self.id,
        )
        child._check_narrows(self)
        return child.model_copy(update={"signature": key.sign(child.canonical())})

    def _check_narrows(self, parent: Capability) -> None:
        problem = _widening(self, parent)
        if problem is not None:
            raise Forbidden(f"capability {self.id} does not narrow its parent: {problem}", details={"link": self.id})

    # -- verification ----------------------------------------------------------------------------------------

    @staticmethod
    def verify(
        chain: Sequence[Capability],
        *,
        trusted_keys: Mapping[str, PublicKey],
        action: str,
        resource: str,
        now: datetime | None = None,
        revoked: Container[str] = (),
    ) -> Capability:
        """Check a chain (root first, the capability being used last) and that it allows ``action`` on
        ``resource``; returns the leaf. Raises SOS-5004 naming the first broken link."""
        if not chain:
            raise Forbidden("no capability presented")
        at = _aware(now, "now") or _now()
        root = chain[0]
        trusted = trusted_keys.get(root.key_id)
        if trusted is None or not trusted.verify(root.canonical(), root.signature):
            raise Forbidden("the root capability is not signed by a trusted issuer key", details={"link": root.id})
        if root.parent_id is not None:  # a delegated link presented alone would skip its ancestors' checks
            raise Forbidden("a chain starts at a capability without a parent", details={"link": root.id})
        for parent, child in itertools.pairwise(chain):
            try:
                _check_link(parent, child)
            except (InvalidArgument, ValueError) as exc:  # whatever a delegator signed, the chain is refused
                raise Forbidden(f"capability {child.id} is malformed: {exc}", details={"link": child.id}) from exc
        for link in chain:
            _check_live(link, at, revoked)
        leaf = chain[-1]
        if not action_covers(leaf.action, action):
            raise Forbidden(f"capability allows {leaf.action!r}, not {action!r}", details={"link": leaf.id})
        if not resource_matches(leaf.resource, resource):
            raise Forbidden(f"capability covers {leaf.resource!r}, not {resource!r}", details={"link": leaf.id})
        return leaf


def _check_link(parent: Capability, child: Capability) -> None:
    if child.parent_id != parent.id or child.issuer != parent.subject:
        raise Forbidden("a capability in the chain does not descend from the one before it", details={"link": child.id})
    # One decode of the parent's subject key serves both the key-id check and the signature check.
    subject_key = PublicKey.from_hex(parent.subject_key) if parent.subject_key is not None else None
    if subject_key is None or subject_key.key_id != child.key_id:
        raise Forbidden(
            "a delegated capability is not signed with its parent's subject key", details={"link": child.id}
        )
    if not subject_key.verify(child.canonical(), child.signature):
        raise Forbidden("a capability's signature does not match its content", details={"link": child.id})
    child._check_narrows(parent)


_USE_KEY_DOMAIN = b"sos-capability-use\x00"


def use_keys(chain: Sequence[Capability], trusted_keys: Mapping[str, PublicKey]) -> list[str]:
    """The use-counter key of each link of a verified chain: the SHA-256 (hex) of the public key that signed the
    link and the link's signed bytes.

    Two different links never share a counter, whatever ids their signers choose: a link signed by another key,
    or with any other field, has another key. The signature is left out because a signer can make many valid
    signatures of the same content, and the same content under the same key is the same grant.
    """
    keys = []
    for i, link in enumerate(chain):
        signer = trusted_keys.get(link.key_id) if i == 0 else _subject_key(chain[i - 1])
        if signer is None:
            raise Forbidden("a capability in the chain has no known signing key", details={"link": link.id})
        keys.append(hashlib.sha256(_USE_KEY_DOMAIN + bytes.fromhex(signer.hex) + link.canonical()).hexdigest())
    return keys


def _subject_key(link: Capability) -> PublicKey | None:
    return PublicKey.from_hex(link.subject_key) if link.subject_key is not None else None


def _check_live(link: Capability, at: datetime, revoked: Container[str]) -> None:
    if link.id in revoked:
        raise Forbidden(f"capability {link.id} is revoked", details={"link": link.id})
    if link.expires_at is not None and link.expires_at <= at:
        raise Forbidden(f"capability {link.id} expired at {link.expires_at.isoformat()}", details={"link": link.id})
    if link.uses_remaining is not None and link.uses_remaining <= 0:
        raise Forbidden(f"capability {link.id} has no uses left", details={"link": link.id})


@functools.lru_cache(maxsize=4096)
def _scope_widening(child_action: str, parent_action: str, child_resource: str, parent_resource: str) -> str | None:
    # A pure function of four strings that repeat across chains (the same grants delegated again and again):
    # decided once each. Malformed patterns raise and are not remembered.
    if not actions_narrower(child_action, parent_action):
        return f"action {child_action!r} is not within {parent_action!r}"
    if not resource_narrower(child_resource, parent_resource):
        return f"resource {child_resource!r} is not within {parent_resource!r}"
    return None


def _widening(child: Capability, parent: Capability) -> str | None:
    problem = _scope_widening(child.action, parent.action, child.resource, parent.resource)
    if problem is not None:
        return problem
    if parent.expires_at is not None and (child.expires_at is None or child.expires_at > parent.expires_at):
        return "it would outlive its parent"
    if parent.uses_remaining is not None and (
        child.uses_remaining is None or child.uses_remaining > parent.uses_remaining
    ):
        return "it would allow more uses than its parent"
    for name, value in parent.constraints.items():
        # Type-exact: a constraint of 5 is not kept by 5.0, nor one of 1 by true.
        if name not in child.constraints or not exact_equal(child.constraints[name], value):
            return f"it drops or changes the constraint {name!r}"
    return None
