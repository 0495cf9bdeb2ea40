"""PSI, Jensen–Shannon and the homogeneity test on fixed bins, against independent numpy/scipy computations."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from training.guards.drift import SHARE_FLOOR, Reference, bin_counts, compare, fit_bins, homogeneity, js_distance, psi


def numpy_psi(reference: np.ndarray, serving: np.ndarray, edges: np.ndarray) -> float:
    """PSI written out with np.histogram over the same right-closed bins (finite values only)."""
    outer = np.concatenate([[-np.inf], edges, [np.inf]])
    # np.histogram bins are left-closed: shift by one ulp so that v == edge falls in the bin the edge closes.
    ref = np.histogram(np.nextafter(reference, -np.inf), outer)[0] / reference.size
    srv = np.histogram(np.nextafter(serving, -np.inf), outer)[0] / serving.size
    p, q = np.maximum(ref, SHARE_FLOOR), np.maximum(srv, SHARE_FLOOR)
    return float(((q - p) * np.log(q / p)).sum())


def test_psi_matches_a_numpy_reference_on_decile_bins():
    rng = np.random.default_rng(0)
    reference, serving = rng.normal(0, 1, 5000), rng.normal(0.3, 1.2, 800)
    bins = fit_bins("x", reference)
    edges = np.asarray(bins.edges)
    assert edges.size == 9 and np.allclose(edges, np.quantile(reference, np.arange(1, 10) / 10))
    result = compare(bins, serving)
    assert result.psi == pytest.approx(numpy_psi(reference, serving, edges), rel=1e-12)
    assert result.psi == pytest.approx(0.0996, abs=5e-4)  # this seed's value (pinned)


def test_psi_of_identical_shares_is_zero_and_grows_with_the_shift():
    shares = np.full(10, 0.1)
    assert psi(shares, shares) == 0.0
    shifted = np.array([0.05] * 5 + [0.15] * 5)
    assert psi(shares, shifted) == pytest.approx(5 * (0.05 * np.log(0.5)) * -1 + 5 * 0.05 * np.log(1.5))


def test_js_distance_matches_scipy():
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.3, 0.2, 0.1])
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
    assert js_distance(p, p) == 0.0


def test_homogeneity_matches_scipy_chi2_contingency():
    ref, srv = np.array([500, 480, 520, 0, 3]), np.array([40, 70, 90, 0, 0])
    chi2, dof, p_value = homogeneity(ref, srv)
    expected = chi2_contingency(np.vstack([ref, srv])[:, [0, 1, 2, 4]], correction=False)
    assert (chi2, dof) == (pytest.approx(expected.statistic), expected.dof)
    assert p_value == pytest.approx(expected.pvalue)


def test_point_masses_become_one_bin_and_missing_values_their_own():
    values = np.array([0.0] * 60 + [1.0, 2.0, 3.0, 4.0] * 10)
    bins = fit_bins("purchases_total", values)
    assert bins.edges[0] == 0.0 and len(set(bins.edges)) == len(bins.edges)
    assert bins.counts[0] == 60 and bins.counts[-1] == 0
    counts = bin_counts(np.array([0.0, np.nan, np.nan, 5.0]), np.asarray(bins.edges))
    assert counts[0] == 1 and counts[-1] == 2 and counts[-2] == 1


def test_a_feature_broken_to_missing_values_shows_as_a_large_shift():
    rng = np.random.default_rng(1)
    bins = fit_bins("avg_order_value", rng.lognormal(3, 0.3, 5000))
    broken = compare(bins, np.full(500, np.nan))
    assert broken.psi > 5 and broken.p_value < 1e-50


def test_reference_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(2)
    reference = Reference.fit({"a": rng.random(300), "b": rng.integers(0, 3, 300).astype(float)}, model_version="4")
    loaded = Reference.load(reference.save(tmp_path / "ref.json"))
    assert loaded == reference


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="same length"):
        Reference.fit({"a": np.zeros(3), "b": np.zeros(4)})
