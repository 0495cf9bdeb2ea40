"""Population stability (PSI), Jensen–Shannon distance and a homogeneity test between a training window and a
serving window, on fixed bins.

Bins are fixed once, from the training window (`Reference`): the edges are the reference's deciles (duplicates
dropped, so a point mass becomes one bin), bins are right-closed with open ends, and a last bin holds missing
values (NaN) — a feature that breaks to NaN moves its mass there. A serving window is compared on those bins:

    PSI   = Σ_b (q_b − p_b) · ln(q_b / p_b)                 p, q: reference, serving shares, each floored at 1e-4
    JS    = sqrt( ½ KL(p ‖ m) + ½ KL(q ‖ m) ),  m = (p+q)/2   (Jensen–Shannon distance, log base 2: 0 … 1)
    χ²    = Pearson's statistic of the 2 × B table (reference counts, serving counts), bins empty in both dropped,
            with B_used − 1 degrees of freedom: the test the alarm uses (PSI and JS size the effect).

PSI and JS are descriptive: their null distribution depends on both window sizes, so the alarm's false-alarm rate
is set by the χ² test (training/guards/monitor.py), and PSI/JS only keep trivial but significant shifts quiet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

SHARE_FLOOR = 1e-4  # empty bins' share in PSI and JS: keeps ln finite (a documented, common choice)
DEFAULT_BINS = 10


@dataclass(frozen=True)
class FeatureBins:
    """One feature's fixed bins: inner edges (right-closed bins, open ends) and the reference's counts per bin, the
    last count being the missing values'."""

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]  # len(edges) + 2: len(edges) + 1 value bins, then the NaN bin

    @property
    def shares(self) -> np.ndarray:
        """The reference's share of each bin."""
        counts = np.asarray(self.counts, np.float64)
        return counts / max(counts.sum(), 1.0)

    def count(self, values: np.ndarray) -> np.ndarray:
        """Counts of `values` in these bins (NaN in the last)."""
        return bin_counts(np.asarray(values, np.float64), np.asarray(self.edges, np.float64))


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner edges from the finite values' quantiles 1/bins … (bins−1)/bins, duplicates dropped."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(finite, np.arange(1, bins) / bins))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per right-closed bin of `edges` (open ends), then the count of NaN values."""
    missing = np.isnan(values)
    index = np.searchsorted(edges, values[~missing], side="left")  # v ≤ edges[0] → 0; edges[i-1] < v ≤ edges[i] → i
    counts = np.bincount(index, minlength=edges.size + 1)
    return np.append(counts, missing.sum()).astype(np.int64)


def fit_bins(name: str, values: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureBins:
    """Fixed bins of one feature from its training-window values."""
    values = np.asarray(values, np.float64)
    edges = quantile_edges(values, bins)
    return FeatureBins(name, tuple(float(e) for e in edges), tuple(int(c) for c in bin_counts(values, edges)))


def _floored(shares: np.ndarray) -> np.ndarray:
    return np.maximum(shares, SHARE_FLOOR)


def psi(reference: np.ndarray, serving: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins (see the module docstring)."""
    p, q = _floored(np.asarray(reference, np.float64)), _floored(np.asarray(serving, np.float64))
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, serving: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) of two share vectors over the same bins."""
    p, q = _floored(np.asarray(reference, np.float64)), _floored(np.asarray(serving, np.float64))
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    divergence = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(np.sqrt(max(divergence, 0.0)))


def homogeneity(reference_counts: np.ndarray, serving_counts: np.ndarray) -> tuple[float, int, float]:
    """(χ², degrees of freedom, p-value) of Pearson's test that both counts come from one distribution."""
    table = np.vstack([reference_counts, serving_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[1].sum() == 0:
        return 0.0, 0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return chi2, dof, float(stats.chi2.sf(chi2, dof))


@dataclass(frozen=True)
class Comparison:
    """One feature's serving window against its reference."""

    name: str
    n: int
    psi: float
    js: float
    chi2: float
    dof: int
    p_value: float


def compare(bins: FeatureBins, values: np.ndarray) -> Comparison:
    """PSI, JS and the homogeneity test of `values` (a serving window) against `bins`."""
    counts = bins.count(values)
    served = counts / max(counts.sum(), 1)
    chi2, dof, p_value = homogeneity(np.asarray(bins.counts), counts)
    return Comparison(bins.name, int(counts.sum()), psi(bins.shares, served), js_distance(bins.shares, served),
                      chi2, dof, p_value)


@dataclass(frozen=True)
class Reference:
    """The training window's fixed bins for every monitored column (features and the score), saved as JSON."""

    columns: dict[str, FeatureBins]
    n: int
    model_version: str | None = None

    @classmethod
    def fit(cls, columns: dict[str, np.ndarray], bins: int = DEFAULT_BINS, model_version: str | None = None) -> Reference:
        """Bins of every column of a training window (equal lengths)."""
        sizes = {len(v) for v in columns.values()}
        if len(sizes) > 1:
            raise ValueError(f"every column of the training window needs the same length; got {sorted(sizes)}")
        return cls({name: fit_bins(name, v, bins) for name, v in columns.items()}, sizes.pop() if sizes else 0,
                   model_version)

    def save(self, path: Path) -> Path:
        """Write as JSON (bins, counts, model version)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "n": self.n, "model_version": self.model_version,
            "columns": {n: {"edges": b.edges, "counts": b.counts} for n, b in self.columns.items()},
        }))
        return path

    @classmethod
    def load(cls, path: Path) -> Reference:
        """Read a reference written by `save`."""
        data = json.loads(Path(path).read_text())
        return cls({n: FeatureBins(n, tuple(c["edges"]), tuple(c["counts"])) for n, c in data["columns"].items()},
                   int(data["n"]), data.get("model_version"))
