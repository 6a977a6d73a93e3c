"""Capabilities: the narrowing functions, issue/delegate/verify, a property test over random delegation chains,
the ``Capabilities`` service on every backend, and uses spent concurrently by several processes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from itertools import product
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.errors import Forbidden, InvalidArgument
from sos_kernel.identity import (
    AgentKey,
    Capability,
    PublicKey,
    action_covers,
    actions_narrower,
    resource_matches,
    resource_narrower,
)
from sos_kernel.identity.keys import key_id_of

from ..conftest import requires
from ..procs import WorkerProcess

WORKER = str(Path(__file__).with_name("_cap_worker.py"))


# --- the narrowing functions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern_set", "action", "expected"),
    [
        ("bus:read", "bus:read", True),
        ("bus:read", "bus:write", False),
        ("bus:*", "bus:write", True),
        ("bus:*", "ledger:read", False),
        ("bus:*", "busy:read", False),
        ("*", "ledger:admin", True),
        ("bus:read, ledger:*", "ledger:write", True),
        ("bus:read,ledger:read", "ledger:write", False),
    ],
)
def test_action_covers(pattern_set: str, action: str, expected: bool) -> None:
    assert action_covers(pattern_set, action) is expected


@pytest.mark.parametrize(
    ("child", "parent", "expected"),
    [
        ("bus:read", "bus:read", True),
        ("bus:read", "bus:*", True),
        ("bus:*", "bus:*", True),
        ("bus:*", "bus:read", False),
        ("bus:*", "bus:read,bus:write", False),  # bus:* also allows verbs the parent never listed
        ("bus:read,ledger:read", "bus:*,ledger:*", True),
        ("bus:read,ledger:write", "bus:*,ledger:read", False),
        ("*", "bus:*,ledger:*", False),
        ("*", "*", True),
        ("ledger:read", "*", True),
        ("busy:read", "bus:*", False),
    ],
)
def test_actions_narrower(child: str, parent: str, expected: bool) -> None:
    assert actions_narrower(child, parent) is expected


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("*", "anything", True),
        ("*", "", True),
        ("sos:channel:*", "sos:channel:team", True),
        ("sos:channel:*", "sos:channel:", True),
        ("sos:channel:*", "sos:chan", False),
        ("skill:a", "skill:a", True),
        ("skill:a", "skill:ab", False),
    ],
)
def test_resource_matches(pattern: str, resource: str, expected: bool) -> None:
    assert resource_matches(pattern, resource) is expected


@pytest.mark.parametrize(
    ("child", "parent", "expected"),
    [
        ("a", "a", True),
        ("a*", "a", False),  # a prefix matches more than the literal
        ("ab", "a*", True),
        ("a", "a*", True),
        ("ab*", "a*", True),
        ("a*", "ab*", False),
        ("a*", "a*", True),
        ("ba", "a*", False),
        ("*", "*", True),
        ("*", "a*", False),
        ("anything", "*", True),
        ("b", "a", False),
    ],
)
def test_resource_narrower(child: str, parent: str, expected: bool) -> None:
    assert resource_narrower(child, parent) is expected


@pytest.mark.parametrize("bad", ["bus", "bus*", "*:*", "b*s:read", "bus:re*d", "", "bus:read,,bus:write", " , "])
def test_malformed_action_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        action_covers(bad, "bus:read")
    with pytest.raises(InvalidArgument):
        actions_narrower(bad, "*")


@pytest.mark.parametrize("bad", ["", "a*b", "**", "*a*", "x" * 501])
def test_malformed_resource_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        resource_matches(bad, "a")
    with pytest.raises(InvalidArgument):
        resource_narrower(bad, "*")
    with pytest.raises(InvalidArgument):
        resource_narrower("a", bad)


# --- issue / delegate / verify -------------------------------------------------------------------------------------


@dataclass
class Chain:
    """A root issued by a trusted key and two delegations; ``keys[i]`` is the subject key of ``links[i]``."""

    issuer: AgentKey
    keys: list[AgentKey]
    links: list[Capability]
    at: datetime

    @property
    def trusted(self) -> dict[str, PublicKey]:
        return {self.issuer.key_id: self.issuer.public}

    def verify(self, links: Sequence[Capability] | None = None, **kw: Any) -> Capability:
        kw.setdefault("action", "bus:read")
        kw.setdefault("resource", "sos:channel:team-red")
        kw.setdefault("now", self.at)
        return Capability.verify(self.links if links is None else links, trusted_keys=self.trusted, **kw)


def chain3(*, expiries_min: tuple[int | None, ...] = (60, 30, 10), uses: tuple[int | None, ...] = (10, 5, 2)) -> Chain:
    """issuer → agent:a (bus:*, ledger:read on sos:channel:*) → agent:b (bus:* on team-*) → agent:c (bus:read)."""
    at = datetime.now(UTC)
    issuer = AgentKey.generate()
    keys = [AgentKey.generate() for _ in range(3)]

    def exp(i: int) -> datetime | None:
        minutes = expiries_min[i]
        return None if minutes is None else at + timedelta(minutes=minutes)

    root = Capability.issue(
        issuer,
        issuer="agent:issuer",
        subject="agent:a",
        action="bus:*,ledger:read",
        resource="sos:channel:*",
        subject_key=keys[0].public,
        expires_at=exp(0),
        uses=uses[0],
        constraints={"max_micros": 500},
    )
    mid = root.delegate(
        keys[0],
        subject="agent:b",
        action="bus:*",
        resource="sos:channel:team-*",
        subject_key=keys[1].public,
        expires_at=exp(1),
        uses=uses[1],
    )
    leaf = mid.delegate(
        keys[1],
        subject="agent:c",
        action="bus:read",
        resource="sos:channel:team-red",
        subject_key=keys[2].public,
        expires_at=exp(2),
        uses=uses[2],
        constraints={"purpose": "triage"},
    )
    return Chain(issuer, keys, [root, mid, leaf], at)


def forge(parent: Capability, key: AgentKey, **fields: Any) -> Capability:
    """A child of ``parent`` built by hand (no narrowing check) and validly signed with ``key``."""
    body: dict[str, Any] = {
        "subject": "agent:mallory",
        "action": parent.action,
        "resource": parent.resource,
        "constraints": dict(parent.constraints),
        "issued_at": datetime.now(UTC),
        "expires_at": parent.expires_at,
        "issuer": parent.subject,
        "key_id": key.key_id,
        "uses_remaining": parent.uses_remaining,
        "parent_id": parent.id,
    }
    body.update(fields)
    unsigned = Capability(**body)
    return unsigned.model_copy(update={"signature": key.sign(unsigned.canonical())})


def refused(chain: Chain, links: Sequence[Capability] | None = None, **kw: Any) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        chain.verify(links, **kw)
    assert info.value.code == "SOS-5004"
    return info.value


def test_a_chain_of_depth_three_verifies() -> None:
    chain = chain3()
    root, mid, leaf = chain.links
    assert chain.verify() == leaf
    assert (mid.parent_id, leaf.parent_id) == (root.id, mid.id)
    assert (mid.issuer, leaf.issuer) == ("agent:a", "agent:b")
    assert leaf.constraints == {"max_micros": 500, "purpose": "triage"}
    assert leaf.signature.startswith("ed25519:")
    # the chain survives the wire
    wire = [Capability.model_validate_json(c.model_dump_json()) for c in chain.links]
    assert chain.verify(wire) == leaf
    # any prefix of a valid chain is itself valid for what its own leaf allows
    assert chain.verify(chain.links[:2], action="bus:write", resource="sos:channel:team-blue") == mid


def test_omitted_delegation_fields_inherit_the_parent() -> None:
    chain = chain3()
    mid = chain.links[1]
    child = mid.delegate(chain.keys[1], subject="agent:d")
    assert (child.action, child.resource, child.expires_at, child.uses_remaining) == (
        mid.action,
        mid.resource,
        mid.expires_at,
        mid.uses_remaining,
    )
    assert child.constraints == mid.constraints
    assert chain.verify([*chain.links[:2], child], action="bus:write", resource="sos:channel:team-x") == child


TAMPERED = {
    "action": "*",
    "resource": "*",
    "expires_at": datetime(2999, 1, 1, tzinfo=UTC),
    "uses_remaining": 1000,
    "constraints": {},
    "subject": "agent:mallory",
    "issuer": "agent:mallory",
    "subject_key": AgentKey.generate().public.hex,
    "issued_at": datetime(2000, 1, 1, tzinfo=UTC),
    "id": "forged-id",
}


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("field", sorted(TAMPERED))
def test_a_field_changed_after_signing_is_refused(field: str, position: int) -> None:
    chain = chain3()
    links = list(chain.links)
    links[position] = links[position].model_copy(update={field: TAMPERED[field]})
    error = refused(chain, links)
    assert error.details["link"] == links[position].id


def test_a_root_resigned_by_another_key_under_the_trusted_key_id_is_refused() -> None:
    chain = chain3()
    root = chain.links[0]
    impostor = AgentKey.generate()
    forged = root.model_copy(update={"signature": impostor.sign(root.canonical())})
    refused(chain, [forged, *chain.links[1:]])


def test_a_root_from_an_untrusted_issuer_is_refused() -> None:
    chain = chain3()
    with pytest.raises(Forbidden, match="trusted issuer"):
        Capability.verify(
            chain.links, trusted_keys={}, action="bus:read", resource="sos:channel:team-red", now=chain.at
        )
    other = AgentKey.generate()
    with pytest.raises(Forbidden, match="trusted issuer"):
        Capability.verify(
            chain.links,
            trusted_keys={other.key_id: other.public},
            action="bus:read",
            resource="sos:channel:team-red",
            now=chain.at,
        )
    # trusting the key under the root's key id is not enough: the signature must be by that key
    with pytest.raises(Forbidden):
        Capability.verify(
            chain.links,
            trusted_keys={chain.issuer.key_id: other.public},
            action="bus:read",
            resource="sos:channel:team-red",
            now=chain.at,
        )


def test_a_child_signed_by_another_key_than_its_parents_subject_key_is_refused() -> None:
    chain = chain3()
    root, mid, _ = chain.links
    other = AgentKey.generate()
    with pytest.raises(Forbidden, match="subject_key"):
        mid.delegate(other, subject="agent:d")
    with pytest.raises(Forbidden, match="subject_key"):
        mid.delegate(chain.keys[0], subject="agent:d")  # the parent's issuer key, not its subject key
    # forged by hand: signed by another key under its own key id...
    refused(chain, [root, mid, forge(mid, other, action="bus:read", resource="sos:channel:team-red")])
    # ...or under the key id of the right key
    wrong = forge(mid, other, action="bus:read", resource="sos:channel:team-red", key_id=chain.keys[1].key_id)
    refused(chain, [root, mid, wrong])
    # a parent without a subject_key cannot be delegated at all
    bare = Capability.issue(chain.issuer, issuer="agent:issuer", subject="agent:z", action="*", resource="*")
    with pytest.raises(Forbidden):
        bare.delegate(chain.keys[0], subject="agent:d")
    refused(chain, [bare, forge(bare, chain.keys[0], action="bus:read", resource="sos:channel:team-red")])


def test_a_child_that_does_not_descend_from_the_link_before_is_refused() -> None:
    chain = chain3()
    root, mid, leaf = chain.links
    refused(chain, [root, leaf])  # skips a link
    refused(chain, [mid, root, leaf])  # out of order (the root must come first)
    orphan = forge(mid, chain.keys[1], parent_id="someone-else", action="bus:read", resource="sos:channel:team-red")
    refused(chain, [root, mid, orphan])
    wrong_issuer = forge(mid, chain.keys[1], issuer="agent:a", action="bus:read", resource="sos:channel:team-red")
    refused(chain, [root, mid, wrong_issuer])


def test_a_delegated_capability_cannot_stand_as_a_root() -> None:
    # When the issuer delegates with its own (trusted) key, presenting the child alone must not skip the root's
    # checks (revocation, narrowing): a chain starts at a capability without a parent.
    at = datetime.now(UTC)
    issuer = AgentKey.generate()
    root = Capability.issue(
        issuer, issuer="agent:issuer", subject="agent:issuer", action="*", resource="*", subject_key=issuer.public
    )
    child = root.delegate(issuer, subject="agent:worker", action="bus:read", resource="sos:channel:x")
    trusted = {issuer.key_id: issuer.public}
    ok = {"trusted_keys": trusted, "action": "bus:read", "resource": "sos:channel:x", "now": at}
    assert Capability.verify([root, child], **ok) == child
    with pytest.raises(Forbidden):
        Capability.verify([root, child], revoked={root.id}, **ok)
    with pytest.raises(Forbidden):
        Capability.verify([child], revoked={root.id}, **ok)


def test_naive_datetimes_are_refused_up_front() -> None:
    # A naive datetime cannot be compared with the aware times of a chain: refuse it where it comes in.
    key, holder = AgentKey.generate(), AgentKey.generate()
    naive = datetime.now() + timedelta(hours=1)
    with pytest.raises(InvalidArgument, match="timezone"):
        _root(key, holder, expires_at=naive)
    chain = chain3()
    with pytest.raises(InvalidArgument, match="timezone"):
        chain.links[1].delegate(chain.keys[1], subject="agent:d", expires_at=naive - timedelta(minutes=59))
    with pytest.raises(InvalidArgument, match="timezone"):
        chain.verify(now=naive)
    wire = json.loads(chain.links[0].model_dump_json())
    wire["expires_at"] = "2999-01-01T00:00:00"
    with pytest.raises(ValueError, match="timezone"):
        Capability.model_validate(wire)


@pytest.mark.parametrize(
    "fields",
    [{"subject_key": "zz"}, {"subject_key": "ab" * 31}, {"action": "bus"}, {"resource": "a*b"}],
    ids=["subject_key not hex", "subject_key too short", "malformed action", "malformed resource"],
)
def test_a_malformed_signed_link_is_refused_as_forbidden(fields: dict[str, Any]) -> None:
    # A delegator can sign anything; whatever it signed, verification fails with SOS-5004, not another error.
    chain = chain3()
    root, mid, _ = chain.links
    odd = forge(mid, chain.keys[1], **fields)
    grandchild = forge(odd, chain.keys[2], action="bus:read", resource="sos:channel:team-red")
    refused(chain, [root, mid, odd, grandchild])
    if "subject_key" not in fields:  # a bad subject_key only matters to the links it would sign
        refused(chain, [root, mid, odd])


@pytest.mark.parametrize("position", [0, 1, 2])
def test_an_expired_link_anywhere_is_refused(position: int) -> None:
    # The link at ``position`` expires first (its descendants expire with it, as they must not outlive it).
    expiries: list[int | None] = [None, None, None]
    for i in range(position, 3):
        expiries[i] = 10
    chain = chain3(expiries_min=tuple(expiries))
    assert chain.verify(now=chain.at + timedelta(minutes=9)) == chain.links[2]
    error = refused(chain, now=chain.at + timedelta(minutes=10))
    assert error.details["link"] == chain.links[position].id
    assert "expired" in str(error)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_revoked_link_refuses_itself_and_its_descendants(position: int) -> None:
    chain = chain3()
    revoked = {chain.links[position].id}
    error = refused(chain, revoked=revoked)
    assert error.details["link"] == chain.links[position].id
    # links above the revoked one still verify on their own
    if position > 0:
        above = chain.links[:position]
        assert chain.verify(above, revoked=revoked, action="bus:read", resource="sos:channel:team-red") == above[-1]


@pytest.mark.parametrize("position", [0, 1, 2])
def test_exhausted_uses_are_refused(position: int) -> None:
    uses: list[int | None] = [None, None, None]
    for i in range(position, 3):
        uses[i] = 0
    chain = chain3(uses=tuple(uses))
    error = refused(chain)
    assert error.details["link"] == chain.links[position].id
    assert "no uses left" in str(error)


WIDENINGS: dict[str, dict[str, Any]] = {
    "action beyond the parent's verbs": {"action": "bus:*,ledger:read"},
    "action everything": {"action": "*"},
    "resource wider prefix": {"resource": "sos:channel:*"},
    "resource literal outside the prefix": {"resource": "sos:channel:tea"},
    "later expiry": {"expires_at_min": 31},
    "more uses": {"uses": 6},
    "changed constraint": {"constraints": {"max_micros": 501}},
    "constraint as a float": {"constraints": {"max_micros": 500.0}},
}


def _delegate_kwargs(chain: Chain, spec: dict[str, Any]) -> dict[str, Any]:
    kw = dict(spec)
    if "expires_at_min" in kw:
        kw["expires_at"] = chain.at + timedelta(minutes=kw.pop("expires_at_min"))
    return kw


@pytest.mark.parametrize("case", sorted(WIDENINGS))
def test_delegate_refuses_a_widening_child(case: str) -> None:
    chain = chain3()
    mid = chain.links[1]
    with pytest.raises(Forbidden, match="does not narrow"):
        mid.delegate(chain.keys[1], subject="agent:d", **_delegate_kwargs(chain, WIDENINGS[case]))


FORGED_WIDENINGS: dict[str, dict[str, Any]] = {
    "action beyond the parent's verbs": {"action": "bus:*,ledger:read"},
    "action everything": {"action": "*"},
    "resource wider prefix": {"resource": "sos:channel:*"},
    "resource literal outside the prefix": {"resource": "sos:channel:tea"},
    "later expiry": {"expires_at_min": 31},
    "no expiry under an expiring parent": {"expires_at": None},
    "more uses": {"uses_remaining": 6},
    "unlimited uses under a limited parent": {"uses_remaining": None},
    "changed constraint": {"constraints": {"max_micros": 501}},
    "dropped constraint": {"constraints": {}},
    "constraint as a float": {"constraints": {"max_micros": 500.0}},
}


@pytest.mark.parametrize("case", sorted(FORGED_WIDENINGS))
def test_verify_refuses_a_widening_child_forged_with_a_valid_signature(case: str) -> None:
    chain = chain3()
    root, mid, _ = chain.links
    fields = _delegate_kwargs(chain, FORGED_WIDENINGS[case])
    forged = forge(mid, chain.keys[1], **fields)
    # what the forged child names for itself: use an action and resource it claims, to prove the link is refused
    # for widening, not for a mismatch at the leaf
    error = refused(chain, [root, mid, forged], action="bus:write", resource="sos:channel:team-red")
    assert error.details["link"] == forged.id
    assert "does not narrow" in str(error)


PARENT_CONSTRAINTS = {"flag": True, "count": 1, "max_micros": 5, "nested": {"ids": [1, "a"], "on": False}}
TYPE_CHANGES = {
    "true as 1": {"flag": 1},
    "1 as true": {"count": True},
    "1 as 1.0": {"count": 1.0},
    "5 as 5.0": {"max_micros": 5.0},
    "nested 1 as true": {"nested": {"ids": [True, "a"], "on": False}},
    "nested false as 0": {"nested": {"ids": [1, "a"], "on": 0}},
    "nested list item 1 as 1.0": {"nested": {"ids": [1.0, "a"], "on": False}},
}


@pytest.mark.parametrize("case", sorted(TYPE_CHANGES))
def test_a_constraint_is_kept_only_with_its_exact_type(case: str) -> None:
    issuer, holder = AgentKey.generate(), AgentKey.generate()
    root = Capability.issue(
        issuer,
        issuer="agent:issuer",
        subject="agent:a",
        action="bus:*",
        resource="sos:channel:*",
        subject_key=holder.public,
        constraints=PARENT_CONSTRAINTS,
    )
    with pytest.raises(Forbidden, match="constraint"):
        root.delegate(holder, subject="agent:b", constraints=TYPE_CHANGES[case])
    forged = forge(root, holder, constraints={**PARENT_CONSTRAINTS, **TYPE_CHANGES[case]})
    trusted = {issuer.key_id: issuer.public}
    with pytest.raises(Forbidden, match="constraint"):
        Capability.verify([root, forged], trusted_keys=trusted, action="bus:read", resource="sos:channel:x")
    kept = forge(root, holder, constraints=json.loads(json.dumps(PARENT_CONSTRAINTS)))
    assert Capability.verify([root, kept], trusted_keys=trusted, action="bus:read", resource="sos:channel:x") == kept


def test_a_parent_constraint_of_null_cannot_be_dropped() -> None:
    issuer, holder = AgentKey.generate(), AgentKey.generate()
    root = _root(issuer, holder, constraints={"region": None})
    dropped = forge(root, holder, constraints={})
    with pytest.raises(Forbidden, match="constraint"):
        Capability.verify([root, dropped], trusted_keys={issuer.key_id: issuer.public}, **USE)


@pytest.mark.parametrize("uses", [True, False, 1.0, -1, "1"])
def test_uses_is_an_int(uses: Any) -> None:
    issuer, holder = AgentKey.generate(), AgentKey.generate()
    with pytest.raises(InvalidArgument):
        _root(issuer, holder, uses=uses)
    root = _root(issuer, holder, uses=5)
    with pytest.raises(InvalidArgument):
        root.delegate(holder, subject="agent:b", uses=uses)
    wire = {**json.loads(root.model_dump_json()), "uses_remaining": uses}
    with pytest.raises(ValidationError):
        Capability.model_validate(wire)


def test_the_forged_child_would_verify_if_it_narrowed() -> None:
    chain = chain3()
    root, mid, _ = chain.links
    honest = forge(mid, chain.keys[1], action="bus:write", resource="sos:channel:team-red")
    assert chain.verify([root, mid, honest], action="bus:write") == honest


def test_action_or_resource_outside_the_leaf_is_refused() -> None:
    chain = chain3()
    error = refused(chain, action="bus:write")  # the root and mid allow it; the leaf does not
    assert error.details["link"] == chain.links[2].id
    refused(chain, resource="sos:channel:team-blue")
    refused(chain, resource="sos:channel:team-red-2")
    refused(chain, action="ledger:read")
    with pytest.raises(Forbidden, match="no capability"):
        chain.verify([])


def test_delegate_may_add_constraints_and_narrow_everything() -> None:
    chain = chain3()
    mid = chain.links[1]
    child = mid.delegate(
        chain.keys[1],
        subject="agent:d",
        action="bus:read",
        resource="sos:channel:team-blue",
        expires_at=chain.at + timedelta(minutes=5),
        uses=1,
        constraints={"max_micros": 500, "extra": True},
    )
    assert child.constraints == {"max_micros": 500, "extra": True}
    assert chain.verify([*chain.links[:2], child], resource="sos:channel:team-blue") == child


# --- property: random delegation chains never widen -----------------------------------------------------------------

ACTION_VOCAB = ["bus:*", "bus:read", "bus:write", "ledger:read", "ledger:*", "*"]
# Concrete actions: every listed verb plus one no pattern names per namespace and a namespace none names, so a
# pattern set covering more than another always has a witness here.
CONCRETE_ACTIONS = ["bus:read", "bus:write", "bus:other", "ledger:read", "ledger:write", "ledger:other", "other:x"]
# Resource patterns are built over "ab" with bodies of at most 3 characters; every string over "abc" of up to 4
# characters ("c" is in no pattern) holds a witness of any difference between two such patterns.
RESOURCES = ["".join(p) for n in range(5) for p in product("abc", repeat=n)]
CONSTRAINT_KEYS = ["k1", "k2", "k3"]


def _allows_action(pattern_set: str, action: str) -> bool:
    return any(fnmatchcase(action, p.strip()) for p in pattern_set.split(","))


def _allows_resource(pattern: str, resource: str) -> bool:
    return fnmatchcase(resource, pattern)


def _allows(link: Capability, action: str, resource: str) -> bool:
    return _allows_action(link.action, action) and _allows_resource(link.resource, resource)


def _widens(child: dict[str, Any], parent: Capability) -> bool:
    """The independent model of "child would widen parent", over the witness universes."""
    if any(_allows_action(child["action"], a) and not _allows_action(parent.action, a) for a in CONCRETE_ACTIONS):
        return True
    if any(_allows_resource(child["resource"], r) and not _allows_resource(parent.resource, r) for r in RESOURCES):
        return True
    if parent.expires_at is not None and (child["expires_at"] is None or child["expires_at"] > parent.expires_at):
        return True
    if parent.uses_remaining is not None and (
        child["uses_remaining"] is None or child["uses_remaining"] > parent.uses_remaining
    ):
        return True
    kept = child["constraints"]
    return any(k not in kept or json.dumps(kept[k]) != json.dumps(v) for k, v in parent.constraints.items())


action_sets = st.lists(st.sampled_from(ACTION_VOCAB), min_size=1, max_size=3, unique=True).map(",".join)
resource_patterns = st.builds(
    lambda body, star: body + "*" if star or not body else body, st.text("ab", max_size=3), st.booleans()
)
expiry_minutes = st.none() | st.integers(1, 600)
use_counts = st.none() | st.integers(0, 9)
# 1, True and 1.0 are equal to Python's ==, and must not stand in for each other.
constraint_maps = st.dictionaries(st.sampled_from(CONSTRAINT_KEYS), st.sampled_from([1, 2, True, 1.0]), max_size=2)
mostly = st.sampled_from([True, True, True, False])
steps = st.fixed_dictionaries(
    {
        "action": action_sets,
        "resource": resource_patterns,
        "expiry": expiry_minutes,
        "uses": use_counts,
        "constraints": constraint_maps,
        "forge": st.booleans(),
        # mostly derived from the parent's fields, so that deep chains of accepted delegations occur too
        "derive_action": mostly,
        "derive_resource": mostly,
        "derive_limits": mostly,
        "mask": st.integers(0, 2**16 - 1),
        "suffix": st.text("ab", max_size=2),
    }
)
REFINE = {"*": "bus:*", "bus:*": "bus:read", "ledger:*": "ledger:read"}


def _derived_action(parent: str, mask: int) -> str:
    """Some of the parent's patterns (mask bits 0-7), some refined one step (bits 8-15)."""
    parts = parent.split(",")
    chosen = [p for i, p in enumerate(parts) if mask >> i & 1] or parts[:1]
    return ",".join(REFINE.get(p, p) if mask >> (8 + i) & 1 else p for i, p in enumerate(chosen))


