"""Metric values checked against small examples computed by hand (see the comments for the arithmetic)."""

import warnings

import numpy as np
import pytest

from training.metrics import (
    PolicyValue,
    cumulative_gain,
    multi_action_auuc,
    multi_action_qini,
    pehe,
    perfect_qini_curve,
    perfect_uplift_curve,
    policy_value_dr,
    policy_value_ips,
    policy_value_snips,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
    uplift_auc_score,
    uplift_curve,
)

Y = np.array([1.0, 0.0, 1.0, 0.0])
T = np.array([1, 1, 0, 0])
U = np.array([0.9, 0.5, 0.3, 0.1])


def test_qini_curve_by_hand():
    # Y_t − Y_c·N_t/N_c with the ratio 0 while N_c = 0 (sklift): top1: 1 − 0 = 1; top2: 1 − 0 = 1;
    # top3: 1 − 1·2/1 = −1; top4: 1 − 1·2/2 = 0
    x, q = qini_curve(Y, U, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(q, [0, 1, 1, -1, 0])


def test_ties_are_grouped_into_one_point():
    # ties {0, 1} (both treated): one point at 2 rows, Y_t = 1 with no control → 1; then all four → 0
    x, q = qini_curve(Y, np.array([0.5, 0.5, 0.1, 0.1]), T)
    np.testing.assert_array_equal(x, [0, 2, 4])
    np.testing.assert_array_equal(q, [0, 1, 0])


def test_perfect_curve_by_hand():
    # scores y·t − y·(1−t) = [1, 0, −1, 0] → order [0, 3, 1, 2], ties {3, 1} grouped: points at 1, 3, 4
    # top1 {0}: 1 − 0 = 1; top3 {0, 3, 1}: 1 − 0·2/1 = 1; top4: 1 − 1·2/2 = 0
    x, q = perfect_qini_curve(Y, T)
    np.testing.assert_array_equal(x, [0, 1, 3, 4])
    np.testing.assert_array_equal(q, [0, 1, 1, 0])


def test_qini_coefficient_by_hand():
    # AUC model = 0.5 + 1 + 0 − 0.5 = 1, AUC perfect = 0.5 + 2 + 0.5 = 3, random line (0,0)→(4,0) = 0 → 1/3
    # (sklift 0.5's qini_auc_score gives 1/3 on this example too)
    assert qini_coefficient(Y, U, T) == pytest.approx(1 / 3)


def test_perfect_ranking_scores_one_and_reversed_scores_below_zero():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 400)
    y = rng.random(400)
    score = y * t - y * (1 - t)
    assert qini_coefficient(y, score, t) == pytest.approx(1.0)
    assert qini_coefficient(y, -score, t) < 0


def test_uplift_at_k_by_hand():
    # int(0.75·4) = 3 top rows: treated {0, 1} mean 0.5, control {2} mean 1 → −0.5
    assert uplift_at_k(Y, U, T, k=0.75) == pytest.approx(-0.5)
    assert uplift_at_k(Y, U, T, k=3) == pytest.approx(-0.5)  # an int k is a number of rows
    assert np.isnan(uplift_at_k(Y, U, T, k=0.5))  # the top 50 % holds no control row: nan, as scikit-uplift
    # int(0.7·4) = 2 rows, not ceil's 3: scikit-uplift truncates
    assert np.isnan(uplift_at_k(Y, U, T, k=0.7))
    # by_group: the first int(0.5·2) = 1 of each group: treated row 0 (y 1), control row 2 (y 1) → 0
    assert uplift_at_k(Y, U, T, k=0.5, strategy="by_group") == 0.0


