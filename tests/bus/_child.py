"""A bus client run as a separate process by the multi-process tests.

    python _child.py take URL ADDRESS N VT       receive N deliveries without acking, print their ids, READY, hang
    python _child.py drain URL ADDRESS IDLE_S    receive and ack until IDLE_S pass with nothing, print ids
    python _child.py recv URL ADDRESS N          print READY once subscribed, receive and ack N, print ids
    python _child.py publish URL ADDRESS N       publish N send messages, print their ids
    python _child.py share URL ADDRESS IDLE_S K  K consumers of one group: READY once subscribed, then each receives
                                                 and acks until IDLE_S pass with nothing, print ids
    python _child.py takeall URL ADDRESS N VT K  K consumers of one group receive N deliveries in all without acking,
                                                 print their ids, READY, hang

Output lines: "<message_id> <attempt>" for deliveries, the bare id for publishes.
"""

from __future__ import annotations

import contextlib
import sys

import anyio

import sos_kernel


def say(line: str) -> None:
    print(line, flush=True)


async def take(url: str, address: str, n: int, vt: float) -> None:
    async with (
        sos_kernel.open(url) as kernel,
        kernel.bus.subscribe(address, consumer="victim", visibility_timeout_s=vt, prefetch=4) as sub,
    ):
        for _ in range(n):
            d = await sub.receive()
            assert d is not None
            say(f"{d.message.message_id} {d.attempt}")
        say("READY")
        await anyio.sleep_forever()


async def drain(url: str, address: str, idle_s: float, consumer: str) -> None:
    async with (
        sos_kernel.open(url) as kernel,
        kernel.bus.subscribe(address, consumer=consumer, visibility_timeout_s=1.0) as sub,
    ):
        while (d := await sub.receive(timeout_s=idle_s)) is not None:
            say(f"{d.message.message_id} {d.attempt}")
            await d.ack()


async def recv(url: str, address: str, n: int) -> None:
    async with sos_kernel.open(url) as kernel, kernel.bus.subscribe(address) as sub:
        say("READY")
        for _ in range(n):
            d = await sub.receive()
            assert d is not None
            say(f"{d.message.message_id} {d.attempt}")
            await d.ack()


async def publish(url: str, address: str, n: int) -> None:
    async with sos_kernel.open(url) as kernel:
        for i in range(n):
            receipt = await kernel.bus.send("agent:child", address, f"from child {i}")
            say(receipt.message_id)


async def share(url: str, address: str, idle_s: float, k: int) -> None:
    async with sos_kernel.open(url) as kernel, contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(kernel.bus.subscribe(address, consumer=f"c{i}", visibility_timeout_s=5.0))
            for i in range(k)
        ]
        say("READY")

        async def consume(sub: sos_kernel.Subscription) -> None:
            while (d := await sub.receive(timeout_s=idle_s)) is not None:
                say(f"{d.message.message_id} {d.attempt}")
                await d.ack()

        async with anyio.create_task_group() as tg:
            for sub in subs:
                tg.start_soon(consume, sub)


async def takeall(url: str, address: str, n: int, vt: float, k: int) -> None:
    async with sos_kernel.open(url) as kernel, contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(
                kernel.bus.subscribe(address, consumer=f"victim{i}", visibility_timeout_s=vt, prefetch=4)
            )
            for i in range(k)
        ]
        taken: list[str] = []
        done = anyio.Event()

        async def take(sub: sos_kernel.Subscription) -> None:
            while len(taken) < n:
                d = await sub.receive(timeout_s=0.1)
                if d is not None and len(taken) < n:
                    taken.append(d.message.message_id)
                    say(f"{d.message.message_id} {d.attempt}")
            done.set()

        async with anyio.create_task_group() as tg:
            for sub in subs:
                tg.start_soon(take, sub)
        say("READY")
        await anyio.sleep_forever()


def main() -> None:
    mode, url, address, arg = sys.argv[1:5]
    if mode == "take":
        anyio.run(take, url, address, int(arg), float(sys.argv[5]))
    elif mode == "drain":
        anyio.run(drain, url, address, float(arg), sys.argv[5] if len(sys.argv) > 5 else "rescuer")
    elif mode == "recv":
        anyio.run(recv, url, address, int(arg))
    elif mode == "publish":
        anyio.run(publish, url, address, int(arg))
    elif mode == "share":
        anyio.run(share, url, address, float(arg), int(sys.argv[5]))
    elif mode == "takeall":
        anyio.run(takeall, url, address, int(arg), float(sys.argv[5]), int(sys.argv[6]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
