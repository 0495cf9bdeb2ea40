"""Training: point-in-time training set from logged exposures, then the uplift model registered in MLflow."""


from pathlib import Path

import dagster as dg
import pandas as pd

from dagster_project.resources import DataLakeResource, FeastResource, MlflowResource, ShopResource
from dagster_project.resources.data_lake import ACTION_CATALOGUE, TRAINING_SET, VALIDATED_EVENTS
from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.store import service_feature_names
from training.labels import attributed_revenue, mature_exposures
from training.registry import log_and_register
from training.learners import TLearner
from training.train import train_uplift


class TrainingSetConfig(dg.Config):
    """How exposures are labelled."""

    attribution_window_hours: float = 72.0


class UpliftModelConfig(dg.Config):
    """The holdout split, and learner hyper-parameters to override (unset: TLearner's defaults)."""

    holdout_fraction: float = 0.2
    seed: int = 0
    n_estimators: int | None = None
    max_depth: int | None = None
    learning_rate: float | None = None
    min_child_weight: float | None = None

    def learner(self) -> TLearner:
        """A TLearner with the overridden hyper-parameters."""
        overrides = {
            name: getattr(self, name)
            for name in ("n_estimators", "max_depth", "learning_rate", "min_child_weight")
            if getattr(self, name) is not None
        }
        return TLearner(random_state=self.seed, **overrides)


@dg.asset(deps=["validated_events", "online_features"], group_name="training")
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    lake: DataLakeResource,
    feast: FeastResource,
    shop: ShopResource,
) -> dg.MaterializeResult:
    """Logged exposures joined point-in-time with `uplift_v1` features; label = attributed revenue in the window."""
    events = lake.read(VALIDATED_EVENTS)
    window = pd.Timedelta(hours=config.attribution_window_hours)
    exposures = events.loc[
        events["event_type"] == "promo_exposure", ["user_id", "session_id", "ts", "action_id", "propensity"]
    ]
    purchases = events.loc[events["event_type"] == "purchase", ["session_id", "ts", "revenue"]]
    mature = mature_exposures(exposures, pd.Timestamp(shop.config().end), window)
    exposures = exposures.loc[mature].copy()
    exposures["label_revenue"] = attributed_revenue(exposures, purchases, window)
    entity_df = (
        exposures.drop(columns="session_id")
        .rename(columns={"ts": "event_timestamp"})
        .astype({"user_id": "int64", "action_id": str})
    )
    store = feast.store()
    joined = store.get_historical_features(
        entity_df=entity_df.reset_index(drop=True), features=store.get_feature_service(UPLIFT_FEATURE_SERVICE)
    ).to_df()
    path = lake.write(TRAINING_SET, joined)
    context.log.info("training set: %d mature exposures of %d", len(joined), int(mature.size))
    return dg.MaterializeResult(
        metadata={
            "rows": len(joined),
            "immature_exposures_skipped": int((~mature).sum()),
            "feature_service": UPLIFT_FEATURE_SERVICE,
            "label_mean": float(joined["label_revenue"].mean()),
            "path": str(path),
        }
    )


@dg.asset(deps=["training_set", "action_catalogue"], group_name="training")
def uplift_model(
    context: dg.AssetExecutionContext,
    config: UpliftModelConfig,
    lake: DataLakeResource,
    feast: FeastResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """T-learner (XGBoost per action vs no_action), scored by holdout Qini, registered as the champion."""
    store = feast.store()
    feature_names = service_feature_names(store.get_feature_service(UPLIFT_FEATURE_SERVICE))
    data = lake.read(TRAINING_SET)
    catalogue = lake.read(ACTION_CATALOGUE)
    learner = config.learner()
    trained = train_uplift(
        data,
        feature_names,
        dict(zip(catalogue["action_id"], catalogue["unit_cost"].astype(float))),
        learner,
        holdout_fraction=config.holdout_fraction,
        seed=config.seed,
    )
    start, end = data["event_timestamp"].min(), data["event_timestamp"].max()
    registered = log_and_register(
        model=trained.model,
        tracking_uri=mlflow.tracking_uri,
        experiment=mlflow.experiment,
        artifact_dir=Path(mlflow.artifact_dir),
        model_name=mlflow.model_name,
        feature_service=UPLIFT_FEATURE_SERVICE,
        params={**learner.get_params(), "holdout_fraction": config.holdout_fraction},
        metrics=trained.metrics,
        tags={"training_window": f"{start.isoformat()}/{end.isoformat()}", "learner": "t_learner"},
        input_example=data,
        figures=trained.figures,
    )
    plot = lake.path("reports/holdout_qini_curves.png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    trained.figures["holdout_qini_curves"].savefig(plot, dpi=110)
    qini = trained.metrics["holdout_qini_mean"]
    context.log.info("registered %s v%s (holdout Qini %.4f)", registered.name, registered.version, qini)
    return dg.MaterializeResult(
        metadata={
            "model": registered.name,
            "version": registered.version,
            "run_id": registered.run_id,
            "holdout_qini_mean": qini,
            "metrics": dg.MetadataValue.json({k: round(v, 5) for k, v in trained.metrics.items()}),
            "qini_plot": dg.MetadataValue.path(str(plot)),
        }
    )
