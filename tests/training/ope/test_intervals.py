"""OBP's bootstrap reproduced draw for draw, its keys, and the zero-event bound."""

import numpy as np
import pytest
from scipy.stats import norm

from training.ope.intervals import (
    estimate_confidence_interval_by_bootstrap,
    interval_keys,
    normal_interval,
    zero_terms_bound,
)


def _obp_loop(samples, alpha, n_bootstrap_samples, random_state):
    """OBP's loop as written in obp.utils: one choice() per resample."""
    random_ = np.random.RandomState(random_state)
    means = [np.mean(random_.choice(samples, size=samples.shape[0])) for _ in range(n_bootstrap_samples)]
    return np.mean(means), np.percentile(means, 100 * alpha / 2), np.percentile(means, 100 * (1 - alpha / 2))


@pytest.mark.parametrize("n", [7, 1000, 5000])  # 5000 rounds × 1000 resamples spans several batches
def test_bootstrap_draws_exactly_obps_resamples(n):
    samples = np.random.default_rng(n).exponential(size=n)
    ours = estimate_confidence_interval_by_bootstrap(samples, alpha=0.1, n_bootstrap_samples=1000, random_state=42)
    mean, lower, upper = _obp_loop(samples, 0.1, 1000, 42)
    assert ours["mean"] == pytest.approx(mean, rel=1e-12)
    assert ours["90.0% CI (lower)"] == pytest.approx(lower, rel=1e-12)
    assert ours["90.0% CI (upper)"] == pytest.approx(upper, rel=1e-12)


def test_keys_follow_obps_formatting():
    assert interval_keys(0.05) == ("95.0% CI (lower)", "95.0% CI (upper)")
    assert interval_keys(0.01) == ("99.0% CI (lower)", "99.0% CI (upper)")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"n_bootstrap_samples": 0}, "n_bootstrap_samples"),
        ({"n_bootstrap_samples": 10.5}, "n_bootstrap_samples"),
    ],
)
def test_bad_bootstrap_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_confidence_interval_by_bootstrap(np.ones(5), **kwargs)


def test_normal_interval():
    z = norm.ppf(0.975)
    assert normal_interval(1.0, 0.5) == pytest.approx((1.0 - 0.5 * z, 1.0 + 0.5 * z))


def test_zero_terms_bound_is_wilson_for_zero_successes():
    z2 = norm.ppf(0.975) ** 2
    assert zero_terms_bound(100.0, 0.0, 1.0) == (0.0, pytest.approx(z2 / (100 + z2)))  # ≈ 3.7 %, near 3/n
    share = z2 / (100 + z2)
    assert zero_terms_bound(100.0, -2.0, 5.0) == (pytest.approx(-2 * share), pytest.approx(5 * share))
    assert zero_terms_bound(0.0, 0.0, 1.0) == (0.0, 1.0)  # no effective rounds: the whole reward range
