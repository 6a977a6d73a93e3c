"""``GET /metrics``: parsed with prometheus-client's own parser; counters move with traffic; only the operator reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel.errors import Forbidden
from sos_kernel.ops.metrics import TENANT_LABELS_MAX, Metrics
from sos_kernel.server import create_app
from tests.test_cli import Served

pytestmark = pytest.mark.anyio

ADMIN = "server-admin-token-0123456789"
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: httpx.AsyncClient, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await http.get("http://sos.test/metrics", headers=headers)


@pytest.fixture
async def served_app(kernel: sos_kernel.Kernel) -> AsyncIterator[Any]:
    app = create_app(kernel, admin_token=ADMIN)
    try:
        yield app
    finally:
        await app.state.sos.aclose()


async def test_counters_move_with_traffic(kernel: sos_kernel.Kernel, served_app: Any) -> None:
    _, admin = await kernel.tenants.create("default", "scale")
    transport = httpx.ASGITransport(served_app)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        MumegaClient("http://sos.test", admin, transport=transport) as client,
    ):
        before = samples((await scrape(http)).text)
        ids = [(await client.bus.send("agent:a", "agent:b", f"secret text {i}")).message_id for i in range(3)]
        async with client.bus.subscribe("agent:b") as sub:
            for _ in range(3):
                delivery = await sub.receive(timeout_s=5)
                assert delivery is not None
                await delivery.ack()
        issued = await kernel.tenant("default").tokens.issue(agent="agent:x")
        async with MumegaClient("http://sos.test", issued.secret, transport=transport) as other:
            with pytest.raises(Forbidden):
                await other.bus.send("agent:y", "agent:b", "not mine")
        text = (await scrape(http)).text
    after = samples(text)
    for name, moved in (
        ("sos_messages_published_total", 3),
        ("sos_messages_delivered_total", 3),
        ("sos_messages_acked_total", 3),
        ("sos_denials_total", 1),
    ):
        assert value(after, name, tenant="default") - value(before, name, tenant="default") == moved, name
    count = "sos_request_duration_seconds_count"
    assert (
        value(after, count, operation="bus.send", outcome="ok")
        - value(before, count, operation="bus.send", outcome="ok")
        == 3
    )
    assert not any(i in text for i in ids)  # no message id is a label
    assert "secret text" not in text


async def test_ledger_transfers_are_counted(kernel: sos_kernel.Kernel, served_app: Any) -> None:
    ledger = kernel.ledger
    await ledger.open_account("agent:a", "USD", allow_negative=True)
    await ledger.open_account("agent:b", "USD")
    await ledger.transfer(id="t1", debit="agent:a", credit="agent:b", amount=5, currency="USD")
    with pytest.raises(sos_kernel.errors.InsufficientFunds):
        await ledger.transfer(id="t2", debit="agent:b", credit="agent:a", amount=50, currency="USD")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(served_app)) as http:
        found = samples((await scrape(http)).text)
    assert value(found, "sos_ledger_transfers_total", tenant="default") == 1
    assert value(found, "sos_ledger_transfers_failed_total", tenant="default") == 1


async def test_only_loopback_reads_without_a_metrics_token(served_app: Any) -> None:
    away = httpx.ASGITransport(served_app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=away) as http:
        refused = await scrape(http)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "SOS-5004"


async def test_a_metrics_token_is_needed_from_everywhere_once_set(kernel: sos_kernel.Kernel) -> None:
    app = create_app(kernel, admin_token=ADMIN, metrics_token=METRICS_TOKEN)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as http:
            assert (await scrape(http)).json()["error"]["code"] == "SOS-5001"
            assert (await scrape(http, "sk-default-" + "0" * 32)).json()["error"]["code"] == "SOS-5004"
            assert (await scrape(http, METRICS_TOKEN)).status_code == 200
            assert (await scrape(http, ADMIN)).status_code == 200
    finally:
        await app.state.sos.aclose()


async def test_metrics_can_be_turned_off(kernel: sos_kernel.Kernel) -> None:
    app = create_app(kernel, metrics=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as http:
            assert (await scrape(http)).status_code == 404
    finally:
        await app.state.sos.aclose()


def test_tenant_labels_are_bounded() -> None:
    metrics = Metrics()
    labels = {metrics.tenant_label(f"t{i}") for i in range(TENANT_LABELS_MAX + 50)}
    assert len(labels) == TENANT_LABELS_MAX + 1
    assert "_other" in labels


def test_sos_serve_serves_metrics_with_a_published_counter(tmp_path: Path) -> None:
    served = Served(tmp_path)
    try:
        served.wait_healthy()
        response = httpx.get(f"{served.url}/metrics", timeout=10)
    finally:
        served.stop()
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert any("published" in name for name in names)


async def test_the_watcher_sets_its_gauges(kernel: sos_kernel.Kernel) -> None:
    from sos_kernel.ops import DeadLettersRule, PendingRule, Watcher

    metrics = Metrics()
    await kernel.bus.send("agent:a", "agent:worker", "x")
    async with kernel.bus.subscribe("agent:worker") as sub:
        assert await sub.receive(timeout_s=5) is not None  # one pending, never settled
        rules = [PendingRule(["agent:worker"], pending_max=0), DeadLettersRule(["agent:worker"])]
        await Watcher(kernel, rules, metrics=metrics).evaluate()
    found = samples(metrics.render().decode())
    where = {"tenant": "default", "address": "agent:worker", "group": "inbox"}
    assert value(found, "sos_consumer_pending", **where) == 1
    assert value(found, "sos_dead_letters", **where) == 0
    assert value(found, "sos_alerts_firing", rule="pending_growth") == 1
    assert value(found, "sos_alerts_firing", rule="dead_letters") == 0
