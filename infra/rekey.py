"""Re-key the lake and Redis after a rotation of the pseudonym key: old pseudonym → new, for every user.

    python -m infra.rekey [--from-version N] [--redis-url URL] [--reason TEXT]

Below the raw layer every `user_id` is the user's pseudonym under the pseudonym key's current version
(feature_repo/pseudonyms.py). `python -m infra.keys rotate pseudonym` makes a new current version; what is stored
still holds pseudonyms of the previous one. This job moves them (docs/privacy.md, "Rotating a key"):

1. **The map.** Raw ids are known only in the raw layer: `raw/customers.parquet` and `raw/events/**.parquet` (their
   `user_id` column alone is read). Every distinct raw id gives old pseudonym (the retired version, by default the
   newest retired one) → new pseudonym (the current version).
2. **The lake.** Every parquet file under the data dir with an integer `user_id` column, except the raw layer and
   rows as received (`raw/`, `quarantine/`, any folder named `landing`): the column's mapped values become the new
   pseudonyms, the file is rewritten atomically (temp file in the same folder, fsync, rename) with its own schema
   and every other column as it was. Values not in the map (users whose raw rows retention already deleted: the
   raw layer keeps 90 days, the features 400) are left as they are, counted: they stay findable under the retired
   version, which erasure keeps searching. A file in which nothing maps is not rewritten.
3. **Redis.** Per mapped user, the Feast online row, the tiles hash, the consent hash and the seen-event markers
   move from the old pseudonym's key to the new one's, values and TTLs kept: DUMP + PTTL, RESTORE (never
   replacing), DEL, in pipelined batches. On a Redis Cluster the two keys of a user live on different slots (the
   hash tag is the pseudonym), hence no RENAME. A destination that exists already is kept and the source deleted
   (a conflict, counted).
4. An audit entry `key.rekey` with the counts (never an id or a pseudonym).

Idempotent and crash-safe: each file is replaced whole and each key moved by a copy that never overwrites, so a run
stopped anywhere is finished by running it again. A file or key already re-keyed holds new pseudonyms, which are
not keys of the map and are left alone. The exception is negligible: a new pseudonym equal to some other user's old
one (probability about users²/2^53 per rotation, ~1 % at 10 million users, for one pair of users somewhere): a re-run
would move that one user's re-keyed lake values once more, onto the other user's new pseudonym, and in Redis the
two users' keys meet (a conflict keeps one) — the same order of risk as two users sharing a pseudonym
(`infra.keys.PSEUDONYM_MASK`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from feature_repo.pseudonyms import USER_COLUMN, pseudonymize_ids
from feature_repo.stream import SEEN_PREFIX, seen_key, tiles_key
from infra import keys
from infra.audit import AuditLog, cli_actor, default_log
from infra.erasure.lake import parquet_files, write_atomically
from infra.erasure.redis_store import _glob_escape
from infra.erasure.subject import entity_key
from infra.keys import PSEUDONYM, KeysError, Pseudonymizer
from infra.redis_cluster import RedisClient, redis_client
from infra.settings import HyperliftSettings
from serving.store.consent import CONSENT_PREFIX

RAW_DIR = "raw"
RAW_CUSTOMERS = "customers.parquet"
RAW_EVENTS = "events"
SKIPPED_ROOTS = ("raw", "quarantine")
"""Top folders of the data dir holding rows as received (raw ids): never re-keyed."""
LANDING = "landing"
"""A path with a part of this name holds files as they landed (raw ids): never re-keyed."""
REDIS_BATCH_USERS = 5_000
"""Users per pipelined round of the named keys (3 keys each: DUMP+PTTL+EXISTS, RESTORE, DEL rounds)."""
SEEN_BATCH_KEYS = 10_000
"""Seen markers gathered from SCAN before they are moved in one pipelined round."""
SCAN_COUNT = 1_000
PROGRESS_EVERY_S = 2.0
_SEEN_KEY = re.compile(rb"^" + re.escape(SEEN_PREFIX.encode()) + rb"\{(\d+)\}:(.*)\Z", re.DOTALL)


class RekeyError(RuntimeError):
    """The re-key cannot run as asked; the message says what to do."""


@dataclass
class RekeyReport:
    """What a re-key did. Counts only: never an id or a pseudonym."""

    from_version: int
    to_version: int
    raw_ids: int = 0
    """Distinct raw ids of the raw layer: the users mapped old → new."""
    lake_files: int = 0
    """Parquet files below the door with an integer `user_id` column (read)."""
    files_rewritten: int = 0
    rows_rekeyed: int = 0
    rows_current: int = 0
    """Rows already under the new version (a re-run, or rows written after the rotation): left as they are."""
    rows_left: int = 0
    """Rows whose pseudonym no raw id maps (their raw rows are gone): left under the old version."""
    redis: bool = False
    """Whether Redis was re-keyed (no URL: the lake only)."""
    redis_keys_moved: int = 0
    redis_conflicts: int = 0
    """Keys whose destination existed already: the destination kept, the source deleted."""
    seconds: float = 0.0

    def counts(self) -> dict[str, int | float | bool]:
        return asdict(self)


@dataclass(frozen=True)
class PseudonymMap:
    """Old pseudonym → new, as two aligned arrays sorted by the old one (looked up with searchsorted: no dict of
    millions of Python ints), and the new ones sorted (to tell rows already re-keyed)."""

    old: np.ndarray
    new: np.ndarray
    new_sorted: np.ndarray

    def __len__(self) -> int:
        return len(self.old)

    @classmethod
    def build(cls, raw: np.ndarray, old: Pseudonymizer, new: Pseudonymizer) -> "PseudonymMap":
        """The map of the raw ids `raw` (distinct, int64) from `old`'s pseudonyms to `new`'s."""
        raw = np.unique(np.asarray(raw, dtype=np.int64))
        before, after = pseudonymize_ids(raw, old), pseudonymize_ids(raw, new)
        # Two raw ids sharing an old pseudonym (probability ~n²/2^54) already share their lake rows: the first wins.
        before, first = np.unique(before, return_index=True)
        after = after[first]
        return cls(before, after, np.sort(after))

    def lookup(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of `values` that are old pseudonyms of the map, their new pseudonyms where the mask is set)."""
        values = np.asarray(values, dtype=np.int64)
        if not len(self.old):
            return np.zeros(len(values), dtype=bool), values.copy()
        at = np.minimum(np.searchsorted(self.old, values), len(self.old) - 1)
        hit = self.old[at] == values
        out = values.copy()
        out[hit] = self.new[at[hit]]
        return hit, out

    def is_new(self, values: np.ndarray) -> np.ndarray:
        """Mask of `values` that are new pseudonyms of the map (already re-keyed)."""
        if not len(self.new_sorted):
            return np.zeros(len(values), dtype=bool)
        at = np.minimum(np.searchsorted(self.new_sorted, values), len(self.new_sorted) - 1)
        return self.new_sorted[at] == values


