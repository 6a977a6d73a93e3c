"""The in-process bus store: what it keeps after an ask (nothing of the ask's reply channel), and how a publisher
and a consumer of one event loop share it."""

from __future__ import annotations

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
