"""The SQLite engine under every SQLite store: one connection, transactions that retry on lock contention.

Small transactions run on the event loop, those of large rows in one worker thread; the two take turns on the
connection (see :class:`SQLiteEngine`).
"""

from __future__ import annotations

import copy
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

from ..errors import BackendFailure, BackendUnavailable

__all__ = ["BUSY_TIMEOUT_MS", "SQLiteEngine"]

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _Gate:
    """Who holds an engine's connection: one transaction at a time, on the event loop or in the worker thread."""

    def __init__(self) -> None:
        self.in_thread: anyio.Event | None = None
        self.thread_lock = anyio.Lock()
        self.limiter = anyio.CapacityLimiter(1)


class SQLiteEngine:
    """One connection to one database file, with transactions that retry on lock contention.

    A transaction runs on the event loop (``offload`` False: microseconds, for small bounded rows) or in the
    engine's worker thread (``offload`` True: for rows that may be megabytes, so the loop keeps serving others).
    Either way one transaction holds the connection at a time: the loop waits while the thread runs one.
    :meth:`offloading` gives the same engine with every transaction offloaded, for the stores of large rows.
    """

    def __init__(self, path: str, *, synchronous: str, lock_timeout_s: float) -> None:
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self.offload = False
        self._gate = _Gate()
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._pragma("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("PRAGMA foreign_keys = ON")
        # one cursor for the statements that return no rows or whose rows are read before the next statement runs
        # (BEGIN, COMMIT, ROLLBACK, and the ledger's hot path): Connection.execute makes a new cursor per call
        self.cursor = self.conn.cursor()

    @property
    def thread_busy(self) -> bool:
        """Whether the worker thread holds the connection now (a transaction of large rows is running)."""
        return self._gate.in_thread is not None

    def offloading(self) -> SQLiteEngine:
        """This engine (same connection, same turn-taking) with every transaction run in the worker thread."""
        view = copy.copy(self)
        view.offload = True
        return view

    def _pragma(self, sql: str) -> None:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                self.conn.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise BackendUnavailable(f"SQLite {sql!r} failed: {exc}") from exc
                time.sleep(0.01)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file."""
        row = self.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # write and read hand back a coroutine rather than awaiting it in one of their own: a transaction is a
    # few tens of microseconds, and a coroutine frame per layer is a measurable part of that

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> Coroutine[Any, Any, T]:
        """Run ``fn`` in a ``BEGIN IMMEDIATE`` transaction; retried while another process holds the lock."""
        return self._in_thread(fn, "BEGIN IMMEDIATE") if self.offload else self._run(fn, "BEGIN IMMEDIATE")

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> Coroutine[Any, Any, T]:
        """Run ``fn`` in a read transaction (one consistent snapshot)."""
        return self._in_thread(fn, "BEGIN") if self.offload else self._run(fn, "BEGIN")

    def _attempt(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        """One try of the transaction; sqlite3's OperationalError passes through for the caller to judge."""
        try:
            self.cursor.execute(begin)
            try:
                result = fn(self.conn)
            except BaseException:
                self.cursor.execute("ROLLBACK")
                raise
            self.cursor.execute("COMMIT")
            return result
        except sqlite3.OperationalError:
            if self.conn.in_transaction:
                self.cursor.execute("ROLLBACK")
            raise
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.cursor.execute("ROLLBACK")
            raise BackendFailure(f"SQLite error: {exc}") from exc

    def _busy_or_raise(self, exc: sqlite3.OperationalError, deadline: float) -> None:
        if not _is_busy(exc):
            raise BackendFailure(f"SQLite error: {exc}") from exc
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"SQLite database {self.path!r} stayed locked for {self.lock_timeout_s} s"
            ) from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        deadline = time.monotonic() + self.lock_timeout_s
        backoff = 0.001
        while True:
            while self._gate.in_thread is not None:  # the worker thread holds the connection
                await self._gate.in_thread.wait()
            try:
                return self._attempt(fn, begin)
            except sqlite3.OperationalError as exc:
                self._busy_or_raise(exc, deadline)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 0.05)

    def _run_blocking(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        deadline = time.monotonic() + self.lock_timeout_s
        backoff = 0.001
        while True:
            try:
                return self._attempt(fn, begin)
            except sqlite3.OperationalError as exc:
                self._busy_or_raise(exc, deadline)
            time.sleep(backoff)  # in the worker thread: the loop is not held
            backoff = min(backoff * 2, 0.05)

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        gate = self._gate
        async with gate.thread_lock:
            done = gate.in_thread = anyio.Event()
            try:
                # not abandoned on cancel: the connection is free again only when the transaction has ended
                return await anyio.to_thread.run_sync(self._run_blocking, fn, begin, limiter=gate.limiter)
            finally:
                gate.in_thread = None
                done.set()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self.conn.close()
