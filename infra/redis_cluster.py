"""Redis Cluster as the online store: the `redis+cluster://` URL, the clients built from it, Feast's cluster config.

One variable selects the mode: REDIS_URL. `redis://host:port/db` (or unset: the embedded server) is one standalone
server, as before; `redis+cluster://[user:password@]host1:port1[,host2:port2,...]` is a Redis Cluster reached through
any of the listed nodes (one is enough, more survive a seed node being down; the client discovers the others and the
slot map from CLUSTER SLOTS). Every process gets the same URL (infra.launch, the settings' child environment), so
the code above never asks which mode is on: it builds its clients here (`redis_client`), and Feast's online store
config follows from the URL (`feast_online_store`: `redis_type: redis_cluster` and the node list).

A cluster has no databases: `/0` (or no path) only. TLS: `rediss+cluster://…?ssl_ca_certs=…`, the options of
infra/redis_tls.py, used by every client built here and by each node's connection on the decision path. Key layout
and failover: docs/profiles.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.retry import Retry

from infra.redis_tls import RedisTlsError, TlsOptions

CLUSTER_SCHEME = "redis+cluster"
TLS_CLUSTER_SCHEME = "rediss+cluster"
SLOTS = REDIS_CLUSTER_HASH_SLOTS  # 16384
EXAMPLE = "redis+cluster://10.0.0.5:7000,10.0.0.6:7000"

RedisClient = redis.Redis | RedisCluster


class ClusterUrlError(ValueError):
    """A redis+cluster:// URL that cannot be used; the message says how to write it."""


@dataclass(frozen=True)
class ClusterAddress:
    """The seed nodes and credentials of a `redis+cluster://` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None  # rediss+cluster://: every node over TLS

    def node_url(self, host: str, port: int) -> str:
        """redis:// (rediss:// with its TLS options) URL of one node with the cluster's credentials (what the
        per-node connections use)."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        if self.tls is None:
            return f"redis://{auth}{host}:{port}/0"
        query = self.tls.query()
        return f"rediss://{auth}{host}:{port}/0" + (f"?{query}" if query else "")

    def masked(self) -> str:
        """The URL fit to print (password replaced by ***)."""
        auth = f"{self.username or ''}:***@" if self.password is not None else ""
        scheme = CLUSTER_SCHEME if self.tls is None else TLS_CLUSTER_SCHEME
        return f"{scheme}://{auth}{','.join(f'{h}:{p}' for h, p in self.nodes)}"


def is_cluster_url(url: str | None) -> bool:
    """Whether `url` names a Redis Cluster (redis+cluster://) rather than one server."""
    return bool(url) and url.split("://", 1)[0].lower() in (CLUSTER_SCHEME, TLS_CLUSTER_SCHEME)


def parse_cluster_url(url: str) -> ClusterAddress:
    """The seed nodes and credentials of `redis+cluster://[user:password@]host:port[,host:port...][/0]`, and the TLS
    options of `rediss+cluster://…[?ssl_ca_certs=…]` (infra/redis_tls.py)."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    if scheme.lower() not in (CLUSTER_SCHEME, TLS_CLUSTER_SCHEME) or not rest:
        raise ClusterUrlError(f"not a Redis Cluster URL: write it like {EXAMPLE}")
    try:
        tls = TlsOptions.from_query(query) if scheme.lower() == TLS_CLUSTER_SCHEME else None
    except RedisTlsError as exc:
        raise ClusterUrlError(f"{exc} (in the query of a rediss+cluster:// URL)") from exc
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ClusterUrlError(
            f"a Redis Cluster has no database {path!r} (only 0): drop the path, e.g. {EXAMPLE}"
        )
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) if has_password else None
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            shown = ClusterAddress((), username, password).masked().split("://", 1)[1]
            raise ClusterUrlError(
                f"{CLUSTER_SCHEME}://{shown}{hosts}: every node needs host:port (got {item.strip()!r}); "
                f"write it like {EXAMPLE}"
            )
        nodes.append((host.strip("[]"), int(port)))
    return ClusterAddress(tuple(nodes), username, password, tls)


def redis_client(url: str, timeout_s: float | None = None, connect_timeout_s: float | None = None) -> RedisClient:
    """A client of the server or cluster `url` names: redis.Redis for redis:// and unix://, RedisCluster for
    redis+cluster://. With `timeout_s` every call is bounded and never retried (the serving path: redis-py's default
    retries would hold a decision for seconds); without it, redis-py's defaults (batch jobs and tools)."""
    connect = connect_timeout_s if connect_timeout_s is not None else timeout_s
    if not is_cluster_url(url):
        if timeout_s is None and connect_timeout_s is None:
            return redis.Redis.from_url(url)
        return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=connect, retry=None)
    address = parse_cluster_url(url)
    options: dict = {"username": address.username, "password": address.password}
    if address.tls is not None:
        options |= address.tls.redis_kwargs()
    if timeout_s is not None or connect_timeout_s is not None:
        # No retries, and the slot map refreshed after every connection error (a failover moves slots).
        options |= {"socket_timeout": timeout_s, "socket_connect_timeout": connect,
                    "retry": Retry(NoBackoff(), 0), "reinitialize_steps": 1}
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in address.nodes], **options)


