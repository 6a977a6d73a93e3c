"""The bus conformance suite: every behaviour, on every backend (memory, sqlite, redis)."""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import sos_kernel
from sos_kernel import BusLimits, Kernel
from sos_kernel.bus import service as bus_service
from sos_kernel.bus import store as bus_store
from sos_kernel.contracts import (
    AgentCard,
    ReceiptMessage,
    SendMessage,
    SendPayload,
    TaskCompletedMessage,
    TaskCompletedPayload,
    utcnow,
)
from sos_kernel.errors import (
    AskTimeout,
    BackendFailure,
    ChunkIntegrityError,
    Forbidden,
    InvalidArgument,
    InvalidSource,
    InvalidURL,
    KernelClosed,
    LimitExceeded,
    MissingType,
    NotFound,
    SchemaViolation,
    UnknownType,
)
from sos_kernel.kernel import DEFAULT_TENANT

from ..conftest import Api, OpenApi, requires

pytestmark = pytest.mark.anyio


def send(target: str = "agent:bob", text: str = "hi", source: str = "agent:alice", **kw: Any) -> SendMessage:
    return SendMessage(source=source, target=target, payload=SendPayload(text=text), **kw)


async def drain(sub: sos_kernel.Subscription, n: int, timeout_s: float = 5.0) -> list[sos_kernel.Delivery]:
    out = []
    with anyio.fail_after(timeout_s):
        while len(out) < n:
            d = await sub.receive()
            assert d is not None
            out.append(d)
    return out


@pytest.mark.live
async def test_publish_subscribe_ack(api: Api, kernel: Kernel) -> None:
    msg = send()
    receipt = await api.bus.publish(msg)
    assert receipt.message_id == msg.message_id
    assert receipt.duplicate is False
    assert receipt.address == "agent:bob"
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=0.3) as sub:
        (d,) = await drain(sub, 1)
        assert d.message == msg
        assert d.attempt == 1
        assert d.position == receipt.position
        assert await d.ack() is True
        assert await d.ack() is False
        assert await kernel.bus.store.pending_count("default", "agent:bob", sub.group) == 0
        # acked: never redelivered, even after the visibility timeout
        assert await sub.receive(timeout_s=0.6) is None


async def test_publish_accepts_wire_dict_bytes_and_str(api: Api) -> None:
    wire = send().to_wire()
    r1 = await api.bus.publish(wire)
    r2 = await api.bus.publish(send().to_json())
    r3 = await api.bus.publish(send().to_json().decode())
    assert len({r1.position, r2.position, r3.position}) == 3
    history = await api.bus.history("agent:bob")
    assert [m.message_id for m in history] == [r1.message_id, r2.message_id, r3.message_id]


async def test_wire_text_in_any_layout_is_delivered_as_the_same_message(api: Api) -> None:
    # Wire text that validated is stored as given; whatever its layout, every reader gets the message back.
    import json

    msg = send(text="h\u00e9llo \u2603")
    wire = msg.to_wire()
    pretty = json.dumps(dict(reversed(list(wire.items()))), indent=2, ensure_ascii=True)
    receipt = await api.bus.publish(pretty.encode())
    assert receipt.message_id == msg.message_id
    again = await api.bus.publish(msg.to_json())
    assert again.duplicate is True
    assert again.position == receipt.position
    assert await api.bus.history("agent:bob") == [msg]
    async with api.bus.subscribe("agent:bob") as sub:
        (d,) = await drain(sub, 1)
        assert d.message == msg
        await d.ack()
    many = [send(text=str(i)) for i in range(3)]
    await api.bus.publish_many([json.dumps(m.to_wire(), indent=1) for m in many])
    assert (await api.bus.history("agent:bob"))[1:] == many


async def test_size_limits_apply_to_the_compact_encoding(open_api: OpenApi) -> None:
    # Padding wire text with whitespace does not push a message over the bus's limits.
    async with open_api(limits=BusLimits(message_bytes_max=4096)) as api:
        msg = send(text="x" * 1000)
        padded = msg.to_json().replace(b",", b"," + b" " * 2000)
        receipt = await api.bus.publish(padded, chunking=False)
        assert receipt.chunks == 0
        assert await api.bus.history("agent:bob") == [msg]


@pytest.mark.live
async def test_idempotent_publish_delivers_once(api: Api) -> None:
    msg = send()
    first = await api.bus.publish(msg)
    again = await api.bus.publish(msg.to_wire())
    assert again.duplicate is True
    assert again.position == first.position
    assert len(await api.bus.history("agent:bob")) == 1
    async with api.bus.subscribe("agent:bob") as sub:
        (d,) = await drain(sub, 1)
        await d.ack()
        assert await sub.receive(timeout_s=0.3) is None


@pytest.mark.live
async def test_queue_semantics_each_message_to_one_consumer(api: Api) -> None:
    ids = [(await api.bus.publish(send(text=str(i)))).message_id for i in range(30)]
    seen: dict[str, list[str]] = {"c1": [], "c2": []}

    async def consume(name: str, sub: sos_kernel.Subscription) -> None:
        while True:
            d = await sub.receive(timeout_s=0.5)
            if d is None:
                return
            seen[name].append(d.message.message_id)
            await d.ack()

    async with (
        api.bus.subscribe("agent:bob", consumer="c1", prefetch=2) as s1,
        api.bus.subscribe("agent:bob", consumer="c2", prefetch=2) as s2,
    ):
        assert s1.group == s2.group == "inbox"
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, "c1", s1)
            tg.start_soon(consume, "c2", s2)
    assert sorted(seen["c1"] + seen["c2"]) == sorted(ids)
    assert not set(seen["c1"]) & set(seen["c2"])
    # each consumer sees its share in stream order
    for part in seen.values():
        assert part == [i for i in ids if i in set(part)]


@pytest.mark.live
async def test_channel_fan_out_every_subscriber_sees_every_message(api: Api) -> None:
    channel = "sos:channel:news"
    async with api.bus.subscribe(channel) as s1, api.bus.subscribe(channel) as s2:
        assert s1.group != s2.group
        ids = [(await api.bus.publish(send(target=channel, text=str(i)))).message_id for i in range(5)]
        for sub in (s1, s2):
            got = await drain(sub, 5)
            assert [d.message.message_id for d in got] == ids
            for d in got:
                await d.ack()


async def test_named_groups_on_a_channel_each_get_everything(api: Api) -> None:
    channel = "sos:channel:audit"
    async with (
        api.bus.subscribe(channel, group="indexer", start="earliest") as a,
        api.bus.subscribe(channel, group="archiver", start="earliest") as b,
    ):
        msg = await api.bus.publish(send(target=channel))
        for sub in (a, b):
            (d,) = await drain(sub, 1)
            assert d.message.message_id == msg.message_id
            await d.ack()


async def test_channel_default_starts_at_latest_inbox_at_earliest(api: Api) -> None:
    await api.bus.publish(send(target="sos:channel:late"))
    early = await api.bus.publish(send(target="agent:sleeper"))
    async with api.bus.subscribe("sos:channel:late") as sub:
        assert await sub.receive(timeout_s=0.3) is None
    async with api.bus.subscribe("agent:sleeper") as sub:
        (d,) = await drain(sub, 1)
        assert d.message.message_id == early.message_id


async def test_order_is_stream_order(api: Api) -> None:
    ids = [(await api.bus.publish(send(text=str(i)))).message_id for i in range(40)]
    async with api.bus.subscribe("agent:bob", prefetch=7) as sub:
        got = await drain(sub, 40)
    assert [d.message.message_id for d in got] == ids


