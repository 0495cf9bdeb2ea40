"""Exploration: how the scores of the K eligible actions become the probabilities they are drawn with.

With s the scores (expected incremental net value), K = len(s) and a* the first index of max(s):

    greedy          p_i = [i = a*]
    epsilon_greedy  p_i = ε/K + (1 − ε)·[i = a*]
    softmax         p_i = f + (1 − K·f) · exp((s_i − max s)/T) / Σ_j exp((s_j − max s)/T),   f = min(floor, 1/K)
    thompson        p_i = f + (1 − K·f) · #{m : i = first argmax_j (s_j + σ_j·Z_mj)} / M,     f = min(floor, 1/K)

Thompson sampling with σ_j ≥ 0 the uncertainty of action j for this user (`spreads`: a posterior or bootstrap
standard deviation, in score units) is computed, not sampled once: Z is a fixed (M, K) matrix of standard normals
(`thompson_normals`: M = 512 rows, 256 antithetic pairs, generated once per process from a constant seed, 64 columns
per block so that any K gets the same leading columns), and p_i is the share of its rows where i wins (ties to the
first). The served action is then drawn from p like any other method's, so the logged probability is exactly the
one the action was drawn with, and `training.ope` recomputes the same p from the same (s, σ). With σ = 0 everywhere
thompson is greedy. Without a floor an action that wins no row has probability 0 and is never served. p is the
ideal Thompson probability up to the quadrature error of 512 rows (≤ 2/√512 ≈ 0.09, typically ~0.02); the policy
served is this p, so what is logged is exact whatever that error.

Subtracting max s before exponentiating keeps softmax finite for any finite scores. The floor is capped at 1/K
because K is the number of *eligible* actions, which varies per request: a floor too large for this K gives the
uniform distribution instead of an error. The probabilities are exact, so the propensity logged with a draw is
the one off-policy evaluation needs; `draw` spends exactly one uniform per call.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Method = Literal["greedy", "epsilon_greedy", "softmax", "thompson"]
METHODS: tuple[str, ...] = get_args(Method)
SUM_TOLERANCE = 1e-9  # how far from 1 the probabilities given to `draw` may sum (logged values may be rounded)
_MAX_LISTED = 10
THOMPSON_DRAWS = 512  # rows of the common normal matrix: 256 antithetic pairs (p_i in multiples of 1/512)
THOMPSON_SEED = 1405  # (issue 14, item 5) changing it changes every thompson probability (and the gate's replay)
_THOMPSON_BLOCK = 64  # columns generated per block, each block from its own seed: column j never depends on K


@dataclass(frozen=True)
class Exploration:
    """How scores become action probabilities: greedy, epsilon-greedy, softmax or Thompson sampling (both with a
    probability floor)."""

    method: Method = "epsilon_greedy"
    epsilon: float = 0.05  # epsilon_greedy: share explored uniformly over the K eligible actions
    temperature: float = 1.0  # softmax: p ∝ exp(score / temperature), in units of expected incremental net value
    floor: float = 0.0  # softmax, thompson: least probability of every eligible action, capped at 1/K (see above)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"exploration method must be one of {METHODS}; got {self.method!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(
                f"epsilon must be in [0, 1] (the share explored uniformly: 0 is greedy, 1 uniform); got {self.epsilon}"
            )
        if not 0.0 < self.temperature < math.inf:
            raise ValueError(
                f"temperature must be finite and > 0 (in score units; smaller is greedier); got {self.temperature}"
            )
        if not 0.0 <= self.floor < 1.0:
            raise ValueError(
                f"floor must be in [0, 1) (the least probability of any eligible action; 0 for none); got {self.floor}"
            )


def flagged_positions(mask: np.ndarray) -> str:
    """The positions where `mask` is true, for error messages: the first ten, then how many there are in all."""
    mask = np.asarray(mask, dtype=bool)
    found = np.argwhere(mask)
    listed = [int(row[0]) if mask.ndim == 1 else tuple(int(i) for i in row) for row in found[:_MAX_LISTED]]
    more = f" … ({len(found)} in all)" if len(found) > _MAX_LISTED else ""
    return f"{listed}{more}"


def validated_scores(scores: np.ndarray) -> np.ndarray:
    """`scores` as a non-empty 1-D float array of finite values, or a ValueError saying which entries are unusable."""
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"scores must be 1-D, one score per eligible action; got shape {values.shape}")
    if values.size == 0:
        raise ValueError("scores is empty: no eligible action to choose from; fall back before calling the policy")
    finite = np.isfinite(values)
    if not finite.all():
        nan = np.isnan(values)
        raise ValueError(
            f"scores must be finite: NaN at positions {flagged_positions(nan)}, infinite at positions "
            f"{flagged_positions(~finite & ~nan)}; fix the model output or leave those actions out"
        )
    return values


def validated_spreads(spreads: np.ndarray | None, k: int, exploration: Exploration) -> np.ndarray | None:
    """`spreads` (σ, one per action) as a 1-D float array of finite values >= 0, or None when the method does not
    read them; thompson without spreads is a ValueError (σ = 0 would silently be greedy)."""
    if exploration.method != "thompson":
        return None
    if spreads is None:
        raise ValueError("thompson exploration needs each action's uncertainty σ (spreads); pass zeros for greedy")
    values = np.asarray(spreads, dtype=float)
    if values.shape != (k,):
        raise ValueError(f"spreads must be 1-D with one σ per action ({k}); got shape {values.shape}")
    bad = ~(values >= 0.0) | ~np.isfinite(values)  # `~(σ >= 0)` also catches NaN
    if bad.any():
        raise ValueError(
            f"spreads must be finite and >= 0 (an uncertainty); not so at positions {flagged_positions(bad)}"
        )
    return values


def action_probabilities(
    scores: np.ndarray, exploration: Exploration, spreads: np.ndarray | None = None
) -> np.ndarray:
    """Probability of each of the K actions (same order as scores); thompson also reads each one's σ (`spreads`)."""
    values = validated_scores(scores)
    sigma = validated_spreads(spreads, values.size, exploration)
    with np.errstate(over="ignore"):  # see `distribution`
        return distribution(values, exploration, sigma)


