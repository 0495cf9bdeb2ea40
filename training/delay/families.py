"""Delay distributions F of the cure model, each with its log-density, CDF and their gradients.

Parameters are unconstrained reals φ (logs of positive quantities), so the optimiser needs no constraints:

    exponential              φ = (log λ)              F(t) = 1 − e^{−λt}
    weibull                  φ = (log k, log η)       F(t) = 1 − e^{−(t/η)^k}
    piecewise_exponential    φ = (log h_0 … log h_m)  F(t) = 1 − e^{−H(t)},  H(t) = Σ_j h_j·|[τ_j, τ_{j+1}) ∩ [0, t)|

with fixed knots 0 = τ_0 < τ_1 < … < τ_m (hours) and τ_{m+1} = ∞: the last hazard extends past the window.
A family is fitted through `Prepared` data: whatever depends only on the times (the piecewise exposure matrix) is
computed once per fit, not once per likelihood evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gamma

FAMILIES: tuple[str, ...] = ("exponential", "weibull", "piecewise_exponential")
DEFAULT_KNOTS_HOURS: tuple[float, ...] = (1.0, 3.0, 6.0, 12.0, 24.0, 48.0)
"""Inner knots τ_1 … τ_m of the piecewise-exponential family: finer where most purchases happen."""

TINY_HOURS = 1e-9  # a delay of exactly 0 has log-density −∞ under Weibull k > 1; purchases are ≥ 1 ms anyway


@dataclass(frozen=True)
class Prepared:
    """Times of one fit, with what the family needs precomputed."""

    t: np.ndarray  # hours, > 0
    log_t: np.ndarray
    exposure: np.ndarray | None = None  # piecewise: (n, m+1) time spent in each interval before t
    interval: np.ndarray | None = None  # piecewise: index of the interval holding t


class DelayFamily:
    """One parametric family of delay distributions on (0, ∞)."""

    name: str = ""

    def n_params(self) -> int:
        """Number of free parameters φ of F (the cure fraction p is counted by the model, not here)."""
        raise NotImplementedError

    def prepare(self, t: np.ndarray) -> Prepared:
        """Precompute what log-density and CDF need for these times."""
        t = np.maximum(np.asarray(t, dtype=np.float64), TINY_HOURS)
        return Prepared(t=t, log_t=np.log(t))

    def initial(self, rate: float) -> np.ndarray:
        """Starting φ equal to an exponential with this rate (per hour)."""
        raise NotImplementedError

    def bounds(self) -> list[tuple[float, float]]:
        """Box on φ that keeps the optimiser away from degenerate distributions."""
        raise NotImplementedError

    def log_pdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """log f(t) per row and its gradient in φ, shape (n, n_params)."""
        raise NotImplementedError

    def cdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """F(t) per row and its gradient in φ, shape (n, n_params)."""
        raise NotImplementedError

    def named(self, phi: np.ndarray) -> dict[str, float]:
        """Readable parameters (rates per hour, shape, scale in hours)."""
        raise NotImplementedError


class Exponential(DelayFamily):
    """F(t) = 1 − e^{−λt}; the seed paper's P(D > t) = e^{−λt}."""

    name = "exponential"

    def n_params(self) -> int:
        """One rate λ."""
        return 1

    def initial(self, rate: float) -> np.ndarray:
        """φ = log λ."""
        return np.array([np.log(rate)])

    def bounds(self) -> list[tuple[float, float]]:
        """Mean delay between 12 minutes … 10⁷ hours."""
        return [(-16.0, 1.7)]

    def log_pdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """log λ − λt."""
        rate = np.exp(phi[0])
        return phi[0] - rate * data.t, (1.0 - rate * data.t)[:, None]

    def cdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """1 − e^{−λt}."""
        rate = np.exp(phi[0])
        survival = np.exp(-rate * data.t)
        return 1.0 - survival, (survival * rate * data.t)[:, None]

    def named(self, phi: np.ndarray) -> dict[str, float]:
        """rate λ per hour and mean 1/λ hours."""
        rate = float(np.exp(phi[0]))
        return {"rate_per_hour": rate, "mean_hours": 1.0 / rate}


