"""Decision latency under load, side by side in one run with `feast serve` for the same feature service.

Run after `make demo` (reads its registry, Redis dump and champion):
    .venv/bin/python -m bench.decision_load [--rate 500] [--seconds 20] [--workers 1 2] [--repeats 3]

For each uvicorn worker count it starts the decision service on a bench configuration (two surfaces):
  one      the demo champion, 1 candidate action (plus the neutral one) per request
  fifty    a 50-action S-learner (49 promotions + neutral, registered once as `hyperlift_bench50`, trained on
           synthetic outcomes over the same feature service): 50 candidates per request
both with a frequency cap and a campaign budget, so every decision pays the cap/budget read and reservation.
Then, per surface: an open-loop run at --rate requests/s for --seconds (latency from the due time, no
coordinated omission) and a closed-loop run (32 connections) for the maximum throughput; the same two runs
against `feast serve` answering get-online-features for uplift_v1. Per-segment times come from the decision
traces of the open-loop run. Prints a markdown table and writes it into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import redis
import yaml

from bench.loadgen import LoadResult, encode_post, run_load
from bench.decision_latency import start
from bench.report import machine_line
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize_ids
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra import keys
from infra.keys import Pseudonymizer
from infra.launch import project_environment
from simulator import ShopConfig
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from serving.store.decision_log import DECISION_STREAM
from serving.decision.surfaces import DEFAULT_CONFIG_DIR
from training.learners import SLearner
from training.lifecycle import alias_version
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, log_and_register, view_pins_of

VENV_BIN = Path(sys.executable).parent
BENCH_MODEL = "hyperlift_bench50"
FIFTY = [f"bench_promo_{i:02d}" for i in range(49)]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- decision_load:{rate}:begin -->", "<!-- decision_load:{rate}:end -->"
N_USERS = 20_000


def ensure_bench_model(settings: HyperliftSettings) -> None:
    """Register the 50-action model once (synthetic outcomes; only its scoring cost matters here); again when the
    registered version pins no feature views (registered before models pinned them: serving refuses it)."""
    version = alias_version(settings.mlflow_uri, BENCH_MODEL, CHAMPION_ALIAS)
    if version is not None and view_pins_of(settings.mlflow_uri, BENCH_MODEL, version) is not None:
        return
    features = [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((20_000, len(features))), columns=features)
    treatment = np.array(["no_action", *FIFTY])[rng.integers(0, 50, len(X))]
    effect = np.array([0.0, *np.linspace(-0.2, 0.4, 49)])
    arm = pd.Series(treatment).map({a: i for i, a in enumerate(["no_action", *FIFTY])}).to_numpy()
    y = rng.gamma(1.0, 1.0 + effect[arm] * X["mobile_view_share"].to_numpy())
    learner = SLearner(random_state=0).fit(X, treatment, y)
    model = UpliftModel(learner, features, {a: 0.0 for a in FIFTY})
    log_and_register(
        model=model, tracking_uri=settings.mlflow_uri, experiment="bench", artifact_dir=settings.mlflow_artifacts_dir,
        model_name=BENCH_MODEL, feature_service="uplift_v1", params={}, metrics={}, tags={}, input_example=X.head(5),
        alias=CHAMPION_ALIAS,
    )


def write_config(root: Path) -> Path:
    """Bench surfaces, the shipped region bundles, no experiments."""
    limits = {
        "caps": [{"name": "bench_per_day", "window_s": 86_400, "limit": 1_000_000}],
        "deadlines": {"features_ms": 50, "scoring_ms": 50, "total_ms": 200},
    }
    surfaces = {
        "one": {"name": "one", "feature_service": "uplift_v1", **limits,
                "budgets": [{"campaign": "bench_push", "daily_budget": 1e9, "costs": {"push_reminder": 0.02}}]},
        "fifty": {"name": "fifty", "feature_service": "uplift_v1", "model": {"name": BENCH_MODEL, "alias": "champion"},
                  **limits,
                  "budgets": [{"campaign": "bench_fifty", "daily_budget": 1e9, "costs": {FIFTY[-1]: 0.01}}]},
    }
    return write_policy_dir(root, surfaces)


def write_policy_dir(root: Path, surfaces: dict[str, dict]) -> Path:
    """A policy folder for a bench's service: these surfaces, the shipped region bundles, no experiments."""
    (root / "surfaces").mkdir(parents=True)
    for name, body in surfaces.items():
        (root / "surfaces" / f"{name}.yaml").write_text(yaml.safe_dump(body))
    (root / "regions").mkdir()
    for path in (DEFAULT_CONFIG_DIR / "regions").glob("*.yaml"):
        (root / "regions" / path.name).write_text(path.read_text())
    (root / "experiments.yaml").write_text("layers: []\n")
    return root


def decision_requests(port: int, surface: str, users: np.ndarray):
    """Request i: a decision for users[i] on `surface` (the `one` surface names its single candidate)."""
    extra = {"candidates": ["push_reminder"]} if surface == "one" else {}
    encoded = [encode_post(f"127.0.0.1:{port}", "/v1/decisions", {"user_id": int(u), "surface": surface, **extra})
               for u in users]
    return lambda i: encoded[i % len(encoded)]