def sklift_uplift_at_k(y_true, uplift, treatment, strategy, k=0.3):
    """scikit-uplift 0.5's `sklift.metrics.uplift_at_k`, its computation restated in plain numpy (the reference
    these tests hold ours to; its input checks are tested separately)."""
    y_true, uplift, treatment = np.array(y_true), np.array(uplift), np.array(treatment)
    n_samples = len(y_true)
    order = np.argsort(uplift, kind="mergesort")[::-1]
    k_type = np.asarray(k).dtype.kind
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if strategy == "overall":
            n_size = int(n_samples * k) if k_type == "f" else k
            score_ctrl = y_true[order][:n_size][treatment[order][:n_size] == 0].mean()
            score_trmnt = y_true[order][:n_size][treatment[order][:n_size] == 1].mean()
        else:
            n_ctrl = int((treatment == 0).sum() * k) if k_type == "f" else k
            n_trmnt = int((treatment == 1).sum() * k) if k_type == "f" else k
            score_ctrl = y_true[order][treatment[order] == 0][:n_ctrl].mean()
            score_trmnt = y_true[order][treatment[order] == 1][:n_trmnt].mean()
    return score_trmnt - score_ctrl


@pytest.mark.parametrize("strategy", ["overall", "by_group"])
@pytest.mark.parametrize("k", [0.01, 0.1, 0.3, 0.5, 0.99, 1, 7, 150])
@pytest.mark.parametrize("seed", range(5))
def test_uplift_at_k_equals_scikit_uplifts_definition(strategy, k, seed):
    rng = np.random.default_rng(seed)
    n = 301
    y = rng.integers(0, 2, n).astype(float) if seed % 2 else rng.exponential(size=n)
    treatment = (rng.random(n) < 0.4).astype(int)
    uplift = np.round(rng.normal(size=n), 1)  # many ties: the stable order must match too
    if strategy == "by_group" and isinstance(k, int) and k > min(treatment.sum(), n - treatment.sum()):
        with pytest.raises(ValueError, match=f"k={k} asks for the first {k} rows of the treatment group"):
            uplift_at_k(y, uplift, treatment, k=k, strategy=strategy)  # scikit-uplift refuses it too
        return
    expected = sklift_uplift_at_k(y, uplift, treatment, strategy, k)
    got = uplift_at_k(y, uplift, treatment, k=k, strategy=strategy)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0.0}, r"k must be a float in \(0, 1\) or an int number of rows; got 0.0"),
    ({"k": 1.0}, r"k must be a float in \(0, 1\)"),
    ({"k": 4}, "k=4 rows must be positive and smaller than the number of rows 4"),
    ({"k": True}, "k must be a float in"),
    ({"strategy": "first"}, r"strategy must be one of \['overall', 'by_group'\]; got 'first'"),
    ({"k": 3, "strategy": "by_group"}, "k=3 asks for the first 3 rows of the treatment group, which has 2"),
])
def test_uplift_at_k_refuses_what_scikit_uplift_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        uplift_at_k(Y, U, T, **kwargs)


def test_multi_action_qini_scores_each_arm_against_control():
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    actions = np.array(["a", "a", "no_action", "no_action", "b", "b"])
    uplift = np.array([[0.9, 0], [0.5, 0], [0.3, 0.3], [0.1, 0.1], [0, 0.9], [0, 0.5]])
    scores = multi_action_qini(y, actions, uplift, ["a", "b"], "no_action")
    assert scores["a"] == pytest.approx(1 / 3) and scores["b"] == pytest.approx(1 / 3)
    assert scores["mean"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((Y, U[:3], T), "lengths differ: 4, 3, 4"),
        ((Y, U, np.array([1, 2, 0, 0])), "treatment must be 0"),
        ((np.zeros(4), U, T), "perfect Qini curve equals random"),
    ],
)
def test_bad_input_is_rejected_with_a_message(args, message):
    with pytest.raises(ValueError, match=message):
        qini_coefficient(*args)


# --- uplift curve and AUUC -----------------------------------------------------------------------------------------


