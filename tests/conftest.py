"""Shared fixtures: real engines only.

``kernel_url`` is parametrized over every backend; a test that needs a capability asks for it by declaration
(``requires(durable=True)``), never by backend name. Redis: ``SOS_TEST_REDIS_URL`` when set (``.ci/run`` starts a
server and sets it), else a ``redis-server`` from PATH is started on a free loopback port for the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import sos_kernel
from sos_kernel.backends import Implements, resolve_backend

BACKENDS = ["memory", "sqlite", "redis"]


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
    if url:
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


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(params=BACKENDS)
def kernel_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = request.param
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{tmp_path}/sos.db"
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
