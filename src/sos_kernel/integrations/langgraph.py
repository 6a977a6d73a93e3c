"""LangGraph on the kernel: a checkpointer stored in the kernel, and graph nodes that talk over the bus.

:class:`KernelSaver` is a ``BaseCheckpointSaver`` whose checkpoints and pending writes live in the kernel's store
(``memory://``, ``sqlite:///...``, ``redis://...``), scoped to one tenant: a graph's state sits beside its agents'
inboxes and money, and a graph interrupted in one process resumes in another that opens the same kernel. Async
methods are native; the sync ones (``get_tuple``, ``put``...) run on the event loop the saver was created on and
must be called from another thread (as LangGraph's sync ``invoke`` does when run off the loop). Limits: see
:mod:`sos_kernel.checkpoints` (``CHECKPOINT_THREADS_PER_TENANT_MAX``, ``CHECKPOINTS_PER_THREAD_MAX``...).

Durable waits on the bus: :func:`ask_node` builds a node that sends a question from an agent and ``interrupt()``s
the graph until the reply; :func:`resume_on_reply` (in the same process or any other) waits for that reply in the
agent's inbox and resumes the graph with ``Command(resume=...)``. No in-memory future is involved: the question's
``message_id`` and the graph's state are in the kernel, so the wait survives the process that started it.

Needs the ``langgraph`` extra: ``pip install 'sos-kernel[langgraph]'``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import AskTimeout, InvalidArgument, LimitExceeded, MissingDependency

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_checkpoint_metadata,
        writes_sort_key,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from langgraph.types import Command, interrupt
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        f"the LangGraph integration needs the 'langgraph' extra ({exc.name} is missing)",
        details={"pip": "pip install 'sos-kernel[langgraph]'"},
    ) from exc

from ..api import SessionAPI
from ..checkpoints import CheckpointRow, Checkpoints, WriteRow
from ..contracts import SendMessage, build_message
from ..kernel import DEFAULT_TENANT, Kernel, TenantView

__all__ = [
    "ASK_ID_KEY_BYTES_MIN",
    "ASK_INTERRUPT",
    "ASK_REPLY_WAIT_S_MAX",
    "KernelSaver",
    "ask_node",
    "resume_on_reply",
    "wait_reply",
]

ASK_REPLY_WAIT_S_MAX = 3600.0
"""The longest :func:`resume_on_reply` waits for a reply in one call."""

T = TypeVar("T")


def _pack(typed: tuple[str, bytes]) -> bytes:
    return typed[0].encode() + b"\x00" + typed[1]


def _unpack(blob: bytes) -> tuple[str, bytes]:
    kind, _, data = blob.partition(b"\x00")
    return kind.decode(), data


def _config(thread: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


class KernelSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer stored in the kernel, for one tenant.

    ``KernelSaver(kernel)`` keeps the ``default`` tenant's graphs; ``KernelSaver(kernel, tenant="acme")`` or
    ``KernelSaver(kernel.tenant("acme"))`` another's. A tenant never reads or lists another's threads.
    """

    def __init__(
        self, kernel: Kernel | TenantView, *, tenant: str | None = None, serde: SerializerProtocol | None = None
    ) -> None:
        super().__init__(serde=serde)
        view = kernel.tenant(tenant or DEFAULT_TENANT) if isinstance(kernel, Kernel) else kernel
        if tenant is not None and view.slug != tenant:
            raise InvalidArgument(f"tenant {tenant!r} given with a view of tenant {view.slug!r}")
        self.tenant = view.slug
        self.checkpoints: Checkpoints = view.checkpoints
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @classmethod
    def from_kernel(
        cls, kernel: Kernel, *, tenant: str | None = None, serde: SerializerProtocol | None = None
    ) -> KernelSaver:
        """The saver of ``tenant`` (default: ``default``) on ``kernel``."""
        return cls(kernel, tenant=tenant, serde=serde)

    # -- async API -------------------------------------------------------------------------------------------------

    async def _tuple(self, row: CheckpointRow) -> CheckpointTuple:
        writes = await self.checkpoints.writes(row.thread, row.ns, row.checkpoint_id)
        writes.sort(key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        parent = _config(row.thread, row.ns, row.parent_id) if row.parent_id else None
        return CheckpointTuple(
            config=_config(row.thread, row.ns, row.checkpoint_id),
            checkpoint=self.serde.loads_typed(_unpack(row.state)),
            metadata=self.serde.loads_typed(_unpack(row.metadata)),
            parent_config=parent,
            pending_writes=[(w.task_id, w.channel, self.serde.loads_typed(_unpack(w.value))) for w in writes],
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or its thread's latest; None when there is none."""
        conf = config["configurable"]
        row = await self.checkpoints.get(conf["thread_id"], conf.get("checkpoint_ns", ""), get_checkpoint_id(config))
        return None if row is None else await self._tuple(row)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, of one thread (and namespace, and checkpoint) when ``config`` names them,
        whose metadata holds every ``filter`` item, older than ``before``, at most ``limit``."""
        conf = (config or {}).get("configurable", {})
        wanted = conf.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        rows = await self.checkpoints.find(
            conf.get("thread_id"), conf.get("checkpoint_ns"), before_id, None if filter or wanted else limit
        )
        left = limit
        for row in rows:
            if wanted is not None and row.checkpoint_id != wanted:
                continue
            found = await self._tuple(row)
            if filter and not all(found.metadata.get(k) == v for k, v in filter.items()):
                continue
            if left is not None:
                if left <= 0:
                    return
                left -= 1
            yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` as the child of the one ``config`` names; the config naming the new one."""
        conf = config["configurable"]
        thread, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        row = CheckpointRow(
            thread=thread,
            ns=ns,
            checkpoint_id=checkpoint["id"],
            parent_id=conf.get("checkpoint_id") or "",
            state=_pack(self.serde.dumps_typed(checkpoint)),
            metadata=_pack(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
        )
        await self.checkpoints.put(row)
        return _config(thread, ns, checkpoint["id"])

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Store a task's writes against the checkpoint ``config`` names (regular writes first-wins, special
        ones such as interrupts replacing)."""
        conf = config["configurable"]
        rows = [
            WriteRow(
                task_id, WRITES_IDX_MAP.get(channel, idx), channel, _pack(self.serde.dumps_typed(value)), task_path
            )
            for idx, (channel, value) in enumerate(writes)
        ]
        await self.checkpoints.put_writes(conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"], rows)

    async def adelete_thread(self, thread_id: str) -> None:
        """Drop every checkpoint and write of ``thread_id``."""
        await self.checkpoints.delete_thread(thread_id)

    # -- sync API: the async one, run on the saver's loop from another thread --------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise InvalidArgument(
                "KernelSaver's sync methods run on the event loop it was created on: create it inside the "
                "kernel's running loop, or use the async methods (ainvoke, astream)"
            )
        if _on_loop(loop):
            coro.close()
            raise InvalidArgument(
                "KernelSaver's sync methods were called on its own event loop, where they would block it: "
                "use the async methods (ainvoke, astream), or run the sync graph in a worker thread"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """See :meth:`aget_tuple`."""
        return self._run(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """See :meth:`alist`."""

        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._run(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """See :meth:`aput`."""
        return self._run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """See :meth:`aput_writes`."""
        self._run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """See :meth:`adelete_thread`."""
        self._run(self.adelete_thread(thread_id))


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# -- graph nodes on the bus --------------------------------------------------------------------------------------

ASK_INTERRUPT = "sos.ask"
"""The ``kind`` of the value an :func:`ask_node` interrupts with."""
ASK_ID_KEY_BYTES_MIN = 16
"""The shortest ``id_key`` :func:`ask_node` takes: a question id must not be guessable from its key."""
_REPLY_POLL_S = 0.05
_PAGE = 100


def _ask_id(id_key: bytes, session: SessionAPI, config: RunnableConfig, node: str) -> str:
    """The question's message id, HMAC-SHA256 under ``id_key`` of the tenant, thread, step and node: the same on
    every run of the same task under the same key (a resumed node runs again from its start), so the bus
    delivers the question once; an agent without the key cannot compute it and publish it first (the bus drops
    a repeated id whatever its address, which would suppress the question)."""
    conf, meta = config.get("configurable", {}), config.get("metadata", {})
    step = meta.get("langgraph_step", conf.get("checkpoint_id", ""))
    ns = meta.get("langgraph_checkpoint_ns", conf.get("checkpoint_ns", ""))
    name = f"{session.tenant}/{conf.get('thread_id')}/{ns}/{node}/{step}"
    digest = hmac.new(id_key, name.encode("utf-8", "backslashreplace"), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def ask_node(
    session: SessionAPI,
    to: str,
    question: Callable[[Any], str],
    *,
    key: str = "reply",
    name: str = "ask",
    id_key: bytes | None = None,
) -> Callable[[Any, RunnableConfig], Coroutine[Any, Any, dict[str, Any]]]:
    """A graph node that asks agent ``to`` (as ``session``'s agent) the text ``question(state)`` and pauses the
    graph until the answer; the resumed node returns ``{key: <reply text>}``.

    The question is a ``send`` whose ``message_id`` (also its ``correlation_id``) is derived from the thread, the
    step and ``name`` under the secret ``id_key`` (at least ``ASK_ID_KEY_BYTES_MIN`` bytes), so re-running the node
    on resume never sends it twice and no other agent can take the id first. ``id_key=None`` draws a random key
    for this node: a resume in the same process asks once; a process that resumes a graph another process
    started must build it with the same ``id_key`` (a deployment secret), or the resumed node asks again under a
    new id (the wait still ends on the reply to the first question). The graph needs a checkpointer
    (:class:`KernelSaver` for a wait that outlives the process); resume it with :func:`resume_on_reply`.
    """
    target = to if ":" in to else f"agent:{to}"
    if id_key is None:
        id_key = secrets.token_bytes(32)
    if not isinstance(id_key, bytes) or len(id_key) < ASK_ID_KEY_BYTES_MIN:
        raise InvalidArgument(f"id_key must be at least {ASK_ID_KEY_BYTES_MIN} bytes")
    secret = id_key

    async def node(state: Any, config: RunnableConfig) -> dict[str, Any]:
        me = session.agent
        if me is None:
            raise InvalidArgument("ask_node needs a session bound to an agent: the reply comes to its inbox")
        message_id = _ask_id(secret, session, config, name)
        fields: dict[str, Any] = {
            "source": me,
            "target": target,
            "message_id": message_id,
            "correlation_id": message_id,
        }
        fields["payload"] = {"text": question(state), "content_type": "text/plain"}
        await session.bus.publish(build_message(SendMessage, fields))
        reply = interrupt({"kind": ASK_INTERRUPT, "message_id": message_id, "agent": me, "to": target})
        return {key: reply["text"] if isinstance(reply, Mapping) else reply}

    node.__name__ = name
    return node


async def _find_reply(session: SessionAPI, agent: str, message_id: str, after: str | None) -> tuple[Any, str | None]:
    """The reply to ``message_id`` stored in ``agent``'s inbox after position ``after`` (nothing is consumed), and
    the last position read."""
    while True:
        entries = await session.bus.history_entries(agent, after=after, limit=_PAGE)
        for position, message in entries:
            after = position
            threaded = (getattr(message, "reply_to", None), getattr(message, "correlation_id", None))
            if message_id in threaded and message.message_id != message_id:
                return message, after
        if len(entries) < _PAGE:
            return None, after


async def wait_reply(session: SessionAPI, agent: str, message_id: str, *, timeout_s: float) -> dict[str, Any]:
    """Wait up to ``timeout_s`` for the reply to ``message_id`` in ``agent``'s inbox: ``{"text", "source",
    "message_id"}``. Raises ``AskTimeout`` (SOS-6004) when none comes in time."""
    if not 0 < timeout_s <= ASK_REPLY_WAIT_S_MAX:
        raise LimitExceeded(
            f"timeout_s must be in (0, {ASK_REPLY_WAIT_S_MAX}], got {timeout_s!r}",
            details={"limit": "ask_reply_wait_s_max", "max": ASK_REPLY_WAIT_S_MAX},
        )
    deadline = asyncio.get_running_loop().time() + timeout_s
    after: str | None = None
    while True:
        found, after = await _find_reply(session, agent, message_id, after)
        if found is not None:
            text = getattr(found.payload, "text", None)
            return {"text": text, "source": found.source, "message_id": found.message_id}
        if asyncio.get_running_loop().time() >= deadline:
            raise AskTimeout(f"no reply to {message_id} in {agent}'s inbox within {timeout_s}s")
        await asyncio.sleep(_REPLY_POLL_S)


async def resume_on_reply(graph: Any, config: RunnableConfig, session: SessionAPI, *, timeout_s: float = 30.0) -> Any:
    """Resume ``graph`` (compiled with a checkpointer) on thread ``config`` once every bus question it waits on
    has its reply; returns what ``graph.ainvoke`` returns. ``session`` reads the asking agent's inbox (its own,
    or an admin's); nothing in the inbox is consumed. ``InvalidArgument`` when the graph waits on no question."""
    state = await graph.aget_state(config)
    waiting = [i for i in state.interrupts if isinstance(i.value, Mapping) and i.value.get("kind") == ASK_INTERRUPT]
    if not waiting:
        raise InvalidArgument("this graph thread is not waiting on a bus reply", details={"config": str(config)})
    answers: dict[str, Any] = {}
    for pending in waiting:
        value = pending.value
        answers[pending.id] = await wait_reply(session, value["agent"], value["message_id"], timeout_s=timeout_s)
    return await graph.ainvoke(Command(resume=answers), config)
