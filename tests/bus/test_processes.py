"""Crash and cross-process behaviour with real processes (backends that declare multi_process)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements

from ..conftest import requires

CHILD = str(Path(__file__).with_name("_child.py"))


class Child:
    """A child process whose stdout lines are read by a thread (select() cannot see Python's line buffer)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def read_until(self, marker: str, timeout_s: float = 20.0) -> list[str]:
        """Lines printed until ``marker`` (exclusive); fails on timeout or early exit."""
        got: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"child did not print {marker!r} in {timeout_s} s; got {got}")
            if line is None:
                pytest.fail(f"child exited before {marker!r}: {got} {self.stderr()}")
            if line == marker:
                return got
            got.append(line)

    def stderr(self) -> str:
        self.proc.wait(10)
        return self.proc.stderr.read() if self.proc.stderr else ""

    def kill(self) -> int:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def finish(self, timeout_s: float = 30.0) -> list[str]:
        """Every remaining line once the child exits with status 0."""
        self.proc.wait(timeout_s)
        self._reader.join(10)
        err = self.stderr()
        self.close()
        assert self.proc.returncode == 0, err
        out = []
        while (line := self.lines.get_nowait()) is not None:
            if line:
                out.append(line)
        return out


def publish_n(url: str, address: str, n: int) -> list[str]:
    async def run() -> list[str]:
        async with sos_kernel.open(url) as kernel:
            return [(await kernel.bus.send("agent:boss", address, f"job {i}")).message_id for i in range(n)]

    return anyio.run(run)


def pending(url: str, address: str, group: str = "inbox") -> int:
    async def run() -> int:
        async with sos_kernel.open(url) as kernel:
            return await kernel.bus.store.pending_count("default", address, group)

    return anyio.run(run)


@pytest.mark.slow
def test_consumer_killed_before_ack_loses_nothing(kernel_url: str, implements: Implements) -> None:
    requires(implements, multi_process=True)
    published = publish_n(kernel_url, "agent:worker", 40)
    victim = Child("take", kernel_url, "agent:worker", "10", "1.0")
    taken = [line.split()[0] for line in victim.read_until("READY")]
    assert len(taken) == 10
    os.kill(victim.proc.pid, signal.SIGKILL)
    assert victim.kill() == -signal.SIGKILL
    rescuers = [Child("drain", kernel_url, "agent:worker", "3.0", f"rescuer-{i}") for i in range(2)]
    delivered = [line.split() for child in rescuers for line in child.finish()]
    ids = [mid for mid, _ in delivered]
    # nothing lost: every published message was delivered and acked by a rescuer
    assert set(ids) == set(published)
    # nothing twice among the rescuers (each acked what it got); redeliveries are the victim's messages
    assert Counter(ids).most_common(1)[0][1] == 1
    redelivered = {mid for mid, attempt in delivered if int(attempt) > 1}
    assert set(taken) <= redelivered
    assert redelivered <= set(published)
    assert pending(kernel_url, "agent:worker") == 0


@pytest.mark.slow
def test_message_published_in_one_process_reaches_a_subscriber_in_another(
    kernel_url: str, implements: Implements
) -> None:
    requires(implements, multi_process=True)
    child = Child("recv", kernel_url, "agent:listener", "5")
    child.read_until("READY")
    published = publish_n(kernel_url, "agent:listener", 5)
    got = [line.split()[0] for line in child.finish()]
    assert got == published


@pytest.mark.slow
def test_subscriber_in_this_process_is_woken_by_another_process(kernel_url: str, implements: Implements) -> None:
    requires(implements, multi_process=True)

    async def run() -> list[str]:
        async with sos_kernel.open(kernel_url) as kernel, kernel.bus.subscribe("agent:parent") as sub:
            child = Child("publish", kernel_url, "agent:parent", "3")
            got = []
            with anyio.fail_after(20):
                while len(got) < 3:
                    d = await sub.receive()
                    assert d is not None
                    got.append(d.message.message_id)
                    await d.ack()
            assert got == child.finish()
            return got

    assert len(anyio.run(run)) == 3


@pytest.mark.slow
def test_consumers_of_a_group_in_two_processes_take_disjoint_entries_whose_union_is_all(
    kernel_url: str, implements: Implements
) -> None:
    requires(implements, multi_process=True)
    children = [Child("share", kernel_url, "agent:pool", "3.0", "2") for _ in range(2)]
    for child in children:
        child.read_until("READY")
    published = publish_n(kernel_url, "agent:pool", 60)
    ids = [line.split()[0] for child in children for line in child.finish()]
    assert sorted(ids) == sorted(published)  # each entry to one consumer of the four, none left out
    assert pending(kernel_url, "agent:pool") == 0


@pytest.mark.slow
def test_a_killed_process_leaves_what_its_consumers_held_to_another(kernel_url: str, implements: Implements) -> None:
    requires(implements, multi_process=True)
    published = publish_n(kernel_url, "agent:worker", 40)
    victim = Child("takeall", kernel_url, "agent:worker", "12", "1.0", "4")  # four consumers sharing the reads
    taken = [line.split()[0] for line in victim.read_until("READY")]
    assert len(taken) == 12
    os.kill(victim.proc.pid, signal.SIGKILL)
    assert victim.kill() == -signal.SIGKILL
    rescuer = Child("drain", kernel_url, "agent:worker", "3.0", "rescuer")
    delivered = [line.split() for line in rescuer.finish()]
    ids = [mid for mid, _ in delivered]
    assert sorted(ids) == sorted(published)  # the taken, and the read but not yet taken, came back
    assert set(taken) <= {mid for mid, attempt in delivered if int(attempt) > 1}
    assert pending(kernel_url, "agent:worker") == 0
