"""The ``sos`` command line: on a SQLite file, on Redis, and against ``sos serve``; plus the README's quickstart in
a fresh virtual environment.

Most commands run in this process through the CLI's own ``main()`` (its argv, environment, working directory,
stdout, stderr and exit code, as a process would see them): a subprocess per command proves nothing more and costs
an interpreter start each. Each command family keeps at least one call as a real ``python -m sos_kernel`` process
(``process=True``), ``sos serve`` always runs as one, and the README flows run in a shell."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sos_kernel.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
COMMAND_S = 60.0
"""The longest one CLI invocation may take."""
SERVE_START_S = 30.0
"""How long ``sos serve`` may take to answer /health."""
SERVE_STOP_S = 15.0
"""How long it may take to exit after SIGTERM."""
POLL_S = 0.05
README_INSTALL_S = 90.0
ADMIN = "admin-" + "0123456789abcdef" * 2
"""The server admin token the served tests start ``sos serve`` with."""
SOS_ENV = ("SOS_URL", "SOS_TOKEN", "SOS_ADMIN_TOKEN")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SOS_ENV}
    env.update(extra)
    return env


@contextlib.contextmanager
def _as_a_process_would(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """This process's environment and working directory as ``subprocess.run(cwd=cwd, env=_env(**env))`` gives."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    os.environ.clear()
    os.environ.update(_env(**env))
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def _in_process(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``sos *args`` through the CLI's ``main()``; an exception it does not turn into an exit code propagates."""
    out, err = io.StringIO(), io.StringIO()
    with _as_a_process_would(cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["sos", *args], code, out.getvalue(), err.getvalue())


def sos(
    *args: str, cwd: Path, check: bool = True, process: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """``sos *args`` in this process, or as a real ``python -m sos_kernel`` process when ``process``."""
    if process:
        result = subprocess.run(
            [sys.executable, "-m", "sos_kernel", *args],
            cwd=cwd,
            env=_env(**env),
            capture_output=True,
            text=True,
            timeout=COMMAND_S,
        )
    else:
        result = _in_process(args, cwd, env)
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


def sos_json(*args: str, cwd: Path, process: bool = False, **env: str) -> Any:
    return json.loads(sos("--json", *args, cwd=cwd, process=process, **env).stdout)


def failure(*args: str, cwd: Path, code: str, process: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command that must fail with the SOS error ``code``: exit 2, ``SOS-xxxx message`` on stderr."""
    result = sos(*args, cwd=cwd, check=False, process=process, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"{code} "), result.stderr
    assert result.stdout == ""
    return result


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- embedded: the demo, the bus, errors ------------------------------------------------------------------------


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    result = sos("demo", cwd=tmp_path, process=True)
    assert (tmp_path / "sos.db").exists()
    assert "receipts for alice's message" in result.stdout
    assert "delivered, processed" in result.stdout
    assert "(double entry: always 0)" in result.stdout
    assert "sos: sprouting tenant" in result.stderr  # progress goes to stderr, never into the results
    assert "sos: " not in result.stdout
    # a second run on the same file sprouts its own tenant and succeeds again
    assert "sprouted tenant" in sos("demo", cwd=tmp_path).stdout


def test_demo_as_json(tmp_path: Path) -> None:
    result = sos("demo", "--json", "--quiet", "--url", f"sqlite:///{tmp_path}/demo.db", cwd=tmp_path)
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["receipts"] == ["delivered", "processed"]
    assert report["sum"] == 0
    assert sum(report["invocation"]["payouts"].values()) == report["invocation"]["price_micros"]
    assert {m["type"] for m in report["trail"]} >= {"announce", "send", "ask", "receipt"}
    assert {m["type"] for m in report["trail"]} >= {"task_created", "evidence", "gate_verdict", "task_completed"}
    assert (report["task"]["status"], report["task"]["assignee"]) == ("done", "agent:bob")


def test_send_history_and_tail_with_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    sent = sos_json("send", "agent:alice", "agent:bob", "hello", "--url", url, cwd=tmp_path)
    assert sent["duplicate"] is False
    # global options go before or after the command alike
    lines = sos("--json", "--url", url, "history", "agent:bob", cwd=tmp_path).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["message"]["message_id"] for r in rows] == [sent["message_id"]]
    tailed = sos("tail", "agent:bob", "--url", url, "--json", "--count", "1", cwd=tmp_path).stdout.splitlines()
    assert json.loads(tailed[0])["message"]["payload"]["text"] == "hello"
    # SOS_URL is read when --url is not given
    assert "hello" in sos("history", "agent:bob", cwd=tmp_path, process=True, SOS_URL=url).stdout


def test_bad_input_exits_2_with_the_sos_code(tmp_path: Path) -> None:
    failure("send", "agent:alice", "agent:BOB", "x", "--url", "memory://", cwd=tmp_path, code="SOS-4001", process=True)
    as_json = sos("send", "agent:alice", "agent:BOB", "x", "--url", "memory://", "--json", cwd=tmp_path, check=False)
    assert as_json.returncode == 2
    assert json.loads(as_json.stderr)["error"]["code"] == "SOS-4001"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "sned"}))
    assert "did you mean 'send'" in failure("parse", str(bad), cwd=tmp_path, code="SOS-4004").stderr
    failure("parse", str(tmp_path / "missing.json"), cwd=tmp_path, code="SOS-4005")
    failure("agents", "--url", "reddis://localhost", cwd=tmp_path, code="SOS-4006")
    usage = sos(
        "wallet",
        "transfer",
        "--id",
        "t",
        "--from",
        "agent:a",
        "--to",
        "agent:b",
        "--amount",
        "1.5",
        cwd=tmp_path,
        check=False,
    )
    assert usage.returncode == 2
    assert "integer of micros" in usage.stderr


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///%00x.db",
        "sqlite://[::1/x.db",
        "sqlite://h:99999/x.db",
        "redis://[::1/0",
        "redis://localhost:-1/0",
        "memory://x:abc",
        "nope://x",
        "http://localhost:99999",
        "http://[::1",
        "https://localhost:abc",
    ],
)
def test_malformed_urls_are_sos_errors(tmp_path: Path, url: str) -> None:
    token = "sk-abc-" + "0" * 32
    with_token = ("--token", token) if url.startswith("http") else ()
    failure("agents", "--url", url, *with_token, cwd=tmp_path, code="SOS-4006")


def test_flags_that_cannot_apply_are_refused(tmp_path: Path) -> None:
    token = "sk-acme-" + "0" * 32
    failure("agents", "--url", "memory://", "--token", token, cwd=tmp_path, code="SOS-4005")
    failure("agents", "--url", "http://127.0.0.1:9", cwd=tmp_path, code="SOS-5001")
    wrong = ("agents", "--url", "http://127.0.0.1:9", "--token", token, "--tenant", "other")
    assert "belongs to tenant acme" in failure(*wrong, cwd=tmp_path, code="SOS-4005").stderr
    failure("demo", "--url", "http://127.0.0.1:9", cwd=tmp_path, code="SOS-4005")
    failure("serve", "--url", "http://127.0.0.1:9", cwd=tmp_path, code="SOS-4005")
    failure("serve", "--url", "memory://", "--admin-token", "short", cwd=tmp_path, code="SOS-4005")


@pytest.mark.parametrize("command", ["catalogue", "errors"])
def test_listings_as_json(tmp_path: Path, command: str) -> None:
    rows = json.loads(sos(command, "--json", cwd=tmp_path).stdout)
    assert rows
    key = "type" if command == "catalogue" else "code"
    assert all(key in row for row in rows)


# -- embedded: tenants, tokens, wallets, agents, skills ---------------------------------------------------------


def test_tenants_and_tokens_on_a_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/admin.db"
    created = sos_json("tenant", "create", "acme", "--plan", "growth", "--url", url, cwd=tmp_path, process=True)
    assert created["tenant"]["slug"] == "acme"
    assert created["tenant"]["seats_max"] == 5
    assert re.fullmatch(r"sk-acme-[0-9a-f]{32}", created["admin_token"])
    failure("tenant", "create", "acme", "--url", url, cwd=tmp_path, code="SOS-4009")

    scoped = ("--scope", "bus:read", "--scope", "bus:write", "--expires-in-s", "3600", "--label", "ci")
    issued = sos_json("token", "issue", "--tenant", "acme", "--agent", "agent:x", *scoped, "--url", url, cwd=tmp_path)
    assert issued["agent"] == "agent:x"
    assert issued["scopes"] == ["bus:read", "bus:write"]
    assert issued["expires_at"] is not None
    listed = sos_json("token", "list", "--tenant", "acme", "--url", url, cwd=tmp_path)
    assert {t["id"] for t in listed} >= {issued["id"]}
    assert issued["secret"] not in json.dumps(listed)  # secrets are shown once, at issue

    sos("token", "revoke", issued["id"], "--tenant", "acme", "--url", url, cwd=tmp_path, process=True)
    table = sos("token", "list", "--tenant", "acme", "--url", url, cwd=tmp_path).stdout
    assert re.search(rf"{issued['id']}\s+agent:x\s+revoked", table), table
    failure("token", "revoke", issued["id"], "--tenant", "acme", "--url", url, cwd=tmp_path, code="SOS-4040")
    failure("token", "issue", "--scope", "bus:fly", "--tenant", "acme", "--url", url, cwd=tmp_path, code="SOS-4005")


def test_wallets_on_a_file(tmp_path: Path) -> None:
    kernel = ("--url", f"sqlite:///{tmp_path}/money.db", "--tenant", "acme")
    sos("tenant", "create", "acme", "--url", f"sqlite:///{tmp_path}/money.db", cwd=tmp_path)
    sos("wallet", "open", "system:mint", "--allow-negative", *kernel, cwd=tmp_path)
    sos("wallet", "open", "agent:alice", *kernel, cwd=tmp_path)
    move = ("wallet", "transfer", "--id", "grant-1", "--from", "system:mint", "--to", "agent:alice")
    first = sos_json(*move, "--amount", "1_500_000", *kernel, cwd=tmp_path, process=True)
    assert (first["amount"], first["replayed"]) == (1_500_000, False)
    assert sos_json(*move, "--amount", "1500000", *kernel, cwd=tmp_path)["replayed"] is True
    failure(*move, "--amount", "7", *kernel, cwd=tmp_path, code="SOS-4009")  # same id, other amount
    overdraw = ("wallet", "transfer", "--id", "t-2", "--from", "agent:alice", "--to", "system:mint")
    failure(*overdraw, "--amount", "2000000", *kernel, cwd=tmp_path, code="SOS-7001")

    balance = sos_json("wallet", "balance", "agent:alice", *kernel, cwd=tmp_path)
    assert (balance["posted"], balance["available"], balance["currency"]) == (1_500_000, 1_500_000, "USD")
    failure("wallet", "balance", "agent:alice", "--currency", "EUR", *kernel, cwd=tmp_path, code="SOS-7002")
    everything = sos_json("wallet", "list", *kernel, cwd=tmp_path)
    assert sum(b["posted"] for b in everything) == 0
    assert "sum of posted USD: 0" in sos("wallet", "list", *kernel, cwd=tmp_path).stdout
    history = sos_json("wallet", "history", "agent:alice", *kernel, cwd=tmp_path)
    assert [t["id"] for t in history] == ["grant-1"]


def test_tasks_on_a_file(tmp_path: Path) -> None:
    kernel = ("--url", f"sqlite:///{tmp_path}/tasks.db")
    sos("wallet", "open", "system:mint", "--allow-negative", *kernel, cwd=tmp_path)
    sos("wallet", "open", "agent:boss", *kernel, cwd=tmp_path)
    sos("wallet", "transfer", "--id", "g", "--from", "system:mint", "--to", "agent:boss", "--amount", "900", *kernel,
        cwd=tmp_path)  # fmt: skip
    create = ("task", "create", "Write the docs", "--id", "docs-1", "--reviewer", "agent:rev", "--bounty", "600")
    task = sos_json(*create, "--funded-by", "agent:boss", *kernel, cwd=tmp_path, process=True)
    assert (task["status"], task["bounty"], task["attempt"]) == ("queued", 600, 0)
    failure(*create, "--funded-by", "agent:boss", "--priority", "high", *kernel, cwd=tmp_path, code="SOS-4009")
    failure("task", "create", "t", "--id", "poor-1", "--reviewer", "agent:rev", "--bounty", "600", "--funded-by",
            "agent:boss", *kernel, cwd=tmp_path, code="SOS-7001")  # fmt: skip
    claim = sos_json("task", "claim", "docs-1", "--agent", "agent:w", *kernel, cwd=tmp_path)
    assert claim["attempt"] == 1
    failure("task", "claim", "docs-1", "--agent", "agent:x", *kernel, cwd=tmp_path, code="SOS-6012")
    evidence = json.dumps({"argv": ["make", "docs"], "exit_status": 0, "output_sha256": "b" * 64, "output_bytes": 9})
    token = ("--claim-token", claim["token"])
    failure("task", "submit", "docs-1", "--claim-token", "1.stale", *kernel, cwd=tmp_path, code="SOS-6012")
    sos("task", "submit", "docs-1", *token, "--evidence", evidence, "--result", '{"pages": 4}', *kernel, cwd=tmp_path)
    table = sos("task", "list", *kernel, cwd=tmp_path).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "ATTEMPT"]
    assert table[1].split()[:4] == ["docs-1", "review", "1", "agent:w"]
    failure("task", "review", "docs-1", "--verdict", "reject", *kernel, "--reviewer", "agent:rev", cwd=tmp_path,
            code="SOS-4005")  # fmt: skip
    done = sos_json(
        "task", "review", "docs-1", "--verdict", "approve", "--reviewer", "agent:rev", *kernel, cwd=tmp_path
    )
    assert (done["status"], done["outcome"]) == ("done", "approved")
    assert "done (approved)" in sos("task", "show", "docs-1", *kernel, cwd=tmp_path).stdout
    assert sos_json("wallet", "balance", "agent:w", *kernel, cwd=tmp_path)["available"] == 600
    board = sos_json("task", "board", *kernel, cwd=tmp_path)
    assert board["columns"]["done"] == {"count": 1, "bounty": {"USD": 600}, "tasks": ["docs-1"]}
    assert re.search(r"^done\s+1\s+600 USD\s+docs-1$", sos("task", "board", *kernel, cwd=tmp_path).stdout, re.M)
    failure("task", "cancel", "docs-1", *kernel, cwd=tmp_path, code="SOS-6013")
    failure("task", "show", "nope-1", *kernel, cwd=tmp_path, code="SOS-6011")


def test_agents_skills_and_wallets_of_the_demo_tenant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    tenant = sos_json("demo", "--quiet", "--url", url, cwd=tmp_path)["tenant"]
    kernel = ("--url", url, "--tenant", tenant)
    agents = sos_json("agents", *kernel, cwd=tmp_path, process=True)
    assert [a["card"]["name"] for a in agents] == ["alice", "bob", "carol"]
    assert sos_json("agents", "--status", "offline", *kernel, cwd=tmp_path) == []
    table = sos("agents", "--role", "executor", *kernel, cwd=tmp_path).stdout.splitlines()
    assert table[0].split()[:3] == ["AGENT", "STATUS", "ROLE"]
    assert [line.split()[0] for line in table[1:]] == ["agent:alice", "agent:bob", "agent:carol"]
    assert "(no agents)" in sos("agents", "--skill", "juggling", *kernel, cwd=tmp_path).stdout

    skills = sos_json("skills", "list", *kernel, cwd=tmp_path, process=True)
    assert [(s["id"], s["version"]) for s in skills] == [("summarise", "1.0.0")]
    assert [s["id"] for s in sos_json("skills", "list", "--marketplace", *kernel, cwd=tmp_path)] == ["summarise"]
    card = sos_json("skills", "show", "summarise", "--version", "^1.0", *kernel, cwd=tmp_path)
    assert card["verification"]["status"] == "human_verified"
    assert "250000 USD micros per call" in sos("skills", "show", "summarise", *kernel, cwd=tmp_path).stdout
    failure("skills", "show", "translate", *kernel, cwd=tmp_path, code="SOS-6020")
    failure("skills", "list", "--marketplace", "--tag", "text", *kernel, cwd=tmp_path, code="SOS-4005")
    assert sum(b["posted"] for b in sos_json("wallet", "list", *kernel, cwd=tmp_path)) == 0


def test_redis_url(tmp_path: Path, redis_url: str) -> None:
    tenant = _unique("cli")
    kernel = ("--url", redis_url, "--tenant", tenant)
    sos("tenant", "create", tenant, "--url", redis_url, cwd=tmp_path)
    inbox = f"agent:{_unique('bob')}"
    sent = sos_json("send", "agent:alice", inbox, "over redis", *kernel, cwd=tmp_path, process=True)
    rows = [json.loads(line) for line in sos("history", inbox, "--json", *kernel, cwd=tmp_path).stdout.splitlines()]
    assert [r["message"]["message_id"] for r in rows] == [sent["message_id"]]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not nested:
        yield " ".join(prefix)
    for action in nested:
        for name, child in action.choices.items():
            yield from _commands(child, (*prefix, name))


def test_every_command_is_documented() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = list(_commands(build_parser()))
    assert len(commands) >= 20
    missing = [c for c in commands if f"sos {c}" not in docs]
    assert not missing, f"docs/cli.md does not document: {missing}"


# -- sos serve, and the same commands over http ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """``sos serve`` as a subprocess, its output in files."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out_path, self.err_path = tmp_path / "serve.out", tmp_path / "serve.err"
        args = ["serve", "--url", f"sqlite:///{tmp_path}/served.db", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sos_kernel", *args],
                cwd=tmp_path,
                env=_env(SOS_ADMIN_TOKEN=ADMIN),
                stdout=out,
                stderr=err,
                text=True,
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"sos serve exited with {self.proc.returncode}: {self.stderr}")
            try:
                if httpx.get(f"{self.url}/health", timeout=POLL_S * 20).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sos serve did not answer /health within {SERVE_START_S} s: {self.stderr}")
            time.sleep(POLL_S)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(SERVE_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(SERVE_STOP_S)
            pytest.fail(f"sos serve ignored SIGTERM for {SERVE_STOP_S} s: {self.stderr}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_serve_and_the_commands_over_http(tmp_path: Path, served: Served) -> None:
    remote = ("--url", served.url)
    assert f"listening on {served.url}" in served.stdout
    failure(*remote, "tenant", "create", "acme", cwd=tmp_path, code="SOS-5001")  # no admin token on this side
    created = sos_json(*remote, "tenant", "create", "acme", "--plan", "growth", cwd=tmp_path, SOS_ADMIN_TOKEN=ADMIN)
    admin = ("--url", served.url, "--token", created["admin_token"])
    alice_token = sos_json(*admin, "token", "issue", "--agent", "agent:alice", cwd=tmp_path)["secret"]
    alice = ("--url", served.url, "--token", alice_token)

    sos(*admin, "wallet", "open", "system:mint", "--allow-negative", cwd=tmp_path)
    sos(*alice, "wallet", "open", "agent:alice", cwd=tmp_path)
    grant = ("wallet", "transfer", "--id", "g-1", "--from", "system:mint", "--to", "agent:alice", "--amount", "5000")
    sos(*admin, *grant, cwd=tmp_path)
    balance = sos_json(*remote, "wallet", "balance", "agent:alice", cwd=tmp_path, SOS_TOKEN=alice_token)
    assert (balance["owner"], balance["posted"], balance["available"]) == ("agent:alice", 5000, 5000)
    failure(*alice, "wallet", "list", cwd=tmp_path, code="SOS-5004")  # an agent token has no ledger:admin

    sent = sos_json(*alice, "send", "agent:alice", "sos:channel:team", "over http", cwd=tmp_path, process=True)
    lines = sos(*alice, "history", "sos:channel:team", "--json", cwd=tmp_path).stdout.splitlines()
    assert [json.loads(line)["message"]["message_id"] for line in lines] == [sent["message_id"]]
    failure(*alice, "send", "agent:bob", "sos:channel:team", "spoofed", cwd=tmp_path, code="SOS-5004")

    tokens = sos_json(*admin, "token", "list", cwd=tmp_path)
    alice_id = next(t["id"] for t in tokens if t["agent"] == "agent:alice")
    sos(*admin, "token", "revoke", alice_id, cwd=tmp_path)
    failure(*alice, "agents", cwd=tmp_path, code="SOS-5002")

    assert served.stop() == 0, served.stderr
    assert "stopped (SIGTERM)" in served.stderr
    assert "Traceback" not in served.stderr


def test_tasks_over_http_act_as_the_tokens_agent(tmp_path: Path, served: Served) -> None:
    created = sos_json("--url", served.url, "tenant", "create", "acme", "--plan", "growth", cwd=tmp_path,
                       SOS_ADMIN_TOKEN=ADMIN)  # fmt: skip
    admin = ("--url", served.url, "--token", created["admin_token"])
    as_ = {
        name: ("--url", served.url, "--token", sos_json(*admin, "token", "issue", "--agent", f"agent:{name}",
                                                       cwd=tmp_path)["secret"])
        for name in ("boss", "worker", "rev")
    }  # fmt: skip
    sos(*admin, "wallet", "open", "system:mint", "--allow-negative", cwd=tmp_path)
    sos(*as_["boss"], "wallet", "open", "agent:boss", cwd=tmp_path)
    sos(*admin, "wallet", "transfer", "--id", "g", "--from", "system:mint", "--to", "agent:boss", "--amount", "900",
        cwd=tmp_path)  # fmt: skip

    create = ("task", "create", "Write the docs", "--id", "docs-1", "--reviewer", "agent:rev", "--bounty", "600")
    task = sos_json(*as_["boss"], *create, cwd=tmp_path)  # funded by the token's agent
    assert (task["status"], task["bounty"], task["funded_by"], task["created_by"]) == (
        "queued", 600, "agent:boss", "agent:boss"
    )  # fmt: skip
    failure(*as_["worker"], "task", "create", "t", "--id", "theft-1", "--reviewer", "agent:rev", "--bounty", "1",
            "--funded-by", "agent:boss", cwd=tmp_path, code="SOS-5004")  # fmt: skip
    failure(*as_["worker"], "task", "claim", "docs-1", "--agent", "agent:boss", cwd=tmp_path, code="SOS-5004")
    claim = sos_json(*as_["worker"], "task", "claim", "docs-1", cwd=tmp_path, process=True)
    assert (claim["agent"], claim["attempt"]) == ("agent:worker", 1)
    failure(*as_["rev"], "task", "claim", "docs-1", cwd=tmp_path, code="SOS-6012")
    evidence = json.dumps({"argv": ["make", "docs"], "exit_status": 0, "output_sha256": "b" * 64, "output_bytes": 9})
    token = ("--claim-token", claim["token"])
    failure(*as_["rev"], "task", "submit", "docs-1", *token, cwd=tmp_path, code="SOS-5004")  # not its claim
    failure(*as_["worker"], "task", "submit", "docs-1", "--claim-token", "1.stale", cwd=tmp_path, code="SOS-6012")
    submitted = sos_json(*as_["worker"], "task", "submit", "docs-1", *token, "--evidence", evidence, "--result",
                         '{"pages": 4}', cwd=tmp_path)  # fmt: skip
    assert (submitted["status"], submitted["result"]) == ("review", {"pages": 4})
    failure(*as_["worker"], "task", "review", "docs-1", "--verdict", "approve", cwd=tmp_path, code="SOS-5004")
    done = sos_json(*as_["rev"], "task", "review", "docs-1", "--verdict", "approve", cwd=tmp_path)
    assert (done["status"], done["outcome"], done["assignee"]) == ("done", "approved", "agent:worker")
    assert sos_json(*as_["worker"], "wallet", "balance", "agent:worker", cwd=tmp_path)["available"] == 600
    board = sos_json(*as_["rev"], "task", "board", cwd=tmp_path)
    assert board["columns"]["done"] == {"count": 1, "bounty": {"USD": 600}, "tasks": ["docs-1"]}
    assert re.search(r"^done\s+1\s+600 USD\s+docs-1$", sos(*as_["rev"], "task", "board", cwd=tmp_path).stdout, re.M)
    failure("--url", served.url, "task", "board", cwd=tmp_path, code="SOS-5001")  # no token
    assert served.stop() == 0, served.stderr
    assert "Traceback" not in served.stderr


# -- the README's quickstart -----------------------------------------------------------------------------------


def _quickstart() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_quickstart_commands_are_the_ci_ones() -> None:
    install_and_demo, run_ci = _quickstart()
    assert install_and_demo == "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/sos demo"
    assert run_ci == "bash .ci/run"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in ("pip install -q -e '.[dev,server]'", "ruff check . && ruff format --check .", "mypy", "pytest"):
        assert step in ci, step


@pytest.mark.slow
def test_readme_quickstart_in_a_fresh_venv(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    junk = shutil.ignore_patterns(".venv", ".git", ".nox", "*cache*", "__pycache__", "*.db*", "build", "dist")
    shutil.copytree(ROOT, clone, ignore=junk)
    # the README's `python3` is the interpreter running this suite, whatever else is on PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(getattr(sys, "_base_executable", sys.executable))
    path = os.pathsep.join(
        [str(bin_dir), *(p for p in os.environ["PATH"].split(os.pathsep) if p != str(Path(sys.executable).parent))]
    )
    env = {k: v for k, v in _env(PATH=path).items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    install_and_demo = _quickstart()[0]
    result = subprocess.run(
        ["bash", "-c", install_and_demo], cwd=clone, env=env, capture_output=True, text=True, timeout=README_INSTALL_S
    )
    assert result.returncode == 0, result.stderr
    assert "(double entry: always 0)" in result.stdout
    assert (clone / "sos.db").exists()
    where = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", "import sos_kernel; print(sos_kernel.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_S,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(clone / ".venv")  # installed, not the working tree


# -- a new user's first hour: commands that never guess -----------------------------------------------------------


def test_read_only_commands_never_create_a_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    for command in (("agents",), ("wallet", "list"), ("history", "agent:bob"), ("skills", "list"), ("token", "list")):
        result = failure(*command, "--url", url, cwd=tmp_path, code="SOS-4040")
        assert "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()
    sos("send", "agent:alice", "agent:bob", "hi", "--url", url, cwd=tmp_path)  # a write creates it
    assert (tmp_path / "no" / "such" / "dir" / "x.db").exists()


def test_an_unknown_tenant_is_refused_with_the_closest(tmp_path: Path) -> None:
    url = ("--url", f"sqlite:///{tmp_path}/t.db")
    sos("tenant", "create", "acme", *url, cwd=tmp_path)
    for command in (("send", "agent:a", "agent:b", "hi"), ("agents",)):
        result = failure(*command, *url, "--tenant", "acmee", cwd=tmp_path, code="SOS-4040")
        assert result.stderr.startswith("SOS-4040 no tenant 'acmee'; did you mean 'acme'?")
    assert sos("history", "agent:b", *url, "--tenant", "acme", cwd=tmp_path).stdout.strip() == "(no messages)"


def test_tail_watches_without_consuming_and_take_consumes(tmp_path: Path) -> None:
    url = ("--url", f"sqlite:///{tmp_path}/tail.db")
    sos("send", "agent:alice", "agent:bob", "first", *url, cwd=tmp_path)
    watched = sos("tail", "agent:bob", "--count", "1", *url, cwd=tmp_path, process=True).stdout.splitlines()
    assert watched[0].split()[:2] == ["POSITION", "TYPE"]
    assert watched[1].endswith("first")
    again = sos("tail", "agent:bob", "--json", "--timeout", "0.5", *url, cwd=tmp_path).stdout.splitlines()
    assert [json.loads(line)["message"]["payload"]["text"] for line in again] == ["first"]  # nothing was taken
    taken = sos("tail", "agent:bob", "--take", "--json", "--timeout", "0.5", *url, cwd=tmp_path).stdout.splitlines()
    assert [json.loads(line)["message"]["payload"]["text"] for line in taken] == ["first"]
    assert sos("tail", "agent:bob", "--take", "--timeout", "0.5", *url, cwd=tmp_path).stdout.splitlines()[1:] == []
    failure("tail", "agent:bob", "--group", "g", *url, cwd=tmp_path, code="SOS-4005")


def test_admin_token_goes_before_or_after_the_command(tmp_path: Path) -> None:
    before = build_parser().parse_args(["--admin-token", "a", "tenant", "create", "acme"])
    after = build_parser().parse_args(["tenant", "create", "acme", "--admin-token", "a"])
    assert before.admin_token == after.admin_token == "a"
    # an embedded kernel is trusted: the flag is refused by the command, not by the parser
    failure("--admin-token", "a", "tenant", "create", "acme", "--url", "memory://", cwd=tmp_path, code="SOS-4005")
    failure("--admin-token", "a", "agents", "--url", "memory://", cwd=tmp_path, code="SOS-4005")


def test_history_has_a_header_and_receipts_say_what_they_acknowledge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    tenant = sos_json("demo", "--quiet", "--url", url, cwd=tmp_path)["tenant"]
    lines = sos("history", "agent:alice", "--url", url, "--tenant", tenant, cwd=tmp_path).stdout.splitlines()
    assert lines[0].split() == ["POSITION", "TYPE", "SOURCE", "->", "TARGET", "TEXT"]
    receipts = [line for line in lines if " receipt " in line]
    assert receipts
    assert all(re.search(r"(delivered|read|processed) receipt for [0-9a-f]{8}$", r) for r in receipts)


def test_catalogue_prints_plain_text(tmp_path: Path) -> None:
    out = sos("catalogue", cwd=tmp_path, process=True).stdout
    assert "``" not in out
    assert ":class:" not in out


def test_the_demo_says_where_its_data_went_and_agents_can_be_registered(tmp_path: Path) -> None:
    url = ("--url", f"sqlite:///{tmp_path}/sos.db")
    report = sos("demo", *url, cwd=tmp_path).stdout
    tenant = re.search(r"data is in tenant (demo-[0-9a-f]+)", report)
    assert tenant is not None
    assert f"--tenant {tenant.group(1)} agents" in report
    empty = sos("agents", *url, cwd=tmp_path)
    assert "(no agents)" in empty.stdout
    assert tenant.group(1) in empty.stderr
    registered = sos("agent", "register", "agent:dave", "--role", "specialist", "--skill", "review", *url, cwd=tmp_path)
    assert registered.stdout.startswith("registered agent:dave")
    assert [a["card"]["skills"] for a in sos_json("agents", *url, cwd=tmp_path)] == [["review"]]
    failure("agent", "register", "dave", *url, cwd=tmp_path, code="SOS-4005")


def _readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(heading) :]
    return after[after.index("```bash\n") + len("```bash\n") : after.index("```", after.index("```bash\n") + 7)]


def test_the_readme_command_line_flow_runs_as_written(tmp_path: Path) -> None:
    block = _readme_block("## The command line")
    port = str(_free_port())
    # the install line is what the suite's environment already did; the port is a free one
    script = "\n".join(line for line in block.splitlines() if ".venv/bin/pip" not in line).replace("6060", port)
    env = _env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_S * 2
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"agent:alice\s+USD\s+0\s+0\s+0", result.stdout), result.stdout
    assert "(no agents)" in result.stdout
