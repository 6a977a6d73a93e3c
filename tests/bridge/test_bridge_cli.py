"""``sos bridge`` from a shell: one round with ``--once``, and a running bridge stopped by Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

import sos_kernel
from sos_kernel.contracts import AgentCard

from ..test_cli import _env, sos, sos_json
from .test_bridge import SOS_DB, template

WAIT_S = 20.0


@pytest.fixture
def sos_redis(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    url = redis_url.rsplit("/", 1)[0] + f"/{SOS_DB}"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    yield client, url
    client.close()


def _send(client: redis.Redis, text: str) -> str:
    fields = template("send", source="agent:kasra", target="agent:alice", message_id=str(uuid.uuid4()))
    fields["payload"] = json.dumps({"text": text, "content_type": "text/plain"})
    client.xadd("sos:stream:global:agent:alice", fields)  # type: ignore[arg-type]
    client.publish("sos:wake:alice", json.dumps(fields))
    return fields["message_id"]


def _register_alice(url: str) -> None:
    async def main() -> None:
        async with sos_kernel.open(url) as kernel:
            await kernel.registry.register(AgentCard(name="alice", tool="sdk", type="remote", role="executor"))

    anyio.run(main)


def test_bridge_once_and_running(sos_redis: tuple[redis.Redis, str], tmp_path: Path) -> None:
    client, sos_url = sos_redis
    kernel_url = f"sqlite:///{tmp_path}/k.db"
    _register_alice(kernel_url)
    first = _send(client, "one")
    status = sos_json("bridge", "--sos-redis", sos_url, "--url", kernel_url, "--once", cwd=tmp_path)
    assert status["bridged_in"] == 1
    assert status["kernel_agents"] == ["alice"]
    assert client.hget("sos:registry:alice", "bridged_by") == "sos-kernel:default"

    cmd = [sys.executable, "-m", "sos_kernel", "bridge", "--sos-redis", sos_url, "--url", kernel_url]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        second = _send(client, "two")
        deadline = time.monotonic() + WAIT_S
        while True:
            lines = sos("--json", "history", "agent:alice", "--url", kernel_url, cwd=tmp_path).stdout.splitlines()
            ids = [json.loads(line)["message"]["message_id"] for line in lines]
            if len(ids) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ids == [first, second]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_bridge_refuses_a_url_that_is_not_redis(tmp_path: Path) -> None:
    result = sos("bridge", "--sos-redis", "http://x", "--url", f"sqlite:///{tmp_path}/k.db", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("SOS-4005 ")
