"""Remote calls through ``MumegaClient`` against a bare httpx round trip to the same server, measured in the same run.

The server is ``create_app(kernel)`` under uvicorn on 127.0.0.1, in a subprocess of its own (its own interpreter,
so client and server do not share a GIL), over a kernel on a SQLite file in a temporary directory and then over
``memory://``. The subprocess seeds its kernel (a tenant, a token for ``agent:alice``, funded accounts), prints
its port and token, and serves until its standard input closes.

- sequential round trips: ``client.bus.publish(message)`` (the message as a dict, and as a ``SendMessage``)
  against the raw floor, ``httpx.AsyncClient.post`` of the same JSON body to ``/v1/bus/publish`` on the same
  server, awaited one after the other; the same for ``client.ledger.transfer`` against a bare POST to
  ``/v1/ledger/transfer``. Every call carries a fresh message id or transfer id, so both sides do real work.
- no network: the same sequential cases over ``httpx.MockTransport`` answering a real receipt and transfer, so
  only each side's own cost in this process is left (httpx's, and the client's on top of it). For reading.
- throughput: CONCURRENCY tasks, each with its own ``MumegaClient`` (its own connection), publishing for
  THROUGHPUT_S seconds; msgs/s and the p50/p99 latency of a call. Beside it, the same with a bare
  ``httpx.AsyncClient`` per task, and the in-process floor: ``session.bus.publish`` on a kernel of the same
  backend in this process (no HTTP at all).

Every case runs in every one of ROUNDS rounds. Within a round the sequential cases take turns BLOCK calls at a
time, and the two load cases alternate in LOAD_SLICES slices, so a slow moment of a noisy machine falls on a case
and its floor alike. The table shows median rates; a sequential ratio is the median over every block of ours
against the floor's block of the same turn, a load ratio the median of the per-round ratios. Beside the wall time
per call is the CPU time this (client) process spent per call, which shows the client's own cost. Everything is
bounded in count and in time (SEQUENTIAL_S, THROUGHPUT_S per round): about 75 s on 2 cores.

Target (remote issue): a client round trip at >= 0.8x of the bare httpx round trip.

CPU placement changes loopback round trips several times over on a 2-core VM, so the benchmark pins itself:
by default (``SOS_BENCH_REMOTE_PLACEMENT=split``) the client process on CPU 0 and the server on CPU 1;
``shared`` puts both on CPU 0; ``os`` leaves placement to the scheduler. The placement is printed with the table.
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
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import httpx

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel import wire
from sos_kernel.contracts import SendMessage, SendPayload

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL_N = 400
"""Calls of each sequential case per round, at most."""
SEQUENTIAL_S = 5.0
"""Time for all sequential cases of one round: on a slow machine they stop early, each after as many calls."""
BLOCK = 20
"""Sequential calls of one case before the next case takes its turn."""
WARMUP_N = 40
ROUNDS = 3
CONCURRENCY = 32
THROUGHPUT_S = 2.0
"""How long each load case publishes per round, in LOAD_SLICES slices alternating with the other case's."""
LOAD_SLICES = 4
THROUGHPUT_CALLS_MAX = 40_000
"""A cap on the calls of one load slice (over all tasks), should a server ever be that fast."""
INPROC_N = 1000
"""Calls of the in-process floor per round."""
STARTUP_S = 30.0
KEEP_ALIVE_S = 300
TENANT = "bench"
SOURCE, TARGET = "agent:alice", "agent:bob"
USD = "USD"
FUNDS = 10**15
TARGET_RATIO = 0.8
PUBLISH, TRANSFER = "/v1/bus/publish", "/v1/ledger/transfer"

# --- the server (a subprocess: python -m benchmarks.bench_remote --serve URL --cpu N) -----------------------------


