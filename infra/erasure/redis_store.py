"""Redis: the user's keys, their stream entries, and the server's append-only and snapshot files rewritten.

Keys, by what names them:
- the user's lake id, the pseudonym (under every version of the pseudonym key, and the raw id of a store written
  before the lake was pseudonymous: `Subject.ids`): Feast's online row (one hash per entity: every `user` feature
  view, the embedding included), the stream tiles `hyperlift:tiles:{id}`, seen-event markers
  `hyperlift:seen:{id}:*`, consent `hyperlift:consent:{id}`;
- the user key (the trace salt's hash): frequency caps `hyperlift:caps:{user_key}:*` and item caps
  `hyperlift:item_caps:{user_key}:*`;
- the user's outcome ids: idempotency claims `{hyperlift:outcomes}:idempotency:<outcome_id>` (a hash of the outcome
  as sent, user id included; `hyperlift:outcomes:idempotency:<outcome_id>` for claims made before 2026-12-07).

Streams cannot be edited, and XDEL only flags an entry inside its node: the bytes stay in memory and in every RDB
and append-only file written afterwards. So a stream holding the user is rebuilt: its entries are copied to a new
key in stream order with their own ids (the user's decisions and outcomes anonymised, their consent calls and
quarantined events left out), then, in one Lua call that first checks nothing arrived meanwhile, the tail is
copied, the consumer groups are re-created and the copy is renamed over the stream. A group's pending entries are
delivered again (its last-delivered id is set before the oldest of them): the lake drops the duplicates on read.

Finally BGREWRITEAOF and BGSAVE rewrite the server's files from memory, which no longer holds the user.

On a Redis Cluster (the client a `redis+cluster://` URL builds, infra.redis_cluster.redis_client) the same code
runs: SCAN goes to every master (redis-py 7.4's RedisCluster routes SCAN to all primaries and scan_iter follows
each node's cursor), DEL of keys on several slots is split per slot by redis-py (one DEL per slot, never CROSSSLOT),
the copy of a stream is `{<stream>}:erasure-copy` (its hash tag is the stream's name, so the finishing script's two
keys share the stream's slot), and the files are rewritten on every node, masters and replicas alike, since each
keeps its own append-only file and snapshot holding its copy of the data (`persist`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from infra.erasure.anonymise import Anonymiser
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject
from infra.redis_cluster import NodeRole, cluster_topology, node_connection
from serving.store.outcomes import claim_key

TILES_PREFIX = "hyperlift:tiles:"  # feature_repo/stream.py
SEEN_PREFIX = "hyperlift:seen:"  # feature_repo/stream.py
CONSENT_PREFIX = "hyperlift:consent"  # serving/store/consent.py
CAP_PREFIXES = ("hyperlift:caps", "hyperlift:item_caps")  # serving/policy/caps.py, serving/decision/item_caps.py
DECISION_STREAM, OUTCOME_STREAM = "hyperlift:decisions", "hyperlift:outcomes"  # serving/store/decision_log.py
QUARANTINE_STREAM, CONSENT_STREAM = "hyperlift:quarantine", "hyperlift:consent_events"
STREAMS = (DECISION_STREAM, OUTCOME_STREAM, QUARANTINE_STREAM, CONSENT_STREAM)
"""Streams whose records can name a user (decisions and outcomes by user key; refused events by raw id, as received;
consent calls by pseudonym and user key)."""
COPY_BATCH = 1_000
PERSIST_TIMEOUT_S = 600.0

# KEYS: stream, copy. ARGV: the stream's last id as the client last saw it, the id the copy holds entries up to
# ("-": none yet), then the ids to leave out, "|", and replacements as id, record pairs for the entries after it.
# Returns "retry" when entries arrived after the last id the client saw.
_FINISH = """
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last
for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
if last ~= ARGV[1] then return 'retry' end
local skip, replace, i = {}, {}, 3
while ARGV[i] ~= '|' do skip[ARGV[i]] = true; i = i + 1 end
i = i + 1
while i <= #ARGV do replace[ARGV[i]] = ARGV[i + 1]; i = i + 2 end
local start = ARGV[2] == '-' and '-' or '(' .. ARGV[2]
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], start, '+')) do
  local id, fields = entry[1], entry[2]
  if not skip[id] then
    if replace[id] then
      for f = 1, #fields, 2 do if fields[f] == 'record' then fields[f + 1] = replace[id] end end
    end
    redis.call('XADD', KEYS[2], id, unpack(fields))
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- every entry was the user's: an empty stream that keeps its last id (new entries must sort after it)
  redis.call('XADD', KEYS[2], last, 'erased', '1')
  redis.call('XDEL', KEYS[2], last)
