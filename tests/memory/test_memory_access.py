"""Who may reach which namespace: agents own agent:<name>/..., shared namespaces need the scopes, grants and admin
lift the rest; on every backend and through the remote client."""

from __future__ import annotations

from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import Forbidden, NotFound
from sos_kernel.identity import AgentKey, Capability

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