def feast_online_store(url: str, timeout_s: float | None = None) -> tuple[str, str]:
    """(redis_type, connection_string) of Feast's Redis online store for a cluster URL: `redis_cluster` and
    "host1:port1,host2:port2[,password=...][,socket_timeout=...]" (Feast 0.67 builds a RedisCluster from them)."""
    address = parse_cluster_url(url)
    parts = [f"{host}:{port}" for host, port in address.nodes]
    if address.username:
        parts.append(f"username={address.username}")
    if address.password is not None:
        parts.append(f"password={address.password}")
    if address.tls is not None:
        parts += address.tls.feast_params()
    if timeout_s is not None:
        # Feast passes these to RedisCluster; a cluster client takes no `retry` keyword (it refuses one in kwargs).
        parts += [f"socket_timeout={timeout_s}", f"socket_connect_timeout={timeout_s}"]
    return "redis_cluster", ",".join(parts)


def run_scripts(client: RedisClient, script, calls: list[tuple[list, list]]) -> list:
    """Run `script` once per (keys, args) call, pipelined; the replies in call order. One server: one pipeline. A
    cluster: redis-py's cluster pipeline refuses scripts, so the calls are grouped by the master of their first key's
    slot (a script's keys must share a slot) and each group goes down a pipeline of that master's own client. A call
    whose slot moved meanwhile is answered MOVED: the error is raised (the callers' calls are safe to repeat)."""
    if not isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute()
    groups: dict[str, tuple[object, list[int]]] = {}
    for index, (keys, _) in enumerate(calls):
        node = client.get_node_from_key(keys[0])
        groups.setdefault(node.name, (node, []))[1].append(index)
    replies: list = [None] * len(calls)
    for node, indices in groups.values():
        pipe = client.get_redis_connection(node).pipeline(transaction=False)
        for index in indices:
            keys, args = calls[index]
            script(keys=keys, args=args, client=pipe)
        for index, reply in zip(indices, pipe.execute()):
            replies[index] = reply
    return replies


def slot(key: bytes | str) -> int:
    """The cluster slot of `key` (CRC16 of its hash tag, or of the whole key, mod 16384), as Redis computes it."""
    return key_slot(key.encode() if isinstance(key, str) else key)


class _LocatedAtConnect:
    """Connects to whichever master serves one slot *when it connects*: after a failover its next connect (the old
    master refused or lost it) asks the cluster again and reaches the new master."""

    def __init__(self, *, locate, **kwargs):
        super().__init__(**kwargs)
        self._locate = locate

    def _connect(self):
        self.host, self.port = self._locate()
        return super()._connect()


class SlotOwnerConnection(_LocatedAtConnect, redis.connection.Connection):
    """A plain-TCP connection to the master of one slot (see `_LocatedAtConnect`)."""


class SlotOwnerSSLConnection(_LocatedAtConnect, redis.connection.SSLConnection):
    """The same over TLS (rediss+cluster://): located at connect, then wrapped."""


def slot_client(url: str, key: str, timeout_s: float) -> redis.Redis:
    """A plain redis.Redis whose connections reach the master of `key`'s slot, for code that sends raw pipelined
    commands over one connection (the decision log's writer: its stream and its receipt keys share one slot,
    serving/store/wal_acks.py). One server: `redis_client(url, timeout_s)`. Every key it is used for must be on
    `key`'s slot (a command on another slot is answered MOVED)."""
    if not is_cluster_url(url):
        return redis_client(url, timeout_s)  # type: ignore[return-value]
    address = parse_cluster_url(url)
    cluster = redis_client(url, timeout_s)
    wanted = slot(key)

    def locate() -> tuple[str, int]:
        cluster.nodes_manager.initialize()  # (re)connecting: maybe after a failover, so read the slot map again
        node = cluster.nodes_manager.get_node_from_slot(wanted)
        return node.host, node.port

    host, port = address.nodes[0]
    tls = {} if address.tls is None else {k: v for k, v in address.tls.redis_kwargs().items() if k != "ssl"}
    pool = redis.ConnectionPool(
        connection_class=SlotOwnerConnection if address.tls is None else SlotOwnerSSLConnection, locate=locate,
        host=host, port=port, username=address.username, password=address.password, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, retry=None, **tls,
    )
    return redis.Redis(connection_pool=pool)


