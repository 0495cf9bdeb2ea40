"""The experiment readout rolls decisions up per user, compares arms with Welch intervals, and refuses mixed users."""

import io
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

from training.experiment_readout import (
    READOUT_COLUMNS,
    experiment_readout,
    readout_figure,
    user_outcomes,
    welch_difference,
)

T_975_DOF_2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom (tables)


def _decision(user: str, experiments, converted: int, revenue: float) -> dict:
    return {"user_key": user, "experiments": experiments, "converted": converted, "revenue": revenue,
            "ts": pd.Timestamp("2026-10-02 12:00", tz="UTC")}


@pytest.fixture
def tiny() -> pd.DataFrame:
    """3 control users (revenue 0, 10, 0; one converted) and 3 treated users (6, 12, 4; all converted)."""
    holdout, policy = json.dumps({"ph": "holdout"}), {"ph": "policy", "other": "x"}  # JSON string and dict
    rows = [
        _decision("c1", holdout, 0, 0.0),
        _decision("c2", holdout, 0, 0.0), _decision("c2", holdout, 1, 10.0),
        _decision("c3", holdout, 0, 0.0), _decision("c3", holdout, 0, 0.0), _decision("c3", holdout, 0, 0.0),
        _decision("t1", policy, 1, 6.0),
        _decision("t2", policy, 0, 0.0), _decision("t2", policy, 1, 12.0),
        _decision("t3", policy, 1, 4.0),
        _decision("n1", None, 1, 99.0), _decision("n2", "", 1, 99.0), _decision("n3", "{}", 1, 99.0),
    ]
    return pd.DataFrame(rows)


def test_decisions_roll_up_per_user(tiny):
    per_user = user_outcomes(tiny)
    ph = per_user[per_user["experiment"] == "ph"].set_index("user_key")
    assert ph.loc["c2", ["converted_user", "revenue_user", "n_decisions"]].tolist() == [1, 10.0, 2]
    assert ph.loc["c3", ["converted_user", "revenue_user", "n_decisions"]].tolist() == [0, 0.0, 3]
    assert ph.loc["t2", ["converted_user", "revenue_user", "n_decisions"]].tolist() == [1, 12.0, 2]
    assert sorted(per_user.loc[per_user["experiment"] == "other", "user_key"]) == ["t1", "t2", "t3"]
    assert not {"n1", "n2", "n3"} & set(per_user["user_key"])  # in no experiment


def test_tiny_case_matches_the_hand_computation(tiny):
    readout = experiment_readout(tiny, {"ph": "holdout", "other": "x"})
    assert list(readout.columns) == READOUT_COLUMNS
    assert list(zip(readout["experiment"], readout["arm"])) == [("other", "x"), ("ph", "holdout"), ("ph", "policy")]
    control, treated = readout.iloc[1], readout.iloc[2]
    assert (control["n_users"], control["n_decisions"], treated["n_users"], treated["n_decisions"]) == (3, 6, 3, 4)
    assert control["is_control"] and not treated["is_control"] and treated["control_arm"] == "holdout"
    # control revenue 0, 10, 0: mean 10/3, variance 100/3; treated 6, 12, 4: mean 22/3, variance 52/3
    assert control["revenue_per_user"] == pytest.approx(10 / 3)
    assert control["revenue_per_user_se"] == pytest.approx(math.sqrt(100 / 9))
    assert treated["revenue_per_user_se"] == pytest.approx(math.sqrt(52 / 9))
    assert treated["revenue_diff"] == pytest.approx(4.0)
    se = math.sqrt(152 / 9)
    dof = 152**2 / ((52**2 + 100**2) / 2)  # Welch–Satterthwaite: 3.637...
    half = stats.t.ppf(0.975, dof) * se
    assert treated["revenue_diff_se"] == pytest.approx(se)
    assert (treated["revenue_ci_low"], treated["revenue_ci_high"]) == pytest.approx((4 - half, 4 + half))
    assert treated["revenue_p_value"] == pytest.approx(2 * stats.t.sf(4 / se, dof))
    assert treated["revenue_lift"] == pytest.approx(4 / (10 / 3))
    # conversion: control 0, 1, 0 (variance 1/3); treated all converted (variance 0) → se 1/3, dof exactly 2
    assert (control["conversion_rate"], treated["conversion_rate"]) == pytest.approx((1 / 3, 1.0))
    assert treated["conversion_diff"] == pytest.approx(2 / 3)
    half = T_975_DOF_2 / 3
    assert (treated["conversion_ci_low"], treated["conversion_ci_high"]) == pytest.approx((2 / 3 - half, 2 / 3 + half))
    # t with 2 dof: P(T > 2) = 1/2 − 2 / (2·√6)
    assert treated["conversion_p_value"] == pytest.approx(2 * (0.5 - 1 / math.sqrt(6)))
    assert treated["conversion_lift"] == pytest.approx(2.0)
    # the control row carries no comparison
    assert control[[c for c in READOUT_COLUMNS if c.endswith(("_diff", "_ci_low", "_p_value", "_lift"))]].isna().all()
    assert control["note"] == treated["note"] == ""


def test_an_experiment_without_control_rows_gets_nan_differences_and_a_note(tiny):
    readout = experiment_readout(tiny, {"ph": "holdout", "other": "control"}).set_index(["experiment", "arm"])
    row = readout.loc[("other", "x")]
    assert row["n_users"] == 3 and row["revenue_per_user"] == pytest.approx(22 / 3)
    assert np.isnan(row["revenue_diff"]) and np.isnan(row["conversion_ci_low"]) and np.isnan(row["revenue_p_value"])
    assert row["note"] == "control arm 'control' has no users in this data"
    unknown = experiment_readout(tiny, {"ph": "holdout"}).set_index(["experiment", "arm"]).loc[("other", "x")]
    assert np.isnan(unknown["revenue_diff"]) and "not in the experiments config" in unknown["note"]


