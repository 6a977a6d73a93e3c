"""``?durability=replicated`` on one Redis primary with one replica: a money or publish write is acknowledged only
once the replica holds it; one the replica did not confirm in time raises SOS-6033 (retryable), and the retry with
the same id is a replay, never a second write."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

import sos_kernel
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import InvalidURL, NotReplicated

from ..conftest import _free_port

pytestmark = pytest.mark.anyio

USD = "USD"


@dataclass
class Pair:
    port: int
    replica: subprocess.Popen[bytes]

    def url(self, query: str = "") -> str:
        return f"redis://127.0.0.1:{self.port}/0{query}"


def _server(exe: str, port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    return subprocess.Popen([*args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(check: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("redis did not get ready")
        time.sleep(0.05)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """A primary and its replica, each a redis-server of this test on a port the OS handed out."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed")
    port, replica_port = _free_port(), _free_port()
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    primary = _server(exe, port, tmp_path / "p")
    replica = _server(exe, replica_port, tmp_path / "r", "--replicaof", "127.0.0.1", str(port))
    try:
        with redis.Redis(port=replica_port) as r:
            _wait(lambda: r.info("replication").get("master_link_status") == "up")
        yield Pair(port, replica)
    finally:
        for proc in (replica, primary):
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(10)


@pytest.fixture
async def kernel(pair: Pair) -> AsyncIterator[sos_kernel.Kernel]:
    async with sos_kernel.open(pair.url("?durability=replicated")) as k:
        await k.ledger.open_account("system:treasury", USD, allow_negative=True)
        for name in ("alice", "bob"):
            await k.ledger.open_account(f"agent:{name}", USD)
        await k.ledger.transfer(id="seed", debit="system:treasury", credit="agent:alice", amount=1_000, currency=USD)
        yield k


class Stopped:
    """The replica stopped (SIGSTOP) inside the block: it keeps its link but confirms nothing."""

    def __init__(self, pair: Pair) -> None:
        self.pid = pair.replica.pid

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


async def test_a_transfer_no_replica_confirmed_is_retryable_and_its_retry_is_a_replay(
    pair: Pair, kernel: sos_kernel.Kernel
) -> None:
    led = kernel.ledger
    with Stopped(pair), pytest.raises(NotReplicated) as refused:
        await led.transfer(id="t1", debit="agent:alice", credit="agent:bob", amount=100, currency=USD)
    assert refused.value.retryable
    assert refused.value.code == "SOS-6033"
    again = await led.transfer(id="t1", debit="agent:alice", credit="agent:bob", amount=100, currency=USD)
    assert (again.ok, again.replayed) == (True, True)
    assert (await led.balance("agent:bob", USD)).posted == 100  # moved once
    assert (await led.balance("agent:alice", USD)).posted == 900
    await led.check()


async def test_a_publish_no_replica_confirmed_is_retryable_and_its_retry_is_a_replay(
    pair: Pair, kernel: sos_kernel.Kernel
) -> None:
    message = SendMessage(source="agent:alice", target="agent:bob", payload=SendPayload(text="hi"))
    with Stopped(pair), pytest.raises(NotReplicated):
        await kernel.bus.publish(message)
    again = await kernel.bus.publish(message)
    assert again.duplicate is True
    assert [m.message_id for m in await kernel.bus.history("agent:bob")] == [message.message_id]


async def test_by_default_the_primary_acknowledges_alone(pair: Pair) -> None:
    async with sos_kernel.open(pair.url()) as k:
        await k.ledger.open_account("system:treasury", USD, allow_negative=True)
        await k.ledger.open_account("agent:bob", USD)
        with Stopped(pair):
            t = await k.ledger.transfer(id="t", debit="system:treasury", credit="agent:bob", amount=5, currency=USD)
            receipt = await k.bus.publish(
                SendMessage(source="agent:a", target="agent:b", payload=SendPayload(text="x"))
            )
        assert t.ok
        assert not receipt.duplicate


@pytest.mark.parametrize("query", ["?durability=sometimes", "?durability=replicated&durability=async"])
async def test_an_unknown_durability_is_refused(pair: Pair, query: str) -> None:
    with pytest.raises(InvalidURL, match="durability"):
        async with sos_kernel.open(pair.url(query)):
            pass
