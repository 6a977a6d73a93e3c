"""Messages of every size read back the same: on SQLite, rows up to INLINE_BYTES_MAX are written on the event loop
and larger ones (a reassembled chunked message, a large batch) in the engine's worker thread; both paths must
store, list and deliver exactly what was published, as every other backend does."""

from __future__ import annotations

import anyio
import pytest

from sos_kernel import Kernel
from sos_kernel.backends.sqlite import INLINE_BYTES_MAX
from sos_kernel.contracts import AnnounceMessage, AnnouncePayload, Message

pytestmark = pytest.mark.anyio


def announce(text_bytes: int) -> AnnounceMessage:
    return AnnounceMessage(source="agent:alice", target="agent:bob", payload=AnnouncePayload(text="x" * text_bytes))


def _key(message: Message) -> tuple[str, str]:
    return message.message_id, message.to_json()


async def test_small_and_large_rows_read_back_the_same(kernel: Kernel) -> None:
    single_small = announce(1024)
    single_near = announce(INLINE_BYTES_MAX - 4096)  # one entry just under the bound
    chunked = announce(5 * INLINE_BYTES_MAX)  # reassembled into one entry over it
    small_batch = [announce(512) for _ in range(3)]
    large_batch = [announce(INLINE_BYTES_MAX // 3) for _ in range(4)]  # each under it, together over it
    await kernel.bus.publish(single_small)
    await kernel.bus.publish(single_near)
    await kernel.bus.publish(chunked)
    await kernel.bus.publish_many(small_batch)
    await kernel.bus.publish_many(large_batch)
    published = [single_small, single_near, chunked, *small_batch, *large_batch]

    history = await kernel.bus.history("agent:bob", limit=100)
    assert [_key(m) for m in history] == [_key(m) for m in published]
    delivered = []
    async with kernel.bus.subscribe("agent:bob", start="earliest") as sub:
        with anyio.fail_after(10):
            while len(delivered) < len(published):
                delivery = await sub.receive()
                assert delivery is not None
                delivered.append(_key(delivery.message))
                await delivery.ack()
    assert delivered == [_key(m) for m in published]
