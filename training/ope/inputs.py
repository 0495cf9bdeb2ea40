"""Validation of off-policy evaluation inputs in Open Bandit Pipeline's conventions, with errors that say what to do.

With n = n_rounds, K = n_actions and L = len_list (slots of a ranked list; 1 for a single choice):

- `action_dist`   (n, K, L): π_e(a | x_i, slot l), the evaluation (target) policy; each [i, :, l] sums to 1
- `action`        (n,) int in [0, K): the logged action a_i
- `reward`        (n,) finite: the observed reward r_i
- `position`      (n,) int in [0, L): the 0-based slot a_i was shown in; optional (all 0) only when L = 1
- `pscore`        (n,) in (0, 1]: π_b(a_i | x_i, position_i), the logging probability of the logged action there
- `estimated_rewards_by_reg_model` (n, K, L) finite: q̂(x_i, a, l) from a reward model

Stricter than OBP (which accepts NaN and pscore > 1): every array must be finite, `pscore` must lie in (0, 1] and
each `action_dist[i, :, l]` must be non-negative and sum to 1 within `SUM_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUM_TOLERANCE = 1e-6  # how far from 1 a row of action_dist may sum (probabilities computed in floating point)
_MAX_LISTED = 5


@dataclass(frozen=True)
class OpeInputs:
    """Checked OPE arrays; `position` is filled with zeros when it was not given (len_list == 1)."""

    action_dist: np.ndarray
    position: np.ndarray
    action: np.ndarray | None = None
    reward: np.ndarray | None = None
    pscore: np.ndarray | None = None
    estimated_rewards_by_reg_model: np.ndarray | None = None

    @property
    def n_rounds(self) -> int:
        """Number of logged rounds n."""
        return int(self.action_dist.shape[0])

    def target_probability(self) -> np.ndarray:
        """π_e(a_i | x_i, position_i): the evaluation policy's probability of each logged action at its slot."""
        rows = np.arange(self.n_rounds)
        return self.action_dist[rows, self._required("action"), self.position]

    def importance_weights(self) -> np.ndarray:
        """w_i = π_e(a_i | x_i, position_i) / pscore_i."""
        return self.target_probability() / self._required("pscore")

    def _required(self, name: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"`{name}` is needed here; pass the logged `{name}` array (one value per round)")
        return value


def rows_listed(mask: np.ndarray) -> str:
    """The first few indices where `mask` is true, for error messages, and how many there are in all."""
    found = np.argwhere(np.asarray(mask, dtype=bool))
    listed = [int(r[0]) if r.size == 1 else tuple(int(i) for i in r) for r in found[:_MAX_LISTED]]
    more = f" … ({len(found)} in all)" if len(found) > _MAX_LISTED else ""
    return f"{listed}{more}"


def check_array(array: object, name: str, expected_dim: int) -> np.ndarray:
    """`array` as a float or int ndarray of `expected_dim` dimensions with only finite values, else a ValueError."""
    if array is None:
        raise ValueError(f"`{name}` is required; pass it as a {expected_dim}-D array")
    values = np.asarray(array)
    if values.ndim != expected_dim:
        raise ValueError(f"`{name}` must be a {expected_dim}-D array; got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ValueError(f"`{name}` must be numeric; got dtype {values.dtype}")
    bad = ~np.isfinite(values.astype(float))
    if bad.any():
        kind = "NaN" if np.isnan(values.astype(float)).any() else "infinite values"
        raise ValueError(f"`{name}` holds {kind} at {rows_listed(bad)}; drop or repair those rounds first")
    return values


def check_action_dist(action_dist: object, name: str = "action_dist") -> np.ndarray:
    """A (n, K, L) array of probabilities whose every [i, :, l] sums to 1, else a ValueError naming the rows."""
    dist = check_array(action_dist, name, 3).astype(float)
    if dist.shape[0] == 0 or dist.shape[1] == 0 or dist.shape[2] == 0:
        raise ValueError(f"`{name}` must have at least one round, action and slot; got shape {dist.shape}")
    negative = dist < 0
    if negative.any():
        raise ValueError(
            f"`{name}` must be probabilities >= 0; negative at [round, action, slot] {rows_listed(negative)}"
        )
    sums = dist.sum(axis=1)  # (n, L)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        first = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(
            f"`{name}[i, :, l]` must sum to 1 (a distribution over actions for each round i and slot l); "
            f"[round, slot] {rows_listed(off)} do not (e.g. {first} sums to {sums[first]!r}); normalise each slot"
        )
    return dist


def check_ope_inputs(
    action_dist: object,
    position: object | None = None,
    action: object | None = None,
    reward: object | None = None,
    pscore: object | None = None,
    estimated_rewards_by_reg_model: object | None = None,
) -> OpeInputs:
    """Check and convert OPE inputs (see the module docstring); `None` means the estimator does not use it."""
    dist = check_action_dist(action_dist)
    n, n_actions, len_list = dist.shape
    pos = _check_position(position, n, len_list)
    act = rew = ps = q_hat = None
    if action is not None:
        act = _check_rounds(action, "action", n)
        if not np.issubdtype(act.dtype, np.integer):
            raise ValueError(f"`action` must hold integer action indices; got dtype {act.dtype} (use .astype(int))")
        outside = (act < 0) | (act >= n_actions)
        if outside.any():
            raise ValueError(
                f"`action` must be in [0, {n_actions}) (action_dist.shape[1]); rounds {rows_listed(outside)} are not"
            )
    if reward is not None:
        rew = _check_rounds(reward, "reward", n).astype(float)
    if pscore is not None:
        ps = _check_rounds(pscore, "pscore", n).astype(float)
        outside = (ps <= 0) | (ps > 1)
        if outside.any():
            raise ValueError(
                f"`pscore` must be the logging probability of the logged action, in (0, 1]; rounds "
                f"{rows_listed(outside)} are not (e.g. {ps[outside][0]!r}); fix the logged propensities"
            )
    if estimated_rewards_by_reg_model is not None:
        q_hat = check_array(estimated_rewards_by_reg_model, "estimated_rewards_by_reg_model", 3).astype(float)
        if q_hat.shape != dist.shape:
            raise ValueError(
                f"`estimated_rewards_by_reg_model` must have the shape of action_dist {dist.shape} "
                f"(n_rounds, n_actions, len_list); got {q_hat.shape}"
            )
    return OpeInputs(dist, pos, act, rew, ps, q_hat)


def _check_rounds(values: object, name: str, n: int) -> np.ndarray:
    array = check_array(values, name, 1)
    if array.shape[0] != n:
        raise ValueError(f"`{name}` must have one value per round ({n}, action_dist.shape[0]); got {array.shape[0]}")
    return array


def _check_position(position: object | None, n: int, len_list: int) -> np.ndarray:
    if position is None:
        if len_list > 1:
            raise ValueError(
                f"`position` (the 0-based slot of each logged action) is required when action_dist has "
                f"len_list = {len_list} > 1"
            )
        return np.zeros(n, dtype=int)
    pos = _check_rounds(position, "position", n)
    if not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"`position` must hold integer slot indices; got dtype {pos.dtype} (use .astype(int))")
    outside = (pos < 0) | (pos >= len_list)
    if outside.any():
        raise ValueError(
            f"`position` must be a 0-based slot in [0, {len_list}) (action_dist.shape[2]); rounds "
            f"{rows_listed(outside)} are not (OBD's 1-based positions must be shifted by 1)"
        )
    return pos