# -- every node: the tools that act on each node's own data or files (backup, erasure) ----------------------------


@dataclass(frozen=True)
class NodeRole:
    """One node of a cluster as CLUSTER NODES lists it: address, role, the slot ranges it serves (a master's), and
    whether the cluster holds it for failed (flag `fail`/`fail?`, `noaddr`, or its link down)."""

    host: str
    port: int
    role: str  # "master" | "replica"
    slots: tuple[tuple[int, int], ...] = ()
    failed: bool = False

    @property
    def name(self) -> str:
        """`host:port`, as redis-py names nodes."""
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """`host:port (master, slots 0-5460)` / `host:port (replica)`: how receipts and manifests name the node."""
        if self.role != "master":
            return f"{self.name} ({self.role})"
        ranges = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in self.slots) or "no slots"
        return f"{self.name} (master, slots {ranges})"


def cluster_topology(client: RedisCluster) -> list[NodeRole]:
    """Every node of the cluster, masters first (by first slot), then replicas (by address), from CLUSTER NODES as
    one node answers it. CLUSTER SLOTS, which redis-py's node cache is built from, leaves failed replicas out; a
    tool that must reach every node's files (erasure) has to see those too, to say it could not."""
    candidates = [client.get_default_node(), *client.get_primaries(), *client.get_replicas()]
    error: redis.exceptions.RedisError | None = None
    for seed in dict.fromkeys(c for c in candidates if c is not None):  # the first node that answers
        try:
            listed = client.execute_command("CLUSTER NODES", target_nodes=seed)
            break
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            error = exc
    else:
        raise redis.exceptions.ConnectionError(f"no node of the cluster answered CLUSTER NODES ({error})")
    nodes: list[NodeRole] = []
    for address, fields in listed.items():
        flags = set(str(fields["flags"]).split(","))
        if "handshake" in flags:  # being introduced: not yet a member (no id agreed, no data)
            continue
        host, _, port = address.rpartition(":")
        host = host or seed.host  # a node that never learnt its own address lists itself as ":port"
        slots = tuple((int(r[0]), int(r[-1])) for r in fields.get("slots", []))
        failed = bool(flags & {"fail", "fail?", "noaddr"}) or (not fields.get("connected", True)
                                                                 and "myself" not in flags)
        role = "master" if "master" in flags else "replica"
        nodes.append(NodeRole(host, int(port), role, tuple(sorted(slots)), failed))
    return sorted(nodes, key=lambda n: (n.role != "master", n.slots[:1] or ((SLOTS, SLOTS),), n.host, n.port))


def node_connection(client: RedisCluster, node: NodeRole) -> redis.Redis:
    """A plain client of one node (its own keys, INFO, CONFIG, BGSAVE), with the cluster client's credentials and
    timeouts; redis-py's cached connection when the node is in its map, else a new one (a replica CLUSTER SLOTS
    left out)."""
    known: ClusterNode | None = client.get_node(host=node.host, port=node.port)
    if known is None:
        known = ClusterNode(node.host, node.port)
        client.nodes_manager.create_redis_connections([known])
    return client.get_redis_connection(known)


def master_connections(client: RedisCluster) -> list[tuple[NodeRole, redis.Redis]]:
    """(master, its own client) for every master that serves slots. Raises when a master is failed or slots are
    uncovered: a tool reading every key (backup) must not silently skip a shard."""
    masters = [n for n in cluster_topology(client) if n.role == "master" and n.slots]
    down = [n.describe() for n in masters if n.failed]
    if down:
        raise redis.exceptions.ClusterDownError(
            f"master(s) {', '.join(down)} marked failed: wait for a replica to take over (CLUSTER NODES shows a "
            "new master for their slots) and run this again"
        )
    covered = sum(b - a + 1 for n in masters for a, b in n.slots)
    if covered != SLOTS:
        raise redis.exceptions.ClusterDownError(
            f"the masters serve {covered} of {SLOTS} slots: fix the cluster (redis-cli --cluster check/fix) and run "
            "this again"
        )
    return [(n, node_connection(client, n)) for n in masters]
