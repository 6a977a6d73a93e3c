"""Entries the bus did not write (garbage in a SQLite row, SOS's flat fields in a Redis stream) are never fatal:
dead-lettered at once with a reason and their capped raw bytes, counted, left out of ``history``, and the valid
entries around them delivered and acked as usual."""

from __future__ import annotations

import sqlite3
import time

import anyio
import pytest

import sos_kernel
from sos_kernel import Kernel
from sos_kernel.backends.memory import MemoryBusStore
from sos_kernel.backends.redis import RedisBusStore
from sos_kernel.backends.redis_call import tenant_prefix
from sos_kernel.backends.sqlite import SQLiteBusStore
from sos_kernel.bus.store import POISON_RAW_BYTES_MAX, Entry, Retention
from sos_kernel.errors import InvalidArgument
from sos_kernel.kernel import DEFAULT_TENANT

from ..conftest import Api
from .test_conformance import send

pytestmark = pytest.mark.anyio

BIG = b"x" * (POISON_RAW_BYTES_MAX * 3)
SOS_FIELDS = {
    "type": "send",
    "source": "agent:kasra",
    "target": "agent:bob",
    "timestamp": "2026-12-07T03:52:01Z",
    "message_id": "ce7ea4da-fcc6-4218-aaf3-c85a79fb9a07",
    "payload": '{"text": "hi", "content_type": "text/plain"}',
}


async def inject(kernel: Kernel, address: str) -> int:
    """Write foreign entries straight into the engine under ``address``; how many."""
    store = kernel.bus.store
    if isinstance(store, SQLiteBusStore):
        db = sqlite3.connect(kernel.url.removeprefix("sqlite:///"))
        with db:
            for data in (b"\xff\x00 not json", "a text value", 42, BIG, b'{"type": "send"}'):
                # the last position is the newest entry's, or the one recorded when that was removed
                row = db.execute(
                    "SELECT max(coalesce((SELECT max(pos) FROM bus_entries WHERE tenant=?1 AND address=?2), 0),"
                    " coalesce((SELECT last FROM bus_address_positions WHERE tenant=?1 AND address=?2), 0))",
                    (DEFAULT_TENANT, address),
                ).fetchone()
                pos = row[0] + 1
                db.execute(
                    "INSERT INTO bus_entries (tenant, pos, address, message_id, data, receipts, only_group, created)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (DEFAULT_TENANT, pos, address, "garbage", data, 0, None, time.time()),
                )
        db.close()
        return 5
    if isinstance(store, RedisBusStore):
        from ..redis_cluster import async_client

        client = async_client(kernel.url)
        key = tenant_prefix(DEFAULT_TENANT) + "stream:" + address
        await client.xadd(key, SOS_FIELDS)  # SOS's flat encoding: no 'd' field
        await client.xadd(key, {"d": b"\xff garbage", "m": "x", "r": "0"})
        await client.xadd(key, {"d": BIG, "m": "y", "r": "0"})
        await client.aclose()
        return 3
    if not isinstance(store, MemoryBusStore):
        raise AssertionError(f"no way to inject into {type(store).__name__}")
    retention = Retention(1000, 3600.0, 3600.0)
    await store.append(
        DEFAULT_TENANT, [(address, Entry("g1", b"\xff garbage")), (address, Entry("g2", BIG))], retention
    )
    return 2


async def test_foreign_entries_are_dead_lettered_and_the_rest_flows(api: Api, kernel: Kernel) -> None:
    first, last = send(text="first"), send(text="last")
    await api.bus.publish(first)
    poison = await inject(kernel, "agent:bob")
    await api.bus.publish(last)

    history = await api.bus.history("agent:bob")
    assert [m.message_id for m in history] == [first.message_id, last.message_id]

    async with api.bus.subscribe("agent:bob", visibility_timeout_s=0.3, max_deliveries=5) as sub:
        got = []
        with anyio.fail_after(5):
            while len(got) < 2:
                d = await sub.receive()
                assert d is not None
                got.append(d)
                assert await d.ack() is True
        assert [d.message.message_id for d in got] == [first.message_id, last.message_id]
        assert await sub.receive(timeout_s=0.5) is None  # nothing redelivered: the poison is dead, not pending
    assert await kernel.bus.store.pending_count(DEFAULT_TENANT, "agent:bob", "inbox") == 0

    dead = await api.bus.dead_letters("agent:bob")
    assert len(dead) == poison
    for letter in dead:
        assert letter.message is None
        assert letter.reason.startswith("unreadable entry")
        assert letter.attempts == 1
        assert letter.raw is not None
        assert len(letter.raw.encode()) <= POISON_RAW_BYTES_MAX + 3 * POISON_RAW_BYTES_MAX
    assert any(len(d.raw or "") == POISON_RAW_BYTES_MAX for d in dead)  # the big one is capped
    with pytest.raises(InvalidArgument):
        await api.bus.replay(dead[0])
    assert kernel.bus.unreadable_entries >= poison


async def test_history_pages_over_unreadable_entries(kernel: Kernel) -> None:
    poison = await inject(kernel, "agent:bob")
    only = send(text="after the garbage")
    await kernel.bus.publish(only)
    # a page the size of the garbage still reaches the valid entry behind it
    assert [m.message_id for m in await kernel.bus.history("agent:bob", limit=1)] == [only.message_id]
    assert kernel.bus.unreadable_entries == poison


async def test_sos_flat_fields_keep_their_fields_in_the_dead_letter(redis_url: str) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        await kernel.bus.publish(send(target="agent:carol", text="seed"))
        await inject(kernel, "agent:carol")
        async with kernel.bus.subscribe("agent:carol") as sub:
            d = await sub.receive(timeout_s=5)
            assert d is not None
            await d.ack()
            assert await sub.receive(timeout_s=0.3) is None
        (flat, *_) = await kernel.bus.dead_letters("agent:carol")
        assert flat.raw is not None
        assert '"source": "agent:kasra"' in flat.raw