end
redis.call('XSETID', KEYS[2], last)
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local g = {}
  for k = 1, #group, 2 do g[group[k]] = group[k + 1] end
  local from = g['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], g['name'])
  if pending[1] > 0 then
    local before = redis.call('XREVRANGE', KEYS[1], '(' .. pending[2], '-', 'COUNT', 1)
    from = #before > 0 and before[1][1] or '0-0'
  end
  redis.call('XGROUP', 'CREATE', KEYS[2], g['name'], from)
end
redis.call('RENAME', KEYS[2], KEYS[1])
return 'rebuilt'
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def user_keys(client: redis.Redis | RedisCluster, subject: Subject) -> list[bytes]:
    """Every key of the user that exists (Feast row, tiles, seen markers, consent, caps); on a cluster the SCANs
    visit every master."""
    named = [*subject.entity_keys, *(f"{TILES_PREFIX}{tag}".encode() for tag in subject.hash_tags),
             *(f"{CONSENT_PREFIX}:{tag}".encode() for tag in subject.hash_tags)]
    found = [key for key in named if client.exists(key)]
    patterns = [f"{SEEN_PREFIX}{tag}:*" for tag in subject.hash_tags]  # by pseudonym (every key version), raw id
    patterns += [f"{p}:{{{key}}}:*" for p in CAP_PREFIXES for key in subject.user_keys]  # every trace salt version
    for pattern in patterns:
        found += list(client.scan_iter(match=_glob_escape(pattern), count=1000))
    return found


def _glob_escape(pattern: str) -> str:
    """A SCAN pattern whose braces are literal (Redis glob treats only * ? [ ] \\ specially; keep `*` as the
    wildcard)."""
    return pattern.replace("[", "\\[").replace("]", "\\]").replace("?", "\\?")


def stream_records(client: redis.Redis, stream: str) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(entry id, parsed record or None) of every entry of a stream, oldest first, read in batches."""
    start = "-"
    while True:
        entries = client.xrange(stream, min=start, max="+", count=COPY_BATCH)
        for entry_id, fields in entries:
            yield _text(entry_id), _record(fields)
        if len(entries) < COPY_BATCH:
            return
        start = "(" + _text(entries[-1][0])


def _record(fields: dict) -> dict[str, Any] | None:
    raw = fields.get(b"record", fields.get("record"))
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def outcome_ids(client: redis.Redis, subject: Subject) -> set[str]:
    """Outcome ids of the user's outcomes still in the outcome stream (their idempotency claims name them)."""
    return {r["outcome_id"] for _, r in stream_records(client, OUTCOME_STREAM)
            if r is not None and r.get("user_key") in subject.user_keys and isinstance(r.get("outcome_id"), str)}


def rewrite_for(stream: str, anonymiser: Anonymiser) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """What becomes of the user's record in `stream`: anonymised (decisions, outcomes) or left out (None)."""
    if stream == DECISION_STREAM:
        return anonymiser.decision
    if stream == OUTCOME_STREAM:
        return anonymiser.outcome
    return lambda record: None


def rebuild_stream(client: redis.Redis, stream: str, subject: Subject, anonymiser: Anonymiser,
                   report: StoreReport, attempts: int = 20) -> None:
    """Rebuild `stream` without the user (see the module docstring); a stream that does not hold them is left as
    it is. The bulk is copied in batches (Redis keeps serving); only the tail that arrived meanwhile is copied in
    the atomic finish."""
    if not client.exists(stream) or not any(subject.owns_record(r) for _, r in stream_records(client, stream)):
        return
    rewrite = rewrite_for(stream, anonymiser)
    copy = f"{{{stream}}}:erasure-copy"  # on the stream's slot: the swap renames it over the stream
    client.delete(copy)
    removed = anonymised = 0
    copied = "-"
    while True:  # the bulk, in batches
        start = "-" if copied == "-" else "(" + copied
        entries = client.xrange(stream, min=start, max="+", count=COPY_BATCH)
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in entries:
            record = _record(fields)
            if record is not None and subject.owns_record(record):
                changed = rewrite(record)
                if changed is None:
                    removed += 1
                    continue
                fields = {**fields, b"record": json.dumps(changed).encode()}
                anonymised += 1
            pipe.xadd(copy, fields, id=entry_id)
        pipe.execute()
        if entries:
            copied = _text(entries[-1][0])
        if len(entries) < COPY_BATCH:
            break
    finish = client.register_script(_FINISH)
    for _ in range(attempts):  # the tail, atomically with the swap
        last = _text(client.xinfo_stream(stream)["last-generated-id"])
        start = "-" if copied == "-" else "(" + copied
        skip: list[str] = []
        replace: dict[str, str] = {}
        for entry_id, fields in client.xrange(stream, min=start, max="+"):
            record = _record(fields)
            if record is not None and subject.owns_record(record):
                changed = rewrite(record)
                if changed is None:
                    skip.append(_text(entry_id))
                else:
                    replace[_text(entry_id)] = json.dumps(changed)
        pairs = [x for kv in replace.items() for x in kv]
        if _text(finish(keys=[stream, copy], args=[last, copied, *skip, "|", *pairs])) == "rebuilt":
            report.entries_removed += removed + len(skip)
            report.entries_anonymised += anonymised + len(replace)
            return
    client.delete(copy)
    raise RuntimeError(f"{stream} kept growing while it was rebuilt ({attempts} attempts); run the erasure again "
                       "when its producers are quieter")


def persist(client: redis.Redis | RedisCluster, report: StoreReport, home: Path,
            timeout_s: float = PERSIST_TIMEOUT_S) -> None:
    """Rewrite the append-only file and the snapshot from memory (BGREWRITEAOF, BGSAVE), waiting for both. On a
    cluster, on every node (`persist_cluster`)."""
    if isinstance(client, RedisCluster):
        persist_cluster(client, report, home, timeout_s)
        return
    written: list[tuple[str, Path]] = []
    try:
        _persist_node(client, timeout_s, written)
    except ConfigRefused as exc:  # managed Redis without CONFIG
        report.notes.append(f"CONFIG refused ({exc}): the server's own files were not rewritten; ask its operator")
    finally:  # what was rewritten before a failure is in the receipt too
        report.files_rewritten += [_shown(path, home) for _, path in written]


def persist_cluster(client: RedisCluster, report: StoreReport, home: Path,
                    timeout_s: float = PERSIST_TIMEOUT_S) -> None:
    """`persist` on every node of the cluster, masters and replicas (each has its own files with its copy of the
    data), all at once (each node forks its own child; waiting for them in turn would add their times up). The
    receipt gets each file as `host:port:<path>` and one note per node saying what was rewritten and the status it
    reported. A node that is down or refuses is reported, the others are still rewritten, then the erasure fails so
    that it is run again once the node is back (or forgotten by the cluster, CLUSTER FORGET, if it is gone)."""
    nodes = cluster_topology(client)
    failures: list[str] = []

    written: dict[str, list[tuple[str, Path]]] = {node.name: [] for node in nodes}

    def one(node: NodeRole) -> None:
        own = node_connection(client, node)
        if node.role == "replica":
            _wait_replicated(client, own, timeout_s)
        _persist_node(own, timeout_s, written[node.name], on_another_machine=True)

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = {node: pool.submit(one, node) for node in nodes if not node.failed}
        for node in nodes:
            if node.failed:
                failures.append(f"{node.describe()}: marked failed by the cluster, its files were not rewritten")
                report.notes.append(f"{node.describe()}: down, files not rewritten")
                continue
            try:
                futures[node].result()
            except ConfigRefused as exc:  # a managed cluster: as for one managed server, noted
                report.notes.append(f"{node.describe()}: CONFIG refused ({exc}): its files were not rewritten; ask "
                                    "the cluster's operator")
                continue
            except (redis.exceptions.RedisError, RuntimeError, TimeoutError) as exc:
                failures.append(f"{node.describe()}: {exc}")
                report.notes.append(f"{node.describe()}: failed: {exc}")
                continue
            finally:
                report.files_rewritten += [f"{node.name}:{path}" for _, path in written[node.name]]
            done = ", ".join(f"{command} ok" for command, _ in written[node.name])
            report.notes.append(f"{node.describe()}: {done or 'no append-only file or snapshot to rewrite'}")
    if failures:
        raise RuntimeError(
            f"the files of {len(failures)} of {len(nodes)} cluster node(s) were not rewritten and may still hold the "
            f"user ({'; '.join(failures)}); bring the node(s) back (or CLUSTER FORGET one that is gone) and run the "
            "erasure again"
        )


def _wait_replicated(client: RedisCluster, replica: redis.Redis, timeout_s: float) -> None:
    """Until the replica has applied everything its master had written when this was called (the erasure's deletes
    and renames): replication is asynchronous, and a replica's snapshot taken before the DEL arrived would still
    hold the user."""
    info = replica.info("replication")
    master = node_connection(client, NodeRole(_text(info["master_host"]), int(info["master_port"]), "master"))
    target = int(master.info("replication")["master_repl_offset"])
    deadline = time.monotonic() + timeout_s
    while True:
        info = replica.info("replication")
        if info.get("master_link_status") == "up" and int(info.get("slave_repl_offset", -1)) >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the replica did not catch up with its master {info['master_host']}:{info['master_port']} within "
                f"{timeout_s} s (link {info.get('master_link_status')}, offset {info.get('slave_repl_offset')} of "
                f"{target}); its files were not rewritten: check the replication link and run the erasure again"
            )
        time.sleep(0.02)


