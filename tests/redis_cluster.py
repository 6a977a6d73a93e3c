"""A Redis Cluster on loopback for the tests and benchmarks: 3 masters, 3 replicas, each a ``redis-server`` on
ports the OS handed out (client and cluster-bus ports both), in a directory of its own, so several can run at once.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClusterNodeProcess", "LocalCluster", "local_cluster"]

START_TIMEOUT_S = 30.0
"""How long the cluster may take from the first ``redis-server`` to ``cluster_state:ok`` on every node."""
NODE_TIMEOUT_MS = 1000
"""``cluster-node-timeout``: how long a silent master takes to be failed over (small, for the failover test)."""


def _free_ports(count: int) -> list[int]:
    # held open together so one call never hands out the same port twice
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass
class ClusterNodeProcess:
    """One ``redis-server`` of the cluster (``args`` start it again on the same port and node file)."""

    port: int
    proc: subprocess.Popen[bytes]
    args: list[str]


@dataclass
class LocalCluster:
    """A running cluster: its nodes and the kernel URL (``redis+cluster://`` with three seed nodes)."""

    nodes: list[ClusterNodeProcess]
    workdir: Path
    options: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
        return f"redis+cluster://{seeds}/"

    def primaries(self) -> list[int]:
        """The ports of the nodes that are masters now (asked of a live node)."""
        import redis

        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            try:
                with redis.Redis(port=node.port, socket_timeout=2) as client:
                    lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
            except redis.RedisError:
                continue
            ports = []
            for line in lines:
                parts = line.split()
                if "master" in parts[2] and "fail" not in parts[2] and parts[7] == "connected" and len(parts) > 8:
                    ports.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
            return ports
        raise RuntimeError("no cluster node answers")

    def flush(self) -> None:
        """FLUSHALL on every master (each holds its own slots' keys)."""
        import redis

        for port in self.primaries():
            with redis.Redis(port=port, socket_timeout=5) as client:
                client.flushall()

    def _wait_every_node(self, ready: Callable[[Any], bool], timeout_s: float, failure: str) -> None:
        """Until ``ready(client)`` holds for every live node (a node that does not answer is not ready)."""
        import redis

        deadline = time.monotonic() + timeout_s
        while True:
            ok = True
            for node in self.nodes:
                if node.proc.poll() is not None:
                    continue
                try:
                    with redis.Redis(port=node.port, socket_timeout=2) as client:
                        ok = ready(client)
                except redis.RedisError:
                    ok = False
                if not ok:
                    break
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(0.1)

    def wait_ok(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on all 16384 slots."""

        def ready(client: Any) -> bool:
            info = client.execute_command("CLUSTER", "INFO").decode()
            return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info

        self._wait_every_node(ready, timeout_s, "the Redis cluster did not reach cluster_state:ok")

    def wait_replicas(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every live replica's link to its master is up. A replica that has not finished its first sync
        counts its data as too old to take over (``cluster-replica-validity-factor``), so a master killed before
        then is never replaced."""

        def ready(client: Any) -> bool:
            info = client.info("replication")
            return bool(info.get("role") != "slave" or info.get("master_link_status") == "up")

        self._wait_every_node(ready, timeout_s, "a replica of the Redis cluster did not sync with its master")

    def kill(self, port: int) -> None:
        """SIGKILL one node: no shutdown, no last write to its replica."""
        node = next(n for n in self.nodes if n.port == port)
        node.proc.kill()
        node.proc.wait(10)

    def wait_failover(self, port: int, timeout_s: float = 60.0) -> None:
        """Until every live node sees the killed master ``port`` as failed and holding no slot (its replica was
        promoted), and says ``cluster_state:ok``. Restarting it before then would bring back an empty master."""
        import redis

        deadline = time.monotonic() + timeout_s
        while True:
            taken_over = True
            for node in self.nodes:
                if node.proc.poll() is not None:
                    continue
                try:
                    with redis.Redis(port=node.port, socket_timeout=2) as client:
                        lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
                except redis.RedisError:
                    taken_over = False
                    break
                mine = [line.split() for line in lines if f":{port}@" in line.split()[1]]
                if not mine or "fail" not in mine[0][2].split(",") or len(mine[0]) > 8:
                    taken_over = False
                    break
            if taken_over:
                self.wait_ok(max(1.0, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took over from the master on port {port}")
            time.sleep(0.1)

    def restart(self, port: int) -> None:
        """Start a killed node again on its port and node file: it rejoins (a failed-over master as a replica)."""
        node = next(n for n in self.nodes if n.port == port)
        node.proc = subprocess.Popen(node.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)


def _start_node(exe: str, port: int, bus_port: int, workdir: Path, node_timeout_ms: int) -> ClusterNodeProcess:
    nodedir = workdir / str(port)
    nodedir.mkdir(parents=True)
    args = [
        exe,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--cluster-enabled", "yes",
        "--cluster-port", str(bus_port),
        "--cluster-config-file", str(nodedir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(nodedir),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ClusterNodeProcess(port, proc, args)


def _wait_ping(port: int, deadline: float) -> None:
    import redis

    while True:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def local_cluster(workdir: Path, node_timeout_ms: int = NODE_TIMEOUT_MS) -> Iterator[LocalCluster]:
    """Start 6 ``redis-server --cluster-enabled yes`` and join them (3 masters, 1 replica each); stopped on exit."""
    exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if exe is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed: apt-get install redis-server")
    ports = _free_ports(12)
    cluster = LocalCluster([], workdir)
    try:
        for port, bus_port in zip(ports[:6], ports[6:], strict=True):
            cluster.nodes.append(_start_node(exe, port, bus_port, workdir, node_timeout_ms))
        deadline = time.monotonic() + START_TIMEOUT_S
        for node in cluster.nodes:
            _wait_ping(node.port, deadline)
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in cluster.nodes)]
        subprocess.run(
            [*create, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=START_TIMEOUT_S,
        )
        cluster.wait_ok(max(1.0, deadline - time.monotonic()))
        cluster.wait_replicas(max(1.0, deadline - time.monotonic()))
        yield cluster
    finally:
        cluster.stop()


def _seeds(url: str) -> list[tuple[str, int]]:
    hosts = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    return [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in hosts.split(",")]


def async_client(url: str) -> Any:
    """A raw asyncio client for a kernel's Redis URL: one server, or the cluster (for tests that edit behind the
    kernel's back)."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    if url.startswith("redis+cluster://"):
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in _seeds(url)])
    return aioredis.Redis.from_url(url)


def sync_client(url: str) -> Any:
    """The blocking twin of :func:`async_client`."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    if url.startswith("redis+cluster://"):
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in _seeds(url)])
    return redis.Redis.from_url(url)
