"""Nie & Wager's setups A–D: the formulas, checked on large draws against their closed forms."""

import numpy as np
import pytest

from simulator.nie_wager import CONTROL, SETUPS, TREATED, nie_wager


@pytest.mark.parametrize("setup", SETUPS)
def test_draws_are_seeded_and_shaped(setup):
    a, b = nie_wager(setup, n=500, d=8, seed=3), nie_wager(setup, n=500, d=8, seed=3)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.X.shape == (500, 8) and list(a.X.columns) == [f"x{k}" for k in range(1, 9)]
    assert set(a.treatment) <= {CONTROL, TREATED}
    np.testing.assert_array_equal(a.propensity, np.where(a.treatment == TREATED, a.e, 1 - a.e))
    assert not np.array_equal(a.y, nie_wager(setup, n=500, seed=4).y)


def test_formulas():
    a = nie_wager("A", n=2000, seed=0)
    x = a.X.to_numpy()
    np.testing.assert_allclose(a.tau, (x[:, 0] + x[:, 1]) / 2)
    np.testing.assert_allclose(a.e, np.clip(np.sin(np.pi * x[:, 0] * x[:, 1]), 0.1, 0.9))
    assert x.min() >= 0 and x.max() <= 1
    b = nie_wager("B", n=2000, seed=0)
    x = b.X.to_numpy()
    np.testing.assert_allclose(b.tau, x[:, 0] + np.log1p(np.exp(x[:, 1])))
    np.testing.assert_allclose(b.b, np.maximum(np.maximum(0, x[:, 0] + x[:, 1]), x[:, 2]) + np.maximum(0, x[:, 3] + x[:, 4]))
    assert np.all(b.e == 0.5)
    c = nie_wager("C", n=2000, seed=0)
    x = c.X.to_numpy()
    assert np.all(c.tau == 1.0)
    np.testing.assert_allclose(c.e, 1 / (1 + np.exp(x[:, 1] + x[:, 2])))
    d = nie_wager("D", n=2000, seed=0)
    x = d.X.to_numpy()
    np.testing.assert_allclose(d.tau, np.maximum(0, x[:, :3].sum(1)) - np.maximum(0, x[:, 3] + x[:, 4]))
    np.testing.assert_allclose(d.e, 1 / (1 + np.exp(-x[:, 0]) + np.exp(-x[:, 1])))


@pytest.mark.parametrize("setup", SETUPS)
def test_outcome_is_baseline_plus_half_signed_effect_plus_unit_noise(setup):
    data = nie_wager(setup, n=200_000, seed=1)
    noise = data.y - data.b - np.where(data.treatment == TREATED, 0.5, -0.5) * data.tau
    assert noise.mean() == pytest.approx(0.0, abs=0.01) and noise.std() == pytest.approx(1.0, abs=0.01)
    assert (data.treatment == TREATED).mean() == pytest.approx(data.e.mean(), abs=0.005)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"setup must be one of \['A', 'B', 'C', 'D'\]; got 'E'"):
        nie_wager("E")
    with pytest.raises(ValueError, match="d must be >= 5"):
        nie_wager("A", d=4)
