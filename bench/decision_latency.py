"""Decision latency, side by side in one run: our decision path vs the Feast feature server for the same features.

Run after `make demo` (reads its registry, Redis dump and champion):
    .venv/bin/python -m bench.decision_latency [N]
    .venv/bin/python -m bench.decision_latency --segments [N]   (CPU per decision by segment, see segment_cpu)
Measures N sequential single-user requests of each kind, one warm-up pass first:
  feast_sdk_read     the serving feature reader (Feast's keys and values, one pipelined round trip), in process
  model_score        champion uplift for one feature row, in process, as serving scores (the compiled trees)
  model_score_xgboost  the same through XGBoost's inplace_predict (the model's own uplift)
  decide_in_process  DecisionService.decide on the shipped `home` surface: features + counters, scores, policy,
                     reservation, trace
  decide_http        POST /v1/decisions to uvicorn (one keep-alive connection)
  feast_serve_http   POST /get-online-features to `feast serve` with the same feature service
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from demo.traffic import wait_healthy
from feature_repo.pseudonyms import pseudonymize_ids
from infra.launch import project_environment
from simulator import ShopConfig
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest

VENV_BIN = Path(sys.executable).parent


def timed(n: int, call: Callable[[int], object], users: np.ndarray) -> np.ndarray:
    """Milliseconds per call over `n` users, after a warm-up pass of 50."""
    for user in users[:50]:
        call(int(user))
    out = np.empty(n)
    for i, user in enumerate(users[:n]):
        started = time.perf_counter()
        call(int(user))
        out[i] = (time.perf_counter() - started) * 1000.0
    return out


def start(command: list[str], env: dict[str, str], health_url: str) -> subprocess.Popen:
    """Start a server process and wait until `health_url` answers."""
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120  # two uvicorn workers each load Feast and the models
    while time.monotonic() < deadline:
        try:
            if httpx.get(health_url, timeout=1).status_code < 500:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{command[0]} did not answer {health_url}")


# (label, owner, attribute): calls timed with time.process_time (CPU of the whole process: the trace writer's thread
# included), inclusive of what they call; "rest" is the decision minus these.
SEGMENTS = [
    ("features + counters round trip (build, Redis I/O, parse)", "serving.decision.service:DecisionService", "_read"),
    ("  Redis I/O of both round trips (inside the read and reservation rows)", "serving.store.round_trip:RoundTrip", "execute"),
    ("model score (all arms)", "serving.decision.scoring:CompiledUplift", "uplift"),
    ("slate draw", "serving.decision.service", "draw_slate"),
    ("reservation round trip", "serving.decision.service:DecisionService", "_reserve"),
    ("response, trace record, metrics, log", "serving.decision.service:DecisionService", "_respond"),
]


def segment_cpu(n: int) -> list[str]:
    """CPU per decision by segment on the decision_load surfaces (`one`: the demo champion; `fifty`: 50 actions),
    in process, sequential: markdown rows "segment | one | fifty" in ms."""
    from importlib import import_module

    from bench.decision_load import ensure_bench_model, write_config

    spent: dict[str, float] = defaultdict(float)

    def timed_call(label: str, call: Callable) -> Callable:
        if inspect.isgeneratorfunction(call):  # a step of the decision: timed from its start to its result, so the
            def steps(*args, **kwargs):  # round trips the driver carries out while it is suspended count in it
                started = time.process_time()
                try:
                    return (yield from call(*args, **kwargs))
                finally:
                    spent[label] += time.process_time() - started
            return steps

        def run(*args, **kwargs):
            started = time.process_time()
            try:
                return call(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - started
        return run

    for label, where, name in SEGMENTS:
        module, _, cls = where.partition(":")
        owner = getattr(import_module(module), cls) if cls else import_module(module)
        setattr(owner, name, timed_call(label, getattr(owner, name)))
    settings = HyperliftSettings()
    columns: dict[str, dict[str, float]] = {}
    with project_environment(settings) as env, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(env)
        os.environ.setdefault("HYPERLIFT_SERVING_NOW", ShopConfig.from_env().end.isoformat())
        os.environ.setdefault("HYPERLIFT_SERVING_MODE", "dev")  # a local bench: no API keys (docs/security.md)
        ensure_bench_model(settings)
        config = write_config(Path(tmp) / "policy")
        service = build_runtime(ServingSettings(
            seed=0, log_decisions=False, model_refresh_s=0, config_dir=config, experiments_file=config / "experiments.yaml"
        )).service
        users = np.random.default_rng(0).integers(0, 20_000, size=n)
        for surface in ("one", "fifty"):
            extra = {"candidates": ["push_reminder"]} if surface == "one" else {}
            requests = [DecisionRequest(user_id=int(u), surface=surface, **extra) for u in users]
            for request in requests[:200]:
                service.decide(request)
            spent.clear()
            started = time.process_time()
            for request in requests:
                service.decide(request)
            total = time.process_time() - started
            column = {label: spent[label] / n * 1000.0 for label, _, _ in SEGMENTS}
            column["rest (surface, experiments, freshness, rules, scores → policy, bookkeeping)"] = (
                total - sum(v for k, v in spent.items() if not k.startswith("  "))
            ) / n * 1000.0
            column["**decision in process**"] = total / n * 1000.0
            columns[surface] = column
        service.trace.close()
    return [f"| {label} | {columns['one'][label]:.3f} | {columns['fifty'][label]:.3f} |" for label in columns["one"]]


def main(n: int = 2000) -> None:
    """Print p50/p99/mean per path as a markdown table."""
    settings = HyperliftSettings()
    with project_environment(settings) as env:
        os.environ.update(env)
        # The demo's features are stamped in the shop's period: judge their freshness by its clock, as the demo does.
        os.environ.setdefault("HYPERLIFT_SERVING_NOW", ShopConfig.from_env().end.isoformat())
        os.environ.setdefault("HYPERLIFT_SERVING_MODE", "dev")  # a local bench, here and in its uvicorn: no API keys
        service = build_runtime(ServingSettings(seed=0, log_decisions=False)).service
        champion = service.champions.get(("hyperlift_uplift", "champion"))
        if champion is None:
            raise SystemExit("no champion registered: run `make demo` first")
        users = np.random.default_rng(0).integers(0, 20_000, size=n + 50)
        # Requests carry raw ids; the online store is keyed by their pseudonyms (the service maps them at its
        # edge), so the paths that read it directly read the same users' rows by pseudonym.
        keyed = pseudonymize_ids(users, service.pseudonymizer)
        row = champion.features.read(service.pseudonymizer(1), champion.model.feature_names).values[None, :]
        results: dict[str, np.ndarray] = {}

        def measure(name: str, call: Callable[[int], object], ids: np.ndarray = users) -> None:
            print(f"  {name}: {n} calls ...", flush=True)  # six paths, ~10–30 s each on 2 cores
            results[name] = timed(n, call, ids)

        measure("feast_sdk_read", lambda u: champion.features.read(u, champion.model.feature_names), keyed)
        measure("model_score", lambda u: champion.score(row))
        measure("model_score_xgboost", lambda u: champion.model.uplift(row))
        measure("decide_in_process", lambda u: service.decide(DecisionRequest(user_id=u, surface="home")))
        api_port, feast_port = free_port(), free_port()
        api = start([str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(api_port), "--log-level", "warning"],
                    env, f"http://127.0.0.1:{api_port}/healthz")
        feast = start([str(VENV_BIN / "feast"), "-c", "feature_repo", "serve", "-p", str(feast_port), "--no-access-log"],
                      env, f"http://127.0.0.1:{feast_port}/health")
        try:
            wait_healthy(f"http://127.0.0.1:{api_port}")
            with httpx.Client(base_url=f"http://127.0.0.1:{api_port}") as client:
                measure("decide_http",
                        lambda u: client.post("/v1/decisions", json={"user_id": u, "surface": "home"}).raise_for_status())
            with httpx.Client(base_url=f"http://127.0.0.1:{feast_port}") as client:
                measure("feast_serve_http", lambda u: client.post(
                    "/get-online-features",
                    json={"feature_service": champion.features.feature_service_name, "entities": {"user_id": [u]}},
                ).raise_for_status(), keyed)
        finally:
            for process in (api, feast):
                process.terminate()
                process.wait(timeout=30)
    print(f"N = {n} sequential single-user requests per path, {os.cpu_count()} cores")
    print("| path | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {ms.mean():.3f} |")


def cli(argv: list[str] | None = None) -> argparse.Namespace:
    """`[N]` sequential requests per path, or `--segments [N]` for the CPU of each segment of a decision."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", action="store_true", help="CPU per decision by segment instead of latencies")
    parser.add_argument("n", nargs="?", type=int, default=2000, help="requests (or decisions) per path (2000)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"N must be at least 1, got {args.n}")
    return args


if __name__ == "__main__":
    options = cli()
    if options.segments:
        rows = segment_cpu(options.n)
        print(f"CPU ms per decision (time.process_time), {os.cpu_count()} cores")
        print("| segment | 1 candidate (`one`) | 50 candidates (`fifty`) |\n|---|---|---|\n" + "\n".join(rows))
    else:
        main(options.n)