@pytest.mark.live
async def test_unacked_is_redelivered_after_visibility_timeout(api: Api) -> None:
    msg = send()
    await api.bus.publish(msg)
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=0.3) as sub:
        (first,) = await drain(sub, 1)
        (second,) = await drain(sub, 1)
        assert second.message.message_id == msg.message_id
        assert second.attempt == first.attempt + 1
        assert await second.ack() is True


@pytest.mark.live
async def test_nack_redelivers_after_delay(api: Api) -> None:
    await api.bus.publish(send())
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        (d,) = await drain(sub, 1)
        assert await d.nack() is True
        (again,) = await drain(sub, 1)
        assert again.attempt == 2
        assert await again.nack(delay_s=0.4) is True
        assert await sub.receive(timeout_s=0.1) is None
        (third,) = await drain(sub, 1)
        assert third.attempt == 3
        await third.ack()


@pytest.mark.parametrize("delay_s", [-1, float("nan"), float("inf"), "1", True])
async def test_a_bad_nack_delay_is_refused_and_the_delivery_stays_pending(api: Api, delay_s: Any) -> None:
    await api.bus.publish(send())
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        (d,) = await drain(sub, 1)
        with pytest.raises(InvalidArgument):
            await d.nack(delay_s)
        assert await d.ack() is True
        assert await sub.receive(timeout_s=0.3) is None


@pytest.mark.live
async def test_a_dead_letter_keeps_the_last_nack_reason(api: Api, kernel: Kernel) -> None:
    msg = send(target="sos:channel:jobs")
    async with api.bus.subscribe("sos:channel:jobs", group="workers", max_deliveries=3, start="earliest") as sub:
        await api.bus.publish(msg, receipts=True)
        for attempt in (1, 2, 3):
            (d,) = await drain(sub, 1)
            assert d.attempt == attempt
            assert await d.nack(reason=f"exit status {attempt}") is True
        assert await sub.receive(timeout_s=0.3) is None
        (dead,) = await api.bus.dead_letters("sos:channel:jobs", group="workers")
    assert (dead.message, dead.reason, dead.attempts) == (msg, "exit status 3", 3)
    receipts = [m.payload for m in await api.bus.history("agent:alice") if isinstance(m, ReceiptMessage)]
    assert [r.reason for r in receipts if r.kind == "rejected"] == ["exit status 3"]
    # buried: the kept reason went with the pending entry
    assert await kernel.bus.store.nack_reason(DEFAULT_TENANT, "sos:channel:jobs", "workers", dead.position) is None


@pytest.mark.live
async def test_an_earlier_deliverys_reason_is_named_as_such(api: Api) -> None:
    first, second = send(target="sos:channel:jobs", text="1"), send(target="sos:channel:jobs", text="2")
    opts = {"group": "workers", "max_deliveries": 2, "start": "earliest", "visibility_timeout_s": 0.5}
    async with api.bus.subscribe("sos:channel:jobs", **opts) as sub:
        await api.bus.publish(first)
        (d,) = await drain(sub, 1)
        await d.nack(reason="exit status 1")
        (d,) = await drain(sub, 1)
        await d.nack()  # a nack without a reason forgets the earlier one
        assert await sub.receive(timeout_s=0.3) is None
        await api.bus.publish(second)
        (d,) = await drain(sub, 1)
        await d.nack(reason="exit status 1")
        (d,) = await drain(sub, 1)  # its last delivery is never settled: it times out
        assert await sub.receive(timeout_s=1.5) is None
        dead = await api.bus.dead_letters("sos:channel:jobs", group="workers")
    assert [(x.message, x.reason) for x in dead] == [
        (first, "not acked after 2 deliveries"),
        (second, "not acked after 2 deliveries; delivery 1 was nacked: exit status 1"),
    ]


async def test_a_bad_nack_reason_is_refused_and_nothing_is_written(api: Api, kernel: Kernel) -> None:
    await api.bus.publish(send())
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        (d,) = await drain(sub, 1)

        async def kept() -> Any:
            return await kernel.bus.store.nack_reason(DEFAULT_TENANT, "agent:bob", sub.group, d.position)

        with pytest.raises(LimitExceeded) as over:
            await d.nack(reason="x" * (bus_service.NACK_REASON_CHARS_MAX + 1))
        assert over.value.details["limit"] == "nack_reason_chars_max"
        for bad in ("", "exit\nstatus 1", "nul\x00", "tab\there", "del\x7f", "c1\x85"):
            with pytest.raises(InvalidArgument):
                await d.nack(reason=bad)
        assert await kept() is None
        assert await kernel.bus.store.pending_count(DEFAULT_TENANT, "agent:bob", sub.group) == 1
        longest = "é" * bus_service.NACK_REASON_CHARS_MAX  # counted in characters, not bytes
        assert await d.nack(reason=longest) is True
        (again,) = await drain(sub, 1)
        assert tuple(await kept()) == (1, longest)
        assert await again.ack() is True
        assert await kept() is None  # an ack forgets it


@pytest.mark.live
async def test_pending_counts_what_a_group_has_not_settled(api: Api) -> None:
    await api.bus.publish_many([send(text="1"), send(text="2"), send(text="3")])
    assert await api.bus.pending("agent:bob") == 0
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=30, max_deliveries=1) as sub:
        first, second, third = await drain(sub, 3)
        assert await api.bus.pending("agent:bob") == 3
        assert await first.ack() is True
        assert await second.nack(delay_s=60, reason="later") is True  # given back, still pending
        assert await api.bus.pending("agent:bob", group=sub.group) == 2
        assert await third.nack() is True
        assert await sub.receive(timeout_s=0.5) is None  # its next hand-out dead-letters it
        assert await api.bus.pending("agent:bob") == 1
    assert await api.bus.pending("agent:bob", group="nobody") == 0
    assert await api.bus.pending("sos:channel:jobs") == 0
    with pytest.raises(InvalidArgument):
        await api.bus.pending("bob")
    with pytest.raises(InvalidArgument):
        await api.bus.pending("agent:bob", group="no spaces")


async def test_pending_is_read_for_ones_own_inbox_and_channels(kernel: Kernel, connect: Any) -> None:
    _, admin = await kernel.tenants.create("acme", plan="growth")
    view = kernel.tenant("acme")
    await view.bus.send("agent:alice", "agent:bob", "for bob")
    async with view.bus.subscribe("agent:bob") as sub:
        await drain(sub, 1)  # held, not settled
        bob = await connect((await view.tokens.issue(agent="agent:bob")).secret)
        alice = await connect((await view.tokens.issue(agent="agent:alice")).secret)
        writer = await connect((await view.tokens.issue(agent="agent:bob", scopes=["bus:write"])).secret)
        assert await bob.bus.pending("agent:bob") == 1
        assert await alice.bus.pending("sos:channel:global") == 0
        assert await (await connect(admin)).bus.pending("agent:bob") == 1
        for refused in (alice.bus.pending("agent:bob"), writer.bus.pending("agent:bob")):
            with pytest.raises(Forbidden):
                await refused
        # another tenant's admin counts its own tenant's group, never acme's
        _, other = await kernel.tenants.create("other", plan="growth")
        assert await (await connect(other)).bus.pending("agent:bob") == 0


