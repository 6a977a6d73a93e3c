"""The in-process bus against its peers, in one interleaved run: ``nox -s bench_peers`` installs them.

- throughput, one producer and one consumer, ~400-byte send messages: our memory bus publish → deliver → ack
  (validated on publish, handed to the consumer as the validated message, acked), against amb-core's
  ``MessageBus`` publish → handler (in-memory broker in its default priority mode, at most once, no ack),
  autogen-core's ``SingleThreadedAgentRuntime`` publish → handler, and the raw floor: an anyio memory object
  stream with pydantic validation where a message is sent and where it is received;
- ask/reply round trip: our memory ``bus.ask`` to a responder subscribed in the same process, against amb-core's
  ``request``/``reply`` in both broker modes: the default one (a per-topic worker that polls an empty queue every
  millisecond, so a round trip costs about two polls) and the direct one (``use_priority_delivery=False``: publish
  calls the handlers at once), with a queue bound that 500 asks cannot reach (in that mode amb-core never drains
  its queue, and past 80% of the bound every publish sleeps 10 ms).

Every round runs each case once, in turn; the medians of the rounds are printed, with the CPU time per message
(``time.process_time``, steadier than the wall clock on a shared machine). A peer that is not installed is named,
with the command that installs it; the peers are no dependency of the kernel (``nox -s bench_peers`` puts them in
that session's own environment).
"""

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import TypeAdapter

import sos_kernel
from sos_kernel.contracts import SendMessage

from .bench_bus import messages, stream_floor

ROUNDS = 3
N_MESSAGES = 5000
N_ASKS = 500
TEXT = "x" * 230
STREAM_BUFFER = 64
"""The floor's stream buffer: our consumer's prefetch."""

Sample = tuple[float, float]
"""One case's result: its rate (msg/s) or median round trip (s), and the CPU seconds per message or ask."""


class _Clock:
    """Wall and CPU time from ``start()``."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rate(self, n: int) -> Sample:
        return n / (time.perf_counter() - self.wall), (time.process_time() - self.cpu) / n


async def ours_throughput() -> Sample:
    """Messages per second through publish → deliver → ack on ``memory://``."""
    data, clock = messages(N_MESSAGES, target="agent:sink"), _Clock()
    async with sos_kernel.open("memory://") as kernel, kernel.bus.subscribe("agent:sink", prefetch=64) as sub:
        bus = kernel.bus
        clock.start()
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                for _ in range(N_MESSAGES):
                    d = await sub.receive()
                    assert d is not None
                    await d.ack()

            tg.start_soon(consume)
            for item in data:
                await bus.publish(item)
        return clock.rate(N_MESSAGES)


async def floor_throughput() -> Sample:
    """The raw floor: an anyio memory stream, each message validated by pydantic where it is sent and received."""
    data, clock, adapter = messages(N_MESSAGES, target="agent:sink"), _Clock(), TypeAdapter(SendMessage)
    clock.start()
    await stream_floor(data, STREAM_BUFFER, adapter)
    return clock.rate(N_MESSAGES)


async def ours_ask() -> Sample:
    """Median seconds of a memory ``bus.ask`` round trip."""
    out: list[float] = []
    clock = _Clock()
    async with sos_kernel.open("memory://") as kernel, anyio.create_task_group() as tg:
        bus = kernel.bus

        async def oracle() -> None:
            async with bus.subscribe("agent:oracle") as sub:
                for _ in range(N_ASKS):
                    d = await sub.receive()
                    assert d is not None
                    await bus.reply(d.message, "42")
                    await d.ack()

        tg.start_soon(oracle)
        clock.start()
        for i in range(N_ASKS):
            started = time.perf_counter()
            await bus.ask("agent:alice", "agent:oracle", f"q{i}", timeout_s=30)
            out.append(time.perf_counter() - started)
        return statistics.median(out), clock.rate(N_ASKS)[1]


async def amb_throughput() -> Sample:
    """Messages per second through amb-core publish → handler (in-memory broker, default mode)."""
    from amb_core import InMemoryBroker, MessageBus

    done, clock = anyio.Event(), _Clock()
    seen = [0]

    async def handler(message: Any) -> None:
        seen[0] += 1
        if seen[0] == N_MESSAGES:
            done.set()

    async with MessageBus(InMemoryBroker()) as bus:
        await bus.subscribe("sink", handler)
        clock.start()
        for _ in range(N_MESSAGES):
            await bus.publish("sink", {"source": "agent:producer", "text": TEXT}, sender="agent:producer")
        await done.wait()
        return clock.rate(N_MESSAGES)


