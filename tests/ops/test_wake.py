"""The wake runner, with real subprocesses and a real HTTP server, on every backend and through the client."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from sos_kernel.contracts import EvidenceMessage, ReceiptMessage, SendMessage, WakeMessage
from sos_kernel.errors import InvalidArgument
from sos_kernel.ops import CallableAction, CommandAction, Job, WakeConfig, WakeRunner, WebhookAction, verify_webhook

pytestmark = pytest.mark.anyio

BOSS = "agent:boss"
WORKER = "agent:worker"
PY = sys.executable


def wake(text: str = "build it") -> WakeMessage:
    return WakeMessage(source=BOSS, target=WORKER, payload={"text": text})


async def reports(api: Any, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The boss's first ``count`` evidence and receipt messages, waiting for them."""
    with anyio.fail_after(timeout_s):
        while True:
            found = [m for m in await api.bus.history(BOSS) if isinstance(m, EvidenceMessage | ReceiptMessage)]
            if len(found) >= count:
                return found
            await anyio.sleep(0.05)


async def run(api: Any, action: Any, **config: Any) -> WakeRunner:
    runner = WakeRunner(api, action, WakeConfig(agents=(WORKER,), **{"backoff_s": 0.0, **config}))
    with anyio.fail_after(30):
        await runner.run()
    return runner


async def test_success_runs_the_command_with_the_message_and_reports(api: Any) -> None:
    message = wake("hello")
    await api.bus.publish(message)
    script = (
        "import json,os,sys; m=json.load(sys.stdin); print(m['payload']['text'], os.environ['SOS_IDEMPOTENCY_KEY'])"
    )
    runner = await run(api, CommandAction([PY, "-c", script]), count=1)
    evidence, receipt = sorted(await reports(api, 2), key=lambda m: m.type)
    expected = f"hello {message.message_id}\n".encode()
    assert evidence.payload.exit_status == 0
    assert evidence.payload.output_sha256 == hashlib.sha256(expected).hexdigest()
    assert evidence.payload.output_excerpt == expected.decode()
    assert evidence.payload.command_message_id == message.message_id
    assert evidence.source == WORKER
    assert receipt.payload.kind == "processed"
    assert receipt.payload.message_id == message.message_id
    assert (runner.succeeded, runner.failed) == (1, 0)
    assert await api.bus.dead_letters(WORKER, group="wake") == []


async def test_no_agent_can_publish_the_runner_s_report_ids_first(api: Any) -> None:
    message = wake()
    guessable = uuid.UUID("6f1d3c52-0a8e-4f5e-9a57-3b0f0c4d8e21")  # report ids were once uuid5 under this
    for what in ("evidence/1", "processed"):
        squat = uuid.uuid5(guessable, f"{message.message_id}/{what}")
        await api.bus.publish(SendMessage(message_id=str(squat), source=BOSS, target=BOSS, payload={"text": "x"}))
    await api.bus.publish(message)
    await run(api, CommandAction([PY, "-c", "pass"]), count=1)
    found = await reports(api, 2)
    assert sorted(m.type for m in found) == ["evidence", "receipt"]


async def test_the_agents_own_inbox_still_gets_the_message(api: Any) -> None:
    message = wake()
    await api.bus.publish(message)
    await run(api, CommandAction([PY, "-c", "pass"]), count=1)
    async with api.bus.subscribe(WORKER) as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        assert delivery.message.message_id == message.message_id
        await delivery.ack()


async def test_failure_retries_then_dead_letters_with_the_reason(api: Any) -> None:
    message = wake()
    await api.bus.publish(message)
    runner = await run(
        api, CommandAction([PY, "-c", "raise SystemExit(3)"]), attempts=2, count=2, visibility_timeout_s=1.0
    )
    found = await reports(api, 3)
    evidence = [m for m in found if isinstance(m, EvidenceMessage)]
    assert [e.payload.exit_status for e in evidence] == [3, 3]
    rejected = [m for m in found if isinstance(m, ReceiptMessage)]
    assert [r.payload.kind for r in rejected] == ["rejected"]
    assert "exit status 3" in (rejected[0].payload.reason or "")
    assert runner.failed == 2
    with anyio.fail_after(10):
        while not (dead := await api.bus.dead_letters(WORKER, group="wake")):
            async with api.bus.subscribe(WORKER, group="wake", max_deliveries=2, visibility_timeout_s=1) as sub:
                got = await sub.receive(timeout_s=0.2)  # a hand-out buries the exhausted message
                assert got is None
    assert dead[0].message.message_id == message.message_id
    # the last run's failure (as given, or named as an earlier delivery's when a hand-out was lost in a stop)
    assert dead[0].reason.endswith("exit status 3")


