"""Redis memory per user of the streaming tiles, folded vs unfolded, after 30 days and after 3 years of activity.

Every simulated day each user's events go through the stream's apply script (`feature_repo.stream.APPLY_LUA`, as
`StreamUpdater` sends them) into two databases of one redis-server: one never folded, one folded each day through
`TileFolding().through_day(watermark)` with the default lateness (what `StreamUpdater` does on a user's first call or
refresh of the day). Reported: `MEMORY USAGE <tiles key> SAMPLES 0` (exact), fields and encoding per user, and the
features of both databases compared bit for bit at the end.

    .venv/bin/python -m bench.tile_memory [--users 20] [--write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from bench.report import machine_line, write_section
from feature_repo.event_time import Lateness
from feature_repo.stream import APPLY_LUA, fold_user_tiles, read_tiles, seen_key, tiles_key
from feature_repo.tile_fold import FoldStats, TileFolding
from feature_repo.transforms import (
    ACTIVITY_FEATURES, TILE_MAXES, TILE_SUMS, event_contributions, snapshots_from_tiles,
)

TITLE = "## Redis memory per user: stream tiles folded vs unfolded (`.venv/bin/python -m bench.tile_memory --write`)"
FIRST_DAY = pd.Timestamp("2024-01-01", tz="UTC")
CHECKPOINTS = (30, 3 * 365)
PROFILES = {
    "daily": "a view, a purchase and a promo exposure a day (9 tile fields a day)",
    "busy": "views in all 8 categories, a purchase and an exposure a day (16 tile fields a day, the most)",
}


def day_events(profile: str, users: np.ndarray, day: pd.Timestamp) -> pd.DataFrame:
    """One day's accepted events of every user, in the columns `event_contributions` reads."""
    rows = []
    for user in users:
        categories = [int(user + day.dayofyear) % 8] if profile == "daily" else list(range(8))
        for k, c in enumerate(categories):
            rows.append(("page_view", user, day + pd.Timedelta(minutes=10 + k), c, 10.0 + c, None))
        rows.append(("purchase", user, day + pd.Timedelta(hours=2), 1, 10.0, 12.5))
        rows.append(("promo_exposure", user, day + pd.Timedelta(hours=3), None, None, None))
    frame = pd.DataFrame(rows, columns=["event_type", "user_id", "ts", "category_id", "price", "revenue"])
    frame["device"] = "mobile"
    frame["event_id"] = [f"{profile}-{day.date()}-{i}" for i in range(len(frame))]
    return frame


def apply_day(client: redis.Redis, script, events: pd.DataFrame) -> None:
    """Every event through the apply script, one pipeline (the stream's step 1)."""
    parts = event_contributions(events)
    ts_us = events["ts"].dt.as_unit("us").astype("int64").to_numpy()
    sums, maxes = parts[list(TILE_SUMS)].to_numpy(), parts[list(TILE_MAXES)].to_numpy()
    pipe = client.pipeline(transaction=False)
    for i, (user, day, event_id) in enumerate(zip(parts["user_id"], parts["day"], events["event_id"])):
        script(keys=[seen_key(user, event_id), tiles_key(user)],
               args=[5, int(day), int(ts_us[i]), "bench", *sums[i].tolist(), *maxes[i].tolist()], client=pipe)
    replies = pipe.execute()
    if any(r != 1 for r in replies):
        raise RuntimeError(f"the apply script refused events: replies {sorted(set(replies))}")


def usage(client: redis.Redis, users: np.ndarray) -> dict:
    """Mean exact memory, fields and the encodings of the users' tile hashes."""
    memory = [client.memory_usage(tiles_key(int(u)), samples=0) for u in users]
    fields = [client.hlen(tiles_key(int(u))) for u in users]
    encodings = sorted({client.object("encoding", tiles_key(int(u))).decode() for u in users})
    return {"bytes": float(np.mean(memory)), "fields": float(np.mean(fields)), "encoding": "/".join(encodings)}


def features(client: redis.Redis, users: np.ndarray, stamp: pd.Timestamp) -> np.ndarray:
    """The users' features at `stamp` from what Redis holds (what `StreamUpdater._write_rows` computes)."""
    tiles, folds = read_tiles(client, users)
    rows = snapshots_from_tiles(tiles, users, pd.DatetimeIndex([stamp]), folds)
    return rows[list(ACTIVITY_FEATURES)].to_numpy(np.float32)