def test_uplift_curve_by_hand():
    # (Y_t/N_t − Y_c/N_c)·n, an empty group's mean counted as 0 (sklift): top1: (1 − 0)·1 = 1; top2: (1/2 − 0)·2 = 1;
    # top3: (1/2 − 1/1)·3 = −1.5; top4: (1/2 − 1/2)·4 = 0
    x, u = uplift_curve(Y, U, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(u, [0, 1, 1, -1.5, 0])


def test_uplift_curve_groups_ties():
    # ties {0, 1} (both treated) → one point at 2: (1/2 − 0)·2 = 1; then all four → 0
    x, u = uplift_curve(Y, np.array([0.5, 0.5, 0.1, 0.1]), T)
    np.testing.assert_array_equal(x, [0, 2, 4])
    np.testing.assert_array_equal(u, [0, 1, 0])


def test_perfect_uplift_curve_by_hand():
    # responders r = [1, 0, 1, 0]; control responders 1 (row 2), treated non-responders 1 (row 1): not >, so s = t;
    # score 2·[r = t] + t = [3, 1, 0, 2] → order rows 0, 3, 1, 2 (sklift's ranking)
    # top1 {0}: (1 − 0)·1 = 1; top2 {0, 3}: (1/1 − 0/1)·2 = 2; top3 {0, 3, 1}: (1/2 − 0/1)·3 = 1.5;
    # top4: (1/2 − 1/2)·4 = 0
    x, u = perfect_uplift_curve(Y, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(u, [0, 1, 2, 1.5, 0])


def test_uplift_auc_score_by_hand():
    # model area: 0.5 + 1 + (1 − 1.5)/2 + (−1.5 + 0)/2 = 0.5; perfect area: 0.5 + 1.5 + 1.75 + 0.75 = 4.5;
    # random line (0, 0) → (4, 0) has area 0 → AUUC = 0.5 / 4.5 = 1/9
    assert uplift_auc_score(Y, U, T) == pytest.approx(1 / 9)


def test_perfect_uplift_curve_on_revenue_breaks_ties_by_outcome():
    # y = [3, 1, 0, 0, 2], t = [1, 1, 1, 0, 0]; r = [1, 1, 0, 0, 1]; control responders 1 (row 4), treated
    # non-responders 1 (row 2) → s = t; primary 2·[r = t] + t = [3, 3, 1, 2, 0]; tie-break y·t − y·(1 − t) splits
    # rows 0 (3) and 1 (1) → order 0, 1, 3, 2, 4.
    # top1: (3 − 0)·1 = 3; top2: (4/2 − 0)·2 = 4; top3 {0, 1, 3}: (4/2 − 0/1)·3 = 6; top4 (+ row 2): (4/3 − 0)·4 = 16/3;
    # top5: (4/3 − 2/2)·5 = 5/3
    y, t = np.array([3.0, 1.0, 0.0, 0.0, 2.0]), np.array([1, 1, 1, 0, 0])
    x, u = perfect_uplift_curve(y, t)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(u, [0, 3, 4, 6, 16 / 3, 5 / 3], rtol=0, atol=1e-12)


def test_perfect_uplift_ranking_is_sklifts_and_scores_one():
    rng = np.random.default_rng(1)
    for _ in range(20):
        t = rng.integers(0, 2, 300)
        y = (rng.random(300) < np.where(t == 1, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9))).astype(float)
        # sklift 0.5's perfect_uplift_curve score
        control_responders, treated_non_responders = np.sum((y == 1) & (t == 0)), np.sum((y == 0) & (t == 1))
        summand = y if control_responders > treated_non_responders else t
        score = 2 * (y == t) + summand
        x_perfect, u_perfect = perfect_uplift_curve(y, t)
        x_score, u_score = uplift_curve(y, score, t)
        np.testing.assert_array_equal(x_perfect, x_score)
        np.testing.assert_array_equal(u_perfect, u_score)
        assert uplift_auc_score(y, score, t) == pytest.approx(1.0)


def test_auuc_rewards_a_good_ranking_and_punishes_its_reverse():
    rng = np.random.default_rng(2)
    n = 20_000
    x, t = rng.normal(size=n), rng.integers(0, 2, n)
    y = (rng.random(n) < np.clip(0.3 + 0.15 * x * t, 0, 1)).astype(float)
    assert uplift_auc_score(y, x, t) > 0.1
    assert uplift_auc_score(y, -x, t) < -0.1
    assert abs(uplift_auc_score(y, rng.random(n), t)) < 0.05


def test_auuc_is_undefined_without_outcome_difference():
    with pytest.raises(ValueError, match="perfect uplift curve equals random"):
        uplift_auc_score(np.zeros(4), U, T)


def test_multi_action_auuc_scores_each_arm_against_control():
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    actions = np.array(["a", "a", "no_action", "no_action", "b", "b"])
    uplift = np.array([[0.9, 0], [0.5, 0], [0.3, 0.3], [0.1, 0.1], [0, 0.9], [0, 0.5]])
    scores = multi_action_auuc(y, actions, uplift, ["a", "b"], "no_action")
    # each arm with the control rows is the 4-row example above
    assert scores == pytest.approx({"a": 1 / 9, "b": 1 / 9, "mean": 1 / 9})


# --- cumulative gain and PEHE --------------------------------------------------------------------------------------


def test_cumulative_gain_reads_the_curve_at_each_cut():
    # n_bins = 4 → exactly the uplift curve points at 1, 2, 3, 4 rows
    fractions, gain = cumulative_gain(Y, U, T, n_bins=4)
    np.testing.assert_array_equal(fractions, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(gain, [1, 1, -1.5, 0])
    # n_bins = 8 → half-row cuts interpolate linearly between the points [0, 1, 1, −1.5, 0] at 0..4 rows
    _, gain = cumulative_gain(Y, U, T, n_bins=8)
    np.testing.assert_array_equal(gain, [0.5, 1, 1, 1, -0.25, -1.5, -0.75, 0])
    # the Qini curve instead: [1, 1, −1, 0] at 1..4 rows
    _, gain = cumulative_gain(Y, U, T, n_bins=4, curve="qini")
    np.testing.assert_array_equal(gain, [1, 1, -1, 0])


def test_cumulative_gain_deciles_on_ten_rows_are_the_curve_points():
    rng = np.random.default_rng(3)
    y, u, t = rng.random(10), rng.random(10), np.array([1, 0] * 5)
    x, values = uplift_curve(y, u, t)
    fractions, gain = cumulative_gain(y, u, t)
    np.testing.assert_allclose(fractions, np.arange(1, 11) / 10)
    np.testing.assert_allclose(gain, values[1:], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="curve must be one of"):
        cumulative_gain(y, u, t, curve="lift")


def test_pehe_by_hand():
    # √((0² + 1² + 2²)/3) = √(5/3)
    assert pehe([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == pytest.approx(np.sqrt(5 / 3))
    # per column: [√(5/3), √((1 + 1 + 1)/3) = 1]
    tau_hat = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 0.0]])
    tau = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(pehe(tau_hat, tau), [np.sqrt(5 / 3), 1.0])
    with pytest.raises(ValueError, match="equal non-empty"):
        pehe([1.0, 2.0], [1.0])


# --- weighted variants ---------------------------------------------------------------------------------------------


def _sklift_qini_curve(y, uplift, treatment):
    """A line-by-line port of sklift 0.5's qini_curve: the reference the unweighted path must equal."""
    y, uplift, treatment = np.asarray(y, float), np.asarray(uplift, float), np.asarray(treatment).astype(int)
    order = np.argsort(uplift, kind="mergesort")[::-1]
    y, uplift, treatment = y[order], uplift[order], treatment[order]
    cut = np.r_[np.where(np.diff(uplift))[0], uplift.size - 1]
    n_t = np.cumsum(treatment)[cut]
    y_t = np.cumsum(y * treatment)[cut]
    n_all = cut + 1
    y_all = np.cumsum(y)[cut]
    n_c, y_c = n_all - n_t, y_all - y_t
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t, dtype=float), where=n_c != 0)
    return np.r_[0, n_all].astype(float), np.r_[0.0, y_t - y_c * ratio]


