"""Validation on the real Open Bandit Dataset sample: BTS's click rate estimated from the uniform-random log.

OBP's protocol: the ground truth is BTS's mean click in its own log (the two policies ran side by side on the same
population), with its 95 % interval; IPW and SNIPW computed from the random log must land inside it, and must equal
a plain numpy computation written here, independent of training.ope's estimator code.
"""

from pathlib import Path

import numpy as np
import pytest

from training.ope import InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting
from training.ope.open_bandit import bts_action_dist, load_bts_prior, load_open_bandit, on_policy_value

DATA = Path(__file__).resolve().parents[2] / "data" / "open_bandit"


@pytest.fixture(scope="module")
def obd():
    """Both logs and BTS's action_dist over the random log's rounds (100,000 Monte Carlo draws, seed 12345)."""
    random_log = load_open_bandit(DATA, "random")
    bts_log = load_open_bandit(DATA, "bts")
    action_dist = bts_action_dist(DATA / "prior_bts.yaml", random_log["n_rounds"], n_sim=100_000)
    return random_log, bts_log, action_dist


def test_loader_gives_obps_bandit_feedback(obd):
    random_log, bts_log, _ = obd
    for log in (random_log, bts_log):
        assert (log["n_rounds"], log["n_actions"]) == (10_000, 80)
        assert set(np.unique(log["position"])) == {0, 1, 2}
        assert log["context"].shape[0] == 10_000 and set(np.unique(log["context"])) <= {0.0, 1.0}
        assert log["action_context"].shape == (80, 4)
        assert set(np.unique(log["reward"])) == {0.0, 1.0}
    np.testing.assert_array_equal(random_log["pscore"], 1 / 80)  # uniform over 80 items at each slot
    assert int(random_log["reward"].sum()) == 38 and int(bts_log["reward"].sum()) == 42


def test_bts_action_dist_is_a_seeded_distribution_per_slot(obd):
    _random_log, _, action_dist = obd
    assert action_dist.shape == (10_000, 80, 3)
    np.testing.assert_allclose(action_dist.sum(axis=1), 1.0)
    again = bts_action_dist(DATA / "prior_bts.yaml", 1, n_sim=100_000)
    np.testing.assert_array_equal(again[0], action_dist[0])
    alpha, beta = load_bts_prior(DATA / "prior_bts.yaml")
    favourite = int(np.argmax(alpha / (alpha + beta)))
    assert action_dist[0, favourite, 0] == action_dist[0, :, 0].max()  # highest posterior mean, most often first


def test_ipw_and_snipw_of_bts_land_in_its_on_policy_interval(obd):
    random_log, bts_log, action_dist = obd
    reward, action, position, pscore = (random_log[k] for k in ("reward", "action", "position", "pscore"))
    # Plain numpy reference: w_i = π_BTS(a_i | slot k_i) / p_i.
    w = action_dist[np.arange(reward.size), action, position] / pscore
    reference_ipw, reference_snipw = np.mean(w * reward), np.sum(w * reward) / np.sum(w)
    kwargs = {"reward": reward, "action": action, "action_dist": action_dist, "pscore": pscore, "position": position}
    ipw = InverseProbabilityWeighting().estimate_policy_value(**kwargs)
    snipw = SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kwargs)
    assert abs(ipw - reference_ipw) < 1e-12 and abs(snipw - reference_snipw) < 1e-12
    truth = on_policy_value(bts_log["reward"])
    assert truth.value == pytest.approx(0.0042)
    assert truth.contains(ipw), (ipw, truth)
    assert truth.contains(snipw), (snipw, truth)
    # How much this can tell: 10,000 rounds with 42 clicks give a wide interval, which also holds the random
    # policy's own click rate (0.0038); the equality with the numpy reference above is what pins the formula.
    assert truth.contains(float(reward.mean()))


def test_missing_data_path_says_where_to_point():
    with pytest.raises(ValueError, match="point data_path at the dataset root"):
        load_open_bandit(DATA / "nowhere", "random")
    with pytest.raises(ValueError, match="behavior_policy"):
        load_open_bandit(DATA, "greedy")
