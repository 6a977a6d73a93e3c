"""Mirror: semantic memory per tenant and agent. See :mod:`sos_kernel.memory.service` for the guarantees."""

from .embed import (
    LEXICAL_DIMENSIONS,
    Embedder,
    FastEmbedEmbedder,
    LexicalEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from .models import (
    AGENT_NAMESPACES_SHARE_DIVISOR,
    AGENT_STORAGE_SHARE_DIVISOR,
    SHARED_NAMESPACES_SHARE_DIVISOR,
    SHARED_STORAGE_SHARE_DIVISOR,
    Hit,
    MemoryLimits,
    MemoryRecord,
    NamespaceInfo,
)
from .service import ID_CHARS_MAX, NAMESPACE_CHARS_MAX, PURGE_BATCH_MAX, Memory, check_namespace, namespace_owner
from .store import MemoryStore, PutOutcome, Quota, Snapshot, SnapshotCache, Space, StoredMemory, exact_top_k
from .where import compile_where

__all__ = [
    "AGENT_NAMESPACES_SHARE_DIVISOR",
    "AGENT_STORAGE_SHARE_DIVISOR",
    "ID_CHARS_MAX",
    "LEXICAL_DIMENSIONS",
    "NAMESPACE_CHARS_MAX",
    "PURGE_BATCH_MAX",
    "SHARED_NAMESPACES_SHARE_DIVISOR",
    "SHARED_STORAGE_SHARE_DIVISOR",
    "Embedder",
    "FastEmbedEmbedder",
    "Hit",
    "LexicalEmbedder",
    "Memory",
    "MemoryLimits",
    "MemoryRecord",
    "MemoryStore",
    "NamespaceInfo",
    "OpenAIEmbedder",
    "PutOutcome",
    "Quota",
    "SentenceTransformerEmbedder",
    "Snapshot",
    "SnapshotCache",
    "Space",
    "StoredMemory",
    "check_namespace",
    "compile_where",
    "exact_top_k",
    "namespace_owner",
]