@pytest.mark.live
async def test_dead_letter_after_max_deliveries_and_replay(api: Api) -> None:
    msg = send(target="sos:channel:jobs")
    async with (
        api.bus.subscribe("sos:channel:jobs", group="workers", max_deliveries=2, start="earliest") as sub,
        api.bus.subscribe("sos:channel:jobs", group="others", start="earliest") as other,
    ):
        await api.bus.publish(msg, receipts=True)
        (o,) = await drain(other, 1)
        await o.ack()
        for attempt in (1, 2):
            (d,) = await drain(sub, 1)
            assert d.attempt == attempt
            await d.nack()
        assert await sub.receive(timeout_s=0.3) is None
        dead = await api.bus.dead_letters("sos:channel:jobs", group="workers")
        assert len(dead) == 1
        assert dead[0].message == msg
        assert dead[0].attempts == 2
        assert "2 deliveries" in dead[0].reason
        rejected = [
            m
            for m in await api.bus.history("agent:alice")
            if isinstance(m, ReceiptMessage) and m.payload.kind == "rejected"
        ]
        assert [r.payload.message_id for r in rejected] == [msg.message_id]

        replayed = await api.bus.replay(dead[0])
        assert replayed.message_id == msg.message_id
        (back,) = await drain(sub, 1)
        assert back.message == msg
        assert back.attempt == 1
        await back.ack()
        assert await api.bus.dead_letters("sos:channel:jobs", group="workers") == []
        # the replay is for the group that gave up only
        assert await other.receive(timeout_s=0.3) is None
        with pytest.raises(NotFound):
            await api.bus.replay(dead[0])
    # history shows the message once
    assert [m.message_id for m in await api.bus.history("sos:channel:jobs")] == [msg.message_id]


async def test_history_reads_without_consuming_and_pages(api: Api) -> None:
    receipts = [await api.bus.publish(send(text=str(i))) for i in range(7)]
    page1 = await api.bus.history_entries("agent:bob", limit=3)
    assert [m.payload.text for _, m in page1] == ["0", "1", "2"]  # type: ignore[attr-defined]
    page2 = await api.bus.history("agent:bob", after=page1[-1][0], limit=3)
    assert [m.payload.text for m in page2] == ["3", "4", "5"]  # type: ignore[attr-defined]
    by_id = await api.bus.history("agent:bob", after=receipts[5].message_id)
    assert [m.payload.text for m in by_id] == ["6"]  # type: ignore[attr-defined]
    async with api.bus.subscribe("agent:bob") as sub:
        assert len(await drain(sub, 7)) == 7
    assert len(await api.bus.history("agent:bob", limit=100)) == 7
    with pytest.raises(InvalidArgument):
        await api.bus.history("agent:bob", limit=0)
    with pytest.raises(InvalidArgument):
        await api.bus.history("agent:bob", after=str(uuid.uuid4()))


async def test_retention_bounds_each_address(open_api: OpenApi) -> None:
    limits = BusLimits(retention_count_max=10)
    async with open_api(limits=limits) as api:
        ids = [r.message_id for r in await api.bus.publish_many([send(text=str(i)) for i in range(600)])]
        ids += [r.message_id for r in await api.bus.publish_many([send(text=str(i)) for i in range(600)])]
        kept = [m.message_id for m in await api.bus.history("agent:bob", limit=10_000)]
        # the newest count_max are always kept; trimming may lag by at most 1000 entries
        assert kept[-10:] == ids[-10:]
        assert 10 <= len(kept) <= 10 + 1000
        assert kept == ids[-len(kept) :]


async def test_retention_counts_messages_not_publish_many_calls(open_api: OpenApi) -> None:
    # 3000 messages in six batches are trimmed as 3000 single publishes would be: within the same lag.
    async with open_api(limits=BusLimits(retention_count_max=10)) as api:
        ids: list[str] = []
        for batch in range(6):
            sent = await api.bus.publish_many([send(text=f"{batch}.{i}") for i in range(500)])
            ids += [r.message_id for r in sent]
        kept = [m.message_id for m in await api.bus.history("agent:bob", limit=10_000)]
        assert kept[-10:] == ids[-10:]
        assert 10 <= len(kept) <= 10 + 1000
        assert kept == ids[-len(kept) :]


async def test_a_message_id_is_a_duplicate_for_its_window_whatever_retention_keeps(open_api: OpenApi) -> None:
    # the window outlives the entry (trimmed by count) and ends while an entry is still kept; a duplicate never
    # takes a position
    window = 5.0  # long enough for the 1200 publishes below on a loaded machine, in whole seconds for Redis
    async with open_api(limits=BusLimits(retention_count_max=3, dedup_window_s=window)) as api:
        kept, gone = send(text="kept"), send(target="agent:carol", text="gone")
        first_kept, first_gone = await api.bus.publish(kept), await api.bus.publish(gone)
        stored = anyio.current_time()  # both windows began before this
        for _ in range(2):  # past the count trim's lag (TRIM_EVERY_APPENDS)
            await api.bus.publish_many([send(target="agent:carol", text=str(i)) for i in range(600)])
        before = await api.bus.publish(send(target="agent:carol"))
        again = await api.bus.publish(gone)
        assert (again.duplicate, again.position) == (True, first_gone.position)
        assert gone not in await api.bus.history("agent:carol", limit=100)
        assert (await api.bus.publish(kept)).position == first_kept.position
        after = await api.bus.publish(send(target="agent:carol"))
        if after.position.isdigit():
            assert int(after.position) == int(before.position) + 1
        await anyio.sleep(stored + window + 0.3 - anyio.current_time())  # past both windows
        renewed = await api.bus.publish(kept)
        assert renewed.duplicate is False
        assert renewed.position != first_kept.position
        assert await api.bus.history("agent:bob") == [kept, kept]  # the first entry is still kept
        assert (await api.bus.publish(kept)).position == renewed.position  # remembered again, at its new place
        assert (await api.bus.publish(gone)).duplicate is False


async def test_retention_by_age(open_api: OpenApi) -> None:
    async with open_api(limits=BusLimits(retention_age_s=0.3)) as api:
        old = await api.bus.publish(send(text="old"))
        await anyio.sleep(0.5)  # age-based retention needs time to pass
        new = await api.bus.publish(send(text="new"))
        kept = [m.message_id for m in await api.bus.history("agent:bob")]
        assert kept == [new.message_id]
        assert old.message_id not in kept


@pytest.mark.live
async def test_publish_many_is_all_or_nothing(api: Api) -> None:
    good = [send(text=str(i)) for i in range(3)]
    bad: dict[str, Any] = {**send().to_wire(), "type": "sned"}
    with pytest.raises(UnknownType) as info:
        await api.bus.publish_many([*good, bad])
    assert info.value.details["index"] == 3
    assert await api.bus.history("agent:bob") == []
    receipts = await api.bus.publish_many([*good, good[0], send(target="agent:carol")])
    assert [r.duplicate for r in receipts] == [False, False, False, True, False]
    assert receipts[3].position == receipts[0].position
    assert len(await api.bus.history("agent:bob")) == 3
    assert len(await api.bus.history("agent:carol")) == 1
    with pytest.raises(LimitExceeded):
        await api.bus.publish_many([send() for _ in range(api.limits.batch_max + 1)])
    assert await api.bus.publish_many([]) == []


@pytest.mark.live
async def test_ask_and_reply(api: Api) -> None:
    async def oracle() -> None:
        async with api.bus.subscribe("agent:oracle") as sub:
            d = await sub.receive(timeout_s=5)
            assert d is not None
            await api.bus.reply(d.message, "42")
            await d.ack()

    async with anyio.create_task_group() as tg:
        tg.start_soon(oracle)
        reply = await api.bus.ask("agent:alice", "agent:oracle", "meaning of life?", timeout_s=5)
    assert reply.payload.text == "42"
    assert reply.source == "agent:oracle"
    asks = await api.bus.history("agent:oracle")
    assert reply.reply_to == asks[0].message_id


