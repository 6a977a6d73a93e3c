"""What the in-process bus store keeps after an ask: nothing of the ask's reply channel."""

from __future__ import annotations

import pytest

import sos_kernel
from sos_kernel.backends.memory import MemoryBusStore
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
