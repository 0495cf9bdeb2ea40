"""Experiments: the daily readout of the online experiments (arms vs control, per user) with its figure."""

import dagster as dg
import pandas as pd

from dagster_project.assets.decisions import decision_outcomes_table
from dagster_project.partitions import DECISION_DAYS
from dagster_project.plots import save_plot
from dagster_project.resources import DataLakeResource
from serving.decision.experiments import DEFAULT_EXPERIMENTS_PATH, load_experiments
from training.experiment_readout import experiment_readout as build_readout
from training.experiment_readout import readout_figure

EXPERIMENT_PARTITIONS = DECISION_DAYS  # one readout per day that holds decisions (added by the drain)
# Lake tables of one day; the decision_outcomes asset writes the first, this module the other two.
EXPERIMENT_READOUT = "reports/experiment_readout/{day}.parquet"
EXPERIMENT_READOUT_PLOT = "reports/experiment_readout/{day}.png"
# What the run page shows of the readout; the parquet table has every column.
SUMMARY_COLUMNS = [
    "experiment", "arm", "n_users", "conversion_rate", "revenue_per_user",
    "revenue_diff", "revenue_ci_low", "revenue_ci_high", "revenue_p_value", "conversion_diff", "note",
]


class ExperimentReadoutConfig(dg.Config):
    """Where the experiment definitions (control arms) are read from, and the interval level."""

    experiments_path: str = str(DEFAULT_EXPERIMENTS_PATH)
    alpha: float = 0.05


@dg.asset(deps=["decision_outcomes"], partitions_def=EXPERIMENT_PARTITIONS, group_name="experiments")
def experiment_readout(
    context: dg.AssetExecutionContext, config: ExperimentReadoutConfig, lake: DataLakeResource
) -> dg.MaterializeResult:
    """Per experiment and arm: users, conversion and revenue per user, difference to control with 95% CI, PNG."""
    day = context.partition_key
    decisions = lake.read(decision_outcomes_table(day))
    control_arms = load_experiments(config.experiments_path).control_arms()
    readout = build_readout(decisions, control_arms, alpha=config.alpha)
    status = outcomes_status(context.instance, day)
    table_path = lake.write(EXPERIMENT_READOUT.format(day=day), readout)
    plot = save_plot(readout_figure(readout), lake.path(EXPERIMENT_READOUT_PLOT.format(day=day)), "plot")
    context.log.info(
        "readout of %d experiments over %d decisions on %s", readout["experiment"].nunique(), len(decisions), day
    )
    return dg.MaterializeResult(
        metadata={
            "status": status,  # interim while the day's attribution windows are open; re-run when they close
            "decisions": len(decisions),
            "experiments": readout["experiment"].nunique(),
            "users": int(readout["n_users"].sum()),
            "readout": dg.MetadataValue.md(_markdown(readout)),
            "path": dg.MetadataValue.path(str(table_path)),
            **plot,
        }
    )


def outcomes_status(instance: dg.DagsterInstance, day: str) -> str:
    """'final' when the day's latest decision_outcomes was built after its attribution windows closed, else
    'interim' ('unknown' when it was never materialized through Dagster)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("decision_outcomes"), asset_partitions=[day]), limit=1
    ).records
    if not records:
        return "unknown"
    metadata = records[0].asset_materialization.metadata
    return "final" if metadata.get("window_closed") and metadata["window_closed"].value else "interim"


def _markdown(readout: pd.DataFrame) -> str:
    if readout.empty:
        return "_no decision of this day was in an experiment_"
    return readout[SUMMARY_COLUMNS].to_markdown(index=False, floatfmt=".4g")
