"""JSON logs: one event per line, with tenant, agent, operation, message id and trace id; no token, no text."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel import _trace
from sos_kernel.contracts import WakeMessage
from sos_kernel.errors import Forbidden
from sos_kernel.ops import CommandAction, WakeConfig, WakeRunner
from sos_kernel.ops.logs import JsonFormatter, configure_logging
from sos_kernel.server import create_app

pytestmark = pytest.mark.anyio

SECRET_TEXT = "TOPSECRET-PAYLOAD-TEXT"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("sos_kernel")
    level = logger.level
    configure_logging("INFO", stream)
    provider = TracerProvider()
    previous = _trace.use_provider(provider)
    try:
        yield stream
    finally:
        _trace.use_provider(previous)
        provider.shutdown()
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(level)


async def test_logs_carry_ids_and_never_tokens_or_text(kernel: sos_kernel.Kernel, lines: io.StringIO) -> None:
    _, admin = await kernel.tenants.create("default", "scale")
    issued = await kernel.tenant("default").tokens.issue(agent="agent:x")
    app = create_app(kernel)
    transport = httpx.ASGITransport(app)
    try:
        async with MumegaClient("http://sos.test", admin, transport=transport) as client:
            await client.bus.send("agent:boss", "agent:worker", SECRET_TEXT)
            wake = WakeMessage(source="agent:boss", target="agent:worker", payload={"text": SECRET_TEXT})
            await client.bus.publish(wake)
            action = CommandAction([sys.executable, "-c", "import sys; sys.stdin.read(); raise SystemExit(1)"])
            runner = WakeRunner(client, action, WakeConfig(agents=("agent:worker",), attempts=1, count=1))
            await runner.run()
        async with MumegaClient("http://sos.test", issued.secret, transport=transport) as other:
            with pytest.raises(Forbidden):
                await other.bus.send("agent:y", "agent:z", SECRET_TEXT)
    finally:
        await app.state.sos.aclose()
    text = lines.getvalue()
    records: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    assert SECRET_TEXT not in text
    assert admin not in text
    assert issued.secret not in text
    sends = [r for r in records if r.get("operation") == "bus.send"]
    assert {r["outcome"] for r in sends} == {"ok", "SOS-5004"}
    assert all(r["tenant"] == "default" and len(r["trace_id"]) == 32 for r in sends)
    assert any(r.get("agent") == "agent:x" for r in sends)
    (failed,) = [r for r in records if r.get("operation") == "wake.run"]
    assert failed["message_id"] == wake.message_id
    assert failed["exit_status"] == 1
    assert failed["level"] == "warning"


def test_the_formatter_drops_unlisted_fields_and_masks_secrets() -> None:
    record = logging.LogRecord("sos_kernel.x", logging.INFO, __file__, 1, "got Bearer %s", ("abc.def",), None)
    record.__dict__.update(text=SECRET_TEXT, token="sk-acme-" + "0" * 32, tenant="acme", message_id="m-1")
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "ts": line["ts"],
        "level": "info",
        "logger": "sos_kernel.x",
        "event": "got [redacted]",
        "tenant": "acme",
        "message_id": "m-1",
    }
    leaked = logging.LogRecord("sos_kernel.x", logging.INFO, __file__, 1, "sk-acme-" + "f" * 32, (), None)
    assert "sk-acme" not in JsonFormatter().format(leaked)
