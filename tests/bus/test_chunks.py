"""Chunked messages: the reassembled message meets every check a whole one does, and unfinished groups are bounded.

Runs on every backend and through the remote client, as agent sessions (tokens bound to one agent) and as the
tenant's admin.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel import BusLimits
from sos_kernel.bus import split_message
from sos_kernel.contracts import ChunkMessage, Message, TaskCompletedMessage, TaskCompletedPayload, utcnow
from sos_kernel.errors import ChunkIntegrityError, Forbidden, LimitExceeded
from sos_kernel.kernel import DEFAULT_TENANT

from ..conftest import OpenApi, deployment

pytestmark = pytest.mark.anyio


def result(n_bytes: int, source: str = "agent:alice", target: str = "agent:bob") -> TaskCompletedMessage:
    return TaskCompletedMessage(
        source=source,
        target=target,
        payload=TaskCompletedPayload(
            task_id="t1", status="done", completed_at=utcnow(), result={"blob": "x" * n_bytes}
        ),
    )


def carried_by(message: Message, sender: str, limits: BusLimits) -> list[ChunkMessage]:
    """The chunks of ``message`` as ``sender`` would publish them (the envelopes name the sender)."""
    return [part.model_copy(update={"source": sender}) for part in split_message(message, limits)]


@asynccontextmanager
async def team(kernel_url: str, target: str, **options: Any) -> AsyncIterator[tuple[sos_kernel.Kernel, Any]]:
    """A kernel (opened with ``options``) and ``apis[name]``: a session of ``agent:<name>``, or ``"admin"``'s."""
    async with sos_kernel.open(kernel_url, **options) as kernel, deployment(kernel, target) as connect:
        _, admin = await kernel.tenants.create(DEFAULT_TENANT, "scale")
        tokens = kernel.tenant(DEFAULT_TENANT).tokens
        apis = {"admin": await connect(admin)}
        for name in ("alice", "mallory"):
            apis[name] = await connect((await tokens.issue(agent=f"agent:{name}")).secret)
        yield kernel, apis


@pytest.fixture
def open_team(kernel_url: str, target: str, open_api: OpenApi) -> Any:
    """``async with open_team(**options) as (kernel, apis)``; asking for ``open_api`` runs it on every target."""

    def opened(**options: Any) -> Any:
        return team(kernel_url, target, **options)

    return opened


async def publish_all(api: Any, parts: list[ChunkMessage]) -> Any:
    receipt = None
    for part in parts:
        receipt = await api.bus.publish(part)
    return receipt


@pytest.mark.parametrize("claimed", ["agent:kernel", "agent:alice"])
async def test_chunks_cannot_carry_a_message_from_another_source(open_team: Any, claimed: str) -> None:
    async with open_team() as (kernel, apis):
        mallory = apis["mallory"]
        forged = carried_by(result(100_000, source=claimed), "agent:mallory", kernel.limits)
        assert len(forged) > 1
        for part in forged[:-1]:
            assert (await mallory.bus.publish(part)).complete is False
        with pytest.raises(Forbidden) as info:
            await mallory.bus.publish(forged[-1])
        assert info.value.code == "SOS-5004"
        assert await kernel.bus.history("agent:bob") == []
        # the group was discarded: resending its last part starts a new group, it completes nothing
        assert (await mallory.bus.publish(forged[-1])).complete is False
        assert await kernel.bus.history("agent:bob") == []
        # an envelope naming another source is refused at once, as for any message
        with pytest.raises(Forbidden):
            await mallory.bus.publish(split_message(result(100_000, source=claimed), kernel.limits)[0])
        # the agent's own large message still goes through in chunks
        own = result(100_000, source="agent:mallory")
        assert (await publish_all(mallory, carried_by(own, "agent:mallory", kernel.limits))).complete
        assert [m.message_id for m in await kernel.bus.history("agent:bob")] == [own.message_id]


