"""pgvector (``memory="postgresql://..."``) against a real PostgreSQL with pgvector, started from the ``pgserver``
package (run by ``nox -s pgvector``, which installs it; skipped where neither pgserver nor asyncpg is installed).

The conformance checks whose answers do not depend on the search being exact run here unchanged; recall is
approximate (HNSW), so it is measured against exact search instead of compared to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest

import sos_kernel
from sos_kernel.errors import InvalidURL, MissingDependency

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


async def test_tenants_stay_apart_on_pgvector(pg_kernel: sos_kernel.Kernel) -> None:
    a, b = _Tenant(pg_kernel).memory, _Tenant(pg_kernel).memory
    await a.remember("shared", "a's secret", id="x", vector=[1.0, 0.0])
    assert await b.recall("shared", [1.0, 0.0]) == []
    assert await b.namespaces() == []
    assert await b.forget("shared", "x") is False
    assert (await a.get("shared", "x")).text == "a's secret"


async def test_recall_at_10_against_exact_search(pg_kernel: sos_kernel.Kernel) -> None:
    """HNSW is approximate: measure recall@10 against exact search (reported; held to a floor)."""
    mem = _Tenant(pg_kernel).memory
    assert mem.exact is False
    rng = np.random.default_rng(11)
    n, d = 5_000, 64
    matrix = rng.standard_normal((n, d)).astype(np.float32)
    ids = [f"m{i:05d}" for i in range(n)]
    for start in range(0, n, 1_000):
        batch = [{"text": ids[i], "id": ids[i], "vector": matrix[i].tolist()} for i in range(start, start + 1_000)]
        await mem.remember_many("bench", batch)
    found = total = 0
    for _ in range(50):
        query = rng.standard_normal(d).astype(np.float32)
        expected = conformance.brute_force(matrix, ids, query, 10)
        hits = await mem.recall("bench", query.tolist(), k=10)
        found += len({h.id for h in hits} & {e[0] for e in expected})
        total += 10
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    recall = found / total
    print(f"pgvector HNSW recall@10 against exact search: {recall:.3f} ({n} x {d})")
    assert recall >= 0.9


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