class ConfigRefused(Exception):
    """The server refused CONFIG GET (a managed Redis): its files cannot be located or rewritten by us."""


def _persist_node(client: redis.Redis, timeout_s: float, written: list[tuple[str, Path]],
                  on_another_machine: bool = False) -> None:
    """BGREWRITEAOF (if the append-only file is on) then BGSAVE (if save points are set or a snapshot exists) on one
    server, each waited for and its status checked; appends each (command, file) to `written` once done (so a
    failure of the second leaves the first reported). `on_another_machine`: the server's folder may not be visible
    here, so whether it has a snapshot is asked of the server too. Raises ConfigRefused when CONFIG is refused,
    before rewriting anything."""
    try:
        aof = _text(client.config_get("appendonly").get("appendonly", "no")) == "yes"
        directory = _text(client.config_get("dir").get("dir", ""))
        dbfilename = _text(client.config_get("dbfilename").get("dbfilename", "dump.rdb"))
        saves = _text(client.config_get("save").get("save", ""))
        diskless_load = _text(client.config_get("repl-diskless-load").get("repl-diskless-load", "disabled"))
    except redis.exceptions.ResponseError as exc:
        raise ConfigRefused(str(exc)) from exc
    if aof:
        _start(client, client.bgrewriteaof, timeout_s)
        _wait_idle(client, timeout_s)
        _check(client, "aof_last_bgrewrite_status", "BGREWRITEAOF")
        written.append(("BGREWRITEAOF", Path(directory) / _text(client.config_get("appendfilename").get(
            "appendfilename", "appendonly.aof"))))
    if saves or (Path(directory) / dbfilename).exists() or (
            on_another_machine and _snapshot_on_node(client, diskless_load)):
        _start(client, client.bgsave, timeout_s)
        _wait_idle(client, timeout_s)
        _check(client, "rdb_last_bgsave_status", "BGSAVE")
        written.append(("BGSAVE", Path(directory) / dbfilename))


