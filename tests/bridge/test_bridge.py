"""The SOS bridge against one real redis-server holding an SOS v0.4.1 layout the test writes exactly as SOS does
(flat fields as in redis-entries.json, PUBLISH wakes after each XADD, registry hashes with a TTL), with the kernel
on every backend and through the remote client."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import sos_kernel
from sos_kernel import Kernel
from sos_kernel.bridge import BRIDGE_SESSION, BridgeLimits, SOSBridge
from sos_kernel.contracts import AgentCard, SendMessage, from_sos_fields, to_sos_fields
from sos_kernel.kernel import DEFAULT_TENANT

from ..conftest import Api

pytestmark = pytest.mark.anyio

ENTRIES: list[dict[str, Any]] = json.loads(
    Path("/work/shared/reference/sos-v0.4.1/redis-entries.json").read_text(encoding="utf-8")
)
SOS_DB = 1
"""SOS's data lives in its own database of the test's redis-server (the kernel's Redis backend uses 0)."""
STATE = f"sos:bridge:{DEFAULT_TENANT}:global:"


def template(kind: str, **changes: str) -> dict[str, str]:
    """Fields of an entry SOS itself wrote (redis-entries.json), with its ids and addresses changed."""
    fields = copy.deepcopy(next(e["fields"] for e in ENTRIES if e["fields"]["type"] == kind))
    fields["message_id"] = str(uuid.uuid4())
    fields.update(changes)
    return fields


async def sos_send(r: aioredis.Redis, agent: str, fields: dict[str, str], scope: str = "global") -> None:
    """What an SOS producer does: XADD the flat fields to the agent's inbox, then the two wake PUBLISHes."""
    await r.xadd(f"sos:stream:{scope}:agent:{agent}", fields)  # type: ignore[arg-type]
    await r.publish(f"sos:wake:{agent}", json.dumps(fields))
    await r.publish(f"sos:channel:agent:{agent}", json.dumps(fields))


async def sos_register(r: aioredis.Redis, agent: str, **extra: str) -> None:
    """What an SOS agent's heartbeat does: its registry hash, with a TTL."""
    await r.hset(f"sos:registry:{agent}", mapping={"name": agent, "status": "online", "role": "executor", **extra})
    await r.expire(f"sos:registry:{agent}", 600)


@pytest.fixture
async def sos(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    url = redis_url.rsplit("/", 1)[0] + f"/{SOS_DB}"
    client = aioredis.Redis.from_url(url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


def sos_url(sos: aioredis.Redis) -> str:
    kwargs = sos.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{SOS_DB}"


def card(name: str, **extra: Any) -> AgentCard:
    return AgentCard(name=name, tool="sdk", type="remote", role="executor", **extra)


async def texts(api: Any, address: str) -> list[str]:
    return [m.payload.text for m in await api.bus.history(address) if isinstance(m, SendMessage)]


async def test_both_directions_with_a_poison_entry_and_no_loop(api: Api, kernel: Kernel, sos: aioredis.Redis) -> None:
    await sos_register(sos, "kasra")
    await api.registry.register(card("alice"))
    async with SOSBridge(api, sos_url(sos), tenant=DEFAULT_TENANT) as bridge:
        await bridge.sync_once()
        peer = await api.registry.get("sos-kasra")
        assert peer.card.session == BRIDGE_SESSION
        assert peer.card.type == "remote"
        assert peer.status == "online"
        advertised = await sos.hgetall("sos:registry:alice")
        assert advertised["bridged_by"] == f"sos-kernel:{DEFAULT_TENANT}"
        assert 0 < await sos.ttl("sos:registry:alice") <= 300
        assert "sos-kasra" not in [k.removeprefix("sos:registry:") for k in await sos.keys("sos:registry:*")]

        # SOS -> kernel, with garbage between two valid entries
        first = template("send", source="agent:kasra", target="agent:alice", payload='{"text": "one"}')
        first["payload"] = json.dumps({"text": "one", "content_type": "text/plain"})
        await sos_send(sos, "alice", first)
        await sos_send(sos, "alice", {"foo": "bar", "type": "nonsense"})
        second = template("send", source="agent:kasra", target="agent:alice")
        second["payload"] = json.dumps({"text": "two", "content_type": "text/plain", "remember": True})
        second["project"] = "apollo"
        await sos_send(sos, "alice", second)
        status = await bridge.sync_once()
        assert await texts(api, "agent:alice") == ["one", "two"]
        got = await api.bus.history("agent:alice")
        assert {m.source for m in got} == {"agent:sos-kasra"}
        assert got[1].headers == {"sos-project": "apollo", "sos-remember": "true"}
        assert status.bridged_in == 2
        assert status.refused == 1
        (dead,) = await sos.xrange(STATE + "dead")
        assert dead[1]["id"]
        assert "unreadable" in dead[1]["reason"]
        assert json.loads(dead[1]["raw"]) == {"foo": "bar", "type": "nonsense"}

        # kernel -> SOS, seen by an unmodified SOS reader and wake listener
        pubsub = sos.pubsub()
        await pubsub.subscribe("sos:wake:kasra", "sos:channel:agent:kasra")
        await pubsub.get_message(timeout=1)
        await pubsub.get_message(timeout=1)
        receipt = await api.bus.send("agent:alice", "agent:sos-kasra", "hello kasra")
        status = await bridge.sync_once()
        assert status.bridged_out == 1
        (entry,) = await sos.xrange("sos:stream:global:agent:kasra")
        written = from_sos_fields(entry[1])
        assert written.message_id == receipt.message_id
        assert written.source == "agent:alice"
        assert written.target == "agent:kasra"
        assert entry[1] == to_sos_fields(written)
        woken = set()
        with anyio.fail_after(5):
            while len(woken) < 2:
                found = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if found is not None:
                    woken.add(found["channel"])
        assert woken == {"sos:wake:kasra", "sos:channel:agent:kasra"}
        await pubsub.aclose()

        # SOS -> SOS traffic is mirrored into the kernel, and never written back
        await sos_register(sos, "trop")
        other = template("send", source="agent:trop", target="agent:kasra")
        await sos_send(sos, "kasra", other)
        for _ in range(3):
            status = await bridge.sync_once()
        assert len(await sos.xrange("sos:stream:global:agent:kasra")) == 2  # the bridged one and trop's, once each
        assert len(await sos.xrange("sos:stream:global:agent:alice")) == 3
        mirrored = await api.bus.history("agent:sos-kasra")
        assert [m.message_id for m in mirrored] == [receipt.message_id, other["message_id"]]
        assert status.loops_skipped >= 2
        assert await texts(api, "agent:alice") == ["one", "two"]


async def test_restart_resumes_without_loss_or_duplicates(kernel: Kernel, sos: aioredis.Redis) -> None:
    await kernel.registry.register(card("alice"))
    sent = []
    for i in range(7):
        fields = template("send", source="agent:kasra", target="agent:alice")
        fields["payload"] = json.dumps({"text": f"m{i}", "content_type": "text/plain"})
        await sos_send(sos, "alice", fields)
        sent.append(f"m{i}")
        if i == 3:
            await sos_send(sos, "alice", {"payload": "not a message"})
    limits = BridgeLimits(entries_per_poll_max=3)
    async with SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT, limits=limits) as bridge:
        status = await bridge.sync_once()
        assert status.bridged_in == 3
        assert status.lag_s > 0  # five entries left behind
    async with SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT, limits=limits) as bridge:
        for _ in range(3):
            await bridge.sync_once()
        assert bridge.status().lag_s == 0
    assert await texts(kernel, "agent:alice") == sent

    # a crash after publishing, before the position moved: the kernel drops the duplicate by message_id
    entries = await sos.xrange("sos:stream:global:agent:alice")
    await sos.hset(STATE + "in", "sos:stream:global:agent:alice", entries[1][0])
    out_before = await kernel.bus.send("agent:alice", "agent:sos-kasra", "once")
    async with SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT, peers=["kasra"]) as bridge:
        await bridge.sync_once()
        await sos.hdel(STATE + "out", "agent:sos-kasra")  # and the other way: the marker stops the rewrite
        await bridge.sync_once()
    assert await texts(kernel, "agent:alice") == sent
    (written,) = await sos.xrange("sos:stream:global:agent:kasra")
    assert written[1]["message_id"] == out_before.message_id


