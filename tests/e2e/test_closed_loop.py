"""One short closed loop end to end: `make loop`'s code on a tiny shop, two simulated days, real service over HTTP."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from mlflow import MlflowClient

from demo import loop
from infra.settings import HyperliftSettings
from serving.store.decision_log import DECISION_FORMAT, read_partitions

pytestmark = pytest.mark.e2e

POLICIES = {"policy", "no_action", "random_promotion", "best_single_action", "oracle_unconstrained", "oracle",
            "policy_greedy", "response_model", "feature_limited_oracle"}


@pytest.fixture(scope="module")
def loop_summary(redis_databases, tmp_path_factory):
    """Run two rounds on 1,500 users × 10 days of history (enough rows per arm to fit); (summary, settings)."""
    reports = tmp_path_factory.mktemp("loop-reports")
    saved = dict(os.environ)  # the loop exports its home, stores and Redis for its children, as a top-level program
    try:
        os.environ.update({"REDIS_URL": redis_databases.fresh(), "HYPERLIFT_REPORTS_DIR": str(reports)})
        settings = HyperliftSettings(home=HyperliftSettings().home / "loop", reports_dir=reports)
        assert loop.main(["--rounds", "2", "--users", "1500", "--history-days", "10", "--seed", "5"]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return json.loads((reports / "loop_summary.json").read_text()), settings


def test_every_round_serves_logs_retrains_judges_and_is_measured(loop_summary):
    summary, settings = loop_summary
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["day"] for r in rounds] == ["2026-10-11", "2026-10-12"]
    records = read_partitions(settings.data_dir / "decisions", record_format=DECISION_FORMAT)
    days = records["ts"].map(lambda ts: np.datetime64(int(ts), "s").astype("datetime64[D]").astype(str))
    for r in rounds:
        assert r["decisions"] == int((days == r["day"]).sum()) > 0  # every served decision reached the lake
        assert 0 < r["evaluated_decisions"] <= r["decisions"]
        values = r["value_per_user"]
        assert set(values) == POLICIES
        assert all(v["lower"] <= v["mean"] <= v["upper"] for v in values.values())
        assert values["no_action"] == {"mean": 0.0, "lower": 0.0, "upper": 0.0}
        # the unconstrained oracle bounds the constrained one decision by decision
        assert values["oracle_unconstrained"]["mean"] >= values["oracle"]["mean"]
        gate = r["gate"]
        assert gate["passed"] == (gate["reasons"] == [])
        if not gate["passed"]:
            assert r["gate"]["champion_after"] == "1"  # refused: the bootstrap champion keeps serving
        ope = r["off_policy"]
        if "dr" in ope:
            assert ope["dr"]["lower"] <= ope["dr"]["estimate"] <= ope["dr"]["upper"]
            assert ope["dr"]["covers_truth"] == (ope["dr"]["lower"] <= ope["true_value"] <= ope["dr"]["upper"])
    assert summary["shop"]["users"] == 1500 and len(summary["shop"]["config_hash"]) == 16
    assert set(summary["final"]) >= {"share_of_constrained_oracle", "dr_interval_coverage"}


def test_the_summary_plot_and_mlflow_run_are_written(loop_summary):
    summary, settings = loop_summary
    png = settings.reports_dir / "loop_summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    client = MlflowClient(settings.mlflow_uri)
    experiment = client.get_experiment_by_name("hyperlift/loop")
    (run,) = client.search_runs([experiment.experiment_id])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"loop_summary.json", "loop_summary.png"}
    history = client.get_metric_history(run.info.run_id, "value_policy")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == [r["value_per_user"]["policy"]["mean"] for r in summary["rounds"]]