@pytest.mark.live
async def test_a_reply_from_its_delivery_answers_and_acks_it(api: Api) -> None:
    async def oracle() -> None:
        async with api.bus.subscribe("agent:oracle") as sub:
            d = await sub.receive(timeout_s=5)
            assert d is not None
            receipt = await d.reply("42")
            assert receipt.address == d.message.payload.reply_channel
            assert await api.bus.pending("agent:oracle", group=sub.group) == 0  # acked with the reply
            assert await d.ack() is False
            with pytest.raises(InvalidArgument) as info:
                await d.reply("again")
            assert info.value.code == "SOS-4005"

    async with anyio.create_task_group() as tg:
        tg.start_soon(oracle)
        reply = await api.bus.ask("agent:alice", "agent:oracle", "meaning of life?", timeout_s=5)
    assert (reply.payload.text, reply.source) == ("42", "agent:oracle")
    assert reply.reply_to == (await api.bus.history("agent:oracle"))[0].message_id


async def test_a_refused_reply_from_a_delivery_leaves_it_pending(kernel: Kernel, connect: Any) -> None:
    _, _ = await kernel.tenants.create("acme", plan="growth")
    view = kernel.tenant("acme")
    await view.bus.send("agent:alice", "agent:bob", "for bob")
    bob = await connect((await view.tokens.issue(agent="agent:bob")).secret)
    async with bob.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        (d,) = await drain(sub, 1)
        with pytest.raises(Forbidden):  # a session replies only as its own agent
            await d.reply("as alice", source="agent:alice")
        with pytest.raises(SchemaViolation):
            await d.reply("x", content_type="text/html")
        assert await view.bus.pending("agent:bob", group=sub.group) == 1
        assert [m.type for m in await view.bus.history("agent:alice")] == []  # nothing was sent
        receipt = await d.reply("from bob")  # still held: it can be answered (and acked) now
        assert await view.bus.pending("agent:bob", group=sub.group) == 0
    (answer,) = await view.bus.history("agent:alice")
    assert (answer.source, answer.payload.text, answer.message_id) == ("agent:bob", "from bob", receipt.message_id)


async def handed_twice(kernel: Kernel, text: str) -> tuple[sos_kernel.Delivery, sos_kernel.Delivery]:
    """One message to agent:bob handed to consumer a, then (a's lease expired) handed again to consumer b."""
    await kernel.bus.send("agent:alice", "agent:bob", text)
    async with kernel.bus.subscribe("agent:bob", consumer="a", visibility_timeout_s=0.3) as a:
        (first,) = await drain(a, 1)
    async with kernel.bus.subscribe("agent:bob", consumer="b", visibility_timeout_s=0.3) as b:
        (second,) = await drain(b, 1)
    assert (first.position, first.attempt, second.attempt) == (second.position, 1, 2)
    return first, second


async def test_a_reply_from_a_delivery_no_longer_held_stores_no_reply(kernel: Kernel) -> None:
    taken, holder = await handed_twice(kernel, "taken over")
    with pytest.raises(InvalidArgument) as info:  # b holds it now: a's reply and ack are refused together
        await taken.reply("late")
    assert (info.value.code, info.value.message) == ("SOS-4005", bus_service.UNHELD_REPLY)
    assert await kernel.bus.pending("agent:bob", group="inbox") == 1
    assert await taken.ack() is False  # settled by the refusal
    assert await holder.ack() is True

    acked, other = await handed_twice(kernel, "acked elsewhere")
    assert await other.ack() is True
    with pytest.raises(InvalidArgument):
        await acked.reply("late")
    assert await kernel.bus.history("agent:alice") == []  # neither late reply was stored


@pytest.mark.parametrize("settle", ["ack", "nack"])
async def test_a_stale_ack_or_nack_changes_nothing_and_the_redelivery_stays_with_its_holder(
    api: Api, kernel: Kernel, settle: str
) -> None:
    # a's lease expired and b holds the entry now: a's late ack (or nack) is "no longer pending" and changes nothing
    await kernel.bus.send("agent:alice", "agent:bob", settle)
    async with api.bus.subscribe("agent:bob", consumer="a", visibility_timeout_s=0.3) as a:
        (first,) = await drain(a, 1)
    # b's lease is short too: a Redis store looks for due retries every quarter of it
    async with kernel.bus.subscribe("agent:bob", consumer="b", visibility_timeout_s=2) as b:
        (second,) = await drain(b, 1)
        assert (second.position, second.attempt) == (first.position, 2)
        assert await (first.ack() if settle == "ack" else first.nack(reason="late")) is False
        assert await kernel.bus.pending("agent:bob", group="inbox") == 1
        assert await kernel.bus.store.nack_reason(DEFAULT_TENANT, "agent:bob", "inbox", second.position) is None
        assert await b.receive(timeout_s=0.5) is None  # not made due again under b's feet
        assert await second.ack() is True
    assert await kernel.bus.pending("agent:bob", group="inbox") == 0


async def test_a_peer_with_a_shorter_lease_takes_nothing_another_consumer_holds(api: Api, kernel: Kernel) -> None:
    # each hand-out keeps its own lease: b's 0.05 s visibility does not make a's 30 s hand-out due for b
    await kernel.bus.send("agent:alice", "agent:bob", "held for 30 s")
    async with api.bus.subscribe("agent:bob", consumer="a", visibility_timeout_s=30) as a:
        (held,) = await drain(a, 1)
        async with api.bus.subscribe("agent:bob", consumer="b", visibility_timeout_s=0.05) as b:
            assert await b.receive(timeout_s=1.5) is None
        assert await held.ack() is True
    assert await kernel.bus.pending("agent:bob", group="inbox") == 0


async def test_a_short_hand_out_is_redelivered_to_a_peer_with_a_longer_lease_at_its_own_deadline(
    kernel: Kernel,
) -> None:
    # a's 0.5 s hand-out falls due at its own deadline for b too, though b's lease is 30 s
    await kernel.bus.send("agent:alice", "agent:bob", "held for 0.5 s")
    async with kernel.bus.subscribe("agent:bob", consumer="a", visibility_timeout_s=0.5) as a:
        (first,) = await drain(a, 1)
        async with kernel.bus.subscribe("agent:bob", consumer="b", visibility_timeout_s=30) as b:
            started = time.monotonic()
            again = await b.receive(timeout_s=4)
            assert again is not None
            assert (again.position, again.attempt) == (first.position, 2)
            assert 0.3 < time.monotonic() - started < 3
            assert await first.ack() is False
            assert await again.ack() is True


async def test_a_nack_delay_longer_than_the_lease_holds_the_entry_for_the_whole_delay(kernel: Kernel) -> None:
    await kernel.bus.send("agent:alice", "agent:bob", "later")
    async with kernel.bus.subscribe("agent:bob", visibility_timeout_s=0.2) as sub:
        (first,) = await drain(sub, 1)
        assert await first.nack(delay_s=1.5) is True
        assert await sub.receive(timeout_s=0.9) is None  # past the 0.2 s lease, within the delay
        again = await sub.receive(timeout_s=3)
        assert again is not None
        assert (again.position, again.attempt) == (first.position, 2)
        assert await again.ack() is True


async def test_a_short_hand_out_behind_600_long_ones_falls_due_within_a_few_claims(kernel: Kernel) -> None:
    # a claim looks through a bounded number of pending entries (Redis: REDELIVERY_SCAN_MAX), going on from there
    store, t, a, g = kernel.bus.store, DEFAULT_TENANT, "agent:bob", "inbox"
    await store.ensure_group(t, a, g, "earliest")
    await kernel.bus.publish_many([send(text=f"m{i}") for i in range(601)])
    held = 0
    while held < 600:  # a store may hand out fewer per claim
        got = await store.claim(t, a, g, "long", 600 - held, 30_000)
        assert got
        held += len(got)
    [short] = await store.claim(t, a, g, "short", 1, 200)
    await anyio.sleep(0.4)
    taken: list[bus_store.Claimed] = []
    for _ in range(3):
        taken += await store.claim(t, a, g, "peer", 5, 30_000)
        if taken:
            break
    assert [(c.position, c.attempt) for c in taken] == [(short.position, 2)]


