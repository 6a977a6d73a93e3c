"""Idempotency is per source: a message id another agent of the tenant took first never suppresses, hides or
locates a message; a source's own retry is still a duplicate. On every backend and through the remote client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.bus import BusLimits
from sos_kernel.bus import store as bus_store
from sos_kernel.bus.service import split_message
from sos_kernel.contracts import (
    ChunkMessage,
    Message,
    SendMessage,
    SendPayload,
    TaskCompletedMessage,
    TaskCompletedPayload,
    new_message_id,
    utcnow,
)
from sos_kernel.errors import InvalidArgument

from ..conftest import Connect, OpenApi, deployment

pytestmark = pytest.mark.anyio

TENANT = "acme"


def send(source: str, message_id: str, target: str = "agent:bob", text: str = "hi") -> SendMessage:
    return SendMessage(source=source, target=target, message_id=message_id, payload=SendPayload(text=text))


def big(source: str, message_id: str, n_bytes: int = 200_000) -> TaskCompletedMessage:
    return TaskCompletedMessage(
        source=source,
        target="agent:bob",
        message_id=message_id,
        payload=TaskCompletedPayload(
            task_id="t1", status="done", completed_at=utcnow(), result={"blob": source[-1] * n_bytes}
        ),
    )


@asynccontextmanager
async def agents(kernel: sos_kernel.Kernel, connect: Connect) -> AsyncIterator[dict[str, Any]]:
    """Sessions of ``agent:alice`` and ``agent:mallory`` in one tenant, and ``"view"``: the tenant's own handle."""
    await kernel.tenants.create(TENANT, plan="growth")
    view = kernel.tenant(TENANT)
    apis: dict[str, Any] = {"view": view}
    for name in ("alice", "mallory"):
        apis[name] = await connect((await view.tokens.issue(agent=f"agent:{name}")).secret)
    yield apis


async def inbox(view: Any, address: str = "agent:bob") -> list[tuple[str, str]]:
    return [(m.source, m.message_id) for m in await view.bus.history(address)]


async def delivered(view: Any, n: int) -> list[Message]:
    out: list[Message] = []
    async with view.bus.subscribe("agent:bob") as sub:
        with anyio.fail_after(5):
            while len(out) < n:
                d = await sub.receive()
                assert d is not None
                out.append(d.message)
                await d.ack()
        assert await sub.receive(timeout_s=0.2) is None
    return out


