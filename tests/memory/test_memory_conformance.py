"""Memory conformance on every backend and through the remote client: exact recall, where, TTL, ids, bounds."""

from __future__ import annotations

import json
from typing import Any

import anyio
import numpy as np
import pytest

import sos_kernel
from sos_kernel.errors import IdempotencyConflict, InvalidArgument, LimitExceeded, NotFound, SOSError
from sos_kernel.memory import MemoryLimits

from ..conftest import Api, OpenApi

pytestmark = pytest.mark.anyio


def brute_force(matrix: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The reference: float32 cosine over normalised rows, best first, ties by id."""
    rows = (matrix / np.linalg.norm(matrix.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)
    q = (query / np.float32(np.linalg.norm(query.astype(np.float64)))).astype(np.float32)
    scores = rows @ q
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [(ids[i], float(scores[i])) for i in order]


async def snapshot(api: Api) -> list[Any]:
    out = []
    for info in await api.memory.namespaces():
        out.append((info, [(m.id, m.text, m.metadata) for m in await api.memory.list(info.name, limit=1000)]))
    return out


async def test_remember_get_recall_and_replay(api: Api) -> None:
    mem = api.memory
    first = await mem.remember("notes", "the invoice is overdue", id="inv", metadata={"kind": "bill"})
    assert (first.id, first.namespace, first.replayed, first.expires_at) == ("inv", "notes", False, None)
    await mem.remember("notes", "the cat sat on the mat", id="cat")
    again = await mem.remember("notes", "the invoice is overdue", id="inv", metadata={"kind": "bill"})
    assert again.replayed
    assert again.created_at == first.created_at
    got = await mem.get("notes", "inv")
    assert (got.text, got.metadata) == ("the invoice is overdue", {"kind": "bill"})
    hits = await mem.recall("notes", "overdue invoices", k=5)
    assert [h.id for h in hits] == ["inv", "cat"]
    assert hits[0].score > hits[1].score
    assert hits[0].metadata == {"kind": "bill"}
    assert hits[0].text == got.text
    generated = await mem.remember("notes", "no id given")
    assert len(generated.id) == 32
    [info] = await mem.namespaces()
    assert (info.name, info.count, info.embedder, info.dimensions) == ("notes", 3, "lexical-v1", 384)


async def test_other_content_under_an_id_is_a_conflict_and_changes_nothing(api: Api) -> None:
    mem = api.memory
    await mem.remember("notes", "one", id="a", metadata={"n": 1})
    before = await snapshot(api)
    for change in ({"text": "two"}, {"metadata": {"n": 1.0}}, {"metadata": {"n": True}}, {"ttl_s": 60}):
        kwargs: dict[str, Any] = {"text": "one", "metadata": {"n": 1}, **change}
        with pytest.raises(IdempotencyConflict) as info:
            await mem.remember("notes", kwargs.pop("text"), id="a", **kwargs)
        assert info.value.code == "SOS-4009"
    with pytest.raises(IdempotencyConflict):  # a batch with one conflicting id writes none of its memories
        await mem.remember_many("notes", [{"text": "fresh", "id": "b"}, {"text": "other", "id": "a"}])
    assert await snapshot(api) == before


async def test_recall_with_vectors_equals_brute_force(api: Api) -> None:
    rng = np.random.default_rng(7)
    for case, (n, d, k) in enumerate([(1, 3, 5), (40, 8, 10), (257, 16, 7), (120, 5, 120)]):
        matrix = rng.standard_normal((n, d)).astype(np.float32)
        matrix[n // 2 :: 7] = matrix[0]  # duplicated rows: equal scores, broken by id
        ids = [f"m{(i * 7919) % 1009:04d}-{i}" for i in range(n)]
        ns = f"vectors/{case}"
        batch = [{"text": f"row {i}", "id": ids[i], "vector": matrix[i].tolist()} for i in range(n)]
        await api.memory.remember_many(ns, batch)
        for _ in range(5):
            query = rng.standard_normal(d).astype(np.float32)
            hits = await api.memory.recall(ns, query.tolist(), k=k)
            expected = brute_force(matrix, ids, query, k)
            assert [h.id for h in hits] == [e[0] for e in expected]
            assert [h.score for h in hits] == pytest.approx([e[1] for e in expected], abs=1e-6)
        # the query equal to a stored row finds it (and its duplicates, by id) first
        hits = await api.memory.recall(ns, matrix[0].tolist(), k=3)
        assert hits[0].score == pytest.approx(1.0, abs=1e-6)
    info = {i.name: i for i in await api.memory.namespaces()}
    assert info["vectors/1"].embedder == ""
    assert info["vectors/1"].dimensions == 8


async def test_where_filters_on_metadata(api: Api) -> None:
    mem = api.memory
    rows = [
        ("a", {"kind": "bill", "n": 1}),
        ("b", {"kind": "note", "n": 2}),
        ("c", {"kind": "bill", "n": 2.0}),
        ("d", {"kind": "todo", "n": True}),
        ("e", {}),
    ]
    for i, (id, metadata) in enumerate(rows):
        await mem.remember("w", f"text {id}", id=id, metadata=metadata, vector=[1.0, float(i) + 1])
    q = [1.0, 0.5]

    async def ids(where: Any, **kw: Any) -> list[str]:
        return sorted(h.id for h in await mem.recall("w", q, k=10, where=where, **kw))

    assert await ids({"kind": "bill"}) == ["a", "c"]
    assert await ids({"kind": {"$eq": "note"}}) == ["b"]
    assert await ids({"kind": {"$in": ["note", "todo"]}}) == ["b", "d"]
    assert await ids({"kind": "bill", "n": 1}) == ["a"]
    assert await ids({"n": 2}) == ["b"]  # type-exact: 2.0 and True are not 2
    assert await ids({"n": {"$in": [2.0, True]}}) == ["c", "d"]
    assert await ids({"missing": None}) == []
    assert [m.id for m in await mem.list("w", where={"kind": "bill"})] == ["a", "c"]
    # the filter applies before the top k: the best bill is found even when notes score higher
    assert [h.id for h in await mem.recall("w", [1.0, 5.0], k=1, where={"kind": "bill"})] == ["c"]
    assert [h.id for h in await mem.recall("w", [1.0, 1.0], min_score=0.999)] == ["a"]
    for bad in ({}, {"kind": ["bill"]}, {"kind": {"$ne": "x"}}, {"kind": {"$in": []}}, {"": 1}, [1], "kind=bill"):
        with pytest.raises(InvalidArgument) as info:
            await mem.recall("w", q, where=bad)
        assert info.value.code == "SOS-4005"
    with pytest.raises(InvalidArgument):
        await mem.list("w", where={"kind": {"$in": ["x"] * 40}})


async def test_ttl_expired_memories_are_never_returned_and_are_purged(api: Api, kernel: sos_kernel.Kernel) -> None:
    mem = api.memory
    await mem.remember("t", "short lived", id="short", ttl_s=0.3, vector=[1.0, 0.0])
    kept = await mem.remember("t", "kept", id="kept", vector=[0.9, 0.1])
    assert kept.expires_at is None
    short = await mem.get("t", "short")
    assert short.expires_at is not None
    assert short.expires_at > short.created_at
    assert [h.id for h in await mem.recall("t", [1.0, 0.0])] == ["short", "kept"]
    await anyio.sleep(0.45)
    assert [h.id for h in await mem.recall("t", [1.0, 0.0])] == ["kept"]
    assert [m.id for m in await mem.list("t")] == ["kept"]
    with pytest.raises(NotFound):
        await mem.get("t", "short")
    # the id is free again once expired, for any content
    await mem.remember("t", "reborn", id="short", vector=[1.0, 0.0], ttl_s=0.2)
    await anyio.sleep(0.3)
    await mem.remember("u", "a write purges the tenant's expired memories", vector=[1.0])
    assert {i.name: i.count for i in await mem.namespaces()} == {"t": 1, "u": 1}
    await mem.remember("t", "again", id="gone", vector=[0.0, 1.0], ttl_s=0.1)
    await anyio.sleep(0.2)
    assert await kernel.memory.purge_expired() == 1


async def test_forget_and_empty_namespaces(api: Api) -> None:
    mem = api.memory
    await mem.remember("f", "one", id="1", vector=[1.0, 0.0, 0.0])
    await mem.remember("f", "two", id="2", vector=[0.0, 1.0, 0.0])
    assert await mem.forget("f", "1") is True
    assert await mem.forget("f", "1") is False
    assert await mem.forget("nowhere", "1") is False
    with pytest.raises(NotFound) as info:
        await mem.get("f", "1")
    assert info.value.code == "SOS-4040"
    assert [h.id for h in await mem.recall("f", [1.0, 0.0, 0.0])] == ["2"]
    assert await mem.forget("f", "2") is True
    assert await mem.namespaces() == []
    # an emptied namespace is gone, its space with it: another size is welcome now
    await mem.remember("f", "wider", vector=[1.0, 0.0, 0.0, 0.0])
    assert (await mem.namespaces())[0].dimensions == 4


async def test_a_namespace_keeps_one_space(api: Api) -> None:
    mem = api.memory
    await mem.remember("given", "a", vector=[1.0, 2.0])
    with pytest.raises(InvalidArgument, match=r"holds 2"):
        await mem.remember("given", "b", vector=[1.0, 2.0, 3.0])
    with pytest.raises(InvalidArgument, match="vectors given by callers"):
        await mem.remember("given", "text needs the embedder")
    with pytest.raises(InvalidArgument, match="vectors given by callers"):
        await mem.recall("given", "a text query")
    with pytest.raises(InvalidArgument):
        await mem.recall("given", [1.0, 2.0, 3.0])
    await mem.remember("text", "embedded by the kernel")
    with pytest.raises(InvalidArgument):
        await mem.remember("text", "wrong size", vector=[1.0, 2.0])
    # a vector of the embedder's size may join an embedded namespace (the caller's own embedding)
    await mem.remember("text", "precomputed", vector=[1.0] * 384)
    assert await mem.recall("unknown", "nothing here") == []
    assert await mem.recall("unknown", [1.0, 2.0]) == []


BAD_CALLS: list[tuple[str, str, dict[str, Any], str]] = [
    ("remember", "namespace", {"namespace": "", "text": "x"}, "SOS-4005"),
    ("remember", "namespace", {"namespace": "a//b", "text": "x"}, "SOS-4005"),
    ("remember", "namespace", {"namespace": "agent:Bad Name", "text": "x"}, "SOS-4005"),
    ("remember", "namespace", {"namespace": "x" * 201, "text": "x"}, "SOS-4005"),
    ("remember", "text", {"namespace": "n", "text": "   "}, "SOS-4005"),
    ("remember", "text", {"namespace": "n", "text": "x" * 40_000}, "SOS-4010"),
    ("remember", "id", {"namespace": "n", "text": "x", "id": ""}, "SOS-4005"),
    ("remember", "id", {"namespace": "n", "text": "x", "id": "a\nb"}, "SOS-4005"),
    ("remember", "metadata", {"namespace": "n", "text": "x", "metadata": {"big": "x" * 9000}}, "SOS-4010"),
    ("remember", "metadata", {"namespace": "n", "text": "x", "metadata": [1, 2]}, "SOS-4005"),
    ("remember", "vector", {"namespace": "n", "text": "x", "vector": [0.0, 0.0]}, "SOS-4005"),
    ("remember", "vector", {"namespace": "n", "text": "x", "vector": [1.0, "2"]}, "SOS-4005"),
    ("remember", "vector", {"namespace": "n", "text": "x", "vector": [1.0, True]}, "SOS-4005"),
    ("remember", "vector", {"namespace": "n", "text": "x", "vector": [1e39, 1.0]}, "SOS-4005"),
    ("remember", "vector", {"namespace": "n", "text": "x", "vector": []}, "SOS-4010"),
    ("remember", "vector", {"namespace": "n", "text": "x", "vector": [1.0] * 5000}, "SOS-4010"),
    ("remember", "ttl_s", {"namespace": "n", "text": "x", "ttl_s": 0}, "SOS-4005"),
    ("remember", "ttl_s", {"namespace": "n", "text": "x", "ttl_s": -1}, "SOS-4005"),
    ("remember_many", "memories", {"namespace": "n", "memories": []}, "SOS-4005"),
    ("remember_many", "memories", {"namespace": "n", "memories": [{"text": "x", "colour": 1}]}, "SOS-4005"),
    ("remember_many", "memories", {"namespace": "n", "memories": [{"text": "x"}] * 1001}, "SOS-4010"),
    ("recall", "k", {"namespace": "n", "query": "x", "k": 0}, "SOS-4005"),
    ("recall", "k", {"namespace": "n", "query": "x", "k": 1001}, "SOS-4005"),
    ("recall", "min_score", {"namespace": "n", "query": "x", "min_score": 2}, "SOS-4005"),
    ("recall", "query", {"namespace": "n", "query": ""}, "SOS-4005"),
    ("list", "limit", {"namespace": "n", "limit": 0}, "SOS-4005"),
    ("get", "id", {"namespace": "n", "id": ""}, "SOS-4005"),
]


async def _refusal(api: Api, method: str, kwargs: dict[str, Any]) -> tuple[str, str]:
    args = dict(kwargs)
    namespace = args.pop("namespace")
    try:
        await getattr(api.memory, method)(namespace, **args)
    except SOSError as exc:
        return exc.code, str(exc)
    raise AssertionError(f"{method} {kwargs} was accepted")


async def test_bad_input_is_refused_with_the_same_error_everywhere_and_writes_nothing(
    api: Api, kernel: sos_kernel.Kernel
) -> None:
    await api.memory.remember("n", "already here", id="here")
    before = await snapshot(api)
    for method, _, kwargs, code in BAD_CALLS:
        got = await _refusal(api, method, kwargs)
        assert got[0] == code, (method, kwargs, got)
        assert got == await _refusal(kernel, method, kwargs)  # the trusted in-process answer, word for word
    assert await snapshot(api) == before


async def test_tenant_bounds_refuse_and_write_nothing(open_api: OpenApi) -> None:
    limits = MemoryLimits(memories_max=12, namespaces_max=2, bytes_max=40_000)  # shared: 3 memories, 10_000 bytes
    async with open_api(memory_limits=limits) as api:
        mem = api.memory
        await mem.remember_many("a", [{"text": "1", "vector": [1.0]}, {"text": "2", "vector": [1.0]}])
        with pytest.raises(LimitExceeded, match="memories_max") as info:
            await mem.remember_many("a", [{"text": "3", "vector": [1.0]}, {"text": "4", "vector": [1.0]}])
        assert info.value.code == "SOS-4010"
        await mem.remember("agent:x/b", "3", vector=[1.0])  # one shared and one agent's: each within its share
        await mem.forget("agent:x/b", (await mem.list("agent:x/b"))[0].id)
        await mem.remember("agent:x/b", "3", vector=[1.0])
        with pytest.raises(LimitExceeded, match="the tenant's memory would pass namespaces_max"):
            await mem.remember("agent:y/c", "x", vector=[1.0])
        await mem.forget("agent:x/b", (await mem.list("agent:x/b"))[0].id)
        with pytest.raises(LimitExceeded, match="bytes_max"):
            await mem.remember("a", "x" * 9_990, vector=[1.0])
        assert [(i.name, i.count) for i in await mem.namespaces()] == [("a", 2)]


async def test_remember_many_answers_in_order_with_replays(api: Api) -> None:
    batch = [
        {"text": "one", "id": "1", "vector": [1.0, 0.0]},
        {"text": "two", "vector": [0.0, 1.0], "metadata": {"x": [1, {"y": None}]}},
        {"text": "one", "id": "1", "vector": [1.0, 0.0]},
    ]
    records = await api.memory.remember_many("batch", batch)
    assert [r.text for r in records] == ["one", "two", "one"]
    assert records[0].id == records[2].id == "1"
    assert records[1].metadata == {"x": [1, {"y": None}]}
    again = await api.memory.remember_many("batch", [batch[0]])
    assert again[0].replayed
    assert (await api.memory.namespaces())[0].count == 2


async def test_list_pages_by_id(api: Api) -> None:
    ids = [f"id-{i:03d}" for i in range(25)]
    await api.memory.remember_many("p", [{"text": i, "id": i, "vector": [1.0, float(n)]} for n, i in enumerate(ids)])
    seen: list[str] = []
    after = None
    while True:
        page = await api.memory.list("p", limit=10, after=after)
        if not page:
            break
        seen += [m.id for m in page]
        after = page[-1].id
    assert seen == ids


async def test_remember_message_keeps_an_inbox_searchable(api: Api) -> None:
    await api.bus.send("agent:alice", "agent:bob", "the deploy is blocked on the database migration")
    message = (await api.bus.history("agent:bob"))[-1]
    record = await api.memory.remember_message(message)
    assert (record.namespace, record.id) == ("agent:bob/inbox", str(message.message_id))
    assert record.metadata["source"] == "agent:alice"
    assert (await api.memory.remember_message(message)).replayed
    [hit] = await api.memory.recall("agent:bob/inbox", "database migration", k=1)
    assert hit.text == "the deploy is blocked on the database migration"


async def test_results_survive_the_wire_exactly(api: Api, kernel: sos_kernel.Kernel) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((50, 12)).astype(np.float32)
    await api.memory.remember_many("exact", [{"text": str(i), "vector": matrix[i].tolist()} for i in range(50)])
    query = rng.standard_normal(12).tolist()
    assert await api.memory.recall("exact", query, k=20) == await kernel.memory.recall("exact", query, k=20)
    assert json.loads(json.dumps([h.score for h in await api.memory.recall("exact", query)])) == [
        h.score for h in await kernel.memory.recall("exact", query)
    ]
