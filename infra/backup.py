"""Back up and restore every store of a deployment into one folder.

    python -m infra.backup create DIR          # DIR must not exist yet
    python -m infra.backup restore DIR [--replace]
    python -m infra.backup verify DIR          # checksums only

What goes where in DIR (manifest.json lists every file with its SHA-256, and what each store was):

| store | local profile | cluster profile |
|---|---|---|
| online store, caps, budgets, decision and outcome streams | `redis.jsonl.gz`: every key of REDIS_URL's database (DUMP + TTL), or of the home's embedded server | same |
| Dagster runs, event log, schedules | `files/dagster/`: DAGSTER_HOME (SQLite files copied through SQLite's backup API: consistent while in use) | `postgres/dagster.dump` (pg_dump) and `files/dagster/` (compute logs, dagster.yaml) |
| MLflow tracking store and registry | `files/mlflow-store/mlflow.db` | `postgres/mlflow.dump` |
| MLflow artifacts (models) | `files/mlflow-artifacts/` | same, from HYPERLIFT_MLFLOW_ARTIFACTS_ROOT |
| Feast registry | `files/feast-registry/registry.db` | `postgres/feast.dump` |
| parquet lake, landing folder | `files/lake/`, `files/landing/` | same |
| decision-log spill (write-ahead files), safe-mode switch | `files/decision-log-spill/`, `files/safe-mode/` | same (one backup per host/volume) |
| audit trail, anything else in HYPERLIFT_HOME | `files/audit/`, `files/home/` | same |

The embedded redis-server's own folder is not copied (its keys are, above). Each store is copied consistently on
its own, not all at one instant: stop the writers (Dagster runs, the decision service) for a backup that is
consistent across stores; a running service's write-ahead files are copied as they are and replayed after a restore
(the drain keeps each decision once).

A Redis Cluster (`REDIS_URL=redis+cluster://…`) is backed up the same way, as a logical dump: each master's own keys
(SCAN on that master, DUMP + PTTL pipelined to it), into the same `redis.jsonl.gz`; the manifest records every
master with the slot ranges it served and its key count. Restore sends each RESTORE to whichever master serves the
key's slot *in the target*, so a backup goes back into the same cluster, a new one with another node count or slot
layout, or a single server (and a single server's backup into a cluster). Why not each master's RDB file: a node
loads an RDB only at start, from its own folder, and keeps only the keys of the slots it serves, so RDB files
restore only into a cluster of the same shape, with its nodes stopped and the files placed by hand, which managed
clusters do not allow; DUMP payloads go through the protocol, to any layout. Neither is one instant across masters
(each node would fork at its own moment too): stop the writers for a consistent backup, as for the other stores.
Replicas hold copies of their masters' keys and are not read. Do not reshard while a backup runs: a key moved
between masters during the scans could be read on both or on neither.

`restore` refuses a store that already holds data (a file in its folder, a key in the Redis database, a table in a
database): wipe it, or pass --replace to delete what is there first. It checks every file's checksum before
writing anything. A home restored to another path is rewritten to its new location the first time a process opens
it (infra/home_location.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from infra.audit import audit_dir
from infra.home_location import LOCATION_FILE
from infra.profile import postgres_databases
from infra.redis_cluster import is_cluster_url, master_connections, redis_client
from infra.settings import HyperliftSettings

FORMAT = 1
MANIFEST = "manifest.json"
REDIS_FILE = "redis.jsonl.gz"
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
IGNORED_IN_HOME = (".location.lock",)  # a lock file: means nothing in a copy
REDIS_BATCH = 500


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class FileStore:
    """A store kept as files: a folder, or one file (`single`)."""

    name: str
    root: Path
    single: bool = False


def _serving_paths(settings: HyperliftSettings, redis_url: str) -> tuple[Path, Path]:
    """The decision service's write-ahead root and safe-mode file, as the service resolves them."""
    from serving.core.config import ServingSettings

    serving = ServingSettings(redis_url=redis_url)
    default_home = serving.platform().home  # the service's defaults are under the environment's home: move them
    paths = []
    for path in (serving.wal_root(), serving.safe_mode_path()):
        paths.append(settings.home / path.relative_to(default_home) if _within(path, default_home) else path)
    return paths[0], paths[1]


