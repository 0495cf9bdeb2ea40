"""Estimators on hand-computed examples, their intervals and diagnostics, and unbiasedness / coverage on synthetic
logs with a known truth (see the comments for the arithmetic)."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from tests.training.ope.examples import B_DIST, Q_A, Q_B, A, B
from tests.training.ope.synthetic import synthetic_log
from training.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    OffPolicyEstimate,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    effective_sample_size,
)


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        (InverseProbabilityWeighting(), 5.5 / 4),
        (InverseProbabilityWeighting(lambda_=1.5), (1 + 0 + 1.5 * 2 + 0.5) / 4),  # w clipped to [1, 1.5, 1.5, 0.5]
        (SelfNormalizedInverseProbabilityWeighting(), 5.5 / 7.5),
    ],
)
def test_weighting_estimators_by_hand(estimator, expected):
    assert estimator.estimate_policy_value(**A) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        (DirectMethod(), 3.425 / 4),
        (DoublyRobust(), (0.625 + (0.5 + 4 * -0.5) + 1.3 + 1.0) / 4),
        (DoublyRobust(lambda_=1.5), (0.625 + (0.5 + 1.5 * -0.5) + 1.3 + 1.0) / 4),
        (SelfNormalizedDoublyRobust(), 3.425 / 4 + 4 * -0.5 / 7.5),
        (SwitchDoublyRobust(lambda_=3.0), 3.425 / 4),  # w = 4 > 3: that round falls back to the model
        (SwitchDoublyRobust(lambda_=4.0), (0.625 - 1.5 + 1.3 + 1.0) / 4),  # w ≤ λ keeps the correction (= DR)
        (DoublyRobustWithShrinkage(lambda_=4.0), (0.625 + (0.5 + 16 / 20 * -0.5) + 1.3 + 1.0) / 4),  # ŵ = 4·4/(16+4)
        (DoublyRobustWithShrinkage(lambda_=0.0), 3.425 / 4),  # λ = 0 shrinks every weight to 0: DM
        (DoublyRobustWithShrinkage(lambda_=np.inf), (0.625 - 1.5 + 1.3 + 1.0) / 4),  # λ = ∞: DR
    ],
)
def test_model_based_estimators_by_hand(estimator, expected):
    value = estimator.estimate_policy_value(**A, estimated_rewards_by_reg_model=Q_A)
    assert value == pytest.approx(expected, abs=1e-15)


def test_slots_are_read_at_each_rounds_position():
    assert InverseProbabilityWeighting().estimate_policy_value(**B) == pytest.approx(3.2 / 3, abs=1e-15)
    assert SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**B) == pytest.approx(3.2 / 4.2, abs=1e-15)
    dm, dr = DirectMethod(), DoublyRobust()
    assert dm.estimate_policy_value(B_DIST, Q_B, B["position"]) == pytest.approx(0.94 / 3, abs=1e-15)
    dr_value = dr.estimate_policy_value(**B, estimated_rewards_by_reg_model=Q_B)
    assert dr_value == pytest.approx((0.14 + 1.2 * 0.9 + 0.45 + 2 * 0.5 + 0.35 - 0.4) / 3, abs=1e-15)


def test_round_rewards_are_obps_terms():
    terms = InverseProbabilityWeighting()._estimate_round_rewards(**A)
    np.testing.assert_allclose(terms, [1.0, 0.0, 4.0, 0.5], rtol=0, atol=1e-15)
    dr_terms = DoublyRobust()._estimate_round_rewards(**A, estimated_rewards_by_reg_model=Q_A)
    np.testing.assert_allclose(dr_terms, [0.625, -1.5, 1.3, 1.0], rtol=0, atol=1e-15)


def test_estimator_names_are_obps():
    names = [e().estimator_name for e in (
        InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting, DirectMethod, DoublyRobust,
        SelfNormalizedDoublyRobust, SwitchDoublyRobust, DoublyRobustWithShrinkage,
    )]
    assert names == ["ipw", "snipw", "dm", "dr", "sndr", "switch-dr", "dr-os"]


def test_deterministic_policy_is_a_one_hot_action_dist():
    one_hot = np.eye(3)[[0, 0, 2, 1]][:, :, None]  # target picks 0, 0, 2, 1: matches rounds 0, 2 and 3
    ipw = InverseProbabilityWeighting().estimate_policy_value(A["reward"], A["action"], one_hot, A["pscore"])
    assert ipw == pytest.approx((1 / 0.5 * 1.0 + 1 / 0.25 * 2.0 + 1 / 0.5 * 1.0) / 4, abs=1e-15)


def test_ipw_analytic_interval_is_the_sd_of_its_terms():
    # terms [1, 0, 4, 0.5], mean 1.375; Σ(t − mean)² = 0.140625 + 1.890625 + 6.890625 + 0.765625 = 9.6875
    est = InverseProbabilityWeighting().estimate_with_diagnostics(**A)
    se = math.sqrt(9.6875 / 3 / 4)
    assert est.se == pytest.approx(se, rel=1e-14)
    z = norm.ppf(0.975)
    assert (est.lower, est.upper) == pytest.approx((1.375 - z * se, 1.375 + z * se), rel=1e-14)
    assert est.interval_method == "normal" and est.note == ""
    assert (est.ess, est.max_weight, est.n_rounds) == (pytest.approx(7.5**2 / 21.25), 4.0, 4)


def test_snipw_interval_is_the_delta_method():
    # V = 5.5/7.5 = 11/15; w·(r − V) = [4, −44, 38, 2]/15 → Σ w²(r − V)² = 3400/225; se = √(Σ·n/(n−1)) / Σw
    est = SelfNormalizedInverseProbabilityWeighting().estimate_with_diagnostics(**A)
    assert est.value == pytest.approx(11 / 15, abs=1e-15)
    assert est.se == pytest.approx(math.sqrt(3400 / 225 * 4 / 3) / 7.5, rel=1e-13)
    assert est.interval_method == "delta"


def test_sndr_interval_is_the_delta_method():
    # dm − mean(dm) = [0.625, 0.5, 1.3, 1.0] − 0.85625; B = Σ w·res / Σ w = −2/7.5; w̄ = 1.875
    # ψ = (dm − 0.85625) + w·(res − B)/w̄
    est = SelfNormalizedDoublyRobust().estimate_with_diagnostics(**A, estimated_rewards_by_reg_model=Q_A)
    w, res = np.array([1, 4, 2, 0.5]), np.array([0, -0.5, 0, 0])
    psi = (np.array([0.625, 0.5, 1.3, 1.0]) - 0.85625) + w * (res + 2 / 7.5) / 1.875
    assert est.se == pytest.approx(math.sqrt(np.sum(psi**2) / 3 / 4), rel=1e-13)


def test_analytic_interval_uses_obps_keys():
    interval = InverseProbabilityWeighting().estimate_analytic_interval(**A, alpha=0.1)
    assert set(interval) == {"mean", "90.0% CI (lower)", "90.0% CI (upper)"}
    assert interval["mean"] == pytest.approx(1.375)


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate():
    log = synthetic_log(0)
    kwargs = {"reward": log.reward, "action": log.action, "action_dist": log.action_dist, "pscore": log.pscore}
    first = InverseProbabilityWeighting().estimate_interval(**kwargs, n_bootstrap_samples=500, random_state=3)
    again = InverseProbabilityWeighting().estimate_interval(**kwargs, n_bootstrap_samples=500, random_state=3)
    assert first == again
    assert set(first) == {"mean", "95.0% CI (lower)", "95.0% CI (upper)"}
    value = InverseProbabilityWeighting().estimate_policy_value(**kwargs)
    assert first["95.0% CI (lower)"] < value < first["95.0% CI (upper)"]


def test_diagnostics_carry_the_bootstrap_bounds_when_asked():
    est = DoublyRobust().estimate_with_diagnostics(
        **A, estimated_rewards_by_reg_model=Q_A, n_bootstrap_samples=200, random_state=0
    )
    boot = DoublyRobust().estimate_interval(**A, estimated_rewards_by_reg_model=Q_A, n_bootstrap_samples=200,
                                            random_state=0)
    assert (est.bootstrap_lower, est.bootstrap_upper) == (boot["95.0% CI (lower)"], boot["95.0% CI (upper)"])
    assert math.isnan(DoublyRobust().estimate_with_diagnostics(**A, estimated_rewards_by_reg_model=Q_A).bootstrap_lower)


def test_dm_diagnostics_need_the_logged_action_for_weights():
    alone = DirectMethod().estimate_with_diagnostics(A["action_dist"], Q_A)
    assert math.isnan(alone.ess) and math.isnan(alone.max_weight)
    logged = DirectMethod().estimate_with_diagnostics(A["action_dist"], Q_A, action=A["action"], pscore=A["pscore"])
    assert logged.max_weight == 4.0 and logged.value == pytest.approx(0.85625)


def test_no_reward_among_matched_rounds_gives_a_wilson_bound_not_zero_width():
    # Target always picks action 0; rounds 0 and 2 match (w = 2) and have reward 0; rounds 1, 3 (unmatched) click.
    one_hot = np.eye(2)[[0, 0, 0, 0]][:, :, None]
    kwargs = {"reward": np.array([0.0, 1.0, 0.0, 1.0]), "action": np.array([0, 1, 0, 1]), "action_dist": one_hot,
                  "pscore": np.full(4, 0.5)}
    est = InverseProbabilityWeighting().estimate_with_diagnostics(**kwargs)
    z2 = norm.ppf(0.975) ** 2
    assert est.value == 0.0 and est.ess == pytest.approx(2.0)  # (2 + 2)² / (4 + 4)
    assert (est.lower, est.upper) == (0.0, pytest.approx(z2 / (2.0 + z2)))  # 0 events in n_eff = 2, rewards in [0, 1]
    assert est.interval_method == "zero_terms" and "Wilson" in est.note
    snipw = SelfNormalizedInverseProbabilityWeighting().estimate_with_diagnostics(**kwargs)
    assert snipw.upper == pytest.approx(z2 / (2.0 + z2))


def test_all_zero_rewards_are_flagged_as_uninformative():
    kwargs = {"reward": np.zeros(4), "action": np.array([0, 1, 0, 1]), "action_dist": np.eye(2)[[0] * 4][:, :, None],
                  "pscore": np.full(4, 0.5)}
    est = InverseProbabilityWeighting().estimate_with_diagnostics(**kwargs)
    assert (est.lower, est.upper) == (0.0, 0.0)
    assert "no scale" in est.note


def test_no_matched_round_makes_snipw_undefined():
    never = np.eye(3)[[2, 2, 0, 0]][:, :, None]  # the target never picks the logged action
    with pytest.raises(ValueError, match="undefined.*probability 0 to every logged action"):
        SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(A["reward"], A["action"], never, A["pscore"])


def test_self_normalised_estimators_refuse_clipping():
    with pytest.raises(ValueError, match="does not clip"):
        SelfNormalizedInverseProbabilityWeighting(lambda_=10.0)
    with pytest.raises(ValueError, match="does not clip"):
        SelfNormalizedDoublyRobust(lambda_=10.0)
    with pytest.raises(ValueError, match="lambda_"):
        InverseProbabilityWeighting(lambda_=float("nan"))
    with pytest.raises(ValueError, match="lambda_"):
        DoublyRobustWithShrinkage(lambda_=-1.0)


def test_estimated_pscore_is_used_when_asked():
    doubled = A["pscore"] / 2  # halving the propensity doubles every weight
    ipw = InverseProbabilityWeighting(use_estimated_pscore=True)
    assert ipw.estimate_policy_value(**A, estimated_pscore=doubled) == pytest.approx(2 * 1.375)
    with pytest.raises(ValueError, match="estimated_pscore"):
        ipw.estimate_policy_value(A["reward"], A["action"], A["action_dist"], A["pscore"])


def test_effective_sample_size():
    assert effective_sample_size(np.ones(10)) == 10.0
    assert effective_sample_size(np.array([4.0, 0, 0, 0])) == 1.0
    assert effective_sample_size(np.zeros(3)) == 0.0


def _estimates(seed: int, n: int = 500) -> tuple[float, dict[str, OffPolicyEstimate], float]:
    """(truth, {name: estimate}, naive mean reward) of one synthetic log; the reward model is q̂ = 0.5·q + 0.3."""
    log = synthetic_log(seed, n)
    q_hat = (0.5 * log.expected_reward + 0.3)[:, :, None]  # deliberately wrong: DR must stay unbiased, DM must not
    common = {"reward": log.reward, "action": log.action, "action_dist": log.action_dist, "pscore": log.pscore}
    estimates = {
        e.estimator_name: e.estimate_with_diagnostics(**common, estimated_rewards_by_reg_model=q_hat)
        for e in (InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(), DirectMethod(),
                  DoublyRobust(), SelfNormalizedDoublyRobust())
    }
    return log.truth, estimates, float(log.reward.mean())


@pytest.fixture(scope="module")
def many_seeds():
    """400 synthetic logs of 500 rounds each."""
    return [_estimates(seed) for seed in range(400)]


def test_unbiased_estimators_average_to_the_truth(many_seeds):
    errors = {name: np.array([est[name].value - truth for truth, est, _ in many_seeds]) for name in many_seeds[0][1]}
    naive = np.array([mean - truth for truth, _, mean in many_seeds])
    se_of_mean = {name: e.std(ddof=1) / np.sqrt(e.size) for name, e in errors.items()}
    for name in ("ipw", "dr", "snipw", "sndr"):  # SN estimators: O(1/n) bias, far below the tolerance at n = 500
        assert abs(errors[name].mean()) < 3.5 * se_of_mean[name], name
    # The same check has power: the logging policy's mean reward and DM with a wrong model are far off.
    assert abs(naive.mean()) > 20 * naive.std(ddof=1) / np.sqrt(naive.size)
    assert abs(errors["dm"].mean()) > 20 * se_of_mean["ipw"]


def test_analytic_intervals_cover_the_truth(many_seeds):
    for name in ("ipw", "snipw", "dr", "sndr"):
        coverage = np.mean([est[name].contains(truth) for truth, est, _ in many_seeds])
        assert 0.91 <= coverage <= 0.99, (name, coverage)  # 95 % nominal; binomial sd over 400 logs ≈ 0.011


def test_bootstrap_intervals_cover_the_truth():
    hits = []
    for seed in range(150):
        log = synthetic_log(1000 + seed)
        boot = InverseProbabilityWeighting().estimate_interval(
            log.reward, log.action, log.action_dist, log.pscore, n_bootstrap_samples=300, random_state=seed
        )
        hits.append(boot["95.0% CI (lower)"] <= log.truth <= boot["95.0% CI (upper)"])
    assert 0.88 <= np.mean(hits) <= 1.0  # binomial sd over 150 logs ≈ 0.018
