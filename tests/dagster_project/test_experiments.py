"""The experiment readout asset turns one day of decision outcomes into a readout table, a PNG and run metadata."""

import json
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from dagster_project.assets.decisions import decision_outcomes_table
from dagster_project.assets.experiments import (
    EXPERIMENT_PARTITIONS,
    EXPERIMENT_READOUT,
    experiment_readout,
)
from dagster_project.resources import DataLakeResource
from serving.decision.experiments import DEFAULT_EXPERIMENTS_PATH, ExperimentAssigner, arms_by_experiment, load_experiments
from serving.decision.identity import user_key

DAY = "2026-10-02"


@dg.asset(partitions_def=EXPERIMENT_PARTITIONS)
def decision_outcomes(context: dg.AssetExecutionContext, lake: DataLakeResource) -> dg.MaterializeResult:
    """Stub of the real asset: one day of decisions of 4,000 users, arms assigned by the shipped config."""
    assigner = ExperimentAssigner(load_experiments(DEFAULT_EXPERIMENTS_PATH))
    rng = np.random.default_rng(3)
    rows = []
    for user_id in range(4000):
        key = user_key(user_id, "readout-test")
        arms = arms_by_experiment(assigner.assign(key, "home"))
        rate = 0.3 if arms.get("policy_holdout") == "policy" else 0.1
        for _ in range(int(rng.integers(1, 4))):
            converted = int(rng.random() < rate)
            rows.append({
                "user_key": key, "experiments": arms, "converted": converted,
                "revenue": converted * 20.0, "ts": pd.Timestamp(f"{context.partition_key} 10:00", tz="UTC"),
            })
    frame = pd.DataFrame(rows)
    frame["experiments"] = frame["experiments"].map(json.dumps)  # a JSON string, as the decision log stores it
    path = lake.write(decision_outcomes_table(context.partition_key), frame)
    return dg.MaterializeResult(metadata={"path": str(path)})


@pytest.fixture
def lake(tmp_path) -> DataLakeResource:
    return DataLakeResource(root=str(tmp_path / "data"))


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """An instance on which DAY holds decisions: the drain added it to the decision_days partitions."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENT_PARTITIONS.name, [DAY])
    return instance


def test_readout_partitions_are_the_days_that_hold_decisions(instance):
    assert EXPERIMENT_PARTITIONS.name == "decision_days"
    assert EXPERIMENT_PARTITIONS.get_partition_keys(dynamic_partitions_store=instance) == [DAY]
    with pytest.raises(dg.DagsterUnknownPartitionError):
        dg.materialize([decision_outcomes, experiment_readout], resources={"lake": DataLakeResource(root="/nonexistent")},
                       partition_key="2026-10-03", instance=instance)


def test_readout_of_one_day_writes_table_plot_and_metadata(lake, instance):
    result = dg.materialize([decision_outcomes, experiment_readout], resources={"lake": lake}, partition_key=DAY,
                            instance=instance)
    assert result.success
    (event,) = result.asset_materializations_for_node("experiment_readout")
    assert event.partition == DAY
    metadata = event.metadata
    readout = pd.read_parquet(metadata["path"].value)
    assert metadata["path"].value == str(lake.path(EXPERIMENT_READOUT.format(day=DAY)))
    assert list(readout["experiment"]) == ["policy_holdout"] * 2 and list(readout["arm"]) == ["holdout", "policy"]
    # ~10% of 4,000 users are in the experiment, split 50/50
    assert 300 < metadata["users"].value == readout["n_users"].sum() < 500
    policy = readout.set_index("arm").loc["policy"]
    assert policy["revenue_ci_low"] > 0 and policy["control_arm"] == "holdout"
    assert re.search(r"\| policy_holdout +\| policy +\| +\d+ \|", metadata["readout"].value)
    with open(metadata["plot_file"].value, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_readout_fails_naming_the_missing_upstream_partition(lake, instance):
    with pytest.raises(FileNotFoundError, match=r"decision_outcomes/date=2026-10-02\.parquet does not exist; materialize the asset"):
        dg.materialize([experiment_readout], resources={"lake": lake}, partition_key=DAY, instance=instance)


def test_readout_refuses_an_invalid_experiments_file(lake, tmp_path, instance):
    bad = tmp_path / "experiments.yaml"
    bad.write_text("layers: [{name: l, experiments: [{name: e, buckets: [0, 10], arms: []}]}]\n")
    config = {"ops": {"experiment_readout": {"config": {"experiments_path": str(bad)}}}}
    with pytest.raises(ValueError, match=r"experiments\.yaml: invalid experiments config"):
        dg.materialize(
            [decision_outcomes, experiment_readout], resources={"lake": lake}, partition_key=DAY, run_config=config,
            instance=instance,
        )
