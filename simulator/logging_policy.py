"""The known, non-uniform policy that chose the logged exposures (so propensities are exact).

Users without marketing consent always get `no_action` (propensity 1). Consented users get
`no_action` with probability 0.3; the 8 promotions share the remaining 0.7 with equal weights,
except that mobile users get `push_reminder` at twice the weight of each other promotion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.actions import ACTION_INDEX, CONTROL_ACTION, N_ACTIONS

CONTROL_PROBABILITY = 0.3
MOBILE_PUSH_WEIGHT = 2.0


def logging_probabilities(users: pd.DataFrame) -> np.ndarray:
    """Probability of each action (ACTION_IDS order) per row of a users frame with consent_marketing and device."""
    missing = {"consent_marketing", "device"} - set(users.columns)
    if missing:
        raise ValueError(f"users frame lacks columns {sorted(missing)} needed by the logging policy")
    consent = users["consent_marketing"].to_numpy(dtype=bool)
    mobile = (users["device"] == "mobile").to_numpy(dtype=bool)
    control = ACTION_INDEX[CONTROL_ACTION]
    push = ACTION_INDEX["push_reminder"]

    weights = np.ones((len(users), N_ACTIONS), dtype=np.float64)
    weights[:, control] = 0.0
    weights[mobile, push] = MOBILE_PUSH_WEIGHT
    probs = (1.0 - CONTROL_PROBABILITY) * weights / weights.sum(axis=1, keepdims=True)
    probs[:, control] = CONTROL_PROBABILITY
    # Without consent we may not market at all: the only legal action is the baseline.
    probs[~consent, :] = 0.0
    probs[~consent, control] = 1.0
    return probs


def sample_actions(rng: np.random.Generator, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw one action per row of probs by inverse CDF; return (action_index int64, propensity float64)."""
    probs = np.asarray(probs, dtype=np.float64)
    cdf = np.cumsum(probs, axis=1)
    draws = rng.random(len(probs)) * cdf[:, -1]
    # First column whose cumulative mass exceeds the draw; zero-probability actions can never be chosen.
    action = (cdf <= draws[:, None]).sum(axis=1).astype(np.int64)
    action = np.minimum(action, probs.shape[1] - 1)
    propensity = probs[np.arange(len(probs)), action]
    return action, propensity