async def test_of_concurrent_acks_and_nacks_of_one_entry_only_its_current_holder_settles_it(kernel: Kernel) -> None:
    # hand-outs 1..5 of one entry settle it at once, from two connections where the engine has them: 5 wins
    store, t, a, g = kernel.bus.store, DEFAULT_TENANT, "agent:bob", "inbox"
    await kernel.bus.send("agent:alice", a, "contended")
    await store.ensure_group(t, a, g, "earliest")
    [held] = await store.claim(t, a, g, "c1", 1, 30_000)
    for n in range(2, 6):
        assert await store.nack(t, a, g, held.position, n - 1, 0, 30_000)
        [held] = await store.claim(t, a, g, f"c{n}", 1, 30_000)
    assert held.attempt == 5
    async with contextlib.AsyncExitStack() as stack:
        stores = [store]
        if not kernel.url.startswith("memory"):
            stores.append((await stack.enter_async_context(sos_kernel.open(kernel.url))).bus.store)
        won: dict[int, bool] = {}

        async def settle(attempt: int) -> None:
            s = stores[attempt % len(stores)]
            won[attempt] = await (
                s.ack(t, a, g, held.position, attempt)
                if attempt % 2
                else s.nack(t, a, g, held.position, attempt, 0, 30_000, "stale")
            )

        async with anyio.create_task_group() as tg:
            for attempt in (4, 1, 5, 2, 3):
                tg.start_soon(settle, attempt)
    assert won == {1: False, 2: False, 3: False, 4: False, 5: True}
    assert await store.pending_count(t, a, g) == 0
    assert await store.claim(t, a, g, "c6", 1, 30_000) == []


async def test_a_reply_and_ack_failing_inside_the_step_leaves_it_pending_and_no_reply(
    kernel: Kernel, kernel_url: str, implements: Any
) -> None:
    requires(implements, durable=True)  # an engine that can refuse a write inside the step (memory has none)
    await kernel.bus.send("agent:alice", "agent:bob", "question")
    async with kernel.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        (d,) = await drain(sub, 1)
        async with failing_appends_to("agent:alice", kernel_url):
            with pytest.raises(BackendFailure):
                await d.reply("answer")
            assert await kernel.bus.pending("agent:bob", group=sub.group) == 1
        assert await kernel.bus.history("agent:alice") == []
        await d.reply("answer")  # still held: answered and acked once the engine accepts it
        assert await kernel.bus.pending("agent:bob", group=sub.group) == 0
    assert [m.payload.text for m in await kernel.bus.history("agent:alice")] == ["answer"]


@contextlib.asynccontextmanager
async def failing_appends_to(address: str, kernel_url: str) -> Any:
    """Make the engine refuse an append to ``address`` (a SQLite trigger, a Redis key of the wrong type)."""
    if kernel_url.startswith("sqlite"):
        import sqlite3

        path = kernel_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as c:
            c.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON bus_entries WHEN NEW.address = ?"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END".replace("?", f"'{address}'")
            )
            c.commit()
        yield
        with contextlib.closing(sqlite3.connect(path)) as c:
            c.execute("DROP TRIGGER refuse")
            c.commit()
        return
    from sos_kernel.backends.redis_call import tenant_prefix

    from ..redis_cluster import async_client

    key = tenant_prefix(DEFAULT_TENANT) + "stream:" + address
    client = async_client(kernel_url)  # one server, or the cluster
    try:
        await client.set(key, "not a stream")
        yield
        await client.delete(key)
    finally:
        await client.aclose()


async def test_two_consumers_replying_to_one_redelivered_entry_store_one_reply(kernel: Kernel) -> None:
    first, second = await handed_twice(kernel, "who answers?")
    outcomes: list[str] = []

    async def answer(d: sos_kernel.Delivery, text: str) -> None:
        try:
            await d.reply(text)
            outcomes.append(text)
        except InvalidArgument:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        tg.start_soon(answer, first, "from a")
        tg.start_soon(answer, second, "from b")
    assert sorted(outcomes) == ["from b", "refused"]
    assert [m.payload.text for m in await kernel.bus.history("agent:alice")] == ["from b"]
    assert await kernel.bus.pending("agent:bob", group="inbox") == 0


async def test_ask_times_out_with_typed_error(api: Api) -> None:
    with pytest.raises(AskTimeout) as info:
        await api.bus.ask("agent:alice", "agent:nobody", "anyone?", timeout_s=0.3)
    assert info.value.code == "SOS-6004"
    assert info.value.retryable is True


async def test_pending_asks_are_bounded_per_agent_and_per_tenant(open_api: OpenApi) -> None:
    async with open_api(limits=BusLimits(agent_asks_pending_max=2, tenant_asks_pending_max=3)) as api:

        async def ask(source: str) -> None:
            await api.bus.ask(source, "agent:oracle", "hold on", timeout_s=30)

        async def refused(source: str, limit: str) -> None:
            with pytest.raises(LimitExceeded) as info:
                await api.bus.ask(source, "agent:oracle", "one more", timeout_s=30)
            assert (info.value.code, info.value.details["limit"]) == ("SOS-4010", limit)

        async with anyio.create_task_group() as tg, api.bus.subscribe("agent:oracle") as oracle:
            for source in ("agent:alice", "agent:alice", "agent:bob"):
                tg.start_soon(ask, source)
            asks = await drain(oracle, 3)
            await refused("agent:alice", "agent_asks_pending_max")
            await refused("agent:carol", "tenant_asks_pending_max")
            assert len(await api.bus.history("agent:oracle")) == 3  # a refused ask publishes nothing
            for d in asks:
                await api.bus.reply(d.message, "done", source="agent:oracle")
                await d.ack()
        # answered asks free their places
        with pytest.raises(AskTimeout):
            await api.bus.ask("agent:alice", "agent:oracle", "again", timeout_s=0.2)


async def test_helpers_publish_core_types(api: Api) -> None:
    await api.registry.register(AgentCard(name="bob", tool="sdk", type="service", role="executor"))
    await api.bus.announce("agent:alice", "hello", tool="sdk", pid=1)
    await api.bus.wake("agent:alice", "agent:bob", "wake up", priority="high")
    await api.bus.send("agent:alice", "agent:bob", "# hi", content_type="text/markdown")
    assert [m.type for m in await api.bus.history("sos:channel:global")] == ["announce"]
    assert [m.type for m in await api.bus.history("agent:bob")] == ["wake", "send"]


def big_result(n_bytes: int) -> TaskCompletedMessage:
    return TaskCompletedMessage(
        source="agent:alice",
        target="agent:bob",
        payload=TaskCompletedPayload(
            task_id="t1", status="done", completed_at=utcnow(), result={"blob": "x" * n_bytes}
        ),
    )


@pytest.mark.live
async def test_large_payload_is_chunked_and_arrives_whole(api: Api) -> None:
    msg = big_result(1_000_000)
    receipt = await api.bus.publish(msg)
    assert receipt.chunks >= 1_000_000 // api.limits.message_bytes_max
    async with api.bus.subscribe("agent:bob") as sub:
        (d,) = await drain(sub, 1)
    assert d.message == msg
    assert d.message.to_json() == msg.to_json()
    # a retry of the same large message is a duplicate, not a second copy
    assert (await api.bus.publish(msg)).duplicate is True
    assert len(await api.bus.history("agent:bob")) == 1


