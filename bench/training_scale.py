"""Training time and peak memory at scale, and scoring cost through the registered model as serving loads it.

    .venv/bin/python -m bench.training_scale [--rows 1000000] [--features 50] [--learners t_learner,...]
Each learner is fitted in its own subprocess (so peak RSS is that learner's alone) on synthetic logged data:
`rows` exposures × `features` float features, 8 actions + control, non-uniform logged propensities, zero-inflated
revenue with heterogeneous effects (`--learners ""` skips the fits). Scoring: T- and S-learner are registered in a temporary MLflow store, loaded back
with training.registry.load_alias (serving's path), and timed on batches of 50 rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.learners import LEARNERS
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, load_alias, log_and_register

ACTIONS = ["no_action", *(f"promo_{i}" for i in range(8))]


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Logged exposures with known heterogeneous effects (X, action, revenue, logged propensity)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, features)).astype(np.float32), columns=[f"f{i}" for i in range(features)])
    probs = np.r_[0.3, np.full(8, 0.7 / 8)]
    arm = rng.choice(9, size=rows, p=probs)
    effect = np.where(arm > 0, 0.3 * X.iloc[:, 0].to_numpy() * (arm % 2 * 2 - 1) + 0.1 * arm / 8, 0.0)
    buys = rng.random(rows) < 1 / (1 + np.exp(-(-2.2 + 0.5 * X.iloc[:, 1].to_numpy() + effect)))
    revenue = buys * rng.lognormal(3.0, 0.5, rows)
    return X, np.array(ACTIONS)[arm], revenue, probs[arm]


def fit_one(learner_name: str, rows: int, features: int) -> dict:
    """Fit one learner; report data build time, fit time and the process's peak RSS."""
    started = time.perf_counter()
    X, actions, y, propensity = synthetic(rows, features)
    built = time.perf_counter() - started
    started = time.perf_counter()
    LEARNERS[learner_name]().fit(X, actions, y, propensity=propensity)
    fit_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"learner": learner_name, "rows": rows, "features": features, "data_s": built, "fit_s": fit_s,
            "peak_rss_mb": peak_mb}


def scoring(features: int, learner_name: str, batch: int = 50, repeats: int = 2000) -> dict:
    """µs per candidate row when scoring batches through the model as serving loads it."""
    X, actions, y, propensity = synthetic(200_000, features, seed=1)
    learner = LEARNERS[learner_name]().fit(X, actions, y, propensity=propensity)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        log_and_register(
            model=UpliftModel(learner, list(X.columns), {a: 0.0 for a in ACTIONS[1:]}), tracking_uri=uri,
            experiment="bench", artifact_dir=Path(tmp) / "artifacts", model_name="bench", feature_service="bench_v1",
            params={}, metrics={}, tags={}, input_example=X.head(5), alias=CHAMPION_ALIAS,
        )
        model, _, _ = load_alias(uri, "bench")
    rows = X.to_numpy(np.float32)
    out = {}
    for size in (1, batch):
        for i in range(50):
            model.uplift(rows[i : i + size])
        started = time.perf_counter()
        for i in range(repeats):
            model.uplift(rows[i * size % 100_000 : i * size % 100_000 + size])
        per_call = (time.perf_counter() - started) / repeats
        out[f"batch_{size}_us_per_call"] = per_call * 1e6
        out[f"batch_{size}_us_per_candidate"] = per_call * 1e6 / size
    return out


def main() -> None:
    """Fit each learner in a subprocess, then time scoring; print a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--learners", default=",".join(LEARNERS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(fit_one(args.one, args.rows, args.features)))
        return
    print(f"| learner | rows × features | fit s | peak RSS MB |\n|---|---|---|---|")
    for name in filter(None, args.learners.split(",")):
        done = subprocess.run(
            [sys.executable, "-m", "bench.training_scale", "--one", name, "--rows", str(args.rows),
             "--features", str(args.features)], capture_output=True, text=True, check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['rows']:,} × {r['features']} | {r['fit_s']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)
    print("\n| scoring through the registered model (9 arms) | 1 row µs/call | batch of 50 µs/call | µs per candidate |")
    print("|---|---|---|---|")
    for name in ("t_learner", "s_learner"):
        s = scoring(args.features, name)
        print(f"| {name} | {s['batch_1_us_per_call']:.0f} | {s['batch_50_us_per_call']:.0f} | "
              f"{s['batch_50_us_per_candidate']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
