"""``sos policy``, ``sos approvals`` and ``sos audit`` on an embedded SQLite kernel."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sos_kernel.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_audit_and_approvals_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    (tmp_path / "p.toml").write_text(
        'name = "cli"\n[[rules]]\nid = "reads"\neffect = "allow"\nactions = ["ledger.*"]\n'
    )
    code, out, _ = run(capsys, "--url", url, "policy", "set", str(tmp_path / "p.toml"))
    assert (code, out.split()[:2]) == (0, ["policy", "cli"])
    code, out, _ = run(capsys, "--url", url, "--json", "policy", "show")
    assert json.loads(out)["rules"][0]["id"] == "reads"
    assert run(capsys, "--url", url, "approvals", "list")[1].strip() == "(no pending approvals)"
    code, out, _ = run(capsys, "--url", url, "audit", "verify")
    assert (code, "intact" in out) == (0, True)
    code, out, _ = run(capsys, "--url", url, "audit", "export")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["sos.audit.policy.set"]
    with sqlite3.connect(tmp_path / "k.db") as c:
        c.execute("UPDATE audit_records SET actor='agent:mallory'")
    code, out, _ = run(capsys, "--url", url, "audit", "verify")
    assert (code, "record 1 was edited" in out) == (1, True)
    code, _, err = run(capsys, "--url", url, "policy", "set", str(tmp_path / "missing.json"))
    assert (code, "SOS-4005" in err) == (2, True)
