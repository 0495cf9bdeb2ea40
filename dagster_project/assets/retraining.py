"""Retraining from the decision log: the loop's training set, its challenger, and the champion it may become.

`logged_training_set` labels the drained decision log as of the loop's clock (realised outcomes, delay-corrected
expectations for open windows; training/retrain.py), holds the last `gate_days` out as the gate window and joins
the rest to the earlier history (the batch training set). `log_challenger` fits and registers a challenger on it.
The blocking check `challenger_beats_champion_on_log` (dagster_project/checks/promotion.py) judges it on the gate
window; `log_champion` moves the alias once the check passed. The sensor `retrain_sensor` starts `retrain_job`.
"""

import datetime as dt

import dagster as dg

from dagster_project.assets.decisions import DECISION_TRACE, OUTCOME_EVENTS, revoked_in_lake
from dagster_project.assets.models import UpliftModelConfig, fit_and_register, promote_challenger
from dagster_project.resources import DataLakeResource, FeastResource, MlflowResource
from dagster_project.resources.data_lake import TRAINING_SET
from dagster_project.resources.event_time import clock_ts
from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.store import service_feature_names
from serving.store.decision_log import DECISION_FORMAT, OUTCOME_FORMAT, read_partitions
from training.consent import without_revoked
from training.retrain import label_log, split_gate_window, training_frame, usable_rows, with_history

GROUP = "retraining"
LOG_TRAINING_SET = "training/log_training_set.parquet"
GATE_WINDOW = "training/gate_window.parquet"  # labelled decisions of the gate window (features as logged)
LOG_CUTOFF_TAG = "log_cutoff_ts"  # run tag: the loop clock's epoch seconds when the challenger's data was cut


class LogTrainingConfig(dg.Config):
    """The loop's clock, the gate window and what joins the logged rows."""

    now: str | None = None  # ISO-8601 instant of the loop's clock (simulated time); unset: the wall clock
    gate_days: float = 1.0  # the last days of decisions, held out of training for the promotion gate
    attribution_window_hours: float = 72.0
    include_history: bool = True  # the batch training set (the logging policy's period) joins the logged rows

    def now_ts(self) -> float:
        """The clock as epoch seconds."""
        return clock_ts(self.now)


@dg.asset(deps=["decision_trace", "outcome_events"], group_name=GROUP)
def logged_training_set(
    context: dg.AssetExecutionContext, config: LogTrainingConfig, lake: DataLakeResource, feast: FeastResource
) -> dg.MaterializeResult:
    """Decision log ⨝ outcomes as of now with delay-corrected labels: the gate window, and the rest + history."""
    now = config.now_ts()
    feature_names = service_feature_names(feast.store().get_feature_service(UPLIFT_FEATURE_SERVICE))
    decisions = read_partitions(lake.path(DECISION_TRACE), record_format=DECISION_FORMAT)
    outcomes = read_partitions(lake.path(OUTCOME_EVENTS), record_format=OUTCOME_FORMAT)
    log = label_log(decisions, outcomes, now, config.attribution_window_hours)
    train, gate = split_gate_window(log, config.gate_days)
    rows = usable_rows(train, feature_names)
    logged = training_frame(rows, train.set_index("decision_id")["user_key"])
    history = lake.read(TRAINING_SET) if config.include_history and lake.path(TRAINING_SET).exists() else None
    # Users who revoked consent (POST /v1/consent) train nothing: logged rows carry the user key, history the lake id
    # (the pseudonym, as the consent lake).
    revoked = revoked_in_lake(lake)
    before = len(logged) + (0 if history is None else len(history))
    logged = without_revoked(logged, revoked["user_key"])
    history = None if history is None else without_revoked(history, revoked["user_id"])
    revoked_rows = before - len(logged) - (0 if history is None else len(history))
    data = with_history(logged, history, feature_names)
    lake.write(LOG_TRAINING_SET, data)
    lake.write(GATE_WINDOW, gate)
    families = {} if log.delay_model is None else {
        str(r.group): f"{r.family} ({r.source})" for r in log.delay_model.groups_.itertuples()
    }
    context.log.info("log as of %s: %d decisions (%d in the gate window), %d training rows (%d logged)",
                     dt.datetime.fromtimestamp(now, dt.UTC).isoformat(), len(log.decisions), len(gate), len(data),
                     len(logged))
    return dg.MaterializeResult(
        metadata={
            "now": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
            "now_ts": now,
            "decisions": len(log.decisions),
            "gate_window_decisions": len(gate),
            "training_rows": len(data),
            "logged_rows": len(logged),
            "history_rows": 0 if history is None else len(history),
            "excluded_by_reason": dg.MetadataValue.json(rows.excluded),
            "revoked_users_rows_excluded": revoked_rows,
            "pending_labels": int((~log.decisions["final"]).sum()) if len(log.decisions) else 0,
            "delay_family_by_action": dg.MetadataValue.json(families),
        }
    )


@dg.asset(deps=["logged_training_set", "action_catalogue"], group_name=GROUP)
def log_challenger(
    context: dg.AssetExecutionContext,
    config: UpliftModelConfig,
    lake: DataLakeResource,
    feast: FeastResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Fit the learner on the log's training set (logged propensities as logged) and register it as challenger."""
    data = lake.read(LOG_TRAINING_SET)
    cutoff = context.instance.get_latest_materialization_event(dg.AssetKey("logged_training_set"))
    tags = {}
    if cutoff is not None:
        tags[LOG_CUTOFF_TAG] = str(cutoff.asset_materialization.metadata["now_ts"].value)
    return fit_and_register(context, config, data, lake, feast, mlflow, tags)


@dg.asset(deps=["log_challenger"], group_name=GROUP)
def log_champion(context: dg.AssetExecutionContext, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Move the `champion` alias to the log challenger (runs only after the blocking gate on the log passed)."""
    return promote_challenger(context, mlflow, "log_challenger")
