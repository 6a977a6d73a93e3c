"""Who may reach which namespace: agents own agent:<name>/..., shared namespaces need the scopes, grants and admin
lift the rest; on every backend and through the remote client."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import sos_kernel
from sos_kernel.errors import Forbidden, InvalidArgument, LimitExceeded, NotFound, SOSError
from sos_kernel.identity import AgentKey, Capability
from sos_kernel.memory import MemoryLimits
from sos_kernel.memory.store import Quota, Space, StoredMemory

from ..conftest import Connect

pytestmark = pytest.mark.anyio


@pytest.fixture
async def crew(kernel: sos_kernel.Kernel, connect: Connect) -> dict[str, Any]:
    """Tenant ``acme``: sessions of agent:alice and agent:bob (default agent scopes), a read-only agent:carol, an
    agentless memory:admin token, and an issuer key the tenant trusts."""
    await kernel.tenants.create("acme", plan="growth")
    tokens = kernel.tenant("acme").tokens
    crew: dict[str, Any] = {}
    for name in ("alice", "bob"):
        crew[name] = await connect((await tokens.issue(agent=f"agent:{name}")).secret)
    crew["carol"] = await connect((await tokens.issue(agent="agent:carol", scopes=["memory:read"])).secret)
    crew["keeper"] = await connect((await tokens.issue(scopes=["memory:admin", "memory:read", "memory:write"])).secret)
    crew["issuer"] = AgentKey.generate()
    kernel.tenant("acme").capabilities.trust(crew["issuer"].public)
    await crew["alice"].memory.remember("agent:alice/notes", "alice's private plan", id="plan", vector=[1.0, 0.0])
    await crew["alice"].memory.remember("team", "the shared roadmap", id="roadmap", vector=[1.0, 0.0])
    return crew


async def _denied(call: Any) -> str:
    with pytest.raises(Forbidden) as info:
        await call
    return info.value.code


async def test_an_agents_namespaces_are_its_own(crew: dict[str, Any], kernel: sos_kernel.Kernel) -> None:
    bob = crew["bob"].memory
    for call in (
        bob.recall("agent:alice/notes", [1.0, 0.0]),
        bob.get("agent:alice/notes", "plan"),
        bob.list("agent:alice/notes"),
        bob.remember("agent:alice/notes", "planted", id="plan2", vector=[1.0, 0.0]),
        bob.remember_many("agent:alice", [{"text": "planted", "vector": [1.0, 0.0]}]),
        bob.forget("agent:alice/notes", "plan"),
    ):
        assert await _denied(call) == "SOS-5004"
    # bob cannot even learn that alice's namespace exists
    assert [n.name for n in await bob.namespaces()] == ["team"]
    assert sorted(n.name for n in await crew["alice"].memory.namespaces()) == ["agent:alice/notes", "team"]
    # bob's own namespace is his, and ids there cannot collide with alice's
    await bob.remember("agent:bob/notes", "bob's plan", id="plan", vector=[0.0, 1.0])
    assert (await crew["alice"].memory.get("agent:alice/notes", "plan")).text == "alice's private plan"
    assert (await kernel.tenant("acme").memory.get("agent:alice/notes", "plan")).text == "alice's private plan"


async def test_shared_namespaces_need_the_scopes(crew: dict[str, Any]) -> None:
    carol = crew["carol"].memory
    assert [h.id for h in await carol.recall("team", [1.0, 0.0])] == ["roadmap"]
    assert await _denied(carol.remember("team", "graffiti", vector=[1.0, 0.0])) == "SOS-5004"
    assert await _denied(carol.forget("team", "roadmap")) == "SOS-5004"
    await crew["bob"].memory.remember("team", "bob adds to the roadmap", vector=[0.5, 0.5])
    assert (await carol.get("team", "roadmap")).text == "the shared roadmap"


async def test_memory_admin_reaches_every_namespace(crew: dict[str, Any]) -> None:
    keeper = crew["keeper"].memory
    assert (await keeper.get("agent:alice/notes", "plan")).text == "alice's private plan"
    assert sorted(n.name for n in await keeper.namespaces()) == ["agent:alice/notes", "team"]
    assert await keeper.forget("agent:alice/notes", "plan") is True
    with pytest.raises(NotFound):
        await crew["alice"].memory.get("agent:alice/notes", "plan")


async def test_a_capability_grant_opens_one_agents_namespace_to_another(crew: dict[str, Any]) -> None:
    def grant(action: str, resource: str, **kw: Any) -> Capability:
        return Capability.issue(
            crew["issuer"], issuer="tenant:acme", subject="agent:bob", action=action, resource=resource, **kw
        )

    read = grant("memory:read", "memory:agent:alice/*")
    bob = crew["bob"].memory
    assert (await bob.get("agent:alice/notes", "plan", capability=[read])).text == "alice's private plan"
    assert [h.id for h in await bob.recall("agent:alice/notes", [1.0, 0.0], capability=[read])] == ["plan"]
    # a read grant does not write, and a grant is no right of whoever else presents it
    assert await _denied(bob.remember("agent:alice/notes", "x", vector=[1.0, 0.0], capability=[read])) == "SOS-5004"
    assert await _denied(crew["carol"].memory.get("agent:alice/notes", "plan", capability=[read])) == "SOS-5004"
    once = grant("memory:write", "memory:agent:alice/notes", uses=1)
    await bob.remember("agent:alice/notes", "a note from bob", id="from-bob", vector=[0.0, 1.0], capability=[once])
    assert await _denied(bob.forget("agent:alice/notes", "from-bob", capability=[once])) == "SOS-5004"
    other = grant("memory:read", "memory:agent:alice/diary")
    assert await _denied(bob.list("agent:alice/notes", capability=[other])) == "SOS-5004"


async def test_a_grant_presented_by_another_agent_spends_none_of_its_uses(crew: dict[str, Any]) -> None:
    twice = Capability.issue(
        crew["issuer"],
        issuer="tenant:acme",
        subject="agent:bob",
        action="memory:read",
        resource="memory:agent:alice/*",
        uses=2,
    )
    for _ in range(3):  # carol holds bob's chain: refused, and bob's uses stay whole
        assert await _denied(crew["carol"].memory.get("agent:alice/notes", "plan", capability=[twice])) == "SOS-5004"
    bob = crew["bob"].memory
    for _ in range(2):
        assert (await bob.get("agent:alice/notes", "plan", capability=[twice])).text == "alice's private plan"
    assert await _denied(bob.get("agent:alice/notes", "plan", capability=[twice])) == "SOS-5004"


LOOK_ALIKES = (
    "Agent:alice/notes",
    "AGENT:alice/notes",
    "agent:Alice/notes",
    "TEAM",
    "team/../agent:alice/notes",
    "agent:alice/./notes",
    "agent:bob/../../agent:alice/notes",
)


async def _refused(call: Any) -> SOSError:
    with pytest.raises(InvalidArgument) as info:
        await call
    return info.value


async def test_a_namespace_is_in_the_form_policies_match_or_refused(crew: dict[str, Any]) -> None:
    """A case variant or a '.'/'..' segment is no shared namespace: every session gets SOS-4005 naming the rule,
    nothing is written, and alice's listing shows only her own and the shared names."""
    bob = crew["bob"].memory
    for namespace in LOOK_ALIKES:
        for call in (
            bob.remember(namespace, "planted password", id="plant", vector=[1.0, 0.0]),
            bob.remember_many(namespace, [{"text": "planted", "vector": [1.0, 0.0]}]),
            bob.recall(namespace, [1.0, 0.0]),
            bob.list(namespace),
            bob.get(namespace, "plan"),
            bob.forget(namespace, "plan"),
        ):
            error = await _refused(call)
            assert error.code == "SOS-4005", (namespace, error)
            assert "nothing was read or written" in str(error)
            assert error.details["rule"] == "canonical"
    assert "write 'agent:bob/x'" in str(await _refused(bob.remember("AGENT:bob/x", "x", vector=[1.0, 0.0])))
    for who in ("alice", "keeper"):
        assert sorted(n.name for n in await crew[who].memory.namespaces()) == ["agent:alice/notes", "team"]
    assert [m.id for m in await crew["alice"].memory.list("agent:alice/notes")] == ["plan"]


