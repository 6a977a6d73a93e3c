"""Another process sees what one remembered (durable, multi-process backends), even after this one cached a
namespace's snapshot; and the lexical embedder gives every process the same vectors."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.memory import LexicalEmbedder

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