async def _amb_ask(**broker: Any) -> Sample:
    from amb_core import InMemoryBroker, MessageBus

    out: list[float] = []
    clock = _Clock()
    async with MessageBus(InMemoryBroker(**broker)) as bus:

        async def answer(message: Any) -> None:
            if message.correlation_id and message.payload.get("q") is not None:
                await bus.reply(message, {"a": "42"})

        await bus.subscribe("oracle", answer)
        clock.start()
        for i in range(N_ASKS):
            started = time.perf_counter()
            await bus.request("oracle", {"q": f"q{i}"}, timeout=30)
            out.append(time.perf_counter() - started)
    return statistics.median(out), clock.rate(N_ASKS)[1]


async def amb_ask() -> Sample:
    """Median seconds of amb-core's request/reply, broker in its default (priority, polling) mode."""
    return await _amb_ask()


async def amb_ask_direct() -> Sample:
    """Median seconds of amb-core's direct request/reply (handlers called by publish), queue bound out of reach."""
    return await _amb_ask(use_priority_delivery=False, max_queue_size=4 * N_ASKS)


@dataclass
class _Note:
    source: str
    text: str


async def autogen_throughput() -> Sample:
    """Messages per second through autogen-core's single-threaded runtime, publish → handler."""
    from autogen_core import (
        MessageContext,
        RoutedAgent,
        SingleThreadedAgentRuntime,
        TopicId,
        TypeSubscription,
        message_handler,
    )

    seen, clock = [0], _Clock()

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
    clock.start()
    for _ in range(N_MESSAGES):
        await runtime.publish_message(_Note("agent:producer", TEXT), TopicId("sink", "default"))
    await runtime.stop_when_idle()
    if seen[0] != N_MESSAGES:
        raise RuntimeError(f"autogen-core delivered {seen[0]} of {N_MESSAGES}")
    return clock.rate(N_MESSAGES)


Case = Callable[[], Awaitable[Sample]]
THROUGHPUT: dict[str, Case] = {
    "sos-kernel publish→deliver→ack": ours_throughput,
    "amb-core publish→handler": amb_throughput,
    "autogen-core publish→handler": autogen_throughput,
    "anyio stream + pydantic (floor)": floor_throughput,
}
ASK: dict[str, Case] = {
    "sos-kernel memory bus.ask": ours_ask,
    "amb-core request/reply, default broker": amb_ask,
    "amb-core request/reply, direct broker": amb_ask_direct,
}


async def interleaved(cases: dict[str, Case]) -> dict[str, Sample | str]:
    """Every case once per round, in turn, for ``ROUNDS`` rounds; each one's medians (or why it did not run)."""
    samples: dict[str, list[Sample]] = {name: [] for name in cases}
    missing: dict[str, str] = {}
    for _ in range(ROUNDS):
        for name, case in cases.items():
            if name in missing:
                continue
            try:
                samples[name].append(await case())
            except ImportError as exc:
                missing[name] = f"not installed ({exc.name}): nox -s bench_peers installs it"
    return {
        name: missing.get(name)
        or (statistics.median(s[0] for s in samples[name]), statistics.median(s[1] for s in samples[name]))
        for name in cases
    }


def _table(results: dict[str, Sample | str], head: str, unit: str, scale: float, ours_over_peer: bool) -> list[str]:
    ours = next(iter(results.values()))
    ratio = "ours / peer" if ours_over_peer else "peer / ours"
    lines = [f"{head:<40} {unit:>10} {'cpu µs':>8} {ratio:>12}"]
    for name, value in results.items():
        if isinstance(value, str):
            lines.append(f"{name:<40} {value}")
            continue
        line = f"{name:<40} {value[0] * scale:>10,.{1 if scale > 1 else 0}f} {value[1] * 1e6:>8.1f}"
        if value is not ours and not isinstance(ours, str):
            line += f" {(ours[0] / value[0] if ours_over_peer else value[0] / ours[0]):>11.2f}x"
        lines.append(line)
    return lines


async def run() -> list[str]:
    """Every case, interleaved round by round; the table's lines."""
    rates = await interleaved(THROUGHPUT)
    asks = await interleaved(ASK)
    return [
        *_table(rates, "in-process, one producer/consumer", "msg/s", 1, True),
        *_table(asks, "ask/reply round trip (median)", "µs", 1e6, False),
    ]


def main() -> None:
    """Run every case and print the table."""
    for line in anyio.run(run):
        print(line)


if __name__ == "__main__":
    main()
