"""Engine calls against a bare httpx call to the same local OpenAI-format server, measured in the same run.

The server (uvicorn on 127.0.0.1, in its own process) answers every chat-completions request with the same small
JSON. The floor is ``httpx.AsyncClient.post`` of the same body and ``json`` of the answer. The engine adds:
validation, the candidates read, the call-id claim, the breaker read, the answer's parse, the usage event and its
finish record — and, with an agent, the balance check, the price read and the charge. Cases: in memory without
charging (the engine's own overhead), then with breaker + metering + charging on memory, SQLite and Redis.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import sos_kernel

CALLS = 300
ROUNDS = 3
ANSWER = (
    b'{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],'
    b'"usage":{"prompt_tokens":11,"completion_tokens":7}}'
)
HI = [{"role": "user", "content": "hi"}]


async def _answer(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


def _serve(port: int) -> None:
    app = Starlette(routes=[Route("/v1/chat/completions", _answer, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server() -> Iterator[str]:
    """The answering server in its own process (a thread would share this one's GIL and loop time)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_engine", "--serve", str(port)])
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.post(base + "/chat/completions", json={})
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def _redis() -> Iterator[str | None]:
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def bare(base: str) -> float:
    body = {"model": "m", "messages": HI, "max_tokens": 1024}
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        for _ in range(CALLS):
            response = await client.post(base + "/chat/completions", json=body)
            response.json()
        return CALLS / (time.perf_counter() - started)


async def engine(url: str, base: str, charge: bool, tag: str) -> float:
    async with sos_kernel.open(url) as kernel:
        card = {"schema_version": "1", "id": "p", "name": "P", "backend": "openai-adapter", "tier": "primary"}
        await kernel.providers.register({**card, "model": "m", "endpoint": base})
        agent: Any = None
        if charge:
            agent = "agent:bench"
            await kernel.ledger.set_price("p", "m", input_per_mtok_micros=10**6, output_per_mtok_micros=10**6)
            await kernel.ledger.open_account("system:treasury", "USD", allow_negative=True)
            await kernel.ledger.open_account(agent, "USD")
            await kernel.ledger.transfer(id="f", debit="system:treasury", credit=agent, amount=10**12, currency="USD")
        started = time.perf_counter()
        for i in range(CALLS):
            await kernel.engine.chat(HI, id=f"{tag}-{i}", agent=agent)
        return CALLS / (time.perf_counter() - started)


def main() -> None:
    """Interleave rounds of every case and print the medians and their ratio to the bare call."""
    results: dict[str, list[float]] = {}
    with _server() as base, _redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            cases: dict[str, Any] = {
                "bare httpx POST + json (floor)": lambda: bare(base),
                "engine, memory, no charge": lambda r=r: engine("memory://", base, False, f"m{r}"),
                "engine, memory, breaker+metering+charge": lambda r=r: engine("memory://", base, True, f"c{r}"),
                "engine, sqlite, breaker+metering+charge": lambda r=r: engine(
                    f"sqlite:///{Path(tmp)}/e-{r}.db", base, True, f"s{r}"
                ),
            }
            if redis_url is not None:
                cases["engine, redis, breaker+metering+charge"] = lambda r=r: engine(redis_url, base, True, f"r{r}")
            for name, run in cases.items():
                results.setdefault(name, []).append(anyio.run(run))
    floor = statistics.median(results["bare httpx POST + json (floor)"])
    print(f"{'case':<44} {'calls/s':>10} {'us/call':>9} {'ratio':>8}")
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(f"{name:<44} {rate:>10,.0f} {1e6 / rate:>9,.0f} {rate / floor:>7.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(int(sys.argv[2]))
    else:
        main()
