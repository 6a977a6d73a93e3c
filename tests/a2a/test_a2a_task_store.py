"""The kernel's A2A task store (``kernel.tenant(t).a2a_tasks``) on memory, SQLite and Redis: records per tenant
and owner, the per-tenant bound that forgets the oldest finished task, the per-caller bounds that keep one caller
from filling its tenant, stale running tasks that can be forgotten, and refusals that write nothing."""

from __future__ import annotations

import anyio
import pytest

import sos_kernel
from sos_kernel.a2a_tasks import A2A_TASK_BYTES_MAX
from sos_kernel.errors import InvalidArgument, LimitExceeded

pytestmark = pytest.mark.anyio

ALICE, CAROL = "bob\nagent:alice", "bob\nagent:carol"
BOUNDS = {"caller_tasks_max": 3, "caller_running_max": 2}


async def test_a_task_is_kept_per_tenant_and_owner(kernel: sos_kernel.Kernel) -> None:
    acme, globex = kernel.tenant("acme").a2a_tasks, kernel.tenant("globex").a2a_tasks
    await acme.put(ALICE, "t1", b"one", finished=False, tasks_max=10)
    await acme.put(ALICE, "t1", b"one, again", finished=True, tasks_max=10)  # a save replaces
    await acme.put(ALICE, "t2", b"two", finished=False, tasks_max=10)
    await acme.put(CAROL, "t1", b"carol's", finished=False, tasks_max=10)  # the same id, another owner
    assert await acme.get(ALICE, "t1") == b"one, again"
    assert await acme.get(CAROL, "t1") == b"carol's"
    assert await acme.owned(ALICE, 10) == [b"one, again", b"two"]
    assert await acme.owned(ALICE, 1) == [b"one, again"]
    assert await globex.get(ALICE, "t1") is None
    assert await globex.owned(ALICE, 10) == []
    await acme.delete(ALICE, "t1")
    assert await acme.get(ALICE, "t1") is None
    assert await acme.get(CAROL, "t1") == b"carol's"


async def test_a_full_tenant_forgets_its_oldest_finished_task_or_refuses(kernel: sos_kernel.Kernel) -> None:
    acme = kernel.tenant("acme").a2a_tasks
    await acme.put(ALICE, "a", b"a", finished=False, tasks_max=3)
    await acme.put(CAROL, "b", b"b", finished=False, tasks_max=3)
    await acme.put(ALICE, "c", b"c", finished=False, tasks_max=3)
    await kernel.tenant("globex").a2a_tasks.put(ALICE, "x", b"x", finished=False, tasks_max=1)  # its own bound
    with pytest.raises(LimitExceeded, match="a2a_tasks_per_tenant_max"):
        await acme.put(ALICE, "d", b"d", finished=False, tasks_max=3)
    assert await acme.get(ALICE, "d") is None
    await acme.put(ALICE, "c", b"c done", finished=True, tasks_max=3)  # a full tenant still saves its tasks
    await acme.put(CAROL, "b", b"b done", finished=True, tasks_max=3)
    await acme.put(ALICE, "d", b"d", finished=False, tasks_max=3)
    assert await acme.get(CAROL, "b") is None  # the oldest finished one made room
    assert await acme.get(ALICE, "c") == b"c done"
    assert [await acme.get(ALICE, t) for t in ("a", "d")] == [b"a", b"d"]


@pytest.mark.parametrize(
    ("owner", "task_id", "size", "error"),
    [
        ("", "t", 1, InvalidArgument),
        ("bob\x00x", "t", 1, InvalidArgument),
        (ALICE, "", 1, InvalidArgument),
        (ALICE, "t" * 257, 1, InvalidArgument),
        (ALICE, "t", A2A_TASK_BYTES_MAX + 1, LimitExceeded),
    ],
)
async def test_bad_records_are_refused_and_nothing_is_written(
    kernel: sos_kernel.Kernel, owner: str, task_id: str, size: int, error: type[Exception]
) -> None:
    acme = kernel.tenant("acme").a2a_tasks
    with pytest.raises(error):
        await acme.put(owner, task_id, b"x" * size, finished=False, tasks_max=10)
    assert await acme.owned(ALICE, 10) == []


async def test_one_caller_cannot_fill_its_tenant(kernel: sos_kernel.Kernel) -> None:
    acme = kernel.tenant("acme").a2a_tasks
    for n in range(2):  # the same caller through two served agents: one bound
        await acme.put(
            "bob\nagent:mallory", f"m{n}", b"m", finished=False, tasks_max=6, caller="agent:mallory", **BOUNDS
        )
    with pytest.raises(LimitExceeded, match="a2a_running_tasks_per_caller_max") as refused:
        await acme.put("dave\nagent:mallory", "m2", b"m", finished=False, tasks_max=6, caller="agent:mallory", **BOUNDS)
    assert refused.value.details == {"limit": "a2a_running_tasks_per_caller_max", "max": 2}
    assert await acme.get("dave\nagent:mallory", "m2") is None
    for n in range(4):  # finished ones: the caller's own oldest makes room past its 3 kept
        await acme.put(
            "dave\nagent:mallory", f"f{n}", b"f", finished=True, tasks_max=6, caller="agent:mallory", **BOUNDS
        )
    assert [await acme.get("dave\nagent:mallory", f"f{n}") for n in range(4)] == [None, None, None, b"f"]
    for n in range(4):  # the rest of the tenant is the others'
        await acme.put(
            ALICE,
            f"a{n}",
            b"a",
            finished=False,
            tasks_max=6,
            caller="agent:alice",
            **BOUNDS | {"caller_tasks_max": 9, "caller_running_max": 8},
        )
    assert len(await acme.owned(ALICE, 10)) == 4


async def test_a_running_task_nobody_saves_goes_stale_and_can_be_forgotten(kernel: sos_kernel.Kernel) -> None:
    acme = kernel.tenant("acme").a2a_tasks
    for n in range(2):
        await acme.put(ALICE, f"s{n}", b"s", finished=False, tasks_max=3, running_s=0.2, **BOUNDS)
    with pytest.raises(LimitExceeded, match="a2a_running_tasks_per_caller_max"):
        await acme.put(ALICE, "s2", b"s", finished=False, tasks_max=3, running_s=0.2, **BOUNDS)
    await anyio.sleep(0.3)  # nobody saved them since: stale, no longer running
    await acme.put(ALICE, "s2", b"s", finished=False, tasks_max=3, running_s=60, **BOUNDS)
    await acme.put(CAROL, "c0", b"c", finished=False, tasks_max=3, running_s=60, **BOUNDS)  # the tenant is full
    assert await acme.get(ALICE, "s0") is None  # the oldest stale one made room
    assert [await acme.get(ALICE, t) for t in ("s1", "s2")] == [b"s", b"s"]
    await acme.put(ALICE, "s1", b"saved again", finished=False, tasks_max=3, running_s=60, **BOUNDS)
    with pytest.raises(LimitExceeded, match="a2a_tasks_per_tenant_max"):  # s1 runs again, s2 and c0 still run
        await acme.put(CAROL, "c1", b"c", finished=False, tasks_max=3, running_s=60, **BOUNDS)


async def test_the_per_caller_bounds_are_checked(kernel: sos_kernel.Kernel) -> None:
    acme = kernel.tenant("acme").a2a_tasks
    with pytest.raises(InvalidArgument, match="caller_tasks_max must exceed"):
        await acme.put(ALICE, "t", b"t", finished=False, tasks_max=3, caller_tasks_max=2, caller_running_max=2)
    assert await acme.get(ALICE, "t") is None
