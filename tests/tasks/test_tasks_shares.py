"""A per-agent share of the tenant's open tasks, on every backend and through the remote client: one agent fills
its share (``TASKS_OPEN_PER_CREATOR_MAX``) and another still creates, until the tenant's ``TASKS_OPEN_MAX``."""

from __future__ import annotations

import pytest

import sos_kernel
from sos_kernel.errors import LimitExceeded
from sos_kernel.tasks import service as tasks_service

from ..conftest import Connect

pytestmark = pytest.mark.anyio


async def test_one_agent_fills_its_share_of_open_tasks_and_another_still_creates(
    kernel: sos_kernel.Kernel, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks_service, "TASKS_OPEN_MAX", 5)
    monkeypatch.setattr(tasks_service, "TASKS_OPEN_PER_CREATOR_MAX", 3)
    await kernel.tenants.create("acme", plan="growth")
    tokens = kernel.tenant("acme").tokens
    bob = await connect((await tokens.issue(agent="agent:bob")).secret)
    alice = await connect((await tokens.issue(agent="agent:alice")).secret)
    for i in range(3):
        await bob.tasks.create("junk", id=f"junk-{i}", reviewers=["agent:rev"])
    with pytest.raises(LimitExceeded, match="agent:bob already created 3 open tasks") as info:
        await bob.tasks.create("junk", id="junk-3", reviewers=["agent:rev"])
    assert (info.value.code, info.value.details["limit"]) == ("SOS-4010", "TASKS_OPEN_PER_CREATOR_MAX")
    await alice.tasks.create("mine", id="alice-0", reviewers=["agent:rev"])
    await alice.tasks.create("mine", id="alice-1", reviewers=["agent:rev"])
    with pytest.raises(LimitExceeded, match="the tenant has 5 open tasks"):
        await alice.tasks.create("mine", id="alice-2", reviewers=["agent:rev"])
    view = kernel.tenant("acme").tasks
    assert sorted(t.id for t in await view.list()) == ["alice-0", "alice-1", "junk-0", "junk-1", "junk-2"]
    await bob.tasks.cancel("junk-0")  # a finished task frees its creator's slot
    await bob.tasks.create("junk", id="junk-3", reviewers=["agent:rev"])


def test_a_few_agents_at_their_share_leave_the_tenant_room() -> None:
    """The share is a tenth: three agents (or two, as round 6 showed with a half) at their share leave most of the
    tenant's open slots to the others; the same for memory namespaces (an agent's own plus the shared pool)."""
    from sos_kernel.memory import MemoryLimits

    assert tasks_service.TASKS_OPEN_PER_CREATOR_MAX * 10 == tasks_service.TASKS_OPEN_MAX
    assert 3 * tasks_service.TASKS_OPEN_PER_CREATOR_MAX < tasks_service.TASKS_OPEN_MAX // 2
    limits = MemoryLimits()
    assert limits.agent_namespaces_max * 10 == limits.namespaces_max
    assert 3 * limits.agent_namespaces_max + limits.shared_namespaces_max < limits.namespaces_max // 2