def test_a_user_in_two_arms_is_refused_with_the_count(tiny):
    mixed = pd.concat([
        tiny,
        pd.DataFrame([_decision("c1", {"ph": "policy"}, 0, 0.0), _decision("c2", {"ph": "policy"}, 0, 0.0)]),
    ])
    expected = r"^2 user_keys appear in more than one arm \(\{'ph': 2\}; e\.g\. 'c1' in 'ph'"
    with pytest.raises(ValueError, match=expected):
        experiment_readout(mixed, {"ph": "holdout"})


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("converted", np.nan, r"converted must be 0 or 1; 1 rows are not"),
        ("converted", 2, r"converted must be 0 or 1; 1 rows are not"),
        ("revenue", np.nan, r"revenue must be a finite number; 1 rows are not"),
        ("experiments", "{not json", r"experiments at row 0 is not valid JSON"),
        ("experiments", "[1, 2]", r"experiments at row 0 must map experiment → arm; got list"),
    ],
)
def test_bad_rows_are_refused_with_the_reason(tiny, column, value, message):
    bad = tiny.astype({column: object})
    bad.loc[0, column] = value
    with pytest.raises(ValueError, match=message):
        experiment_readout(bad, {"ph": "holdout"})


def test_missing_columns_are_named(tiny):
    with pytest.raises(ValueError, match=r"lacks columns \['revenue'\]"):
        experiment_readout(tiny.drop(columns="revenue"), {"ph": "holdout"})


def test_an_arm_with_one_user_has_no_interval(tiny):
    one = tiny[tiny["user_key"] != "t2"]
    one = one[one["user_key"] != "t3"]
    row = experiment_readout(one, {"ph": "holdout"}).set_index("arm").loc["policy"]
    assert row["n_users"] == 1 and np.isnan(row["revenue_per_user_se"]) and np.isnan(row["revenue_diff"])
    assert "fewer than 2 users" in row["note"]


def _simulate(n_users: int, seed: int) -> tuple[pd.DataFrame, float, float]:
    """Users 50/50 in holdout/policy with 1–4 decisions; per-user conversion 8% vs 10%, basket ~ Exp(mean 40).

    Returns the decisions and the true differences in conversion rate and revenue per user.
    """
    rng = np.random.default_rng(seed)
    arm = np.where(rng.random(n_users) < 0.5, "holdout", "policy")
    rate = np.where(arm == "policy", 0.10, 0.08)
    converted = (rng.random(n_users) < rate).astype(int)
    revenue = converted * rng.exponential(40.0, n_users)
    decisions = rng.integers(1, 5, n_users)
    user = np.repeat(np.arange(n_users), decisions)
    first = np.r_[0, np.cumsum(decisions)[:-1]]  # the user's outcome sits on their first decision
    is_first = np.zeros(len(user), dtype=bool)
    is_first[first] = True
    frame = pd.DataFrame({
        "user_key": [f"u{i}" for i in user],
        "experiments": [{"policy_holdout": a} for a in arm[user]],
        "converted": np.where(is_first, converted[user], 0),
        "revenue": np.where(is_first, revenue[user], 0.0),
        "ts": pd.Timestamp("2026-10-02", tz="UTC"),
    })
    return frame, 0.02, 0.02 * 40.0


def test_large_simulation_interval_covers_the_true_difference():
    frame, true_conversion, true_revenue = _simulate(60_000, seed=1)
    row = experiment_readout(frame, {"policy_holdout": "holdout"}).set_index("arm").loc["policy"]
    assert row["conversion_ci_low"] < true_conversion < row["conversion_ci_high"]
    assert row["revenue_ci_low"] < true_revenue < row["revenue_ci_high"]
    assert row["revenue_p_value"] < 0.05 and row["n_decisions"] > row["n_users"]
    assert row["revenue_lift"] == pytest.approx(row["revenue_diff"] / (0.08 * 40), rel=0.3)


def test_welch_interval_has_its_nominal_coverage_on_skewed_data():
    """Over 400 small unequal-size samples of skewed revenue the 95% interval covers the truth 95% of the time."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        treated = rng.exponential(12.0, 300) * (rng.random(300) < 0.3)  # mean 3.6
        control = rng.exponential(10.0, 100) * (rng.random(100) < 0.3)  # mean 3.0
        _, _, low, high, _ = welch_difference(treated, control)
        covered += low < 0.6 < high
    # binomial(400, 0.95): sd ≈ 4.4 intervals
    assert 365 <= covered <= 395, covered


def test_welch_degenerate_cases():
    assert welch_difference(np.ones(3), np.ones(4)) == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert welch_difference(np.ones(3), np.zeros(4)) == (1.0, 0.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="at least 2 values per sample; got 1 and 4"):
        welch_difference(np.ones(1), np.zeros(4))


def test_readout_figure_draws_each_compared_arm(tiny):
    readout = experiment_readout(tiny, {"ph": "holdout", "other": "x"})
    figure = readout_figure(readout)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    revenue_ax = figure.axes[0]
    assert [t.get_text() for t in revenue_ax.get_yticklabels()] == ["ph: policy − holdout"]
    assert "revenue per user" in revenue_ax.get_title()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_readout_figure_of_nothing_to_compare_still_draws(tiny):
    no_control = experiment_readout(tiny, {"ph": "absent", "other": "x"})
    empty = experiment_readout(tiny.iloc[-3:], {})
    assert empty.empty and list(empty.columns) == READOUT_COLUMNS
    for readout in (no_control, empty):
        figure = readout_figure(readout)
        figure.savefig(io.BytesIO(), format="png")
        plt.close(figure)
