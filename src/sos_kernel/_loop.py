"""The background event loop of the blocking facades (``sos_kernel.sync``, ``mumega_sdk.SyncMumegaClient``).

A :class:`Loop` runs an anyio blocking portal on a daemon thread, so a script or a notebook that never closes its
handle can still exit: at interpreter exit every loop still open runs its owner's close (which commits and closes
the engine, so acknowledged writes stay durable), bounded by ``CLOSE_AT_EXIT_S``. A call on a closed loop raises
SOS-6005, never a bare ``RuntimeError``.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .errors import KernelClosed

__all__ = ["CLOSE_AT_EXIT_S", "Loop"]

T = TypeVar("T")

CLOSE_AT_EXIT_S = 1.5
"""How long interpreter exit waits for one unclosed handle to close (the rest of the 2 s exit budget is Python's)."""
START_S = 30.0
"""How long the loop thread may take to start."""

_open: weakref.WeakSet[Loop] = weakref.WeakSet()


class Loop:
    """An event loop on a daemon thread, reached through an anyio blocking portal.

    ``on_exit`` (an async close of the owner) is run at interpreter exit if :meth:`close` was not called first.
    """

    def __init__(self, what: str, on_exit: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.what = what
        self.on_exit = on_exit
        self.closed = False
        found: queue.Queue[BlockingPortal | BaseException] = queue.Queue(1)
        # A daemon thread: interpreter exit never waits on it; the atexit hook closes what it holds first.
        self._thread = threading.Thread(target=_serve, args=(found,), name=f"sos {what} loop", daemon=True)
        self._thread.start()
        started = found.get(timeout=START_S)
        if isinstance(started, BaseException):
            raise started
        self._portal = started
        _open.add(self)

    def _check(self) -> BlockingPortal:
        if self.closed:
            raise KernelClosed(f"this {self.what} was closed; open a new one")
        return self._portal

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await func(*args)`` on the loop and return its result; SOS-6005 once closed."""
        return self._check().call(func, *args)

    def wrap_async_context_manager(self, cm: Any) -> AbstractContextManager[Any]:
        """The portal's ``wrap_async_context_manager``; SOS-6005 once closed."""
        wrapped: AbstractContextManager[Any] = self._check().wrap_async_context_manager(cm)
        return wrapped

    def close(self, final: Callable[[], Awaitable[Any]] | None = None, timeout_s: float | None = None) -> None:
        """Run ``final`` on the loop (within ``timeout_s``), then stop the loop. Idempotent."""
        if self.closed:
            return
        self.closed = True
        _open.discard(self)
        try:
            if final is not None:
                self._portal.start_task_soon(final).result(timeout=timeout_s)
        finally:
            self._portal.start_task_soon(self._portal.stop, True).result(timeout=timeout_s)
            self._thread.join(timeout_s)


def _serve(found: queue.Queue[BlockingPortal | BaseException]) -> None:
    async def main() -> None:
        async with BlockingPortal() as portal:
            found.put(portal)
            await portal.sleep_until_stopped()

    try:
        anyio.run(main)
    except BaseException as exc:  # reported to the starting thread if it is still waiting
        if found.empty():
            found.put(exc)


@atexit.register
def _close_all() -> None:
    for loop in list(_open):
        try:
            loop.close(loop.on_exit, timeout_s=CLOSE_AT_EXIT_S)
        except Exception:  # at exit, one handle failing must not keep the others open
            continue