class Progress:
    """`rekey: <label> done/total` on stderr, at most every PROGRESS_EVERY_S, and once at the end of a long step."""

    def __init__(self, label: str, total: int | None, enabled: bool = True):
        self.label, self.total, self.enabled = label, total, enabled
        self.started = self.shown = time.monotonic()
        self.done = 0
        self.printed = False

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.shown >= PROGRESS_EVERY_S:
            self._print()
            self.shown = now

    def close(self) -> None:
        if self.enabled and self.printed:
            self._print()

    def _print(self) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        print(f"rekey: {self.label} {self.done}{total}", file=sys.stderr, flush=True)
        self.printed = True


# ---------------------------------------------------------------------------------------------------------- versions


def choose_versions(from_version: int | None = None, *,
                    key_path: Path | None = None) -> tuple[Pseudonymizer, Pseudonymizer]:
    """(old, new): the pseudonym key's version `from_version` (default: the newest retired one) and its current one.
    Raises RekeyError when the key has no retired version or no such version."""
    found = keys.versions(PSEUDONYM, path=key_path)
    if not found:
        raise RekeyError(f"the key file {key_path or keys.key_file()} has no pseudonym key: nothing is keyed by one, "
                         "nothing to re-key")
    current = found[0]
    if len(found) == 1:
        raise RekeyError(f"the pseudonym key has a single version ({current.version}): nothing to re-key. Rotate it "
                         "first: `python -m infra.keys rotate pseudonym --reason ...` (docs/privacy.md, 'Rotating a "
                         "key')")
    retired = {v.version: v for v in found[1:]}
    if from_version is None:
        source = found[1]
    elif from_version == current.version:
        raise RekeyError(f"version {from_version} is the current pseudonym key: re-key from a retired version "
                         f"({sorted(retired)})")
    elif from_version not in retired:
        raise RekeyError(f"the pseudonym key has no version {from_version}: its retired versions are "
                         f"{sorted(retired)}, the current one {current.version}")
    else:
        source = retired[from_version]
    return Pseudonymizer(source.secret, source.version), Pseudonymizer(current.secret, current.version)


