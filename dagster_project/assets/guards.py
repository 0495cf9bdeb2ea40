"""Drift and risk guards over the decision lake (training/guards, docs/guards.md): per surface, the PSI / JS table of
the serving window against the training window, calibration on matured outcomes, alarms, the cautious switch and
the rollback rule, shown as the asset's metadata. It replays the last `horizon` decisions at every materialization
(`drift_guards_job`, requested by `drift_guards_sensor` every `step` new decisions: dagster_project/guard_sensors.py);
an alarm acts at once (cautious switch, rollback), and the switch stays on until a person turns it off."""

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from dagster_project.assets.decisions import DECISION_TRACE, OUTCOME_EVENTS
from dagster_project.resources import DataLakeResource, MlflowResource, RedisResource
from dagster_project.resources.event_time import clock_ts
from serving.ops.cautious import CAUTIOUS_KEY, CautiousSwitch
from serving.store.decision_log import DECISION_FORMAT, OUTCOME_FORMAT, read_partitions
from training.guards.config import DEFAULT_GUARDS_FILE, GuardConfig, load_guard_config
from training.guards.drift import Reference
from training.guards.monitor import SCORE
from training.guards.records import columns, logged_values
from training.guards.runner import GuardMetrics, GuardRunner, registry_runner
from training.outcome_join import join_outcomes

GROUP = "guards"
REFERENCES = "guards"  # lake folder of the saved references: guards/<surface>-<model version>.json


class GuardRunConfig(dg.Config):
    """The run's clock, the guards' file and the neutral action."""

    now: str | None = None  # ISO-8601 instant of the loop's clock (simulated time); unset: the wall clock
    guards_file: str = str(DEFAULT_GUARDS_FILE)
    neutral_action: str = "no_action"
    attribution_window_hours: float = 72.0
    reference_size: int = Field(default=5000, description="decisions of the training window in a new reference")
    action_costs: dict[str, float] | None = Field(
        default=None, description="cost per served action (realised value = revenue − cost); unset: the champion's "
        "model card (model_card.json of its run)")


def champion_costs(context: dg.AssetExecutionContext, tracking_uri: str, model_name: str, version: str) -> dict:
    """The action costs in the model card of `model_name@version`; {} (logged: values are then gross revenue)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run_id = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version(model_name, version).run_id
        if run_id:
            return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/model_card.json")["action_costs"])
    except (MlflowException, OSError, KeyError) as exc:
        context.log.warning("no model card for %s@%s (%s)", model_name, version, exc)
    context.log.warning("%s@%s: no action costs; realised values are gross revenue (set action_costs)", model_name,
                        version)
    return {}


def training_window(frame: pd.DataFrame, version: str, size: int) -> pd.DataFrame:
    """The decisions logged before `version` first served (what a loop-trained champion learnt from), the last
    `size` of them; without any, the first half of `frame`."""
    served = frame.loc[frame["model_version"].astype(str) == version, "ts"]
    before = frame.loc[frame["ts"] < served.min()] if len(served) else frame.iloc[: len(frame) // 2]
    return (before if len(before) else frame.iloc[: len(frame) // 2]).tail(size)


def reference_for(lake: DataLakeResource, surface: str, version: str, frame: pd.DataFrame, config: GuardConfig,
                  size: int) -> Reference:
    """The saved reference of (surface, champion version), else one fitted on its training window and saved."""
    path = Path(lake.path(REFERENCES)) / f"{surface}-{version}.json"
    if path.exists():
        return Reference.load(path)
    window = training_window(frame, version, size).to_dict("records")
    names = sorted({name for r in window for name in logged_values(r)}) + [SCORE]
    reference = Reference.fit(columns(window, names), config.bins, model_version=version)
    reference.save(path)
    return reference


def guard_surface(runner: GuardRunner, serving: list[dict], matured: list[dict]) -> dict:
    """Replay the surface's serving window through `runner`; its findings as metadata values."""
    runner.mature(matured)
    runner.observe(serving)
    last = runner.looks[-1] if runner.looks else None
    verdict = runner.verdicts[-1] if runner.verdicts else None
    return {
        "looks": len(runner.looks),
        "alarms": sorted({c for look in runner.looks for c in look.alarms}),
        "cautious": runner.switch.policy_for(runner.surface) is not None,
        "rolled_back": sorted(runner.rolled_back),
        "rollback_verdict": verdict.reason if verdict else "no alarm: rule not evaluated",
        "table": pd.DataFrame(last.table()).to_markdown(index=False) if last else "(too few decisions)",
        "calibration": (f"predicted {last.calibration.predicted:.4f}, realised {last.calibration.realised:.4f} "
                        f"± {last.calibration.se:.4f} (n={last.calibration.n}, support {last.calibration.support})"
                        if last is not None and last.calibration is not None else "too few matured decisions"),
    }


@dg.asset(deps=["decision_trace", "outcome_events"], group_name=GROUP)
def drift_guards(
    context: dg.AssetExecutionContext, config: GuardRunConfig, lake: DataLakeResource, redis: RedisResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Per surface: PSI/JS of every logged feature and the score, calibration, alarms → cautious switch → rollback."""
    guards = load_guard_config(Path(config.guards_file))
    decisions = read_partitions(lake.path(DECISION_TRACE), record_format=DECISION_FORMAT)
    if decisions.empty:
        return dg.MaterializeResult(metadata={"surfaces": 0, "note": "the decision lake is empty"})
    outcomes = read_partitions(lake.path(OUTCOME_EVENTS), record_format=OUTCOME_FORMAT)
    now = clock_ts(config.now)
    window = dt.timedelta(hours=config.attribution_window_hours)
    joined = join_outcomes(decisions, outcomes, window).decisions
    matured_all = joined.loc[joined["ts"].astype(float) <= now - window.total_seconds()]
    switch = CautiousSwitch(redis.client(), guards.cautious, key=CAUTIOUS_KEY, poll_s=0)
    metrics = GuardMetrics()
    metadata: dict[str, Any] = {}
    for surface, frame in decisions.groupby("surface", sort=True):
        frame = frame.loc[frame["model_version"].notna()]
        if frame.empty:
            continue
        version = str(frame["model_version"].iloc[-1])
        reference = reference_for(lake, surface, version, frame, guards, config.reference_size)
        costs = config.action_costs if config.action_costs is not None else champion_costs(
            context, mlflow.tracking_uri, mlflow.model_name, version)
        runner = registry_runner(mlflow.tracking_uri, mlflow.model_name, surface, reference, guards, switch,
                                 config.neutral_action, costs, metrics=metrics)
        serving = frame.tail(guards.horizon).to_dict("records")
        matured = matured_all.loc[matured_all["surface"] == surface].to_dict("records")
        found = guard_surface(runner, serving, matured)
        context.log.info("surface %s: %s looks, alarms %s, cautious %s, rolled back %s", surface, found["looks"],
                         found["alarms"], found["cautious"], found["rolled_back"])
        metadata[f"{surface}/psi_table"] = dg.MetadataValue.md(found.pop("table"))
        metadata.update({f"{surface}/{k}": (v if isinstance(v, (int, str, bool)) else str(v)) for k, v in found.items()})
    for name in ("looks", "alarms", "cautious_entries", "rollbacks"):
        metadata[f"guard_{name}"] = metrics.value(f"hyperlift_guard_{name}_total")
    return dg.MaterializeResult(metadata=metadata)
