"""The Redis engine's own failure modes under the lean script path (the bus's append, the ledger's transfer):
scripts flushed, connections killed, callers cancelled mid-call, many callers at once, the server gone. Run
against a real redis-server."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

import sos_kernel
from sos_kernel import BusLimits
from sos_kernel.backends.redis import DIRECT_WAITS_MAX
from sos_kernel.backends.redis_watch import READ_BLOCK_MS, WATCH_LINGER_S
from sos_kernel.bus import store as bus_store
from sos_kernel.contracts import SendMessage, SendPayload, new_message_id
from sos_kernel.errors import AskTimeout, BackendUnavailable

from ..conftest import _flush, _free_port

pytestmark = pytest.mark.anyio


def send(text: str = "hi") -> SendMessage:
    return SendMessage(source="agent:alice", target="agent:bob", payload=SendPayload(text=text))


@pytest.fixture
async def admin(redis_url: str) -> Any:
    _flush(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_publish_survives_a_script_flush(redis_url: str, admin: Any) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        first = await kernel.bus.publish(send("one"))
        await admin.script_flush()
        msg = send("two")
        second = await kernel.bus.publish(msg)
        assert not second.duplicate
        await admin.script_flush()
        again = await kernel.bus.publish(msg)
        assert again.duplicate
        assert again.position == second.position
        assert [m.payload.text for m in await kernel.bus.history("agent:bob")] == ["one", "two"]
        assert first.position != second.position


async def test_publish_survives_killed_connections_and_writes_once(redis_url: str, admin: Any) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        async with anyio.create_task_group() as tg:  # several connections kept idle, all killed below
            for i in range(8):
                tg.start_soon(kernel.bus.publish, send(f"c{i}"))
        await kernel.bus.publish(send("before"))
        for round_ in range(3):
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            receipt = await kernel.bus.publish(send(f"after {round_}"))
            assert not receipt.duplicate
        texts = [m.payload.text for m in await kernel.bus.history("agent:bob")][8:]
        assert texts == ["before", "after 0", "after 1", "after 2"]


async def test_cancelled_and_concurrent_publishes_each_get_their_own_receipt(redis_url: str, admin: Any) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        messages = [send(str(i)) for i in range(60)]
        receipts: dict[str, sos_kernel.PublishReceipt] = {}

        async def publish(msg: SendMessage, cancel_after: float | None) -> None:
            with anyio.CancelScope() as scope:
                if cancel_after is not None:
                    scope.deadline = anyio.current_time() + cancel_after
                receipts[msg.message_id] = await kernel.bus.publish(msg)

        async with anyio.create_task_group() as tg:
            for i, msg in enumerate(messages):
                tg.start_soon(publish, msg, (i % 4) * 0.0002 if i % 3 == 0 else None)  # some before, some mid-call
        # Some cancelled calls may still have reached Redis; publishing everything again settles it.
        async with anyio.create_task_group() as tg:
            for msg in messages:
                tg.start_soon(publish, msg, None)
        stored = await kernel.bus.history("agent:bob", limit=1000)
        assert sorted(m.message_id for m in stored) == sorted(m.message_id for m in messages)
        positions = {r.position for r in receipts.values()}
        assert len(positions) == len(messages)
        for msg in messages:  # every receipt names the place of its own message
            again = await kernel.bus.publish(msg)
            assert again.duplicate
            assert again.position == receipts[msg.message_id].position


async def test_publish_to_a_server_that_went_away_is_sos_6030(tmp_path: Path) -> None:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed")
    port = _free_port()
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    async with await anyio.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        url = f"redis://127.0.0.1:{port}/0"
        with anyio.fail_after(10):
            while True:
                try:
                    kernel = await sos_kernel.open(url).__aenter__()
                    break
                except BackendUnavailable:
                    await anyio.sleep(0.05)
        try:
            await kernel.bus.publish(send("up"))
            proc.terminate()
            await proc.wait()
            with pytest.raises(BackendUnavailable) as info:
                await kernel.bus.publish(send("down"))
            assert info.value.code == "SOS-6030"
        finally:
            await kernel.aclose()


async def test_entries_for_one_group_bypass_the_duplicate_check_single_and_batched(redis_url: str, admin: Any) -> None:
    # The store contract: an entry meant for one group re-delivers a known message, so it is never a duplicate.
    from sos_kernel.bus.store import Entry

    async with sos_kernel.open(redis_url) as kernel:
        store: Any = kernel.backend.bus
        retention = kernel.bus._retention
        msg = send("again")
        entry = Entry(msg.message_id, msg.to_json(), False, "g1")
        one = await store.append("default", [("agent:bob", entry)], retention)
        two = await store.append("default", [("agent:bob", entry), ("agent:bob", entry)], retention)
        positions = [a.position for a in one + two]
        assert [a.duplicate for a in one + two] == [False, False, False]
        assert len(set(positions)) == 3
        fields = await admin.xrange("sos:{t:default}:stream:agent:bob")
        assert [f[b"g"] for _, f in fields] == [b"g1"] * 3
        assert all(f[b"m"] == msg.message_id.encode() for _, f in fields)


def test_redis_scripts_take_no_connection_over_from_redis_py() -> None:
    # every script runs on the client's own pool, through redis-py's public script call
    import sos_kernel.backends.redis_call as module

    source = Path(module.__file__).read_text()
    for private in ("_writer", "_reader", "set_protocol", "transport", "connection_class"):
        assert private not in source


async def test_single_and_batched_appends_run_as_scripts(redis_url: str, admin: Any) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        await kernel.bus.publish(send("one"))
        await kernel.bus.publish_many([send("two"), send("three")])
        assert [m.payload.text for m in await kernel.bus.history("agent:bob")] == ["one", "two", "three"]


async def test_a_call_left_without_reply_times_out_as_sos_6030_and_a_retry_settles_it(
    redis_url: str, admin: Any
) -> None:
    # socket_timeout in the URL bounds the wait for a reply; CLIENT PAUSE makes a real server hold every reply.
    async with sos_kernel.open(redis_url + "?socket_timeout=0.2") as kernel:
        await kernel.bus.publish(send("before"))
        msg = send("held")
        await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        try:
            with pytest.raises(BackendUnavailable) as info:
                await kernel.bus.publish(msg)
            assert info.value.code == "SOS-6030"
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
        await kernel.bus.publish(msg)  # applied by the held call or by this one, never both
        again = await kernel.bus.publish(msg)
        assert again.duplicate
        assert [m.payload.text for m in await kernel.bus.history("agent:bob")] == ["before", "held"]


async def test_ledger_transfers_survive_a_script_flush_and_killed_connections(redis_url: str, admin: Any) -> None:
    # The ledger's transfer script takes the same lean path; a resend after a lost connection is a replay by id.
    async with sos_kernel.open(redis_url) as kernel:
        ledger = kernel.ledger
        await ledger.open_account("tenant:issuer", "USD", allow_negative=True)
        await ledger.open_account("agent:alice", "USD")
        await ledger.transfer(id="t1", debit="tenant:issuer", credit="agent:alice", amount=500, currency="USD")
        await admin.script_flush()
        await ledger.transfer(id="t2", debit="tenant:issuer", credit="agent:alice", amount=250, currency="USD")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        again = await ledger.transfer(id="t2", debit="tenant:issuer", credit="agent:alice", amount=250, currency="USD")
        assert again.amount == 250
        balance = await ledger.balance("agent:alice", "USD")
        assert (balance.posted, balance.pending, balance.available) == (750, 0, 750)
        await ledger.check()


class RedisServer:
    """A redis-server of the test's own on a fixed port, with an append-only file so its streams survive a restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        self.args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)]
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> None:
        self.spawn()
        client = aioredis.Redis.from_url(self.url)
        try:
            with anyio.fail_after(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except (OSError, redis_errors.ConnectionError):
                        await anyio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)  # appendfsync always: every acked write is on disk already
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
async def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    server.stop()


