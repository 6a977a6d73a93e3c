"""A real uvicorn server on a free 127.0.0.1 port, in a thread with its own event loop and its own kernel.

Tests share the kernel's SQLite file with the server (SQLite is multi-process), so a test can seed tokens with its
own kernel and look inside it while the server serves the same data.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

import sos_kernel
from sos_kernel.server import create_app

SERVER_START_S = 15.0


class ServerThread(threading.Thread):
    """uvicorn serving ``create_app`` over its own kernel, until ``stop()``."""

    def __init__(
        self,
        db_url: str,
        sock: socket.socket,
        options: dict[str, Any],
        app_options: dict[str, Any],
        mcp: dict[str, Any] | None = None,
        a2a: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name="sos-live-server", daemon=True)
        self.mcp = mcp
        self.a2a = a2a
        self.db_url = db_url
        self.sock = sock
        self.options = options
        self.app_options = app_options
        self.server: uvicorn.Server | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        async with sos_kernel.open(self.db_url, **self.options) as kernel:
            app = create_app(kernel, **{"ping_s": 0.5, **self.app_options})
            if self.mcp is not None:
                from sos_kernel.mcp import mount

                mount(app, **self.mcp)
            if self.a2a is not None:
                from sos_kernel.integrations.a2a import mount as mount_a2a

                mount_a2a(app, **self.a2a)
            config = uvicorn.Config(app, http="h11", ws="none", lifespan="on", log_level="warning")
            self.server = uvicorn.Server(config)
            serving = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
            while not self.server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
                await asyncio.sleep(0.01)
            self.ready.set()
            await serving

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.join(15)


@contextmanager
def running_server(
    db_url: str,
    *,
    app_options: dict[str, Any] | None = None,
    mcp: dict[str, Any] | None = None,
    a2a: dict[str, Any] | None = None,
    **options: Any,
) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a server over a kernel on ``db_url`` opened with ``options`` (``create_app``
    given ``app_options``; MCP mounted at ``/mcp`` with the limits ``mcp`` when given, A2A at ``/a2a`` with the limits
    ``a2a`` when given), stopped (and checked) on exit."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else each answer waits for a delayed ACK
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = ServerThread(db_url, sock, options, app_options or {}, mcp, a2a)
    thread.start()
    try:
        if not thread.ready.wait(SERVER_START_S):
            raise RuntimeError("the server did not start")
        if thread.error is not None:
            raise thread.error
        yield f"http://127.0.0.1:{port}"
    finally:
        thread.stop()
        sock.close()
    if thread.is_alive():
        raise RuntimeError("the server did not stop")
    if thread.error is not None:
        raise thread.error
