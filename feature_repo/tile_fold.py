"""Bounded tile state per user in Redis: the days that can no longer change, folded into one running tile.

The streaming store keeps a user's tiles in one hash, `<day>:<column>` per day (`feature_repo.stream`). Without
folding it grows by up to 16 fields per active day, for ever. The watermark makes old days final: an event older
than the arrival day's start − allowed lateness is refused, so no day before the watermark changes again. A day
older than the watermark − `TileFolding.margin_days` is folded (`feature_repo.transforms.fold_tiles`) into the
user's running tile, stored in the same hash:

- `fold:day` — the last day folded (days since the epoch);
- `fold:<sum>` / `fold:<maximum>` — the integer sums and latest times of every folded day (absent: 0 / none);
- `fold:z_<sum>` — the decayed accumulators' float64 values at `fold:day`, as `float.hex()` (exact; absent: 0.0).

Features from the fold and the days after it are bit-identical to those of the unfolded days
(`snapshots_from_tiles` with `folds`), for stamps after `fold:day` — the streaming path only asks for stamps >= now.

A fold is one Lua script per user (`FOLD_LUA`), atomic: it checks that the hash still holds exactly the folded
days' fields and values it was computed from and the same previous fold, then writes the new fold and deletes the
folded days' fields in one step. An event landing meanwhile on a recent day touches neither and is kept; one that
changed a folded day (a writer whose clock is more than the margin behind) makes the script refuse: nothing is
written, the conflict is counted and logged, the next trigger folds again. After a fold, the apply script refuses
an event for a day at or before `fold:day` (`ts.beyond_watermark`), so nothing ever lands behind the fold.
Folding again at the same day finds nothing to fold: idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from feature_repo.transforms import (
    FOLD_DAY, FOLD_DECAYED, FOLD_DTYPES, TILE_COLUMNS, TILE_MAXES, TILE_SUMS, US_PER_DAY, empty_folds, fold_tiles,
)
from infra.redis_cluster import run_scripts

log = logging.getLogger(__name__)

FOLD_PREFIX = "fold:"
FOLD_DAY_FIELD = FOLD_PREFIX + "day"
_FOLD_FIELDS = {FOLD_PREFIX + c: c for c in (*TILE_SUMS, *TILE_MAXES, *FOLD_DECAYED)}


@dataclass(frozen=True)
class TileFolding:
    """When the streaming store folds a user's old days (`StreamUpdater(folding=...)`; None: never).

    `margin_days`: days before the watermark's day still kept unfolded (0 folds every day before the watermark,
    the days no event can change any more), a margin for writers whose clock is behind: a writer further behind has
    its events for folded days refused, never applied behind the fold. `min_days`: fold a user once it has at least
    this many foldable days (1: at its first call or refresh of each day). The service builds its updater with the
    defaults (`serving/core/runtime.py`).
    """

    margin_days: int = 1
    min_days: int = 1

    def __post_init__(self) -> None:
        for name in ("margin_days", "min_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "margin_days" else 1):
                raise ValueError(f"TileFolding.{name} must be a whole number >= {0 if name == 'margin_days' else 1}"
                                 f", got {value!r}")

    def through_day(self, watermark: pd.Timestamp) -> int:
        """The last day to fold (days since the epoch) under a watermark: the day before watermark − margin."""
        return int(pd.Timestamp(watermark).value // 1000 // US_PER_DAY) - self.margin_days - 1  # .value: ns


@dataclass
class FoldStats:
    """What folding did: users folded, day tiles folded into them, folds refused by a concurrent change."""

    users: int = 0
    days: int = 0
    conflicts: int = 0
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, users: int, days: int, conflicts: int) -> None:
        """Count one round of folds (thread-safe: the updater folds from request threads)."""
        with self._guard:
            self.users, self.days, self.conflicts = self.users + users, self.days + days, self.conflicts + conflicts


def fold_fields(fold: dict) -> dict[str, str]:
    """A running tile (one `FOLD_COLUMNS` record) as hash fields: zeros and absent maxima are left out."""
    out = {FOLD_DAY_FIELD: str(int(fold[FOLD_DAY]))}
    for name, column in _FOLD_FIELDS.items():
        value = fold[column]
        if column in FOLD_DECAYED:
            if value != 0.0:
                out[name] = float(value).hex()  # exact: a decimal repr could round
        elif (value >= 0) if column in TILE_MAXES else (value != 0):
            out[name] = str(int(value))
    return out


def parse_fold(user_id: int, fields: dict[bytes, bytes]) -> dict | None:
    """The user's running tile from its hash (a `FOLD_COLUMNS` record), or None when it has none."""
    day = fields.get(FOLD_DAY_FIELD.encode())
    if day is None:
        stray = sorted(k.decode() for k in fields if k.startswith(FOLD_PREFIX.encode()))
        if stray:
            raise ValueError(f"user {user_id}'s tiles hold {stray} without {FOLD_DAY_FIELD}: a fold is written whole "
                             "by FOLD_LUA; delete the key and write the user's tiles again (online_tiles)")
        return None
    fold: dict = {"user_id": int(user_id), FOLD_DAY: int(day)}
    for name, column in _FOLD_FIELDS.items():
        raw = fields.get(name.encode())
        if column in FOLD_DECAYED:
            fold[column] = float.fromhex(raw.decode()) if raw is not None else 0.0
        else:
            fold[column] = int(raw) if raw is not None else (-1 if column in TILE_MAXES else 0)
    return fold