def _revenue_sample(seed, n=500):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    y = rng.exponential(size=n) * (rng.random(n) < 0.3) * 10
    uplift = np.round(rng.normal(size=n), 1)  # rounded: many ties
    return y, uplift, t


def test_unweighted_qini_is_unchanged_and_unit_weights_are_exactly_unweighted():
    y, uplift, t = _revenue_sample(4)
    for got, expected in zip(qini_curve(y, uplift, t), _sklift_qini_curve(y, uplift, t)):
        np.testing.assert_array_equal(got, expected)
    ones = np.ones(len(y))
    for curve in (qini_curve, uplift_curve):
        for got, expected in zip(curve(y, uplift, t, ones), curve(y, uplift, t)):
            np.testing.assert_array_equal(got, expected)
    for curve in (perfect_qini_curve, perfect_uplift_curve):
        for got, expected in zip(curve(y, t, ones), curve(y, t)):
            np.testing.assert_array_equal(got, expected)
    assert qini_coefficient(y, uplift, t, ones) == qini_coefficient(y, uplift, t)
    assert uplift_auc_score(y, uplift, t, ones) == uplift_auc_score(y, uplift, t)


def test_weight_two_equals_duplicated_rows():
    y, uplift, t = _revenue_sample(5)
    doubled = np.random.default_rng(6).random(len(y)) < 0.3
    weight = np.where(doubled, 2.0, 1.0)
    extra = np.flatnonzero(doubled)
    y2, uplift2, t2 = np.r_[y, y[extra]], np.r_[uplift, uplift[extra]], np.r_[t, t[extra]]
    for curve in (qini_curve, uplift_curve):
        for got, expected in zip(curve(y, uplift, t, weight), curve(y2, uplift2, t2)):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    for curve in (perfect_qini_curve, perfect_uplift_curve):
        for got, expected in zip(curve(y, t, weight), curve(y2, t2)):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    assert qini_coefficient(y, uplift, t, weight) == pytest.approx(qini_coefficient(y2, uplift2, t2), rel=1e-12)
    assert uplift_auc_score(y, uplift, t, weight) == pytest.approx(uplift_auc_score(y2, uplift2, t2), rel=1e-12)
    _, gain = cumulative_gain(y, uplift, t, sample_weight=weight)
    np.testing.assert_allclose(gain, cumulative_gain(y2, uplift2, t2)[1], rtol=1e-12, atol=1e-9)


