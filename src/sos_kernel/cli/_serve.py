"""``sos serve``: the HTTP server over one embedded kernel, under uvicorn, until SIGINT or SIGTERM.

The port is bound first (a port in use fails at once, before any engine is touched); the kernel is then opened
for the server's life and closed after the last connection is done, so nothing the server accepted is cut off by
the kernel going away. A signal starts a graceful shutdown: no new connections,
requests in flight finish (open event streams get ``SHUTDOWN_GRACE_S``, then clients reconnect elsewhere), the
app's subscription leases close, then the kernel; the process then exits 0. A second Ctrl-C forces the exit.
With their extras installed it also serves MCP at ``/mcp`` and opted-in agents over A2A at ``/a2a``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import InvalidArgument, KernelRuntimeError, MissingDependency
from ..kernel import open as open_kernel
from ._target import Context, is_remote

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ADMIN_TOKEN_CHARS_MIN", "DEFAULT_HOST", "DEFAULT_PORT", "SHUTDOWN_GRACE_S", "add_commands"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6060
SHUTDOWN_GRACE_S = 5
"""How long a graceful shutdown waits for open requests (event streams never end by themselves)."""
ADMIN_TOKEN_CHARS_MIN = 16
"""The shortest server admin token accepted: it guards tenant creation, so it must not be guessable."""
LISTEN_BACKLOG = 2048
"""Connections the kernel's socket queues before accepting (uvicorn's default)."""
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass
class _Stop:
    """The server to stop on a signal, and the signal that stopped it."""

    server: uvicorn.Server | None = None
    signal: int | None = None


@contextmanager
def _signals(stop: _Stop) -> Iterator[None]:
    # uvicorn installs its own handlers while serving and, once done, restores these and re-raises the signal it
    # caught: this handler then makes that a clean exit instead of death by SIGTERM. Before the server runs
    # (the kernel still opening), a signal interrupts as Ctrl-C does.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.signal = signum
        if stop.server is None:
            raise KeyboardInterrupt
        stop.server.should_exit = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise KernelRuntimeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            details={"host": host, "port": port, "errno": exc.errno},
        ) from exc
    # Accepted sockets inherit this. asyncio turns Nagle off only on sockets created with IPPROTO_TCP, and without
    # it every response waits for the client's delayed ACK (~40 ms a request on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _admin_token(ctx: Context) -> str | None:
    token: str | None = ctx.args.admin_token or os.environ.get("SOS_ADMIN_TOKEN") or None
    if token is not None and len(token) < ADMIN_TOKEN_CHARS_MIN:
        raise InvalidArgument(
            f"the admin token must be at least {ADMIN_TOKEN_CHARS_MIN} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_hex(16))')",
            details={"min": ADMIN_TOKEN_CHARS_MIN},
        )
    return token


def _require_uvicorn() -> None:
    try:
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            f"sos serve needs the 'server' extra ({exc.name} is missing)",
            details={"pip": "pip install 'sos-kernel[server]'"},
        ) from exc


def _server(config: uvicorn.Config, on_started: Callable[[], None]) -> uvicorn.Server:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, saying once it accepts requests (uvicorn has a flag for it, not an event)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                on_started()

    return Server(config)


def _mount_mcp(ctx: Context, app: Any) -> None:
    """Serve MCP at /mcp when the ``mcp`` extra is installed (else say how to get it)."""
    try:
        from ..mcp import mount
    except MissingDependency:
        ctx.out.progress("no MCP at /mcp: pip install 'sos-kernel[mcp]' to serve it")
        return
    mount(app)


def _mount_a2a(ctx: Context, app: Any) -> None:
    """Serve opted-in agents over A2A at /a2a when the ``a2a`` extra is installed (else say how to get it)."""
    try:
        from ..integrations.a2a import mount
    except MissingDependency:
        ctx.out.progress("no A2A at /a2a: pip install 'sos-kernel[a2a]' to serve it")
        return
    public_url = getattr(ctx.args, "public_url", None) or os.environ.get("SOS_PUBLIC_URL") or None
    mount(app, public_url=public_url)


def _announce(ctx: Context, address: str, kernel_url: str, backend: str) -> Callable[[], None]:
    def announce() -> None:
        if ctx.out.json_mode:
            ctx.out.json_line({"listening": address, "kernel": kernel_url, "backend": backend, "pid": os.getpid()})
        else:
            ctx.out.line(f"sos serve: listening on {address} (kernel {kernel_url}, backend {backend})")

    return announce


async def _serve(ctx: Context, stop: _Stop, admin_token: str | None) -> None:
    _require_uvicorn()
    import uvicorn

    from ..server import create_app

    a = ctx.args
    with _listen(a.host, a.port) as sock:
        host, port = sock.getsockname()[:2]
        address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        ctx.out.progress(f"opening {ctx.url}...")
        async with open_kernel(ctx.url, provider_hosts=a.provider_host or []) as kernel:
            metrics_token = getattr(a, "metrics_token", None) or os.environ.get("SOS_METRICS_TOKEN") or None
            app = create_app(
                kernel, admin_token=admin_token, metrics=False if a.no_metrics else None, metrics_token=metrics_token
            )
            _mount_mcp(ctx, app)
            _mount_a2a(ctx, app)
            config = uvicorn.Config(
                app, lifespan="on", ws="none", log_level=a.log_level, timeout_graceful_shutdown=SHUTDOWN_GRACE_S
            )
            stop.server = _server(config, _announce(ctx, address, kernel.url, kernel.backend.name))
            ctx.out.progress("starting the HTTP server...")
            async with anyio.create_task_group() as tg:
                if a.watch is not None:
                    from ..ops.watch import KernelWatcher

                    watcher = KernelWatcher(kernel, interval_s=a.watch, metrics=app.state.sos.metrics)
                    tg.start_soon(watcher.run)
                await stop.server.serve(sockets=[sock])
                tg.cancel_scope.cancel()
            ctx.out.progress("closing the kernel...")


def _run(ctx: Context) -> int:
    if ctx.args.log_json:
        from ..ops.logs import configure_logging

        configure_logging("INFO")
    if is_remote(ctx.url):
        raise InvalidArgument(f"sos serve needs an embedded kernel URL (sqlite:///…, redis://…), not {ctx.url}")
    admin_token = _admin_token(ctx)
    if admin_token is None:
        ctx.out.progress("no admin token (--admin-token or SOS_ADMIN_TOKEN): tenant creation over HTTP is disabled")
    stop = _Stop()
    with _signals(stop):
        anyio.run(_serve, ctx, stop, admin_token)
    name = signal.Signals(stop.signal).name if stop.signal else "the server's own exit"
    ctx.out.progress(f"stopped ({name})")
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0..65535; 0 picks a free one)")
    return value


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], output: argparse.ArgumentParser) -> None:
    """Register ``serve``."""
    serve = sub.add_parser(
        "serve",
        parents=[output],
        help="run the HTTP server over an embedded kernel",
        description="Run the HTTP server over an embedded kernel: the JSON API under /v1, the operator dashboard at "
        "/ui/ (sign in with a tenant admin token) and the public marketplace of listed skills at /marketplace.",
    )
    serve.add_argument("--url", default=argparse.SUPPRESS, help="the kernel to serve (default: $SOS_URL)")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    serve.add_argument(
        "--admin-token",
        default=argparse.SUPPRESS,
        help="enables POST /v1/tenants for whoever presents it (default: $SOS_ADMIN_TOKEN; prefer the variable: "
        "arguments show in ps)",
    )
    serve.add_argument(
        "--metrics-token",
        default=argparse.SUPPRESS,
        help="GET /metrics then needs this bearer token (default: $SOS_METRICS_TOKEN; without one, loopback only)",
    )
    serve.add_argument("--no-metrics", action="store_true", help="do not serve GET /metrics")
    serve.add_argument(
        "--public-url",
        default=argparse.SUPPRESS,
        help="the server's public base (https://host[:port]), the base of A2A agent cards' URLs (default: "
        "$SOS_PUBLIC_URL; without one, each request's own)",
    )
    serve.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also run the watcher over every tenant, every SECONDS (alerts on sos:channel:alerts)",
    )
    serve.add_argument("--log-json", action="store_true", help="the kernel's logs as JSON lines on stderr")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="uvicorn's (info shows requests)")
    serve.add_argument(
        "--provider-host",
        action="append",
        default=None,
        metavar="HOST",
        help="a host (or host:port) tenants' provider endpoints may name, and keys may go to over https on 443 (to "
        "a listed host:port, over http too; repeat for several; by default only the vendors' own hosts: served "
        "tenants never reach loopback or your network)",
    )
    serve.set_defaults(func=_run)