def file_stores(settings: HyperliftSettings, redis_url: str) -> list[FileStore]:
    """Every store kept as files, for the settings' profile; `home` takes what the others leave in HYPERLIFT_HOME."""
    wal_root, safe_mode = _serving_paths(settings, redis_url)
    stores = [
        FileStore("lake", settings.data_dir),
        FileStore("landing", settings.resolved_landing_dir),
        FileStore("mlflow-artifacts", settings.mlflow_artifacts_dir),
        FileStore("dagster", settings.resolved_dagster_home),
        FileStore("decision-log-spill", wal_root),
        FileStore("safe-mode", safe_mode, single=True),
        FileStore("audit", audit_dir(settings)),
    ]
    if settings.profile == "local":
        stores.append(FileStore("feast-registry", settings.feast_registry_path, single=True))
        mlflow_db = sqlite_path(settings.mlflow_uri)
        if mlflow_db is not None:
            stores.append(FileStore("mlflow-store", mlflow_db, single=True))
    return [*stores, FileStore("home", settings.home)]


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:/// MLflow URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _excluded(store: FileStore, stores: list[FileStore], settings: HyperliftSettings) -> list[Path]:
    """Paths inside `store` that belong to another store (or to no store: the embedded Redis folder)."""
    others = [s.root for s in stores if s is not store and _within(s.root, store.root) and s.root != store.root]
    return [*others, settings.redis_dir]


def _files(store: FileStore, excluded: list[Path]) -> Iterator[Path]:
    """The store's files (absolute), excluded subtrees and SQLite side files left out."""
    if store.single:
        if store.root.is_file():
            yield store.root
        return
    if not store.root.is_dir():
        return
    for path in sorted(store.root.rglob("*")):
        if not path.is_file() or any(_within(path, e) for e in excluded):
            continue
        if path.name in IGNORED_IN_HOME or path.name.endswith(SQLITE_SIDE_FILES):
            continue
        yield path


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == SQLITE_MAGIC


def _copy(source: Path, target: Path) -> None:
    """Copy one file; a SQLite database through the backup API (a consistent copy while others write to it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if _is_sqlite(source):
        src = sqlite3.connect(source, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    else:
        shutil.copy2(source, target)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- Redis -------------------------------------------------------------------------------------------------------


def backup_redis(url: str, target: Path) -> int:
    """Every key of the URL's database (DUMP payload and remaining TTL) into a gzipped JSON-lines file; the count.
    A cluster URL: every master's keys (`backup_redis_cluster`)."""
    if is_cluster_url(url):
        return sum(master["keys"] for master in backup_redis_cluster(url, target))
    client = redis.Redis.from_url(url, socket_timeout=30)
    n = 0
    with gzip.open(target, "wt") as out:
        keys: list[bytes] = []
        for key in client.scan_iter(count=1000):
            keys.append(key)
            if len(keys) >= REDIS_BATCH:
                n += _dump_keys(client, keys, out)
                keys = []
        n += _dump_keys(client, keys, out)
    client.close()
    return n


