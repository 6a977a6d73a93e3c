"""Crash and cross-process behaviour with real processes (backends that declare multi_process)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements

from ..conftest import requires

CHILD = str(Path(__file__).with_name("_child.py"))


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float = 20.0) -> list[str]:
    """Lines printed by ``proc`` until ``marker`` (exclusive); fails on timeout or early exit."""
    assert proc.stdout is not None
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        return _read_lines(proc, sel, marker, lines, time.monotonic() + timeout_s, timeout_s)


def _read_lines(
    proc: subprocess.Popen[str],
    sel: selectors.BaseSelector,
    marker: str,
    lines: list[str],
    deadline: float,
    timeout_s: float,
) -> list[str]:
    assert proc.stdout is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            proc.communicate()
            pytest.fail(f"child did not print {marker!r} in {timeout_s} s; got {lines}")
        if not sel.select(remaining):
            continue
        line = proc.stdout.readline()
        if not line:
            _, stderr = proc.communicate()
            pytest.fail(f"child exited before {marker!r}: {lines} {stderr}")
        line = line.strip()
        if line == marker:
            return lines
        lines.append(line)


def finish(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> list[str]:
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err
    return [line for line in out.splitlines() if line]


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
    victim = spawn("take", kernel_url, "agent:worker", "10", "1.0")
    taken = [line.split()[0] for line in read_until(victim, "READY")]
    assert len(taken) == 10
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    rescuers = [spawn("drain", kernel_url, "agent:worker", "3.0", f"rescuer-{i}") for i in range(2)]
    delivered = [line.split() for proc in rescuers for line in finish(proc)]
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
    child = spawn("recv", kernel_url, "agent:listener", "5")
    read_until(child, "READY")
    published = publish_n(kernel_url, "agent:listener", 5)
    got = [line.split()[0] for line in finish(child)]
    assert got == published


@pytest.mark.slow
def test_subscriber_in_this_process_is_woken_by_another_process(kernel_url: str, implements: Implements) -> None:
    requires(implements, multi_process=True)

    async def run() -> list[str]:
        async with sos_kernel.open(kernel_url) as kernel, kernel.bus.subscribe("agent:parent") as sub:
            child = spawn("publish", kernel_url, "agent:parent", "3")
            got = []
            with anyio.fail_after(20):
                while len(got) < 3:
                    d = await sub.receive()
                    assert d is not None
                    got.append(d.message.message_id)
                    await d.ack()
            assert got == finish(child)
            return got

    assert len(anyio.run(run)) == 3