def distribution(values: np.ndarray, exploration: Exploration, spreads: np.ndarray | None = None) -> np.ndarray:
    """`action_probabilities` for scores checked by `validated_scores` (and spreads by `validated_spreads`); call
    under np.errstate(over="ignore")."""
    k = values.size
    if exploration.method == "softmax":
        return _softmax(values, exploration.temperature, exploration.floor)
    if exploration.method == "thompson":
        return _thompson(values, spreads, exploration.floor)
    explored = exploration.epsilon if exploration.method == "epsilon_greedy" else 0.0
    probabilities = np.full(k, explored / k)
    probabilities[int(np.argmax(values))] += 1.0 - explored  # np.argmax returns the first of tied maxima
    return probabilities


def _softmax(values: np.ndarray, temperature: float, floor: float) -> np.ndarray:
    k = values.size
    if floor * k >= 1.0:
        return np.full(k, 1.0 / k)
    # A gap that overflows to -inf (huge score spread or tiny temperature) only means weight 0, never NaN: the
    # max contributes exp(0) = 1, so the normaliser is at least 1. Callers silence the overflow warning once,
    # outside their loops: entering np.errstate per call is a noticeable share of this function's cost.
    weights = np.exp((values - values.max()) / temperature)
    return floor + (1.0 - k * floor) * (weights / weights.sum())


_normal_lock = threading.Lock()
_normals = np.empty((THOMPSON_DRAWS, 0))
_normals_by_k: dict[int, np.ndarray] = {}  # contiguous copies of the first k columns: ~25 % faster than a view
_MAX_CACHED_K = 128


def thompson_normals(k: int) -> np.ndarray:
    """The first k columns of the process's fixed (THOMPSON_DRAWS, ·) matrix of standard normals (read-only).

    Block b of 64 columns is rows Z_b and −Z_b (antithetic: two equal actions get exactly half the rows each) with
    Z_b = default_rng([THOMPSON_SEED, b]).standard_normal((256, 64)): a pure function of the seed, the same in the
    service and in training, grown (never changed) when a request has more candidates than columns exist."""
    cached = _normals_by_k.get(k)
    if cached is not None:
        return cached
    global _normals
    matrix = _normals
    if matrix.shape[1] < k:
        with _normal_lock:
            matrix = _normals
            blocks = [matrix]
            for b in range(matrix.shape[1] // _THOMPSON_BLOCK, -(-k // _THOMPSON_BLOCK)):
                half = np.random.default_rng([THOMPSON_SEED, b]).standard_normal((THOMPSON_DRAWS // 2, _THOMPSON_BLOCK))
                blocks += [np.concatenate([half, -half])]
            matrix = np.ascontiguousarray(np.concatenate(blocks, axis=1))
            matrix.flags.writeable = False
            _normals = matrix  # one assignment: readers see the old matrix or the new, whose first columns are equal
    columns = np.ascontiguousarray(matrix[:, :k])
    columns.flags.writeable = False
    if len(_normals_by_k) < _MAX_CACHED_K:  # candidate counts seen by a process: a few dozen at most
        _normals_by_k[k] = columns
    return columns


thompson_normals(_THOMPSON_BLOCK)  # the first block at import, so that no request pays for it


def _thompson(values: np.ndarray, spreads: np.ndarray | None, floor: float) -> np.ndarray:
    k = values.size
    if floor * k >= 1.0:
        return np.full(k, 1.0 / k)
    if spreads is None:
        raise ValueError("thompson exploration needs each action's uncertainty σ (spreads); pass zeros for greedy")
    if not spreads.any():  # every row's argmax is the first maximum: greedy, without the matrix
        wins = np.zeros(k)
        wins[int(np.argmax(values))] = 1.0
    else:
        sampled = thompson_normals(k) * spreads  # float64, one rounding per operation: the same on every machine
        sampled += values
        wins = np.bincount(sampled.argmax(axis=1), minlength=k) / THOMPSON_DRAWS  # argmax: first of tied maxima
    return wins if floor == 0.0 else floor + (1.0 - k * floor) * wins


def draw(probabilities: np.ndarray, rng: np.random.Generator) -> int:
    """Index drawn from `probabilities`."""
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probabilities must be a non-empty 1-D array; got shape {p.shape}")
    invalid = ~(p >= 0.0) | ~np.isfinite(p)  # `~(p >= 0)` also catches NaN
    if invalid.any():
        raise ValueError(f"probabilities must be finite and >= 0; not so at positions {flagged_positions(invalid)}")
    total = float(p.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"probabilities must sum to 1 (within {SUM_TOLERANCE}); they sum to {total!r}")
    return sample(p, rng)


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """`draw` for probabilities already known to be valid: one uniform, located in the cumulative sum."""
    cumulative = p.cumsum()
    index = int(cumulative.searchsorted(rng.random(), side="right"))
    if index == p.size:
        # Rounding can leave the cumulative sum a hair below 1 and the uniform past its end; that sliver goes
        # to the last action that can be drawn, never to one with probability 0.
        index = int(np.flatnonzero(p)[-1])
    return index
