"""pgvector (``memory="postgresql://..."``) against a real PostgreSQL with pgvector, started from the ``pgserver``
package (run by ``nox -s pgvector``, which installs it; skipped where neither pgserver nor asyncpg is installed).

The conformance checks whose answers do not depend on the search being exact run here unchanged; recall is
approximate (HNSW), so it is measured against exact search instead of compared to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

import sos_kernel
from sos_kernel.errors import InvalidArgument, InvalidURL, LimitExceeded, MissingDependency
from sos_kernel.memory import MemoryLimits

from . import test_memory_conformance as conformance

pytestmark = pytest.mark.anyio

SERVER_START_S_MAX = 120.0


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pgserver = pytest.importorskip("pgserver", reason="nox -s pgvector installs pgserver")
    pytest.importorskip("asyncpg", reason="pip install 'sos-kernel[pgvector]'")
    started = time.monotonic()
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    if time.monotonic() - started > SERVER_START_S_MAX:
        pytest.fail(f"PostgreSQL took over {SERVER_START_S_MAX} s to start")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
async def pg_kernel(pg_url: str, tmp_path: Path) -> AsyncIterator[sos_kernel.Kernel]:
    async with sos_kernel.open(f"sqlite:///{tmp_path}/sos.db", memory=pg_url) as kernel:
        yield kernel


class _Tenant:
    """A fresh tenant of the kernel, shaped like the ``api`` the conformance checks take."""

    def __init__(self, kernel: sos_kernel.Kernel) -> None:
        view = kernel.tenant(f"t{uuid.uuid4().hex[:12]}")
        self.memory, self.bus = view.memory, view.bus


CHECKS: list[Callable[..., Awaitable[None]]] = [
    conformance.test_remember_get_recall_and_replay,
    conformance.test_other_content_under_an_id_is_a_conflict_and_changes_nothing,
    conformance.test_where_filters_on_metadata,
    conformance.test_forget_and_empty_namespaces,
    conformance.test_a_namespace_keeps_one_space,
    conformance.test_remember_many_answers_in_order_with_replays,
    conformance.test_list_pages_by_id,
    conformance.test_remember_message_keeps_an_inbox_searchable,
]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_conformance_on_pgvector(pg_kernel: sos_kernel.Kernel, check: Callable[..., Awaitable[None]]) -> None:
    await check(_Tenant(pg_kernel))


async def test_bad_input_on_pgvector(pg_kernel: sos_kernel.Kernel) -> None:
    tenant = _Tenant(pg_kernel)
    await conformance.test_bad_input_is_refused_with_the_same_error_everywhere_and_writes_nothing(tenant, tenant)


async def test_ttl_on_pgvector(pg_kernel: sos_kernel.Kernel) -> None:
    mem = _Tenant(pg_kernel).memory
    await mem.remember("t", "short lived", id="short", ttl_s=0.3, vector=[1.0, 0.0])
    await mem.remember("t", "kept", id="kept", vector=[0.9, 0.1])
    await anyio.sleep(0.4)
    assert [h.id for h in await mem.recall("t", [1.0, 0.0])] == ["kept"]
    assert await mem.purge_expired() == 1
    assert [(n.name, n.count) for n in await mem.namespaces()] == [("t", 1)]


async def test_namespace_shares_on_pgvector(pg_kernel: sos_kernel.Kernel) -> None:
    """The per-agent and shared shares of namespaces_max hold on PostgreSQL as on the other stores."""
    mem = _Tenant(pg_kernel).memory
    mem.limits = MemoryLimits(namespaces_max=40)
    for i in range(4):
        await mem.remember(f"agent:bob/n{i}", "x", vector=[1.0])
    with pytest.raises(LimitExceeded, match="agent_namespaces_max"):
        await mem.remember("agent:bob/n4", "x", vector=[1.0])
    for i in range(4):
        await mem.remember(f"s{i}", "x", vector=[1.0])
    with pytest.raises(LimitExceeded, match="shared_namespaces_max"):
        await mem.remember("s4", "x", vector=[1.0])
    await mem.remember("agent:alice/notes", "x", vector=[1.0])
    await mem.remember("agent:bob/n0", "more", vector=[1.0])
    assert len(await mem.namespaces()) == 9


async def test_memory_and_byte_shares_on_pgvector(pg_url: str, tmp_path: Path) -> None:
    """The per-agent and shared shares of memories_max and bytes_max hold on PostgreSQL as on the other stores, a
    forget gives back; a database written before the groups were kept (no ``sos_memory_groups``) has them summed
    from its memories when a store connects."""
    import asyncpg

    limits = MemoryLimits(memories_max=8, bytes_max=4_000)  # bob: 4 memories, 2_000 bytes; shared: 2, 1_000
    async with sos_kernel.open(f"sqlite:///{tmp_path}/a.db", memory=pg_url, memory_limits=limits) as kernel:
        mem = _Tenant(kernel).memory
        for i in range(4):
            await mem.remember("agent:bob/n", "x", id=f"m{i}", vector=[1.0])
        with pytest.raises(LimitExceeded, match="agent_memories_max"):
            await mem.remember("agent:bob/other", "x", vector=[1.0])
        await mem.remember("team", "t" * 990, id="t0", vector=[1.0])
        with pytest.raises(LimitExceeded, match="shared_bytes_max"):
            await mem.remember("team", "t" * 10, id="t1", vector=[1.0])
        await mem.remember("agent:alice/notes", "mine", vector=[1.0])
        assert await mem.forget("agent:bob/n", "m0") is True
        await mem.remember("agent:bob/other", "x", vector=[1.0])
        tenant = mem.tenant
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("DROP TABLE sos_memory_groups")
    finally:
        await conn.close()
    async with sos_kernel.open(f"sqlite:///{tmp_path}/b.db", memory=pg_url, memory_limits=limits) as kernel:
        mem = kernel.tenant(tenant).memory
        with pytest.raises(LimitExceeded, match="agent_memories_max"):
            await mem.remember("agent:bob/n", "x", id="m0", vector=[1.0])
        with pytest.raises(LimitExceeded, match="shared_bytes_max"):
            await mem.remember("team", "t" * 10, id="t1", vector=[1.0])
        assert await mem.forget("agent:bob/n", "m1") is True
        await mem.remember("agent:bob/n", "x", id="m0", vector=[1.0])


async def test_tenants_stay_apart_on_pgvector(pg_kernel: sos_kernel.Kernel) -> None:
    a, b = _Tenant(pg_kernel).memory, _Tenant(pg_kernel).memory
    await a.remember("shared", "a's secret", id="x", vector=[1.0, 0.0])
    assert await b.recall("shared", [1.0, 0.0]) == []
    assert await b.namespaces() == []
    assert await b.forget("shared", "x") is False
    assert (await a.get("shared", "x")).text == "a's secret"


@asynccontextmanager
async def _store_kernel(pg_url: str, tmp_path: Path, **settings: int) -> AsyncIterator[sos_kernel.Kernel]:
    """A kernel whose memories live in a pgvector store opened with ``settings``."""
    from sos_kernel.backends.pgvector_memory import PgVectorMemoryStore

    store = await PgVectorMemoryStore.connect(pg_url, **settings)
    try:
        async with sos_kernel.open(f"sqlite:///{tmp_path}/sos.db", memory=store) as kernel:
            yield kernel
    finally:
        await store.aclose()


async def _random_namespace(mem: Any, n: int, d: int, seed: int) -> tuple[np.ndarray, list[str]]:
    matrix = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    ids = [f"m{i:05d}" for i in range(n)]
    for start in range(0, n, 1_000):
        batch = [
            {"text": ids[i], "id": ids[i], "vector": matrix[i].tolist()} for i in range(start, min(n, start + 1_000))
        ]
        await mem.remember_many("bench", batch)
    return matrix, ids


async def _recall_at_10(mem: Any, matrix: np.ndarray, ids: list[str], queries: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(queries):
        query = rng.standard_normal(matrix.shape[1]).astype(np.float32)
        expected = conformance.brute_force(matrix, ids, query, 10)
        hits = await mem.recall("bench", query.tolist(), k=10)
        found += len({h.id for h in hits} & {e[0] for e in expected})
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    return found / (10 * queries)


async def test_recall_at_10_against_exact_search(pg_url: str, tmp_path: Path) -> None:
    """A namespace up to exact_rows_max is searched exactly (1.0); past it, through the HNSW index (measured,
    held to a floor)."""
    async with _store_kernel(pg_url, tmp_path, exact_rows_max=5_000) as kernel:
        mem = _Tenant(kernel).memory
        assert mem.exact is False
        matrix, ids = await _random_namespace(mem, 5_000, 64, seed=11)
        assert await _recall_at_10(mem, matrix, ids, 30, seed=12) == 1.0
        await mem.remember("bench", "one more", id="m99999", vector=[1.0] * 64)
        matrix, ids = np.vstack([matrix, np.ones((1, 64), np.float32)]), [*ids, "m99999"]
        recall = await _recall_at_10(mem, matrix, ids, 50, seed=13)
    print(f"pgvector HNSW recall@10 against exact search: {recall:.3f} (5001 x 64)")
    assert recall >= 0.9


async def test_a_filtered_query_is_never_short_of_k_it_has(pg_url: str, tmp_path: Path) -> None:
    """A where that the index's nearest candidates do not meet: the query is answered exactly, not short."""
    async with _store_kernel(pg_url, tmp_path, exact_rows_max=100) as kernel:
        mem = _Tenant(kernel).memory
        near = [{"id": f"n{i:04d}", "text": "near", "vector": [1.0, 0.001 * i, 0.0]} for i in range(900)]
        far = [
            {"id": f"f{i}", "text": "far", "vector": [-1.0, 0.0, 0.1 * i], "metadata": {"kind": "rare"}}
            for i in range(5)
        ]
        await mem.remember_many("bench", near + far)
        hits = await mem.recall("bench", [1.0, 0.0, 0.0], k=5, where={"kind": "rare"})
        assert [h.id for h in hits] == ["f4", "f3", "f2", "f1", "f0"]  # the least opposite first
        assert len(await mem.recall("bench", [1.0, 0.0, 0.0], k=3, where={"kind": "rare"}, min_score=-0.5)) == 0


