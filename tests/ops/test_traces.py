"""Spans with the OpenTelemetry SDK's in-memory exporter: a publish and its delivery join one trace."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import sos_kernel
from sos_kernel import _trace
from sos_kernel.contracts import WakeMessage
from sos_kernel.ops import CallableAction, WakeConfig, WakeRunner
from sos_kernel.server import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = _trace.use_provider(provider)
    try:
        yield provider, exporter
    finally:
        _trace.use_provider(previous)
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_publish_and_delivery_join_the_publishers_trace(
    kernel: sos_kernel.Kernel, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with provider.get_tracer("app").start_as_current_span("app.request") as outer:
        await kernel.bus.send("agent:a", "agent:b", "hello")
    trace_id = outer.get_span_context().trace_id
    async with kernel.bus.subscribe("agent:b") as sub:
        delivery = await sub.receive(timeout_s=5)
        assert delivery is not None
        await delivery.ack()
    assert delivery.message.trace_id == f"{trace_id:032x}"  # the envelope carries the trace
    (publish,) = named(exporter, "sos.bus.publish")
    (deliver,) = named(exporter, "sos.bus.deliver")
    assert publish.context.trace_id == deliver.context.trace_id == trace_id
    assert publish.parent.span_id == outer.get_span_context().span_id
    assert deliver.attributes["sos.message_id"] == delivery.message.message_id
    assert "hello" not in str([dict(s.attributes or {}) for s in exporter.get_finished_spans()])


async def test_a_traceparent_over_http_reaches_the_wake_runner(
    kernel: sos_kernel.Kernel, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = spans
    _, admin = await kernel.tenants.create("default", "scale")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    app = create_app(kernel)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sos.test") as http:
            wake = WakeMessage(source="agent:boss", target="agent:worker", payload={"text": "go"})
            answer = await http.post(
                "/v1/bus/publish",
                json={"message": wake.to_wire()},
                headers={"authorization": f"Bearer {admin}", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            assert answer.status_code == 200, answer.text
    finally:
        await app.state.sos.aclose()
    runner = WakeRunner(kernel, CallableAction(lambda job: None), WakeConfig(agents=("agent:worker",), count=1))
    await runner.run()
    (route,) = named(exporter, "sos.http.bus.publish")
    assert route.parent.span_id == 0x00F067AA0BA902B7  # the caller's span, from the traceparent header
    in_trace = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    publishes = [s for s in in_trace if s.name == "sos.bus.publish"]
    assert next(p.parent.span_id for p in publishes) == route.context.span_id
    assert len(publishes) == 3  # the wake, then the runner's evidence and receipt, in the same trace
    assert {s.name for s in in_trace} >= {"sos.bus.deliver", "sos.wake.run"}


async def test_a_remote_clients_span_continues_on_the_server(
    kernel: sos_kernel.Kernel, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    from mumega_sdk import MumegaClient

    provider, exporter = spans
    _, admin = await kernel.tenants.create("default", "scale")
    app = create_app(kernel)
    try:
        async with MumegaClient("http://sos.test", admin, transport=httpx.ASGITransport(app)) as client:
            with provider.get_tracer("app").start_as_current_span("app.request") as outer:
                await client.bus.send("agent:a", "agent:b", "hi")
            (delivered,) = await client.bus.history("agent:b")
    finally:
        await app.state.sos.aclose()
    trace_id = outer.get_span_context().trace_id
    assert delivered.trace_id == f"{trace_id:032x}"
    (route,) = named(exporter, "sos.http.bus.send")
    assert route.context.trace_id == trace_id
    assert route.parent.span_id == outer.get_span_context().span_id


async def test_tracing_turned_on_after_the_kernel_opened_and_published_traces_the_next_publish(
    kernel: sos_kernel.Kernel,
) -> None:
    await kernel.bus.send("agent:a", "agent:b", "untraced")  # decided once: no provider yet
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = _trace.use_provider(provider)
    try:
        await kernel.bus.send("agent:a", "agent:b", "traced")
    finally:
        _trace.use_provider(previous)
        provider.shutdown()
    assert len(named(exporter, "sos.bus.publish")) == 1
    await kernel.bus.send("agent:a", "agent:b", "untraced again")  # switched off at once too
    assert len(named(exporter, "sos.bus.publish")) == 1


GLOBAL_PROVIDER_LATER = textwrap.dedent(
    """
    import anyio
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import sos_kernel
    from sos_kernel import _trace


    async def main() -> None:
        exporter = InMemorySpanExporter()
        async with sos_kernel.open("memory://") as kernel:
            await kernel.bus.send("agent:a", "agent:b", "untraced")
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)  # once per process: hence a process of its own
            await anyio.sleep(_trace.TRACING_RECHECK_S)
            await kernel.bus.send("agent:a", "agent:b", "traced")
        print(sorted(s.name for s in exporter.get_finished_spans()))


    anyio.run(main)
    """
)


def test_a_global_provider_set_after_the_kernel_opened_is_used_within_tracing_recheck_s() -> None:
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_LATER], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['sos.bus.publish']"
