"""Each owner group's memory count and bytes, kept by the stores, for memories stored before they were kept: a
SQLite file of layout 5 sums them when it is opened (its layout-6 migration); Redis sums them at the first write
or delete that finds them missing. Either way an agent already at its share is refused, and a forget gives back.
(Per engine: the layouts are the engines' own.)"""

from __future__ import annotations

import sqlite3
import struct
from contextlib import closing
from pathlib import Path

import pytest

import sos_kernel
from sos_kernel.backends.sqlite import SCHEMA_VERSION
from sos_kernel.errors import LimitExceeded
from sos_kernel.memory import MemoryLimits

pytestmark = pytest.mark.anyio

LAYOUT_5 = Path(__file__).parents[1] / "skills" / "skills_layout_5.sql"
LIMITS = MemoryLimits(memories_max=8)
"""agent:bob's own namespaces hold at most 4 memories, the shared ones 2."""
STORED = [("agent:bob/a", "a1"), ("agent:bob/a", "a2"), ("agent:bob/a", "a3"), ("agent:bob", "b1")]
STORED += [("team", "t1"), ("agent:alice/n", "n1")]


def _layout_5_file(path: Path) -> None:
    """A file of layout 5 (the layout-5 release's dump) holding the memories of ``STORED`` as that release wrote
    them (text "x", no metadata, one dimension): no group counts anywhere."""
    with closing(sqlite3.connect(path)) as c:
        c.executescript(LAYOUT_5.read_text())
        assert c.execute("PRAGMA user_version").fetchone()[0] == 5
        vector = struct.pack("<f", 1.0)
        size = 1 + 2 + len(vector)
        for namespace, id in STORED:
            c.execute(
                "INSERT INTO memory_items VALUES ('default',?,?,'x','{}',?,'d',0,NULL,?)", (namespace, id, vector, size)
            )
        for namespace in dict.fromkeys(n for n, _ in STORED):
            count = sum(n == namespace for n, _ in STORED)
            c.execute("INSERT INTO memory_spaces VALUES ('default',?,?,?)", (namespace, "1\t", count))
            c.execute("INSERT INTO memory_versions VALUES ('default',?,1)", (namespace,))
        c.execute("INSERT INTO memory_usage VALUES ('default',?,?)", (len(STORED), size * len(STORED)))
        c.commit()


async def _held_to_the_shares(kernel: sos_kernel.Kernel) -> None:
    mem = kernel.memory
    with pytest.raises(LimitExceeded, match="agent_memories_max"):
        await mem.remember("agent:bob/new", "x", vector=[1.0])
    await mem.remember("team", "x", id="t2", vector=[1.0])
    with pytest.raises(LimitExceeded, match="shared_memories_max"):
        await mem.remember("team", "x", id="t3", vector=[1.0])
    await mem.remember("agent:alice/n", "x", id="n2", vector=[1.0])
    assert await mem.forget("agent:bob/a", "a1") is True
    await mem.remember("agent:bob/new", "x", vector=[1.0])


async def test_a_layout_5_file_sums_the_groups_on_open(tmp_path: Path) -> None:
    path = tmp_path / "sos.db"
    _layout_5_file(path)
    async with sos_kernel.open(f"sqlite:///{path}", memory_limits=LIMITS) as kernel:
        with closing(sqlite3.connect(path)) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
            groups = c.execute("SELECT grp, count, bytes FROM memory_groups WHERE tenant='default' ORDER BY grp")
            assert groups.fetchall() == [("", 1, 7), ("agent:alice", 1, 7), ("agent:bob", 4, 28)]
        await _held_to_the_shares(kernel)


async def test_redis_sums_the_groups_at_the_first_write(redis_url: str) -> None:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url)
    await client.flushdb()
    async with sos_kernel.open(redis_url) as kernel:
        for namespace, id in STORED:
            await kernel.memory.remember(namespace, "x", id=id, vector=[1.0])
    try:
        keys = [k async for k in client.scan_iter(match="sos:{t:default}:memgroups")]
        assert len(keys) == 1
        await client.delete(*keys)  # as a release that kept no groups left the tenant
        async with sos_kernel.open(redis_url, memory_limits=LIMITS) as kernel:
            await _held_to_the_shares(kernel)
        fields = await client.hgetall(keys[0])
        assert (fields[b"c:agent:bob"], fields[b"c:"], fields[b"c:agent:alice"]) == (b"4", b"2", b"2")
    finally:
        await client.flushdb()
        await client.aclose()
