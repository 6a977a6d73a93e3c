"""Another process sees what one remembered (durable, multi-process backends), even after this one cached a
namespace's snapshot; and the lexical embedder gives every process the same vectors."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.memory import LexicalEmbedder, MemoryLimits
from sos_kernel.memory.store import LOG_VERSIONS_MAX

from ..conftest import requires

pytestmark = pytest.mark.anyio

CHILD = str(Path(__file__).with_name("_child.py"))
TEXT = "Determinism: the same text, the same vector, in every process."


async def _child(url: str, id: str, vector: list[float]) -> str:
    done = await anyio.run_process([sys.executable, CHILD, url, "shared/notes", id, json.dumps(vector)], check=False)
    if done.returncode != 0:
        raise AssertionError(done.stderr.decode())
    return done.stdout.decode().strip()


async def test_a_second_process_sees_new_memories(kernel_url: str, implements: Implements) -> None:
    requires(implements, multi_process=True)
    async with sos_kernel.open(kernel_url) as kernel:
        mem = kernel.memory
        await mem.remember("shared/notes", "written here", id="here", vector=[0.0, 1.0])
        assert [h.id for h in await mem.recall("shared/notes", [1.0, 0.0])] == ["here"]  # cached now
        digest = await _child(kernel_url, "there", [1.0, 0.0])
        hits = await mem.recall("shared/notes", [1.0, 0.0])
        assert [h.id for h in hits] == ["there", "here"]
        assert hits[0].text == "written by another process (there)"
        assert (await mem.get("shared/notes", "there")).text == hits[0].text
        assert await mem.forget("shared/notes", "there") is True
        await _child(kernel_url, "again", [0.6, 0.8])
        assert [h.id for h in await mem.recall("shared/notes", [1.0, 0.0])] == ["again", "here"]
    assert digest == hashlib.sha256(repr(LexicalEmbedder().embed_one(TEXT)).encode()).hexdigest()


def test_the_lexical_embedder_is_deterministic_normalised_and_lexical() -> None:
    embedder = LexicalEmbedder()
    one = embedder.embed_one(TEXT)
    assert one == embedder.embed_one(TEXT) == LexicalEmbedder().embed_one(TEXT)
    assert len(one) == 384
    assert abs(sum(v * v for v in one) - 1.0) < 1e-9
    assert embedder.name == "lexical-v1"
    assert LexicalEmbedder(64).name == "lexical-v1-64"

    def cosine(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(embedder.embed_one(a), embedder.embed_one(b), strict=True))

    # shared words and word pieces score high; synonyms with no letters in common do not (it is not semantic)
    assert cosine("the invoice is overdue", "overdue invoices") > 0.4
    assert cosine("the invoice is overdue", "the cat sat on the mat") < 0.3
    assert cosine("car", "automobile") < 0.2
    assert len(embedder.embed_one("?!")) == 384  # no word at all still gives a unit vector


async def _exact_ids(mem: Any, namespace: str, query: list[float], k: int) -> list[str]:
    """Brute force over everything the namespace lists now: ids best first, ties by id."""
    rows = await mem.list(namespace, limit=1000)
    vectors = {m.id: np.asarray(m.metadata["v"], dtype=np.float64) for m in rows}
    q = np.asarray(query, dtype=np.float64)
    score = {
        i: float(np.float32(v / np.linalg.norm(v)) @ np.float32(q / np.linalg.norm(q))) for i, v in vectors.items()
    }
    return sorted(score, key=lambda i: (-score[i], i))[:k]


async def test_a_cached_snapshot_follows_another_kernels_writes(kernel_url: str, implements: Implements) -> None:
    """One kernel caches a namespace; another adds, replaces and forgets; the first sees exactly the new state,
    through the write log, and by a full reload once the log no longer reaches back (LOG_VERSIONS_MAX writes)."""
    requires(implements, multi_process=True)
    rng = np.random.default_rng(5)

    def item(id: str) -> dict[str, Any]:
        v = rng.standard_normal(6).tolist()
        return {"text": id, "id": id, "vector": v, "metadata": {"v": v}}

    async with sos_kernel.open(kernel_url) as reader, sos_kernel.open(kernel_url) as writer:
        await writer.memory.remember_many("ns", [item(f"a{i:03d}") for i in range(50)])
        query = rng.standard_normal(6).tolist()
        assert [h.id for h in await reader.memory.recall("ns", query, k=20)] == await _exact_ids(
            writer.memory, "ns", query, 20
        )
        await writer.memory.remember_many("ns", [item(f"b{i:03d}") for i in range(30)])
        for i in range(0, 50, 3):
            await writer.memory.forget("ns", f"a{i:03d}")
        await writer.memory.remember("ns", "short", id="c", vector=[1.0] * 6, ttl_s=0.05, metadata={"v": [1.0] * 6})
        for _ in range(3):
            query = rng.standard_normal(6).tolist()
            expected = await _exact_ids(writer.memory, "ns", query, 25)
            assert [h.id for h in await reader.memory.recall("ns", query, k=25)] == expected
        await anyio.sleep(0.1)
        await writer.memory.remember("ns", "replaced", id="c", vector=[-1.0] * 6, metadata={"v": [-1.0] * 6})
        hits = await reader.memory.recall("ns", [-1.0] * 6, k=1)
        assert (hits[0].id, hits[0].text) == ("c", "replaced")
        for i in range(LOG_VERSIONS_MAX + 5):  # the reader falls further behind than the log reaches
            await writer.memory.remember("ns", f"d{i}", id=f"d{i % 7}", vector=[0.5] * 6, metadata={"v": [0.5] * 6})
            await writer.memory.forget("ns", f"d{i % 7}")
        query = rng.standard_normal(6).tolist()
        assert [h.id for h in await reader.memory.recall("ns", query, k=30)] == await _exact_ids(
            writer.memory, "ns", query, 30
        )


FILL_CHILD = str(Path(__file__).with_name("_fill_child.py"))


@pytest.mark.parametrize("share", ["memories", "bytes"])
async def test_two_processes_cannot_pass_an_agents_share(kernel_url: str, implements: Implements, share: str) -> None:
    """Two processes fill agent:bob's own namespaces at once: together they store exactly his share
    (``agent_memories_max`` 5 of ``memories_max`` 10, or ``agent_bytes_max`` 5 * 107 bytes of ``bytes_max``), never
    more, since the share is checked in each write's atomic step; and agent:alice still stores."""
    requires(implements, multi_process=True)
    size = 1 + 2 + 4 + 100  # text, "{}" metadata, one float32
    if share == "memories":
        limits = MemoryLimits(memories_max=10, bytes_max=10 * size)
    else:
        limits = MemoryLimits(memories_max=1_000, bytes_max=10 * size + 1)
    async with sos_kernel.open(kernel_url, memory_limits=limits) as kernel:
        await kernel.tenants.create("acme", plan="growth")
        mem = kernel.tenant("acme").memory
        args = ["8", "100", str(limits.memories_max), str(limits.bytes_max)]
        outs: list[str] = []

        async def fill(prefix: str) -> None:
            done = await anyio.run_process([sys.executable, FILL_CHILD, kernel_url, prefix, *args], check=False)
            if done.returncode != 0:
                raise AssertionError(done.stderr.decode())
            outs.append(done.stdout.decode().strip())

        async with anyio.create_task_group() as tg:
            tg.start_soon(fill, "a")
            tg.start_soon(fill, "b")
        assert sum(int(o) for o in outs) == 5
        assert [(n.name, n.count) for n in await mem.namespaces()] == [("agent:bob/fill", 5)]
        await mem.remember("agent:alice/notes", "x" * 100, vector=[1.0])