def test_weighted_multi_action_scores_use_each_rows_weight():
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    actions = np.array(["a", "a", "no_action", "no_action", "b", "b"])
    uplift = np.array([[0.9, 0], [0.5, 0], [0.3, 0.3], [0.1, 0.1], [0, 0.9], [0, 0.5]])
    ones = np.ones(6)
    assert multi_action_qini(y, actions, uplift, ["a", "b"], "no_action", ones) == multi_action_qini(
        y, actions, uplift, ["a", "b"], "no_action"
    )
    # weight 2 on row 0 ≡ duplicating it within arm "a" (4-row example with row 0 twice)
    weight = np.array([2.0, 1, 1, 1, 1, 1])
    scores = multi_action_auuc(y, actions, uplift, ["a", "b"], "no_action", weight)
    duplicated = uplift_auc_score(np.r_[Y, 1.0], np.r_[U, 0.9], np.r_[T, 1])
    assert scores["a"] == pytest.approx(duplicated) and scores["b"] == pytest.approx(1 / 9)


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="one value per row"):
        qini_coefficient(Y, U, T, np.ones(3))
    with pytest.raises(ValueError, match="finite and >= 0"):
        uplift_curve(Y, U, T, np.array([1.0, -1.0, 1.0, 1.0]))


# --- off-policy value ----------------------------------------------------------------------------------------------