# --------------------------------------------------------------------------------------------------------------- map


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One parquet file as it is (no partition columns from its folder names), its handle closed."""
    with pq.ParquetFile(path) as handle:
        return handle.read(columns=columns)


def raw_sources(data_dir: Path) -> list[Path]:
    """The raw layer's files that know raw ids: `raw/customers.parquet` and every parquet file of `raw/events/`."""
    raw = Path(data_dir) / RAW_DIR
    found = [raw / RAW_CUSTOMERS] if (raw / RAW_CUSTOMERS).is_file() else []
    if (raw / RAW_EVENTS).is_dir():
        found += list(parquet_files(raw / RAW_EVENTS))
    return found


def raw_user_ids(data_dir: Path) -> np.ndarray:
    """Every distinct raw user id of the raw layer (int64, sorted); only the `user_id` column is read. Ids kept as
    received text count when they are decimal integers."""
    parts: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for path in raw_sources(data_dir):
        schema = pq.read_schema(path)
        if USER_COLUMN not in schema.names:
            continue
        column = _read(path, [USER_COLUMN]).column(USER_COLUMN).drop_null()
        if pa.types.is_integer(column.type):
            parts.append(np.unique(column.cast(pa.int64()).to_numpy()))
        else:
            text = [str(v).strip() for v in column.to_pylist()]
            parts.append(np.array([int(t) for t in text if re.fullmatch(r"[+]?\d+", t) and int(t) < 2**63],
                                  dtype=np.int64))
    return np.unique(np.concatenate(parts))


# -------------------------------------------------------------------------------------------------------------- lake