def folds_frame(folds: Sequence[dict]) -> pd.DataFrame:
    """`parse_fold` records as a folds frame (`FOLD_COLUMNS`, int64 and float64)."""
    if not folds:
        return empty_folds()
    return pd.DataFrame({c: np.array([f[c] for f in folds], dtype=t) for c, t in FOLD_DTYPES.items()})


def plan_folds(
    reads: dict[int, tuple[dict[bytes, bytes], np.ndarray, dict | None]], through_day: int, min_days: int,
) -> dict[int, list]:
    """The `FOLD_LUA` arguments, per user, that fold its days <= `through_day`, for the users with at least
    `min_days` of them; all computed in one `fold_tiles` call.

    `reads` maps a user to its hash as read, its parsed day tiles (`parse_tiles` rows) and running tile.
    """
    day = TILE_COLUMNS.index("day")
    chosen = {user: read for user, read in reads.items() if int((read[1][:, day] <= through_day).sum()) >= min_days}
    if not chosen:
        return {}
    old = np.concatenate([tiles[tiles[:, day] <= through_day] for _, tiles, _ in chosen.values()])
    folds = folds_frame([fold for _, _, fold in chosen.values() if fold is not None])
    _, new = fold_tiles(pd.DataFrame(old, columns=list(TILE_COLUMNS)), folds, through_day)
    records = {int(record["user_id"]): record for record in new.to_dict("records")}
    plans = {}
    for user, (fields, _, fold) in chosen.items():
        expected = [(name, value) for name, value in fields.items()
                    if (d := _day_of(name)) is not None and d <= through_day]
        args: list = [str(fold[FOLD_DAY]) if fold else "", through_day, len(expected)]
        for name, value in expected:
            args += [name, value]
        for fold_name, fold_value in fold_fields(records[int(user)]).items():
            args += [fold_name, fold_value]
        plans[int(user)] = args
    return plans


def _day_of(name: bytes) -> int | None:
    head, sep, _ = name.partition(b":")
    return int(head) if sep and head.isdigit() else None


# KEYS: the tiles key. ARGV: the previous fold day ('' for none), the new fold day, n, then n (field, value) pairs
# of the folded days as read, then the new fold's (field, value) pairs. 1: folded; 0: the hash changed, nothing
# written. HDEL in slices: Lua's unpack takes a few thousand values at most.
FOLD_LUA = """
local previous = redis.call('HGET', KEYS[1], '%(fold_day)s') or ''
if previous ~= ARGV[1] then return 0 end
local through, n = tonumber(ARGV[2]), tonumber(ARGV[3])
local expected = {}
for i = 1, n do expected[ARGV[2 + 2 * i]] = ARGV[3 + 2 * i] end
local all, drop, matched = redis.call('HGETALL', KEYS[1]), {}, 0
for i = 1, #all, 2 do
  local name = all[i]
  if string.sub(name, 1, %(prefix_len)d) == '%(prefix)s' then
    drop[#drop + 1] = name
  else
    local day = tonumber(string.match(name, '^(%%d+):'))
    if day and day <= through then
      if expected[name] ~= all[i + 1] then return 0 end
      matched = matched + 1
      drop[#drop + 1] = name
    end
  end
end
if matched ~= n then return 0 end
for i = 1, #drop, 1000 do redis.call('HDEL', KEYS[1], unpack(drop, i, math.min(i + 999, #drop))) end
local sets = {}
for i = 4 + 2 * n, #ARGV do sets[#sets + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(sets))
return 1
""" % {"fold_day": FOLD_DAY_FIELD, "prefix": FOLD_PREFIX, "prefix_len": len(FOLD_PREFIX)}


def run_folds(client, script, plans: dict[str, list], stats: FoldStats) -> int:
    """Run the planned folds (tiles key → `plan_folds` arguments), pipelined (per master on a cluster); count them;
    the users folded."""
    if not plans:
        return 0
    replies = run_scripts(client, script, [([key], args) for key, args in plans.items()])
    folded = sum(1 for r in replies if r == 1)
    days = sum(_days_in(args) for args, r in zip(plans.values(), replies) if r == 1)
    conflicts = len(replies) - folded
    if conflicts:
        log.info("tile folds refused by a concurrent change (retried at the next trigger): %d of %d", conflicts,
                 len(replies))
    stats.add(folded, days, conflicts)
    return folded


def _days_in(args: list) -> int:
    """Day tiles a fold's arguments remove."""
    n = int(args[2])
    return len({_day_of(args[3 + 2 * i]) for i in range(n)})