def _dump_keys(client: redis.Redis, keys: list[bytes], out,  # noqa: ANN001 - a text file
               cluster: RedisCluster | None = None) -> int:
    """DUMP and PTTL of `keys`, pipelined on `client`, written as lines; the count. With `cluster`, `client` is one
    master's own connection: a key whose slot moved away since the scan (answered MOVED or ASK) is read again
    through the cluster client, which follows the redirection."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute(raise_on_error=cluster is None)
    if cluster is not None:
        for index, key in enumerate(keys):
            errors = [r for r in replies[2 * index:2 * index + 2] if isinstance(r, Exception)]
            if any(not isinstance(e, redis.exceptions.AskError) for e in errors):  # MovedError is an AskError
                raise errors[0]
            if errors:
                replies[2 * index], replies[2 * index + 1] = cluster.dump(key), cluster.pttl(key)
    n = 0
    for key, payload, ttl in zip(keys, replies[0::2], replies[1::2]):
        if payload is None:  # expired or deleted since the scan
            continue
        out.write(json.dumps({
            "key": base64.b64encode(key).decode(), "ttl_ms": max(int(ttl), 0),
            "payload": base64.b64encode(payload).decode(),
        }) + "\n")
        n += 1
    return n


def backup_redis_cluster(url: str, target: Path) -> list[dict]:
    """Every master's keys (DUMP payload and remaining TTL) into a gzipped JSON-lines file, the same format as one
    server's; per master, what the manifest records: {"node", "slots": [[first, last], ...], "keys"}. A failed master
    or uncovered slots stop it (infra.redis_cluster.master_connections): a backup missing a shard is no backup."""
    client = redis_client(url)
    if not isinstance(client, RedisCluster):
        raise BackupError(f"{_masked(url)} is not a redis+cluster:// URL; back one server up with backup_redis")
    masters: list[dict] = []
    try:
        with gzip.open(target, "wt") as out:
            for node, connection in master_connections(client):
                n = 0
                keys: list[bytes] = []
                for key in connection.scan_iter(count=1000):  # this master's own keys only
                    keys.append(key)
                    if len(keys) >= REDIS_BATCH:
                        n += _dump_keys(connection, keys, out, cluster=client)
                        keys = []
                n += _dump_keys(connection, keys, out, cluster=client)
                masters.append({"node": node.name, "slots": [list(r) for r in node.slots], "keys": n})
    finally:
        client.close()
    return masters


def _redis_size(client: redis.Redis | RedisCluster) -> int:
    """Keys in the database: DBSIZE of one server, or the sum over every master (redis-py 7.4 sends a bare DBSIZE
    to one node of a cluster)."""
    if isinstance(client, RedisCluster):
        return int(client.dbsize(target_nodes=RedisCluster.PRIMARIES))
    return int(client.dbsize())


def restore_redis(url: str, source: Path, replace: bool) -> int:
    """RESTORE every key of the backup into the URL's database (which must be empty unless `replace`); the count.
    On a cluster each key goes to the master that serves its slot there (redis-py's cluster pipeline splits the
    batch per node), whatever layout the backed-up cluster had."""
    if is_cluster_url(url):
        client: redis.Redis | RedisCluster = redis_client(url)
    else:
        client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        if replace:
            if isinstance(client, RedisCluster):
                client.flushdb(target_nodes=RedisCluster.PRIMARIES)
            else:
                client.flushdb()
        elif size := _redis_size(client):
            raise BackupError(
                f"Redis {_masked(url)} holds {size} key(s); restore into an empty database (FLUSHDB) or "
                "pass --replace"
            )
        n = 0
        pipe = client.pipeline(transaction=False)
        with gzip.open(source, "rt") as lines:
            for line in lines:
                entry = json.loads(line)
                pipe.restore(base64.b64decode(entry["key"]), entry["ttl_ms"], base64.b64decode(entry["payload"]))
                n += 1
                if n % REDIS_BATCH == 0:
                    pipe.execute()
        pipe.execute()
        return n
    finally:
        client.close()


def _masked(url: str) -> str:
    from infra.settings import masked_url

    return masked_url(url)


# -- PostgreSQL (cluster profile) --------------------------------------------------------------------------------


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def postgres_stores(settings: HyperliftSettings) -> dict[str, str]:
    """{store: libpq URL} of the cluster profile's databases (none on the local profile)."""
    if settings.profile != "cluster":
        return {}
    databases = postgres_databases(settings).by_store()
    if "mlflow" not in databases and settings.mlflow_uri.startswith(("postgresql", "postgres")):
        databases["mlflow"] = settings.mlflow_uri
    return {store: _libpq(url) for store, url in databases.items()}