def _derived_resource(parent: str, suffix: str, star: bool) -> str:
    """The parent's prefix extended by ``suffix`` (a literal or a prefix), or the parent's literal."""
    if not parent.endswith("*"):
        return parent
    body = parent[:-1] + suffix
    return body + "*" if star or not body else body


probes = st.lists(st.tuples(st.sampled_from(CONCRETE_ACTIONS), st.sampled_from(RESOURCES)), max_size=6)


def _derived_limits(step: dict[str, Any], parent: Capability, base: datetime) -> dict[str, Any]:
    """Expiry and uses no larger than the parent's, constraints only added."""
    expiry, uses = step["expiry"], step["uses"]
    if expiry is not None and parent.expires_at is not None:
        expiry = min(expiry, int((parent.expires_at - base).total_seconds() // 60))
    if uses is not None and parent.uses_remaining is not None:
        uses = min(uses, parent.uses_remaining)
    constraints = {k: v for k, v in step["constraints"].items() if k not in parent.constraints}
    return {**step, "expiry": expiry, "uses": uses, "constraints": constraints}


def _grow(chain: list[Capability], keys: list[AgentKey], step: dict[str, Any], base: datetime) -> bool:
    """Try one delegation from the chain's leaf; returns whether a forged (widening) link was appended."""
    parent, parent_key = chain[-1], keys[-1]
    if step["derive_action"]:
        step = {**step, "action": _derived_action(parent.action, step["mask"])}
    if step["derive_resource"]:
        step = {**step, "resource": _derived_resource(parent.resource, step["suffix"], step["mask"] & 1 == 1)}
    if step["derive_limits"]:
        step = _derived_limits(step, parent, base)
    expires_at = base + timedelta(minutes=step["expiry"]) if step["expiry"] is not None else None
    effective = {
        "action": step["action"],
        "resource": step["resource"],
        "expires_at": expires_at or parent.expires_at,
        "uses_remaining": step["uses"] if step["uses"] is not None else parent.uses_remaining,
        "constraints": {**parent.constraints, **step["constraints"]},
    }
    child_key = AgentKey.generate()
    kwargs = {k: step[k] for k in ("action", "resource", "uses", "constraints")}
    try:
        child = parent.delegate(
            parent_key, subject=f"agent:s{len(chain)}", subject_key=child_key.public, expires_at=expires_at, **kwargs
        )
    except Forbidden:
        assert _widens(effective, parent), f"delegate refused a narrowing child: {effective} of {parent}"
        if not step["forge"]:
            return False
        forged = forge(parent, parent_key, subject_key=child_key.public.hex, **effective)
        chain.append(forged)
        keys.append(child_key)
        return True
    assert not _widens(effective, parent), f"delegate accepted a widening child: {child} of {parent}"
    chain.append(child)
    keys.append(child_key)
    return False


@settings(max_examples=200, deadline=None)
@given(root=steps, children=st.lists(steps, min_size=1, max_size=5), probe=probes)
def test_random_chains_never_allow_more_than_their_root(
    root: dict[str, Any], children: list[dict[str, Any]], probe: list[tuple[str, str]]
) -> None:
    base = datetime.now(UTC)
    issuer, first = AgentKey.generate(), AgentKey.generate()
    chain = [
        Capability.issue(
            issuer,
            issuer="agent:issuer",
            subject="agent:s0",
            action=root["action"],
            resource=root["resource"],
            subject_key=first.public,
            expires_at=base + timedelta(minutes=root["expiry"]) if root["expiry"] is not None else None,
            uses=root["uses"],
            constraints=root["constraints"],
        )
    ]
    keys = [first]
    forged = False
    for step in children:
        forged = _grow(chain, keys, step, base) or forged
    leaf, top = chain[-1], chain[0]
    pairs = list(product(CONCRETE_ACTIONS, RESOURCES))
    beyond_root = [(a, r) for a, r in pairs if _allows(leaf, a, r) and not _allows(top, a, r)]
    within_leaf = [(a, r) for a, r in pairs if _allows(leaf, a, r)]
    exhausted = any(c.uses_remaining == 0 for c in chain)
    trusted = {issuer.key_id: issuer.public}
    for action, resource in [*probe, *beyond_root[:4], *within_leaf[:2]]:
        try:
            Capability.verify(chain, trusted_keys=trusted, action=action, resource=resource, now=base)
        except Forbidden:
            # refusals are expected for forged or exhausted chains and outside the leaf; nothing else
            assert forged or exhausted or not _allows(leaf, action, resource)
            continue
        assert _allows(top, action, resource), f"{action} on {resource!r} verified beyond the root {top}"
        assert not forged
        assert not exhausted


# --- the Capabilities service, on every backend ---------------------------------------------------------------------


def _root(key: AgentKey, subject_key: AgentKey, **kw: Any) -> Capability:
    kw.setdefault("action", "bus:*")
    kw.setdefault("resource", "sos:channel:*")
    return Capability.issue(key, issuer="agent:issuer", subject="agent:a", subject_key=subject_key.public, **kw)


USE = {"action": "bus:write", "resource": "sos:channel:jobs"}


@pytest.mark.anyio
async def test_trust_distrust_and_key_rotation(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    old, new, holder = AgentKey.generate(), AgentKey.generate(), AgentKey.generate()
    by_old, by_new = _root(old, holder), _root(new, holder)
    with pytest.raises(Forbidden, match="trusted issuer"):
        await caps.check([by_old], **USE)
    caps.trust(old.public)
    caps.trust(new.public)  # rotation: both trusted while capabilities signed by the old key are still out there
    assert await caps.check([by_old], **USE) == by_old
    assert await caps.check([by_new], **USE) == by_new
    caps.distrust(old.key_id)  # retire the old key
    with pytest.raises(Forbidden, match="trusted issuer"):
        await caps.check([by_old], **USE)
    with pytest.raises(Forbidden, match="trusted issuer"):
        await caps.use([by_old], **USE)
    assert await caps.use([by_new], **USE) == by_new
    # trust is per tenant
    with pytest.raises(Forbidden, match="trusted issuer"):
        await kernel.tenant("other").capabilities.check([by_new], **USE)


@pytest.mark.anyio
async def test_use_spends_every_limited_link_all_or_none(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    issuer, holder, worker = AgentKey.generate(), AgentKey.generate(), AgentKey.generate()
    caps.trust(issuer.public)
    root = _root(issuer, holder, uses=3)
    child = root.delegate(holder, subject="agent:w", subject_key=worker.public, uses=1)
    assert await caps.use([root, child], **USE) == child  # root 2, child 0
    with pytest.raises(Forbidden, match="no uses left"):
        await caps.use([root, child], **USE)
    # the refused use spent nothing of the root: it still has exactly 2
    assert await caps.use([root], **USE) == root
    assert await caps.use([root], **USE) == root
    with pytest.raises(Forbidden, match="no uses left"):
        await caps.use([root], **USE)
    # a sibling with its own counter is bounded by the exhausted root
    sibling = root.delegate(holder, subject="agent:v", uses=3)
    with pytest.raises(Forbidden, match="no uses left"):
        await caps.use([root, sibling], **USE)
    # counters are per tenant
    other = kernel.tenant("other").capabilities
    other.trust(issuer.public)
    assert await other.use([root], **USE) == root


@pytest.mark.anyio
async def test_unlimited_links_are_not_counted(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    issuer, holder = AgentKey.generate(), AgentKey.generate()
    caps.trust(issuer.public)
    root = _root(issuer, holder)
    child = root.delegate(holder, subject="agent:w", uses=2)
    for _ in range(5):
        await caps.use([root], **USE)
    await caps.use([root, child], **USE)
    await caps.use([root, child], **USE)
    with pytest.raises(Forbidden):
        await caps.use([root, child], **USE)
    await caps.use([root], **USE)


@pytest.mark.anyio
async def test_check_does_not_spend(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    issuer, holder = AgentKey.generate(), AgentKey.generate()
    caps.trust(issuer.public)
    root = _root(issuer, holder, uses=2)
    for _ in range(10):
        assert await caps.check([root], **USE) == root
    await caps.use([root], **USE)
    await caps.use([root], **USE)
    with pytest.raises(Forbidden):
        await caps.use([root], **USE)
    with pytest.raises(Forbidden):
        await caps.check([root], action="ledger:read", resource="sos:channel:jobs")


@pytest.mark.anyio
async def test_revoking_an_ancestor_refuses_every_descendant(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    issuer, a, b = AgentKey.generate(), AgentKey.generate(), AgentKey.generate()
    caps.trust(issuer.public)
    root = _root(issuer, a)
    mid = root.delegate(a, subject="agent:b", subject_key=b.public)
    leaf = mid.delegate(b, subject="agent:c", resource="sos:channel:jobs")
    sibling = root.delegate(a, subject="agent:d")
    assert await caps.use([root, mid, leaf], **USE) == leaf
    await caps.revoke(mid.id)
    for chain in ([root, mid, leaf], [root, mid]):
        with pytest.raises(Forbidden, match="revoked"):
            await caps.check(chain, **USE)
        with pytest.raises(Forbidden, match="revoked"):
            await caps.use(chain, **USE)
    assert await caps.use([root, sibling], **USE) == sibling  # a sibling branch is untouched
    await caps.revoke(root.id)
    with pytest.raises(Forbidden, match="revoked"):
        await caps.use([root, sibling], **USE)
    await caps.revoke(root.id)  # idempotent
    with pytest.raises(InvalidArgument):
        await caps.revoke("")
    # revocation is per tenant
    other = kernel.tenant("other").capabilities
    other.trust(issuer.public)
    assert await other.check([root, sibling], **USE) == sibling


async def _outcomes(caps: Any, chain: list[Capability], times: int, **use: str) -> list[str]:
    out = []
    for _ in range(times):
        try:
            await caps.use(chain, **(use or USE))
        except Forbidden as exc:
            out.append(exc.code)
        else:
            out.append("ok")
    return out


SIDE = {"action": "bus:write", "resource": "sos:channel:side-x"}


@pytest.mark.anyio
async def test_a_link_with_a_colliding_id_cannot_reset_its_holders_use_limit(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    issuer, mallory = AgentKey.generate(), AgentKey.generate()
    caps.trust(issuer.public)
    limited = _root(issuer, mallory, uses=1)
    unrelated = _root(issuer, mallory, resource="sos:channel:side-*")  # no use limit
    # Mallory signs, under the unrelated grant, a child that takes the limited grant's id and a huge limit.
    seed = forge(unrelated, mallory, id=limited.id, subject="agent:a", uses_remaining=1_000_000)
    assert await caps.use([unrelated, seed], **SIDE) == seed
    assert await _outcomes(caps, [limited], 20) == ["ok"] + ["SOS-5004"] * 19
    # and spending the limited grant first does not let the seed reset it afterwards
    again = _root(issuer, mallory, uses=1)
    assert await _outcomes(caps, [again], 1) == ["ok"]
    await caps.use([unrelated, forge(unrelated, mallory, id=again.id, subject="agent:a", uses_remaining=9)], **SIDE)
    assert await _outcomes(caps, [again], 3) == ["SOS-5004"] * 3


@pytest.mark.anyio
async def test_a_link_with_a_colliding_id_cannot_spend_a_victims_uses(kernel: sos_kernel.Kernel) -> None:
    caps = kernel.tenant("acme").capabilities
    issuer, mallory = AgentKey.generate(), AgentKey.generate()
    caps.trust(issuer.public)
    grant = Capability.issue(
        issuer, issuer="agent:issuer", subject="agent:v", action="bus:*", resource="sos:channel:*", uses=5
    )
    unrelated = _root(issuer, mallory, resource="sos:channel:side-*")
    # One use of a child carrying the victim's id and a limit of 1 would leave the victim's counter at 0.
    drain = forge(unrelated, mallory, id=grant.id, subject="agent:a", uses_remaining=1)
    assert await _outcomes(caps, [unrelated, drain], 3, **SIDE) == ["ok", "SOS-5004", "SOS-5004"]
    assert await _outcomes(caps, [grant], 6) == ["ok"] * 5 + ["SOS-5004"]


@pytest.mark.anyio
async def test_revocation_and_uses_persist_across_kernels(kernel_url: str, implements: Implements) -> None:
    requires(implements, durable=True)
    issuer, holder = AgentKey.generate(), AgentKey.generate()
    root = _root(issuer, holder, uses=2)
    revoked = _root(issuer, holder)
    async with sos_kernel.open(kernel_url) as kernel:
        caps = kernel.tenant("acme").capabilities
        caps.trust(issuer.public)
        await caps.use([root], **USE)
        await caps.revoke(revoked.id)
    async with sos_kernel.open(kernel_url) as kernel:
        caps = kernel.tenant("acme").capabilities
        caps.trust(issuer.public)
        await caps.use([root], **USE)
        with pytest.raises(Forbidden, match="no uses left"):
            await caps.use([root], **USE)
        with pytest.raises(Forbidden, match="revoked"):
            await caps.check([revoked], **USE)


# --- uses spent from several processes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_uses_are_spent_exactly_once_across_processes(kernel_url: str, implements: Implements, tmp_path: Path) -> None:
    requires(implements, multi_process=True)
    uses, workers, tries = 7, 4, 5
    issuer, holder, worker_key = AgentKey.generate(), AgentKey.generate(), AgentKey.generate()
    root = _root(issuer, holder, uses=uses)
    leaf = root.delegate(holder, subject="agent:worker", subject_key=worker_key.public, resource="sos:channel:jobs")
    chain_json = json.dumps([json.loads(c.model_dump_json()) for c in (root, leaf)])

    async def prepare() -> None:
        async with sos_kernel.open(kernel_url) as kernel:  # creates the schema before the workers race
            caps = kernel.tenant("acme").capabilities
            caps.trust(issuer.public)
            assert await caps.check([root, leaf], **USE) == leaf

    anyio.run(prepare)
    go = tmp_path / "go"
    procs = [
        WorkerProcess(WORKER, kernel_url, "acme", issuer.public.hex, chain_json, str(tries), str(go))
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            proc.wait_ready()
        go.touch()
        outcomes = Counter(line for proc in procs for line in proc.finish())
    finally:
        for proc in procs:
            proc.stop()
    assert outcomes == {"ok": uses, "SOS-5004": workers * tries - uses}

    async def after() -> None:
        async with sos_kernel.open(kernel_url) as kernel:
            caps = kernel.tenant("acme").capabilities
            caps.trust(issuer.public)
            with pytest.raises(Forbidden, match="no uses left"):
                await caps.use([root], **USE)

    anyio.run(after)


def test_canonical_bytes_match_the_models_json_form() -> None:
    import json as _json
    from datetime import UTC, datetime, timedelta, timezone

    key = AgentKey.generate()
    for expires in (
        None,
        datetime.now(UTC) + timedelta(hours=1),
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5))),
    ):
        cap = Capability.issue(
            key,
            issuer="tenant:acme",
            subject="agent:a",
            action="bus:*",
            resource="x/*",
            expires_at=expires,
            uses=3,
            constraints={"b": 1, "a": "z", "nested": {"y": 2, "x": [1]}},
            subject_key=key.public,
        )
        body = cap.model_dump(mode="json", exclude={"signature"})
        expected = _json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert cap.canonical() == expected


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63),
        st.text(),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(constraints=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_canonical_form_is_sorted_compact_json_for_any_constraints(constraints: dict[str, Any]) -> None:
    import json as _json

    key = AgentKey.generate()
    cap = Capability.issue(
        key, issuer="tenant:acme", subject="agent:a", action="bus:*", resource="x/*", constraints=constraints
    )
    body = cap.model_dump(mode="json", exclude={"signature"})
    assert cap.canonical() == _json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("bad", ["", "zz" * 32, "ab" * 31, "AB" * 33, "not hex at all"])
def test_public_key_from_hex_refuses_bad_keys_every_time(bad: str) -> None:
    # Parsed keys are shared between calls; a refusal must not be remembered as a key.
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            PublicKey.from_hex(bad)


def test_public_key_from_hex_gives_the_key_its_id_and_lower_case_hex() -> None:
    key = AgentKey.generate().public
    parsed = PublicKey.from_hex(key.hex.upper())
    assert parsed == key
    assert parsed.key_id == key_id_of(bytes.fromhex(key.hex))
    assert PublicKey.from_hex(key.hex) == parsed