async def _consume(sub: Any, got: list[str], marks: dict[int, anyio.Event]) -> None:
    # acks every delivery, as a consumer would; an ack the outage refused is tried again
    while len(got) < max(marks):
        delivery = await sub.receive()
        assert delivery is not None
        got.append(delivery.message.message_id)
        if len(got) in marks:
            marks[len(got)].set()
        while True:
            try:
                assert await delivery.ack() is True
                break
            except BackendUnavailable:
                await anyio.sleep(0.1)


@pytest.mark.parametrize("through", ["kernel", "kernel-shared-read", "server"])
async def test_a_live_subscription_rides_out_a_redis_restart(own_redis: RedisServer, through: str) -> None:
    """redis-server is killed and restarted 2.5 s later while a subscriber waits (in-process, in-process on the
    shared read, and remotely over a server's SSE stream): the subscription goes on, every message arrives once
    and nothing acked comes back."""
    from mumega_sdk import MumegaClient

    from ..live_server import running_server

    async with sos_kernel.open(own_redis.url) as kernel, contextlib.AsyncExitStack() as stack:
        api: Any = kernel
        if through == "kernel-shared-read":
            kernel.backend.bus.direct_waits_max = 0  # type: ignore[attr-defined]
        if through == "server":
            await kernel.tenants.create("default", "scale")
            bob = await kernel.tenant("default").tokens.issue(agent="agent:bob")
            base_url = stack.enter_context(running_server(own_redis.url))
            api = await stack.enter_async_context(MumegaClient(base_url, bob.secret, retries=2))
        before, after = [send(f"before {i}") for i in range(3)], [send(f"after {i}") for i in range(3)]
        got: list[str] = []
        marks = {3: anyio.Event(), 6: anyio.Event()}
        async with api.bus.subscribe("agent:bob", visibility_timeout_s=30) as sub:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_consume, sub, got, marks)
                for message in before:
                    await kernel.bus.publish(message)
                with anyio.fail_after(10):
                    await marks[3].wait()
                await anyio.sleep(0.3)  # the subscriber is waiting on Redis when it goes
                own_redis.stop()
                await anyio.sleep(2.5)
                await own_redis.start()
                for message in after:
                    await kernel.bus.publish(message)
                with anyio.fail_after(30):  # reconnects back off; a loaded 2-core runner is slow
                    await marks[6].wait()
            assert got == [m.message_id for m in before + after]
            assert await sub.receive(timeout_s=1.0) is None