def _run(argv: list[str], what: str) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise BackupError(f"{argv[0]} is not installed: install the PostgreSQL client (apt-get install "
                          f"postgresql-client) to {what}")
    result = subprocess.run([tool, *argv[1:]], capture_output=True, text=True)
    if result.returncode:
        raise BackupError(f"{what} failed: {result.stderr.strip()}")


def _has_tables(url: str) -> bool:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            return bool(cursor.fetchone()[0])
    finally:
        connection.close()


# -- create, verify, restore ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_of(settings: HyperliftSettings) -> Iterator[str]:
    """REDIS_URL, or the home's embedded server (started for the duration when no one runs it)."""
    from infra.launch import project_environment

    with project_environment(settings) as env:
        yield env["REDIS_URL"]


def create(directory: Path, settings: HyperliftSettings | None = None) -> dict:
    """Back every store of the settings' deployment up into `directory` (which must not exist); the manifest."""
    settings = settings or HyperliftSettings()
    if directory.exists():
        raise BackupError(f"{directory} exists; name a new folder (a backup never overwrites another)")
    directory.mkdir(parents=True)
    manifest: dict = {
        "format": FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hyperlift_version": version("hyperlift"), "profile": settings.profile, "home": str(settings.home),
        "stores": {}, "files": {},
    }
    with redis_of(settings) as url:
        if is_cluster_url(url):
            masters = backup_redis_cluster(url, directory / REDIS_FILE)
            manifest["stores"]["redis"] = {"kind": "redis", "keys": sum(m["keys"] for m in masters),
                                           "cluster_masters": masters}
        else:
            manifest["stores"]["redis"] = {"kind": "redis", "keys": backup_redis(url, directory / REDIS_FILE)}
        stores = file_stores(settings, url)
    for store in stores:
        excluded = _excluded(store, stores, settings)
        count = 0
        for path in _files(store, excluded):
            relative = path.name if store.single else path.relative_to(store.root).as_posix()
            _copy(path, directory / "files" / store.name / relative)
            count += 1
        manifest["stores"][store.name] = {
            "kind": "file" if store.single else "folder", "path": str(store.root), "files": count,
        }
    for store, url in postgres_stores(settings).items():
        target = directory / "postgres" / f"{store}.dump"
        target.parent.mkdir(parents=True, exist_ok=True)
        _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(target), url], f"back up the {store} database")
        manifest["stores"][f"postgres-{store}"] = {"kind": "postgres", "database": url.rsplit("/", 1)[-1]}
    manifest["files"] = {
        path.relative_to(directory).as_posix(): sha256(path)
        for path in sorted(directory.rglob("*")) if path.is_file()
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(directory: Path) -> dict:
    """The backup's manifest, after checking that every file it lists is there with its checksum."""
    path = directory / MANIFEST
    if not path.exists():
        raise BackupError(f"{directory} has no {MANIFEST}: not a backup made by `python -m infra.backup create`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format {manifest.get('format')!r}; this version reads format {FORMAT}")
    damaged = [name for name, digest in manifest["files"].items()
               if not (directory / name).is_file() or sha256(directory / name) != digest]
    if damaged:
        raise BackupError(f"{directory}: {len(damaged)} file(s) missing or changed since the backup "
                          f"(first: {damaged[0]}); restore from another copy")
    return manifest


def restore(directory: Path, settings: HyperliftSettings | None = None, replace: bool = False) -> dict:
    """Restore every store from `directory` into the settings' deployment (empty stores, unless `replace`)."""
    settings = settings or HyperliftSettings()
    manifest = verify(directory)
    if manifest["profile"] != settings.profile:
        raise BackupError(f"the backup is of a {manifest['profile']} deployment and HYPERLIFT_PROFILE is "
                          f"{settings.profile}; set HYPERLIFT_PROFILE={manifest['profile']} to restore it")
    with redis_of(settings) as url:
        stores = {store.name: store for store in file_stores(settings, url)}
        _check_empty(stores, settings, replace)  # every store first: a refusal writes nothing
        databases = postgres_stores(settings)
        if not replace:
            _check_empty_redis(url)
            for db_url in databases.values():
                _check_empty_postgres(db_url)
        for store_name, entry in manifest["stores"].items():
            if entry["kind"] in ("file", "folder"):
                _restore_files(directory / "files" / store_name, stores[store_name], replace)
        for store, db_url in databases.items():
            _restore_postgres(directory / "postgres" / f"{store}.dump", db_url)
        restore_redis(url, directory / REDIS_FILE, replace)
    return manifest


def _check_empty(stores: dict[str, FileStore], settings: HyperliftSettings, replace: bool) -> None:
    """Refuse (before writing anything) when a store holds files and --replace was not given."""
    if replace:
        return
    all_stores = list(stores.values())
    for store in all_stores:
        held = next((p for p in _files(store, _excluded(store, all_stores, settings)) if p.name != LOCATION_FILE), None)
        if held is not None and not _only_launch_files(store, settings):
            raise BackupError(
                f"the {store.name} store already holds {held}; restore into empty stores (move "
                f"HYPERLIFT_HOME={settings.home} away) or pass --replace to delete what is there first"
            )


def _only_launch_files(store: FileStore, settings: HyperliftSettings) -> bool:
    """True for the dagster.yaml infra.launch writes before anything else runs (not data)."""
    from infra.profile import PROJECT_DAGSTER_YAMLS

    if store.name != "dagster":
        return False
    files = [p for p in store.root.rglob("*") if p.is_file()]
    return all(p.name == "dagster.yaml" and p.read_text() in PROJECT_DAGSTER_YAMLS for p in files)


def _restore_files(source: Path, store: FileStore, replace: bool) -> None:
    if replace:
        if store.single:
            store.root.unlink(missing_ok=True)
        elif store.root.is_dir() and store.name != "home":  # home: only the files the backup holds are replaced
            shutil.rmtree(store.root)
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = store.root if store.single else store.root / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _check_empty_postgres(url: str) -> None:
    if _has_tables(url):
        raise BackupError(f"database {url.rsplit('/', 1)[-1]} already has tables; restore into an empty database "
                          "(python -m infra.profile create-databases makes missing ones) or pass --replace")


def _check_empty_redis(url: str) -> None:
    client = redis_client(url) if is_cluster_url(url) else redis.Redis.from_url(url, socket_timeout=30)
    try:
        size = _redis_size(client)
    finally:
        client.close()
    if size:
        raise BackupError(
            f"Redis {_masked(url)} holds {size} key(s); restore into an empty database (FLUSHDB) or pass --replace"
        )


def _restore_postgres(dump: Path, url: str) -> None:
    _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--dbname", url, str(dump)],
         f"restore {dump.name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: create, verify or restore."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create").add_argument("directory", type=Path)
    commands.add_parser("verify").add_argument("directory", type=Path)
    restoring = commands.add_parser("restore")
    restoring.add_argument("directory", type=Path)
    restoring.add_argument("--replace", action="store_true", help="delete what the stores hold first")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            manifest = create(args.directory)
        elif args.command == "verify":
            manifest = verify(args.directory)
        else:
            manifest = restore(args.directory, replace=args.replace)
    except BackupError as error:
        print(f"[hyperlift] {error}", file=sys.stderr)
        return 2
    done = {"create": "backed up", "verify": "verified", "restore": "restored"}[args.command]
    print(f"{done} {len(manifest['stores'])} stores ({len(manifest['files'])} files) in {args.directory}")
    for name, entry in manifest["stores"].items():
        detail = f"{entry['keys']} keys" if entry["kind"] == "redis" else (
            f"{entry['files']} file(s) from {entry['path']}" if "files" in entry else f"database {entry['database']}")
        print(f"  {name:20} {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
