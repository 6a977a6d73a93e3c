"""Shared fixtures: real engines only.

``kernel_url`` is parametrized over every backend; a test that needs a capability asks for it by declaration
(``requires(durable=True)``), never by backend name. Redis: ``SOS_TEST_REDIS_URL`` when set (``.ci/run`` starts a
server and sets it), else a ``redis-server`` from PATH is started on a free loopback port for the session; under
pytest-xdist (``-n 2``) each worker starts its own, because some tests pause, flush or kill clients server-wide.

A behaviour test written against ``api`` (or ``open_api``) runs on one more target, ``remote``: the same calls
through ``mumega_sdk.MumegaClient`` over the in-process ASGI transport, against the HTTP server over a SQLite
kernel, with the admin token of the ``default`` tenant (the tenant the trusted ``kernel`` handle acts on). For
that target ``kernel`` is the kernel behind the server, so a test may still look inside it. Tests marked ``live``
also run on ``live``: the client (streaming over real SSE) against a uvicorn server on 127.0.0.1 whose kernel
shares the test kernel's SQLite file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.backends import Implements, resolve_backend
from sos_kernel.kernel import DEFAULT_TENANT

BACKENDS = ["memory", "sqlite", "redis"]
TARGETS = [*BACKENDS, "remote"]
"""Where a behaviour test written against ``api`` runs: every backend, and through the remote client."""
REMOTE_BASE_URL = "http://sos.test"


LIVE = "live"
"""One more target for the tests marked ``live``: the same client against a real uvicorn server on 127.0.0.1."""

REDIS_CLUSTER = "redis-cluster"
"""A target outside the default run: a 3-master/3-replica Redis Cluster on loopback (``redis+cluster://``)."""
SELECTED_TARGETS = [t for t in os.environ.get("SOS_TEST_TARGETS", "").split(",") if t.strip()]
"""``SOS_TEST_TARGETS=redis-cluster`` (comma-separated): the backend-parametrised tests run on these targets only."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        through_api = bool({"api", "open_api", "connect"} & set(metafunc.fixturenames))
        targets = TARGETS if through_api else BACKENDS
        if through_api and metafunc.definition.get_closest_marker(LIVE) is not None:
            targets = [*targets, LIVE]
        targets = _selected(targets)
        metafunc.parametrize("target", targets, indirect=True)


def _selected(targets: list[str]) -> list[str]:
    """``targets`` as ``SOS_TEST_TARGETS`` narrows them; ``redis-cluster`` stands in for every backend."""
    if not SELECTED_TARGETS:
        return targets
    return [t for t in SELECTED_TARGETS if t in targets or t == REDIS_CLUSTER]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SOS_TEST_REDIS_URL")
    # Under pytest-xdist every worker starts its own server: some tests pause, flush or kill clients server-wide.
    if url and not os.environ.get("PYTEST_XDIST_WORKER"):
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server, or set SOS_TEST_REDIS_URL")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 3-master/3-replica Redis Cluster on loopback ports the OS hands out (one per xdist worker), torn down
    at the end of the session."""
    from .redis_cluster import local_cluster

    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


def _flushed_cluster(request: pytest.FixtureRequest) -> str:
    """The cluster's URL after ``FLUSHALL`` on every master (each holds only its own slots' keys)."""
    cluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return str(cluster.url)


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture
def target(request: pytest.FixtureRequest) -> str:
    """The backend (or ``remote``) this test runs on; parametrized by ``pytest_generate_tests``."""
    return str(request.param)


@pytest.fixture
def kernel_url(target: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if target == "memory":
        return "memory://"
    if target in ("sqlite", "remote", LIVE):
        return f"sqlite:///{tmp_path}/sos.db"
    if target == REDIS_CLUSTER:
        return _flushed_cluster(request)
    url: str = request.getfixturevalue("redis_url")
    _flush(url)
    return url


@pytest.fixture
def implements(kernel_url: str) -> Implements:
    return resolve_backend(kernel_url).implements


def requires(implements: Implements, **needed: bool) -> None:
    """Skip by declaration: the backend does not claim what this test checks."""
    missing = [k for k, v in needed.items() if getattr(implements, k) != v]
    if missing:
        pytest.skip(f"backend does not declare {', '.join(missing)}")


@pytest.fixture
async def kernel(kernel_url: str) -> AsyncIterator[sos_kernel.Kernel]:
    async with sos_kernel.open(kernel_url) as k:
        yield k


Api = Any
"""A kernel or a MumegaClient: both have ``.bus``, ``.registry``, ``.ledger`` and ``.skills``."""
OpenApi = Callable[..., AbstractAsyncContextManager[Any]]
Connect = Callable[[str | None], Awaitable[Any]]
REMOTE_TARGETS = ("remote", LIVE)


@asynccontextmanager
async def deployment(kernel: sos_kernel.Kernel, target: str, **options: Any) -> AsyncIterator[Connect]:
    """``connect(token)`` for ``target``: ``kernel.session``, or a connected MumegaClient per token — over the
    in-process transport (``remote``), or over TCP to a real server on the same SQLite file opened with
    ``options`` (``live``). Clients and the server are closed on exit."""
    if target not in REMOTE_TARGETS:
        yield kernel.session
        return
    import httpx

    from mumega_sdk import MumegaClient
    from sos_kernel.server import create_app

    from .live_server import running_server

    clients: list[Any] = []
    with contextlib.ExitStack() as stack:
        app = None
        if target == LIVE:
            base_url, transport = stack.enter_context(running_server(kernel.url, **options)), None
        else:
            app = create_app(kernel)
            base_url, transport = REMOTE_BASE_URL, httpx.ASGITransport(app)

        async def connected(token: str | None) -> Any:
            client = MumegaClient(
                base_url, token, transport=transport, catalogue=kernel.catalogue, limits=kernel.limits
            )
            clients.append(client)
            return await client.connect()

        try:
            yield connected
        finally:
            for client in clients:
                await client.aclose()
            if app is not None:
                await app.state.sos.aclose()


@asynccontextmanager
async def as_api(kernel: sos_kernel.Kernel, target: str, **options: Any) -> AsyncIterator[Any]:
    """The API under test on ``kernel``: the trusted kernel itself, or a client holding the admin token of the
    ``default`` tenant (the tenant the trusted handle acts on)."""
    if target not in REMOTE_TARGETS:
        yield kernel
        return
    async with deployment(kernel, target, **options) as connect:
        _, token = await kernel.tenants.create(DEFAULT_TENANT, "scale")
        yield await connect(token)


@pytest.fixture
async def api(kernel: sos_kernel.Kernel, target: str) -> AsyncIterator[Any]:
    """The API under test: the trusted kernel in-process, or a MumegaClient in front of it (``remote``, ``live``)."""
    async with as_api(kernel, target) as found:
        yield found


@pytest.fixture
async def connect(kernel: sos_kernel.Kernel, target: str) -> AsyncIterator[Connect]:
    """``await connect(token)``: ``kernel.session(token)``, or a connected MumegaClient for it (see deployment)."""
    async with deployment(kernel, target) as found:
        yield found


@pytest.fixture
def open_api(kernel_url: str, target: str) -> OpenApi:
    """``async with open_api(limits=...) as api``: a kernel opened with options, as ``api`` gives it."""

    @asynccontextmanager
    async def opened(**options: Any) -> AsyncIterator[Any]:
        async with sos_kernel.open(kernel_url, **options) as kernel, as_api(kernel, target, **options) as found:
            yield found

    return opened
