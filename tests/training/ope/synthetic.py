"""Synthetic contextual bandit logs with a known truth, shared by the estimator tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_ACTIONS = 4
_REWARD_WEIGHTS = np.array([[1.0, -0.5, 0.0, 0.8], [-0.3, 0.9, 0.6, -0.8]])
_REWARD_BIAS = np.array([-1.0, -0.4, 0.2, -0.6])
_LOGGING_WEIGHTS = np.array([[0.8, 0.0, -0.5, 0.2], [0.0, -0.6, 0.3, 0.4]])
_TARGET_WEIGHTS = np.array([[-1.0, 0.5, 1.5, 0.0], [1.0, -0.5, 0.0, 1.5]])


@dataclass(frozen=True)
class Log:
    """One logged data set: OBP inputs plus the expected rewards q(x_i, a) and the target policy's true value."""

    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    action_dist: np.ndarray  # (n, K, 1) stochastic target policy
    expected_reward: np.ndarray  # (n, K)
    truth: float  # (1/n) Σ_i Σ_a π_e(a | x_i) q(x_i, a): the target's value on these contexts
    logging_value: float  # the same for the logging policy


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def synthetic_log(seed: int, n: int = 500) -> Log:
    """Binary rewards q(x, a) = sigmoid(x·W_a + b_a); a softmax logging policy; a different softmax target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    q = 1.0 / (1.0 + np.exp(-(x @ _REWARD_WEIGHTS + _REWARD_BIAS)))
    pi_b = _softmax(x @ _LOGGING_WEIGHTS)
    action = (pi_b.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1).clip(max=N_ACTIONS - 1)
    rows = np.arange(n)
    reward = rng.binomial(1, q[rows, action]).astype(float)
    pi_e = _softmax(2.0 * x @ _TARGET_WEIGHTS)
    return Log(
        action=action, reward=reward, pscore=pi_b[rows, action], action_dist=pi_e[:, :, None],
        expected_reward=q, truth=float((pi_e * q).sum(axis=1).mean()),
        logging_value=float((pi_b * q).sum(axis=1).mean()),
    )