async def test_a_subscription_raises_sos_6030_once_redis_stays_away_past_reconnect_s_max(
    own_redis: RedisServer,
) -> None:
    limits = BusLimits(reconnect_s_max=0.5)
    async with sos_kernel.open(own_redis.url, limits=limits) as kernel, kernel.bus.subscribe("agent:bob") as sub:
        assert await sub.receive(timeout_s=0.1) is None
        own_redis.stop()
        started = anyio.current_time()
        with pytest.raises(BackendUnavailable) as info, anyio.fail_after(5):
            await sub.receive()
        assert info.value.code == "SOS-6030"
        assert anyio.current_time() - started >= 0.5
        await own_redis.start()


async def test_four_consumers_of_a_group_are_not_all_woken_per_entry(redis_url: str, admin: Any) -> None:
    # the consumers wait on one shared XREAD, which wakes one of them per entry; abandoned entries are looked for on
    # a timer
    n = 200
    async with sos_kernel.open(redis_url) as kernel, contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(kernel.bus.subscribe("agent:bob", consumer=f"c{i}", prefetch=1))
            for i in range(4)
        ]
        got: list[str] = []

        async def consume(sub: Any) -> None:
            while len(got) < n:
                d = await sub.receive(timeout_s=0.2)
                if d is not None:
                    got.append(d.message.message_id)
                    await d.ack()

        await admin.config_resetstat()
        async with anyio.create_task_group() as tg:
            for sub in subs:
                tg.start_soon(consume, sub)
            for i in range(n):
                await kernel.bus.publish(send(str(i)))
        stats = await admin.info("commandstats")
    calls = {name.removeprefix("cmdstat_").split("|")[0]: row["calls"] for name, row in stats.items()}
    assert len(got) == len(set(got)) == n
    assert calls.get("xinfo", 0) == 0
    assert calls.get("xautoclaim", 0) < n / 10
    assert calls.get("xread", 0) <= n + 10  # one shared read per wake-up, not one per consumer
    assert calls["xreadgroup"] < 2 * n  # before: 484 XAUTOCLAIM, 284 XINFO, 281 XREAD for 200 entries


