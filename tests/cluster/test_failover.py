"""A master of the Redis Cluster is SIGKILLed while 4 client processes publish and transfer across 50 tenants on
all three masters; its replica takes over and the clients retry through the cluster client.

With ``durability=replicated`` nothing acknowledged is lost: every acknowledged message is in its tenant's
history, every acknowledged transfer is recorded, every tenant's ledger ``check()`` passes (balances conserved).
Without it (the default), the test prints how many acknowledged writes the failover lost (Redis replicates
asynchronously; the number is reported, not asserted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import NotFound, SOSError

from ..procs import WorkerProcess
from ..redis_cluster import LocalCluster, local_cluster, sync_client
from ._failover_worker import ISSUER, SINK, USD, tenant_name

pytestmark = pytest.mark.anyio

WORKER = str(Path(__file__).with_name("_failover_worker.py"))
WORKERS = 4
TENANTS = 50
OPS = 120
"""Steps per worker (a publish and a transfer each)."""
KILL_AFTER_ACKS = 150
"""Acknowledged writes (all workers) before the master is killed: the failover lands mid-run."""
PAGE = 500


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test's own: it loses a master."""
    with local_cluster(tmp_path / "cluster") as c:
        yield c


def master_of(cluster: LocalCluster, tenant: str) -> int:
    client = sync_client(cluster.url)
    try:
        node = client.get_node_from_key(f"sos:{{t:{tenant}}}:lseq")
        return int(node.port)
    finally:
        client.close()


async def prepare(url: str) -> None:
    async with sos_kernel.open(url) as kernel:
        for i in range(TENANTS):
            ledger = kernel.tenant(tenant_name(i)).ledger
            await ledger.open_account(ISSUER, USD, allow_negative=True)
            await ledger.open_account(SINK, USD)


def run(cluster: LocalCluster, url: str, go: Path) -> list[dict[str, Any]]:
    """The workers' acknowledged writes; one master is killed mid-run and started again once replaced."""
    victim = master_of(cluster, tenant_name(0))
    with ExitStack() as stack:
        workers = []
        for index in range(WORKERS):
            worker = WorkerProcess(WORKER, url, str(index), str(TENANTS), str(OPS), str(go))
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        go.touch()
        deadline = time.monotonic() + 120
        while sum(len(w.lines) for w in workers) < KILL_AFTER_ACKS and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.wait_replicas()  # the victim's replica is in sync, so it may take over
        cluster.kill(victim)
        cluster.wait_failover(victim)  # a replica was promoted and every node knows it
        assert victim not in cluster.primaries()
        cluster.restart(victim)  # back as a replica: replicated writes to that shard can be confirmed again
        lines = [line for worker in workers for line in worker.finish(300)]
        errors = "".join(text for worker in workers for text in worker.errors).splitlines()
        given_up = [line for line in errors if '"k": "error"' in line]
    if given_up:  # writes a worker stopped retrying: never acknowledged, so never counted as lost
        print(f"\nunacknowledged writes (retries given up): {given_up}")
    return [json.loads(line) for line in lines if line != "DONE"]


async def lost(url: str, acked: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """(acknowledged messages missing, acknowledged transfers missing, tenants whose ledger check failed)."""
    messages: dict[str, set[str]] = {}
    transfers: dict[str, list[str]] = {}
    for item in acked:
        if item["k"] == "pub":
            messages.setdefault(item["t"], set()).add(item["id"])
        else:
            transfers.setdefault(item["t"], []).append(item["id"])
    missing_messages = missing_transfers = 0
    broken = []
    async with sos_kernel.open(url) as kernel:
        for i in range(TENANTS):
            view = kernel.tenant(tenant_name(i))
            seen: set[str] = set()
            after = None
            while True:
                page = await view.bus.history(SINK, after=after, limit=PAGE)
                seen.update(m.message_id for m in page)
                if len(page) < PAGE:
                    break
                after = page[-1].message_id
            missing_messages += len(messages.get(view.slug, set()) - seen)
            for transfer_id in transfers.get(view.slug, []):
                try:
                    await view.ledger.get_transfer(transfer_id)
                except NotFound:
                    missing_transfers += 1
            try:
                await view.ledger.check()
                sink, issuer = await view.ledger.balance(SINK, USD), await view.ledger.balance(ISSUER, USD)
                if sink.posted + issuer.posted != 0:
                    broken.append(view.slug)
            except SOSError:  # reported with the tenant's name
                broken.append(view.slug)
    return missing_messages, missing_transfers, broken


def spread(cluster: LocalCluster) -> set[int]:
    return {master_of(cluster, tenant_name(i)) for i in range(TENANTS)}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("durability", ["replicated", "async"])
async def test_a_killed_master_loses_nothing_acknowledged_with_replicated_durability(
    cluster: LocalCluster, tmp_path: Path, durability: str
) -> None:
    url = f"{cluster.url}?durability={durability}"
    assert spread(cluster) == set(cluster.primaries())  # the tenants live on all three masters
    await prepare(url)
    acked = run(cluster, url, tmp_path / "go")
    assert acked, "no write was acknowledged"
    missing_messages, missing_transfers, broken = await lost(url, acked)
    print(
        f"\nfailover, durability={durability}: {len(acked)} acknowledged writes; lost "
        f"{missing_messages} messages and {missing_transfers} transfers; ledgers failing check: {broken}"
    )
    if durability == "replicated":
        assert (missing_messages, missing_transfers, broken) == (0, 0, [])
