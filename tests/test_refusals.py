"""A refused address, id, amount or URL reads the same in-process, over HTTP and in the command line: one
formatter (:mod:`sos_kernel.refusals`) words it, and each test compares against that formatter's own sentence."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel.errors import InvalidURL, SOSError
from sos_kernel.refusals import AMOUNT_RULE, NAME_RULE, refusal

BUS = f"a bus address: use agent:<name> or sos:channel:<name> ({NAME_RULE})"
AGENT = f"an agent address: use agent:<name> ({NAME_RULE})"
OWNER = f"agent:<name>, tenant:<slug> or system:<name> ({NAME_RULE})"
TRANSFER_ID = "a valid transfer id: 1-200 letters, digits and _.:@/-, starting with a letter or digit"
KERNEL_URLS = "memory://, sqlite:///path/to/file.db or redis://host:port/0"
COMMAND_S = 60.0

pytestmark = pytest.mark.anyio

Call = Callable[[Any], Awaitable[Any]]


def _transfer(**changed: Any) -> Call:
    args = {"id": "t-1", "debit": "agent:alice", "credit": "agent:bob", "amount": 5, "currency": "USD", **changed}
    return lambda api: api.ledger.transfer(**args)


def _cli_transfer(**changed: str) -> list[str]:
    args = {"id": "t-1", "from": "agent:alice", "to": "agent:bob", "amount": "5", **changed}
    return ["wallet", "transfer", *[x for k, v in args.items() for x in (f"--{k}", v)]]


CASES: dict[str, tuple[Call, list[str], str, str]] = {
    "target without prefix": (
        lambda api: api.bus.send("agent:alice", "bob", "hi"),
        ["send", "agent:alice", "bob", "hi"],
        "SOS-4001",
        refusal("target", "bob", BUS, "agent:bob"),
    ),
    "target upper case": (
        lambda api: api.bus.send("agent:alice", "agent:Bob", "hi"),
        ["send", "agent:alice", "agent:Bob", "hi"],
        "SOS-4001",
        refusal("target", "agent:Bob", BUS, "agent:bob"),
    ),
    "source": (
        lambda api: api.bus.send("alice", "agent:bob", "hi"),
        ["send", "alice", "agent:bob", "hi"],
        "SOS-4003",
        refusal("source", "alice", AGENT, "agent:alice"),
    ),
    "history address": (
        lambda api: api.bus.history("bob"),
        ["history", "bob"],
        "SOS-4005",
        refusal("address", "bob", BUS, "agent:bob"),
    ),
    "owner": (
        lambda api: api.ledger.balance("Alice", "USD"),
        ["wallet", "balance", "Alice"],
        "SOS-4005",
        refusal("account owner", "Alice", OWNER, "agent:alice"),
    ),
    "float amount": (
        _transfer(amount=2.5),
        _cli_transfer(amount="2.5"),
        "SOS-4005",
        refusal("amount", 2.5, AMOUNT_RULE),
    ),
    "zero amount": (
        _transfer(amount=0),
        _cli_transfer(amount="0"),
        "SOS-4005",
        refusal("amount", 0, f"a positive {AMOUNT_RULE}"),
    ),
    "transfer id": (
        _transfer(id="t 1"),
        _cli_transfer(id="t 1"),
        "SOS-4005",
        refusal("transfer id", "t 1", TRANSFER_ID),
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_a_refusal_reads_the_same_in_process_and_over_http(api: Any, case: str) -> None:
    call, _, code, message = CASES[case]
    with pytest.raises(SOSError) as info:
        await call(api)
    assert (info.value.code, info.value.message) == (code, message)
    assert message.startswith(info.value.details["field"] + " ")


def _sos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sos_kernel", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMMAND_S,
        check=False,
    )


@pytest.mark.parametrize("case", CASES)
def test_a_refusal_reads_the_same_in_the_command_line(tmp_path: Path, case: str) -> None:
    _, args, code, message = CASES[case]
    url = f"sqlite:///{tmp_path}/sos.db"
    _sos(tmp_path, "--url", url, "send", "agent:alice", "agent:bob", "hi")  # a read-only command needs the file
    result = _sos(tmp_path, "--url", url, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == f"{code} {message}"


URL_CASES = {
    "sqlite:/sos.db": refusal(
        "URL", "sqlite:/sos.db", f"a kernel URL: {KERNEL_URLS} (the scheme is followed by '://')", "sqlite:///sos.db"
    ),
    "reddis://localhost": refusal(
        "URL",
        "reddis://localhost",
        "a kernel URL: no backend 'reddis' (known: memory, redis, redis+cluster, rediss, rediss+cluster, sqlite)",
        "redis://localhost",
    ),
}


@pytest.mark.parametrize("url", URL_CASES)
async def test_a_refused_kernel_url_reads_the_same_in_process_and_in_the_command_line(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidURL) as info:
        await sos_kernel.open(url)
    assert info.value.message == URL_CASES[url]
    result = _sos(tmp_path, "--url", url, "agents")
    assert result.stderr.splitlines()[0] == f"SOS-4006 {URL_CASES[url]}"


def test_a_server_url_without_a_scheme_is_refused_at_once_with_the_url_meant(tmp_path: Path) -> None:
    expected = refusal(
        "URL",
        "127.0.0.1:6060",
        "a server URL: http(s)://host[:port], like http://127.0.0.1:6060",
        "http://127.0.0.1:6060",
    )
    with pytest.raises(InvalidURL) as info:
        MumegaClient("127.0.0.1:6060", "sk-acme-" + "0" * 32)
    assert info.value.message == expected
    result = _sos(tmp_path, "--url", "127.0.0.1:6060", "agents")
    assert result.returncode == 2
    assert "did you mean 'http://127.0.0.1:6060'?" in result.stderr.splitlines()[0]


async def test_an_agent_status_filter_that_is_not_one_is_refused(api: Any) -> None:
    with pytest.raises(SOSError) as info:
        await api.registry.find(status="bogus")
    assert info.value.code == "SOS-4005"
    assert "online, stale, offline" in info.value.message
