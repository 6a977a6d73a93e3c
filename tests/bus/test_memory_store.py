"""The in-process bus store: what it keeps after an ask (nothing of the ask's reply channel), and how a publisher
and a consumer of one event loop share it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends.memory import MemoryBusStore
from sos_kernel.bus.service import PUBLISHES_PER_YIELD_MAX
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import AskTimeout

pytestmark = pytest.mark.anyio


async def test_timed_out_asks_leave_no_wake_up_event_stream_or_group_behind() -> None:
    async with sos_kernel.open("memory://") as kernel:
        store = kernel.bus.store
        assert isinstance(store, MemoryBusStore)
        for _ in range(3):
            with pytest.raises(AskTimeout):
                await kernel.bus.ask("agent:alice", "agent:nobody", "q", timeout_s=0.05)
        async with kernel.bus.subscribe("sos:channel:reply-gone", group="kept"):  # a named group stays on close
            pass
        await store.drop_address("default", "sos:channel:reply-gone")
        assert not any(address.startswith("sos:channel:reply-") for _, address in store._events)
        assert not any(address.startswith("sos:channel:reply-") for _, address in store._streams)
        assert not any(address.startswith("sos:channel:reply-") for _, address, _ in store._groups)
        assert not any(address.startswith("sos:channel:reply-") for _, address in store._group_names)


async def _publishes_done_at_each_delivery(total: int) -> list[int]:
    """A consumer waiting on ``agent:bob`` while a producer of the same event loop publishes ``total`` messages:
    how many publishes had returned when each delivery reached the consumer."""
    done_at: list[int] = []
    published = [0]
    async with sos_kernel.open("memory://") as kernel, anyio.create_task_group() as tg:
        waiting = anyio.Event()

        async def consume() -> None:
            async with kernel.bus.subscribe("agent:bob", prefetch=2 * PUBLISHES_PER_YIELD_MAX) as sub:
                waiting.set()
                for _ in range(total):
                    delivery = await sub.receive(timeout_s=10)
                    assert delivery is not None
                    done_at.append(published[0])
                    await delivery.ack()

        tg.start_soon(consume)
        await waiting.wait()
        await anyio.sleep(0.05)  # the consumer waits for news
        for i in range(total):
            await kernel.bus.publish(
                SendMessage(source="agent:alice", target="agent:bob", payload=SendPayload(text=f"m{i}"))
            )
            published[0] += 1
    return done_at


async def test_a_consumer_of_the_publishers_event_loop_gets_its_first_delivery_within_publishes_per_yield_max() -> None:
    done_at = await _publishes_done_at_each_delivery(4 * PUBLISHES_PER_YIELD_MAX)
    assert len(done_at) == 4 * PUBLISHES_PER_YIELD_MAX
    assert done_at[0] < PUBLISHES_PER_YIELD_MAX  # fair: the producer let it run within one batch
    assert done_at[-1] < 4 * PUBLISHES_PER_YIELD_MAX  # served while the producer was still publishing


async def test_a_consumer_takes_what_a_publisher_of_its_event_loop_stored_meanwhile_in_one_wake_up() -> None:
    total = 8 * PUBLISHES_PER_YIELD_MAX
    done_at = await _publishes_done_at_each_delivery(total)
    # one wake-up per batch of publishes, not one per message: deliveries arrive in runs
    assert len(set(done_at)) <= total // PUBLISHES_PER_YIELD_MAX + 1


async def _answer(bus: Any, count: int) -> None:
    async with bus.subscribe("agent:oracle") as sub:
        for _ in range(count):
            delivery = await sub.receive(timeout_s=10)
            assert delivery is not None
            await bus.reply(delivery.message, "42")
            await delivery.ack()


async def test_an_ask_answered_by_a_task_of_its_event_loop_arms_no_timer_and_enters_no_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The asker reads its channel with what is left of its timeout (the memory wait is bounded by it) and ends the
    # channel without a shield (dropping it never suspends): the reply stored during its first yield costs no scope.
    scopes: list[str] = []
    asker: list[int] = []
    move_on_after, cancel_scope = anyio.move_on_after, anyio.CancelScope

    def counted_move_on_after(*args: Any, **kwargs: Any) -> anyio.CancelScope:
        if anyio.get_current_task().id in asker:
            scopes.append("move_on_after")
        return move_on_after(*args, **kwargs)

    def counted_cancel_scope(*args: Any, **kwargs: Any) -> anyio.CancelScope:
        if anyio.get_current_task().id in asker:
            scopes.append("CancelScope")
        return cancel_scope(*args, **kwargs)

    async with sos_kernel.open("memory://") as kernel, anyio.create_task_group() as tg:
        tg.start_soon(_answer, kernel.bus, 51)
        await kernel.bus.ask("agent:alice", "agent:oracle", "warm up", timeout_s=10)  # the oracle is subscribed
        monkeypatch.setattr(anyio, "move_on_after", counted_move_on_after)
        monkeypatch.setattr(anyio, "CancelScope", counted_cancel_scope)
        asker.append(anyio.get_current_task().id)
        for i in range(50):
            reply = await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=10)
            assert reply.payload.text == "42"
        asker.clear()  # closing the kernel may use scopes of its own
    assert scopes == []


@pytest.mark.parametrize("plain", [False, True], ids=["memory-path", "plain-path"])
async def test_an_ask_behaves_alike_with_or_without_the_memory_stores_bounded_wait(
    plain: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The memory store's read_wait_bounded / ends_reply_channels_at_once skip the ask's two scopes; the plain path
    # (a timeout scope around the reads, a shielded end of the channel) must give the same answers and leave the same.
    if plain:
        monkeypatch.setattr(MemoryBusStore, "read_wait_bounded", False)
        monkeypatch.setattr(MemoryBusStore, "ends_reply_channels_at_once", False)
    async with sos_kernel.open("memory://") as kernel:
        store = kernel.bus.store
        assert isinstance(store, MemoryBusStore)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_answer, kernel.bus, 3)
            for i in range(3):
                reply = await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=10)
                assert (reply.payload.text, reply.source) == ("42", "agent:oracle")
        asks = await kernel.bus.history("agent:oracle")
        assert [a.correlation_id for a in asks] == [a.message_id for a in asks]  # one fresh id per ask
        started = anyio.current_time()
        with pytest.raises(AskTimeout):
            await kernel.bus.ask("agent:alice", "agent:nobody", "q", timeout_s=0.2)
        assert 0.2 <= anyio.current_time() - started < 0.2 + 0.5  # the deadline, not the wait cap (1 s)
        with anyio.move_on_after(0.1):  # cancelled from outside while it waits
            await kernel.bus.ask("agent:alice", "agent:nobody", "q", timeout_s=10)
        assert kernel.bus._asks_pending == {}
        assert not any(address.startswith("sos:channel:reply-") for _, address in store._streams)
        assert not any(address.startswith("sos:channel:reply-") for _, address in store._events)