def pin(cpu: int | None) -> None:
    """Keep this process (its current thread and the threads it starts later) on ``cpu``."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


async def seed(kernel: sos_kernel.Kernel) -> str:
    """A tenant with alice's token and funded accounts for alice and bob; alice's token secret."""
    await kernel.tenants.create(TENANT, "scale")
    issued = await kernel.tenant(TENANT).tokens.issue(agent=SOURCE)
    ledger = kernel.tenant(TENANT).ledger
    await ledger.open_account("system:mint", USD, allow_negative=True)
    for owner in (SOURCE, TARGET):
        await ledger.open_account(owner, USD)
    await ledger.transfer(id="fund", debit="system:mint", credit=SOURCE, amount=FUNDS, currency=USD)
    return issued.secret


async def _serve(url: str) -> None:
    import uvicorn

    from sos_kernel.server import create_app

    async with sos_kernel.open(url) as kernel:
        token = await seed(kernel)
        # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on accepted sockets of that protocol, and
        # without it a response written in two parts waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        # Connections stay open between a round's phases: uvicorn's 5 s keep-alive would close idle ones, and a
        # bare httpx client reusing a connection just as the server closes it fails (MumegaClient retries).
        config = uvicorn.Config(
            create_app(kernel), log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=KEEP_ALIVE_S
        )
        server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()

        def stop_on_eof() -> None:  # the parent closes our stdin (or dies): stop serving
            sys.stdin.read()
            loop.call_soon_threadsafe(setattr, server, "should_exit", True)

        threading.Thread(target=stop_on_eof, daemon=True).start()
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await asyncio.sleep(0.01)
        http = getattr(config, "http_protocol_class", None)  # set by uvicorn once it has loaded the config
        hello = {"port": sock.getsockname()[1], "token": token, "http": getattr(http, "__name__", "?"), "cpus": _cpus()}
        print(json.dumps(hello), flush=True)
        await serving
        sock.close()


def _cpus() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


@dataclass(frozen=True)
class Server:
    base_url: str
    token: str
    http: str
    cpus: list[int] | None


@contextmanager
def server_process(url: str, cpu: int | None) -> Iterator[Server]:
    """A uvicorn subprocess serving a fresh kernel at ``url``, stopped (stdin closed) on exit."""
    command = [sys.executable, "-m", "benchmarks.bench_remote", "--serve", url]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = _first_line(proc)
        hello = json.loads(line)
        yield Server(f"http://127.0.0.1:{hello['port']}", hello["token"], hello["http"], hello["cpus"])
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


def _first_line(proc: subprocess.Popen[str]) -> str:
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(STARTUP_S)
    if not found or not found[0]:
        proc.kill()
        raise RuntimeError(f"the benchmark server did not start (exit code {proc.poll()})")
    return found[0]


# --- the cases ---------------------------------------------------------------------------------------------------


def message_dicts(n: int) -> list[dict[str, Any]]:
    """``n`` distinct ``send`` messages from alice to bob in their wire form (fresh message ids)."""
    return [
        SendMessage(source=SOURCE, target=TARGET, payload=SendPayload(text=f"benchmark message {i}")).to_wire()
        for i in range(n)
    ]


def message_models(n: int) -> list[SendMessage]:
    return [SendMessage(source=SOURCE, target=TARGET, payload=SendPayload(text=f"model {i}")) for i in range(n)]


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Calls per second of ``call(0) .. call(n - 1)`` awaited one after the other."""
    started = time.perf_counter()
    for i in range(n):
        await call(i)
    return n / (time.perf_counter() - started)


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")


def _publish_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"message": message, "receipts": False, "chunking": True}


def transfer_fields(prefix: str, i: int) -> dict[str, Any]:
    return {"id": f"{prefix}-{i}", "debit": SOURCE, "credit": TARGET, "amount": 1, "currency": USD}


Call = Callable[[int], Awaitable[Any]]
"""The i-th call of a run."""


def sequential_cases(client: MumegaClient, http: httpx.AsyncClient, n: int) -> dict[str, Call]:
    """Every sequential case with ``n`` fresh inputs each (built here, untimed): client and bare, same bodies."""
    dicts, models = message_dicts(n), message_models(n)
    bodies = [_publish_body(m) for m in message_dicts(n)]
    ours_prefix, raw_prefix = uuid.uuid4().hex, uuid.uuid4().hex

    async def publish_raw(i: int) -> None:
        _ok(await http.post(PUBLISH, json=bodies[i]))

    async def transfer_raw(i: int) -> None:  # the body the client sends: its defaults travel too
        _ok(await http.post(TRANSFER, json={**transfer_fields(raw_prefix, i), "code": 0, "reason": ""}))

    return {
        "publish(dict)": lambda i: client.bus.publish(dicts[i]),
        "publish(SendMessage)": lambda i: client.bus.publish(models[i]),
        "publish raw": publish_raw,
        "transfer": lambda i: client.ledger.transfer(**transfer_fields(ours_prefix, i)),
        "transfer raw": transfer_raw,
    }


@dataclass(frozen=True)
class Timing:
    """One sequential case in one round: calls per second, this process's CPU time per call, and the time of each
    block of BLOCK calls."""

    rate: float
    cpu_us: float
    blocks: list[float]