async def test_a_timed_out_command_dead_letters_with_its_timeout(api: Any) -> None:
    await api.bus.publish(wake())
    script = "import sys; print('secret output'); sys.stdout.flush(); import time; time.sleep(30)"
    await run(api, CommandAction([PY, "-c", script], timeout_s=0.5), attempts=1, count=1, visibility_timeout_s=1.0)
    with anyio.fail_after(10):
        while not (dead := await api.bus.dead_letters(WORKER, group="wake")):
            async with api.bus.subscribe(WORKER, group="wake", max_deliveries=1, visibility_timeout_s=1) as sub:
                assert await sub.receive(timeout_s=0.2) is None
    assert dead[0].reason.endswith("timed out after 0.5 s")
    assert "secret" not in dead[0].reason


async def test_timeout_kills_the_command_and_its_children(api: Any, tmp_path: Path) -> None:
    await api.bus.publish(wake())
    marker = tmp_path / "child.pid"
    action = CommandAction(f"sleep 30 & echo $! > {marker}; wait", shell=True, timeout_s=0.5)
    await run(api, action, attempts=1, count=1)
    (evidence,) = [m for m in await reports(api, 2) if isinstance(m, EvidenceMessage)]
    assert evidence.payload.exit_status == -signal.SIGKILL
    child = int(marker.read_text())
    with anyio.fail_after(5):
        while _alive(child):  # noqa: ASYNC110 (a process exit has no event to await)
            await anyio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_the_runners_credentials_never_reach_the_command(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOS_TOKEN", "sk-default-" + "a" * 32)
    await api.bus.publish(wake())
    script = "import os; print(os.environ.get('SOS_TOKEN', 'none'))"
    await run(api, CommandAction([PY, "-c", script]), count=1)
    (evidence,) = [m for m in await reports(api, 2) if isinstance(m, EvidenceMessage)]
    assert evidence.payload.output_excerpt == "none\n"


async def test_a_callable_action_and_its_exception(api: Any) -> None:
    seen: list[str] = []

    async def work(job: Job) -> str:
        seen.append(job.idempotency_key)
        if len(seen) == 1:
            raise RuntimeError("flaky")
        return "done"

    message = wake()
    await api.bus.publish(message)
    runner = await run(api, CallableAction(work), count=2)
    assert seen == [message.message_id, message.message_id]
    assert (runner.succeeded, runner.failed) == (1, 1)


async def test_other_types_are_acked_not_acted_on(api: Any) -> None:
    await api.bus.send(BOSS, WORKER, "just text")
    await api.bus.publish(wake())
    calls: list[str] = []
    await run(api, CallableAction(lambda job: calls.append(job.message.type)), count=1)
    assert calls == ["wake"]


def test_config_is_checked() -> None:
    with pytest.raises(InvalidArgument):
        WakeConfig(agents=("sos:channel:x",))
    with pytest.raises(InvalidArgument):
        WakeConfig(agents=(WORKER,), types=frozenset({"announce"}))
    with pytest.raises(InvalidArgument):
        WakeConfig(agents=(WORKER,), concurrency=0)
    with pytest.raises(InvalidArgument):
        CommandAction("echo hi; rm -rf /", shell=False, timeout_s=0)
    with pytest.raises(InvalidArgument):
        WebhookAction("http://127.0.0.1:1/", "short")


# -- webhooks against a real HTTP server on 127.0.0.1 ------------------------------------------------------------

SECRET = b"s3cret-s3cret-s3cret"


@contextmanager
def receiver(statuses: list[int]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A server answering ``statuses`` in turn (then 200), recording each request and whether it verified."""
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            ok = verify_webhook(SECRET, self.headers["X-SOS-Timestamp"], body, self.headers["X-SOS-Signature"])
            forged = verify_webhook(b"x" * 20, self.headers["X-SOS-Timestamp"], body, self.headers["X-SOS-Signature"])
            got.append(
                {"verified": ok, "forged": forged, "body": json.loads(body), "key": self.headers["Idempotency-Key"]}
            )
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?key=secret", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_webhook_is_signed_retried_and_reported(api: Any) -> None:
    message = wake()
    await api.bus.publish(message)
    with receiver([503, 500]) as (url, got):
        await run(api, WebhookAction(url, SECRET, retries=3, backoff_s=0.01), count=1)
    assert [g["verified"] for g in got] == [True, True, True]
    assert not any(g["forged"] for g in got)
    assert {g["key"] for g in got} == {message.message_id}
    assert got[0]["body"]["message"]["message_id"] == message.message_id
    (evidence,) = [m for m in await reports(api, 2) if isinstance(m, EvidenceMessage)]
    assert evidence.payload.exit_status == 200
    assert evidence.payload.command_line == f"POST {url.split('?')[0]}"  # the query's secret is not shown


async def test_webhook_client_errors_are_not_retried(api: Any) -> None:
    await api.bus.publish(wake())
    with receiver([400, 400]) as (url, got):
        runner = await run(api, WebhookAction(url, SECRET, retries=3, backoff_s=0.01), attempts=1, count=1)
    assert len(got) == 1
    assert runner.failed == 1


# -- the runner process killed mid-action ----------------------------------------------------------------------


def sos(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "sos_kernel", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}
    )


@pytest.mark.slow
async def test_a_killed_runner_is_redelivered_with_the_same_key(tmp_path: Path) -> None:
    import sos_kernel

    url = f"sqlite:///{tmp_path}/sos.db"
    keys = tmp_path / "keys"
    async with sos_kernel.open(url) as kernel:
        message = wake()
        await kernel.bus.publish(message)
        first = sos(
            "wake", "--url", url, "--agent", WORKER, "--shell", "--visibility-timeout", "1",
            "--exec", f'echo "$SOS_IDEMPOTENCY_KEY $$" >> {keys}; exec sleep 30',
        )  # fmt: skip
        try:
            with anyio.fail_after(20):
                while not keys.exists() or not keys.read_text():  # noqa: ASYNC110 (another process writes the file)
                    await anyio.sleep(0.05)
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=10)
        orphan = int(keys.read_text().split()[1])
        os.kill(orphan, signal.SIGKILL)  # the first run's command, left behind by the killed runner
        second = sos(
            "wake",
            "--url",
            url,
            "--agent",
            WORKER,
            "--count",
            "1",
            "--exec",
            f"sh -c 'echo \"$SOS_IDEMPOTENCY_KEY\" >> {keys}'",
        )
        _out, err = second.communicate(timeout=30)
        assert second.returncode == 0, err.decode()
        lines = [line.split()[0] for line in keys.read_text().splitlines()]
        assert lines == [message.message_id, message.message_id]
        evidence = [m for m in await kernel.bus.history(BOSS) if isinstance(m, EvidenceMessage)]
        assert [e.payload.exit_status for e in evidence] == [0]
        assert evidence[0].payload.argv == ["sh", "-c", f'echo "$SOS_IDEMPOTENCY_KEY" >> {keys}']


async def test_concurrency_is_bounded(api: Any) -> None:
    for i in range(6):
        await api.bus.publish(wake(str(i)))
    running, most = 0, 0

    async def work(job: Job) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.05)
        running -= 1

    runner = await run(api, CallableAction(work), concurrency=2, count=6)
    assert runner.succeeded == 6
    assert most == 2


async def test_stop_lets_in_flight_work_finish_within_the_grace(api: Any) -> None:
    await api.bus.publish(wake())
    started = anyio.Event()

    async def work(job: Job) -> None:
        started.set()
        await anyio.sleep(0.2)

    runner = WakeRunner(api, CallableAction(work), WakeConfig(agents=(WORKER,), stop_grace_s=5))
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        await started.wait()
        runner.stop()
    assert runner.succeeded == 1


async def test_stop_past_the_grace_gives_the_message_back(api: Any) -> None:
    message = wake()
    await api.bus.publish(message)
    started = anyio.Event()

    async def stuck(job: Job) -> None:
        started.set()
        await anyio.sleep(30)

    runner = WakeRunner(api, CallableAction(stuck), WakeConfig(agents=(WORKER,), stop_grace_s=0.1))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await started.wait()
            runner.stop()
    seen: list[str] = []
    await run(api, CallableAction(lambda job: seen.append(job.idempotency_key)), count=1)
    assert seen == [message.message_id]  # given back on stop, not after the lease