async def test_a_peer_taking_a_message_id_first_does_not_suppress_the_message(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    async with agents(kernel, connect) as a:
        chosen = new_message_id()  # alice's id, predictable to mallory (a client-chosen idempotency key)
        await a["mallory"].bus.publish(send("agent:mallory", new_message_id(), text="filler"))
        taken = await a["mallory"].bus.publish(send("agent:mallory", chosen, text="squat"))
        assert taken.duplicate is False
        mine = await a["alice"].bus.publish(send("agent:alice", chosen, text="real"))
        # stored as a new message; its receipt is its own, never the squatter's position
        assert mine.duplicate is False
        assert mine.position != taken.position
        assert (await inbox(a["view"]))[1:] == [("agent:mallory", chosen), ("agent:alice", chosen)]
        got = await delivered(a["view"], 3)
        assert [(m.source, m.payload.text) for m in got][1:] == [("agent:mallory", "squat"), ("agent:alice", "real")]


async def test_a_sources_own_retry_is_still_a_duplicate_single_and_batched(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    async with agents(kernel, connect) as a:
        chosen, other = new_message_id(), new_message_id()
        taken = await a["mallory"].bus.publish(send("agent:mallory", chosen))
        first = await a["alice"].bus.publish(send("agent:alice", chosen))
        again = await a["alice"].bus.publish(send("agent:alice", chosen, text="retry"))
        assert (again.duplicate, again.position) == (True, first.position)
        retaken = await a["mallory"].bus.publish(send("agent:mallory", chosen))
        assert (retaken.duplicate, retaken.position) == (True, taken.position)
        # a batch: the squatted id is new for alice, her own stored id and a repeat within the batch are not
        await a["mallory"].bus.publish(send("agent:mallory", other))
        batch = await a["alice"].bus.publish_many(
            [send("agent:alice", other), send("agent:alice", chosen), send("agent:alice", other)]
        )
        assert [r.duplicate for r in batch] == [False, True, True]
        assert batch[1].position == first.position
        assert batch[2].position == batch[0].position
        assert [s for s, _ in await inbox(a["view"])] == [
            "agent:mallory",
            "agent:alice",
            "agent:mallory",
            "agent:alice",
        ]


async def test_history_after_an_id_two_sources_used_starts_after_its_earliest_entry_on_that_address(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    async with agents(kernel, connect) as a:
        view, chosen = a["view"], new_message_id()
        await a["alice"].bus.publish(send("agent:alice", new_message_id(), text="before"))
        await a["mallory"].bus.publish(send("agent:mallory", chosen, text="squat"))
        await a["alice"].bus.publish(send("agent:alice", new_message_id(), text="between"))
        await a["alice"].bus.publish(send("agent:alice", chosen, text="real"))
        await a["alice"].bus.publish(send("agent:alice", new_message_id(), text="after"))
        # whichever of the two a reader saw, resuming after the id skips nothing (the later one is read again)
        page = await view.bus.history("agent:bob", after=chosen)
        assert [m.payload.text for m in page] == ["between", "real", "after"]
        # on each address, the entry there: another source's entry of the id elsewhere does not count
        other = new_message_id()
        await a["mallory"].bus.publish(send("agent:mallory", new_message_id(), target="agent:carol", text="c0"))
        await a["alice"].bus.publish(send("agent:alice", other, target="agent:carol", text="c1"))
        await a["alice"].bus.publish(send("agent:alice", new_message_id(), target="agent:carol", text="c2"))
        await a["mallory"].bus.publish(send("agent:mallory", new_message_id(), target="agent:dave", text="d0"))
        await a["mallory"].bus.publish(send("agent:mallory", other, target="agent:dave", text="d1"))
        await a["mallory"].bus.publish(send("agent:mallory", new_message_id(), target="agent:dave", text="d2"))
        assert [m.payload.text for m in await view.bus.history("agent:carol", after=other)] == ["c2"]
        assert [m.payload.text for m in await view.bus.history("agent:dave", after=other)] == ["d2"]
        # an id with no entry on the address read is refused, not guessed at from another address
        await a["alice"].bus.publish(send("agent:alice", alone := new_message_id(), target="agent:eve"))
        with pytest.raises(InvalidArgument, match="not on agent:bob"):
            await view.bus.history("agent:bob", after=alone)


async def test_a_chunked_message_whose_id_a_peer_took_first_is_reassembled_and_delivered(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    async with agents(kernel, connect) as a:
        chosen = new_message_id()
        squat = await a["mallory"].bus.publish(send("agent:mallory", chosen))
        whole_message = big("agent:alice", chosen)
        parts: list[ChunkMessage] = split_message(whole_message, kernel.limits)
        assert len(parts) > 1
        receipts = [await a["alice"].bus.publish(part) for part in parts]
        assert [r.duplicate for r in receipts] == [False] * len(parts)
        whole = receipts[-1]
        assert whole.position is not None
        assert whole.position != squat.position
        got = await delivered(a["view"], 2)
        assert [(m.source, m.message_id) for m in got] == [("agent:mallory", chosen), ("agent:alice", chosen)]
        assert got[1] == whole_message
        # alice's retry of a part is a duplicate of her own whole message
        retry = await a["alice"].bus.publish(parts[0])
        assert (retry.duplicate, retry.position) == (True, whole.position)


@asynccontextmanager
async def short_window(kernel_url: str, target: str, window_s: float) -> AsyncIterator[dict[str, Any]]:
    """``agents`` on a kernel whose dedup window is ``window_s`` (standing in for the default 24 h). A test using it
    asks for ``open_api`` too, so it runs through the remote client as well."""
    async with (
        sos_kernel.open(kernel_url, limits=BusLimits(dedup_window_s=window_s)) as kernel,
        deployment(kernel, target) as connect,
        agents(kernel, connect) as a,
    ):
        yield a


async def texts(view: Any, address: str, after: str) -> list[str]:
    return [m.payload.text for m in await view.bus.history(address, after=after)]


async def test_history_after_an_id_past_its_window_that_a_peer_re_used_skips_nothing(
    kernel_url: str, target: str, open_api: OpenApi
) -> None:
    # the reader stopped at alice's A; past A's window mallory re-uses its id: the reader resumes right after A
    window = 1.0  # whole seconds for Redis
    async with short_window(kernel_url, target, window) as a:
        view, alice, mallory, chosen, alone = a["view"], a["alice"].bus, a["mallory"].bus, new_message_id(), ""
        await alice.publish(send("agent:alice", chosen, text="A"))
        for i in range(3):
            await alice.publish(send("agent:alice", new_message_id(), text=f"B{i}"))
        await alice.publish(send("agent:alice", alone := new_message_id(), target="agent:carol", text="only"))
        await alice.publish(send("agent:alice", new_message_id(), target="agent:carol", text="next"))
        await anyio.sleep(window + 0.5)
        assert (await mallory.publish(send("agent:mallory", chosen, text="M"))).duplicate is False
        await alice.publish(send("agent:alice", new_message_id(), text="C"))
        assert await texts(view, "agent:bob", chosen) == ["B0", "B1", "B2", "M", "C"]
        # an id whose only retained entry is past its window still stands for that entry
        assert await texts(view, "agent:carol", alone) == ["next"]
        # an id never seen on the address is refused, as before
        with pytest.raises(InvalidArgument, match="not on agent:bob"):
            await view.bus.history("agent:bob", after=new_message_id())
        with pytest.raises(InvalidArgument, match="not on agent:bob"):
            await view.bus.history("agent:bob", after=alone)


async def test_history_after_an_id_a_store_would_look_for_past_the_scan_bound_is_refused(
    kernel_url: str, target: str, open_api: OpenApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # memory and SQLite read at most LOCATE_SCAN_MAX entries from the oldest; Redis keeps the earliest entry per id
    monkeypatch.setattr(bus_store, "LOCATE_SCAN_MAX", 3)
    async with short_window(kernel_url, target, 1.0) as a:
        view, alice = a["view"], a["alice"].bus
        ids = [new_message_id() for _ in range(5)]
        for i, message_id in enumerate(ids):
            await alice.publish(send("agent:alice", message_id, text=str(i)))
        assert await texts(view, "agent:bob", ids[1]) == ["2", "3", "4"]
        await anyio.sleep(1.5)  # past every window: only the scan can find an id
        assert await texts(view, "agent:bob", ids[2]) == ["3", "4"]
        if kernel_url.startswith("redis"):
            assert await texts(view, "agent:bob", ids[4]) == []
        else:
            with pytest.raises(InvalidArgument, match="resume after a position"):
                await view.bus.history("agent:bob", after=ids[4])