async def interleaved(cases: dict[str, Call], n: int, budget_s: float) -> dict[str, Timing]:
    """Each case over up to ``n`` calls, run BLOCK calls at a time in turn (so that a slow moment of a noisy machine
    falls on every case alike), stopping after the block in which ``budget_s`` ran out."""
    blocks: dict[str, list[float]] = {name: [] for name in cases}
    cpu = dict.fromkeys(cases, 0.0)
    deadline, done = time.perf_counter() + budget_s, 0
    while done < n and time.perf_counter() < deadline:
        for name, call in cases.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            for i in range(done, min(n, done + BLOCK)):
                await call(i)
            blocks[name].append(time.perf_counter() - began)
            cpu[name] += time.process_time() - began_cpu
        done = min(n, done + BLOCK)
    return {name: Timing(done / sum(blocks[name]), cpu[name] / done * 1e6, blocks[name]) for name in cases}


@dataclass(frozen=True)
class Load:
    """One throughput run: calls per second over all tasks, and the latency of a call."""

    rate: float
    p50_ms: float
    p99_ms: float
    calls: int


Publish = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class Slices:
    """The calls, time and latencies of one load case, gathered over several slices."""

    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def result(self) -> Load:
        cuts = statistics.quantiles(self.latencies, n=100)
        p50, p99 = statistics.median(self.latencies), cuts[98]
        return Load(self.calls / self.seconds, p50 * 1e3, p99 * 1e3, self.calls)


async def load_slice(publishers: list[Publish], seconds: float, into: Slices) -> None:
    """Every publisher in its own task, publishing fresh messages until ``seconds`` pass (or the cap)."""
    share = THROUGHPUT_CALLS_MAX // len(publishers)
    template = message_dicts(1)[0]

    async def worker(publish: Publish, deadline: float) -> None:
        for _ in range(share):
            if time.perf_counter() >= deadline:
                return
            item = {**template, "message_id": str(uuid.uuid4())}
            began = time.perf_counter()
            await publish(item)
            into.latencies.append(time.perf_counter() - began)
            into.calls += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for publish in publishers:
            tg.start_soon(worker, publish, started + seconds)
    into.seconds += time.perf_counter() - started


async def loads(clients: list[MumegaClient], https: list[httpx.AsyncClient]) -> dict[str, Load]:
    """One round of the throughput cases, in LOAD_SLICES alternating slices of THROUGHPUT_S / LOAD_SLICES each."""

    def poster(http: httpx.AsyncClient) -> Publish:
        async def post(message: dict[str, Any]) -> None:
            _ok(await http.post(PUBLISH, json=_publish_body(message)))

        return post

    publishers = {"clients": [c.bus.publish for c in clients], "raw": [poster(h) for h in https]}
    async with anyio.create_task_group() as tg:  # every connection open (or reopened) before the clock starts
        for publish in publishers["clients"] + publishers["raw"]:
            tg.start_soon(publish, message_dicts(1)[0])
    gathered = {name: Slices() for name in publishers}
    for _ in range(LOAD_SLICES):
        for name, each in publishers.items():
            await load_slice(each, THROUGHPUT_S / LOAD_SLICES, gathered[name])
    return {name: slices.result() for name, slices in gathered.items()}


async def inprocess_rate(url: str) -> float:
    """``session.bus.publish`` of INPROC_N fresh messages on a kernel of the same backend, in this process."""
    async with sos_kernel.open(url) as kernel:
        session = await kernel.session(await seed(kernel))
        data = message_dicts(INPROC_N)
        for item in message_dicts(WARMUP_N):
            await session.bus.publish(item)
        return await timed(INPROC_N, lambda i: session.bus.publish(data[i]))


async def canned_answers() -> dict[str, bytes]:
    """The server's answers to a publish and a transfer, as JSON bytes (from an in-process kernel)."""
    async with sos_kernel.open("memory://") as kernel:
        session = await kernel.session(await seed(kernel))
        receipt = await session.bus.publish(message_dicts(1)[0])
        transfer = await session.ledger.transfer(**transfer_fields("canned", 0))
    return {path: json.dumps(wire.encode(value)).encode() for path, value in [(PUBLISH, receipt), (TRANSFER, transfer)]}


