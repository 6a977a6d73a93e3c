"""On Redis an invocation's binding, charge and count are one script, which reads everything it could fail on
before it writes: an engine error leaves no binding, no charge and no count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import sos_kernel
from sos_kernel.bus.store import Entry
from sos_kernel.errors import BackendFailure, NotFound

from .test_invocation_atomic import CARD, FUNDS
from .test_invocation_step import _counts, _messages, _prepare

pytestmark = pytest.mark.anyio


async def _evalshas(client: Any) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    connection = aioredis.Redis.from_url(redis_url)
    await connection.flushdb()
    try:
        yield connection
    finally:
        await connection.aclose()


async def test_redis_an_invocation_is_one_script_besides_its_message(redis_url: str, client: Any) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        skills = await _prepare(kernel)
        await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="warm")
        await client.config_resetstat()
        await kernel.bus.store.append("default", [("sos:channel:x", Entry("m1", b"{}"))], kernel.bus.retention)
        per_message = await _evalshas(client)
        await client.config_resetstat()
        await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="one")
        assert await _evalshas(client) == 1 + per_message
        await client.config_resetstat()
        await skills.record_invocation("free", caller="agent:caller", tenant="default", invocation_id="two")
        assert await _evalshas(client) == 1 + per_message


async def test_redis_an_engine_error_in_the_count_leaves_no_binding_charge_or_count(
    redis_url: str, client: Any
) -> None:
    async with sos_kernel.open(redis_url) as kernel:
        skills = await _prepare(kernel)
        await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="warm")
        key = f"sos:{{t:default}}:skill:{CARD['id']}:{CARD['version']}"
        good = await client.hget(key, "by_tenant")
        await client.hset(key, "by_tenant", "not json")
        with pytest.raises(BackendFailure):
            await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="i1")
        assert (await kernel.ledger.balance("agent:caller", "USD")).posted == FUNDS - 1_000
        with pytest.raises(NotFound):
            await kernel.ledger.get_transfer("skill:i1:author")
        assert not await client.hexists("sos:{t:default}:skillbind", "i1")
        await client.hset(key, "by_tenant", good)
        await skills.record_invocation("free", caller="agent:caller", tenant="default", invocation_id="i1")
        assert await _counts(skills) == 2
        assert [m.payload.invocation_id for m in await _messages(kernel)] == ["warm", "i1"]
        await kernel.ledger.check()