async def test_a_policy_on_an_agents_namespace_and_the_service_read_the_same_name(
    crew: dict[str, Any], kernel: sos_kernel.Kernel
) -> None:
    """A policy allowing memory only on agent:bob/** lets no other agent write or read 'AGENT:bob/...'."""
    policy = {
        "name": "bob-private",
        "version": 1,
        "rules": [{"id": "bob-memory", "effect": "allow", "actions": ["memory.*"], "resources": ["agent:bob/**"]}],
    }
    await kernel.tenant("acme").governance.set_policy("acme", policy)
    alice = crew["alice"].memory
    assert await _denied(alice.remember("team", "t", vector=[1.0, 0.0])) == "SOS-5004"
    assert await _denied(alice.remember("agent:bob/x", "t", vector=[1.0, 0.0])) == "SOS-5004"
    for namespace in ("AGENT:bob/x", "agent:BOB/x", "Agent:bob/y"):
        assert (await _refused(alice.remember(namespace, "alice wrote this", vector=[1.0, 0.0]))).code == "SOS-4005"
        assert (await _refused(crew["bob"].memory.recall(namespace, [1.0, 0.0]))).code == "SOS-4005"
    await crew["bob"].memory.remember("agent:bob/x", "bob's own", id="own", vector=[1.0, 0.0])
    found = await kernel.tenant("acme").memory.namespaces()
    assert sorted(n.name for n in found) == ["agent:alice/notes", "agent:bob/x", "team"]