def _snapshot_on_node(client: redis.Redis, diskless_load: str) -> bool:
    """Whether a server whose folder is not visible here has likely written a snapshot without save points: it ran
    a BGSAVE since it started (by hand, or a master's disk-based replication sync), or it is a replica that loads its
    master's data through a file (repl-diskless-load disabled: the file stays, as dump.rdb)."""
    info = client.info("persistence")
    if int(info.get("rdb_last_bgsave_time_sec", -1)) >= 0 or int(info.get("rdb_saves", 0)) > 0:
        return True
    return diskless_load == "disabled" and client.info("replication").get("role") == "slave"


def _start(client: redis.Redis, command: Callable[[], Any], timeout_s: float) -> None:
    """Start BGREWRITEAOF or BGSAVE once the server has no child; again if one started in between (an automatic
    rewrite or save point: Redis refuses a second child, or schedules the rewrite, which `_busy` waits for)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _wait_idle(client, timeout_s)
        try:
            command()
            return
        except redis.exceptions.ResponseError as exc:
            if "in progress" not in str(exc) and "child process" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis kept rewriting its files for {timeout_s} s; see the server's log") from exc
            time.sleep(0.02)


def _shown(path: Path, home: Path) -> str:
    """A path relative to the home when it is inside it (the receipt's form)."""
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)