async def test_corrupted_chunk_is_detected_and_nothing_delivered(api: Api) -> None:
    msg = big_result(200_000)
    parts = api.bus.split(msg)
    assert len(parts) > 2
    victim = parts[1]
    raw = bytearray(base64.b64decode(victim.payload.data))
    raw[10] ^= 0xFF
    tampered = victim.model_copy(
        update={"payload": victim.payload.model_copy(update={"data": base64.b64encode(bytes(raw)).decode()})}
    )
    for part in [parts[0], tampered]:
        receipt = await api.bus.publish(part)
        assert receipt.complete is False
    for part in parts[2:-1]:
        assert (await api.bus.publish(part)).complete is False
    with pytest.raises(ChunkIntegrityError):
        await api.bus.publish(parts[-1])
    assert await api.bus.history("agent:bob") == []
    # a full, correct resend then goes through
    for part in parts:
        receipt = await api.bus.publish(part)
    assert receipt.complete
    assert receipt.message_id == msg.message_id
    assert [m.message_id for m in await api.bus.history("agent:bob")] == [msg.message_id]


async def test_oversize_refused_without_chunking_and_over_payload_max(open_api: OpenApi) -> None:
    async with open_api(limits=BusLimits(payload_bytes_max=300_000)) as api:
        with pytest.raises(LimitExceeded) as info:
            await api.bus.publish(big_result(100_000), chunking=False)
        assert info.value.details["limit"] == "message_bytes_max"
        with pytest.raises(LimitExceeded) as info:
            await api.bus.publish(big_result(400_000))
        assert info.value.details["limit"] == "payload_bytes_max"
        assert await api.bus.history("agent:bob") == []


BAD_INPUT = [
    ({"source": "agent:alice"}, MissingType, "SOS-4002"),
    ({"type": "sned"}, UnknownType, "SOS-4004"),
    ({"payload": {"text": 5, "content_type": "text/plain"}}, SchemaViolation, "SOS-4001"),
    ({"extra": 1}, SchemaViolation, "SOS-4001"),
    ({"payload": {"text": "x" * 16385, "content_type": "text/plain"}}, SchemaViolation, "SOS-4001"),
    ({"source": "Agent:Mallory"}, InvalidSource, "SOS-4003"),
]


@pytest.mark.parametrize(("change", "error", "code"), BAD_INPUT)
async def test_bad_input_is_refused_and_nothing_stored(
    api: Api, change: dict[str, Any], error: type[Exception], code: str
) -> None:
    wire = {**send().to_wire(), **change}
    if change == {"source": "agent:alice"}:
        del wire["type"]
    with pytest.raises(error) as info:
        await api.bus.publish(wire)
    assert info.value.code == code  # type: ignore[attr-defined]
    assert await api.bus.history("agent:bob") == []
    with pytest.raises(SchemaViolation):
        await api.bus.publish(b"{not json")
    assert await api.bus.history("agent:bob") == []


async def test_receipts_flow_back_to_the_source(api: Api) -> None:
    msg = send()
    await api.bus.publish(msg, receipts=True)
    async with api.bus.subscribe("agent:bob") as sub:
        (d,) = await drain(sub, 1)
        await d.ack()
    receipts = [m for m in await api.bus.history("agent:alice") if isinstance(m, ReceiptMessage)]
    assert [(r.payload.kind, r.payload.message_id) for r in receipts] == [
        ("delivered", msg.message_id),
        ("processed", msg.message_id),
    ]
    assert receipts[0].source == "agent:bob"
    # no receipts unless asked for
    await api.bus.publish(send(text="quiet"))
    async with api.bus.subscribe("agent:bob") as sub:
        (d,) = await drain(sub, 1)
        await d.ack()
    assert len(await api.bus.history("agent:alice")) == 2


async def test_tenants_are_isolated(kernel: Kernel) -> None:
    a, b = kernel.tenant("acme"), kernel.tenant("globex")
    msg = send()
    await a.bus.publish(msg)
    assert await b.bus.history("agent:bob") == []
    assert await kernel.bus.history("agent:bob") == []
    # the same message id is independent per tenant
    assert (await b.bus.publish(msg)).duplicate is False
    async with b.bus.subscribe("agent:bob") as sub:
        (d,) = await drain(sub, 1)
        await d.ack()
        assert await sub.receive(timeout_s=0.2) is None
    with pytest.raises(InvalidArgument):
        kernel.tenant("Bad Slug")


async def test_positions_reveal_nothing_of_other_tenants_traffic(kernel: Kernel) -> None:
    # A position is a count of the tenant's own entries (memory, SQLite) or a clock reading with a count of its own
    # stream's entries in that millisecond (Redis): whatever a neighbour publishes, it does not show.
    quiet, busy = kernel.tenant("globex").bus, kernel.tenant("acme").bus
    first = await quiet.publish(send())
    for _ in range(3):
        await busy.publish_many([send() for _ in range(100)])
        await busy.publish(send(target="sos:channel:ops"))
    clock_ms = int(time.time() * 1000)
    second = await quiet.publish(send())
    async with quiet.subscribe("agent:bob") as sub:
        delivered = [d.position for d in await drain(sub, 2)]
    read = [p for p, _ in await quiet.history_entries("agent:bob")]
    assert delivered == read == [first.position, second.position]
    if first.position.isdigit():
        assert int(second.position) == int(first.position) + 1
    else:
        at_ms, seq = (int(part) for part in second.position.split("-"))
        assert abs(at_ms - clock_ms) < 1000
        assert seq == 0


async def test_positions_reveal_nothing_of_other_addresses_traffic(api: Api) -> None:
    # Within a tenant too, an address's positions count its own entries (memory, SQLite) or are its own stream's
    # ids (Redis): what the tenant's other agents receive does not show.
    first = await api.bus.publish(send(target="agent:alice"))
    await api.bus.publish_many([send(target="agent:bob") for _ in range(5)])
    second = await api.bus.publish(send(target="agent:alice"))
    mixed = await api.bus.publish_many([send(target=t) for t in ("agent:bob", "agent:alice", "agent:bob")])
    mine = [first.position, second.position, mixed[1].position]
    assert [p for p, _ in await api.bus.history_entries("agent:alice")] == mine
    if all(p.isdigit() for p in mine):
        assert [int(p) - int(first.position) for p in mine] == [0, 1, 2]
    else:
        assert all(int(p.split("-")[1]) < len(mine) for p in mine)  # counts alice's entries in its millisecond


async def _bury_one(bus: sos_kernel.Bus, group: str) -> str:
    async with bus.subscribe("sos:channel:jobs", group=group, max_deliveries=1) as sub:
        await bus.publish(send(target="sos:channel:jobs"))
        (d,) = await drain(sub, 1)
        await d.nack()
        assert await sub.receive(timeout_s=0.2) is None
    (dead,) = await bus.dead_letters("sos:channel:jobs", group=group)
    return dead.id


async def test_dead_letter_ids_reveal_nothing_of_other_tenants_traffic(kernel: Kernel) -> None:
    # A dead letter is named within its own stream, never by a counter shared with other tenants.
    quiet, busy = kernel.tenant("globex").bus, kernel.tenant("acme").bus
    before = await _bury_one(quiet, "first")
    for n in range(3):
        await _bury_one(busy, f"g{n}")
    await quiet.publish(send(target="sos:channel:jobs", text="x"))
    after = await _bury_one(quiet, "second")
    if before.isdigit():
        assert int(after) == int(before) + 2  # its own two entries since, nothing of acme's
    else:
        assert after.split("-")[1] == "0"