async def test_waiting_consumers_of_a_group_in_one_process_share_one_blocking_read(redis_url: str, admin: Any) -> None:
    # four idle consumers of one group: one of them blocks in XREADGROUP for all (before: four blocked reads, each
    # handed one entry per publish)
    async with sos_kernel.open(redis_url) as kernel, contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(kernel.bus.subscribe("agent:bob", consumer=f"c{i}")) for i in range(4)]
        got: list[str] = []

        async def take(sub: Any) -> None:
            while len(got) < 8:
                d = await sub.receive(timeout_s=0.5)
                if d is not None:
                    got.append(d.message.message_id)
                    await d.ack()

        async def blocked_reads() -> int:
            return len([c for c in await _blocked(admin) if c["cmd"] == "xreadgroup"])

        async with anyio.create_task_group() as tg:
            for sub in subs:
                tg.start_soon(take, sub)
            for _ in range(200):  # the consumers are waiting
                if await blocked_reads():
                    break
                await anyio.sleep(0.01)
            await anyio.sleep(0.3)
            counts = [await blocked_reads() for _ in range(10)]  # a new read starts as the last one times out
            assert max(counts) == 1, counts
            published = [(await kernel.bus.publish(send(str(i)))).message_id for i in range(8)]
    assert sorted(got) == sorted(published)


async def test_acks_issued_together_go_in_one_script_call(redis_url: str, admin: Any) -> None:
    n = 20
    async with sos_kernel.open(redis_url) as kernel:
        for i in range(n):
            await kernel.bus.publish(send(str(i)))
        async with kernel.bus.subscribe("agent:bob", prefetch=n) as sub:
            deliveries = [await sub.receive(timeout_s=5) for _ in range(n)]
            await admin.config_resetstat()
            async with anyio.create_task_group() as tg:
                for d in deliveries:
                    assert d is not None
                    tg.start_soon(d.ack)
            stats = await admin.info("commandstats")
            assert await kernel.bus.pending("agent:bob") == 0
    calls = {name.removeprefix("cmdstat_").split("|")[0]: row["calls"] for name, row in stats.items()}
    assert calls["xack"] == n
    # the first ack at once, the others in one call behind it (a first use of the script is retried after its LOAD);
    # before: one call per ack
    assert calls["evalsha"] - calls.get("script", 0) <= 2


async def test_acks_of_many_subscribers_of_a_tenant_go_together(redis_url: str, admin: Any) -> None:
    # a channel's subscribers are one group each; their acks issued together share a script call (one tenant's
    # keys share one slot); before: one call per subscriber
    n = 20
    async with sos_kernel.open(redis_url) as kernel, contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(kernel.bus.subscribe("sos:channel:news")) for _ in range(n)]
        await kernel.bus.publish(send().model_copy(update={"target": "sos:channel:news"}))
        deliveries = [await sub.receive(timeout_s=5) for sub in subs]
        await admin.config_resetstat()
        async with anyio.create_task_group() as tg:
            for d in deliveries:
                assert d is not None
                tg.start_soon(d.ack)
        stats = await admin.info("commandstats")
        assert [await kernel.bus.pending("sos:channel:news", group=sub.group) for sub in subs] == [0] * n
    calls = {name.removeprefix("cmdstat_").split("|")[0]: row["calls"] for name, row in stats.items()}
    assert calls["xack"] == n
    assert calls["evalsha"] - calls.get("script", 0) <= 2  # a first use of the script is retried once after LOAD