def test_policy_values_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    logged, propensity = np.array(["a", "b", "a", "b"]), np.array([0.5, 0.25, 0.5, 0.5])
    # target "a" everywhere: w = 1[a_i = a]/p_i = [2, 0, 2, 0]
    # IPS terms w·y = [2, 0, 6, 0]: mean 2, sd² = (0 + 4 + 16 + 4)/3 = 8 → se = √8/√4 = √2
    ips = policy_value_ips(y, logged, propensity, "a")
    assert ips.value == pytest.approx(2.0) and ips.se == pytest.approx(np.sqrt(2))
    # SNIPS: Σwy/Σw = 8/4 = 2; se = √(4/3 · Σ w²(y − 2)²) / Σw = √(4/3 · (4·1 + 4·1)) / 4 = √(2/3)
    snips = policy_value_snips(y, logged, propensity, np.array(["a"] * 4))
    assert snips.value == pytest.approx(2.0) and snips.se == pytest.approx(np.sqrt(2 / 3))
    # DR with μ̂ ≡ 1: terms 1 + w·(y − 1) = [1, 1, 5, 1]: mean 2, sd² = (1 + 1 + 9 + 1)/3 = 4 → se = 2/2 = 1
    dr = policy_value_dr(y, logged, propensity, "a", np.ones(4), np.ones(4))
    assert dr == pytest.approx(PolicyValue(2.0, 1.0))
    low, high = dr.interval(0.05)
    assert (low, high) == pytest.approx((2 - 1.959963984540054, 2 + 1.959963984540054))


# A 3-context, 3-action bandit: known outcome means, a non-uniform logging policy and a deterministic target.
ACTIONS = np.array(["none", "a", "b"])
MU = np.array([[1.0, 1.5, 0.8], [2.0, 2.2, 3.0], [0.5, 1.5, 0.6]])  # E[y | x, action]
LOGGING = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])  # P(action | x)
TARGET = np.array([1, 2, 1])  # π(x)
P_X = np.array([0.5, 0.3, 0.2])
TRUE_VALUE = float(P_X @ MU[np.arange(3), TARGET])  # 0.5·1.5 + 0.3·3.0 + 0.2·1.5 = 1.95


def _logged_bandit(seed=0, n=40_000):
    rng = np.random.default_rng(seed)
    x = rng.choice(3, size=n, p=P_X)
    action = (rng.random(n)[:, None] > np.cumsum(LOGGING[x], axis=1)).sum(axis=1)
    y = MU[x, action] + rng.normal(size=n)
    return x, action, y


def test_off_policy_estimates_recover_the_true_policy_value():
    assert TRUE_VALUE == pytest.approx(1.95)
    x, action, y = _logged_bandit()
    logged, target, propensity = ACTIONS[action], ACTIONS[TARGET[x]], LOGGING[x, action]
    ips = policy_value_ips(y, logged, propensity, target)
    snips = policy_value_snips(y, logged, propensity, target)
    dr = policy_value_dr(y, logged, propensity, target, MU[x, action], MU[x, TARGET[x]])
    # DR with a wrong (constant) outcome model is still unbiased: the logged propensities are exact
    dr_wrong = policy_value_dr(y, logged, propensity, target, np.ones(len(y)), np.ones(len(y)))
    for estimate in (ips, snips, dr, dr_wrong):
        assert abs(estimate.value - TRUE_VALUE) <= 3 * estimate.se
    assert dr.se <= ips.se  # a right outcome model removes most of the IPS variance
    # logging is not uniform: the naive mean of the rows where logged = target is biased
    assert abs(y[logged == target].mean() - TRUE_VALUE) > 5 * ips.se


@pytest.mark.parametrize(
    ("propensity", "target", "message"),
    [
        (np.array([0.5, 0.0]), "a", r"propensity must be .* in \(0, 1\]"),
        (np.array([0.5, 1.5]), "a", r"propensity must be"),
        (np.array([0.5, 0.5]), np.array(["a", "b", "a"]), "one action or one per row"),
    ],
)
def test_off_policy_input_is_checked(propensity, target, message):
    with pytest.raises(ValueError, match=message):
        policy_value_ips(np.array([1.0, 2.0]), np.array(["a", "b"]), propensity, target)


def test_snips_needs_a_matching_row():
    with pytest.raises(ValueError, match="no logged action matches"):
        policy_value_snips(np.array([1.0, 2.0]), np.array(["a", "a"]), np.array([0.5, 0.5]), "b")
