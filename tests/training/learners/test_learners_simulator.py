"""The learners on logged data of the simulated shop, scored against its ground truth (`expected_revenue`).

Fixture: `ShopConfig(n_users=16_000, n_days=21, seed=7)` (7 is the shop's default seed, not a pick). Raw events →
`validate_events` → daily activity snapshots; every exposure gets the latest snapshot stamped at or before it
(`pd.merge_asof` by user) plus the profile; label = revenue attributed within 72 h; exposures whose window is not
over, exposures logged with propensity 1 (no consent) and first-day exposures (no snapshot yet) are dropped.
≈ 58k labelled rows; learners are fitted on the training users and scored on the 20 % holdout users.

Why this size and these settings: a 72 h revenue label has a standard deviation ~5× its mean, and the effects are
a few tenths of a unit, so small fixtures only measure noise. All learners (and the response-only baseline) share
`FIXTURE_PARAMS`, heavier regularisation than the defaults: at this size the defaults fit noise in the effect
models. Over seeds 1, 2, 3 and 7 of this config, mean PEHE with the defaults: DR 1.8–2.2, X 1.1–1.3, response-only
1.4–1.6 (DR loses to the baseline); with FIXTURE_PARAMS: DR 0.94–1.06, X 0.73–0.76, response-only 1.4–1.6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.contracts import validate_events
from feature_repo.transforms import (
    ACTIVITY_FEATURES,
    PROFILE_FEATURES,
    SnapshotWindow,
    user_activity_snapshots,
    user_profile_rows,
)
from simulator import ACTION_IDS, CONTROL_ACTION, ShopConfig, build_shop, expected_revenue, simulate
from training.labels import attributed_revenue, mature_exposures
from training.learners import DRLearner, SLearner, TLearner, XLearner, estimate_ate
from training.metrics import multi_action_qini, pehe
from training.train import holdout_mask

CONFIG = ShopConfig(n_users=16_000, n_days=21, seed=7)
WINDOW_HOURS = 72.0
FEATURES = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
FIXTURE_PARAMS = dict(n_estimators=100, learning_rate=0.03, min_child_weight=500.0)
LEARNER_CLASSES = {"s_learner": SLearner, "t_learner": TLearner, "x_learner": XLearner, "dr_learner": DRLearner}


def simulated_training_data(config: ShopConfig, window_hours: float = WINDOW_HOURS):
    """(shop, labelled exposures with point-in-time features, every user's latest features)."""
    shop = build_shop(config)
    end = pd.Timestamp(config.end)
    events = validate_events(simulate(shop).events, as_of=end).accepted
    snapshots = user_activity_snapshots(
        events, shop.users["user_id"].to_numpy(), SnapshotWindow(pd.Timestamp(config.start), config.n_days)
    ).sort_values("event_timestamp", kind="stable")
    profile = user_profile_rows(shop.users).drop(columns="event_timestamp")
    window = pd.Timedelta(hours=window_hours)
    exposures = events.loc[
        events["event_type"] == "promo_exposure", ["user_id", "session_id", "ts", "action_id", "propensity"]
    ]
    purchases = events.loc[events["event_type"] == "purchase", ["session_id", "ts", "revenue"]]
    exposures = exposures.loc[mature_exposures(exposures, end, window)].copy()
    exposures["label_revenue"] = attributed_revenue(exposures, purchases, window)
    exposures = exposures.loc[exposures["propensity"] < 1.0].astype({"user_id": "int64", "action_id": str})
    joined = pd.merge_asof(
        exposures.sort_values("ts", kind="stable"), snapshots, left_on="ts", right_on="event_timestamp",
        by="user_id", direction="backward", allow_exact_matches=True,
    )
    joined = joined.dropna(subset=["event_timestamp"]).merge(profile, on="user_id", how="left")
    latest = snapshots.loc[snapshots["event_timestamp"] == snapshots["event_timestamp"].max()]
    latest = latest.merge(profile, on="user_id").sort_values("user_id").reset_index(drop=True)
    return shop, joined.reset_index(drop=True), latest


def true_effects(shop, user_ids: np.ndarray, treatments: list[str]) -> np.ndarray:
    """τ_a(u) = expected_revenue[u, a] − expected_revenue[u, control] (72 h window), shape (n, K)."""
    revenue = expected_revenue(shop, user_ids, WINDOW_HOURS)
    columns = [ACTION_IDS.index(a) for a in treatments]
    return revenue[:, columns] - revenue[:, [ACTION_IDS.index(CONTROL_ACTION)]]


@pytest.fixture(scope="module")
def shop_data():
    shop, data, latest = simulated_training_data(CONFIG)
    holdout = holdout_mask(data["user_id"].to_numpy(), 0.2, seed=0)
    return shop, data.loc[~holdout].reset_index(drop=True), data.loc[holdout].reset_index(drop=True), latest


@pytest.fixture(scope="module")
def learners(shop_data):
    _, train, _, _ = shop_data
    return {
        name: cls(**FIXTURE_PARAMS).fit(
            train[FEATURES], train["action_id"].to_numpy(), train["label_revenue"].to_numpy(),
            propensity=train["propensity"].to_numpy(),
        )
        for name, cls in LEARNER_CLASSES.items()
    }


def scorers(learners) -> dict:
    """Uplift scorers: the four learners and the response-only baseline (μ_a(x) of the T-learner's arm-a model,
    fitted on the rows treated with a only, used as if it were the uplift)."""
    scores = {name: learner.predict_uplift for name, learner in learners.items()}
    scores["response_only"] = lambda X: learners["t_learner"].predict_outcomes(X)[:, 1:]
    return scores


def test_fixture_holds_mature_randomised_exposures_with_point_in_time_features(shop_data):
    _, train, holdout, _ = shop_data
    data = pd.concat([train, holdout])
    assert len(data) > 50_000 and 0.15 < len(holdout) / len(data) < 0.25
    assert set(data["action_id"]) == set(ACTION_IDS)
    assert data["propensity"].lt(1).all() and data["label_revenue"].ge(0).all()
    assert (data["event_timestamp"] <= data["ts"]).all()
    assert (data["ts"] - data["event_timestamp"] < pd.Timedelta(days=1)).all()  # the latest daily snapshot
    assert not data[FEATURES].isna().any().any()
    assert set(train["user_id"]).isdisjoint(holdout["user_id"])


@pytest.mark.parametrize("name", LEARNER_CLASSES)
def test_aipw_interval_covers_the_true_ate(name, shop_data, learners):
    """AIPW on the holdout rows with each learner's outcome models vs the true ATE over the same rows.

    True ATE_a = mean over the holdout exposures of τ_a(user) (a user counts once per labelled exposure, as in the
    estimator). With 95 % intervals over 8 actions, ≥ 7 covered happens with probability ≈ 0.94 under independence
    (all 8: ≈ 0.66), hence the threshold. Observed with seed 7: S 8, T 8, X 8, DR 8 of 8.
    """
    shop, _, holdout, _ = shop_data
    learner = learners[name]
    ate = estimate_ate(
        learner, holdout[FEATURES], holdout["action_id"].to_numpy(), holdout["label_revenue"].to_numpy(),
        holdout["propensity"].to_numpy(),
    )
    truth = true_effects(shop, holdout["user_id"].to_numpy(), learner.treatments_).mean(axis=0)
    assert list(ate["action"]) == learner.treatments_ and (ate["n"] == len(holdout)).all()
    covered = (ate["lower"] <= truth) & (truth <= ate["upper"])
    assert covered.sum() >= 7, ate.assign(truth=truth)


def test_holdout_qini(shop_data, learners):
    """Mean holdout Qini (`multi_action_qini`, unweighted as `train_uplift` reports it), with its user-bootstrap sd.

    Realised labels: the sd of the mean Qini is 0.01–0.03 here, as large as what the learners reach; even ranking by
    the TRUE τ scores only +0.07 ± 0.02 (seed 7). "> 0" on one seed would be luck (over seeds 1, 2, 3, 5, 7 the
    learners' values ranged −0.04 … +0.07), so the assertion is only "not worse than random beyond 2 sd".
    Expected outcomes (the label replaced by expected_revenue[user, logged action], same metric): the outcome noise
    is gone (sd ≈ 0.005) and the T-, X- and DR-learners must score above 2 sd and above random scores (seed 7:
    +0.022, +0.021, +0.030; random +0.004). The S-learner is held only to the weak check: under FIXTURE_PARAMS its
    trees rarely split on the arm columns, it predicts exactly 0 uplift for every action on about half the holdout
    rows, and its expected-outcome Qini (+0.004 ± 0.005 at seed 7) is not distinguishable from 0.
    """
    shop, _, holdout, _ = shop_data
    treatments = learners["t_learner"].treatments_
    actions = holdout["action_id"].to_numpy()
    revenue = expected_revenue(shop, holdout["user_id"].to_numpy(), WINDOW_HOURS)
    labels = {
        "realised": holdout["label_revenue"].to_numpy(),
        "expected": revenue[np.arange(len(holdout)), [ACTION_IDS.index(a) for a in actions]],
    }
    rng = np.random.default_rng(0)
    rows_of_user = pd.Series(np.arange(len(holdout))).groupby(holdout["user_id"].to_numpy()).apply(np.asarray)
    groups = rows_of_user.to_numpy()
    resamples = [np.concatenate(groups[rng.integers(0, len(groups), len(groups))]) for _ in range(20)]

    def qini(label: str, uplift: np.ndarray) -> tuple[float, float]:
        """(mean Qini on all holdout rows, its sd over user-level bootstrap resamples)."""
        y = labels[label]
        value = multi_action_qini(y, actions, uplift, treatments, CONTROL_ACTION)["mean"]
        boot = [multi_action_qini(y[r], actions[r], uplift[r], treatments, CONTROL_ACTION)["mean"] for r in resamples]
        return value, float(np.std(boot))

    random_expected, _ = qini("expected", rng.random((len(holdout), len(treatments))))
    for name, score in scorers(learners).items():
        uplift = score(holdout[FEATURES])
        for label in labels:
            value, sd = qini(label, uplift)
            assert value > -2 * sd, (name, label, value, sd)
            if label == "expected" and name in ("t_learner", "x_learner", "dr_learner"):
                assert value > max(2 * sd, random_expected), (name, value, sd, random_expected)


def test_dr_and_x_learners_beat_response_only_on_pehe(shop_data, learners):
    """PEHE per action over every user's latest features (all 16k users), τ from the ground truth; mean over actions.

    Seed 7: S 0.65, T 0.86, X 0.76, DR 0.99, response-only 1.62 (predicting 0 everywhere: 0.67). Over seeds 1, 2, 3
    the margins to response-only were ≥ 0.4 (DR) and ≥ 0.65 (X).
    """
    shop, _, _, latest = shop_data
    treatments = learners["t_learner"].treatments_
    tau = true_effects(shop, latest["user_id"].to_numpy(), treatments)
    scores = {name: pehe(score(latest[FEATURES]), tau) for name, score in scorers(learners).items()}
    baseline = scores["response_only"].mean()
    assert scores["dr_learner"].mean() < baseline
    assert scores["x_learner"].mean() < baseline
