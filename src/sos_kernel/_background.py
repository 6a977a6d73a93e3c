"""A task that runs beside its owner and ends, at the latest, when its owner closes it.

A kernel may be opened in one task and closed in another (``await sos_kernel.open(...)``, the blocking facade's
portal), so its housekeeping cannot live in a task group entered by the task that opened it. ``Background``
spawns the task on the running event loop instead (``asyncio`` tasks, trio system tasks) and ``aclose`` cancels
it and waits until it has finished; an exception it raised is raised again there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import sniffio

__all__ = ["Background"]


class Background:
    """``fn()`` running until ``aclose()``. Start it from inside the event loop that runs the owner."""

    def __init__(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._fn = fn
        self._scope: anyio.CancelScope | None = None  # made in start(): anyio objects need a running loop
        self._done: anyio.Event | None = None
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None  # a reference keeps an asyncio task from being collected

    def start(self) -> None:
        """Spawn the task. Idempotent."""
        if self._scope is not None:
            return
        self._scope, self._done = anyio.CancelScope(), anyio.Event()
        if sniffio.current_async_library() == "trio":
            import trio

            trio.lowlevel.spawn_system_task(self._run)
        else:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        scope, done = self._scope, self._done
        if scope is None or done is None:
            raise RuntimeError("Background._run before start()")
        try:
            with scope:
                await self._fn()
        except Exception as exc:  # kept for aclose: a trio system task may not raise
            self._error = exc
        finally:
            done.set()

    async def aclose(self) -> None:
        """Cancel the task and wait for it to end; raises what it raised, if anything. Idempotent."""
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._done.wait()
        error, self._error = self._error, None
        if error is not None:
            raise error
