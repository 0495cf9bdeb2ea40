"""`make loop`: rounds of serve → outcomes → drain → retrain → off-policy gate → promote → hot swap, on a simulated
shop that answers the real decision service, each round measured against the simulator's ground truth.

1. **Bootstrap.** A fresh home (`$HYPERLIFT_HOME/loop`) and a simulated shop's history (`--history-days`) run
   through `hyperlift_job` (contracts, features, Feast/Redis, training set, challenger). That first model becomes
   the champion: promoted by the job's gate, or by hand here when the gate refuses it on a small shop (said so).
2. **Serving.** One uvicorn worker on a simulated clock starting at the shop's end, checking its model alias every
   second (`HYPERLIFT_SERVING_MODEL_REFRESH_S=1`).
3. **Each round = one simulated day.** `simulator.closed_loop.ClosedLoopDriver.run_day`: sessions ask the service,
   the shop answers the action served, purchases reach `/v1/outcomes` and events `/v1/events` at their own times.
   At midnight every user's online row is rolled forward from its tiles (`StreamUpdater.refresh`: what the nightly
   batch does for users without events, whose rows would otherwise grow stale past their freshness contract).
   Then, in this process on the persistent Dagster instance (the runs show in `make dagster`): `decision_log_job`
   drains the streams; `retrain_job` labels the log as of the clock (delay-corrected), holds the day just served
   out as the gate window, trains a challenger on the earlier log + history, judges it off-policy on the window
   (`challenger_beats_champion_on_log`) and promotes it if it passed; the service hot-swaps it before the next day.
4. **Ground truth** (`demo.loop_truth`): the served decisions' true incremental net value per decision with a
   95 % interval, next to no_action, random promotion, the best single action, the response-model baseline and the
   champion's greedy policy (chosen the same constrained way), the feature-limited oracle, the constrained oracle
   and the unconstrained one; and the gate's off-policy estimate of the challenger against its true value on the
   gate window (inside the interval?).

Writes `reports/loop_summary.json` and `reports/loop_summary.png` (also logged to MLflow, experiment
`hyperlift/loop`, and reported to Dagster as the asset `loop_summary`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import mlflow
import numpy as np
import pandas as pd
import redis
import yaml

from dagster_project.assets.models import UpliftModelConfig
from dagster_project.assets.retraining import GATE_WINDOW, LOG_TRAINING_SET
from dagster_project.definitions import build_definitions
from dagster_project.resources import build_resources
from demo.loop_plot import plot_rounds
from demo.loop_truth import (
    Value,
    best_single_action,
    cross_fitted_truth_model,
    incremental_truth,
    response_model_scores,
    round_values,
)
from demo.run import run_pipeline
from demo.traffic import wait_healthy
from feature_repo.event_time import Lateness
from feature_repo.online_writer import OnlineWriter
from feature_repo.pseudonyms import pseudonymize_ids
from feature_repo.store import feature_store
from feature_repo.stream import StreamUpdater
from feature_repo.transforms import REGIONS
from infra.launch import project_environment
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from serving.decision.surfaces import DEFAULT_CONFIG_DIR, load_policy_config
from serving.policy.exploration import Exploration
from serving.store.decision_log import DECISION_FORMAT, read_partitions
from simulator import ClosedLoopDriver, ServiceClient, build_shop
from simulator.actions import ACTION_IDS, ACTION_INDEX, CONTROL_ACTION, actions_frame
from simulator.config import SHOPS, shop_config
from simulator.response import expected_net_value
from training.lifecycle import alias_version, promote
from training.live_gate import candidate_scores
from training.logged_training import logged_features
from training.ope import action_dist_from_scores
from training.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS
from training.retrain import usable_rows

SURFACE = "home"
MODEL_NAME = "hyperlift_uplift"
GATE_CHECK = "challenger_beats_champion_on_log"
# The base-learner settings of the response-model baseline and the feature-limited oracle: the champion's (the
# pipeline's default learner, `UpliftModelConfig`), frozen here before the first round.
BASE_LEARNER = UpliftModelConfig().learner().tree_params()


def _stage(text: str) -> float:
    print(f"\n=== {text}", flush=True)
    return time.perf_counter()


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("HYPERLIFT_LOOP_ROUNDS", "4")))
    parser.add_argument("--users", type=int, default=int(os.environ.get("HYPERLIFT_LOOP_USERS", "10000")))
    parser.add_argument("--history-days", type=int, default=int(os.environ.get("HYPERLIFT_LOOP_HISTORY_DAYS", "21")))
    parser.add_argument("--shop", choices=sorted(SHOPS), default=os.environ.get("HYPERLIFT_LOOP_SHOP", "default"))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("HYPERLIFT_LOOP_SEED", "7")))
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--epsilon", type=float, default=None,
                     help="serve the surface with this epsilon-greedy rate instead of its configured exploration "
                     "(a copy of serving/conf in the loop's home; the gate and the oracle use it too)")
    how.add_argument("--exploration", type=exploration_spec, default=None, metavar="METHOD:ARGS",
                     help="serve the surface with this exploration instead of its configured one: "
                     "epsilon_greedy:EPSILON or softmax:TEMPERATURE[:FLOOR] (e.g. softmax:0.1:0.005)")
    args = parser.parse_args(argv)
    if args.epsilon is not None:
        args.exploration = {"method": "epsilon_greedy", "epsilon": args.epsilon}
    return args


def exploration_spec(text: str) -> dict:
    """`epsilon_greedy:0.2` or `softmax:0.1[:0.005]` as a surface's `exploration` mapping (checked by Exploration)."""
    method, _, rest = text.partition(":")
    numbers = rest.split(":") if rest else []
    try:
        values = [float(x) for x in numbers]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the numbers after the method must be decimals") from None
    if method == "epsilon_greedy" and len(values) == 1:
        spec = {"method": method, "epsilon": values[0]}
    elif method == "softmax" and len(values) in (1, 2):
        spec = {"method": method, "temperature": values[0], **({"floor": values[1]} if len(values) == 2 else {})}
    else:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give epsilon_greedy:EPSILON or softmax:TEMPERATURE[:FLOOR], e.g. softmax:0.1:0.005")
    try:
        Exploration(**spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return spec


def _policy_folder(home: Path, exploration: dict | None) -> Path:
    """The service's policy folder: serving/conf, or a copy in the loop's home whose surface explores as given."""
    if exploration is None:
        return DEFAULT_CONFIG_DIR
    folder = home / "conf"
    shutil.copytree(DEFAULT_CONFIG_DIR, folder)
    path = folder / "surfaces" / f"{SURFACE}.yaml"
    surface = yaml.safe_load(path.read_text())
    surface["exploration"] = exploration
    path.write_text(yaml.safe_dump(surface, sort_keys=False))
    return folder


def _job(defs: dg.Definitions, name: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(name).execute_in_process(
        instance=dg.DagsterInstance.get(), run_config=run_config or {}, raise_on_error=False
    )


def _wait_for_version(base_url: str, version: str, timeout_s: float = 60.0) -> float:
    """Seconds until /healthz shows `version` serving the surface's model (the hot swap)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        models = httpx.get(f"{base_url}/healthz", timeout=5.0).json()["models"]
        if (models.get(f"{MODEL_NAME}@{CHAMPION_ALIAS}") or {}).get("version") == version:
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"the service did not swap to v{version} within {timeout_s} s")


def _model(settings: HyperliftSettings, version: str):
    mlflow.set_tracking_uri(settings.mlflow_uri)
    return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}").unwrap_python_model()


def _score_matrix(model, X: np.ndarray) -> np.ndarray:
    """The model's serving scores (uplift − cost, 0 for the neutral action) for every action, ACTION_IDS order."""
    uplift = model.uplift(X.astype(np.float32))
    scores = np.zeros((len(X), len(ACTION_IDS)))
    for j, action in enumerate(model.treatments):
        scores[:, ACTION_INDEX[action]] = uplift[:, j].astype(float) - model.action_costs.get(action, 0.0)
    return scores


def _round_truth(settings, shop, records: pd.DataFrame, users: pd.Series, feature_names: list[str],
                 best_single: str, exploration: Exploration, budgets: list[dict]) -> tuple[dict, int]:
    """Every policy's true value on the round's decisions that logged features (see demo.loop_truth)."""
    rows = [(r.decision_id, logged_features(r.features, feature_names)) for r in records.itertuples()
            if isinstance(r.features, str)]
    rows = [(d, x) for d, x in rows if x is not None]
    ids = [d for d, _ in rows]
    X = np.vstack([x for _, x in rows])
    chosen = records.set_index("decision_id").loc[ids]
    user_ids = users.loc[ids].to_numpy(dtype=np.int64)
    train = pd.read_parquet(settings.data_dir / LOG_TRAINING_SET)
    served_model = _model(settings, str(chosen["model_version"].iloc[0]))
    learned = {
        "policy_greedy": _score_matrix(served_model, X),
        "response_model": response_model_scores(train, feature_names, X, **BASE_LEARNER),
        "feature_limited_oracle": cross_fitted_truth_model(X, incremental_truth(shop, user_ids), **BASE_LEARNER),
    }
    values = round_values(shop, user_ids, [c[0] for c in chosen["chosen"]], [list(c) for c in chosen["candidates"]],
                          exploration, budgets, best_single, learned)
    return values, len(ids)


def _ope_against_truth(settings, shop, users: pd.Series, check: dg.AssetCheckEvaluation, exploration, bonus) -> dict:
    """The gate's DR and SNIPW estimates of the challenger on its window, next to the challenger's true value there."""
    meta = {k: v.value for k, v in check.metadata.items()}
    if "challenger_dr" not in meta:
        return {"reasons": meta.get("reasons")}
    window = pd.read_parquet(settings.data_dir / GATE_WINDOW)
    challenger = _model(settings, str(meta["challenger_version"]))
    rows = usable_rows(window, challenger.feature_names)
    dist = action_dist_from_scores(rows.candidates, candidate_scores(challenger, rows, bonus), ACTION_IDS, exploration)
    net = expected_net_value(shop, users.loc[list(rows.decision_id)].to_numpy(dtype=np.int64))
    truth = float((dist[:, :, 0] * net).sum(axis=1).mean())
    out = {"challenger_version": meta["challenger_version"], "true_value": round(truth, 4), "rounds": len(rows)}
    for name in ("dr", "snipw"):
        lower, upper = meta[f"challenger_{name}_lower"], meta[f"challenger_{name}_upper"]
        out[name] = {"estimate": round(meta[f"challenger_{name}"], 4), "lower": round(lower, 4),
                     "upper": round(upper, 4), "covers_truth": bool(lower <= truth <= upper)}
    out["ess"] = round(meta["challenger_ess"], 1)
    out["paired_difference_dr"] = {"estimate": round(meta["difference_dr"], 4),
                                   "lower": round(meta["difference_dr_lower"], 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the loop; prints each round and writes reports/loop_summary.json and .png. The environment it exports for
    its children (home, stores, the embedded Redis's URL) is put back as it was when it returns. One run per process:
    MLflow and Dagster keep handles on the SQLite stores that the next run's fresh home deletes."""
    saved = dict(os.environ)
    try:
        return _run(_parse(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(args: argparse.Namespace) -> int:
    """The loop of the module docstring."""
    base = HyperliftSettings()
    home = base.home / "loop"
    shutil.rmtree(home, ignore_errors=True)  # every loop starts from a fresh shop, registry and log
    settings = HyperliftSettings(home=home, reports_dir=base.reports_dir)
    config = shop_config(args.shop, n_users=args.users, n_days=args.history_days, seed=args.seed)
    shop = build_shop(config)
    config_dir = _policy_folder(home, args.exploration)
    policy = load_policy_config(config_dir, REGIONS)
    surface = policy.surfaces[SURFACE]
    exploration = surface.exploration.build()
    budgets = [{"daily_budget": b.daily_budget, "costs": b.costs} for b in surface.budgets]
    best_single = best_single_action(shop)
    summary: dict = {
        "shop": {"name": args.shop, "users": config.n_users, "history_days": config.n_days, "seed": config.seed,
                 "config_hash": _hash(repr(config)), "surfaces_hash": policy.version,
                 "catalogue_hash": _hash(actions_frame().to_csv(index=False))},
        "surface": SURFACE, "exploration": {"method": exploration.method, "epsilon": exploration.epsilon,
                                          "temperature": exploration.temperature, "floor": exploration.floor},
        "best_single_action": best_single, "rounds": [],
    }
    started_all = time.perf_counter()
    with project_environment(settings) as env:
        os.environ.update(env)
        os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_uri
        defs = build_definitions(build_resources(settings, env["REDIS_URL"], config))
        store = feature_store(env["REDIS_URL"], settings)
        started = _stage(f"bootstrap: hyperlift_job on {config.n_users} users × {config.n_days} days ({args.shop})")
        _, promotion = run_pipeline(settings, env["REDIS_URL"], config)
        if alias_version(settings.mlflow_uri, MODEL_NAME, CHAMPION_ALIAS) is None:
            version = alias_version(settings.mlflow_uri, MODEL_NAME, CHALLENGER_ALIAS)
            promote(settings.mlflow_uri, MODEL_NAME, version)
            print(f"  the batch gate refused v{version} ({promotion['reasons']}); promoted by hand as the loop's "
                  "starting champion", flush=True)
        summary["bootstrap"] = {"promotion": promotion, "seconds": round(time.perf_counter() - started, 1)}

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", *UVICORN_OPTIONS],
            env={**os.environ, "HYPERLIFT_SERVING_NOW": config.end.isoformat(), "HYPERLIFT_SERVING_MODEL_REFRESH_S": "1",
                 "HYPERLIFT_SERVING_CONFIG_DIR": str(config_dir),
                 "HYPERLIFT_SERVING_EXPERIMENTS_FILE": str(config_dir / "experiments.yaml"),
                 "HYPERLIFT_SERVING_SEED": str(args.seed), "HYPERLIFT_SERVING_LOG_DECISIONS": "false",
                 "HYPERLIFT_SERVING_MODE": "dev"},  # no API keys: a local service on 127.0.0.1 (docs/security.md)
        )
        try:
            wait_healthy(base_url)
            client = ServiceClient(httpx.Client(base_url=base_url, timeout=10.0),
                                   admin_token=os.environ.get("HYPERLIFT_SERVING_ADMIN_TOKEN"))
            driver = ClosedLoopDriver(shop, client, surface=SURFACE, seed=args.seed)
            users: dict[str, int] = {}
            midnight = [config.end]  # the clock the nightly roll-forward reads, moved each round
            nightly = StreamUpdater(OnlineWriter(store), redis.Redis.from_url(env["REDIS_URL"]), Lateness(),
                                    lambda: midnight[0])
            feature_names = _model(settings, alias_version(settings.mlflow_uri, MODEL_NAME, CHAMPION_ALIAS)).feature_names
            for r in range(1, args.rounds + 1):
                day = (config.end + timedelta(days=r - 1)).date()
                now = datetime.combine(day + timedelta(days=1), datetime.min.time(), config.end.tzinfo)
                started = _stage(f"round {r}/{args.rounds}: {day}")
                log = driver.run_day(day)
                users.update(zip(log.decisions["decision_id"], log.decisions["user_id"].astype(int)))
                # The nightly batch's job for users without events: roll every online row forward to midnight.
                midnight[0] = now
                rolled = nightly.refresh(pseudonymize_ids(shop.users["user_id"], nightly.pseudonymizer))
                print(f"  served {len(log.decisions)} decisions {log.summary()}; {rolled} online rows rolled to "
                      f"{now.isoformat()}", flush=True)
                # On the round's clock the day just served is over: the drain adds it to the decision_days partitions.
                drain_clock = {"ops": {"decision_trace": {"config": {"now": now.isoformat()}}}}
                drained = _job(defs, "decision_log_job", drain_clock)
                if not drained.success:
                    raise RuntimeError("decision_log_job failed; see the Dagster log above")
                retrain = _job(defs, "retrain_job", {"ops": {
                    "logged_training_set": {"config": {"now": now.isoformat()}},
                    f"log_challenger_{GATE_CHECK}": {"config": {"surface": SURFACE, "config_dir": str(config_dir)}},
                }})
                checks = {e.check_name: e for e in retrain.get_asset_check_evaluations()}
                if GATE_CHECK not in checks:
                    raise RuntimeError("retrain_job failed before the gate; see the Dagster log above")
                gate = checks[GATE_CHECK]
                reasons = list(gate.metadata["reasons"].value)
                champion = alias_version(settings.mlflow_uri, MODEL_NAME, CHAMPION_ALIAS)
                swap_s = _wait_for_version(base_url, champion) if gate.passed else None
                print(f"  gate: {'promoted v' + champion if gate.passed else 'refused: ' + '; '.join(reasons)}",
                      flush=True)
                user_series = pd.Series(users)
                records = read_partitions(settings.data_dir / "decisions", record_format=DECISION_FORMAT)
                records = records.loc[records["decision_id"].isin(set(log.decisions["decision_id"]))]
                values, n_eval = _round_truth(settings, shop, records, user_series, feature_names, best_single,
                                              exploration, budgets)
                ope = _ope_against_truth(settings, shop, user_series, gate, exploration, surface.uncertainty_bonus)
                summary["rounds"].append({
                    "round": r, "day": day.isoformat(), "decisions": len(log.decisions), "evaluated_decisions": n_eval,
                    "served_by": sorted(set(records["model_version"].dropna())),
                    "value_per_user": {k: v.as_dict() for k, v in values.items()},
                    "gate": {"passed": gate.passed, "reasons": reasons, "champion_after": champion,
                             "swap_seconds": None if swap_s is None else round(swap_s, 2)},
                    "off_policy": ope, "seconds": round(time.perf_counter() - started, 1),
                })
                policy_value, oracle = values["policy"], values["oracle"]
                print(f"  true value per decision: policy {policy_value.mean:.3f} [{policy_value.lower:.3f}, "
                      f"{policy_value.upper:.3f}], response model {values['response_model'].mean:.3f}, oracle "
                      f"{oracle.mean:.3f} ({policy_value.mean / oracle.mean:.0%} of it); {time.perf_counter() - started:.0f} s",
                      flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    summary["seconds"] = round(time.perf_counter() - started_all, 1)
    summary["final"] = _final(summary["rounds"])
    _write(settings, summary)
    return 0


def _final(rounds: list[dict]) -> dict:
    """The targets' figures on the last round, and coverage of the off-policy intervals over the rounds."""
    if not rounds:
        return {}
    last = rounds[-1]["value_per_user"]
    ope = [r["off_policy"] for r in rounds if "dr" in r["off_policy"]]
    return {
        "share_of_constrained_oracle": round(last["policy"]["mean"] / last["oracle"]["mean"], 3),
        "share_of_unconstrained_oracle": round(last["policy"]["mean"] / last["oracle_unconstrained"]["mean"], 3),
        "vs_response_model": round(last["policy"]["mean"] / last["response_model"]["mean"], 3)
        if last["response_model"]["mean"] > 0 else None,
        "dr_interval_coverage": f"{sum(o['dr']['covers_truth'] for o in ope)}/{len(ope)}",
        "never_below_previous_lower_bound": all(
            rounds[i]["value_per_user"]["policy"]["mean"] >= rounds[i - 1]["value_per_user"]["policy"]["lower"]
            for i in range(1, len(rounds))
        ),
    }


def _write(settings: HyperliftSettings, summary: dict) -> None:
    reports = settings.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    path, png = reports / "loop_summary.json", reports / "loop_summary.png"
    path.write_text(json.dumps(summary, indent=2))
    plot_rounds(summary, png)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_experiment("hyperlift/loop")
    with mlflow.start_run(run_name=f"loop {summary['shop']['name']} × {len(summary['rounds'])} rounds"):
        for r in summary["rounds"]:
            for name, value in r["value_per_user"].items():
                mlflow.log_metric(f"value_{name}", value["mean"], step=r["round"])
        mlflow.log_artifact(str(path))
        mlflow.log_artifact(str(png))
    dg.DagsterInstance.get().report_runless_asset_event(dg.AssetMaterialization(
        asset_key="loop_summary",
        metadata={"plot": dg.MetadataValue.path(str(png)), "summary": dg.MetadataValue.json(summary["final"])},
    ))
    print("\n" + json.dumps(summary["final"], indent=2))
    print(f"\nwrote {path} and {png}")


if __name__ == "__main__":
    raise SystemExit(main())