async def test_a_namespace_written_before_the_canonical_rule_is_the_admins_to_read_and_forget(
    crew: dict[str, Any], kernel: sos_kernel.Kernel
) -> None:
    """A non-canonical name already stored had no owner (anyone could write it): only memory:admin and the
    kernel's own API reach it, to read it out and forget it; sessions do not see it listed."""
    vector = np.asarray([1.0, 0.0], dtype=np.float32).tobytes()
    old = StoredMemory("old", "planted long ago", "{}", vector, "d" * 64, time.time(), None)
    quota = Quota(1000, 10_000_000, 1000)
    await kernel.memory_store.put_many("acme", "Agent:alice/notes", Space("", 2), [old], quota, time.time())
    for who in ("alice", "bob"):
        assert "Agent:alice/notes" not in [n.name for n in await crew[who].memory.namespaces()]
        assert (await _refused(crew[who].memory.get("Agent:alice/notes", "old"))).code == "SOS-4005"
    keeper = crew["keeper"].memory
    assert "Agent:alice/notes" in [n.name for n in await keeper.namespaces()]
    assert (await keeper.get("Agent:alice/notes", "old")).text == "planted long ago"
    assert [m.id for m in await keeper.list("Agent:alice/notes")] == ["old"]
    assert (await _refused(keeper.remember("Agent:alice/notes", "more", vector=[1.0, 0.0]))).code == "SOS-4005"
    assert await keeper.forget("Agent:alice/notes", "old") is True
    assert sorted(n.name for n in await keeper.namespaces()) == ["agent:alice/notes", "team"]


