"""What operations cost on the hot paths, against the same calls without them, measured in the same run (memory).

- ``publish + metrics``: ``bus.publish`` with a :class:`~sos_kernel.ops.metrics.Metrics` attached, against
  ``bus.publish`` with no listener (the kernel as it ships without metrics);
- ``publish + tracing``: ``bus.publish`` with a tracer provider set (SDK, no exporter), against no provider;
- ``wake runner``: messages a :class:`~sos_kernel.ops.WakeRunner` runs a no-op callable for (ack, evidence and a
  processed receipt each), against a bare subscribe-and-ack loop over as many messages.

Rounds are interleaved; each ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import anyio

import sos_kernel
from sos_kernel import _trace
from sos_kernel.contracts import SendMessage, WakeMessage
from sos_kernel.ops import CallableAction, WakeConfig, WakeRunner
from sos_kernel.ops.metrics import Metrics

CALLS = 3000
WAKES = 500
ROUNDS = 5


def _message(i: int) -> SendMessage:
    return SendMessage(source="agent:a", target="agent:b", payload={"text": "hi"})


async def _publish_rate(kernel: sos_kernel.Kernel) -> float:
    messages = [_message(i) for i in range(CALLS)]
    started = time.perf_counter()
    for message in messages:
        await kernel.bus.publish(message)
    return CALLS / (time.perf_counter() - started)


async def _publish(kernel_setup: Callable[[sos_kernel.Kernel], Callable[[], None]]) -> float:
    async with sos_kernel.open("memory://") as kernel:
        undo = kernel_setup(kernel)
        try:
            return await _publish_rate(kernel)
        finally:
            undo()


def _none(kernel: sos_kernel.Kernel) -> Callable[[], None]:
    return lambda: None


def _metrics(kernel: sos_kernel.Kernel) -> Callable[[], None]:
    return Metrics().attach(kernel).detach


def _tracing(kernel: sos_kernel.Kernel) -> Callable[[], None]:
    from opentelemetry.sdk.trace import TracerProvider

    previous = _trace.use_provider(TracerProvider())
    return lambda: _trace.use_provider(previous)


async def _wake_rate() -> float:
    async with sos_kernel.open("memory://") as kernel:
        for _ in range(WAKES):
            await kernel.bus.publish(WakeMessage(source="agent:boss", target="agent:w", payload={"text": "go"}))
        runner = WakeRunner(
            kernel, CallableAction(lambda job: None), WakeConfig(agents=("agent:w",), concurrency=16, count=WAKES)
        )
        started = time.perf_counter()
        await runner.run()
        return WAKES / (time.perf_counter() - started)


async def _ack_rate() -> float:
    async with sos_kernel.open("memory://") as kernel:
        for _ in range(WAKES):
            await kernel.bus.publish(WakeMessage(source="agent:boss", target="agent:w", payload={"text": "go"}))
        started = time.perf_counter()
        async with kernel.bus.subscribe("agent:w", group="wake") as sub:
            for _ in range(WAKES):
                delivery = await sub.receive()
                if delivery is None:
                    raise RuntimeError("the bus gave fewer messages than were published")
                await delivery.ack()
        return WAKES / (time.perf_counter() - started)


async def run() -> list[tuple[str, float, float]]:
    cases: dict[str, tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]] = {
        "publish + metrics": (lambda: _publish(_metrics), lambda: _publish(_none)),
        "publish + tracing": (lambda: _publish(_tracing), lambda: _publish(_none)),
        "wake runner": (_wake_rate, _ack_rate),
    }
    rows = []
    for name, (ours, raw) in cases.items():
        pairs = [(await ours(), await raw()) for _ in range(ROUNDS)]
        rows.append((name, statistics.median(p[0] for p in pairs), statistics.median(p[0] / p[1] for p in pairs)))
    return rows


def main() -> None:
    """Print each case's rate and its ratio to the same work without it."""
    print(f"{CALLS} publishes / {WAKES} wakes x {ROUNDS} interleaved rounds, memory backend; with / without")
    for name, rate, ratio in anyio.run(run):
        print(f"{name:20} {rate:>10,.0f}/s  {ratio:.2f}x")


if __name__ == "__main__":
    main()