def feast_requests(port: int, users: np.ndarray, pseudonymizer: Pseudonymizer):
    """Request i: get-online-features of uplift_v1 for users[i] (raw ids, as the decisions carry them), by the
    pseudonym the online store keys the user's rows by (the decision service maps the raw id itself)."""
    encoded = [encode_post(f"127.0.0.1:{port}", "/get-online-features",
                           {"feature_service": "uplift_v1", "entities": {"user_id": [int(u)]}})
               for u in pseudonymize_ids(users, pseudonymizer)]
    return lambda i: encoded[i % len(encoded)]


def traces_since(client: redis.Redis, start_id: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """From the decision traces written after `start_id`: p50/p99 per segment (ms), and the share of decisions
    per fallback reason."""
    time.sleep(1.0)  # the trace writer batches asynchronously
    latencies: dict[str, list[float]] = {}
    fallbacks: dict[str, int] = {}
    n = 0
    low = f"({start_id}"
    while entries := client.xrange(DECISION_STREAM, min=low, max="+", count=10_000):
        for _, fields in entries:
            record = json.loads(fields[b"record"])
            n += 1
            if record["fallback"]:
                fallbacks[record["fallback"]] = fallbacks.get(record["fallback"], 0) + 1
            for segment, ms in record["latency_ms"].items():
                latencies.setdefault(segment, []).append(ms)
        low = "(" + entries[-1][0].decode()
    segments = {s: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} for s, v in latencies.items()}
    return segments, {reason: count / max(n, 1) for reason, count in fallbacks.items()}


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (Linux /proc; the uvicorn workers). Each
    live process counts its own time and that of its reaped children, so a worker that exited still counts."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, p in parents.items() if p == parent and child not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(p, 0.0) for p in tree)


def last_id(client: redis.Redis) -> str:
    """Id of the newest trace entry ("0-0" when none)."""
    newest = client.xrevrange(DECISION_STREAM, count=1)
    return newest[0][0].decode() if newest else "0-0"


