"""Mirror: semantic memory per tenant and agent (``kernel.memory``, ``session.memory``, ``client.memory``).

Guarantees:

- **Exact, deterministic recall.** Scores are cosine similarity (the dot product of L2-normalised vectors, in
  float32); hits come best first and equal scores by id, so the same store and query give the same list on every
  backend and over HTTP. ``memory://``, ``sqlite:///`` and ``redis://`` search exactly (recall 1.0 against brute
  force); a store that does not (pgvector's HNSW) declares ``exact = False``.
- **Idempotent by id.** ``remember`` with an id already in the namespace and the same content (text, metadata,
  given vector, ``ttl_s``) is a replay: the stored memory comes back with ``replayed=True``; other content is
  SOS-4009 and changes nothing. Without an id the kernel makes one (a UUID); ids are per namespace.
- **One space per namespace.** A namespace records the embedder that filled it (``""`` when callers gave the
  vectors) and its dimensions, at its first memory; a text needing another embedder, or a vector of another size,
  is SOS-4005. A namespace whose last memory is forgotten is removed, its space with it.
- **Bounded.** Every bound of :class:`MemoryLimits` is checked before anything is written (SOS-4010 for counts
  and sizes, SOS-4005 for malformed values); the tenant's memories, bytes and namespaces, and each owner's share
  of them (an agent's own namespaces, or the shared ones: ``agent_*_max``, ``shared_*_max``), are checked
  atomically with the write that would pass them; a forget gives its memory's count and bytes back to the share.
- **TTL.** A memory with ``ttl_s`` is never returned once expired; expired memories are purged by every write of
  the tenant (up to ``PURGE_BATCH_MAX`` at a time), by a ``get`` that finds one, and by :meth:`Memory.purge_expired`.

Access (sessions): reading needs ``memory:read``, writing ``memory:write``. A namespace ``agent:<name>`` or
``agent:<name>/...`` is that agent's: only a session of that agent reaches it, unless it holds ``memory:admin``
(``admin`` holds every scope) or presents a capability chain granting ``memory:read`` / ``memory:write`` on
``memory:<namespace>`` whose leaf's subject is the session's agent (each call spends one use of its limited
links). Every other namespace is shared by the tenant's holders of the scopes; ``namespaces()`` lists, for a
session without ``memory:admin``, the shared namespaces and its own.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import re
import time
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IdempotencyConflict, InvalidArgument, LimitExceeded, NotFound
from ..identity.capability import Capability
from ..operations import Wire, operation, service
from .embed import Embedder
from .models import Hit, MemoryLimits, MemoryRecord, NamespaceInfo
from .store import MemoryStore, Quota, Space, StoredMemory, Vector
from .where import compile_where

if TYPE_CHECKING:
    from ..contracts import Message
    from ..guard import Caller
    from ..identity.service import Capabilities

__all__ = [
    "ID_CHARS_MAX",
    "NAMESPACE_CHARS_MAX",
    "PURGE_BATCH_MAX",
    "Memory",
    "check_namespace",
    "message_memory",
    "namespace_owner",
]

NAMESPACE_CHARS_MAX = 200
ID_CHARS_MAX = 256
PURGE_BATCH_MAX = 256
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9._:-]+)*$")
_AGENT_NS_RE = re.compile(r"agent:[a-z][a-z0-9-]*(/.*)?", re.DOTALL)
_ITEM_KEYS = frozenset({"text", "id", "metadata", "vector", "ttl_s"})
READ, WRITE, LIFT = "memory:read", "memory:write", "memory:admin"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_UNCHECKED = ("metadata", "vector", "query", "where", "memories")
"""Arguments the service checks itself: over HTTP they are refused with the in-process message."""


def check_namespace(namespace: Any, *, stored: bool = False) -> str:
    """``namespace`` if it is well formed and canonical, else SOS-4005. Grammar: 1..``NAMESPACE_CHARS_MAX``
    characters, segments of ``a-z 0-9 . _ : -`` joined by single ``/``, starting with a letter or digit, no segment
    ``.`` or ``..``; one starting ``agent:`` must name an agent (``agent:<name>`` or ``agent:<name>/...``, names as
    tokens have them). Canonical: equal to :func:`fold_namespace` of itself, the form policies match, so a rule on
    ``agent:bob/**`` and the service's owner test read the same string. ``stored=True`` (reads and forgets) also
    accepts a name written before namespaces had to be canonical (upper case, ``.``/``..`` segments); such a name
    has no owner and only ``memory:admin`` reaches it (see :func:`_reach`)."""
    if (
        not isinstance(namespace, str)
        or not 0 < len(namespace) <= NAMESPACE_CHARS_MAX
        or not _NAMESPACE_RE.fullmatch(namespace)
    ):
        raise InvalidArgument(
            f"namespace {namespace!r} must be 1-{NAMESPACE_CHARS_MAX} characters of a-z 0-9 . _ : - in "
            "segments joined by '/' (like 'agent:alice/notes' or 'team/research')",
            details={"namespace": repr(namespace)[:300]},
        )
    if not stored:
        _check_canonical(namespace)
    if namespace.startswith("agent:") and not _AGENT_NS_RE.fullmatch(namespace):
        raise InvalidArgument(
            f"namespace {namespace!r} starts with 'agent:' but names no agent (agent:<name>[/...], names "
            "lower-case letters, digits and '-')",
            details={"namespace": namespace},
        )
    return namespace


def fold_namespace(namespace: str) -> str:
    """``namespace`` as policies match it (NFKC, case-folded): a canonical namespace is its own fold."""
    return unicodedata.normalize("NFKC", namespace).casefold()


def _check_canonical(namespace: str) -> None:
    folded = fold_namespace(namespace)
    if folded != namespace:
        rule = f"namespaces are canonical (lower-case, NFKC): write {folded!r}"
    elif any(unicodedata.category(c) in ("Cc", "Cf") for c in namespace):
        rule = "namespaces hold no control or format characters"
    elif any(segment in ("", ".", "..") for segment in namespace.split("/")):
        rule = "namespaces hold no empty, '.' or '..' segment"
    else:
        return
    raise InvalidArgument(
        f"namespace {namespace!r} is refused: {rule}; nothing was read or written",
        details={"namespace": repr(namespace)[:300], "rule": "canonical"},
    )


def namespace_owner(namespace: Any) -> str | None:
    """The agent a namespace belongs to (``agent:<name>``), or None for a shared one."""
    if isinstance(namespace, str) and namespace.startswith("agent:"):
        return namespace.split("/", 1)[0]
    return None


# -- access: the rules that are not declarations (see sos_kernel.operations) --------------------------------------


async def _reach(caller: Caller, memory: Memory, namespace: Any, action: str, capability: Any) -> None:
    """Refuse (SOS-5004) unless the caller may ``action`` on ``namespace`` (see the module docstring)."""
    principal = caller.principal
    if principal.allows(LIFT):
        return
    if isinstance(namespace, str):
        # a name the policy would read otherwise (case, '..') is no session's to reach, not even as shared
        check_namespace(namespace)
    owner = namespace_owner(namespace)
    if owner is None:
        return
    if type(namespace) is not str:
        caller.deny("namespace must be a str", argument="namespace")
    if owner == principal.agent:
        return
    if capability:
        resource = f"memory:{namespace}"
        # the subject is checked before a use is spent: a chain presented by anyone else costs its holder nothing
        leaf = await memory.capabilities.check(capability, action=action, resource=resource)
        if principal.agent is None or leaf.subject != principal.agent:
            caller.deny(f"the capability is granted to {leaf.subject}, not to {principal.agent}", link=leaf.id)
        await memory.capabilities.use(capability, action=action, resource=resource)
        return
    caller.deny(f"namespace {namespace!r} belongs to {owner}", namespace=namespace)


def _rule(action: str, name: str) -> Any:
    async def rule(caller: Caller, memory: Memory, arguments: dict[str, Any]) -> Any:
        await _reach(caller, memory, arguments.get("namespace"), action, arguments.get("capability"))
        return await getattr(memory, name)(**arguments)

    rule.__name__ = f"_{name}_rule"
    return rule


async def _namespaces_rule(caller: Caller, memory: Memory, arguments: dict[str, Any]) -> list[NamespaceInfo]:
    found = await memory.namespaces()
    principal = caller.principal
    if principal.allows(LIFT):
        return found
    return [n for n in found if _canonical(n.name) and namespace_owner(n.name) in (None, principal.agent)]


def _canonical(namespace: str) -> bool:
    try:
        check_namespace(namespace)
    except InvalidArgument:
        return False
    return True


async def _remember_message_rule(caller: Caller, memory: Memory, arguments: dict[str, Any]) -> MemoryRecord:
    namespace = arguments.get("namespace") or _message_namespace(arguments["message"])
    await _reach(caller, memory, namespace, WRITE, arguments.get("capability"))
    return await memory.remember_message(**{**arguments, "namespace": namespace})


def _message_namespace(message: Message) -> str:
    target = str(message.target)
    return f"{target}/inbox" if target.startswith("agent:") else target


def message_memory(message: Message) -> tuple[str, str, dict[str, Any]]:
    """What ``remember_message`` stores for ``message``: its default namespace, its text and its metadata."""
    payload = getattr(message, "payload", None)
    text = getattr(payload, "text", None)
    if not isinstance(text, str) or not text.strip():
        text = json.dumps(payload.model_dump(mode="json") if payload is not None else {}, sort_keys=True)
    metadata = {
        "type": message.type,
        "source": str(message.source),
        "target": str(message.target),
        "message_id": str(message.message_id),
    }
    return _message_namespace(message), text, metadata


# -- validation -------------------------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_type(kind: type) -> bool:
    return issubclass(kind, int | float | np.integer | np.floating) and not issubclass(kind, bool | np.bool_)


def _check_vector(vector: Any, limits: MemoryLimits, what: str = "vector") -> Vector:
    if isinstance(vector, str | bytes) or not isinstance(vector, Sequence | np.ndarray):
        raise InvalidArgument(f"{what} must be a list of numbers")
    if not 0 < len(vector) <= limits.dimensions_max:
        raise LimitExceeded(
            f"{what} has {len(vector)} dimensions; 1..{limits.dimensions_max} are allowed (dimensions_max)",
            details={"dimensions": len(vector), "dimensions_max": limits.dimensions_max},
        )
    if isinstance(vector, np.ndarray):
        values = vector.astype(np.float64).ravel()
    else:
        # the element types, checked once each (a per-element check costs more than the search at 10k rows)
        if not all(_numeric_type(t) for t in set(map(type, vector))):
            raise InvalidArgument(f"{what} must hold only numbers (no booleans, strings or nulls)")
        values = np.asarray(vector, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InvalidArgument(f"{what} must hold finite numbers (no NaN or infinity)")
    return _normalised(values, what)


def _normalised(values: Any, what: str) -> Vector:
    exact = np.asarray(values, dtype=np.float64)
    if float(np.max(np.abs(exact))) > _FLOAT32_MAX:
        raise InvalidArgument(f"{what} must hold numbers that fit a 32-bit float (|x| <= {_FLOAT32_MAX:.4g})")
    norm = float(np.linalg.norm(exact))
    if norm == 0.0 or not math.isfinite(norm):
        raise InvalidArgument(f"{what} must have a non-zero, finite norm")
    return np.asarray(exact / norm, dtype=np.float32)


def _check_metadata(metadata: Any, limits: MemoryLimits) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidArgument("metadata must be an object with string keys")
    try:
        text = json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"metadata must be JSON (finite numbers, strings, lists, objects): {exc}") from None
    if len(text.encode()) > limits.metadata_bytes_max:
        raise LimitExceeded(
            f"metadata is {len(text.encode())} bytes as JSON; at most {limits.metadata_bytes_max} (metadata_bytes_max)",
            details={"metadata_bytes_max": limits.metadata_bytes_max},
        )
    return text


def _check_text(text: Any, limits: MemoryLimits, what: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument(f"{what} must be a non-empty string")
    if len(text) > limits.text_chars_max:
        raise LimitExceeded(
            f"{what} is {len(text)} characters; at most {limits.text_chars_max} (text_chars_max)",
            details={"text_chars_max": limits.text_chars_max},
        )
    return text


def _check_id(id: Any, *, generate: bool = False) -> str:
    if id is None and generate:
        return uuid.uuid4().hex
    if not isinstance(id, str) or not 0 < len(id) <= ID_CHARS_MAX or not id.isprintable() or id != id.strip():
        raise InvalidArgument(
            f"id must be 1-{ID_CHARS_MAX} printable characters without surrounding spaces, got {id!r}"[:400]
        )
    return id


def _check_ttl(ttl_s: Any, limits: MemoryLimits) -> float | None:
    if ttl_s is None:
        return None
    if not _number(ttl_s) or not math.isfinite(ttl_s) or not 0 < ttl_s <= limits.ttl_s_max:
        raise InvalidArgument(f"ttl_s must be a number of seconds in (0, {limits.ttl_s_max:g}], got {ttl_s!r}")
    return float(ttl_s)


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _record(stored: StoredMemory, namespace: str, *, replayed: bool = False) -> MemoryRecord:
    created = datetime.fromtimestamp(stored.created, UTC)
    metadata = json.loads(stored.metadata)
    return MemoryRecord(stored.id, namespace, stored.text, metadata, created, _when(stored.expires), replayed)


class _Item:
    """One memory to write, checked: its vector when the caller gave one, else None until embedded."""

    __slots__ = ("digest", "id", "metadata", "text", "ttl_s", "vector")

    def __init__(self, raw: Mapping[str, Any], limits: MemoryLimits) -> None:
        if not isinstance(raw, Mapping):
            raise InvalidArgument("each memory must be an object with 'text' (and id, metadata, vector, ttl_s)")
        unknown = sorted(str(k) for k in raw if k not in _ITEM_KEYS)
        if unknown:
            raise InvalidArgument(f"unknown field {unknown[0]!r} of a memory (known: {', '.join(sorted(_ITEM_KEYS))})")
        self.text = _check_text(raw.get("text"), limits)
        self.id = _check_id(raw.get("id"), generate=True)
        self.metadata = _check_metadata(raw.get("metadata"), limits)
        given = raw.get("vector")
        self.vector: Vector | None = None if given is None else _check_vector(given, limits)
        self.ttl_s = _check_ttl(raw.get("ttl_s"), limits)
        vector_text = None if self.vector is None else self.vector.tobytes().hex()
        body = json.dumps([self.text, self.metadata, vector_text, self.ttl_s], ensure_ascii=False)
        self.digest = hashlib.sha256(body.encode()).hexdigest()


@service("memory")
class Memory:
    """The memory API of one tenant: ``kernel.memory`` or ``kernel.tenant(slug).memory`` (module docstring)."""

    def __init__(
        self,
        store: MemoryStore,
        tenant: str,
        embedder: Embedder,
        limits: MemoryLimits,
        capabilities: Capabilities,
    ) -> None:
        self._store = store
        self.tenant = tenant
        self.embedder = embedder
        self.limits = limits
        self.capabilities = capabilities

    @property
    def exact(self) -> bool:
        """Whether recall is exact on this kernel's memory store."""
        return self._store.exact

    # -- writing --------------------------------------------------------------------------------------------------

    @operation(
        WRITE,
        tool="remember",
        lift=LIFT,
        rule=_rule(WRITE, "remember"),
        wire=Wire(
            errors=(IdempotencyConflict, LimitExceeded),
            summary="Remember a text (idempotent by id)",
            unchecked=_UNCHECKED,
        ),
    )
    async def remember(
        self,
        namespace: str,
        text: str,
        *,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: Sequence[float] | None = None,
        ttl_s: float | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> MemoryRecord:
        """Remember ``text`` in ``namespace``, embedded by the kernel's embedder unless ``vector`` is given.

        Idempotent by ``id`` (module docstring). Raises SOS-4005 (malformed argument, another space), 4009 (the id
        holds other content), 4010 (a bound of ``MemoryLimits``)."""
        item = {"text": text, "id": id, "metadata": metadata, "vector": vector, "ttl_s": ttl_s}
        return (await self.remember_many(namespace, [item]))[0]

    @operation(
        WRITE,
        tool="remember_many",
        lift=LIFT,
        rule=_rule(WRITE, "remember_many"),
        wire=Wire(
            errors=(IdempotencyConflict, LimitExceeded),
            summary="Remember a batch, all or nothing",
            unchecked=_UNCHECKED,
        ),
    )
    async def remember_many(
        self,
        namespace: str,
        memories: Sequence[Mapping[str, Any]],
        *,
        capability: Sequence[Capability] | None = None,
    ) -> list[MemoryRecord]:
        """Remember up to ``batch_max`` memories (objects with ``text`` and optionally ``id``, ``metadata``,
        ``vector``, ``ttl_s``) in one atomic write: every one is stored or replayed, or none is."""
        check_namespace(namespace)
        if isinstance(memories, str | bytes | Mapping) or not isinstance(memories, Sequence) or not memories:
            raise InvalidArgument("memories must be a non-empty list of objects")
        if len(memories) > self.limits.batch_max:
            raise LimitExceeded(
                f"{len(memories)} memories in one batch; at most {self.limits.batch_max} (batch_max)",
                details={"batch_max": self.limits.batch_max},
            )
        given = [_Item(raw, self.limits) for raw in memories]
        items = _unique(given)
        space = await self._space_for(namespace, items)
        await self._embed(items)
        now = time.time()
        await self._purge(now)
        stored = [self._stored(item, now) for item in items.values()]
        outcome = await self._store.put_many(self.tenant, namespace, space, stored, self._quota(namespace), now)
        self._refused(outcome.refused, namespace, outcome)
        records = {}
        for memory in stored:
            existing = outcome.existing.get(memory.id)
            records[memory.id] = _record(existing or memory, namespace, replayed=existing is not None)
        return [records[item.id] for item in given]

    def _stored(self, item: _Item, now: float) -> StoredMemory:
        vector = item.vector
        if vector is None:  # pragma: no cover - _embed fills every vector
            raise InvalidArgument("no vector")
        expires = None if item.ttl_s is None else now + item.ttl_s
        return StoredMemory(item.id, item.text, item.metadata, vector.tobytes(), item.digest, now, expires)

    def _quota(self, namespace: str) -> Quota:
        owner = namespace_owner(namespace)
        whose = "shared" if owner is None else "agent"
        limits = self.limits
        return Quota(
            limits.memories_max,
            limits.bytes_max,
            limits.namespaces_max,
            owner or "",
            getattr(limits, f"{whose}_namespaces_max"),
            getattr(limits, f"{whose}_memories_max"),
            getattr(limits, f"{whose}_bytes_max"),
        )

    def _refused(self, refused: str, namespace: str, outcome: Any) -> None:
        if not refused:
            return
        if refused == "conflict":
            ids = sorted(outcome.existing)
            raise IdempotencyConflict(
                f"id {ids[0]!r} in {namespace!r} already holds other content; use another id",
                details={"namespace": namespace, "id": ids[0]},
            )
        if refused == "space":
            raise InvalidArgument(
                f"namespace {namespace!r} now holds vectors of another space ({outcome.space}); nothing was written",
                details={"namespace": namespace},
            )
        if refused.startswith("group"):
            self._over_share(namespace, refused.removeprefix("group").removeprefix("_") or "namespaces")
        limit = getattr(self.limits, f"{refused}_max")
        raise LimitExceeded(
            f"the tenant's memory would pass {refused}_max ({limit}); nothing was written (forget some, or raise "
            "MemoryLimits)",
            details={"limit": f"{refused}_max", "value": limit},
        )

    def _over_share(self, namespace: str, what: str) -> None:
        owner = namespace_owner(namespace)
        name = f"shared_{what}_max" if owner is None else f"agent_{what}_max"
        whose = "the tenant's shared namespaces" if owner is None else f"{owner}'s own namespaces"
        if what != "namespaces":
            whose += f"' {what}"
        limit = getattr(self.limits, name)
        total = getattr(self.limits, f"{what}_max")
        hint = ", or reuse a namespace" if what == "namespaces" else ""
        raise LimitExceeded(
            f"{whose} would pass {name} ({limit}, a share of {what}_max {total}); nothing was written (forget "
            f"some{hint})",
            details={"limit": name, "value": limit, "namespace": namespace},
        )

    async def _space_for(self, namespace: str, items: Mapping[str, _Item]) -> Space:
        current = await self._store.space(self.tenant, namespace)
        texts = any(i.vector is None for i in items.values())
        if current is None:
            given = {len(i.vector) for i in items.values() if i.vector is not None}
            current = Space(self.embedder.name, self.embedder.dimensions) if texts else Space("", given.pop())
        if texts:
            self._embeddable(namespace, current)
        for item in items.values():
            if item.vector is not None and len(item.vector) != current.dimensions:
                raise InvalidArgument(
                    f"vector has {len(item.vector)} dimensions; namespace {namespace!r} holds {current.dimensions}",
                    details={"namespace": namespace, "dimensions": current.dimensions},
                )
        return current

    def _embeddable(self, namespace: str, space: Space) -> None:
        if space.embedder != self.embedder.name or space.dimensions != self.embedder.dimensions:
            held = f"embedder {space.embedder!r}" if space.embedder else "vectors given by callers"
            raise InvalidArgument(
                f"namespace {namespace!r} holds {held} ({space.dimensions} dimensions); this kernel embeds text "
                f"with {self.embedder.name!r} ({self.embedder.dimensions}): pass vector=, or use another namespace",
                details={"namespace": namespace, "embedder": space.embedder, "dimensions": space.dimensions},
            )

    async def _embed(self, items: Mapping[str, _Item]) -> None:
        pending = [i for i in items.values() if i.vector is None]
        if not pending:
            return
        vectors = await self._vectors([i.text for i in pending])
        for item, vector in zip(pending, vectors, strict=True):
            item.vector = vector

    async def _vectors(self, texts: list[str]) -> list[Vector]:
        from ..errors import BackendFailure

        raw = await self.embedder.embed(texts)
        if len(raw) != len(texts):
            raise BackendFailure(f"the embedder {self.embedder.name!r} returned {len(raw)} vectors for {len(texts)}")
        out = []
        for vector in raw:
            values = np.asarray(vector, dtype=np.float64)
            if values.shape != (self.embedder.dimensions,) or not np.all(np.isfinite(values)):
                raise BackendFailure(f"the embedder {self.embedder.name!r} returned a malformed vector")
            out.append(_normalised(values, "the embedded vector"))
        return out

    async def _purge(self, now: float) -> int:
        expired = await self._store.expired(self.tenant, now, PURGE_BATCH_MAX)
        by_namespace: dict[str, list[str]] = {}
        for namespace, id in expired:
            by_namespace.setdefault(namespace, []).append(id)
        for namespace, ids in by_namespace.items():
            await self._store.delete(self.tenant, namespace, ids)
        return len(expired)

    async def purge_expired(self) -> int:
        """Purge every expired memory of the tenant now; how many were removed (a sweep; writes purge too)."""
        total, now = 0, time.time()
        while True:
            removed = await self._purge(now)
            total += removed
            if removed < PURGE_BATCH_MAX:
                return total

    @operation(
        WRITE,
        tool="forget",
        lift=LIFT,
        rule=_rule(WRITE, "forget"),
        wire=Wire(summary="Forget a memory (True if it existed)"),
    )
    async def forget(self, namespace: str, id: str, *, capability: Sequence[Capability] | None = None) -> bool:
        """Remove a memory; True if it existed (an expired one counts as gone). Forgetting twice is harmless."""
        check_namespace(namespace, stored=True)
        _check_id(id)
        found = await self._store.get(self.tenant, namespace, id)
        removed = await self._store.delete(self.tenant, namespace, [id])
        return bool(removed) and found is not None and found.live(time.time())

    @operation(
        WRITE,
        tool="remember_message",
        lift=LIFT,
        rule=_remember_message_rule,
        local=True,
    )
    async def remember_message(
        self,
        message: Message,
        *,
        namespace: str | None = None,
        ttl_s: float | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> MemoryRecord:
        """Remember a bus message's text (its payload's ``text``, else its payload as JSON) under its
        ``message_id``, with ``type``, ``source``, ``target`` and ``message_id`` as metadata; the namespace defaults
        to ``<agent>/inbox`` for a message to an agent, else its channel. A redelivery is a replay."""
        default, text, metadata = message_memory(message)
        return await self.remember(
            namespace or default, text, id=str(message.message_id), metadata=metadata, ttl_s=ttl_s
        )

    # -- reading --------------------------------------------------------------------------------------------------

    @operation(
        READ,
        tool="recall",
        lift=LIFT,
        rule=_rule(READ, "recall"),
        wire=Wire(
            errors=(LimitExceeded,),
            summary="The k closest memories to a text or vector, best first",
            unchecked=_UNCHECKED,
        ),
    )
    async def recall(
        self,
        namespace: str,
        query: str | Sequence[float],
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> list[Hit]:
        """The ``k`` live memories closest to ``query`` (a text, embedded like the namespace's, or a vector of
        its dimensions), best first, ties by id; only those matching ``where`` (see :mod:`.where`) and scoring at
        least ``min_score``. An unknown namespace has no hits."""
        check_namespace(namespace, stored=True)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.limits.k_max:
            raise InvalidArgument(f"k must be an int in 1..{self.limits.k_max} (k_max), got {k!r}")
        matcher = compile_where(where, self.limits.where_terms_max)
        if min_score is not None and (not _number(min_score) or not -1.0 <= min_score <= 1.0):
            raise InvalidArgument(f"min_score must be a number in [-1, 1], got {min_score!r}")
        if isinstance(query, str):
            vector = await self._embedded_query(namespace, query)
            if vector is None:
                return []
        else:
            vector = _check_vector(query, self.limits, "query")
        now = time.time()
        space, found = await self._store.search(self.tenant, namespace, vector, k, now, matcher, min_score)
        if space is not None and len(vector) != space.dimensions:
            raise InvalidArgument(
                f"query has {len(vector)} dimensions; namespace {namespace!r} holds {space.dimensions}",
                details={"namespace": namespace, "dimensions": space.dimensions},
            )
        return [Hit(m.id, score, m.text, json.loads(m.metadata)) for m, score in found]

    async def _embedded_query(self, namespace: str, query: str) -> Vector | None:
        """The query text embedded as the namespace's memories were, or None for a namespace that holds nothing."""
        _check_text(query, self.limits, "query")
        space = await self._store.space(self.tenant, namespace)
        if space is None:
            return None
        self._embeddable(namespace, space)
        return (await self._vectors([query]))[0]

    @operation(
        READ,
        tool="memory_get",
        lift=LIFT,
        rule=_rule(READ, "get"),
        wire=Wire("POST", errors=(NotFound,), summary="One memory by id (a POST: a capability chain may come with it)"),
    )
    async def get(self, namespace: str, id: str, *, capability: Sequence[Capability] | None = None) -> MemoryRecord:
        """The memory ``id`` of ``namespace``; SOS-4040 when there is none (or it expired: it is purged then)."""
        check_namespace(namespace, stored=True)
        _check_id(id)
        found = await self._store.get(self.tenant, namespace, id)
        if found is not None and not found.live(time.time()):
            await self._store.delete(self.tenant, namespace, [id])
            found = None
        if found is None:
            raise NotFound(f"no memory {id!r} in {namespace!r}", details={"namespace": namespace, "id": id})
        return _record(found, namespace)

    @operation(
        READ,
        tool="memory_namespaces",
        lift=LIFT,
        rule=_namespaces_rule,
        wire=Wire("GET", summary="The tenant's namespaces the caller may reach"),
    )
    async def namespaces(self) -> list[NamespaceInfo]:
        """Every namespace of the tenant with its count, embedder and dimensions, by name (sessions: see the module
        docstring)."""
        found = await self._store.namespaces(self.tenant)
        return [NamespaceInfo(name, count, space.embedder, space.dimensions) for name, space, count in found]

    @operation(
        READ,
        tool="memories",
        lift=LIFT,
        rule=_rule(READ, "list"),
        wire=Wire("POST", summary="Live memories by id, filtered, paged by 'after'", unchecked=_UNCHECKED),
    )
    async def list(
        self,
        namespace: str,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 100,
        after: str | None = None,
        capability: Sequence[Capability] | None = None,
    ) -> builtins.list[MemoryRecord]:
        """Up to ``limit`` live memories matching ``where``, by id, with ids after ``after`` (the last id of the
        previous page)."""
        check_namespace(namespace, stored=True)
        top = self.limits.list_limit_max
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= top:
            raise InvalidArgument(f"limit must be an int in 1..{top} (list_limit_max), got {limit!r}")
        if after is not None and not isinstance(after, str):
            raise InvalidArgument("after must be the id of the previous page's last memory")
        matcher = compile_where(where, self.limits.where_terms_max)
        out: list[MemoryRecord] = []
        now = time.time()
        while len(out) < limit:
            page = await self._store.page(self.tenant, namespace, after, top)
            for stored in page:
                if stored.live(now) and (matcher is None or matcher(json.loads(stored.metadata))):
                    out.append(_record(stored, namespace))
            if len(page) < top:
                break
            after = page[-1].id
        return out[:limit]


def _unique(items: list[_Item]) -> dict[str, _Item]:
    """Items by id; the same id twice with the same content is one item, with other content SOS-4009."""
    out: dict[str, _Item] = {}
    for item in items:
        seen = out.get(item.id)
        if seen is not None and seen.digest != item.digest:
            raise IdempotencyConflict(f"id {item.id!r} appears twice in the batch with different content")
        out.setdefault(item.id, item)
    return out
