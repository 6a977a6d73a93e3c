"""The names acceptance checks use: ``sos wake --url URL --agent agent:NAME --exec``, ``sos watch --url URL``,
``sos top --once``, against a real ``sos serve`` on 127.0.0.1, and the same commands on an embedded kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import sos_kernel
from sos_kernel.contracts import AgentCard, AlertMessage, EvidenceMessage
from sos_kernel.ops.watch import ALERTS_CHANNEL, KernelWatcher
from tests.test_cli import ADMIN, Served, _env, sos, sos_json

pytestmark = pytest.mark.anyio


@pytest.fixture
def served(tmp_path: Path) -> object:
    server = Served(tmp_path)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_wake_watch_and_top_against_a_server(tmp_path: Path, served: Served) -> None:
    created = sos_json("--url", served.url, "tenant", "create", "acme", cwd=tmp_path, SOS_ADMIN_TOKEN=ADMIN)
    remote = ("--url", served.url, "--token", created["admin_token"])
    sos("agent", "register", "agent:worker", "--role", "executor", *remote, cwd=tmp_path)
    runner = subprocess.Popen(
        [sys.executable, "-m", "sos_kernel", "wake", *remote, "--agent", "agent:worker", "--count", "1",
         "--exec", f"{sys.executable} -c \"import json,sys; print(json.load(sys.stdin)['type'])\""],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        woken = httpx.post(
            f"{served.url}/v1/bus/wake",
            json={"source": "agent:boss", "target": "agent:worker", "text": "go"},
            headers={"authorization": f"Bearer {created['admin_token']}"},
            timeout=10,
        )
        assert woken.status_code == 200, woken.text
        _, err = runner.communicate(timeout=60)
    finally:
        runner.kill()
        runner.communicate()
    assert runner.returncode == 0, err
    rows = [
        json.loads(line) for line in sos("history", "agent:boss", "--json", *remote, cwd=tmp_path).stdout.splitlines()
    ]
    evidence = [r["message"] for r in rows if r["message"]["type"] == "evidence"]
    assert [e["payload"]["exit_status"] for e in evidence] == [0]
    assert evidence[0]["payload"]["output_excerpt"] == "wake\n"

    watched = sos("watch", *remote, "--offline-after", "0", "--once", "--json", cwd=tmp_path).stdout
    (alert,) = [json.loads(line) for line in watched.splitlines()]
    assert alert["target"] == ALERTS_CHANNEL
    assert "agent:worker" in alert["payload"]["text"]
    assert alert["payload"]["state"] == "fired"
    again = sos("watch", *remote, "--offline-after", "0", "--once", "--json", cwd=tmp_path).stdout
    assert again == ""  # the episode is already firing: no second alert

    view = json.loads(sos("top", *remote, "--once", "--json", "--address", "agent:worker", cwd=tmp_path).stdout)
    assert [a["agent"] for a in view["agents"]] == ["agent:worker"]
    assert view["queues"] == [{"address": "agent:worker", "group": "inbox", "pending": 0, "dead_letters": 0}]
    assert [a["subject"] for a in view["alerts"]] == ["agent:worker"]


def test_wake_reads_a_toml_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sos.db"
    config = tmp_path / "wake.toml"
    config.write_text(f'[wake]\nagent = ["agent:worker"]\nargv = ["{sys.executable}", "-c", "pass"]\ncount = 1\n')
    sos("send", "agent:boss", "agent:worker", "not a wake", "--url", url, cwd=tmp_path)
    sos("wake", "--url", url, "--config", str(config), "--types", "send", cwd=tmp_path)
    rows = [
        json.loads(line)
        for line in sos("history", "agent:boss", "--json", "--url", url, cwd=tmp_path).stdout.splitlines()
    ]
    assert [r["message"]["payload"]["exit_status"] for r in rows if r["message"]["type"] == "evidence"] == [0]
    config.write_text("[wake]\nagents = 3\n")
    result = sos("wake", "--url", url, "--config", str(config), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("SOS-4005 unknown key 'agents'")


def test_top_once_on_an_embedded_kernel(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sos.db"
    sos("send", "agent:boss", "agent:worker", "hello", "--url", url, cwd=tmp_path)
    out = sos("top", "--url", url, "--once", "--address", "agent:worker", cwd=tmp_path).stdout
    assert "QUEUES" in out
    assert "agent:worker" in out
    view = json.loads(sos("top", "--url", url, "--once", "--json", "--address", "agent:worker", cwd=tmp_path).stdout)
    assert view["queues"][0]["pending"] == 0


async def test_the_kernel_watcher_watches_every_tenant_apart(tmp_path: Path) -> None:
    async with sos_kernel.open(f"sqlite:///{tmp_path}/sos.db", registry_ttl_s=0.01) as kernel:
        await kernel.tenants.create("acme", "scale")
        card = AgentCard(name="bot", tool="sdk", type="service", role="executor", summary="x")
        await kernel.tenant("acme").registry.register(card)
        import anyio

        await anyio.sleep(0.1)
        sent = await KernelWatcher(kernel).evaluate()
        assert [a.payload.subject for a in sent] == ["agent:bot"]
        acme = [m for m in await kernel.tenant("acme").bus.history(ALERTS_CHANNEL) if isinstance(m, AlertMessage)]
        assert len(acme) == 1
        assert not [
            m for m in await kernel.bus.history(ALERTS_CHANNEL) if isinstance(m, EvidenceMessage | AlertMessage)
        ]