async def test_a_chunk_group_carries_only_its_senders_message_even_for_an_admin(open_team: Any) -> None:
    async with open_team() as (kernel, apis):
        forged = carried_by(result(100_000, source="agent:kernel"), "agent:alice", kernel.limits)
        with pytest.raises(Forbidden):
            await publish_all(apis["admin"], forged)
        with pytest.raises(Forbidden):  # the trusted in-process handle too
            await publish_all(kernel, forged)
        assert await kernel.bus.history("agent:bob") == []


async def refused(api: Any, part: ChunkMessage, limit: str) -> None:
    with pytest.raises(LimitExceeded) as info:
        await api.bus.publish(part)
    assert info.value.code == "SOS-4010"
    assert info.value.details["limit"] == limit


async def test_each_part_limit_refuses_the_part_and_writes_nothing(open_team: Any) -> None:
    limits = BusLimits(chunk_part_bytes_max=20_000, chunk_parts_max=8, payload_bytes_max=400_000)
    async with open_team(limits=limits) as (kernel, apis):
        alice = apis["alice"]
        mine = result(100_000, source="agent:alice")
        await refused(alice, split_message(mine, BusLimits())[0], "chunk_part_bytes_max")
        await refused(alice, split_message(mine, BusLimits(message_bytes_max=200_000))[0], "message_bytes_max")
        await refused(alice, split_message(result(300_000, source="agent:alice"), limits)[0], "chunk_parts_max")
        too_big = split_message(result(500_000, source="agent:alice"), BusLimits(chunk_parts_max=8))[0]
        await refused(alice, too_big, "payload_bytes_max")
        assert await kernel.bus.store.chunk_usage(DEFAULT_TENANT) == (0, 0)
        # within every limit, parts of at most chunk_part_bytes_max go through
        parts = split_message(mine, limits)
        assert len(parts) == 6
        assert (await publish_all(alice, parts)).complete
        assert [m.message_id for m in await kernel.bus.history("agent:bob")] == [mine.message_id]


async def test_unfinished_groups_are_bounded_per_agent_and_per_tenant(open_team: Any) -> None:
    limits = BusLimits(agent_chunk_groups_max=2, tenant_chunk_groups_max=3)
    async with open_team(limits=limits) as (kernel, apis):
        alice, mallory = apis["alice"], apis["mallory"]
        first = [split_message(result(100_000, source="agent:alice"), limits) for _ in range(3)]
        for parts in first[:2]:
            assert (await alice.bus.publish(parts[0])).complete is False
        await refused(alice, first[2][0], "agent_chunk_groups_max")
        theirs = [split_message(result(100_000, source="agent:mallory"), limits) for _ in range(2)]
        assert (await mallory.bus.publish(theirs[0][0])).complete is False
        await refused(mallory, theirs[1][0], "tenant_chunk_groups_max")
        assert (await kernel.bus.store.chunk_usage(DEFAULT_TENANT))[0] == 3
        # a finished group frees its place
        assert (await publish_all(alice, first[0][1:])).complete
        assert (await alice.bus.publish(first[2][0])).complete is False


async def test_unfinished_bytes_are_bounded_per_agent_and_per_tenant(open_team: Any) -> None:
    limits = BusLimits(agent_chunk_bytes_max=250_000, tenant_chunk_bytes_max=350_000)
    async with open_team(limits=limits) as (kernel, apis):
        alice, mallory = apis["alice"], apis["mallory"]
        # a group reserves its declared size when it opens, whatever its parts hold so far
        assert (
            await alice.bus.publish(split_message(result(200_000, source="agent:alice"), limits)[0])
        ).complete is False
        await refused(alice, split_message(result(100_000, source="agent:alice"), limits)[0], "agent_chunk_bytes_max")
        await refused(
            mallory, split_message(result(200_000, source="agent:mallory"), limits)[0], "tenant_chunk_bytes_max"
        )
        assert (
            await mallory.bus.publish(split_message(result(100_000, source="agent:mallory"), limits)[0])
        ).complete is False
        assert (await kernel.bus.store.chunk_usage(DEFAULT_TENANT))[0] == 2


