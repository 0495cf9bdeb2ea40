"""The lake's running tiles: what retention keeps of the activity tiles it deletes, so cumulative features last.

`features/activity_tiles/<arrival day>.parquet` holds the integer tiles of the events each arrival day accepted.
The activity features are cumulative (totals, averages, affinities, decayed counts over a user's whole history),
so deleting a tile partition at the end of its retention period (`features_days`) would silently take its events
out of every later snapshot and of the Redis tiles `online_tiles` writes. Retention therefore folds the expiring
partitions first (`fold_expiring`) into a *lake fold*, one running tile per user (`transforms.fold_tiles`: sums,
latest times and the decayed accumulators' float64 values at the fold day, the very values the unfolded loop
reaches there), and the readers add it back: features from the fold and the tiles left are bit-identical to those
of the unfolded tiles for every stamp after the fold day.

Which day to fold through: arrival partition P accepts events stamped on or after P − allowed lateness, so once
every partition up to A is expiring, the partitions kept (after A) hold no tile of a day <= A − lateness. That day is
the fold day; the expiring partitions' tiles of later days (at most `lateness` days of them) are *carried* unfolded
next to the fold, and folded by the next retention run that passes them. A kept partition holding a tile at or
before the fold day (a lateness configured longer than the one retention was given) is refused before anything is
written.

Crash safety: a fold is written as a new folder `features/activity_fold/through=<A>/` (folds, carried tiles, then
`manifest.json` last) before any partition is deleted; readers take the newest folder with a manifest. A run cut
short before its manifest leaves the previous fold in force and its partitions on disk; a run cut short after it
finds partitions <= A still on disk and deletes them without folding them again (their tiles are in the fold).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.event_time import Lateness, day_start
from feature_repo.transforms import (
    FOLD_COLUMNS, FOLD_DTYPES, TILE_COLUMNS, US_PER_DAY, empty_folds, fold_tiles, merge_tiles,
)

LAKE_FOLD = "features/activity_fold"
"""Lake folder of the running tiles (one `through=<arrival day>/` folder per retention run that folded)."""
MANIFEST = "manifest.json"
FOLDS_FILE = "folds.parquet"
CARRIED_FILE = "carried.parquet"


@dataclass(frozen=True)
class LakeFold:
    """The running tiles of the arrival partitions retention deleted.

    `folds`: one `FOLD_COLUMNS` row per user with history up to `fold_day`; `carried`: tiles of those partitions
    for days after `fold_day`, to merge with the partitions on disk; `through`: the last arrival day folded
    ("YYYY-MM-DD"), None when nothing was ever folded."""

    folds: pd.DataFrame
    carried: pd.DataFrame
    through: str | None = None
    fold_day: int | None = None

    @classmethod
    def empty(cls) -> LakeFold:
        return cls(empty_folds(), merge_tiles())

    def covers(self, arrival_day: str) -> bool:
        """Whether arrival partition `arrival_day` is in the fold (its tiles must not be counted again)."""
        return self.through is not None and arrival_day <= self.through

    def tiles_with(self, *frames: pd.DataFrame) -> pd.DataFrame:
        """The carried tiles merged with `frames` (the partitions on disk): the tiles to compute features from,
        alongside `folds`."""
        return merge_tiles(self.carried, *frames)


def day_number(arrival_day: str) -> int:
    """Days since the epoch of an arrival day key."""
    return int(day_start(arrival_day).value // (US_PER_DAY * 1_000))


def read_lake_fold(data_dir: Path) -> LakeFold:
    """The newest complete fold under `data_dir` (LakeFold.empty() when there is none)."""
    folder = _newest(data_dir / LAKE_FOLD)
    if folder is None:
        return LakeFold.empty()
    manifest = json.loads((folder / MANIFEST).read_text())
    folds = pd.read_parquet(folder / FOLDS_FILE).astype(FOLD_DTYPES)[list(FOLD_COLUMNS)]
    carried = pd.read_parquet(folder / CARRIED_FILE).astype(np.int64)[list(TILE_COLUMNS)]
    return LakeFold(folds, carried, manifest["through"], int(manifest["fold_day"]))


def fold_expiring(
    current: LakeFold, expiring: dict[str, pd.DataFrame], kept: dict[str, pd.DataFrame], lateness: Lateness,
) -> LakeFold:
    """`current` with the tiles of the expiring arrival partitions (key → tiles) folded in.

    Partitions `current` already covers are skipped (a run cut short after writing its fold). `kept` are the
    partitions that stay (key → tiles, only the `day` column is read): none may hold a tile at or before the new
    fold day."""
    new = {k: v for k, v in expiring.items() if not current.covers(k)}
    if not new:
        return current
    through = max(new)
    fold_day = day_number(through) - lateness.allowed_days
    if current.fold_day is not None:
        fold_day = max(fold_day, current.fold_day)
    later = [k for k in kept if k <= through]
    if later:
        raise ValueError(f"arrival partitions {later[:3]} are kept but not later than {through}, the last one "
                         "folded: retention deletes partitions in day order; pass every partition up to it")
    early = {k: int(t["day"].min()) for k, t in kept.items() if len(t) and int(t["day"].min()) <= fold_day}
    if early:
        key, day = next(iter(sorted(early.items())))
        raise ValueError(
            f"kept arrival partition {key} holds tiles of day {_day_text(day)}, at or before the fold day "
            f"{_day_text(fold_day)} ({through} − {lateness.allowed_days} days of allowed lateness): the pipeline "
            "accepts later events than retention was told; run retention with the pipeline's allowed lateness")
    tiles = current.tiles_with(*new.values())
    carried, folds = fold_tiles(tiles, current.folds, fold_day)
    return LakeFold(folds, carried, through, fold_day)


def write_lake_fold(data_dir: Path, fold: LakeFold) -> Path:
    """Write `fold` as the newest fold folder (manifest last), then remove the older folders; returns the folder."""
    if fold.through is None:
        raise ValueError("nothing folded: an empty fold is not written")
    root = data_dir / LAKE_FOLD
    folder = root / f"through={fold.through}"
    if folder.exists():
        shutil.rmtree(folder)  # an earlier run cut short before its manifest, or a re-run of the same fold
    folder.mkdir(parents=True)
    fold.folds.to_parquet(folder / FOLDS_FILE, index=False)
    fold.carried.to_parquet(folder / CARRIED_FILE, index=False)
    manifest = {"through": fold.through, "fold_day": fold.fold_day, "fold_date": _day_text(fold.fold_day),
                "users": len(fold.folds), "carried_tiles": len(fold.carried)}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(folder / MANIFEST)
    for other in root.iterdir():
        if other != folder and other.is_dir():
            shutil.rmtree(other)
    return folder


def _newest(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())
    return complete[-1] if complete else None


def _day_text(day: int | None) -> str:
    return "none" if day is None else str(pd.Timestamp(day * US_PER_DAY, unit="us").date())

