"""The lake fold (feature_repo/lake_fold.py): what retention's fold costs, and what it saves the daily snapshots.

A shop of `--users` users, each active on a share of `--days` arrival days (tiles with late days as the pipeline
writes them, `--allowed` days of lateness). Retention at a 365-day period folds every partition older than that
(`fold_expiring`, what `python -m infra.erasure retention` runs before deleting them), then one arrival day's
snapshots (`event_time.partition_snapshots`, what `user_activity_features` computes per day) are computed twice:
from every tile partition, as without retention, and from the fold, its carried tiles and the partitions kept.
Both must be equal bit for bit; the bench checks it and reports the times, rows/s and peak memory.

    .venv/bin/python -m bench.lake_fold [--users 20000] [--days 500] [--write]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd

from bench.report import machine_line, write_section
from feature_repo.event_time import Lateness, partition_snapshots
from feature_repo.lake_fold import LakeFold, day_number, fold_expiring
from feature_repo.transforms import ACTIVITY_FEATURES, TILE_COLUMNS, TILE_MAXES, TILE_SUMS, US_PER_DAY, merge_tiles

TITLE = "## Lake fold: retention's fold and the daily snapshots with it (`.venv/bin/python -m bench.lake_fold --write`)"
FIRST = pd.Timestamp("2025-01-01")
KEEP_DAYS = 365


def partitions(users: int, days: int, allowed: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tile partitions by arrival day: each user active on ~30 % of the days, one tile a day, late by up to
    `allowed` days for a tenth of them."""
    rng = np.random.default_rng(seed)
    first = day_number(str(FIRST.date()))
    out = {}
    for offset in range(days):
        active = np.flatnonzero(rng.random(users) < 0.3).astype(np.int64)
        late = np.where(rng.random(len(active)) < 0.1, rng.integers(1, allowed + 1, len(active)), 0) if allowed else 0
        day = first + offset - late
        tiles = {"user_id": active, "day": np.broadcast_to(day, active.shape).astype(np.int64)}
        tiles.update({c: rng.integers(0, 4, len(active)) for c in TILE_SUMS})
        tiles["revenue_micros"] = rng.integers(0, 10**8, len(active)) * (tiles["purchases"] > 0)
        tiles.update({c: tiles["day"] * US_PER_DAY + rng.integers(0, US_PER_DAY, len(active)) for c in TILE_MAXES})
        out[str((FIRST + pd.Timedelta(days=offset)).date())] = merge_tiles(pd.DataFrame(tiles)[list(TILE_COLUMNS)])
    return out


def timed(function, *args):
    """(result, seconds, peak MB of Python allocations) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--allowed", type=int, default=2, help="allowed lateness in days")
    parser.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    header = machine_line()
    lateness = Lateness(args.allowed)
    print(f"building {args.days} tile partitions of {args.users} users …", flush=True)
    parts = partitions(args.users, args.days, args.allowed)
    keys = sorted(parts)
    expiring = {k: parts[k] for k in keys[: args.days - KEEP_DAYS]}
    kept = {k: parts[k] for k in keys[args.days - KEEP_DAYS:]}
    tile_rows = sum(len(t) for t in parts.values())
    print(f"{tile_rows:,} tiles; folding {len(expiring)} expiring partitions …", flush=True)
    fold, fold_s, fold_mb = timed(fold_expiring, LakeFold.empty(), expiring, kept, lateness)
    users = np.arange(args.users, dtype=np.int64)
    arrival = pd.Timestamp(keys[-1])
    everything = merge_tiles(*parts.values())
    print("snapshots of the last arrival day from every tile …", flush=True)
    unfolded, unfolded_s, unfolded_mb = timed(partition_snapshots, everything, users, arrival, lateness)
    print("… and from the fold", flush=True)
    left = fold.tiles_with(*kept.values())
    folded, folded_s, folded_mb = timed(partition_snapshots, left, users, arrival, lateness, fold.folds)
    equal = list(unfolded) == list(folded) and all(
        np.array_equal(unfolded[s][list(ACTIVITY_FEATURES)].to_numpy(), folded[s][list(ACTIVITY_FEATURES)].to_numpy())
        for s in unfolded)
    expiring_rows = sum(len(t) for t in expiring.values())
    rows = [
        ("fold the expiring partitions (retention)", f"{expiring_rows:,} tiles in {len(expiring)} partitions",
         fold_s, expiring_rows / fold_s, fold_mb),
        ("one arrival day's snapshots, every tile (no retention)", f"{len(everything):,} tiles",
         unfolded_s, args.users * len(unfolded) / unfolded_s, unfolded_mb),
        ("one arrival day's snapshots, fold + tiles kept", f"{len(fold.folds):,} folds + {len(left):,} tiles",
         folded_s, args.users * len(folded) / folded_s, folded_mb),
    ]
    table = ["| step | input | s | rows/s | peak MB (Python) |", "|---|---|---|---|---|"]
    table += [f"| {a} | {b} | {s:.2f} | {r:,.0f} | {m:,.0f} |" for a, b, s, r, m in rows]
    section = "\n".join([
        TITLE, "",
        f"`.venv/bin/python -m bench.lake_fold --users {args.users} --days {args.days} --allowed {args.allowed}`; "
        f"{header}. {args.users:,} users, {args.days} arrival days of tiles (each user active on ~30 % of days, a "
        f"tenth of the tiles up to {args.allowed} days late), retention keeping {KEEP_DAYS} days: the fold runs "
        f"through {fold.through} minus the lateness; snapshots of arrival day {keys[-1]} "
        f"({len(unfolded)} stamps × {args.users:,} users; rows/s = snapshot rows). Snapshots from the fold equal "
        f"those from every tile bit for bit: {equal}.", "",
        *table, "",
    ])
    print(section)
    if not equal:
        print("the snapshots from the fold differ from those of every tile: a defect, see feature_repo/lake_fold.py")
        return 1
    if args.write:
        write_section(TITLE, section)
        print("recorded in docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