async def test_parts_cannot_outgrow_or_change_their_group(open_team: Any) -> None:
    async with open_team() as (kernel, apis):
        alice = apis["alice"]
        parts = split_message(result(100_000, source="agent:alice"), kernel.limits)
        await alice.bus.publish(parts[0])
        other = parts[1].model_copy(update={"payload": parts[1].payload.model_copy(update={"total": 7})})
        with pytest.raises(ChunkIntegrityError):
            await alice.bus.publish(other)
        # a part claiming a tiny group cannot carry more than the size it declared
        tiny = parts[1].payload.model_copy(update={"group_id": str(uuid.uuid4()), "size_bytes": 10})
        with pytest.raises(ChunkIntegrityError):
            await alice.bus.publish(parts[1].model_copy(update={"payload": tiny}))
        assert (await publish_all(alice, parts[1:])).complete


async def test_a_group_is_neither_completed_nor_disturbed_by_another_agents_parts(open_team: Any) -> None:
    async with open_team() as (kernel, apis):
        alice, mallory = apis["alice"], apis["mallory"]
        mine = result(100_000, source="agent:alice")
        parts = split_message(mine, kernel.limits)
        for part in parts[:-1]:
            await alice.bus.publish(part)
        copies = carried_by(mine, "agent:mallory", kernel.limits)
        wrong = copies[0].model_copy(update={"payload": copies[0].payload.model_copy(update={"total": 9})})
        assert (await mallory.bus.publish(wrong)).complete is False  # alice's group wants 3 parts: not hers
        with pytest.raises(ChunkIntegrityError):  # her own group now wants 9
            await mallory.bus.publish(copies[-1])
        assert await kernel.bus.history("agent:bob") == []
        last = await alice.bus.publish(parts[-1])
        assert last.complete
        assert await kernel.bus.history("agent:bob") == [mine]


async def test_unfinished_groups_expire_on_a_timer(open_team: Any) -> None:
    limits = BusLimits(chunk_ttl_s=0.3, chunk_sweep_interval_s=0.05)
    async with open_team(limits=limits) as (kernel, apis):
        parts = split_message(result(100_000, source="agent:alice"), limits)
        for part in parts[:-1]:
            await apis["alice"].bus.publish(part)
        groups, held = await kernel.bus.store.chunk_usage(DEFAULT_TENANT)
        assert groups == 1
        assert held > 90_000
        await anyio.sleep(0.6)  # the time to live and a few sweeps; nothing touches the bus meanwhile
        assert await kernel.bus.store.chunk_usage(DEFAULT_TENANT) == (0, 0)
        # expired: the last part opens a new group, it completes nothing
        assert (await apis["alice"].bus.publish(parts[-1])).complete is False
        assert await kernel.bus.history("agent:bob") == []


async def test_expired_groups_are_swept_when_parts_arrive_and_free_their_quota(open_team: Any) -> None:
    limits = BusLimits(chunk_ttl_s=0.3, chunk_sweep_interval_s=3600, agent_chunk_groups_max=1)
    async with open_team(limits=limits) as (kernel, apis):
        alice = apis["alice"]
        old, new = (split_message(result(100_000, source="agent:alice"), limits) for _ in range(2))
        await alice.bus.publish(old[0])
        await refused(alice, new[0], "agent_chunk_groups_max")
        await anyio.sleep(0.4)  # the group's time to live, in wall-clock time
        assert (await alice.bus.publish(new[0])).complete is False
        groups, held = await kernel.bus.store.chunk_usage(DEFAULT_TENANT)
        assert (groups, held) == (1, len(base64.b64decode(new[0].payload.data)))
        assert (await publish_all(alice, new[1:])).complete
