"""MCP tool calls against the kernel's own paths, measured in the same run.

- streamable HTTP: ``send`` called with the MCP SDK's ``ClientSession`` at ``/mcp`` of a uvicorn server (a
  subprocess, over a kernel on a SQLite file, MCP mounted as ``sos serve`` mounts it), against the REST send of the
  same server (``POST /v1/bus/send`` with a bare ``httpx.AsyncClient``, same token, same body). Target: >= 0.5x.
- stdio: ``send`` called with ``ClientSession`` over ``stdio_client`` to ``sos mcp`` (a subprocess, embedded on a
  SQLite file), against ``session.bus.send`` in this process on a kernel over a SQLite file of its own (no
  transport at all: the floor an MCP call adds its JSON-RPC, pipes and a second process to). For reading.

Sequential round trips, awaited one after the other. Within each of ROUNDS rounds the cases of a pair take turns
BLOCK calls at a time, so a slow moment falls on a case and its floor alike; the ratio is the median over blocks.
The client is pinned to CPU 0 and the servers to CPU 1 where the OS allows it (see bench_remote).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

import sos_kernel

from .bench_remote import KEEP_ALIVE_S, SOURCE, TARGET, _first_line, pin, seed

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3
BLOCK = 20
CALLS_PER_ROUND = 200
"""Calls of each case per round, at most (a round also stops after ROUND_S)."""
ROUND_S = 6.0
WARMUP_N = 20
TARGET_RATIO = 0.5

Call = Callable[[int], Awaitable[Any]]


async def _serve(url: str) -> None:
    import uvicorn

    from sos_kernel.mcp import mount
    from sos_kernel.server import create_app

    async with sos_kernel.open(url) as kernel:
        token = await seed(kernel)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        app = create_app(kernel)
        mount(app)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=KEEP_ALIVE_S
        )
        server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()

        def stop_on_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(setattr, server, "should_exit", True)

        threading.Thread(target=stop_on_eof, daemon=True).start()
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await asyncio.sleep(0.01)
        print(json.dumps({"port": sock.getsockname()[1], "token": token}), flush=True)
        await serving


@contextmanager
def http_server(url: str, cpu: int | None) -> Iterator[tuple[str, str]]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_mcp",
        "--serve",
        url,
        *(["--cpu", str(cpu)] if cpu is not None else []),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        hello = json.loads(_first_line(proc))
        yield f"http://127.0.0.1:{hello['port']}", hello["token"]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _tool_call(session: ClientSession) -> Call:
    async def call(i: int) -> Any:
        result = await session.call_tool("send", {"to": TARGET, "text": f"mcp {i}"})
        if result.is_error:
            raise RuntimeError(str(result.content))

    return call


async def _pair(ours: Call, floor: Call) -> tuple[float, float, float]:
    """Median calls/s of ``ours`` and ``floor`` and the median of their per-block ratios, over ROUNDS rounds."""
    for i in range(WARMUP_N):
        await ours(i)
        await floor(i)
    rates: dict[str, list[float]] = {"ours": [], "floor": []}
    ratios: list[float] = []
    n = 0
    for _ in range(ROUNDS):
        deadline = time.perf_counter() + ROUND_S
        done = 0
        while done < CALLS_PER_ROUND and time.perf_counter() < deadline:
            spent = {}
            for name, call in (("ours", ours), ("floor", floor)):
                started = time.perf_counter()
                for _ in range(BLOCK):
                    n += 1
                    await call(n)
                spent[name] = time.perf_counter() - started
                rates[name].append(BLOCK / spent[name])
            ratios.append(spent["floor"] / spent["ours"])
            done += BLOCK
    return statistics.median(rates["ours"]), statistics.median(rates["floor"]), statistics.median(ratios)


async def bench_http(base_url: str, token: str) -> tuple[float, float, float]:
    headers = {"authorization": f"Bearer {token}"}
    async with AsyncExitStack() as stack:
        http2 = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=30))
        read, write = await stack.enter_async_context(streamable_http_client(base_url + "/mcp", http_client=http2))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        rest = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30))

        async def rest_send(i: int) -> Any:
            answer = await rest.post("/v1/bus/send", json={"source": SOURCE, "target": TARGET, "text": f"rest {i}"})
            answer.raise_for_status()

        return await _pair(_tool_call(session), rest_send)


async def bench_stdio(tmp: Path, cpu: int | None) -> tuple[float, float, float]:
    served, local = f"sqlite:///{tmp}/stdio.db", f"sqlite:///{tmp}/local.db"
    async with sos_kernel.open(served) as kernel:
        token = await seed(kernel)
    prefix = ["taskset", "-c", str(cpu)] if cpu is not None and _has_taskset() else []
    command, args = (prefix[0], [*prefix[1:], sys.executable]) if prefix else (sys.executable, [])
    params = StdioServerParameters(
        command=command, args=[*args, "-m", "sos_kernel", "mcp", "--url", served, "--token", token]
    )
    async with AsyncExitStack() as stack:
        read, write = await stack.enter_async_context(stdio_client(params))
        mcp = await stack.enter_async_context(ClientSession(read, write))
        await mcp.initialize()
        kernel = await stack.enter_async_context(sos_kernel.open(local))
        session = await kernel.session(await seed(kernel))

        async def inproc(i: int) -> Any:
            await session.bus.send(SOURCE, TARGET, f"local {i}")

        return await _pair(_tool_call(mcp), inproc)


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


def _row(label: str, ours: float, floor: float, ratio: float, floor_label: str) -> None:
    print(f"{label:<34} {ours:>9.0f}/s   {floor_label:<28} {floor:>9.0f}/s   ratio {ratio:.2f}x")


def main() -> None:
    split = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    client_cpu, server_cpu = (0, 1) if split else (None, None)
    pin(client_cpu)
    print(f"placement: client on CPU {client_cpu}, servers on CPU {server_cpu}; {ROUNDS} rounds, blocks of {BLOCK}")
    with tempfile.TemporaryDirectory() as tmp:
        with http_server(f"sqlite:///{tmp}/http.db", server_cpu) as (base_url, token):
            ours, floor, ratio = anyio.run(bench_http, base_url, token)
        _row("MCP send, streamable HTTP", ours, floor, ratio, "REST POST /v1/bus/send")
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        print(f"  target >= {TARGET_RATIO}x of the REST send: {verdict}")
        ours, floor, ratio = anyio.run(bench_stdio, Path(tmp), server_cpu)
        _row("MCP send, stdio (sos mcp)", ours, floor, ratio, "in-process session.bus.send")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        pin(int(sys.argv[4]) if len(sys.argv) >= 5 and sys.argv[3] == "--cpu" else None)
        anyio.run(_serve, sys.argv[2])
    else:
        main()