async def test_a_sqlite_bus_numbering_all_tenants_in_one_sequence_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.execute("CREATE TABLE bus_entries (pos INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT, address TEXT)")
    with pytest.raises(BackendFailure, match="not this version's layout"):
        async with sos_kernel.open(f"sqlite:///{path}"):
            pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"visibility_timeout_s": 0},
        {"visibility_timeout_s": -1},
        {"max_deliveries": 0},
        {"prefetch": 0},
        {"prefetch": 10**6},
        {"group": "has space"},
        {"consumer": ""},
        {"start": "middle"},
    ],
)
async def test_subscribe_validates_arguments(api: Api, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        api.bus.subscribe("agent:bob", **kwargs)


async def test_addresses_are_validated(api: Api) -> None:
    for bad in ("bob", "agent:Bob", "sos:channel:", "channel:x"):
        with pytest.raises(InvalidArgument) as info:
            api.bus.subscribe(bad)
        assert info.value.code == "SOS-4005"
        with pytest.raises(InvalidArgument):
            await api.bus.history(bad)


async def test_closed_kernel_refuses_calls(kernel_url: str) -> None:
    kernel = await sos_kernel.open(kernel_url)
    await kernel.aclose()
    await kernel.aclose()
    with pytest.raises(KernelClosed):
        await kernel.bus.publish(send())


async def test_durable_backends_keep_messages_across_reopen(kernel_url: str, implements: Any) -> None:
    requires(implements, durable=True)
    async with sos_kernel.open(kernel_url) as kernel:
        msg = send()
        await kernel.bus.publish(msg)
        async with kernel.bus.subscribe("agent:bob", visibility_timeout_s=0.2) as sub:
            (d,) = await drain(sub, 1)  # taken, never acked: the crash case
            assert d.attempt == 1
    async with sos_kernel.open(kernel_url) as kernel:
        assert [m.message_id for m in await kernel.bus.history("agent:bob")] == [msg.message_id]
        async with kernel.bus.subscribe("agent:bob", visibility_timeout_s=0.2) as sub:
            (d,) = await drain(sub, 1)
            assert d.message.message_id == msg.message_id
            assert d.attempt == 2
            await d.ack()
        assert (await kernel.bus.publish(msg)).duplicate is True


async def test_unknown_scheme_suggests_the_closest() -> None:
    with pytest.raises(InvalidURL) as info:
        await sos_kernel.open("reddis://localhost")
    assert "did you mean 'redis://localhost'" in info.value.message
    with pytest.raises(InvalidURL):
        await sos_kernel.open("sqlite:///:memory:")
    with pytest.raises(InvalidURL):
        await sos_kernel.open("no-scheme")
    for bad in ("sqlite:///x\x00.db", "sqlite:///%00x.db", "redis://[::1/0", "sqlite://h:99999/x.db"):
        with pytest.raises(InvalidURL):
            await sos_kernel.open(bad)


async def _oracle(bus: sos_kernel.Bus, answers: int) -> None:
    async with bus.subscribe("agent:oracle") as sub:
        for _ in range(answers):
            d = await sub.receive(timeout_s=30)
            assert d is not None
            await bus.reply(d.message, "42")
            await d.ack()


async def test_an_instant_reply_is_never_missed(kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the wait cap far beyond the ask's timeout, a reply that lands between the ask's read of its channel and
    # its wait would only be found after the timeout: any lost wake-up fails an ask here, whatever the timing.
    monkeypatch.setattr(bus_service, "WAIT_CAP_S", 600.0)
    asks = 1000
    async with anyio.create_task_group() as tg:
        tg.start_soon(_oracle, kernel.bus, asks)
        for i in range(asks):
            reply = await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=20)
            assert reply.payload.text == "42"


async def test_reply_channels_left_by_a_thousand_asks_are_bounded(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ask that ends unanswered (timed out, cancelled) leaves nothing; an answered one leaves nothing either, or
    # on a store that expires reply channels its reply, until REPLY_CHANNEL_TTL_S after it was written.
    monkeypatch.setattr(bus_store, "REPLY_CHANNEL_TTL_S", 1.0)
    asks = 1000
    store = kernel.bus.store
    async with anyio.create_task_group() as tg:
        tg.start_soon(_oracle, kernel.bus, asks)
        for i in range(asks):
            await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=20)
    answered_at = time.monotonic()
    with pytest.raises(AskTimeout):
        await kernel.bus.ask("agent:alice", "agent:nobody", "q", timeout_s=0.2)
    with anyio.move_on_after(0.2):
        await kernel.bus.ask("agent:alice", "agent:nobody", "q", timeout_s=20)
    answered = [m.payload.reply_channel for m in await kernel.bus.history("agent:oracle", limit=asks)]
    unanswered = [m.payload.reply_channel for m in await kernel.bus.history("agent:nobody")]
    assert (len(answered), len(unanswered)) == (asks, 2)
    for channel in unanswered:
        assert await store.history(DEFAULT_TENANT, channel, None, 10) == []
    kept = [c for c in answered if await store.history(DEFAULT_TENANT, c, None, 10)]
    assert set(kept) <= (set(answered) if store.expires_reply_channels else set())
    await anyio.sleep(max(0.0, answered_at + bus_store.REPLY_CHANNEL_TTL_S + 0.1 - time.monotonic()))
    for channel in answered:
        assert await store.history(DEFAULT_TENANT, channel, None, 10) == []


async def test_a_publisher_in_a_loop_lets_a_consumer_of_the_same_loop_progress(kernel: Kernel) -> None:
    received_while_publishing: list[int] = []
    done = anyio.Event()

    async def consumer() -> None:
        async with kernel.bus.subscribe("agent:bob") as sub:
            while True:
                d = await sub.receive(timeout_s=5)
                if d is None:
                    return
                await d.ack()
                if not done.is_set():
                    received_while_publishing.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.05)  # subscribed
        for i in range(500):
            await kernel.bus.publish(send(text=f"m{i}"))
        done.set()
        tg.cancel_scope.cancel()
    assert received_while_publishing


async def test_consumers_of_one_group_each_get_distinct_entries_and_an_abandoned_one_is_reclaimed_once(
    api: Api,
) -> None:
    lease_s = 3.0  # a delivery in flight to a remote consumer is acked well within it, even on a loaded runner
    abandoned = await api.bus.publish(send(text="abandoned"))
    async with api.bus.subscribe("agent:bob", consumer="gone", visibility_timeout_s=lease_s) as sub:
        (first,) = await drain(sub, 1)  # taken, never acked: its consumer is gone
        assert first.message.message_id == abandoned.message_id
    seen: dict[str, list[tuple[str, int]]] = {f"c{i}": [] for i in range(4)}
    n = 40
    done, all_in = anyio.Event(), anyio.Event()

    async def consume(name: str, sub: sos_kernel.Subscription) -> None:
        while not done.is_set():
            d = await sub.receive(timeout_s=0.1)
            if d is not None:
                seen[name].append((d.message.message_id, d.attempt))
                await d.ack()
                if sum(len(v) for v in seen.values()) >= n + 1:
                    all_in.set()

    async with contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(
                api.bus.subscribe("agent:bob", consumer=name, visibility_timeout_s=lease_s, prefetch=1)
            )
            for name in seen
        ]
        async with anyio.create_task_group() as tg:
            for name, sub in zip(seen, subs, strict=True):
                tg.start_soon(consume, name, sub)
            ids = [(await api.bus.publish(send(text=str(i)))).message_id for i in range(n)]
            with anyio.fail_after(10):
                await all_in.wait()
            await anyio.sleep(lease_s * 1.5)  # long enough for a second, wrong reclaim to show
            done.set()
    got = [pair for part in seen.values() for pair in part]
    assert sorted(m for m, _ in got) == sorted([*ids, abandoned.message_id])
    assert [a for m, a in got if m == abandoned.message_id] == [2]  # reclaimed once, by one consumer
    assert all(a == 1 for m, a in got if m != abandoned.message_id)
    for part in seen.values():  # each consumer's share in stream order
        mine = [m for m, _ in part if m != abandoned.message_id]
        assert mine == [i for i in ids if i in set(mine)]