async def client_alone(answers: dict[str, bytes]) -> dict[str, Timing]:
    """One round of the sequential cases over ``httpx.MockTransport`` answering ``answers``: no network and no
    server, so what is left is each side's own cost in this process (httpx's, and the client's on top)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answers[request.url.path], headers={"content-type": "application/json"})

    transport = httpx.MockTransport(handler)
    client = MumegaClient("http://sos.test", "sk-bench", transport=transport)
    headers = {"authorization": "Bearer sk-bench"}
    http = httpx.AsyncClient(base_url="http://sos.test", transport=transport, headers=headers, timeout=30.0)
    try:
        await interleaved(sequential_cases(client, http, WARMUP_N), WARMUP_N, SEQUENTIAL_S)
        return await interleaved(sequential_cases(client, http, SEQUENTIAL_N), SEQUENTIAL_N, SEQUENTIAL_S)
    finally:
        await client.aclose()
        await http.aclose()


# --- running and printing ----------------------------------------------------------------------------------------


@dataclass
class Results:
    """Per round: the rate of each sequential case, and each load case."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    blocks: dict[str, list[float]] = field(default_factory=dict)
    loads: dict[str, list[Load]] = field(default_factory=dict)

    def add(self, timings: dict[str, Timing]) -> None:
        """One round of the sequential cases."""
        for name, timing in timings.items():
            self.rates.setdefault(name, []).append(timing.rate)
            self.cpu_us.setdefault(name, []).append(timing.cpu_us)
            self.blocks.setdefault(name, []).extend(timing.blocks)


def _median_load(runs: list[Load]) -> Load:
    return Load(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        int(statistics.median(r.calls for r in runs)),
    )


def _bare(server: Server) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {server.token}"}
    return httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30.0)


async def measure(server: Server, inproc_url: Callable[[], str]) -> Results:
    """ROUNDS rounds of every case against ``server``."""
    results = Results()
    async with MumegaClient(server.base_url, server.token) as client, _bare(server) as http:
        warm = sequential_cases(client, http, WARMUP_N)  # connections, the server's session cache, code paths
        await interleaved(warm, WARMUP_N, SEQUENTIAL_S)
        clients = [MumegaClient(server.base_url, server.token) for _ in range(CONCURRENCY)]
        https = [_bare(server) for _ in range(CONCURRENCY)]
        try:
            for _ in range(ROUNDS):
                cases = sequential_cases(client, http, SEQUENTIAL_N)
                timings = await interleaved(cases, SEQUENTIAL_N, SEQUENTIAL_S)
                results.add(timings)
                results.rates.setdefault("in-process", []).append(await inprocess_rate(inproc_url()))
                for name, found in (await loads(clients, https)).items():
                    results.loads.setdefault(name, []).append(found)
        finally:
            for made in clients:
                await made.aclose()
            for bare in https:
                await bare.aclose()
    return results


async def measure_alone() -> Results:
    """ROUNDS rounds of :func:`client_alone`."""
    results, answers = Results(), await canned_answers()
    for _ in range(ROUNDS):
        results.add(await client_alone(answers))
    return results


def _ratio(ours: list[float], raw: list[float]) -> float:
    return statistics.median(o / r for o, r in zip(ours, raw, strict=True))


def render(backend: str, results: Results, target: bool = True) -> list[str]:
    """The sequential rows of one backend (``target``: judge the ratio against TARGET_RATIO)."""
    med = {k: statistics.median(v) for k, v in results.rates.items()}
    cpu = {k: statistics.median(v) for k, v in results.cpu_us.items()}
    rows = [
        ("publish(dict)", "publish(dict)", "publish raw"),
        ("publish(SendMessage)", "publish(SendMessage)", "publish raw"),
        ("ledger.transfer", "transfer", "transfer raw"),
    ]
    lines = []
    for label, ours, raw in rows:
        # Paired by block: block i of ours ran right before block i of its floor, under the same load.
        ratio = statistics.median(r / o for o, r in zip(results.blocks[ours], results.blocks[raw], strict=True))
        verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
        judged = f"≥ {TARGET_RATIO}x ({verdict})" if target else "(for reading)"
        lines.append(
            f"{backend + ' ' + label:<30} {med[ours]:>8,.0f} {med[raw]:>8,.0f} {1e6 / med[ours]:>8.0f} "
            f"{1e6 / med[raw]:>8.0f} {cpu[ours]:>8.0f} {cpu[raw]:>8.0f} {ratio:>6.2f}x  {judged}"
        )
    return lines