async def test_a_small_namespace_beside_a_large_one_is_searched_exactly(pg_url: str, tmp_path: Path) -> None:
    """One index holds every namespace of a size: a small namespace gets its own exact top k all the same."""
    async with _store_kernel(pg_url, tmp_path, ef_search=10) as kernel:
        tenant = _Tenant(kernel)
        await _random_namespace(tenant.memory, 2_000, 16, seed=21)
        rng = np.random.default_rng(22)
        small = rng.standard_normal((30, 16)).astype(np.float32)
        ids = [f"s{i:02d}" for i in range(30)]
        await tenant.memory.remember_many(
            "small", [{"id": i, "text": i, "vector": v.tolist()} for i, v in zip(ids, small, strict=True)]
        )
        query = rng.standard_normal(16).astype(np.float32)
        hits = await tenant.memory.recall("small", query.tolist(), k=10)
        assert [h.id for h in hits] == [e[0] for e in conformance.brute_force(small, ids, query, 10)]


async def test_index_settings_are_used_and_bad_ones_refused(pg_url: str, tmp_path: Path) -> None:
    import asyncpg

    from sos_kernel.backends.pgvector_memory import PgVectorMemoryStore

    async with _store_kernel(pg_url, tmp_path, hnsw_m=8, hnsw_ef_construction=40) as kernel:
        await _Tenant(kernel).memory.remember("n", "x", vector=[0.5] * 23)
    connection = await asyncpg.connect(pg_url)
    try:
        definition = await connection.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname='sos_memory_hnsw_23'")
    finally:
        await connection.close()
    assert "m='8'" in definition
    assert "ef_construction='40'" in definition
    for bad in (
        {"ef_search": 0},
        {"ef_search": 1_001},
        {"hnsw_m": 1},
        {"hnsw_ef_construction": 10},
        {"exact_rows_max": -1},
    ):
        with pytest.raises(InvalidArgument) as info:
            await PgVectorMemoryStore.connect(pg_url, **bad)
        assert info.value.code == "SOS-4005"


async def test_a_memory_url_combines_with_any_kernel_url(pg_url: str, redis_url: str) -> None:
    async with sos_kernel.open(redis_url, memory=pg_url) as kernel:
        assert kernel.memory.exact is False
        tenant = _Tenant(kernel)
        await tenant.memory.remember("n", "kept in PostgreSQL", id="pg", vector=[0.0, 1.0])
        assert (await tenant.memory.get("n", "pg")).text == "kept in PostgreSQL"


async def test_memory_urls_are_checked() -> None:
    with pytest.raises(InvalidURL):
        await sos_kernel.open("memory://", memory="mysql://x/y")
    try:
        import asyncpg  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(MissingDependency, match=r"sos-kernel\[pgvector\]"):
            await sos_kernel.open("memory://", memory="postgresql://127.0.0.1:9/x")
