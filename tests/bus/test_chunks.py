"""Chunked messages: the reassembled message meets every check a whole one does, and unfinished groups are bounded.

Runs on every backend and through the remote client, as agent sessions (tokens bound to one agent) and as the
tenant's admin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import sos_kernel
from sos_kernel import BusLimits
from sos_kernel.bus import split_message
from sos_kernel.contracts import ChunkMessage, Message, TaskCompletedMessage, TaskCompletedPayload, utcnow
from sos_kernel.errors import Forbidden
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
