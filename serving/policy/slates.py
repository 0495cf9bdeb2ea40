"""Diversity-penalised slates: fill the slots one at a time, each by the exploration policy on adjusted scores.

For slot j, with q_i = attributes[i] (e.g. the one-hot of candidate i's kind) and Q = Σ q_c over the candidates c
already chosen, every remaining candidate i gets

    s'_i = s_i − γ · q_iᵀQ          (γ = `penalty`)

and slot j draws from action_probabilities(s'[remaining], exploration, σ[remaining]); the chosen one leaves the
pool (σ, each candidate's uncertainty, is read by thompson only and is not penalised). With
one-hot kinds q_iᵀQ counts the chosen items of i's kind, so a large γ fills one slot per kind before repeating a
kind. The probability logged for slot j is exact given slots < j, and the ordered slate's probability is their
product — what off-policy evaluation of slates needs. `size` is clipped to K: a slate never repeats a candidate.
Each slot costs a few numpy operations over the candidates and exactly one uniform from `rng`, so a slate of size
1 is the same draw, from the same stream, as `draw(action_probabilities(scores, exploration), rng)`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from serving.policy.exploration import (
    Exploration,
    distribution,
    flagged_positions,
    sample,
    validated_scores,
    validated_spreads,
)


@dataclass(frozen=True)
class Slate:
    """An ordered slate with the exact probability of each slot's pick and of the whole slate."""

    indices: list[int]  # chosen candidate positions in slot order
    probabilities: list[float]  # slot j: probability that slot j picked indices[j], given slots < j
    slate_probability: float  # product of the above: probability of this ordered slate
    adjusted_scores: list[float]  # diversity-penalised score of each chosen item at the time it was picked
    first_slot: list[float]  # the first slot's distribution over all K candidates
    # slot j's distribution over all K candidates given slots < j (0 for the ones already chosen): what the decision
    # record logs per slot, so off-policy evaluation of slates has every position's probabilities
    slot_distributions: list[list[float]]


def draw_slate(
    scores: np.ndarray,
    attributes: np.ndarray,
    size: int,
    penalty: float,
    exploration: Exploration,
    rng: np.random.Generator,
    spreads: np.ndarray | None = None,
) -> Slate:
    """An ordered slate of min(size, K) distinct candidates, drawn slot by slot on diversity-penalised scores
    (thompson also reads each candidate's uncertainty σ, `spreads`)."""
    values = validated_scores(scores)
    sigma = validated_spreads(spreads, values.size, exploration)
    features = _validated_attributes(attributes, values.size)
    size = operator.index(size)
    if size < 1:
        raise ValueError(f"slate size must be at least 1; got {size}")
    if not 0.0 <= penalty < math.inf:
        raise ValueError(f"penalty must be finite and >= 0 (0 ranks by score alone); got {penalty}")

    remaining = np.arange(values.size)
    overlap = np.zeros(values.size)  # q_iᵀQ for every candidate i, updated as Q grows
    indices: list[int] = []
    probabilities: list[float] = []
    adjusted_scores: list[float] = []
    first_slot: list[float] = []
    slot_distributions: list[list[float]] = []
    # Overflow to -inf inside softmax is harmless (see exploration); one errstate for the whole slate, not per slot.
    with np.errstate(over="ignore", invalid="ignore"):
        for slot in range(min(size, values.size)):
            adjusted = _penalised(values, overlap, remaining, penalty, slot)
            slot_probabilities = distribution(adjusted, exploration, None if sigma is None else sigma[remaining])
            if slot == 0:
                first_slot = slot_probabilities.tolist()
                slot_distributions.append(first_slot)
            else:
                over_all = np.zeros(values.size)
                over_all[remaining] = slot_probabilities
                slot_distributions.append(over_all.tolist())
            pick = sample(slot_probabilities, rng)
            chosen = int(remaining[pick])
            indices.append(chosen)
            probabilities.append(float(slot_probabilities[pick]))
            adjusted_scores.append(float(adjusted[pick]))
            if penalty > 0.0:
                overlap += features @ features[chosen]
            remaining = remaining[remaining != chosen]
    return Slate(indices, probabilities, math.prod(probabilities), adjusted_scores, first_slot, slot_distributions)


def _penalised(values: np.ndarray, overlap: np.ndarray, remaining: np.ndarray, penalty: float, slot: int) -> np.ndarray:
    if penalty == 0.0 or slot == 0:  # nothing chosen yet, or no penalty: the scores as validated, bit for bit
        return values[remaining]
    adjusted = values[remaining] - penalty * overlap[remaining]
    if not np.isfinite(adjusted).all():
        raise ValueError(f"penalised scores overflowed at slot {slot}; scale penalty ({penalty}) or attributes down")
    return adjusted


def _validated_attributes(attributes: np.ndarray, k: int) -> np.ndarray:
    features = np.asarray(attributes, dtype=float)
    if features.ndim != 2 or features.shape[0] != k:
        raise ValueError(
            f"attributes must be a (K, d) array, one row per candidate (K = {k}); got shape {features.shape}"
        )
    bad_rows = ~np.isfinite(features).all(axis=1)
    if bad_rows.any():
        raise ValueError(f"attributes must be finite; rows {flagged_positions(bad_rows)} are not")
    return features
