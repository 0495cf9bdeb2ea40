"""Exploration: how the scores of the K eligible actions become the probabilities they are drawn with.

With s the scores (expected incremental net value), K = len(s) and a* the first index of max(s):

    greedy          p_i = [i = a*]
    epsilon_greedy  p_i = ε/K + (1 − ε)·[i = a*]
    softmax         p_i = f + (1 − K·f) · exp((s_i − max s)/T) / Σ_j exp((s_j − max s)/T),   f = min(floor, 1/K)

Subtracting max s before exponentiating keeps softmax finite for any finite scores. The floor is capped at 1/K
because K is the number of *eligible* actions, which varies per request: a floor too large for this K gives the
uniform distribution instead of an error. The probabilities are exact, so the propensity logged with a draw is
the one off-policy evaluation needs; `draw` spends exactly one uniform per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Method = Literal["greedy", "epsilon_greedy", "softmax"]
METHODS: tuple[str, ...] = get_args(Method)
SUM_TOLERANCE = 1e-9  # how far from 1 the probabilities given to `draw` may sum (logged values may be rounded)
_MAX_LISTED = 10


@dataclass(frozen=True)
class Exploration:
    """How scores become action probabilities: greedy, epsilon-greedy, or softmax with a probability floor."""

    method: Method = "epsilon_greedy"
    epsilon: float = 0.05  # epsilon_greedy: share explored uniformly over the K eligible actions
    temperature: float = 1.0  # softmax: p ∝ exp(score / temperature), in units of expected incremental net value
    floor: float = 0.0  # softmax: least probability of every eligible action, capped at 1/K (see module docstring)

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


def action_probabilities(scores: np.ndarray, exploration: Exploration) -> np.ndarray:
    """Probability of each of the K actions (same order as scores)."""
    values = validated_scores(scores)
    with np.errstate(over="ignore"):  # see `distribution`
        return distribution(values, exploration)


def distribution(values: np.ndarray, exploration: Exploration) -> np.ndarray:
    """`action_probabilities` for scores checked by `validated_scores`; call under np.errstate(over="ignore")."""
    k = values.size
    if exploration.method == "softmax":
        return _softmax(values, exploration.temperature, exploration.floor)
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