def lake_files(data_dir: Path) -> list[Path]:
    """Parquet files below the door: everything under the data dir but `raw/`, `quarantine/` and `landing` folders
    (temp files skipped). Whether one has an integer `user_id` is decided when it is read."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    chosen = []
    for path in parquet_files(root):
        parts = path.relative_to(root).parts
        if parts[0] in SKIPPED_ROOTS or LANDING in parts[:-1]:
            continue
        chosen.append(path)
    return chosen


def rekey_column(column: pa.ChunkedArray | pa.Array, pmap: PseudonymMap) -> tuple[pa.Array | None, int, int, int]:
    """(the column re-keyed, or None when nothing in it maps; rows re-keyed, rows already current, rows left).
    Nulls stay null; the column keeps its type."""
    as64 = column.cast(pa.int64())
    valid = pc.is_valid(as64).to_numpy(zero_copy_only=False)
    values = pc.fill_null(as64, 0).to_numpy(zero_copy_only=False)
    hit, out = pmap.lookup(values)
    hit &= valid
    current = int((pmap.is_new(values) & valid & ~hit).sum())
    mapped = int(hit.sum())
    left = int(valid.sum()) - mapped - current
    if not mapped:
        return None, 0, current, left
    values = np.where(hit, out, values)
    rekeyed = pa.array(values, type=pa.int64(), mask=~valid).cast(column.type)
    return rekeyed, mapped, current, left


def rekey_file(path: Path, pmap: PseudonymMap) -> tuple[bool, int, int, int] | None:
    """Re-key one lake file: None when it has no integer `user_id` column, else (rewritten, rows re-keyed, rows
    already current, rows left). Only the id column is read to decide; the whole file only when something maps."""
    schema = pq.read_schema(path)
    if USER_COLUMN not in schema.names or not pa.types.is_integer(schema.field(USER_COLUMN).type):
        return None
    ids = _read(path, [USER_COLUMN]).column(USER_COLUMN)
    rekeyed, mapped, current, left = rekey_column(ids, pmap)
    if rekeyed is None:
        return False, 0, current, left
    table = _read(path)
    index = table.schema.get_field_index(USER_COLUMN)
    table = table.set_column(index, table.schema.field(index), rekeyed)
    write_atomically(path, table)  # fsyncs the file, renames it, fsyncs the folder
    return True, mapped, current, left


def rekey_lake(data_dir: Path, pmap: PseudonymMap, report: RekeyReport, progress: bool = True) -> None:
    """Re-key every lake file below the door (`lake_files`), adding to `report`."""
    files = lake_files(data_dir)
    shown = Progress("lake files", len(files), progress)
    for path in files:
        outcome = rekey_file(path, pmap)
        if outcome is not None:
            rewritten, mapped, current, left = outcome
            report.lake_files += 1
            report.files_rewritten += int(rewritten)
            report.rows_rekeyed += mapped
            report.rows_current += current
            report.rows_left += left
        shown.step()
    shown.close()


# ------------------------------------------------------------------------------------------------------------- redis


def consent_key(pseudonym: int) -> str:
    """The consent hash of a pseudonym (`ConsentStore.key`)."""
    return f"{CONSENT_PREFIX}:{{{int(pseudonym)}}}"


def named_keys(pseudonym: int) -> tuple[bytes, ...]:
    """The keys of one user that are named by the pseudonym alone: Feast row, tiles, consent."""
    return entity_key(pseudonym), tiles_key(pseudonym).encode(), consent_key(pseudonym).encode()


def _is_busy(reply: object) -> bool:
    return isinstance(reply, redis.ResponseError) and "BUSYKEY" in str(reply)


def move_keys(client: RedisClient, pairs: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """Move each (source, destination) that has a source: value and TTL copied by DUMP/RESTORE (never replacing),
    then the source deleted. A destination that exists already is kept and the source deleted (a conflict: a re-run
    after a crash between the copy and the delete). Three pipelined round trips; returns (moved, conflicts)."""
    if not pairs:
        return 0, 0
    pipe = client.pipeline(transaction=False)
    for source, destination in pairs:
        pipe.dump(source)
        pipe.pttl(source)
        pipe.exists(destination)
    replies = pipe.execute()
    restores: list[tuple[bytes, bytes]] = []
    conflicts: list[bytes] = []
    pipe = client.pipeline(transaction=False)
    for i, (source, destination) in enumerate(pairs):
        dumped, ttl_ms, exists = replies[3 * i:3 * i + 3]
        if dumped is None or ttl_ms == -2:  # no such key (the user has none of this kind), or it just expired
            continue
        if exists:
            conflicts.append(source)
            continue
        pipe.restore(destination, max(int(ttl_ms), 0), dumped, replace=False)
        restores.append((source, destination))
    done: list[bytes] = []
    failed: list[object] = []
    for (source, _), reply in zip(restores, pipe.execute(raise_on_error=False) if restores else []):
        if _is_busy(reply):  # written meanwhile: the destination is kept
            conflicts.append(source)
        elif isinstance(reply, Exception):
            failed.append(reply)  # the source is kept: a re-run moves it
        else:
            done.append(source)
    if done or conflicts:
        pipe = client.pipeline(transaction=False)
        for source in (*done, *conflicts):
            pipe.delete(source)
        pipe.execute()
    if failed:
        raise RekeyError(f"{len(failed)} of {len(pairs)} keys could not be restored (first: {failed[0]}); their "
                         "sources are kept: fix the cause and run `python -m infra.rekey` again")
    return len(done), len(conflicts)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def seen_markers(client: RedisClient) -> Iterator[bytes]:
    """Every seen-event marker (`SEEN_PREFIX{pseudonym}:<event_id>`), by SCAN MATCH (every master on a cluster)."""
    return client.scan_iter(match=_glob_escape(SEEN_PREFIX) + "{*", count=SCAN_COUNT)


def seen_pairs(found: list[bytes], pmap: PseudonymMap) -> list[tuple[bytes, bytes]]:
    """(marker, its key under the new pseudonym) of the markers whose pseudonym the map knows."""
    parsed = [(key, m) for key in found if (m := _SEEN_KEY.match(key if isinstance(key, bytes) else key.encode()))]
    if not parsed:
        return []
    hit, new = pmap.lookup(np.array([int(m.group(1)) for _, m in parsed], dtype=np.int64))
    pairs = []
    for (key, match), mapped, pseudonym in zip(parsed, hit, new):
        if mapped:
            event_id = match.group(2)
            # seen_key's layout, with the event id kept as the bytes it is
            pairs.append((match.group(0), seen_key(int(pseudonym), "").encode() + event_id))
    return pairs


def rekey_redis(client: RedisClient, pmap: PseudonymMap, report: RekeyReport, batch_users: int = REDIS_BATCH_USERS,
                progress: bool = True) -> None:
    """Move every mapped user's Feast row, tiles, consent and seen markers from the old pseudonym's keys to the new
    one's, adding to `report`."""
    report.redis = True
    shown = Progress("redis users", len(pmap), progress)
    for start in range(0, len(pmap), batch_users):
        olds, news = pmap.old[start:start + batch_users], pmap.new[start:start + batch_users]
        pairs = [pair for old, new in zip(olds, news) for pair in zip(named_keys(int(old)), named_keys(int(new)))]
        moved, conflicts = move_keys(client, pairs)
        report.redis_keys_moved += moved
        report.redis_conflicts += conflicts
        shown.step(len(olds))
    shown.close()
    # One SCAN over the markers, not one per user (each SCAN MATCH walks the whole keyspace). A marker moved during
    # the scan may be returned again under its new pseudonym: not a key of the map, so it is left alone.
    shown = Progress("redis seen markers scanned", None, progress)
    for found in _chunks(seen_markers(client), SEEN_BATCH_KEYS):
        moved, conflicts = move_keys(client, seen_pairs(found, pmap))
        report.redis_keys_moved += moved
        report.redis_conflicts += conflicts
        shown.step(len(found))
    shown.close()


