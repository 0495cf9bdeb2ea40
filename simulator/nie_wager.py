"""The four synthetic setups of Nie & Wager (2021, "Quasi-oracle estimation of heterogeneous treatment effects",
§6), the causal-inference literature's standard test bed for CATE learners (causalml's `synthetic_data` modes 1–4).

Each setup draws covariates X (d of them), a baseline b(x), a propensity e(x) and an effect τ(x); the treatment is
W ~ Bernoulli(e(X)) and the outcome Y = b(X) + (W − 0.5)·τ(X) + σ·ε with ε ~ N(0, 1):

* A — difficult nuisance, easy effect: X ~ U[0, 1]^d, b = sin(π x1 x2) + 2(x3 − 0.5)² + x4 + 0.5 x5,
  e = clip(sin(π x1 x2), 0.1, 0.9), τ = (x1 + x2)/2.
* B — randomised trial: X ~ N(0, I_d), b = max(0, x1 + x2, x3) + max(0, x4 + x5), e = 1/2, τ = x1 + log(1 + e^{x2}).
* C — easy propensity, difficult baseline, constant effect: X ~ N(0, I_d), b = 2 log(1 + e^{x1 + x2 + x3}),
  e = 1/(1 + e^{x2 + x3}), τ = 1.
* D — unrelated treatment and control arms: X ~ N(0, I_d), b = (max(0, x1 + x2 + x3) + max(0, x4 + x5))/2,
  e = 1/(1 + e^{−x1} + e^{−x2}), τ = max(0, x1 + x2 + x3) − max(0, x4 + x5).

(x1 … x5 are the first five covariates; the paper's indices start at 1, causalml's at 0.) The arms are named
"control" and "treated", so the data plug into the multi-arm learners with `control="control"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SETUPS = ("A", "B", "C", "D")
CONTROL, TREATED = "control", "treated"


@dataclass(frozen=True)
class SetupData:
    """One draw of a setup: learner inputs plus the truth (τ, e, b) per row."""

    X: pd.DataFrame
    treatment: np.ndarray  # "control" / "treated"
    y: np.ndarray
    propensity: np.ndarray  # the probability of each row's logged arm: e where treated, 1 − e where control
    tau: np.ndarray
    e: np.ndarray
    b: np.ndarray


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def nie_wager(setup: str, n: int = 10_000, d: int = 8, sigma: float = 1.0, seed: int = 0) -> SetupData:
    """Draw n rows of setup A, B, C or D with d ≥ 5 covariates and noise sd `sigma` (seeded, deterministic)."""
    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {list(SETUPS)}; got {setup!r}")
    if d < 5:
        raise ValueError(f"the setups use the first five covariates, so d must be >= 5; got {d}")
    rng = np.random.default_rng([seed, SETUPS.index(setup)])
    if setup == "A":
        X = rng.uniform(size=(n, d))
        x1, x2, x3, x4, x5 = X[:, :5].T
        b = np.sin(np.pi * x1 * x2) + 2 * (x3 - 0.5) ** 2 + x4 + 0.5 * x5
        e = np.clip(np.sin(np.pi * x1 * x2), 0.1, 0.9)
        tau = (x1 + x2) / 2
    else:
        X = rng.normal(size=(n, d))
        x1, x2, x3, x4, x5 = X[:, :5].T
        if setup == "B":
            b = np.maximum.reduce([np.zeros(n), x1 + x2, x3]) + np.maximum(0.0, x4 + x5)
            e = np.full(n, 0.5)
            tau = x1 + _softplus(x2)
        elif setup == "C":
            b = 2 * _softplus(x1 + x2 + x3)
            e = 1.0 / (1.0 + np.exp(x2 + x3))
            tau = np.ones(n)
        else:
            b = (np.maximum(0.0, x1 + x2 + x3) + np.maximum(0.0, x4 + x5)) / 2
            e = 1.0 / (1.0 + np.exp(-x1) + np.exp(-x2))
            tau = np.maximum(0.0, x1 + x2 + x3) - np.maximum(0.0, x4 + x5)
    w = rng.random(n) < e
    y = b + (w - 0.5) * tau + sigma * rng.normal(size=n)
    return SetupData(
        X=pd.DataFrame(X, columns=[f"x{k + 1}" for k in range(d)]),
        treatment=np.where(w, TREATED, CONTROL),
        y=y,
        propensity=np.where(w, e, 1.0 - e),
        tau=tau,
        e=e,
        b=b,
    )
