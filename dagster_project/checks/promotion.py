"""Promotion checks: the challenger must beat the champion on the same holdout before it may serve."""

import dagster as dg
from mlflow import MlflowClient

from dagster_project.resources import DataLakeResource, MlflowResource
from dagster_project.resources.data_lake import TRAINING_SET
from training.calibration import calibration_failures
from training.lifecycle import alias_version
from training.promotion import promotion_gate
from training.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, load_alias
from training.train import evaluate_uplift, split_training_set


@dg.asset_check(
    asset="uplift_challenger",
    blocking=True,
    description="Challenger's holdout Qini ≥ champion's (same rows) + margin, and its uplift calibrated; blocks "
    "promotion.",
)
def challenger_beats_champion(lake: DataLakeResource, mlflow: MlflowResource) -> dg.AssetCheckResult:
    """Score challenger and champion, as registered, on the challenger's holdout users and apply the gate."""
    uri, name = mlflow.tracking_uri, mlflow.model_name
    client = MlflowClient(uri, registry_uri=uri)
    challenger, challenger_ref, _ = load_alias(uri, name, CHALLENGER_ALIAS)
    params = client.get_run(challenger_ref.run_id).data.params
    split = split_training_set(lake.read(TRAINING_SET), float(params["holdout_fraction"]), int(params["holdout_seed"]))
    challenger_eval = evaluate_uplift(challenger, split.test)
    champion_qini, champion_version = None, alias_version(uri, name, CHAMPION_ALIAS)
    if champion_version is not None:
        champion, _, _ = load_alias(uri, name, CHAMPION_ALIAS)
        missing = sorted(set(champion.feature_names) - set(split.test.columns))
        if missing:
            # A champion on another feature-service version cannot be scored on these rows; use its logged figure.
            run_id = client.get_model_version(name, champion_version).run_id
            champion_qini = float(client.get_run(run_id).data.metrics["holdout_qini_mean"])
        else:
            champion_qini = evaluate_uplift(champion, split.test).metrics["holdout_qini_mean"]
    gate = promotion_gate(
        challenger_eval.metrics["holdout_qini_mean"],
        champion_qini,
        mlflow.promotion_qini_margin,
        calibration_failures(
            challenger_eval.calibration,
            min_coverage=mlflow.promotion_min_coverage,
            slope_range=None,
            max_slope_z=mlflow.promotion_max_slope_z,
        ),
    )
    return dg.AssetCheckResult(
        passed=gate.passed,
        metadata={
            "challenger_version": challenger_ref.version,
            "champion_version": str(champion_version),
            "actual_challenger_qini": gate.challenger_qini,
            "expected_min_qini": "no champion" if gate.champion_qini is None else gate.champion_qini + gate.margin,
            "tolerance_margin": gate.margin,
            "calibration_slope": challenger_eval.metrics["holdout_calibration_slope"],
            "calibration_coverage": challenger_eval.metrics["holdout_calibration_coverage"],
            "reasons": dg.MetadataValue.json(list(gate.reasons)),
        },
    )