async def test_at_the_retention_cap_readers_continue_from_the_oldest_kept_entry(open_api: OpenApi) -> None:
    async with open_api(limits=BusLimits(retention_count_max=10)) as api:
        first = await api.bus.publish(send(text="first"))
        async with api.bus.subscribe("agent:bob", visibility_timeout_s=0.2) as sub:
            await drain(sub, 1)  # pending, never acked; trimmed below while pending
        ids: list[str] = []
        for batch in range(2):
            ids += [r.message_id for r in await api.bus.publish_many([send(text=f"{batch}.{i}") for i in range(750)])]
        kept = [m.message_id for m in await api.bus.history("agent:bob", after=first.position, limit=10_000)]
        assert 10 <= len(kept) <= 10 + 1000
        assert kept == ids[-len(kept) :]
        assert [m.message_id for m in await api.bus.history("agent:bob", limit=5)] == kept[:5]
        await anyio.sleep(0.3)  # the trimmed entry's lease is over: it would be due, were it kept
        async with api.bus.subscribe("agent:bob", visibility_timeout_s=30, prefetch=100) as sub:
            got = await drain(sub, len(kept))
            assert [d.message.message_id for d in got] == kept
            assert all(d.attempt == 1 for d in got)
            assert await sub.receive(timeout_s=0.3) is None


async def test_many_waiting_subscribers_across_tenants_all_receive(kernel: Kernel) -> None:
    # 200 subscriptions waiting at once (channel fan-out in two tenants, and a named group each on an inbox)
    buses = [kernel.tenant("acme").bus, kernel.tenant("globex").bus]
    got: list[tuple[int, str]] = []
    async with contextlib.AsyncExitStack() as stack:
        subs = []
        for t, bus in enumerate(buses):
            for _ in range(90):
                subs.append((t, await stack.enter_async_context(bus.subscribe("sos:channel:all"))))
            for i in range(10):
                subs.append((t, await stack.enter_async_context(bus.subscribe("agent:bob", group=f"g{i}"))))

        ready, all_ready = [0], anyio.Event()

        async def take(t: int, sub: sos_kernel.Subscription) -> None:
            assert await sub.receive(timeout_s=0.01) is None  # has waited once: its first look is behind it
            ready[0] += 1
            if ready[0] == len(subs):
                all_ready.set()
            d = await sub.receive(timeout_s=20)
            assert d is not None
            got.append((t, d.message.payload.text))
            await d.ack()

        async with anyio.create_task_group() as tg:
            for t, sub in subs:
                tg.start_soon(take, t, sub)
            await all_ready.wait()
            for t, bus in enumerate(buses):
                await bus.publish(send(target="sos:channel:all", text=f"all{t}"))
                await bus.publish(send(text=f"bob{t}"))
    expected = [(t, f"all{t}") for t in range(2)] * 90 + [(t, f"bob{t}") for t in range(2)] * 10
    assert sorted(got) == sorted(expected)


@pytest.mark.live
async def test_a_delivery_and_a_history_read_equal_the_published_message_with_or_without_containers(
    api: Api,
) -> None:
    channel = "sos:channel:kept"
    plain = send(channel, text="plain")
    with_headers = send(channel, text="headers", headers={"k": "v"}, correlation_id=str(uuid.uuid4()))
    async with api.bus.subscribe(channel) as first, api.bus.subscribe(channel) as second:
        for msg in (plain, with_headers):
            await api.bus.publish(msg)
        got = await drain(first, 2)
        assert [d.message for d in got] == [plain, with_headers]
        # a consumer that changes a container of its message changes nothing another delivery gets
        headers = got[1].message.headers
        assert headers is not None
        headers["k"] = "changed"
        others = await drain(second, 2)
        assert others[1].message.headers == {"k": "v"}
        assert [m.headers for m in await api.bus.history(channel)] == [None, {"k": "v"}]
        for d in [*got, *others]:
            assert await d.ack() is True


async def test_entries_past_the_kept_objects_are_delivered_from_their_bytes(kernel: Kernel) -> None:
    from sos_kernel.backends.memory import KEPT_MESSAGES_MAX

    sent = [send(text=f"m{i}") for i in range(KEPT_MESSAGES_MAX + 20)]
    for start in range(0, len(sent), kernel.bus.limits.batch_max):
        await kernel.bus.publish_many(sent[start : start + kernel.bus.limits.batch_max])
    async with kernel.bus.subscribe("agent:bob", prefetch=64) as sub:
        got = await drain(sub, len(sent), timeout_s=30)
        assert [d.message for d in got] == sent
        for d in got:
            await d.ack()
    assert [m.message_id for m in await kernel.bus.history("agent:bob", limit=10)] == [m.message_id for m in sent[:10]]


@pytest.mark.live
async def test_nacked_deliveries_come_back_after_their_delays_whatever_was_claimed_between(api: Api) -> None:
    early, late, fresh = send(text="early"), send(text="late"), send(text="fresh")
    await api.bus.publish(late)
    await api.bus.publish(early)
    async with api.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
        first, second = await drain(sub, 2)
        assert await first.nack(delay_s=0.6) is True  # "late"
        assert await second.nack(delay_s=0.2) is True  # "early"
        await api.bus.publish(fresh)  # a claim in between must not hide either one
        (d,) = await drain(sub, 1)
        assert d.message.message_id == fresh.message_id
        await d.ack()
        again = await drain(sub, 2)
        assert sorted(x.message.message_id for x in again) == sorted([early.message_id, late.message_id])
        assert [x.attempt for x in again] == [2, 2]
        for x in again:
            await x.ack()


async def test_four_consumers_of_a_group_in_one_process_take_disjoint_entries_whose_union_is_all(api: Api) -> None:
    n = 60
    seen: dict[str, list[str]] = {f"c{i}": [] for i in range(4)}
    done = anyio.Event()
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(api.bus.subscribe("agent:bob", consumer=name)) for name in seen]

        async def consume(name: str, sub: sos_kernel.Subscription) -> None:
            while not done.is_set():
                d = await sub.receive(timeout_s=0.1)
                if d is not None:
                    seen[name].append(d.message.message_id)
                    await d.ack()
                    if sum(len(ids) for ids in seen.values()) >= n:
                        done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name, sub in zip(seen, subs, strict=True):
                    tg.start_soon(consume, name, sub)
                published = [(await api.bus.publish(send(text=f"m{i}"))).message_id for i in range(n)]
    taken = [mid for ids in seen.values() for mid in ids]
    assert sorted(taken) == sorted(published)  # each entry to exactly one consumer, none left out
    assert await api.bus.pending("agent:bob") == 0


async def test_acks_issued_together_are_all_settled_when_they_return(api: Api) -> None:
    n = 20
    for i in range(n):
        await api.bus.publish(send(text=f"m{i}"))
    async with api.bus.subscribe("agent:bob", prefetch=n) as sub:
        deliveries = await drain(sub, n)
        assert await api.bus.pending("agent:bob") == n
        acked: list[bool] = []

        async def ack(d: sos_kernel.Delivery) -> None:
            acked.append(await d.ack())

        async with anyio.create_task_group() as tg:
            for d in deliveries:
                tg.start_soon(ack, d)
        assert acked == [True] * n
        assert await api.bus.pending("agent:bob") == 0  # every ack was on the store when it returned
        assert [await d.ack() for d in deliveries[:2]] == [False, False]


async def test_a_loop_of_empty_receives_lets_other_tasks_run(kernel: Kernel) -> None:
    # a store that answers an empty claim without awaiting (SQLite, inline) must still yield once per receive
    ran = [0]

    async def other() -> None:
        while True:
            ran[0] += 1
            await anyio.lowlevel.checkpoint()

    async with kernel.bus.subscribe("agent:bob", group="idle") as sub, anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(1000):
            assert await sub.receive(timeout_s=0) is None
        tg.cancel_scope.cancel()
    assert ran[0] >= 500, ran