async def test_an_sos_agent_cannot_speak_as_a_kernel_agent(kernel: Kernel, sos: aioredis.Redis) -> None:
    await kernel.registry.register(card("sos-mallory"))  # a kernel agent that happens to have a bridged name
    await kernel.registry.register(card("alice"))
    await kernel.registry.register(card("kasra"))  # a kernel agent with an SOS agent's name
    await sos_register(sos, "mallory")
    await sos_register(sos, "kasra")
    await sos_send(sos, "alice", template("send", source="agent:mallory", target="agent:alice"))
    await kernel.bus.send("agent:kasra", "agent:sos-kasra", "pretending")
    async with SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT) as bridge:
        status = await bridge.sync_once()
    assert await kernel.bus.history("agent:alice") == []
    assert (await kernel.registry.get("sos-mallory")).card.session is None  # not taken over
    assert await sos.xrange("sos:stream:global:agent:kasra") == []
    assert "bridged_by" not in await sos.hgetall("sos:registry:kasra")  # SOS's kasra left alone
    assert status.refused == 2
    assert sorted(status.kernel_agents) == ["alice", "sos-mallory"]
    assert any("mallory" in e for e in status.errors)


async def test_project_scope(kernel: Kernel, sos: aioredis.Redis) -> None:
    await kernel.registry.register(card("alice", project="apollo"))
    await kernel.registry.register(card("bob"))
    await sos_register(sos, "kasra", project="apollo")
    inside = template("send", source="agent:kasra", target="agent:alice", project="apollo")
    elsewhere = template("send", source="agent:kasra", target="agent:alice", project="zeus")
    await sos_send(sos, "alice", inside, scope="project:apollo")
    await sos_send(sos, "alice", elsewhere, scope="project:apollo")
    await sos_send(sos, "alice", template("send", source="agent:kasra", target="agent:alice"))  # global
    await kernel.bus.send("agent:alice", "agent:sos-kasra", "in apollo")
    await kernel.bus.send("agent:bob", "agent:sos-kasra", "not in apollo")
    async with SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT, project="apollo") as bridge:
        status = await bridge.sync_once()
    assert status.refused == 1  # bob is not an agent of the project
    assert [m.message_id for m in await kernel.bus.history("agent:alice")] == [inside["message_id"]]
    assert status.out_of_scope == 1
    assert status.kernel_agents == ["alice"]
    (written,) = await sos.xrange("sos:stream:project:apollo:agent:kasra")
    assert written[1]["project"] == "apollo"
    assert await sos.xrange("sos:stream:global:agent:kasra") == []


