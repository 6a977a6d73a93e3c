"""Memories in PostgreSQL with pgvector: ``sos_kernel.open(url, memory="postgresql://user@host/db")``.

For memories that outgrow one machine. Needs ``pip install 'sos-kernel[pgvector]'`` (asyncpg) and a server with
the ``vector`` extension (created if absent). Tables ``sos_memory_items``, ``sos_memory_spaces``,
``sos_memory_usage`` and ``sos_memory_groups`` (each owner group's count and bytes: an agent's own namespaces, or
the shared ones; made and summed from the stored memories on the first connect that finds it absent, under a
lock, so every process writing must run a version that keeps it); one HNSW index (cosine) per vector size, built
when the first namespace of that size is created. Every write is one transaction holding the tenant's advisory
lock, so the tenant's bounds and its groups' shares are checked atomically with it.

**Recall.** A namespace of up to ``EXACT_ROWS_MAX`` memories is searched exactly (a scan of its own rows by the
primary key): recall 1.0. A larger one is searched through the HNSW index, built with ``HNSW_M`` links per node and
``HNSW_EF_CONSTRUCTION`` candidates per insert, walked with ``hnsw.ef_search`` set for the query's transaction
(``EF_SEARCH``, at least the rows asked, at most ``EF_SEARCH_MAX``): a true neighbour can be missed. The index is
shared by every namespace of a vector size, so its walk can also end with fewer than ``k`` rows of the namespace
(or of a ``where``): then the query is answered again exactly, never short. ``exact`` is False; docs/memory.md
and docs/benchmarks.md report recall@10 against exact search. Every setting is a keyword of :meth:`connect`
(pass the store as ``memory=``); the index settings apply when the index of a size is created. Scores are
``1 - cosine distance``; equal scores are ordered by id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import asyncpg
import numpy as np

from ..errors import BackendFailure, BackendUnavailable, InvalidArgument
from ..memory.store import MemoryStore, PutOutcome, Quota, Snapshot, Space, StoredMemory, Vector, group_of

__all__ = [
    "EF_SEARCH",
    "EF_SEARCH_MAX",
    "EXACT_ROWS_MAX",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_M",
    "WHERE_OVERSAMPLE",
    "PgVectorMemoryStore",
]

EF_SEARCH = 200
"""HNSW candidates per query (pgvector's ``hnsw.ef_search``, default 40): more is slower and finds more true
neighbours. Raised to the rows a query asks for, since the walk returns no more than this."""
EF_SEARCH_MAX = 1_000
"""pgvector's own ceiling for ``hnsw.ef_search``."""
EXACT_ROWS_MAX = 20_000
"""Namespaces up to this many memories are searched exactly, recall 1.0 on any data: at 10k the scan measured
0.35-0.7x the rate of an ``ef_search`` 200 walk (docs/benchmarks.md); 0 sends every query to the index."""
HNSW_M = 16
"""Links per node of the HNSW graph (pgvector's default): more raises recall and the index's size and build time."""
HNSW_EF_CONSTRUCTION = 128
"""Candidates per insert into the graph (pgvector's default is 64): a better graph for slower writes."""
WHERE_OVERSAMPLE = 10
"""With a ``where`` filter, this many times ``k`` rows are taken from the index before filtering."""
POOL_SIZE_MAX = 10

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS sos_memory_items (
    tenant text NOT NULL, namespace text NOT NULL, id text NOT NULL, text text NOT NULL, metadata text NOT NULL,
    dims integer NOT NULL, vector vector NOT NULL, digest text NOT NULL, created double precision NOT NULL,
    expires double precision, size bigint NOT NULL, PRIMARY KEY (tenant, namespace, id));
CREATE INDEX IF NOT EXISTS sos_memory_items_expires ON sos_memory_items (tenant, expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS sos_memory_spaces (
    tenant text NOT NULL, namespace text NOT NULL, space text NOT NULL, count bigint NOT NULL,
    PRIMARY KEY (tenant, namespace));
CREATE TABLE IF NOT EXISTS sos_memory_usage (tenant text PRIMARY KEY, count bigint NOT NULL, bytes bigint NOT NULL);
"""
_GROUPS = """
SELECT pg_advisory_xact_lock(hashtext('sos_memory_groups'));
DO $$ BEGIN
IF to_regclass('sos_memory_groups') IS NULL THEN
    CREATE TABLE sos_memory_groups (
        tenant text NOT NULL, grp text NOT NULL, count bigint NOT NULL, bytes bigint NOT NULL,
        PRIMARY KEY (tenant, grp));
    INSERT INTO sos_memory_groups SELECT tenant, grp, count(*), sum(size) FROM (SELECT tenant, size, CASE WHEN
        left(namespace, 6) = 'agent:' THEN split_part(namespace, '/', 1) ELSE '' END AS grp FROM sos_memory_items) g
        GROUP BY tenant, grp;
END IF;
END $$;
"""

_COLUMNS = "id, text, metadata, vector::text, digest, created, expires"


def _vector_text(vector: bytes) -> str:
    return "[" + ",".join(repr(v) for v in np.frombuffer(vector, dtype="<f4").tolist()) + "]"


def _vector_bytes(text: str) -> bytes:
    return np.asarray(json.loads(text), dtype="<f4").tobytes()


def _row(row: Any) -> StoredMemory:
    id, text, metadata, vector, digest, created, expires = row
    return StoredMemory(id, text, metadata, _vector_bytes(vector), digest, created, expires)


def _check_settings(ef_search: int, exact_rows_max: int, hnsw_m: int, hnsw_ef_construction: int) -> None:
    # pgvector's own bounds: ef_search 1..1000, m 2..100, ef_construction 4..1000 and at least 2 m
    bounds = {
        "ef_search": (ef_search, 1, EF_SEARCH_MAX),
        "exact_rows_max": (exact_rows_max, 0, 2**62),
        "hnsw_m": (hnsw_m, 2, 100),
        "hnsw_ef_construction": (hnsw_ef_construction, max(4, 2 * hnsw_m), 1_000),
    }
    for name, (value, low, high) in bounds.items():
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidArgument(f"{name} must be an integer in [{low}, {high}], not {value!r}")


def _mapped(exc: Exception) -> Exception:
    if isinstance(exc, OSError | asyncpg.exceptions.ConnectionDoesNotExistError | asyncpg.CannotConnectNowError):
        return BackendUnavailable(f"PostgreSQL is unreachable: {exc}")
    return BackendFailure(f"PostgreSQL error: {exc}")


class PgVectorMemoryStore(MemoryStore):
    """Memory primitives on PostgreSQL + pgvector (see the module docstring)."""

    exact: ClassVar[bool] = False

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ef_search: int = EF_SEARCH,
        exact_rows_max: int = EXACT_ROWS_MAX,
        hnsw_m: int = HNSW_M,
        hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
    ) -> None:
        _check_settings(ef_search, exact_rows_max, hnsw_m, hnsw_ef_construction)
        self._pool = pool
        self.ef_search = ef_search
        self.exact_rows_max = exact_rows_max
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self._indexed: set[int] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        ef_search: int = EF_SEARCH,
        exact_rows_max: int = EXACT_ROWS_MAX,
        hnsw_m: int = HNSW_M,
        hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
    ) -> PgVectorMemoryStore:
        """A pool on ``url`` with the tables made; SOS-6030 when the server cannot be reached, SOS-4005 for a
        setting out of range."""
        _check_settings(ef_search, exact_rows_max, hnsw_m, hnsw_ef_construction)
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE_MAX)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BackendUnavailable(f"cannot reach PostgreSQL at {url}: {exc}") from exc
        try:
            async with pool.acquire() as c:
                await c.execute(_SCHEMA)
                async with c.transaction():  # the groups are summed once, by one process
                    await c.execute(_GROUPS)
        except (OSError, asyncpg.PostgresError) as exc:
            await pool.close()
            raise _mapped(exc) from exc
        return cls(
            pool,
            ef_search=ef_search,
            exact_rows_max=exact_rows_max,
            hnsw_m=hnsw_m,
            hnsw_ef_construction=hnsw_ef_construction,
        )

    async def aclose(self) -> None:
        await self._pool.close()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool.fetch(sql, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _mapped(exc) from exc

    async def space(self, tenant: str, namespace: str) -> Space | None:
        rows = await self._fetch(
            "SELECT space FROM sos_memory_spaces WHERE tenant=$1 AND namespace=$2", tenant, namespace
        )
        return Space.decode(rows[0][0]) if rows else None

    async def put_many(
        self, tenant: str, namespace: str, space: Space, memories: Sequence[StoredMemory], quota: Quota, now: float
    ) -> PutOutcome:
        try:
            async with self._pool.acquire() as c, c.transaction():
                await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", tenant)
                return await self._put(c, tenant, namespace, space, memories, quota, now)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _mapped(exc) from exc

    async def _put(
        self,
        c: Any,
        tenant: str,
        namespace: str,
        space: Space,
        memories: Sequence[StoredMemory],
        quota: Quota,
        now: float,
    ) -> PutOutcome:
        current = await c.fetchval(
            "SELECT space FROM sos_memory_spaces WHERE tenant=$1 AND namespace=$2", tenant, namespace
        )
        if current is not None and Space.decode(current) != space:
            return PutOutcome("space", space=Space.decode(current))
        if current is None:
            spaces = await c.fetchval("SELECT count(*) FROM sos_memory_spaces WHERE tenant=$1", tenant)
            if spaces >= quota.namespaces_max:
                return PutOutcome("namespaces")
            if quota.group_namespaces_max and await _group_count(c, tenant, quota.group) >= quota.group_namespaces_max:
                return PutOutcome("group")
        old_rows = await c.fetch(
            f"SELECT {_COLUMNS}, size FROM sos_memory_items WHERE tenant=$1 AND namespace=$2 AND id = ANY($3)",
            tenant,
            namespace,
            [m.id for m in memories],
        )
        old = {r[0]: (_row(tuple(r)[:7]), int(r[7])) for r in old_rows}
        existing, replaced, fresh = {}, [], []
        for m in memories:
            found = old.get(m.id)
            if found is not None and found[0].live(now):
                if found[0].digest != m.digest:
                    return PutOutcome("conflict", {m.id: found[0]})
                existing[m.id] = found[0]
                continue
            if found is not None:
                replaced.append(found[1])
            fresh.append(m)
        usage = await c.fetchrow("SELECT count, bytes FROM sos_memory_usage WHERE tenant=$1", tenant)
        count = (usage[0] if usage else 0) + len(fresh) - len(replaced)
        size = (usage[1] if usage else 0) + sum(m.size_bytes for m in fresh) - sum(replaced)
        if count > quota.memories_max:
            return PutOutcome("memories")
        if size > quota.bytes_max:
            return PutOutcome("bytes")
        group = group_of(namespace)
        held = await c.fetchrow("SELECT count, bytes FROM sos_memory_groups WHERE tenant=$1 AND grp=$2", tenant, group)
        held_count = (held[0] if held else 0) + len(fresh) - len(replaced)
        held_bytes = (held[1] if held else 0) + sum(m.size_bytes for m in fresh) - sum(replaced)
        if quota.group_memories_max and held_count > quota.group_memories_max:
            return PutOutcome("group_memories")
        if quota.group_bytes_max and held_bytes > quota.group_bytes_max:
            return PutOutcome("group_bytes")
        if fresh:
            await self._write(c, tenant, namespace, space, fresh, current is None, len(fresh) - len(replaced))
            await c.execute(
                "INSERT INTO sos_memory_usage VALUES ($1,$2,$3) ON CONFLICT (tenant) DO UPDATE SET count=$2, bytes=$3",
                tenant,
                count,
                size,
            )
            await c.execute(
                "INSERT INTO sos_memory_groups VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (tenant, grp) DO UPDATE SET count=$3, bytes=$4",
                tenant,
                group,
                held_count,
                held_bytes,
            )
        return PutOutcome(existing=existing)

    async def _write(
        self, c: Any, tenant: str, namespace: str, space: Space, fresh: list[StoredMemory], new: bool, added: int
    ) -> None:
        await self._index(c, space.dimensions)
        await c.executemany(
            "INSERT INTO sos_memory_items VALUES ($1,$2,$3,$4,$5,$6,$7::vector,$8,$9,$10,$11)"
            " ON CONFLICT (tenant, namespace, id) DO UPDATE SET text=EXCLUDED.text, metadata=EXCLUDED.metadata,"
            " dims=EXCLUDED.dims, vector=EXCLUDED.vector, digest=EXCLUDED.digest, created=EXCLUDED.created,"
            " expires=EXCLUDED.expires, size=EXCLUDED.size",
            [
                (
                    tenant,
                    namespace,
                    m.id,
                    m.text,
                    m.metadata,
                    space.dimensions,
                    _vector_text(m.vector),
                    m.digest,
                    m.created,
                    m.expires,
                    m.size_bytes,
                )
                for m in fresh
            ],
        )
        if new:
            await c.execute(
                "INSERT INTO sos_memory_spaces VALUES ($1,$2,$3,$4)", tenant, namespace, space.encode(), added
            )
        else:
            await c.execute(
                "UPDATE sos_memory_spaces SET count=count+$3 WHERE tenant=$1 AND namespace=$2", tenant, namespace, added
            )

    async def _index(self, c: Any, dims: int) -> None:
        # HNSW needs a fixed size: one partial index per vector size, on the column cast to it
        if dims in self._indexed:
            return
        await c.execute(
            f"CREATE INDEX IF NOT EXISTS sos_memory_hnsw_{dims} ON sos_memory_items"
            f" USING hnsw ((vector::vector({dims})) vector_cosine_ops)"
            f" WITH (m = {int(self.hnsw_m)}, ef_construction = {int(self.hnsw_ef_construction)}) WHERE dims = {dims}"
        )
        self._indexed.add(dims)

    async def get(self, tenant: str, namespace: str, id: str) -> StoredMemory | None:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM sos_memory_items WHERE tenant=$1 AND namespace=$2 AND id=$3", tenant, namespace, id
        )
        return _row(tuple(rows[0])) if rows else None

    async def delete(self, tenant: str, namespace: str, ids: Sequence[str]) -> int:
        try:
            async with self._pool.acquire() as c, c.transaction():
                await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", tenant)
                gone = await c.fetch(
                    "DELETE FROM sos_memory_items WHERE tenant=$1 AND namespace=$2 AND id = ANY($3) RETURNING size",
                    tenant,
                    namespace,
                    list(dict.fromkeys(ids)),
                )
                if not gone:
                    return 0
                freed = sum(int(r[0]) for r in gone)
                await c.execute(
                    "UPDATE sos_memory_usage SET count=count-$2, bytes=bytes-$3 WHERE tenant=$1",
                    tenant,
                    len(gone),
                    freed,
                )
                await c.execute(
                    "UPDATE sos_memory_groups SET count=count-$3, bytes=bytes-$4 WHERE tenant=$1 AND grp=$2",
                    tenant,
                    group_of(namespace),
                    len(gone),
                    freed,
                )
                await c.execute(
                    "UPDATE sos_memory_spaces SET count=count-$3 WHERE tenant=$1 AND namespace=$2",
                    tenant,
                    namespace,
                    len(gone),
                )
                await c.execute(
                    "DELETE FROM sos_memory_spaces WHERE tenant=$1 AND namespace=$2 AND count<=0", tenant, namespace
                )
                return len(gone)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _mapped(exc) from exc

    async def page(self, tenant: str, namespace: str, after: str | None, limit: int) -> list[StoredMemory]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM sos_memory_items WHERE tenant=$1 AND namespace=$2"
            ' AND id COLLATE "C" > $3 ORDER BY id COLLATE "C" LIMIT $4',
            tenant,
            namespace,
            after or "",
            limit,
        )
        return [_row(tuple(r)) for r in rows]

    async def namespaces(self, tenant: str) -> list[tuple[str, Space, int]]:
        rows = await self._fetch(
            'SELECT namespace, space, count FROM sos_memory_spaces WHERE tenant=$1 ORDER BY namespace COLLATE "C"',
            tenant,
        )
        return [(r[0], Space.decode(r[1]), int(r[2])) for r in rows]

    async def expired(self, tenant: str, now: float, limit: int) -> list[tuple[str, str]]:
        rows = await self._fetch(
            "SELECT namespace, id FROM sos_memory_items WHERE tenant=$1 AND expires IS NOT NULL AND expires <= $2"
            " LIMIT $3",
            tenant,
            now,
            limit,
        )
        return [(r[0], r[1]) for r in rows]

    async def snapshot(self, tenant: str, namespace: str) -> Snapshot | None:
        """Every vector of the namespace (for exact checks and tests; recall uses the index)."""
        space = await self.space(tenant, namespace)
        if space is None:
            return None
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM sos_memory_items WHERE tenant=$1 AND namespace=$2", tenant, namespace
        )
        return Snapshot.build([_row(tuple(r)) for r in rows], space)

    async def search(
        self,
        tenant: str,
        namespace: str,
        query: Vector,
        k: int,
        now: float,
        matcher: Callable[[Mapping[str, Any]], bool] | None,
        min_score: float | None,
    ) -> tuple[Space | None, list[tuple[StoredMemory, float]]]:
        rows = await self._fetch(
            "SELECT space, count FROM sos_memory_spaces WHERE tenant=$1 AND namespace=$2", tenant, namespace
        )
        space = Space.decode(rows[0][0]) if rows else None
        if space is None or len(query) != space.dimensions:
            return space, []
        args = (tenant, namespace, _vector_text(query.tobytes()), now)
        if int(rows[0][1]) > self.exact_rows_max:
            hits, complete = await self._approximate(space.dimensions, args, k, matcher, min_score)
            if complete:
                return space, hits
        return space, await self._exact(space.dimensions, args, k, matcher, min_score)

    async def _approximate(
        self,
        d: int,
        args: tuple[str, str, str, float],
        k: int,
        matcher: Callable[[Mapping[str, Any]], bool] | None,
        min_score: float | None,
    ) -> tuple[list[tuple[StoredMemory, float]], bool]:
        """The index's answer, and whether it is whole: False when the walk ended with fewer than ``k`` hits
        that no ``min_score`` explains (other namespaces, a ``where`` or expired rows took its candidates)."""
        limit = min(k if matcher is None else k * WHERE_OVERSAMPLE, EF_SEARCH_MAX)
        sql = (
            f"SELECT id, text, metadata, expires, 1 - ((vector::vector({d})) <=> $3::vector({d})) AS score"
            f" FROM sos_memory_items WHERE dims = {d} AND tenant=$1 AND namespace=$2"
            " AND (expires IS NULL OR expires > $4)"
            f" ORDER BY (vector::vector({d})) <=> $3::vector({d}) LIMIT $5"
        )
        try:
            async with self._pool.acquire() as c, c.transaction():
                # the walk returns at most ef_search rows: never fewer than asked
                await c.execute(f"SET LOCAL hnsw.ef_search = {min(max(self.ef_search, limit), EF_SEARCH_MAX)}")
                rows = await c.fetch(sql, *args, limit)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _mapped(exc) from exc
        hits = _hits(rows, matcher, min_score)
        hits.sort(key=lambda h: (-h[1], h[0].id))
        below = min_score is not None and bool(rows) and float(rows[-1][4]) < min_score
        return hits[:k], len(hits) >= k or below

    async def _exact(
        self,
        d: int,
        args: tuple[str, str, str, float],
        k: int,
        matcher: Callable[[Mapping[str, Any]], bool] | None,
        min_score: float | None,
    ) -> list[tuple[StoredMemory, float]]:
        """The namespace's live rows in distance order (ties by id), read until ``k`` pass the filter."""
        # MATERIALIZED keeps the planner from answering the ORDER BY with the (approximate) index
        sql = (
            "WITH c AS MATERIALIZED ("
            f"SELECT id, text, metadata, expires, (vector::vector({d})) <=> $3::vector({d}) AS distance"
            " FROM sos_memory_items WHERE tenant=$1 AND namespace=$2 AND (expires IS NULL OR expires > $4))"
            ' SELECT id, text, metadata, expires, 1 - distance FROM c ORDER BY distance, id COLLATE "C"'
        )
        hits: list[tuple[StoredMemory, float]] = []
        try:
            async with self._pool.acquire() as c, c.transaction():
                if matcher is None:
                    hits = _hits(await c.fetch(f"{sql} LIMIT $5", *args, k), None, min_score)
                else:
                    hits = await _first(c.cursor(sql, *args), k, matcher, min_score)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _mapped(exc) from exc
        hits.sort(key=lambda h: (-h[1], h[0].id))
        return hits


async def _first(
    rows: AsyncIterable[Any], k: int, matcher: Callable[[Mapping[str, Any]], bool], min_score: float | None
) -> list[tuple[StoredMemory, float]]:
    """The first ``k`` rows (in the cursor's order) that pass the filter, stopping below ``min_score``."""
    hits: list[tuple[StoredMemory, float]] = []
    async for row in rows:
        if min_score is not None and float(row[4]) < min_score:
            break
        hits.extend(_hits([row], matcher, None))
        if len(hits) >= k:
            break
    return hits


def _hits(
    rows: Sequence[Any], matcher: Callable[[Mapping[str, Any]], bool] | None, min_score: float | None
) -> list[tuple[StoredMemory, float]]:
    hits = []
    for id, text, metadata, expires, score in rows:
        if matcher is not None and not matcher(json.loads(metadata)):
            continue
        if min_score is not None and score < min_score:
            continue
        hits.append((StoredMemory(id, text, metadata, b"", "", 0.0, expires), float(score)))
    return hits


async def _group_count(c: Any, tenant: str, group: str) -> int:
    """The tenant's namespaces in ``group`` (:func:`~sos_kernel.memory.store.in_group`); LIKE is case-sensitive."""
    if group:  # agent names hold no LIKE metacharacter
        sql = "SELECT count(*) FROM sos_memory_spaces WHERE tenant=$1 AND (namespace=$2 OR namespace LIKE $3)"
        return int(await c.fetchval(sql, tenant, group, group + "/%"))
    sql = "SELECT count(*) FROM sos_memory_spaces WHERE tenant=$1 AND namespace NOT LIKE 'agent:%'"
    return int(await c.fetchval(sql, tenant))