def render_loads(backend: str, results: Results) -> list[str]:
    """The throughput rows of one backend."""
    ours, raw = _median_load(results.loads["clients"]), _median_load(results.loads["raw"])
    inproc = statistics.median(results.rates["in-process"])
    ratio = _ratio([r.rate for r in results.loads["clients"]], [r.rate for r in results.loads["raw"]])
    served = ours.rate / inproc
    return [
        f"{backend + f' {CONCURRENCY} MumegaClients':<40} {ours.rate:>9,.0f} {ours.p50_ms:>8.2f} {ours.p99_ms:>8.2f}"
        f" {ours.calls:>8,}  {ratio:.2f}x of bare httpx; {served:.2f}x of in-process",
        f"{backend + f' {CONCURRENCY} bare httpx clients':<40} {raw.rate:>9,.0f} {raw.p50_ms:>8.2f} {raw.p99_ms:>8.2f}"
        f" {raw.calls:>8,}  raw floor (client side)",
        f"{backend + ' in-process session.bus.publish':<40} {inproc:>9,.0f} {1e3 / inproc:>8.2f} {'':>8}"
        f" {INPROC_N:>8,}  reference floor: no HTTP, one caller",
    ]


def placement() -> tuple[int | None, int | None, str]:
    """(client CPU, server CPU, description) for SOS_BENCH_REMOTE_PLACEMENT (split, shared or os)."""
    mode = os.environ.get("SOS_BENCH_REMOTE_PLACEMENT", "split")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if mode == "os" or not cpus:
        return None, None, "client and server not pinned, placed by the OS scheduler"
    if mode == "shared" or len(cpus) < 2:
        return cpus[0], cpus[0], f"client and server pinned to the same CPU {cpus[0]}"
    if mode != "split":
        raise SystemExit(f"SOS_BENCH_REMOTE_PLACEMENT must be split, shared or os, not {mode!r}")
    return cpus[0], cpus[1], f"client pinned to CPU {cpus[0]}, server pinned to CPU {cpus[1]}"


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Pin this process to ``cpu`` for the block; restore its affinity after."""
    before = os.sched_getaffinity(0) if cpu is not None and hasattr(os, "sched_getaffinity") else None
    pin(cpu)
    try:
        yield
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def _load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def main() -> None:
    """Run every case against a SQLite server, then a memory:// server, and print the tables."""
    client_cpu, server_cpu, where = placement()
    load_before = _load_average()
    seq_lines, load_lines, servers = [], [], []
    with tempfile.TemporaryDirectory() as tmp, pinned(client_cpu):
        counter = iter(range(1_000_000))
        backends = {
            "sqlite": (f"sqlite:///{tmp}/server.db", lambda: f"sqlite:///{tmp}/inproc-{next(counter)}.db"),
            "memory": ("memory://", lambda: "memory://"),
        }
        client_cpus = _cpus()
        for backend, (server_url, inproc_url) in backends.items():
            with server_process(server_url, server_cpu) as server:
                servers.append(server)
                results = anyio.run(measure, server, inproc_url)
            seq_lines += render(backend, results)
            load_lines += render_loads(backend, results)
        seq_lines += render("no network", anyio.run(measure_alone), target=False)
    versions = f"uvicorn {version('uvicorn')}, fastapi {version('fastapi')}, httpx {version('httpx')}"
    print(f"{versions}; server protocol {servers[0].http} on asyncio")
    print(f"placement: {where} (affinity: client {client_cpus}, server {servers[0].cpus})")
    print(f"load average before {load_before}, after {_load_average()} (1/5/15 min)")
    print(
        f"{ROUNDS} rounds; sequential: up to {SEQUENTIAL_N} calls per case per round ({SEQUENTIAL_S:g} s at most), "
        f"{BLOCK} at a time in turn;\nload: {CONCURRENCY} tasks, {THROUGHPUT_S:g} s per case per round in "
        f"{LOAD_SLICES} alternating slices; median rates; ratios: median of per-block (sequential) or per-round\n"
        "(load) ratios; us: wall time per call; cpu: this (client) process's CPU time per call"
    )
    heading = f"{'ours /s':>8} {'raw /s':>8} {'ours us':>8} {'raw us':>8} {'ours cpu':>8} {'raw cpu':>8}"
    print(f"{'sequential round trip':<30} {heading} {'ratio':>7}  target")
    print("\n".join(seq_lines))
    print(f"\n{'throughput':<40} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'calls':>8}  note")
    print("\n".join(load_lines))


def _serve_main(argv: list[str]) -> None:
    url = argv[argv.index("--serve") + 1]
    pin(int(argv[argv.index("--cpu") + 1]) if "--cpu" in argv else None)
    asyncio.run(_serve(url))


if __name__ == "__main__":
    if "--serve" in sys.argv:
        _serve_main(sys.argv)
    else:
        main()