class Weibull(DelayFamily):
    """F(t) = 1 − e^{−(t/η)^k}: k < 1 fast then a long tail, k > 1 purchases bunched later, k = 1 exponential."""

    name = "weibull"

    def n_params(self) -> int:
        """Shape k and scale η."""
        return 2

    def initial(self, rate: float) -> np.ndarray:
        """k = 1, η = 1/rate."""
        return np.array([0.0, -np.log(rate)])

    def bounds(self) -> list[tuple[float, float]]:
        """k in [0.05, 20], η in [0.001 h, 10⁷ h]."""
        return [(np.log(0.05), np.log(20.0)), (np.log(1e-3), 16.0)]

    @staticmethod
    def _z(phi: np.ndarray, data: Prepared) -> tuple[float, np.ndarray, np.ndarray]:
        """k, log(t/η) and z = (t/η)^k."""
        k = np.exp(phi[0])
        log_ratio = data.log_t - phi[1]
        return k, log_ratio, np.exp(np.clip(k * log_ratio, -700.0, 700.0))

    def log_pdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """log k − log η + (k − 1)·log(t/η) − z."""
        k, log_ratio, z = self._z(phi, data)
        value = phi[0] - phi[1] + (k - 1.0) * log_ratio - z
        grad = np.column_stack([1.0 + k * log_ratio - k * z * log_ratio, -k + k * z])
        return value, grad

    def cdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """1 − e^{−z}; dz/dlog k = k·z·log(t/η), dz/dlog η = −k·z."""
        k, log_ratio, z = self._z(phi, data)
        survival = np.exp(-z)
        grad = np.column_stack([survival * k * z * log_ratio, -survival * k * z])
        return 1.0 - survival, grad

    def named(self, phi: np.ndarray) -> dict[str, float]:
        """shape k, scale η hours and mean η·Γ(1 + 1/k) hours."""
        k, eta = float(np.exp(phi[0])), float(np.exp(phi[1]))
        return {"shape": k, "scale_hours": eta, "mean_hours": eta * float(gamma(1.0 + 1.0 / k))}


class PiecewiseExponential(DelayFamily):
    """Constant hazard h_j between fixed knots; the last hazard holds from the last knot on."""

    name = "piecewise_exponential"

    def __init__(self, knots_hours: Sequence[float] = DEFAULT_KNOTS_HOURS) -> None:
        """Inner knots τ_1 < … < τ_m in hours (0 is implied)."""
        knots = np.asarray(knots_hours, dtype=np.float64)
        if knots.ndim != 1 or knots.size == 0 or knots[0] <= 0 or np.any(np.diff(knots) <= 0):
            raise ValueError(
                f"knots_hours must be increasing positive hours, e.g. {DEFAULT_KNOTS_HOURS}; got {knots_hours!r}"
            )
        self.edges = np.concatenate([[0.0], knots])  # interval j is [edges[j], edges[j+1]); the last is open

    def n_params(self) -> int:
        """One hazard per interval."""
        return len(self.edges)

    def prepare(self, t: np.ndarray) -> Prepared:
        """Time spent in each interval before t, and the interval of t."""
        base = super().prepare(t)
        upper = np.append(self.edges[1:], np.inf)
        exposure = np.clip(base.t[:, None] - self.edges[None, :], 0.0, (upper - self.edges)[None, :])
        interval = np.searchsorted(self.edges, base.t, side="right") - 1
        return Prepared(t=base.t, log_t=base.log_t, exposure=exposure, interval=interval)

    def initial(self, rate: float) -> np.ndarray:
        """Every hazard equal to rate."""
        return np.full(self.n_params(), np.log(rate))

    def bounds(self) -> list[tuple[float, float]]:
        """Hazards between e^{−16} and e^{1.7} (mean times from 12 minutes to 10⁷ hours)."""
        return [(-16.0, 1.7)] * self.n_params()

    def log_pdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """log h_{j(t)} − H(t)."""
        assert data.exposure is not None and data.interval is not None
        hazard = np.exp(phi)
        weighted = data.exposure * hazard[None, :]
        grad = -weighted
        grad[np.arange(len(data.t)), data.interval] += 1.0
        return phi[data.interval] - weighted.sum(axis=1), grad

    def cdf(self, phi: np.ndarray, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """1 − e^{−H(t)}; dH/dlog h_j = h_j·(time in interval j)."""
        assert data.exposure is not None
        weighted = data.exposure * np.exp(phi)[None, :]
        survival = np.exp(-weighted.sum(axis=1))
        return 1.0 - survival, survival[:, None] * weighted

    def named(self, phi: np.ndarray) -> dict[str, float]:
        """Hazard per hour of each interval, keyed by its start in hours."""
        return {f"hazard_from_{edge:g}h": float(h) for edge, h in zip(self.edges, np.exp(phi))}


def make_family(name: str, knots_hours: Sequence[float] = DEFAULT_KNOTS_HOURS) -> DelayFamily:
    """The family called `name` (one of FAMILIES)."""
    if name == "exponential":
        return Exponential()
    if name == "weibull":
        return Weibull()
    if name == "piecewise_exponential":
        return PiecewiseExponential(knots_hours)
    raise ValueError(f"unknown delay family {name!r}; choose from {list(FAMILIES)}")