async def test_an_ask_costs_four_commands_like_the_raw_floor_and_its_channel_expires(
    redis_url: str, admin: Any
) -> None:
    # Per ask, the asker: its publish script and ONE blocking XREAD of its new reply channel (no read before the
    # wait, no DEL after the reply: the reply's own script sets the channel to expire); the responder: XREADGROUP
    # and one script that stores the reply and acks the request (Delivery.reply). Before: six commands per ask
    # (XRANGE, DEL and an ack script on top), against the raw floor's four.
    asks = 50
    async with sos_kernel.open(redis_url) as kernel:
        await kernel.bus.history("agent:oracle")  # the scripts loaded: not counted below

        async def oracle() -> None:
            async with kernel.bus.subscribe("agent:oracle") as sub:
                for _ in range(asks):
                    d = await sub.receive(timeout_s=30)
                    assert d is not None
                    await d.reply("42")

        async with anyio.create_task_group() as tg:
            tg.start_soon(oracle)
            await anyio.sleep(0.1)  # subscribed: its group made, its read blocked
            await admin.config_resetstat()
            for i in range(asks):
                assert (await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=30)).payload.text == "42"
        stats = await admin.info("commandstats")
        channels = [m.payload.reply_channel for m in await kernel.bus.history("agent:oracle")]
    calls = {name.removeprefix("cmdstat_").split("|")[0]: row["calls"] for name, row in stats.items()}
    assert calls.get("xrange", 0) == 0
    assert calls.get("del", 0) == 0
    assert calls["xread"] == asks
    assert calls["xreadgroup"] <= asks + 2  # the responder's last blocked read, a read that timed out empty
    assert calls["evalsha"] - calls.get("script", 0) <= 2 * asks + 2  # the ask's append, the reply-and-ack
    assert len(channels) == asks
    for channel in channels:  # answered: kept until the reply's expiry, never longer
        ttl_ms = await admin.pttl(f"sos:{{t:default}}:stream:{channel}")
        assert 0 < ttl_ms <= bus_store.REPLY_CHANNEL_TTL_S * 1000


