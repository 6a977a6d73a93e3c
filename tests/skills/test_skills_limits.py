"""Per-tenant storage bounds of skills, on every backend and through the remote client: card bytes, versions per
skill, skill ids per tenant and per author; a refused publish is SOS-4010 and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

import sos_kernel
from sos_kernel import skills as skills_module
from sos_kernel.errors import LimitExceeded

from ..conftest import Connect
from .test_skills_conformance import skill

pytestmark = pytest.mark.anyio


@pytest.fixture
async def authors(kernel: sos_kernel.Kernel, connect: Connect) -> dict[str, Any]:
    await kernel.tenants.create("acme", plan="growth")
    tokens = kernel.tenant("acme").tokens
    return {n: await connect((await tokens.issue(agent=f"agent:{n}")).secret) for n in ("bob", "alice")}


def card(author: str, skill_id: str, version: str = "1.0.0", **kw: Any) -> dict[str, Any]:
    return skill(skill_id, version, author_agent=f"agent:{author}", **kw)


async def _limit(call: Any) -> dict[str, Any]:
    with pytest.raises(LimitExceeded) as info:
        await call
    assert info.value.code == "SOS-4010"
    assert "nothing was written" in str(info.value)
    return dict(info.value.details)


async def test_a_card_over_its_byte_bound_is_refused(authors: dict[str, Any], kernel: sos_kernel.Kernel) -> None:
    bob = authors["bob"].skills
    big = {"type": "object", "description": "z" * skills_module.SKILL_CARD_BYTES_MAX}
    details = await _limit(bob.publish(card("bob", "big-schema", input_schema=big)))
    assert details["limit"] == "SKILL_CARD_BYTES_MAX"
    assert await kernel.tenant("acme").skills.versions("big-schema") == []
    fits = {"type": "object", "description": "z" * (skills_module.SKILL_CARD_BYTES_MAX // 2)}
    assert (await bob.publish(card("bob", "big-schema", input_schema=fits))).id == "big-schema"


async def test_versions_of_one_skill_are_bounded_and_a_replay_still_passes(
    authors: dict[str, Any], kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(skills_module, "SKILL_VERSIONS_MAX", 3)
    bob = authors["bob"].skills
    for i in range(3):
        await bob.publish(card("bob", "flood", f"1.0.{i}"))
    details = await _limit(bob.publish(card("bob", "flood", "1.0.3")))
    assert (details["limit"], details["value"]) == ("SKILL_VERSIONS_MAX", 3)
    assert sorted(await kernel.tenant("acme").skills.versions("flood")) == ["1.0.0", "1.0.1", "1.0.2"]
    assert (await bob.publish(card("bob", "flood", "1.0.1"))).version == "1.0.1"  # a replay is no new version


async def test_one_author_fills_its_share_and_another_still_publishes(
    authors: dict[str, Any], kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob fills his share of the tenant's skill ids; alice still publishes hers, up to the tenant's bound."""
    monkeypatch.setattr(skills_module, "SKILLS_PER_TENANT_MAX", 4)
    monkeypatch.setattr(skills_module, "SKILLS_PER_AUTHOR_MAX", 2)
    bob, alice = authors["bob"].skills, authors["alice"].skills
    for i in range(2):
        await bob.publish(card("bob", f"bob-{i}"))
    details = await _limit(bob.publish(card("bob", "bob-2")))
    assert (details["limit"], details["value"]) == ("SKILLS_PER_AUTHOR_MAX", 2)
    await bob.publish(card("bob", "bob-0", "2.0.0"))  # a new version of his own skill is no new id
    for i in range(2):
        await alice.publish(card("alice", f"alice-{i}"))
    admin = kernel.tenant("acme").skills
    details = await _limit(admin.publish(card("carol", "carol-0")))
    assert (details["limit"], details["value"]) == ("SKILLS_PER_TENANT_MAX", 4)
    assert await admin.versions("bob-2") == []
    assert await admin.versions("carol-0") == []
