"""One shared blocking ``XREAD`` per tenant and process, waking every waiter on the tenant's streams.

A bus subscription or an ask that finds nothing waits here instead of blocking in a read of its own: the tenant's
reader blocks in ONE ``XREAD`` over every stream somebody in this process waits on (all of them under the tenant's
hash tag ``{t:<tenant>}``, so on one Redis Cluster slot), and wakes the waiters of a stream when entries land on it.
A thousand idle subscriptions hold one pool connection per tenant, not a thousand.

Guarantees:

- **No lost wake-up.** A stream is read from a position taken before its first waiter looked (the caller's own
  last read, else the stream's newest id). A plain waiter (an ask) does not sleep when the reader is past its
  last read or woke the stream since; a group's consumer does not sleep while entries are owed to its group
  that no woken consumer took (:meth:`Watch.must_read`), and a consumer woken for an entry that leaves
  without reading it hands the entry back to the group's count.
- **One waiter per entry per group.** Consumers of one group are woken one per new entry (all when the read came
  back full), so a publish does not stampede a group's consumers; plain waiters (an ask) are all woken.
- **Interest ends with the waiters.** A stream nobody waited on for ``WATCH_LINGER_S`` is dropped from the read,
  and the reader ends when it has no stream left; :meth:`StreamWatcher.forget` drops one at once.
- **Failures reach the waiters.** When the read fails (Redis restarting), every waiter is woken, so its own next
  command reports the failure; the reader retries with backoff up to ``READ_RETRY_MAX_S``.

A new stream joins the read at once: the watcher appends to a small per-process "bell" stream of the tenant that
the blocked read also watches (one pipelined ``XADD MAXLEN 1`` + ``PEXPIRE``, once per stream, not per entry).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from redis import exceptions as redis_errors

from .._background import Background
from .redis_call import RedisClient, redis_call, tenant_prefix

__all__ = ["StreamWatcher", "Watch"]

READ_BLOCK_MS = 1000
"""Longest the shared read blocks before it looks for streams nobody waits on any more."""
READ_COUNT = 16
"""Entries read per stream per wake-up (only their count and groups are used: the waiters claim or read them)."""
WATCH_LINGER_S = 2.0
"""How long a stream stays in the read after its last waiter left (a consumer between two deliveries)."""
READ_RETRY_S = 0.05
READ_RETRY_MAX_S = 1.0
BELL_TTL_MS = 60_000
CAUGHT_UP_MAX = 10_000
"""Consumers per stream whose "nothing new since" mark is kept; past it the marks are dropped (one read more)."""


def _id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class Watch:
    """One watched stream: the reader's position on it, counts of its wake-ups and its waiters by group.

    ``gen`` counts every wake-up (plain waiters compare it); ``epoch`` counts the ones every consumer must look at
    (a failed or full read). ``owed[group]`` counts entries for a group that no waiting consumer was woken for, so
    a consumer coming back from work reads only when something may be left for it.
    """

    __slots__ = ("caught_up", "epoch", "gen", "idle_since", "owed", "pos", "waiters")

    def __init__(self, pos: str) -> None:
        self.pos = pos
        self.gen = 0
        self.epoch = 0
        self.idle_since: float | None = time.monotonic()
        self.waiters: dict[str | None, list[anyio.Event]] = {}
        self.owed: dict[str, int] = {}
        self.caught_up: dict[tuple[str, str], int] = {}

    def ahead_of(self, position: str) -> bool:
        """Whether the reader has seen entries after ``position`` (a caller's last read)."""
        return _id(self.pos) > _id(position)

    def must_read(self, group: str, consumer: str) -> bool:
        """Whether entries may wait for ``group`` that ``consumer`` has not been told of: it never drained the
        stream, a read failed or came back full since, or entries came that no waiter was woken for."""
        return self.caught_up.get((group, consumer)) != self.epoch or self.owed.get(group, 0) > 0

    def reading(self, group: str) -> tuple[int, int]:
        """A read for ``group`` starts: the epoch and what is owed to the group now, for :meth:`drained` (a read
        that fails or comes back full leaves the count as it is: the next read looks again)."""
        return self.epoch, self.owed.get(group, 0)

    def drained(self, group: str, consumer: str, mark: tuple[int, int]) -> None:
        """The read started at ``mark`` came back with all there was: what was owed before it is taken too."""
        epoch, owed_before = mark
        if len(self.caught_up) >= CAUGHT_UP_MAX:
            self.caught_up.clear()
        self.caught_up[(group, consumer)] = epoch
        self.owed[group] = max(0, self.owed.get(group, 0) - owed_before)

    def owe(self, group: str, n: int = 1) -> None:
        """``n`` entries for ``group`` that no consumer will read on its own account (a woken waiter left)."""
        self.owed[group] = self.owed.get(group, 0) + n

    async def wait(self, group: str | None, consumer: str, gen: int, timeout_s: float) -> bool:
        """Sleep until the stream is woken for ``group`` (None: any news) or ``timeout_s`` passes; True when woken.
        Returns at once when it was woken since ``gen`` (a plain waiter) or ``consumer`` must read (a group's)."""
        if group is None and self.gen != gen:
            return True
        if (group is not None and self.must_read(group, consumer)) or timeout_s <= 0:
            return False
        event = anyio.Event()
        queue = self.waiters.setdefault(group, [])
        queue.append(event)
        self.idle_since = None
        try:
            with anyio.move_on_after(timeout_s):
                await event.wait()
        except BaseException:
            if event.is_set() and group is not None:  # woken for an entry it will not read: another one should
                self.owe(group)
            raise
        finally:
            if event in queue:
                queue.remove(event)
            if not queue and self.waiters.get(group) is queue:
                del self.waiters[group]
            if not self.waiters:
                self.idle_since = time.monotonic()
        return event.is_set()

    def wake(self, rows: list[tuple[bytes, dict[bytes, bytes]]] | None) -> None:
        """Count a wake-up and wake the waiters: per group one per entry meant for it (the rest are owed to the
        group's next reader); everyone after a failed or full read (``None`` or READ_COUNT rows)."""
        self.gen += 1
        if rows is None or len(rows) >= READ_COUNT:
            self.epoch += 1
            self.owed.clear()
            for queue in self.waiters.values():
                for event in queue:
                    event.set()
                queue.clear()
            return
        groups = {g for g, _ in self.caught_up} | {g for g in self.waiters if g is not None}
        for group in groups:
            mine = group.encode()
            n = sum(1 for _, f in rows if f.get(b"g", mine) == mine)
            queue = self.waiters.get(group, [])
            for event in queue[:n]:
                event.set()
            if n > len(queue):
                self.owe(group, n - len(queue))
            del queue[:n]
        plain = self.waiters.get(None, [])
        for event in plain:
            event.set()
        plain.clear()


class _Reader:
    """One tenant's shared read: runs while the tenant has watched streams."""

    def __init__(self, client: RedisClient, bell: str) -> None:
        self._r = client
        self.bell = bell
        self.bell_pos = "0-0"
        self.watches: dict[str, Watch] = {}
        self.reading: frozenset[str] | None = None  # the streams of the read in flight
        self.task: Background | None = None

    async def run(self) -> None:
        delay = READ_RETRY_S
        while self._sweep():
            streams: dict[Any, Any] = {key: w.pos for key, w in self.watches.items()}
            self.reading = frozenset(streams)
            streams[self.bell] = self.bell_pos
            try:
                reply: Any = await self._r.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
            except (redis_errors.RedisError, OSError):
                self.reading = None
                for w in self.watches.values():  # each waiter's own next command reports the failure
                    w.wake(None)
                await anyio.sleep(delay)
                delay = min(READ_RETRY_MAX_S, delay * 2)
                continue
            self.reading = None
            delay = READ_RETRY_S
            for raw_key, rows in reply or []:
                key = raw_key.decode()
                if key == self.bell:
                    self.bell_pos = rows[-1][0].decode()
                    continue
                watch = self.watches.get(key)
                if watch is not None and rows:
                    watch.pos = rows[-1][0].decode()
                    watch.wake(rows)

    def _sweep(self) -> bool:
        now = time.monotonic()
        for key, w in list(self.watches.items()):
            if w.idle_since is not None and now - w.idle_since >= WATCH_LINGER_S:
                del self.watches[key]
        return bool(self.watches)


class StreamWatcher:
    """The shared readers of one store: one per tenant with waiters in this process."""

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._token = uuid.uuid4().hex
        self._readers: dict[str, _Reader] = {}

    async def watch(self, tenant: str, key: str, position: str | None) -> Watch:
        """The watch of ``key`` (a stream of ``tenant``), added to the tenant's read if new.

        A new stream is read from ``position`` (the caller's last read of it) or, when None, from its newest entry
        now: every entry appended after the caller's next read wakes it.
        """
        reader = self._readers.get(tenant)
        w = reader.watches.get(key) if reader is not None else None
        if w is not None:
            return w
        if position is None:
            newest = await redis_call(self._r.xrevrange(key, count=1))
            position = newest[0][0].decode() if newest else "0-0"
        reader = self._readers.get(tenant)
        if reader is None:
            reader = self._readers[tenant] = _Reader(self._r, tenant_prefix(tenant) + "bell:" + self._token)
        w = reader.watches.get(key)  # another caller may have added it meanwhile
        if w is not None:
            return w
        w = reader.watches[key] = Watch(position)
        if reader.task is None:
            reader.task = Background(lambda: self._run(tenant, reader))
            reader.task.start()
        elif reader.reading is not None and key not in reader.reading:
            await self._ring(reader.bell)
        return w

    async def _run(self, tenant: str, reader: _Reader) -> None:
        try:
            await reader.run()
        finally:
            reader.task = None
            if self._readers.get(tenant) is reader:
                del self._readers[tenant]

    async def _ring(self, bell: str) -> None:
        # the blocked read watches the bell too: an entry on it ends the read, which starts again with the new set
        pipe = self._r.pipeline(transaction=False)
        pipe.xadd(bell, {"r": "1"}, maxlen=1, approximate=False)
        pipe.pexpire(bell, BELL_TTL_MS)
        await redis_call(pipe.execute())

    def forget(self, tenant: str, key: str) -> None:
        """Drop ``key`` from the tenant's read now, waking its waiters (a finished ask's reply channel)."""
        reader = self._readers.get(tenant)
        w = reader.watches.pop(key, None) if reader is not None else None
        if w is not None:
            w.wake(None)

    def nudge(self, tenant: str, key: str, group: str) -> None:
        """Wake one waiter of ``group`` on ``key`` (an entry of this process was nacked: it is due again)."""
        reader = self._readers.get(tenant)
        w = reader.watches.get(key) if reader is not None else None
        if w is not None:
            w.wake([(b"", {b"g": group.encode()})])

    def watching(self, tenant: str) -> int:
        """How many streams of ``tenant`` the shared read covers (for diagnostics and tests)."""
        reader = self._readers.get(tenant)
        return len(reader.watches) if reader is not None else 0

    async def aclose(self) -> None:
        """Stop every reader."""
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            if reader.task is not None:
                await reader.task.aclose()
