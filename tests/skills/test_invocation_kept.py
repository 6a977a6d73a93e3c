"""What an invocation keeps per version (its card, split, binding and message parts) never hides a change.

A version's content never changes, so keeping it is safe; which version a range or "latest" picks does change, and
is chosen from a fresh read on every call: a version published by another process is invoked at once. The binding
and the message are the bytes ``json.dumps`` writes, whatever the caller's and tenant's strings hold.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import sos_kernel
from sos_kernel import skills as skills_module
from sos_kernel.errors import IdempotencyConflict

from ..conftest import Api, requires
from .test_invocation_step import FREE, _messages, _prepare

pytestmark = pytest.mark.anyio

ODD = 'q"\\ é\u2028\n\t\x01 ✓'
"""Characters JSON escapes (quote, backslash, controls) and ones it writes as they are (non-ASCII)."""


def _next(card: dict[str, Any], version: str, price: int) -> dict[str, Any]:
    return {**card, "version": version, "commerce": {**card["commerce"], "price_per_call_micros": price}}


async def _latest(skills: Any, invocation_id: str, version: str | None = None) -> tuple[str, int]:
    invoked = await skills.record_invocation(
        "paid", version, caller="agent:caller", tenant="default", invocation_id=invocation_id
    )
    return invoked.version, invoked.price_micros


async def test_a_new_version_is_invoked_at_once_after_kept_ones(api: Api) -> None:
    skills = await _prepare(api)
    card = (await skills.get("paid")).model_dump(mode="json", exclude_none=True)
    card = {k: v for k, v in card.items() if k not in ("earnings", "verification")}
    assert await _latest(skills, "a1") == ("1.0.0", 1_000)
    assert await _latest(skills, "a2", "^1") == ("1.0.0", 1_000)
    await skills.publish(_next(card, "1.1.0", 2_000))
    assert await _latest(skills, "b1") == ("1.1.0", 2_000)
    assert await _latest(skills, "b2", "^1") == ("1.1.0", 2_000)
    assert await _latest(skills, "b3", "1.0.0") == ("1.0.0", 1_000)  # an exact version stays itself
    assert await _latest(skills, "a1", "1.0.0") == ("1.0.0", 1_000)  # a retry names the version it bound
    with pytest.raises(IdempotencyConflict):  # "latest" is 1.1.0 now: another outcome for a1
        await _latest(skills, "a1")


async def test_a_version_published_by_another_process_is_invoked_at_once(kernel_url: str, implements: Any) -> None:
    requires(implements, multi_process=True)
    async with sos_kernel.open(kernel_url) as kernel, sos_kernel.open(kernel_url) as other:
        skills = await _prepare(kernel)
        card = (await skills.get("paid")).model_dump(mode="json", exclude_none=True)
        card = {k: v for k, v in card.items() if k not in ("earnings", "verification")}
        assert await _latest(skills, "a1") == ("1.0.0", 1_000)
        assert await _latest(skills, "a2", "~1.0") == ("1.0.0", 1_000)
        await other.skills.publish(_next(card, "1.0.1", 3_000))
        assert await _latest(skills, "b1") == ("1.0.1", 3_000)
        assert await _latest(skills, "b2", "~1.0") == ("1.0.1", 3_000)
        assert (await kernel.ledger.balance("agent:caller", "USD")).posted == 1_000_000 - 2_000 - 6_000


async def test_the_message_and_binding_carry_any_caller_and_tenant_exactly(kernel: sos_kernel.Kernel) -> None:
    skills = await _prepare(kernel)
    caller, tenant = f"agent:{ODD}", f"t{ODD}"
    first = await skills.record_invocation("free", caller=caller, tenant=tenant, invocation_id="odd")
    again = await skills.record_invocation("free", caller=caller, tenant=tenant, invocation_id="odd")
    assert (first.replayed, again.replayed) == (False, True)
    with pytest.raises(IdempotencyConflict):
        await skills.record_invocation("free", caller=caller, tenant=f"{tenant}x", invocation_id="odd")
    (message,) = [m for m in await _messages(kernel) if m.payload.invocation_id == "odd"]
    assert (message.payload.caller, message.payload.tenant, message.payload.skill_id) == (caller, tenant, "free")
    assert message.payload.price_micros == 0


async def test_a_binding_written_as_json_dumps_writes_it_replays(kernel: sos_kernel.Kernel) -> None:
    """Files keep the bindings earlier releases wrote with ``json.dumps``: the same invocation still matches them."""
    skills = await _prepare(kernel)
    caller, tenant = "agent:caller", f"t{ODD}"
    binding = json.dumps([FREE["id"], FREE["version"], caller, tenant, 0], separators=(",", ":"))
    await kernel.backend.skills.bind_invocation(skills.tenant, "old", binding)
    invoked = await skills.record_invocation("free", caller=caller, tenant=tenant, invocation_id="old")
    assert invoked.version == FREE["version"]


async def test_forgetting_kept_versions_changes_no_outcome(
    kernel: sos_kernel.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(skills_module, "PRICED_CARDS_MAX", 1)
    monkeypatch.setattr(skills_module, "CHOSEN_VERSIONS_MAX", 1)
    skills = await _prepare(kernel)
    for i in range(3):
        for skill_id, version, price in (("paid", None, 1_000), ("free", "*", 0), ("paid", "1.0.0", 1_000)):
            invoked = await skills.record_invocation(
                skill_id, version, caller="agent:caller", tenant="default", invocation_id=f"{skill_id}{version}{i}"
            )
            assert (invoked.skill_id, invoked.version, invoked.price_micros) == (skill_id, "1.0.0", price)
    assert (await kernel.ledger.balance("agent:caller", "USD")).posted == 1_000_000 - 6 * 1_000
