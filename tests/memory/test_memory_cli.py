"""``sos memory …`` on a SQLite file, and against ``sos serve`` (a real process) with agent tokens; commands run
through the CLI's ``main()`` in this process (see tests/test_cli.py), the first one as a real process."""

from __future__ import annotations

import json
from pathlib import Path

from ..test_cli import ADMIN, Served, failure, served, sos, sos_json

__all__ = ["served"]  # the fixture, used below


def test_memory_commands_on_a_file(tmp_path: Path) -> None:
    kernel = ("--url", f"sqlite:///{tmp_path}/sos.db")
    assert (
        "remembered inv in team/notes"
        in sos(
            "memory",
            "remember",
            "team/notes",
            "the invoice is overdue",
            "--id",
            "inv",
            "--meta",
            "kind=bill",
            *kernel,
            cwd=tmp_path,
            process=True,
        ).stdout
    )
    again = sos_json(
        "memory",
        "remember",
        "team/notes",
        "the invoice is overdue",
        "--id",
        "inv",
        "--meta",
        "kind=bill",
        "--json",
        *kernel,
        cwd=tmp_path,
    )
    assert (again["id"], again["replayed"], again["metadata"]) == ("inv", True, {"kind": "bill"})
    sos(
        "memory",
        "remember",
        "team/notes",
        "the cat sat on the mat",
        "--id",
        "cat",
        "--ttl",
        "3600",
        *kernel,
        cwd=tmp_path,
    )
    table = sos("memory", "recall", "team/notes", "overdue invoices", *kernel, cwd=tmp_path).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "SCORE", "TEXT"]
    assert [line.split()[0] for line in table[1:]] == ["inv", "cat"]
    hits = sos_json(
        "memory",
        "recall",
        "team/notes",
        "cat",
        "-k",
        "1",
        "--where",
        '{"kind": {"$in": ["bill"]}}',
        "--json",
        *kernel,
        cwd=tmp_path,
    )
    assert [h["id"] for h in hits] == ["inv"]
    assert [m["id"] for m in sos_json("memory", "list", "team/notes", "--json", *kernel, cwd=tmp_path)] == [
        "cat",
        "inv",
    ]
    assert sos_json("memory", "get", "team/notes", "cat", "--json", *kernel, cwd=tmp_path)["expires_at"] is not None
    namespaces = sos_json("memory", "namespaces", "--json", *kernel, cwd=tmp_path)
    assert namespaces == [{"name": "team/notes", "count": 2, "embedder": "lexical-v1", "dimensions": 384}]
    failure("memory", "remember", "team/notes", "other text", "--id", "inv", *kernel, cwd=tmp_path, code="SOS-4009")
    failure("memory", "recall", "team/notes", "x", "--where", "{bad", *kernel, cwd=tmp_path, code="SOS-4005")
    failure("memory", "recall", "team/notes", "x", "-k", "0", *kernel, cwd=tmp_path, code="SOS-4005")
    failure("memory", "get", "team/notes", "nope", *kernel, cwd=tmp_path, code="SOS-4040")
    assert "forgot inv" in sos("memory", "forget", "team/notes", "inv", *kernel, cwd=tmp_path).stdout
    assert json.loads(sos("memory", "forget", "team/notes", "inv", "--json", *kernel, cwd=tmp_path).stdout) == {
        "forgotten": False
    }


def test_memory_commands_over_http(tmp_path: Path, served: Served) -> None:
    created = sos_json(
        "--url", served.url, "tenant", "create", "acme", "--plan", "growth", cwd=tmp_path, SOS_ADMIN_TOKEN=ADMIN
    )
    admin = ("--url", served.url, "--token", created["admin_token"])
    alice = (
        "--url",
        served.url,
        "--token",
        sos_json(*admin, "token", "issue", "--agent", "agent:alice", cwd=tmp_path)["secret"],
    )
    bob = (
        "--url",
        served.url,
        "--token",
        sos_json(*admin, "token", "issue", "--agent", "agent:bob", cwd=tmp_path)["secret"],
    )
    sos(*alice, "memory", "remember", "agent:alice/notes", "alice's plan", "--id", "plan", cwd=tmp_path)
    assert sos_json(*alice, "memory", "recall", "agent:alice/notes", "plan", "--json", cwd=tmp_path)[0]["id"] == "plan"
    failure(*bob, "memory", "get", "agent:alice/notes", "plan", cwd=tmp_path, code="SOS-5004")
    assert "(no namespaces)" in sos(*bob, "memory", "namespaces", cwd=tmp_path).stdout
    assert [n["name"] for n in sos_json(*admin, "memory", "namespaces", "--json", cwd=tmp_path)] == [
        "agent:alice/notes"
    ]
