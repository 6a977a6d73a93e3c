"""``sos providers list|health|load`` and ``sos chat`` on an embedded kernel file (through the CLI's ``main()``, the
first chat as a real process: see tests/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

from ..test_cli import failure, sos, sos_json

MATRIX = """
- {schema_version: "1", id: broken, name: Broken, backend: local, tier: primary, model: echo,
   endpoint: "local://fail", circuit_breaker: {failure_threshold: 1}}
- {schema_version: "1", id: echo, name: Echo, backend: local, tier: local, model: echo}
"""


def test_load_list_health_and_chat(tmp_path: Path) -> None:
    url = ("--url", f"sqlite:///{tmp_path}/sos.db")
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    assert (
        "registered 2 provider(s): broken, echo" in sos(*url, "providers", "load", "matrix.yaml", cwd=tmp_path).stdout
    )
    assert [c["id"] for c in sos_json(*url, "providers", "list", cwd=tmp_path)] == ["broken", "echo"]
    answered = sos(*url, "chat", "hello there", cwd=tmp_path, process=True)
    assert answered.stdout == "hello there\n"
    assert "echo (echo): 2 in, 2 out, 0 USD micros" in answered.stderr
    health = sos_json(*url, "providers", "health", cwd=tmp_path)
    assert {k: v["state"] for k, v in health.items()} == {"broken": "open", "echo": "closed"}
    assert sos(*url, "chat", "one two three", "--stream", "--tier", "local", cwd=tmp_path).stdout == "one two three\n"
    reply = sos_json(*url, "chat", "again", "--id", "c1", cwd=tmp_path)
    assert (reply["provider"], reply["text"], reply["replayed"]) == ("echo", "again", False)
    assert sos_json(*url, "chat", "again", "--id", "c1", cwd=tmp_path)["replayed"] is True
    failure(*url, "chat", "hi", "--model", "nope", cwd=tmp_path, code="SOS-6040")
    (tmp_path / "bad.yaml").write_text(MATRIX + "- {id: Bad}\n")
    failure(*url, "providers", "load", "bad.yaml", cwd=tmp_path, code="SOS-4001")
