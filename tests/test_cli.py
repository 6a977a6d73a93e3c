"""The ``sos`` command line, run as a real subprocess, and the README's demo on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def sos(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "sos_kernel", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    result = sos("demo", cwd=tmp_path)
    assert (tmp_path / "sos.db").exists()
    assert "receipts for alice's message" in result.stdout
    assert "delivered, processed" in result.stdout
    assert "(double entry: always 0)" in result.stdout
    # a second run on the same file sprouts its own tenant and succeeds again
    assert "sprouted tenant" in sos("demo", cwd=tmp_path).stdout


def test_send_history_and_tail_with_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    sent = json.loads(sos("send", "agent:alice", "agent:bob", "hello", "--url", url, "--json", cwd=tmp_path).stdout)
    assert sent["duplicate"] is False
    lines = sos("history", "agent:bob", "--url", url, "--json", cwd=tmp_path).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["message"]["message_id"] for r in rows] == [sent["message_id"]]
    tailed = sos("tail", "agent:bob", "--url", url, "--json", "--count", "1", cwd=tmp_path).stdout.splitlines()
    assert json.loads(tailed[0])["message"]["payload"]["text"] == "hello"


def test_bad_input_exits_non_zero_with_the_sos_code(tmp_path: Path) -> None:
    result = sos("send", "agent:alice", "agent:BOB", "x", "--url", "memory://", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "SOS-4001" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "sned"}))
    parsed = sos("parse", str(bad), cwd=tmp_path, check=False)
    assert parsed.returncode == 1
    assert json.loads(parsed.stderr)["error"]["code"] == "SOS-4004"


@pytest.mark.parametrize("command", ["catalogue", "errors"])
def test_listings_as_json(tmp_path: Path, command: str) -> None:
    rows = json.loads(sos(command, "--json", cwd=tmp_path).stdout)
    assert rows
    key = "type" if command == "catalogue" else "code"
    assert all(key in row for row in rows)
