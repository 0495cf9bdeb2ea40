"""The compiled tree scorer gives XGBoost's margins and the model's uplift bit for bit, missing values included."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from infra.settings import HyperliftSettings
from serving.decision.scoring import _EXPF, CompiledUplift, Forest, UnsupportedModel, expf, scorer
from training.learners import DRLearner, SLearner, TLearner, TwoPartLearner, XLearner
from training.learners.base import single_threaded
from training.learners.selection import CausalModelSelector
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, load_alias, log_and_register
from tests.serving.conftest import FEATURES

ARMS = ["no_action", "pct10_sitewide", "push_reminder", "free_shipping"]


def logged_data(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features with 15 % missing values, uniformly logged arms, revenue and conversion with arm-dependent effects."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.random((n, len(FEATURES))), columns=FEATURES).mask(rng.random((n, len(FEATURES))) < 0.15)
    treatment = np.array(ARMS)[rng.integers(0, len(ARMS), n)]
    signal = X["mobile_view_share"].fillna(0.5).to_numpy()
    revenue = rng.gamma(1.0, 1.0 + 0.8 * (treatment == "push_reminder") * signal + 0.3 * (treatment == "free_shipping"))
    conversion = (rng.random(n) < 0.2 + 0.3 * (treatment == "pct10_sitewide") * signal).astype(float)
    return X, treatment, revenue, conversion, np.full(n, 1.0 / len(ARMS))


def scoring_rows(forest: Forest, n_features: int, n: int = 3000, seed: int = 1) -> np.ndarray:
    """Random rows (20 % missing), all-missing rows, and rows sitting exactly on and just below split thresholds."""
    rng = np.random.default_rng(seed)
    rows = rng.random((n, n_features)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    rows[:5] = np.nan
    used = np.isfinite(forest._threshold) & (forest._feature < n_features)
    features, thresholds = forest._feature[used], forest._threshold[used]
    picks = rng.integers(0, len(features), 200)
    for i, k in enumerate(picks):
        rows[5 + i, features[k]] = thresholds[k]  # x == threshold goes right
        rows[205 + i, features[k]] = np.nextafter(thresholds[k], np.float32(-np.inf))  # just below goes left
    return rows


def s_rows(learner: SLearner, rows: np.ndarray) -> np.ndarray:
    """[features, one-hot(arm)] for every (row, arm) pair, built as SLearner.predict_outcomes builds them."""
    arms = len(learner.arms_)
    return learner._with_arm(np.repeat(rows, arms, axis=0), np.tile(np.arange(arms), len(rows)))


def xgboost_margins(boosters: list[xgb.Booster], rows: np.ndarray) -> np.ndarray:
    return np.column_stack([b.inplace_predict(rows, predict_type="margin") for b in boosters])


@pytest.fixture(scope="module")
def registered_s_learner(tmp_path_factory) -> UpliftModel:
    """The serving default: an S-learner with its defaults (200 depth-2 Tweedie trees), registered in a real MLflow
    store and loaded back the way serving loads a champion."""
    home = tmp_path_factory.mktemp("scoring") / "hyperlift"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    X, treatment, revenue, _, _ = logged_data()
    learner = SLearner(random_state=0).fit(X, treatment, revenue)
    model = UpliftModel(learner, FEATURES, {a: 0.01 for a in ARMS[1:]})
    log_and_register(
        model=model, tracking_uri=settings.mlflow_uri, experiment="scoring-test", artifact_dir=settings.mlflow_artifacts_dir,
        model_name="scoring_s", feature_service="uplift_v1", params={}, metrics={}, tags={}, input_example=X,
        alias=CHAMPION_ALIAS,
    )
    loaded, _, _ = load_alias(settings.mlflow_uri, "scoring_s", CHAMPION_ALIAS)
    single_threaded(loaded.learner)
    return loaded


def test_registered_s_learner_margins_and_uplift_equal_xgboost(registered_s_learner):
    model = registered_s_learner
    compiled = CompiledUplift(model)
    assert (compiled.forest.n_trees, compiled.forest.depth, compiled.forest.link) == (200, 2, "log")
    rows = scoring_rows(compiled.forest, len(FEATURES))
    stacked = s_rows(model.learner, rows)
    np.testing.assert_array_equal(compiled.forest.margins(stacked), xgboost_margins([model.learner.model_.get_booster()], stacked))
    np.testing.assert_array_equal(compiled.forest.predict(stacked)[:, 0], model.learner.model_.get_booster().inplace_predict(stacked))
    np.testing.assert_array_equal(compiled.uplift(rows), model.uplift(rows))
    np.testing.assert_array_equal(compiled.uplift(rows[:1]), model.uplift(rows[:1]))  # the serving call: one user


def _model(learner, outcome: str = "revenue") -> UpliftModel:
    X, treatment, revenue, conversion, propensity = logged_data(seed=2)
    y = revenue if outcome == "revenue" else conversion
    fit = {"propensity": propensity} if isinstance(learner, DRLearner | CausalModelSelector) else {}
    return UpliftModel(learner.fit(X, treatment, y, **fit), FEATURES, {})


@pytest.mark.parametrize(
    "learner, outcome",
    [
        (SLearner(outcome="conversion", n_estimators=60), "conversion"),  # logistic link
        (TLearner(n_estimators=40), "revenue"),  # one booster per arm, each with its own base score
        (TLearner(n_estimators=40, outcome="conversion"), "conversion"),
        (TLearner(objective="reg:squarederror", n_estimators=30, max_depth=5), "revenue"),  # uneven leaf depths
        (DRLearner(n_estimators=30), "revenue"),
        (XLearner(n_estimators=30), "revenue"),
    ],
    ids=["s-logistic", "t-tweedie", "t-logistic", "t-depth5", "dr", "x-mean"],
)
def test_supported_learners_score_exactly_like_the_model(learner, outcome):
    model = _model(learner, outcome)
    compiled = CompiledUplift(model)
    rows = scoring_rows(compiled.forest, len(FEATURES), n=1500)
    np.testing.assert_array_equal(compiled.uplift(rows), model.uplift(rows))


def test_the_two_part_learner_scores_exactly_like_the_model():
    learner = TwoPartLearner(n_estimators=60, max_depth=3, min_child_weight=1, value_n_estimators=30,
                             value_max_depth=3, value_min_child_weight=1)
    X, treatment, revenue, conversion, _ = logged_data(seed=2)
    spent = np.where(np.asarray(conversion) == 1, revenue, 0.0)  # zero-inflated: most exposures buy nothing
    model = UpliftModel(learner.fit(X, treatment, spent), FEATURES, {})
    compiled = CompiledUplift(model)
    rows = np.vstack([scoring_rows(forest, len(FEATURES), n=800) for forest in (compiled.forest, compiled.value_forest)])
    np.testing.assert_array_equal(compiled.uplift(rows), model.uplift(rows))
    assert np.ptp(compiled.uplift(rows)) > 0  # the rows reach different leaves: a real comparison


def test_one_hot_margins_walk_fewer_trees_and_equal_the_built_rows(registered_s_learner):
    compiled = CompiledUplift(registered_s_learner)
    forest, arms = compiled.forest, compiled.arms
    booster = registered_s_learner.learner.model_.get_booster()
    rows = scoring_rows(forest, len(FEATURES), n=1200)
    expected = xgboost_margins([booster], s_rows(registered_s_learner.learner, rows))
    np.testing.assert_array_equal(forest.one_hot_margins(rows, arms), expected)
    for i in (0, 7, 1199):  # one user at a time (the serving call), through its own cached plan
        np.testing.assert_array_equal(forest.one_hot_margins(rows[i:i + 1], arms), expected[i * arms:(i + 1) * arms])
    plan = forest._one_hot_plan(1, len(FEATURES), arms)
    walks_of_pairs = len(plan.trees) - forest.n_trees
    assert 0 < walks_of_pairs < forest.n_trees * (arms - 1)  # some trees split on an arm, none on all of them


def test_one_hot_margins_refuse_too_few_columns(registered_s_learner):
    forest = CompiledUplift(registered_s_learner).forest
    with pytest.raises(ValueError, match="features and arms give 5 columns"):
        forest.one_hot_margins(np.zeros((1, 3), np.float32), 2)


def test_vectorised_expf_is_the_c_librarys_expf_element_for_element():
    rng = np.random.default_rng(5)
    x = np.concatenate([
        rng.uniform(-30, 30, 100_000), rng.normal(0, 3, 100_000), rng.uniform(-110, 95, 20_000),  # over/underflow
        [0.0, -0.0, np.inf, -np.inf, np.nan, 88.72, 88.73, -87.33, -103.9],
    ]).astype(np.float32)
    expected = np.array([_EXPF(float(v)) for v in x], np.float32)
    np.testing.assert_array_equal(expf(x).view(np.int32), expected.view(np.int32))
    with np.errstate(over="ignore"):
        rounded = np.exp(x.astype(np.float64)).astype(np.float32)
    assert (rounded.view(np.int32) != expected.view(np.int32)).sum() > 0  # plain rounding alone would not be exact


def test_t_learner_margins_per_arm_equal_xgboost():
    model = _model(TLearner(n_estimators=40, outcome="conversion"), "conversion")
    compiled = CompiledUplift(model)
    boosters = [model.learner.models_[a].get_booster() for a in model.learner.arms_]
    rows = scoring_rows(compiled.forest, len(FEATURES), n=1500)
    np.testing.assert_array_equal(compiled.forest.margins(rows), xgboost_margins(boosters, rows))


def test_boosters_of_different_lengths_sum_each_of_their_own_trees():
    rng = np.random.default_rng(3)
    X = rng.random((2000, 5)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = rng.random(2000)
    boosters = [
        xgb.XGBRegressor(objective="reg:squarederror", n_estimators=n, max_depth=d).fit(X, y).get_booster()
        for n, d in ((7, 3), (25, 1))
    ]
    np.testing.assert_array_equal(Forest(boosters).margins(X), xgboost_margins(boosters, X))


def test_unsupported_learners_keep_xgboosts_path(caplog):
    model = _model(XLearner(n_estimators=10, g_model="classifier"))
    with pytest.raises(UnsupportedModel, match="XLearner"):
        CompiledUplift(model)
    with caplog.at_level(logging.WARNING, logger="serving.decision.scoring"):
        score = scorer(model)
    assert score == model.uplift
    assert "scoring XLearner through XGBoost" in caplog.text


def test_a_selection_is_compiled_as_its_winner():
    """CausalModelSelector answers with its refitted winner: served through that winner's compiled forest."""
    selector = CausalModelSelector(
        candidates={"s": SLearner(n_estimators=40), "t": TLearner(n_estimators=40)}, n_folds=2
    )
    model = _model(selector)
    compiled = CompiledUplift(model)
    assert compiled.kind == type(selector.best_estimator_).__name__
    rows = scoring_rows(compiled.forest, len(FEATURES), n=500)
    np.testing.assert_array_equal(compiled.uplift(rows), model.uplift(rows))


