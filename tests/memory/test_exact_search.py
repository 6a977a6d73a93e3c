"""The exact search every numpy-backed store shares, against a plain Python brute force, on random matrices."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sos_kernel.memory import Snapshot, Space, StoredMemory, compile_where, exact_top_k


def _unit(row: np.ndarray) -> np.ndarray:
    exact = row.astype(np.float64)
    return (exact / np.linalg.norm(exact)).astype(np.float32)


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, list[bool], float]:
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 8))
    # small integers make ties (equal rows, equal scores) common
    values = st.integers(-3, 3).map(float)
    matrix = draw(hnp.arrays(np.float32, (n, d), elements=values))
    matrix[np.all(matrix == 0, axis=1), 0] = 1.0
    query = draw(hnp.arrays(np.float32, (d,), elements=values))
    if not np.any(query):
        query[0] = 1.0
    k = draw(st.integers(1, n + 3))
    live = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return matrix, query, k, live, draw(st.sampled_from([-2.0, 0.0, 0.5]))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_exact_top_k_is_brute_force_with_ties_by_id(
    case: tuple[np.ndarray, np.ndarray, int, list[bool], float],
) -> None:
    matrix, query, k, live, min_score = case
    n, d = matrix.shape
    ids = [f"id-{(i * 37) % 101:03d}-{i}" for i in range(n)]
    memories = [
        StoredMemory(
            ids[i],
            str(i),
            json.dumps({"even": i % 2 == 0}),
            _unit(matrix[i]).tobytes(),
            "",
            0.0,
            None if live[i] else 1.0,
        )
        for i in range(n)
    ]
    snap = Snapshot.build(memories, Space("", d))
    q = _unit(query)
    where = compile_where({"even": True}, 8)
    got = exact_top_k(snap, q, k, now=10.0, matcher=where, min_score=None if min_score < -1 else min_score)
    rows = {m.id: _unit(matrix[i]) for i, m in enumerate(memories)}
    # one float32 product per row, as any exact engine computes it (mathematical ties may differ by an ulp)
    product = np.stack([rows[id] for id in ids]) @ q
    scores = {id: float(product[i]) for i, id in enumerate(ids)}
    allowed = [ids[i] for i in range(n) if live[i] and i % 2 == 0 and (min_score < -1 or scores[ids[i]] >= min_score)]
    expected = sorted(allowed, key=lambda id: (-scores[id], id))[:k]
    assert [snap.ids[row] for row, _ in got] == expected
    assert all(math.isclose(score, scores[snap.ids[row]], abs_tol=1e-6) for row, score in got)