def median_run(runs: list[LoadResult]) -> LoadResult:
    """The run whose p99 is the median of the runs' (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run.percentiles()["p99"])[(len(runs) - 1) // 2]


def row(
    label: str, open_loop: LoadResult, closed: LoadResult, fallbacks: dict[str, float] | None = None,
    server_cpu_ms: float | None = None, runs: list[LoadResult] | None = None,
) -> str:
    """One markdown table row: `open_loop` is the median run of `runs` (all of them: the p99 of each)."""
    each = " / ".join(f"{run.percentiles()['p99']:.2f}" for run in runs or [open_loop])
    p = open_loop.percentiles()
    bad = sum(n for status, n in open_loop.statuses.items() if status != 200) + open_loop.errors
    answered = ", ".join(f"{reason} {share:.1%}" for reason, share in sorted((fallbacks or {}).items())) or "–"
    cpu = f"{server_cpu_ms:.2f}" if server_cpu_ms is not None else "–"
    return (f"| {label} | {open_loop.achieved_rps:.0f} | {p['p50']:.2f} | {p['p99']:.2f} | {p['p99.9']:.2f} | {each} | "
            f"{bad} | {answered} | {cpu} | {closed.achieved_rps:.0f} ({closed.policy_share:.0%}) |")


def main() -> None:
    """Run every configuration, print the table, write it to docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-in-flight", type=int, default=8, help="admission limit per worker (the default)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="open-loop runs per row; the table shows the run with the median p99, and every run's p99")
    args = parser.parse_args()
    n_open = int(args.rate * args.seconds)
    users = np.random.default_rng(0).integers(0, N_USERS, size=n_open)
    settings = HyperliftSettings()
    machine = machine_line()
    print(machine, flush=True)
    rows, segment_rows = [], []
    with project_environment(settings) as env, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(env)
        # The demo's features are stamped in the shop's period: judge their freshness by its clock, as the demo does.
        os.environ.setdefault("HYPERLIFT_SERVING_NOW", ShopConfig.from_env().end.isoformat())
        os.environ.setdefault("HYPERLIFT_SERVING_MODE", "dev")  # a local bench: its uvicorn runs without API keys
        if alias_version(settings.mlflow_uri, "hyperlift_uplift", CHAMPION_ALIAS) is None:
            raise SystemExit("no champion registered: run `make demo` first")
        print("registering the 50-action bench model (once) ...", flush=True)
        ensure_bench_model(settings)
        config = write_config(Path(tmp) / "policy")
        client = redis.Redis.from_url(env["REDIS_URL"])
        serving_env = {**env, "HYPERLIFT_SERVING_CONFIG_DIR": str(config),
                       "HYPERLIFT_SERVING_EXPERIMENTS_FILE": str(config / "experiments.yaml"),
                       "HYPERLIFT_SERVING_MAX_IN_FLIGHT": str(args.max_in_flight),
                       # Its own write-ahead folder, gone with the run: the bench never drains, and a later service
                       # start would adopt and resend what it left (hundreds of MB), competing with the next bench.
                       "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(Path(tmp) / "decision_wal")}
        for workers in args.workers:
            port = free_port()
            command = [str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(port), "--workers", str(workers),
                       "--log-level", "warning", "--no-access-log", *UVICORN_OPTIONS]  # as `make serve`
            server = start(command, serving_env, f"http://127.0.0.1:{port}/healthz")
            try:
                for surface in ("one", "fifty"):
                    requests = decision_requests(port, surface, users)
                    run_load("127.0.0.1", port, requests, 1000, rate=0, connections=8)  # warm-up
                    start_id = last_id(client)
                    print(f"decisions, {surface}, {workers} worker(s): open loop {args.rate:.0f}/s ...", flush=True)
                    cpu_before = tree_cpu_s(server.pid)
                    runs = [run_load("127.0.0.1", port, requests, n_open, rate=args.rate, connections=64)
                            for _ in range(args.repeats)]
                    answered = sum(len(run.latencies_ms) for run in runs)
                    server_cpu_ms = (tree_cpu_s(server.pid) - cpu_before) / max(answered, 1) * 1000.0
                    open_loop = median_run(runs)
                    segments, fallbacks = traces_since(client, start_id)
                    start_id = last_id(client)
                    closed = run_load("127.0.0.1", port, requests, n_open, rate=0, connections=32, timeout_s=args.seconds)
                    _, closed_fallbacks = traces_since(client, start_id)
                    closed.policy_share = 1.0 - closed_fallbacks.get("overloaded", 0.0)
                    label = f"decision, {'1 candidate' if surface == 'one' else '50 candidates'}, {workers} worker(s)"
                    rows.append(row(label, open_loop, closed, fallbacks, server_cpu_ms, runs))
                    segment_rows.append(
                        f"| {label} | " + " | ".join(
                            f"{segments[s]['p50']:.2f} / {segments[s]['p99']:.2f}" if s in segments else "–"
                            for s in ("features", "policy", "scoring", "total")
                        ) + f" | {open_loop.percentiles()['p50'] - segments['total']['p50']:.2f} |"
                    )
                    print("  " + rows[-1], flush=True)
            finally:
                server.terminate()
                server.wait(timeout=30)
        port = free_port()
        feast = start([str(VENV_BIN / "feast"), "-c", "feature_repo", "serve", "-p", str(port), "--no-access-log",
                       "--workers", "1"], env, f"http://127.0.0.1:{port}/health")
        try:
            requests = feast_requests(port, users, lake_pseudonymizer(create=False, path=keys.key_file(settings)))
            run_load("127.0.0.1", port, requests, 1000, rate=0, connections=8)
            print(f"feast serve: open loop {args.rate:.0f}/s ...", flush=True)
            cpu_before = tree_cpu_s(feast.pid)
            open_loop = run_load("127.0.0.1", port, requests, n_open, rate=args.rate, connections=64)
            server_cpu_ms = (tree_cpu_s(feast.pid) - cpu_before) / max(len(open_loop.latencies_ms), 1) * 1000.0
            closed = run_load("127.0.0.1", port, requests, n_open, rate=0, connections=32, timeout_s=args.seconds)
            rows.append(row("`feast serve` get-online-features (uplift_v1), 1 worker", open_loop, closed, None, server_cpu_ms))
            print("  " + rows[-1], flush=True)
        finally:
            feast.terminate()
            feast.wait(timeout=30)
    command = f".venv/bin/python -m bench.decision_load --rate {args.rate:.0f} --seconds {args.seconds:.0f} " \
              f"--workers {' '.join(map(str, args.workers))} --max-in-flight {args.max_in_flight} --repeats {args.repeats}"
    table = "\n".join([
        f"Command: `{command}` (after `make demo`), load generator on the same machine, {n_open} requests per "
        f"open-loop run, {args.repeats} open-loop runs per decision row (p50/p99/p99.9 of the run with the median p99). "
        f"Machine: {machine}.",
        "",
        "| path | achieved req/s | p50 ms | p99 ms | p99.9 ms | p99 of each run | non-200 | fallbacks | server CPU ms/req | closed loop, 32 conns: req/s (share not shed) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Where the time goes (decision traces of the open-loop runs; p50 / p99 ms; HTTP = client p50 − service p50):",
        "",
        "| path | features + counters (1 round trip) | policy | scoring | service total | HTTP + queueing p50 |",
        "|---|---|---|---|---|---|",
        *segment_rows,
    ])
    print("\n" + table)
    begin, end = BEGIN.format(rate=f"{args.rate:.0f}"), END.format(rate=f"{args.rate:.0f}")
    text = DOCS.read_text()
    if begin in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
    else:  # a new rate: after the last decision_load section, or at the end
        section = f"\n### Decision latency at {args.rate:.0f} requests/s\n\n{begin}\n{table}\n{end}\n"
        ends = [m.end() for m in re.finditer(r"<!-- decision_load:\d+:end -->\n", text)]
        at = ends[-1] if ends else len(text)
        text = text[:at] + section + text[at:]
    DOCS.write_text(text)
    print(f"\nwrote {DOCS}")


if __name__ == "__main__":
    main()