def test_a_linear_base_keeps_the_models_own_path(caplog):
    model = _model(TLearner(base_model="linear"))
    with pytest.raises(UnsupportedModel, match="TLearner on a linear base has no boosters"):
        CompiledUplift(model)
    with caplog.at_level(logging.WARNING, logger="serving.decision.scoring"):
        assert scorer(model) == model.uplift


def test_unsupported_boosters_are_refused_with_the_reason():
    rng = np.random.default_rng(4)
    X, y = rng.random((500, 3)).astype(np.float32), rng.random(500)
    dart = xgb.XGBRegressor(booster="dart", n_estimators=5).fit(X, y).get_booster()
    with pytest.raises(UnsupportedModel, match="booster 'dart'"):
        Forest([dart])
    quantile = xgb.XGBRegressor(objective="reg:quantileerror", quantile_alpha=0.5, n_estimators=5).fit(X, y).get_booster()
    with pytest.raises(UnsupportedModel, match="objective 'reg:quantileerror'"):
        Forest([quantile])


def test_rows_of_the_wrong_width_are_refused(registered_s_learner):
    with pytest.raises(ValueError, match=f"features must be \\(n, {len(FEATURES)}\\)"):
        CompiledUplift(registered_s_learner).uplift(np.zeros((1, 3), np.float32))


def test_the_service_scores_its_champion_through_the_compiled_forest(serving_settings, served_world):
    from serving.core.runtime import build_runtime  # the served world's champion is a T-learner

    runtime = build_runtime(serving_settings)
    try:
        champion = runtime.service.champions[("hyperlift_uplift", "champion")]
        assert isinstance(champion.score.__self__, CompiledUplift)
        _, _, users = served_world
        pseudonym = runtime.service.pseudonymizer  # the online rows are keyed by the users' pseudonyms
        rows = np.stack([champion.features.read(pseudonym(int(u)), champion.model.feature_names).values
                         for u in users["user_id"]])
        assert not np.isnan(rows).all(axis=1).any()  # every user's row was read
        np.testing.assert_array_equal(champion.score(rows), champion.model.uplift(rows))
    finally:
        runtime.stop()