def measure(profile: str, base_url: str, users: np.ndarray) -> dict:
    """Run 3 years of the profile into an unfolded and a folded database; figures at each checkpoint."""
    plain, folded = redis.Redis.from_url(f"{base_url}/1"), redis.Redis.from_url(f"{base_url}/2")
    plain.flushdb()
    folded.flushdb()
    scripts = {id(c): c.register_script(APPLY_LUA) for c in (plain, folded)}
    folding, lateness, stats = TileFolding(), Lateness(), FoldStats()
    figures: dict = {"fold_s": 0.0}
    for n in range(1, CHECKPOINTS[-1] + 1):
        day = FIRST_DAY + pd.Timedelta(days=n - 1)
        events = day_events(profile, users, day)
        for client in (plain, folded):
            apply_day(client, scripts[id(client)], events)
        started = time.perf_counter()
        fold_user_tiles(folded, users, folding.through_day(lateness.watermark(day)), folding.min_days, stats)
        figures["fold_s"] += time.perf_counter() - started
        if n in CHECKPOINTS:
            figures[n] = {"unfolded": usage(plain, users), "folded": usage(folded, users)}
            print(f"  {profile} day {n}: unfolded {figures[n]['unfolded']}, folded {figures[n]['folded']}", flush=True)
    stamp = FIRST_DAY + pd.Timedelta(days=CHECKPOINTS[-1])
    if not np.array_equal(features(plain, users, stamp), features(folded, users, stamp)):
        raise RuntimeError("folded and unfolded tiles give different features: a bug in the fold")
    figures["stats"] = stats
    return figures


def markdown(results: dict, args: argparse.Namespace, server: dict, machine: str) -> str:
    """The section for docs/benchmarks.md."""
    lines = [
        TITLE, "",
        f"{args.users} users per profile, each active every day, one event day at a time through the stream's apply "
        "script; the folded database folds daily with the defaults (lateness 2 days, margin 1 day). "
        f"redis-server {server['redis_version']}, `{server['listpack_entries'][0]}` {server['listpack_entries'][1]}; "
        f"{machine}. `MEMORY USAGE <key> SAMPLES 0` of `hyperlift:tiles:{{<user>}}`, mean per user.", "",
        "| profile | after | unfolded bytes | unfolded fields | folded bytes | folded fields | unfolded / folded |",
        "|---|---|---|---|---|---|---|",
    ]
    for profile, figures in results.items():
        for n in CHECKPOINTS:
            plain, folded = figures[n]["unfolded"], figures[n]["folded"]
            lines.append(
                f"| {profile} | {n} days | {plain['bytes']:,.0f} ({plain['encoding']}) | {plain['fields']:,.0f} "
                f"| {folded['bytes']:,.0f} ({folded['encoding']}) | {folded['fields']:,.0f} "
                f"| {plain['bytes'] / folded['bytes']:.1f}× |"
            )
    lines.append("")

    def per_field(*encodings: str) -> str:
        """Mean bytes per field over the checkpoints measured in these encodings."""
        pairs = [(f["bytes"], f["fields"]) for figures in results.values() for n in CHECKPOINTS
                 for f in (figures[n]["unfolded"], figures[n]["folded"]) if f["encoding"] in encodings]
        return f"{sum(b for b, _ in pairs) / sum(n for _, n in pairs):.0f}" if pairs else "n/a"

    for profile, figures in results.items():
        stats = figures["stats"]
        lines.append(
            f"- {profile}: {PROFILES[profile]}. {stats.users:,} user folds of {stats.days:,} day tiles, "
            f"{stats.conflicts} refused; folding (read, plan, script) took "
            f"{figures['fold_s'] * 1000 / stats.users:.2f} ms per user fold, client side. Features of both "
            "databases at the end: bit-identical (checked)."
        )
    lines += ["", "Folded, a user's hash holds its running tile (≤ 20 fields), 3 of bookkeeping and the days since "
              "the watermark − margin (4 with the defaults): flat after the first week, whatever the history. "
              "Unfolded it grows by the day's fields; past the server's `hash-max-*-entries` it is converted "
              "to a hash table, which costs more per field "
              f"({per_field('hashtable')} bytes per field against {per_field('ziplist', 'listpack')} here).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="users per profile")
    parser.add_argument("--write", action="store_true", help="record the figures in docs/benchmarks.md")
    args = parser.parse_args()
    from infra.redis_server import EmbeddedRedis

    machine = machine_line()
    # Ids of a pseudonym's size (16 digits, feature_repo/pseudonyms.py): the key's length counts in MEMORY USAGE.
    users = 2**52 + np.arange(1, args.users + 1, dtype=np.int64)
    with EmbeddedRedis(Path(tempfile.mkdtemp(prefix="hyperlift-bench-tiles-")) / "redis") as server:
        admin = redis.Redis.from_url(server.url)
        info = {"redis_version": admin.info("server")["redis_version"],
                "listpack_entries": next(iter(admin.config_get("hash-max-*-entries").items()), ("?", "?"))}
        results = {}
        for profile in PROFILES:
            print(f"{profile}: {PROFILES[profile]}", flush=True)
            results[profile] = measure(profile, server.url.rsplit("/", 1)[0] if server.url.count("/") > 2
                                       else server.url, users)
    section = markdown(results, args, info, machine)
    print(section)
    if args.write:
        write_section(TITLE, section)


if __name__ == "__main__":
    main()
