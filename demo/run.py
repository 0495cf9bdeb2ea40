"""The demo: run the whole Dagster graph, start the decision service, send traffic and the shop's purchases, read the
decision log out in Dagster, score the decisions against the ground truth, write a summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import redis

from dagster_project.assets.training import TrainingSetConfig
from dagster_project.definitions import build_definitions
from dagster_project.partitions import shop_days
from dagster_project.resources import build_resources
from demo.evaluate import incremental_value
from demo.readout import (
    DayReadout, clear_days, post_outcomes, read_out_days, sampled_outcomes, served_days, window_end,
)
from demo.traffic import Served, send_decisions, wait_healthy
from infra.launch import project_environment
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from serving.store.decision_log import DECISION_FORMAT, read_partitions
from simulator import ShopConfig, build_shop

# The ground truth is scored on the same attribution window the training labels use.
ATTRIBUTION_WINDOW_HOURS = TrainingSetConfig().attribution_window_hours


def _stage(name: str) -> float:
    print(f"\n=== {name}", flush=True)
    return time.perf_counter()


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Metadata of every materialized asset, by asset name, as plain values."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


PROMOTION_CHECK = "challenger_beats_champion"
HOLDOUT_EXPERIMENT, HOLDOUT_ARM = "policy_holdout", "holdout"  # serving/conf/experiments.yaml


def run_pipeline(
    settings: HyperliftSettings, redis_url: str, shop: ShopConfig, tags: dict[str, str] | None = None,
) -> tuple[dict[str, dict], dict]:
    """Run hyperlift_job in this process on a persistent Dagster instance (runs show up in `make dagster`).

    Returns the assets' metadata and the promotion gate's verdict. A refused promotion is an outcome, not an
    error: the service then keeps the current champion (or, with none yet, answers with the fallback). Any other
    failed step or check stops the demo.
    """
    defs = build_definitions(build_resources(settings, redis_url, shop))
    result = defs.resolve_job_def("hyperlift_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        tags=tags or shop_days(shop),  # every arrival day of the data (the shop's period), in one run
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    failed = sorted(name for name, e in checks.items() if not e.passed and name != PROMOTION_CHECK)
    if failed:
        raise RuntimeError(f"asset checks failed: {failed}; see the Dagster log above")
    gate = checks.get(PROMOTION_CHECK)
    if gate is None:
        raise RuntimeError("hyperlift_job failed before the promotion gate; see the Dagster log above")
    reasons = list(gate.metadata["reasons"].value)
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    if failed_steps - {f"uplift_challenger_{PROMOTION_CHECK}"}:
        raise RuntimeError(f"hyperlift_job steps failed: {sorted(failed_steps)}; see the Dagster log above")
    if not gate.passed:
        print(f"\n  promotion refused, the champion stays: {reasons}", flush=True)
    return _materializations(result), {"promoted": gate.passed, "reasons": reasons}


def serve_and_query(
    env: dict[str, str], user_ids: np.ndarray, day: datetime, outcomes: Callable[[Served], pd.DataFrame] | None = None,
    clock_after: datetime | None = None,
) -> tuple[Served, int]:
    """Start uvicorn with the champion, send one decision per user id through the simulated `day`, then (given
    `outcomes`) move its clock to `clock_after` and POST the outcomes of the served decisions; stop it. Returns what
    was served and the number of outcomes posted."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", *UVICORN_OPTIONS],
        # The demo serves its own simulated shop on loopback: dev mode (no API keys) unless the caller says otherwise.
        # Its 3,000 decisions are in the decision log; one JSON line each on the terminal would bury the progress
        # lines, and the library deprecation notices of the worker's imports say nothing to a demo's reader.
        env={"HYPERLIFT_SERVING_MODE": "dev", "HYPERLIFT_SERVING_LOG_DECISIONS": "false",
             "PYTHONWARNINGS": "ignore::DeprecationWarning", **os.environ, **env},
    )
    try:
        health = wait_healthy(base_url)
        print(f"  service up at {base_url}: {health}", flush=True)
        served = send_decisions(base_url, user_ids, day=day)
        if outcomes is None or clock_after is None:
            return served, 0
        started = time.perf_counter()
        posted = post_outcomes(base_url, outcomes(served), clock_after)
        print(f"  outcomes: {posted} purchases posted to /v1/outcomes, clock moved to {clock_after.isoformat()} "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
        return served, posted
    finally:
        server.terminate()
        server.wait(timeout=30)


def clear_policy_counters(client: redis.Redis) -> int:
    """Delete frequency-cap and budget counters: each demo run starts a fresh shop day for the same users."""
    keys = [k for pattern in ("hyperlift:caps:*", "hyperlift:budget:*") for k in client.scan_iter(pattern, count=1000)]
    return client.delete(*keys) if keys else 0


def main() -> int:
    """Run the demo; prints the summary and writes reports/demo_summary.json."""
    settings = HyperliftSettings()
    shop_config = ShopConfig.from_env()
    n_decisions = int(os.environ.get("HYPERLIFT_DEMO_DECISIONS", "3000"))
    timings: dict[str, float] = {}
    with project_environment(settings) as env:
        os.environ.update(env)  # this process is the top-level program: dagster/mlflow read these
        print(f"Hyperlift demo: {shop_config.n_users} users × {shop_config.n_days} days, REDIS_URL={env['REDIS_URL']}")

        started = _stage("1/4 Dagster: hyperlift_job (ingest → validate → features → Feast/Redis → train → register)")
        assets, promotion = run_pipeline(settings, env["REDIS_URL"], shop_config)
        timings["pipeline_s"] = time.perf_counter() - started

        started = _stage(f"2/4 Decision service: {n_decisions} requests, then the shop's purchases as outcomes")
        rng = np.random.default_rng(shop_config.seed + 1)
        known = rng.choice(shop_config.n_users, size=n_decisions, replace=True)
        unknown = np.arange(10**9, 10**9 + max(1, n_decisions // 100))  # a few never-seen users: cold start
        cleared = clear_policy_counters(redis.Redis.from_url(env["REDIS_URL"]))
        print(f"  cleared {cleared} cap/budget counters of earlier demo runs (the demo replays the same users)")
        # The service runs on a simulated clock: the day after the shop's period, when its features are fresh.
        clock = {"HYPERLIFT_SERVING_NOW": shop_config.end.isoformat()}
        settings.demo_clock_path.write_text(shop_config.end.isoformat() + "\n")  # `make serve` starts there too
        day = [shop_config.end.date().isoformat()]  # the requests are spread over this one simulated day
        cleared = clear_days(settings.data_dir, day, ATTRIBUTION_WINDOW_HOURS)
        if cleared:
            print(f"  cleared {cleared} decision-log folders of {day[0]} and its outcome days left by earlier demo "
                  "runs (each run reads out its own decisions)")
        shop = build_shop(shop_config)
        n_known = len(known)
        closes = window_end(day, ATTRIBUTION_WINDOW_HOURS)  # every attribution window of the day has closed
        served, _ = serve_and_query({**env, **clock}, np.concatenate([known, unknown]), shop_config.end,
                                    lambda s: sampled_outcomes(shop, s, n_known, closes), closes)
        timings["serving_s"] = time.perf_counter() - started

        started = _stage("3/4 Dagster: decision_log_job (drain) → decision_outcomes → experiment_readout per day")
        readouts = read_out_days(build_definitions(build_resources(settings, env["REDIS_URL"], shop_config)),
                                 dg.DagsterInstance.get(), served_days(served), closes)
        for readout in readouts:
            print(f"  {readout.line()}", flush=True)
        timings["readout_s"] = time.perf_counter() - started
        log_path = settings.data_dir / "decisions"  # the lake folder the decision_trace asset drains into
        decisions = read_partitions(log_path, served_days(served), DECISION_FORMAT)
        decisions = decisions[decisions["decision_id"].isin(set(served.decision_ids))]

        started = _stage("4/4 Ground truth: expected incremental value of the served decisions")
        # The policy_holdout experiment serves the neutral action to its holdout arm on purpose: the policy's
        # value is measured on everyone else, the holdout's separately.
        in_holdout = np.array([arms.get(HOLDOUT_EXPERIMENT) == HOLDOUT_ARM for arms in served.arms[:n_known]])
        actions = np.asarray(served.actions[:n_known], dtype=object)
        value = incremental_value(shop, known[~in_holdout], list(actions[~in_holdout]), ATTRIBUTION_WINDOW_HOURS)
        timings["evaluation_s"] = time.perf_counter() - started

    summary = _summary(shop_config, assets, promotion, served, decisions, value, timings, log_path, readouts)
    report = settings.reports_dir / "demo_summary.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(summary, indent=2))
    print("\n" + json.dumps(summary, indent=2))
    print(f"\nwrote {report}")
    return 0


def _summary(
    shop: ShopConfig,
    assets: dict[str, dict],
    promotion: dict,
    served: Served,
    decisions: pd.DataFrame,
    value: dict[str, dict[str, float]],
    timings: dict[str, float],
    log_path: Path,
    readouts: list[DayReadout],
) -> dict:
    """The demo summary: events, materialization, model, decisions and their value against the ground truth."""
    validated = assets["validated_events"]
    model = assets["uplift_challenger"]  # the model this run trained; `served_by` is whichever was champion
    fallbacks = pd.Series([f for f in served.fallbacks if f]).value_counts().to_dict()
    server_ms = decisions["latency_ms"].map(lambda text: json.loads(text)["total"]).to_numpy()
    arms = pd.Series([f"{e}:{a}" for served_arms in served.arms for e, a in served_arms.items()]).value_counts()
    return {
        "shop": {"users": shop.n_users, "days": shop.n_days, "items": shop.n_items, "seed": shop.seed},
        "events": {
            "in": validated["events_in"],
            "accepted": validated["accepted"],
            "quarantined": validated["quarantined"],
            "quarantined_by_rule": validated["quarantined_by_rule"],
        },
        "users_materialized": assets["online_features"]["users_materialized"],
        "training_rows": assets["training_set"]["rows"],
        "challenger": {
            "name": model["model"],
            "version": model["version"],
            "holdout_qini": round(model["holdout_qini_mean"], 4),
            "holdout_incremental_net_value_snips": round(model["metric/holdout_incremental_net_value_snips"], 4),
            "holdout_calibration_slope": round(model["metric/holdout_calibration_slope"], 3),
            "promotion": promotion,
        },
        "served_by": {"model": served.model, "feature_service": served.feature_service},
        "decisions": {
            "served": len(served.actions),
            "fallbacks": {str(k): int(v) for k, v in fallbacks.items()},
            "chosen": pd.Series(served.actions).value_counts().to_dict(),
            "experiment_arms": {str(k): int(v) for k, v in arms.items()},
            "latency_ms": {
                "service_p50": round(float(np.percentile(server_ms, 50)), 3),
                "service_p99": round(float(np.percentile(server_ms, 99)), 3),
                "round_trip_p50": round(float(np.percentile(served.round_trip_ms, 50)), 3),
                "round_trip_p99": round(float(np.percentile(served.round_trip_ms, 99)), 3),
            },
            "log": str(log_path),
        },
        "readout": [{"day": r.day, "decisions": r.decisions, "outcomes_joined": r.outcomes_joined,
                     "unmatched_outcomes": r.unmatched, "status": r.status, "headline": r.headline}
                    for r in readouts],
        "expected_incremental_revenue_per_user": {k: round(v, 4) for k, v in value["revenue"].items()},
        "expected_incremental_net_value_per_user": {k: round(v, 4) for k, v in value["net_value"].items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
