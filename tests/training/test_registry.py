"""A real MLflow store (SQLite in a temp dir): log, register, alias, load back."""

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from training.pyfunc import UpliftModel
from training.registry import FEATURE_SERVICE_TAG, load_alias, log_and_register
from training.learners import TLearner


@pytest.fixture
def model() -> tuple[UpliftModel, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"f1": rng.normal(size=300), "f2": rng.normal(size=300)})
    treatment = rng.choice(["no_action", "promo"], size=300)
    y = X["f1"].to_numpy() * (treatment == "promo") + rng.normal(size=300)
    learner = TLearner(objective="reg:squarederror", n_estimators=10).fit(X, treatment, y)
    return UpliftModel(learner, ["f1", "f2"], {"promo": 0.25}), X


def register(model, X, tmp_path, feature_service="uplift_v1"):
    return log_and_register(
        model=model, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test-uplift",
        artifact_dir=tmp_path / "artifacts", model_name="m", feature_service=feature_service,
        params={"n_estimators": 10}, metrics={"holdout_qini_mean": 0.12}, tags={"learner": "t_learner"},
        input_example=X, alias="champion",
    )


def test_registered_champion_loads_back_with_identical_predictions(model, tmp_path):
    uplift_model, X = model
    first = register(uplift_model, X, tmp_path)
    second = register(uplift_model, X, tmp_path)
    assert (first.version, second.version) == ("1", "2")
    loaded, ref, feature_service = load_alias(f"sqlite:///{tmp_path / 'mlflow.db'}", "m")
    assert ref.version == "2" and ref.run_id == second.run_id
    assert feature_service == "uplift_v1"
    assert loaded.treatments == ["promo"] and loaded.action_costs == {"promo": 0.25}
    np.testing.assert_array_equal(loaded.uplift(X.to_numpy(np.float32)), uplift_model.uplift(X.to_numpy(np.float32)))


def test_run_records_params_metrics_and_feature_service(model, tmp_path):
    uplift_model, X = model
    ref = register(uplift_model, X, tmp_path)
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(ref.run_id)
    assert run.data.params["n_estimators"] == "10"
    assert run.data.metrics["holdout_qini_mean"] == 0.12
    assert run.data.tags[FEATURE_SERVICE_TAG] == "uplift_v1"


def test_pyfunc_predict_names_missing_features(model):
    uplift_model, X = model
    with pytest.raises(ValueError, match=r"lacks features \['f2'\]"):
        uplift_model.predict(None, X[["f1"]])


def test_model_without_feature_service_tag_is_refused(model, tmp_path):
    uplift_model, X = model
    ref = register(uplift_model, X, tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}", registry_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.delete_model_version_tag("m", ref.version, FEATURE_SERVICE_TAG)
    with pytest.raises(ValueError, match="has no 'feature_service' tag"):
        load_alias(f"sqlite:///{tmp_path / 'mlflow.db'}", "m")
