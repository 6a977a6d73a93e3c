"""Embedders: text to vectors, chosen when the kernel is opened (``sos_kernel.open(url, embedder=...)``).

An :class:`Embedder` has a ``name`` (recorded by every namespace it fills), ``dimensions`` and an async
``embed(texts)`` returning one vector per text. Shipped:

- :class:`LexicalEmbedder` (the default, ``lexical-v1``): offline, deterministic, no model. It hashes word
  unigrams, word bigrams and character trigrams into ``dimensions`` signed buckets and L2-normalises. It is
  **lexical, not semantic**: texts that share words and word pieces score high ("invoice overdue" vs "overdue
  invoices"); synonyms with no shared letters ("car" vs "automobile") do not. Use a model for meaning.
- :class:`OpenAIEmbedder`: any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint (OpenAI, vLLM, Ollama,
  LM Studio, text-embeddings-inference...), over httpx.
- :class:`FastEmbedEmbedder` and :class:`SentenceTransformerEmbedder`: local models, when the user installs
  ``sos-kernel[fastembed]`` or ``sos-kernel[sentence-transformers]`` (the model is loaded on first use).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import BackendFailure, BackendUnavailable, InvalidArgument, MissingDependency

__all__ = [
    "LEXICAL_DIMENSIONS",
    "Embedder",
    "FastEmbedEmbedder",
    "LexicalEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
]

LEXICAL_DIMENSIONS = 384
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_WEIGHTS = {"w": 1.0, "b": 0.7, "c": 0.4}
"""Feature weights: whole words count most, character trigrams (spelling variants, plurals) least."""


@runtime_checkable
class Embedder(Protocol):
    """Text to vectors: ``name`` (stable: namespaces record it), ``dimensions`` and ``embed``."""

    @property
    def name(self) -> str: ...
    @property
    def dimensions(self) -> int: ...
    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def _features(text: str) -> list[tuple[str, str]]:
    words = _WORD_RE.findall(text.casefold())
    out = [("w", w) for w in words]
    out += [("b", f"{a} {b}") for a, b in itertools.pairwise(words)]
    for w in words:
        padded = f"<{w}>"
        out += [("c", padded[i : i + 3]) for i in range(len(padded) - 2)]
    return out or [("w", text)]  # no word at all: the text itself is its one feature


class LexicalEmbedder:
    """The default embedder: hashed words, word pairs and character trigrams, L2-normalised (see the module
    docstring; lexical, not semantic). Deterministic across processes, platforms and Python versions."""

    def __init__(self, dimensions: int = LEXICAL_DIMENSIONS) -> None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 8 <= dimensions <= 65_536:
            raise InvalidArgument(f"dimensions must be an int in 8..65536, got {dimensions!r}")
        self._dimensions = dimensions

    @property
    def name(self) -> str:
        return "lexical-v1" if self._dimensions == LEXICAL_DIMENSIONS else f"lexical-v1-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed_one(self, text: str) -> list[float]:
        """One text's vector (synchronous: pure computation)."""
        vector = [0.0] * self._dimensions
        for kind, feature in _features(text):
            digest = hashlib.blake2b(f"{kind}:{feature}".encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self._dimensions
            sign = 1.0 if digest[4] & 1 else -1.0
            vector[bucket] += sign * _WEIGHTS[kind]
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:  # every feature cancelled out: fall back on the text's own bucket
            vector[int.from_bytes(hashlib.blake2b(text.encode()).digest()[:4], "little") % self._dimensions] = 1.0
            norm = 1.0
        return [v / norm for v in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(t) for t in texts]


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint: ``POST {base_url}/embeddings`` with ``{"model", "input"}``.

    ``dimensions`` is what the model returns (checked on every answer: another size is SOS-6031); it is also sent
    as the request's ``dimensions`` when ``send_dimensions`` is set (models that can shorten their vectors).
    A connection failure, a timeout, HTTP 429 or a 5xx is SOS-6030 (retryable); any other error status or a
    malformed answer SOS-6031, with the status and the start of the body in ``details``. At most ``batch_max``
    texts go in one request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        dimensions: int,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        batch_max: int = 256,
        send_dimensions: bool = False,
        transport: Any = None,
    ) -> None:
        try:
            import httpx
        except ModuleNotFoundError as exc:  # pragma: no cover - httpx ships with the client and server extras
            raise MissingDependency("OpenAIEmbedder needs httpx: pip install 'sos-kernel[client]'") from exc
        if not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidArgument("dimensions must be an int >= 1")
        self.model = model
        self._dimensions = dimensions
        self.batch_max = batch_max
        self.send_dimensions = send_dimensions
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers, transport=transport
        )

    @property
    def name(self) -> str:
        return f"openai:{self.model}:{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_max):
            out += await self._batch(list(texts[start : start + self.batch_max]))
        return out

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        import httpx

        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.send_dimensions:
            body["dimensions"] = self._dimensions
        try:
            response = await self._http.post("/embeddings", json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"the embeddings endpoint cannot be reached: {exc}") from exc
        details = {"status": response.status_code, "body": response.text[:500]}
        if response.status_code == 429 or response.status_code >= 500:
            raise BackendUnavailable(f"the embeddings endpoint answered HTTP {response.status_code}", details=details)
        if response.status_code >= 400:
            raise BackendFailure(f"the embeddings endpoint refused: HTTP {response.status_code}", details=details)
        return self._vectors(response, len(texts), details)

    def _vectors(self, response: Any, count: int, details: dict[str, Any]) -> list[list[float]]:
        try:
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
            vectors = [[float(v) for v in row["embedding"]] for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendFailure(f"the embeddings endpoint's answer is malformed: {exc}", details=details) from None
        if len(vectors) != count or any(len(v) != self._dimensions for v in vectors):
            raise BackendFailure(
                f"the embeddings endpoint returned {len(vectors)} vectors for {count} texts, or not of "
                f"{self._dimensions} dimensions",
                details=details,
            )
        return vectors


class FastEmbedEmbedder:
    """A fastembed (ONNX) model, e.g. ``BAAI/bge-small-en-v1.5`` (384 d); needs ``sos-kernel[fastembed]``.

    fastembed fetches the model from its hub on first use; ``options`` go to ``fastembed.TextEmbedding`` (e.g.
    ``cache_dir``, ``specific_model_path`` for a model already on disk). ``name`` is what namespaces record
    (default ``fastembed:<model_name>``)."""

    def __init__(
        self,
        model_name: str = "BAAI/bge-small-en-v1.5",
        dimensions: int = 384,
        *,
        name: str | None = None,
        **options: Any,
    ) -> None:
        try:
            from fastembed import TextEmbedding
        except ModuleNotFoundError as exc:
            pip = "pip install 'sos-kernel[fastembed]'"
            raise MissingDependency(f"FastEmbedEmbedder needs fastembed: {pip}", details={"pip": pip}) from exc
        self.model_name = model_name
        self._name = name or f"fastembed:{model_name}"
        self._dimensions = dimensions
        self._model = TextEmbedding(model_name=model_name, **options)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import anyio

        def run() -> list[list[float]]:
            return [[float(x) for x in v] for v in self._model.embed(list(texts))]

        return await anyio.to_thread.run_sync(run)


class SentenceTransformerEmbedder:
    """A sentence-transformers model, e.g. ``all-MiniLM-L6-v2`` (384 d); needs
    ``sos-kernel[sentence-transformers]``.

    ``model_name`` is a model id or a local model directory (offline: set ``HF_HUB_OFFLINE=1``); ``options`` go
    to ``SentenceTransformer``. ``name`` is what namespaces record (default
    ``sentence-transformers:<model_name>``): give one when loading from a directory, so that the same model at
    another path on another machine fills and queries the same namespaces."""

    def __init__(self, model_name: str = "all-MiniLM-L6-v2", *, name: str | None = None, **options: Any) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ModuleNotFoundError as exc:
            pip = "pip install 'sos-kernel[sentence-transformers]'"
            raise MissingDependency(f"SentenceTransformerEmbedder needs it: {pip}", details={"pip": pip}) from exc
        self.model_name = model_name
        self._name = name or f"sentence-transformers:{model_name}"
        self._model = SentenceTransformer(model_name, **options)
        self._dimensions = _model_dimensions(self._model)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import anyio

        def run() -> list[list[float]]:
            vectors: list[list[float]] = self._model.encode(list(texts), convert_to_numpy=True).tolist()
            return vectors

        return await anyio.to_thread.run_sync(run)


def _model_dimensions(model: Any) -> int:
    # sentence-transformers 5.x renamed the method; the old name warns there and is the only one before
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimensions = method()
    if not isinstance(dimensions, int) or dimensions < 1:
        raise BackendFailure(f"the model reports no embedding size ({dimensions!r})")
    return dimensions
