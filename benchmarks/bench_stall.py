"""Whether one large request stalls the others: small-call latency on a SQLite-backed server while large bodies run.

The server is the one of ``bench_remote`` (uvicorn in a subprocess over a kernel on a SQLite file). One client
makes small calls one after the other (``GET /v1/bus/history`` of one entry of its own inbox, which reads the
database) for the
whole run; meanwhile, in turn, none, one and then LARGE_AT_ONCE other clients each publish one message of
LARGE_BYTES. The table shows, per phase, the small calls' median and worst latency while the large ones were in
flight, and how long the large ones took. Before the fix a large publish ran its JSON work and its SQLite
statements on the server's event loop, so every small call waited for it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import anyio
import httpx

from benchmarks.bench_remote import SOURCE, TARGET, server_process
from sos_kernel.contracts import AnnounceMessage, AnnouncePayload

LARGE_BYTES = 15 * 1024 * 1024
LARGE_AT_ONCE = 3
ROUNDS = 3
IDLE_S = 1.0


def _large() -> dict[str, Any]:
    # an announce's text has no length bound of its own: only the bus's payload_bytes_max applies
    payload = AnnouncePayload(text="x" * LARGE_BYTES)
    return {"message": AnnounceMessage(source=SOURCE, target=TARGET, payload=payload).to_wire()}


async def _small_calls(http: httpx.AsyncClient, latencies: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        response = await http.get("/v1/bus/history", params={"address": SOURCE, "limit": 1})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)


async def _phase(base_url: str, token: str, large: dict[str, Any], at_once: int) -> tuple[list[float], float]:
    headers = {"authorization": f"Bearer {token}"}
    latencies: list[float] = []
    stop = anyio.Event()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as small:
        await small.get("/v1/session")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_small_calls, small, latencies, stop)
            started = time.perf_counter()
            if at_once:
                async with anyio.create_task_group() as big:
                    for _ in range(at_once):
                        big.start_soon(_publish, base_url, headers, large)
            else:
                await anyio.sleep(IDLE_S)
            took = time.perf_counter() - started
            stop.set()
    return latencies, took


async def _publish(base_url: str, headers: dict[str, str], large: dict[str, Any]) -> None:
    body = {**large, "message": {**large["message"], "message_id": str(uuid.uuid4())}}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as http:
        (await http.post("/v1/bus/publish", json=body)).raise_for_status()


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} {max(values) * 1000:8.1f}"


async def run() -> None:
    large = _large()
    with server_process_for_stall() as server:
        print(f"{'phase':<24} {'small p50 ms':>12} {'max ms':>8} {'calls':>6} {'large s':>8}")
        for _ in range(ROUNDS):
            for at_once in (0, 1, LARGE_AT_ONCE):
                latencies, took = await _phase(server.base_url, server.token, large, at_once)
                name = "idle" if not at_once else f"{at_once} x 15 MiB publish"
                print(f"{name:<24} {_ms(latencies)} {len(latencies):>6} {took:8.2f}")


def server_process_for_stall() -> Any:
    import tempfile

    folder = tempfile.mkdtemp(prefix="sos-bench-stall-")
    return server_process(f"sqlite:///{folder}/stall.db", None)


def main() -> None:
    anyio.run(run)


if __name__ == "__main__":
    main()
