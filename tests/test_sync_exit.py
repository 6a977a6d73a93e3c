"""The blocking kernel in scripts and notebooks that never close it: the interpreter exits promptly and what was
written stays written; a closed kernel refuses calls with SOS-6005; a blocking session has a session's attributes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import sos_kernel.sync
from sos_kernel.errors import KernelClosed

EXIT_S = 2.0
"""The longest an unclosed script may take from its last line to its exit (the issue's bound)."""
HANG_S = 20.0
"""Where a hanging interpreter is stopped, so a regression fails instead of stalling the suite."""

UNCLOSED = """
import sys, time
import sos_kernel.sync
kernel = sos_kernel.sync.open(sys.argv[1])
kernel.ledger.open_account("agent:alice", "USD", True)
kernel.ledger.open_account("agent:bob", "USD")
kernel.ledger.transfer(id="t-1", debit="agent:alice", credit="agent:bob", amount=250_000, currency="USD")
kernel.bus.send("agent:alice", "agent:bob", "kept")
subscription = kernel.bus.subscribe("agent:bob").__enter__()  # a notebook leaves this open too
print(time.monotonic(), flush=True)
"""


def test_an_unclosed_sync_kernel_exits_promptly_and_keeps_its_writes(kernel_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNCLOSED, kernel_url], capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path
    )
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert ended - float(result.stdout) < EXIT_S
    if kernel_url == "memory://":
        return  # nothing to find again: memory is not durable
    with sos_kernel.sync.open(kernel_url) as kernel:
        assert kernel.ledger.balance("agent:bob", "USD").posted == 250_000
        assert [m.payload.text for m in kernel.bus.history("agent:bob")] == ["kept"]


def test_a_closed_sync_kernel_refuses_calls_with_kernel_closed(kernel_url: str) -> None:
    kernel = sos_kernel.sync.open(kernel_url)
    _, token = kernel.tenants.create("acme", "starter")
    session = kernel.session(token)
    kernel.close()
    kernel.close()  # idempotent
    assert kernel.closed
    for call in (
        lambda: kernel.bus.send("agent:a", "agent:b", "late"),
        lambda: kernel.ledger.balances(),
        lambda: kernel.session(token),
        lambda: kernel.tenant("acme"),
        lambda: session.bus.history("sos:channel:x"),
    ):
        with pytest.raises(KernelClosed, match="closed"):
            call()


def test_a_sync_session_has_the_async_sessions_attributes(kernel_url: str) -> None:
    with sos_kernel.sync.open(kernel_url) as kernel:
        _, admin = kernel.tenants.create("acme", "starter")
        issued = kernel.tenant("acme").tokens.issue(agent="agent:alice")
        session = kernel.session(issued.secret)
        assert (session.tenant, session.agent) == ("acme", "agent:alice")
        assert "bus:write" in session.scopes
        assert session.principal.agent == "agent:alice"
        assert session.refresh().tenant == "acme"
        assert session.denials == 0
        assert kernel.session(admin).agent is None