async def test_run_rides_out_a_failing_kernel_and_resumes(sos: aioredis.Redis) -> None:
    url = "memory://"
    async with sos_kernel.open(url) as closed:
        await closed.registry.register(card("alice"))  # closed: its bus refuses with SOS-6005
    message = template("send", source="agent:kasra", target="agent:alice")
    await sos_send(sos, "alice", message)
    stop = anyio.Event()
    async with SOSBridge(closed, sos_url(sos), tenant=DEFAULT_TENANT) as bridge, anyio.create_task_group() as tg:
        tg.start_soon(bridge.run, stop)
        for _ in range(100):
            if bridge.status().errors:
                break
            await anyio.sleep(0.05)
        stop.set()
    assert "round failed: SOS-6" in bridge.status().errors[0]
    assert await sos.hgetall(STATE + "in") == {}  # nothing moved
    async with sos_kernel.open(url) as kernel, SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT) as bridge:
        await kernel.registry.register(card("alice"))
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bridge.run, stop)
            for _ in range(100):
                if bridge.status().bridged_in:
                    break
                await anyio.sleep(0.05)
            stop.set()
        assert [m.message_id for m in await kernel.bus.history("agent:alice")] == [message["message_id"]]


async def test_a_kernel_agent_registered_since_the_last_sync_gets_its_messages(
    kernel: Kernel, sos: aioredis.Redis
) -> None:
    async with SOSBridge(kernel, sos_url(sos), tenant=DEFAULT_TENANT) as bridge:
        await bridge.sync_once()  # the registries are synced now, and not again for registry_interval_s
        await kernel.registry.register(card("carol"))
        message = template("send", source="agent:kasra", target="agent:carol")
        await sos_send(sos, "carol", message)
        await bridge.sync_once()
    assert [m.message_id for m in await kernel.bus.history("agent:carol")] == [message["message_id"]]
    assert await kernel.bus.history("agent:sos-carol") == []