async def test_a_reply_written_after_its_ask_ended_expires_single_or_batched(
    redis_url: str, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, a late reply recreated its channel for good; now every write to a reply channel sets it to expire.
    monkeypatch.setattr(bus_store, "REPLY_CHANNEL_TTL_S", 0.5)
    async with sos_kernel.open(redis_url) as kernel:
        for _ in range(2):
            with pytest.raises(AskTimeout):
                await kernel.bus.ask("agent:alice", "agent:nobody", "anyone?", timeout_s=0.1)
        first, second = await kernel.bus.history("agent:nobody")
        await kernel.bus.reply(first, "late")
        late = send("late").model_copy(update={"target": second.payload.reply_channel})
        await kernel.bus.publish_many([late, send("kept")])
        keys = [f"sos:{{t:default}}:stream:{m.payload.reply_channel}" for m in (first, second)]
        for key in keys:
            assert 0 < await admin.pttl(key) <= 500
        assert await admin.pttl("sos:{t:default}:stream:agent:bob") == -1  # other addresses never expire
        await anyio.sleep(0.7)
        assert await admin.exists(*keys) == 0
        assert len(await kernel.bus.history("agent:bob")) == 1


async def test_idle_subscriptions_share_one_read_per_tenant_and_closing_ends_it(redis_url: str, admin: Any) -> None:
    # 200 idle subscriptions in one process (redis-py's pool holds 100 connections): one blocking read per tenant
    async with sos_kernel.open(redis_url) as kernel:
        store: Any = kernel.backend.bus
        buses = [kernel.tenant("acme").bus, kernel.tenant("globex").bus]
        got: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            subs = [
                await stack.enter_async_context(bus.subscribe("sos:channel:all")) for bus in buses for _ in range(100)
            ]

            async def take(sub: Any) -> None:
                d = await sub.receive(timeout_s=20)
                assert d is not None
                got.append(d.message.payload.text)
                await d.ack()

            async with anyio.create_task_group() as tg:
                for sub in subs:
                    tg.start_soon(take, sub)
                for _ in range(200):  # until both tenants' reads are up (a loaded machine is slow to start 200)
                    if store.watching("acme") == store.watching("globex") == 1:
                        break
                    await anyio.sleep(0.05)
                await anyio.sleep(0.5)  # all of them waiting
                # a read of their own for the first DIRECT_WAITS_MAX, then one shared read per tenant
                assert len(await _blocked(admin)) == DIRECT_WAITS_MAX + 2
                assert store.watching("acme") == store.watching("globex") == 1
                for i, bus in enumerate(buses):
                    text = SendPayload(text=f"m{i}")
                    await bus.publish(SendMessage(source="agent:alice", target="sos:channel:all", payload=text))
        assert sorted(got) == ["m0"] * 100 + ["m1"] * 100
        await anyio.sleep(WATCH_LINGER_S + READ_BLOCK_MS / 1000 + 0.5)  # closed: their interest lapses, reads end
        assert store.watching("acme") == store.watching("globex") == 0
        assert await _blocked(admin) == []


async def _blocked(admin: Any) -> list[Any]:
    return [c for c in await admin.client_list() if "b" in c["flags"]]


async def test_a_waiting_subscriber_still_gets_news_after_its_stream_is_trimmed(redis_url: str, admin: Any) -> None:
    async with sos_kernel.open(redis_url) as kernel, kernel.bus.subscribe("agent:bob") as sub:
        await kernel.bus.publish(send("one"))
        d = await sub.receive(timeout_s=5)
        assert d is not None
        await d.ack()
        async with anyio.create_task_group() as tg:
            got: list[str] = []

            async def take() -> None:
                d = await sub.receive(timeout_s=10)
                assert d is not None
                got.append(d.message.payload.text)

            tg.start_soon(take)
            await anyio.sleep(0.2)
            keys = [k async for k in admin.scan_iter(match="*stream:agent:bob")]
            await admin.xtrim(keys[0], maxlen=0)
            await kernel.bus.publish(send("two"))
        assert got == ["two"]


async def test_with_every_waiter_on_the_shared_read_the_bus_behaves_the_same(redis_url: str, admin: Any) -> None:
    # the plain path: no waiter blocks in a read of its own (DIRECT_WAITS_MAX = 0)
    async with sos_kernel.open(redis_url) as kernel:
        kernel.backend.bus.direct_waits_max = 0  # type: ignore[attr-defined]
        bus = kernel.bus
        async with contextlib.AsyncExitStack() as stack:
            queue = [await stack.enter_async_context(bus.subscribe("agent:bob", consumer=f"c{i}")) for i in range(3)]
            fans = [await stack.enter_async_context(bus.subscribe("sos:channel:news")) for _ in range(3)]
            got: dict[str, list[str]] = {}

            async def take(name: str, sub: Any, n: int) -> None:
                while sum(len(v) for k, v in got.items() if k.startswith(name[0])) < n:
                    d = await sub.receive(timeout_s=0.2)
                    if d is not None:
                        got.setdefault(name, []).append(d.message.payload.text)
                        await d.ack()

            async with anyio.create_task_group() as tg:
                for i, sub in enumerate(queue):
                    tg.start_soon(take, f"q{i}", sub, 20)
                for i, sub in enumerate(fans):
                    tg.start_soon(take, f"f{i}", sub, 60)
                for _ in range(200):  # until both streams are on the shared read
                    if kernel.backend.bus.watching("default") == 2:  # type: ignore[attr-defined]
                        break
                    await anyio.sleep(0.05)
                assert kernel.backend.bus.watching("default") == 2  # type: ignore[attr-defined]
                for i in range(20):
                    await bus.publish(send(str(i)))
                    text = SendPayload(text=str(i))
                    await bus.publish(SendMessage(source="agent:alice", target="sos:channel:news", payload=text))
            assert sorted(int(t) for k, v in got.items() if k[0] == "q" for t in v) == list(range(20))
            assert [got[f"f{i}"] for i in range(3)] == [[str(i) for i in range(20)]] * 3

            async with bus.subscribe("agent:carol", visibility_timeout_s=30) as sub:  # nack: due again at once
                await bus.publish(
                    SendMessage(source="agent:alice", target="agent:carol", payload=SendPayload(text="x"))
                )
                first = await sub.receive(timeout_s=5)
                assert first is not None
                await first.nack()
                again = await sub.receive(timeout_s=5)
                assert again is not None
                assert again.attempt == 2
                await again.ack()

            async def oracle() -> None:
                async with bus.subscribe("agent:oracle") as inbox:
                    for _ in range(20):
                        d = await inbox.receive()
                        assert d is not None
                        await bus.reply(d.message, "42")
                        await d.ack()

            async with anyio.create_task_group() as tg:
                tg.start_soon(oracle)
                for _ in range(20):
                    reply = await bus.ask("agent:alice", "agent:oracle", "?", timeout_s=5)
                    assert reply.payload.text == "42"


async def test_more_calls_at_once_than_the_client_librarys_default_pool_all_succeed(redis_url: str, admin: Any) -> None:
    # every call in flight holds a connection (a waiting subscription's blocking read holds one all along): the
    # client library's default pool of 100 made the 101st concurrent call fail at once with SOS-6030
    calls = 300
    async with sos_kernel.open(redis_url) as kernel:
        receipts: list[Any] = []

        async def publish(i: int) -> None:
            receipts.append(await kernel.bus.publish(send(f"m{i}")))

        async with anyio.create_task_group() as tg:
            for i in range(calls):
                tg.start_soon(publish, i)
        assert len({r.position for r in receipts}) == calls
        assert len(await kernel.bus.history("agent:bob", limit=calls)) == calls


async def test_an_id_in_the_per_tenant_key_form_holds_for_every_source_within_its_window(
    redis_url: str, admin: Any
) -> None:
    # a key as versions that deduplicated per tenant wrote it (Redis keeps keys across an upgrade)
    async with sos_kernel.open(redis_url) as kernel:
        first = await kernel.bus.publish(send("before the upgrade"))
        legacy = new_message_id()
        await admin.set(f"sos:{{t:default}}:msgid:{legacy}", first.position, ex=60)
        for source in ("agent:alice", "agent:mallory"):
            again = SendMessage(source=source, target="agent:bob", message_id=legacy, payload=SendPayload(text="x"))
            receipt = await kernel.bus.publish(again)
            assert (receipt.duplicate, receipt.position) == (True, first.position)
            [batched] = await kernel.bus.publish_many([again])
            assert (batched.duplicate, batched.position) == (True, first.position)
        assert [m.payload.text for m in await kernel.bus.history("agent:bob")] == ["before the upgrade"]
        later = await kernel.bus.publish(send("after the upgrade"))
        # a reader resuming after the id it saw before the upgrade starts after that entry
        assert [m.payload.text for m in await kernel.bus.history("agent:bob", after=legacy)] == ["after the upgrade"]
        assert later.duplicate is False
        await admin.delete(f"sos:{{t:default}}:msgid:{legacy}")  # its window ended: a new message for anyone
        fresh = again.model_copy(update={"payload": SendPayload(text="y")})
        assert (await kernel.bus.publish(fresh)).duplicate is False
