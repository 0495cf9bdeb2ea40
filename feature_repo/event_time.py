"""Event time across daily arrival partitions: the watermark, replay-proof deduplication and snapshot revisions.

Events arrive in daily partitions (the day they reached us), not in the day they happened. Partition P accepts an
event stamped at `ts` only if `ts >= P − allowed_lateness` (the watermark) and its `event_id` was not accepted by
an earlier partition; an event older than the watermark is quarantined as `ts.beyond_watermark`, counted, kept.

Snapshot files are keyed by their stamp. Partition P writes the new snapshot stamped P + 1 day and rewrites the
snapshots stamped P − allowed_lateness + 1 … P, the ones its late events may have changed, from the tiles of every
accepted event known so far. A stamp is final once the partition `allowed_lateness` days after it has run. Because
features are a function of exact tiles (`feature_repo.transforms`), the final snapshot equals the one computed once
over all accepted events, whatever the arrival order, duplicates or lateness; and re-running any partition, or a
backfill of any range, rewrites the same bytes. (One row per user and stamp: Feast's file offline store does not
break ties between revisions of one timestamp reliably, so revisions replace rows instead of adding them.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from feature_repo.contracts import ValidationResult, validate_events
from feature_repo.transforms import snapshots_from_tiles

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Lateness:
    """How late an event may arrive and still change features: whole days behind its arrival day."""

    allowed_days: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.allowed_days, int) or self.allowed_days < 0:
            raise ValueError(f"allowed lateness must be a whole number of days >= 0, got {self.allowed_days!r}")

    def watermark(self, arrival_day: pd.Timestamp) -> pd.Timestamp:
        """Events of arrival partition `arrival_day` stamped before this are beyond the watermark."""
        return day_start(arrival_day) - self.allowed_days * DAY

    def revised_stamps(self, arrival_day: pd.Timestamp) -> pd.DatetimeIndex:
        """Snapshot stamps that partition `arrival_day` writes: the revisable ones, then its new one (P + 1 day)."""
        first = day_start(arrival_day) - (self.allowed_days - 1) * DAY
        return pd.date_range(first, day_start(arrival_day) + DAY, freq="D")


def day_start(day: pd.Timestamp | str) -> pd.Timestamp:
    """UTC midnight of a partition key or timestamp."""
    ts = pd.Timestamp(day)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).normalize()


def validate_arrivals(
    raw: pd.DataFrame, arrival_day: pd.Timestamp, lateness: Lateness, seen_event_ids: pd.Index
) -> ValidationResult:
    """Validate the raw rows of one arrival partition: contracts, future (past the day's end), watermark, replays."""
    start = day_start(arrival_day)
    return validate_events(
        raw, as_of=start + DAY, not_before=lateness.watermark(start), seen_event_ids=seen_event_ids
    )


def partition_snapshots(
    tiles: pd.DataFrame, user_ids: np.ndarray, arrival_day: pd.Timestamp, lateness: Lateness,
    folds: pd.DataFrame | None = None,
) -> dict[pd.Timestamp, pd.DataFrame]:
    """The snapshot files arrival partition P (re)writes, by stamp: P − lateness + 1 … P + 1, every user in each.

    `tiles` are the merged tiles of every accepted event known so far (partitions <= P at least). Including tiles
    of later partitions changes nothing that is final: an event accepted by partition Q is stamped on or after
    Q − lateness, so it can only change stamps Q − lateness + 1 and later, which Q itself rewrites. `folds` are the
    running tiles of the days retention deleted (`feature_repo.lake_fold`), older than every stamp asked for.
    """
    stamps = lateness.revised_stamps(arrival_day)
    rows = snapshots_from_tiles(tiles, user_ids, stamps, folds)
    return {stamp: part.reset_index(drop=True) for stamp, part in rows.groupby("event_timestamp", sort=True)}