def _busy(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return bool(int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))
                or int(info.get("rdb_bgsave_in_progress", 0)))


def _wait_idle(client: redis.Redis, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _busy(client):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis kept rewriting its files for {timeout_s} s; see the server's log")
        time.sleep(0.02)


def _check(client: redis.Redis, field: str, command: str) -> None:
    status = _text(client.info("persistence").get(field, "ok"))
    if status != "ok":
        raise RuntimeError(f"{command} failed ({field}={status}); the server's files may still hold the user: see "
                           "its log, fix the cause (disk space?) and run the erasure again")


def erase_redis(client: redis.Redis, subject: Subject, anonymiser: Anonymiser, report: StoreReport,
                known_outcomes: Collection[str] = ()) -> None:
    """Delete the user's keys (and the idempotency claims of their outcomes: those in the outcome stream and
    `known_outcomes`, from the lake), then rebuild the streams that hold them. `persist` rewrites the files after."""
    outcomes = sorted(outcome_ids(client, subject) | set(known_outcomes))
    claims = [name for oid in outcomes
              for name in (claim_key(OUTCOME_STREAM, oid), f"{OUTCOME_STREAM}:idempotency:{oid}")]  # new, earlier
    keys = user_keys(client, subject) + [c.encode() for c in claims if client.exists(c)]
    if keys:
        # On a cluster, RedisCluster.delete sends one DEL per slot (redis-py 7.4 _split_command_across_slots).
        report.keys_deleted += int(client.delete(*keys))
    for stream in STREAMS:
        rebuild_stream(client, stream, subject, anonymiser, report)


def _readable(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "hex:" + value.hex()


def export_keys(client: redis.Redis, subject: Subject) -> dict[str, Any]:
    """The user's keys and their values (binary values, such as Feast's protobufs, as hex)."""
    out: dict[str, Any] = {}
    for key in user_keys(client, subject):
        kind = _text(client.type(key))
        if kind == "hash":
            value: Any = {_readable(f): _readable(v) for f, v in client.hgetall(key).items()}
        elif kind == "zset":
            value = [[_readable(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "string":
            value = _readable(client.get(key) or b"")
        else:
            value = f"({kind})"
        out[_readable(key)] = value
    return out


def export_streams(client: redis.Redis, subject: Subject) -> dict[str, list[dict[str, Any]]]:
    """The user's records in each stream, with their entry ids."""
    return {stream: [{"id": i, "record": r} for i, r in stream_records(client, stream) if subject.owns_record(r)]
            for stream in STREAMS if client.exists(stream)}