# --------------------------------------------------------------------------------------------------------------- job


def rekey(settings: HyperliftSettings | None = None, *, from_version: int | None = None, redis_url: str | None = None,
          reason: str = "pseudonym key rotation", actor: str | None = None, key_path: Path | None = None,
          audit: AuditLog | None = None, batch_users: int = REDIS_BATCH_USERS, progress: bool = True) -> RekeyReport:
    """Re-key the lake (and Redis, with `redis_url`) from pseudonym key version `from_version` (default: the newest
    retired one) to the current one; appends the `key.rekey` audit entry. Re-run it after a failure: it finishes."""
    started = time.monotonic()
    settings = settings or HyperliftSettings()
    key_path = key_path or keys.key_file(settings)
    old, new = choose_versions(from_version, key_path=key_path)
    report = RekeyReport(old.version, new.version)
    pmap = PseudonymMap.build(raw_user_ids(settings.data_dir), old, new)
    report.raw_ids = len(pmap)
    rekey_lake(settings.data_dir, pmap, report, progress)
    if redis_url:
        client = redis_client(redis_url)
        try:
            rekey_redis(client, pmap, report, batch_users, progress)
        finally:
            client.close()
    report.seconds = round(time.monotonic() - started, 3)
    (audit or default_log()).record(actor or cli_actor(), "key.rekey", target=f"key:{PSEUDONYM}", reason=reason,
                                    **report.counts())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.rekey", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-version", type=int, default=None,
                        help="the retired pseudonym key version the stores hold (default: the newest retired one)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="the online store to re-key (default: REDIS_URL; none: the lake only)")
    parser.add_argument("--reason", default="pseudonym key rotation")
    args = parser.parse_args(argv)
    try:
        choose_versions(args.from_version)  # refuse before saying anything else
        if not args.redis_url:
            print("rekey: no Redis URL (--redis-url or REDIS_URL): re-keying the lake only; run again with the URL "
                  "to re-key Redis (the lake, already done, is then left as it is)", file=sys.stderr)
        report = rekey(from_version=args.from_version, redis_url=args.redis_url, reason=args.reason)
    except (RekeyError, KeysError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: Redis failed ({exc}); the lake and the keys moved so far are done: run again to finish",
              file=sys.stderr)
        return 1
    print(json.dumps(report.counts()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
