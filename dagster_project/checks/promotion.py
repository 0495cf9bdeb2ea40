"""Promotion checks: the challenger must beat the champion on the same holdout (batch pipeline), or on the same
window of the live decision log (retraining from the log), before it may serve."""

from pathlib import Path

import dagster as dg
from mlflow import MlflowClient

from dagster_project.assets.retraining import GATE_WINDOW, LOG_TRAINING_SET
from dagster_project.resources import DataLakeResource, MlflowResource
from dagster_project.resources.data_lake import TRAINING_SET
from feature_repo.transforms import REGIONS
from serving.decision.surfaces import DEFAULT_CONFIG_DIR, load_policy_config
from training.calibration import calibration_failures
from training.lifecycle import alias_version, rolled_back_versions
from training.live_gate import LiveGateConfig, evaluate_on_log, live_gate
from training.promotion import promotion_gate
from training.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, load_alias
from training.retrain import usable_rows
from training.train import evaluate_uplift, split_training_set


@dg.asset_check(
    asset="uplift_challenger",
    blocking=True,
    description="Challenger's holdout Qini above the champion's (same rows) + margin, its uplift calibrated, and "
    "not trained on the champion's dataset; blocks promotion.",
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
    same_dataset = False
    if champion_version is not None:
        champion, champion_ref, _ = load_alias(uri, name, CHAMPION_ALIAS)
        same_dataset = client.get_run(champion_ref.run_id).data.tags.get("dataset_hash") == client.get_run(
            challenger_ref.run_id).data.tags.get("dataset_hash")
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
        same_dataset_as_champion=same_dataset,
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


class LogGateConfig(dg.Config):
    """The gate on the live log: which surface's policy is judged, the margin, the least effective sample size."""

    surface: str = "home"  # its exploration and uncertainty bonus turn scores into the policy that is evaluated
    config_dir: str | None = None  # the service's policy folder (HYPERLIFT_SERVING_CONFIG_DIR); unset: serving/conf
    margin: float = 0.0  # net value per decision the challenger must beat the champion by (one-sided lower bound)
    min_ess: float = 300.0
    alpha: float = 0.05


@dg.asset_check(
    asset="log_challenger",
    blocking=True,
    description="On the held-out window of the live decision log, the challenger's serving policy beats the "
    "champion's (paired DR and SNIPW lower bounds above the margin), with enough effective sample size, a new "
    "dataset, no rollback against it, and calibrated uplift; blocks promotion.",
)
def challenger_beats_champion_on_log(
    config: LogGateConfig, lake: DataLakeResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    """Evaluate challenger and champion off-policy on the gate window of the log and apply the live gate."""
    uri, name = mlflow.tracking_uri, mlflow.model_name
    client = MlflowClient(uri, registry_uri=uri)
    challenger, challenger_ref, _ = load_alias(uri, name, CHALLENGER_ALIAS)
    champion_version = alias_version(uri, name, CHAMPION_ALIAS)
    champion, champion_ref = (None, None) if champion_version is None else load_alias(uri, name, CHAMPION_ALIAS)[:2]
    folder = DEFAULT_CONFIG_DIR if config.config_dir is None else Path(config.config_dir)
    surface = load_policy_config(folder, REGIONS).surfaces[config.surface]
    gate_config = LiveGateConfig(margin=config.margin, min_ess=config.min_ess, alpha=config.alpha)
    window = lake.read(GATE_WINDOW)
    rows = usable_rows(window.assign(revenue=window["label_revenue"]), challenger.feature_names) if len(window) else None
    actions = [challenger.control, *challenger.treatments]
    evaluation = None
    if rows is not None and len(rows) >= 2:
        evaluation = evaluate_on_log(
            rows, challenger, champion, surface.exploration.build(), actions, surface.uncertainty_bonus, gate_config
        )
    run = client.get_run(challenger_ref.run_id).data
    same_dataset = champion_ref is not None and (
        client.get_run(champion_ref.run_id).data.tags.get("dataset_hash") == run.tags.get("dataset_hash")
    )
    holdout = split_training_set(
        lake.read(LOG_TRAINING_SET), float(run.params["holdout_fraction"]), int(run.params["holdout_seed"])
    ).test
    challenger_eval = evaluate_uplift(challenger, holdout)  # its calibration on the users it was not fitted on
    gate = live_gate(
        evaluation, gate_config,
        calibration_failures(challenger_eval.calibration, min_coverage=mlflow.promotion_min_coverage,
                             slope_range=None, max_slope_z=mlflow.promotion_max_slope_z),
        same_dataset_as_champion=same_dataset,
        rolled_back=challenger_ref.version in rolled_back_versions(uri, name),
        window_rounds=0 if rows is None else len(rows),
    )
    return dg.AssetCheckResult(
        passed=gate.passed,
        metadata={
            "challenger_version": challenger_ref.version,
            "champion_version": str(champion_version),
            **gate.figures,
            "excluded_from_window": dg.MetadataValue.json({} if rows is None else rows.excluded),
            "reasons": dg.MetadataValue.json(list(gate.reasons)),
        },
    )
