"""The kernel's A2A task store (``kernel.tenant(t).a2a_tasks``) on memory, SQLite and Redis: records per tenant
and owner, the per-tenant bound that forgets the oldest finished task, and refusals that write nothing."""

from __future__ import annotations

import pytest

import sos_kernel
from sos_kernel.a2a_tasks import A2A_TASK_BYTES_MAX
from sos_kernel.errors import InvalidArgument, LimitExceeded

pytestmark = pytest.mark.anyio

ALICE, CAROL = "bob\nagent:alice", "bob\nagent:carol"


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
