"""The in-process bus against its peers, in one interleaved run: ``nox -s bench_peers`` installs them.

- throughput, one producer and one consumer, ~400-byte send messages: our memory bus publish → deliver → ack
  (validated on publish and on delivery, acked), against amb-core's ``MessageBus`` publish → handler
  (in-memory broker, at most once, no ack) and autogen-core's ``SingleThreadedAgentRuntime`` publish → handler;
- ask/reply round trip: our memory ``bus.ask`` to a responder subscribed in the same process, against amb-core's
  direct ``request``/``reply``.

A peer that is not installed is named, with the command that installs it; the peers are no dependency of the
kernel (``nox -s bench_peers`` puts them in that session's own environment).
"""

import statistics
import time
from dataclasses import dataclass
from typing import Any

import anyio

import sos_kernel

from .bench_bus import messages

ROUNDS = 3
N_MESSAGES = 5000
N_ASKS = 500
TEXT = "x" * 230


async def ours_throughput() -> float:
    """Messages per second through publish → deliver → ack on ``memory://``."""
    data = messages(N_MESSAGES, target="agent:sink")
    async with sos_kernel.open("memory://") as kernel, kernel.bus.subscribe("agent:sink", prefetch=64) as sub:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                for _ in range(N_MESSAGES):
                    d = await sub.receive()
                    assert d is not None
                    await d.ack()

            tg.start_soon(consume)
            for item in data:
                await kernel.bus.publish(item)
        return N_MESSAGES / (time.perf_counter() - started)


async def ours_ask() -> float:
    """Median seconds of a memory ``bus.ask`` round trip."""
    out: list[float] = []
    async with sos_kernel.open("memory://") as kernel, anyio.create_task_group() as tg:

        async def oracle() -> None:
            async with kernel.bus.subscribe("agent:oracle") as sub:
                for _ in range(N_ASKS):
                    d = await sub.receive()
                    assert d is not None
                    await kernel.bus.reply(d.message, "42")
                    await d.ack()

        tg.start_soon(oracle)
        for i in range(N_ASKS):
            started = time.perf_counter()
            await kernel.bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=30)
            out.append(time.perf_counter() - started)
    return statistics.median(out)


async def amb_throughput() -> float:
    """Messages per second through amb-core publish → handler (in-memory broker)."""
    from amb_core import InMemoryBroker, MessageBus

    done = anyio.Event()
    seen = [0]

    async def handler(message: Any) -> None:
        seen[0] += 1
        if seen[0] == N_MESSAGES:
            done.set()

    async with MessageBus(InMemoryBroker()) as bus:
        await bus.subscribe("sink", handler)
        started = time.perf_counter()
        for _ in range(N_MESSAGES):
            await bus.publish("sink", {"source": "agent:producer", "text": TEXT}, sender="agent:producer")
        await done.wait()
        return N_MESSAGES / (time.perf_counter() - started)


async def amb_ask() -> float:
    """Median seconds of amb-core's direct request/reply."""
    from amb_core import InMemoryBroker, MessageBus

    out: list[float] = []
    async with MessageBus(InMemoryBroker()) as bus:

        async def answer(message: Any) -> None:
            if message.correlation_id and message.payload.get("q") is not None:
                await bus.reply(message, {"a": "42"})

        await bus.subscribe("oracle", answer)
        for i in range(N_ASKS):
            started = time.perf_counter()
            await bus.request("oracle", {"q": f"q{i}"}, timeout=30)
            out.append(time.perf_counter() - started)
    return statistics.median(out)


@dataclass
class _Note:
    source: str
    text: str


async def autogen_throughput() -> float:
    """Messages per second through autogen-core's single-threaded runtime, publish → handler."""
    from autogen_core import (
        MessageContext,
        RoutedAgent,
        SingleThreadedAgentRuntime,
        TopicId,
        TypeSubscription,
        message_handler,
    )

    seen = [0]

    class Sink(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("sink")

        @message_handler
        async def on_note(self, message: _Note, ctx: MessageContext) -> None:
            seen[0] += 1

    runtime = SingleThreadedAgentRuntime()
    await Sink.register(runtime, "sink", Sink)
    await runtime.add_subscription(TypeSubscription(topic_type="sink", agent_type="sink"))
    runtime.start()
    started = time.perf_counter()
    for _ in range(N_MESSAGES):
        await runtime.publish_message(_Note("agent:producer", TEXT), TopicId("sink", "default"))
    await runtime.stop_when_idle()
    if seen[0] != N_MESSAGES:
        raise RuntimeError(f"autogen-core delivered {seen[0]} of {N_MESSAGES}")
    return N_MESSAGES / (time.perf_counter() - started)


async def _median(fn: Any) -> float | str:
    try:
        return statistics.median([await fn() for _ in range(ROUNDS)])
    except ImportError as exc:
        return f"not installed ({exc.name}): nox -s bench_peers installs it"


async def run() -> list[str]:
    """Every case, interleaved round by round; the table's lines."""
    ours_t, amb_t, autogen_t, ours_a, amb_a = (
        await _median(ours_throughput),
        await _median(amb_throughput),
        await _median(autogen_throughput),
        await _median(ours_ask),
        await _median(amb_ask),
    )
    lines = [f"{'in-process, one producer/consumer':<40} {'msg/s':>10} {'ours / peer':>12}"]
    lines.append(f"{'sos-kernel publish→deliver→ack':<40} {ours_t:>10,.0f}")
    for name, value in (("amb-core publish→handler", amb_t), ("autogen-core publish→handler", autogen_t)):
        if isinstance(value, str) or isinstance(ours_t, str):
            lines.append(f"{name:<40} {value}")
        else:
            lines.append(f"{name:<40} {value:>10,.0f} {ours_t / value:>11.2f}x")
    lines.append(f"{'ask/reply round trip (median)':<40} {'µs':>10} {'peer / ours':>12}")
    lines.append(f"{'sos-kernel memory bus.ask':<40} {ours_a * 1e6:>10.1f}" if not isinstance(ours_a, str) else "")
    if isinstance(amb_a, str) or isinstance(ours_a, str):
        lines.append(f"{'amb-core request/reply':<40} {amb_a}")
    else:
        lines.append(f"{'amb-core request/reply':<40} {amb_a * 1e6:>10.1f} {amb_a / ours_a:>11.2f}x")
    return lines


def main() -> None:
    """Run every case and print the table."""
    for line in anyio.run(run):
        print(line)


if __name__ == "__main__":
    main()