async def test_one_agent_fills_its_share_of_namespaces_and_another_still_gets_hers(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    """namespaces_max=40: bob holds at most 4 of his own and the tenant at most 4 shared ones, so alice still
    creates hers; the bound is checked in the store's atomic write (SOS-4010 naming the share, nothing written)."""
    await kernel.tenants.create("acme", plan="growth")
    kernel.tenant("acme").memory.limits = MemoryLimits(namespaces_max=40)
    tokens = kernel.tenant("acme").tokens
    bob = (await connect((await tokens.issue(agent="agent:bob")).secret)).memory
    alice = (await connect((await tokens.issue(agent="agent:alice")).secret)).memory
    for i in range(4):
        await bob.remember(f"agent:bob/junk{i}", "x", vector=[1.0])
    with pytest.raises(LimitExceeded, match="agent:bob's own namespaces would pass agent_namespaces_max") as info:
        await bob.remember("agent:bob/junk4", "x", vector=[1.0])
    assert (info.value.code, info.value.details["limit"], info.value.details["value"]) == (
        "SOS-4010",
        "agent_namespaces_max",
        4,
    )
    for i in range(4):
        await bob.remember(f"junk{i}", "x", vector=[1.0])
    with pytest.raises(LimitExceeded, match="shared_namespaces_max"):
        await bob.remember("junk4", "x", vector=[1.0])
    await bob.remember("agent:bob/junk0", "more in a namespace he holds", vector=[1.0])
    await alice.remember("agent:alice/notes", "my first memory", vector=[1.0])
    await alice.remember("agent:alice/plans", "and a second", vector=[1.0])
    names = [n.name for n in await kernel.tenant("acme").memory.namespaces()]
    assert "agent:bob/junk4" not in names
    assert "junk4" not in names
    assert len(names) == 10


async def test_one_agent_fills_its_share_of_memories_and_bytes_and_another_still_stores(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    """memories_max=8: bob's own namespaces hold at most 4 memories and the shared ones at most 2, so alice still
    stores; then bytes_max=4_000: bob's own at most 2_000 bytes, the shared ones 1_000. Each refusal is SOS-4010
    naming the share, checked in the store's atomic write, nothing written; a forget gives its share back."""
    await kernel.tenants.create("acme", plan="growth")
    memory = kernel.tenant("acme").memory
    memory.limits = MemoryLimits(memories_max=8)
    tokens = kernel.tenant("acme").tokens
    bob = (await connect((await tokens.issue(agent="agent:bob")).secret)).memory
    alice = (await connect((await tokens.issue(agent="agent:alice")).secret)).memory
    for i in range(4):
        await bob.remember(f"agent:bob/n{i % 2}", "x", id=f"m{i}", vector=[1.0])
    with pytest.raises(
        LimitExceeded, match="agent:bob's own namespaces' memories would pass agent_memories_max"
    ) as info:
        await bob.remember_many("agent:bob/n2", [{"text": "x", "vector": [1.0]}])
    assert (info.value.code, info.value.details["limit"], info.value.details["value"]) == (
        "SOS-4010",
        "agent_memories_max",
        4,
    )
    await bob.remember("agent:bob/n0", "x", id="m0", vector=[1.0])  # a replay stores nothing: still allowed
    for i in range(2):
        await bob.remember("team", "x", id=f"t{i}", vector=[1.0])
    with pytest.raises(LimitExceeded, match="shared_memories_max"):
        await bob.remember("team", "x", vector=[1.0])
    await alice.remember("agent:alice/notes", "mine", vector=[1.0])
    await alice.remember("agent:alice/notes", "and mine", vector=[1.0])
    counts = {n.name: n.count for n in await memory.namespaces()}
    assert counts == {"agent:bob/n0": 2, "agent:bob/n1": 2, "team": 2, "agent:alice/notes": 2}
    assert await bob.forget("agent:bob/n1", "m1") is True  # his share comes back
    await bob.remember("agent:bob/n2", "x", vector=[1.0])
    for ns, ids in (("agent:bob/n0", ["m0", "m2"]), ("agent:bob/n1", ["m3"]), ("team", ["t0", "t1"])):
        for id in ids:
            await memory.forget(ns, id)
    await memory.forget("agent:bob/n2", (await memory.list("agent:bob/n2"))[0].id)

    memory.limits = MemoryLimits(bytes_max=4_000)
    size = 1_000 + 2 + 4  # text, "{}" metadata, one float32
    await bob.remember("agent:bob/big", "b" * 1_000, id="b0", vector=[1.0])
    with pytest.raises(LimitExceeded, match="agent_bytes_max") as info:
        await bob.remember("agent:bob/big", "b" * 1_000, id="b1", vector=[1.0])
    assert (info.value.details["limit"], info.value.details["value"]) == ("agent_bytes_max", 2_000)
    await bob.remember("team", "t" * 990, id="t0", vector=[1.0])
    with pytest.raises(LimitExceeded, match="shared_bytes_max"):
        await bob.remember("team", "t" * 10, id="t1", vector=[1.0])
    await alice.remember("agent:alice/notes", "a" * 1_000, vector=[1.0])
    assert size * 2 > 2_000
    assert await bob.forget("agent:bob/big", "b0") is True
    await bob.remember("agent:bob/big", "b" * 1_000, id="b1", vector=[1.0])
    counts = {n.name: n.count for n in await memory.namespaces()}
    assert counts == {"agent:bob/big": 1, "team": 1, "agent:alice/notes": 3}
