"""Streaming freshness: event accepted → visible online, at a fixed event rate through `POST /v1/events`.

Runs the decision service (one uvicorn worker) on the state of `make demo`, sends page views of the demo's users
open loop at `--rate` events/s in calls of `--batch` events (bounded in count and time, loopback only), and,
meanwhile, a probe thread sends one event every 50 ms for a user of its own and polls the online store through a
separate Feast-format reader until the event shows in the user's features: that time is "visible online".
With `--write` the figures go to docs/benchmarks.md.

    .venv/bin/python -m bench.stream_freshness [--rate 2000] [--batch 10] [--seconds 20] [--write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time

import dagster as dg
import httpx
import numpy as np
import pandas as pd

from bench.decision_latency import VENV_BIN, start
from bench.loadgen import encode_post, run_load
from bench.report import DOCS, write_section
from dagster_project.assets.stream_state import online_tiles
from dagster_project.resources import build_resources
from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.pseudonyms import lake_pseudonymizer
from feature_repo.store import feature_store
from infra import keys
from infra.keys import Pseudonymizer
from infra.launch import project_environment
from infra.redis_server import free_port
from infra.settings import HyperliftSettings
from serving.store.features import FeatureClient
from simulator import ShopConfig

SECTION = "## Streaming freshness (POST /v1/events → online)"
PROBE_USER_BASE = 10_000_000 + (os.getpid() % 1000) * 100_000  # the probe's own users, fresh in every run
RUN = f"bench{os.getpid()}"  # event ids unique to this run: earlier runs' ids are remembered as applied


def page_views(first_id: int, users: np.ndarray, end: pd.Timestamp, rng: np.random.Generator) -> list[dict]:
    """Valid page views of `users`, stamped in the last six hours before the shop's clock."""
    ts = (end - pd.to_timedelta(rng.uniform(60, 6 * 3600, size=len(users)), unit="s")).floor("us")  # as clients send
    return [
        {"event_id": f"{RUN}-{first_id + k}", "event_type": "page_view", "event_version": 1, "ts": t.isoformat(),
         "user_id": int(u), "session_id": f"bench-s{int(u)}", "item_id": int(u) % 500, "category_id": int(u) % 8,
         "price": 19.9, "device": "mobile", "region": "south"}
        for k, (u, t) in enumerate(zip(users, ts))
    ]


class Probe(threading.Thread):
    """Every 50 ms: one event for a fresh probe user, then poll its online row until the event is visible. The event
    carries the raw id; the row is read by the pseudonym the service keys it by (`pseudonymizer`: the lake's key)."""

    def __init__(self, port: int, reader: FeatureClient, pseudonymizer: Pseudonymizer, end: pd.Timestamp,
                 stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.reader, self.pseudonymizer, self.end, self.stop = port, reader, pseudonymizer, end, stop
        self.visible_ms: list[float] = []
        self.never_visible = 0

    def run(self) -> None:
        rng = np.random.default_rng(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0) as client:
            k = 0
            while not self.stop.is_set():
                user = PROBE_USER_BASE + k
                row = self.pseudonymizer(user)
                body = {"events": page_views(50_000_000 + k, np.array([user]), self.end, rng)}
                sent = time.perf_counter()
                done = threading.Event()
                thread = threading.Thread(target=lambda: (client.post("/v1/events", json=body), done.set()))
                thread.start()
                while True:  # poll from the side: an independent reader of Feast's keys, not the response
                    if self.reader.read(row, ["page_views_total"]).by_name["page_views_total"] == 1.0:
                        self.visible_ms.append((time.perf_counter() - sent) * 1000.0)
                        break
                    if done.is_set() and time.perf_counter() - sent > 2.0:
                        self.never_visible += 1
                        break
                    time.sleep(0.0002)
                thread.join()
                k += 1
                time.sleep(max(0.0, 0.05 - (time.perf_counter() - sent)))


def histogram_quantiles(metrics: str, name: str, qs: tuple[float, ...] = (0.5, 0.99)) -> dict[float, float]:
    """Upper bucket bounds (ms) holding the given quantiles of a Prometheus histogram (one worker's)."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound) * 1000.0, float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0.0
    return {q: next(b for b, n in buckets if n >= q * total) for q in qs} if total else {}


def pct(values: list[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second offered")
    parser.add_argument("--batch", type=int, default=10, help="events per call")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--write", action="store_true", help="record the figures in docs/benchmarks.md")
    args = parser.parse_args()
    settings = HyperliftSettings()
    shop = ShopConfig.from_env()
    end = pd.Timestamp(shop.end)
    calls = int(args.rate * args.seconds / args.batch)
    rng = np.random.default_rng(0)
    with project_environment(settings) as env:
        os.environ.update(env)
        os.environ.setdefault("HYPERLIFT_SERVING_NOW", end.isoformat())  # the demo shop's clock, as the demo serves
        os.environ.setdefault("HYPERLIFT_SERVING_MODE", "dev")  # a local bench: its uvicorn runs without API keys
        print("loading the demo's tiles into Redis (the online_tiles asset) ...", flush=True)
        ok = dg.materialize([online_tiles], resources=build_resources(settings, env["REDIS_URL"], shop),
                            instance=dg.DagsterInstance.ephemeral()).success
        if not ok:
            raise SystemExit("online_tiles failed: run `make demo` first")
        port = free_port()
        print(f"pre-encoding {calls} calls of {args.batch} events ...", flush=True)
        bodies = [
            encode_post("127.0.0.1", "/v1/events",
                        {"events": page_views(i * args.batch, rng.integers(0, shop.n_users, args.batch), end, rng)})
            for i in range(calls)
        ]
        command = [str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(port), "--workers", str(args.workers),
                   "--log-level", "warning", "--no-access-log"]
        server: subprocess.Popen = start(command, {}, f"http://127.0.0.1:{port}/healthz")
        try:
            reader = FeatureClient(feature_store(env["REDIS_URL"], settings), UPLIFT_FEATURE_SERVICE)
            stop = threading.Event()
            probe = Probe(port, reader, lake_pseudonymizer(create=False, path=keys.key_file(settings)), end, stop)
            print(f"streaming {args.rate:.0f} events/s for {args.seconds:.0f} s ({args.workers} worker(s)) with a probe ...",
                  flush=True)
            probe.start()
            result = run_load("127.0.0.1", port, lambda i: bodies[i], calls, rate=args.rate / args.batch,
                              connections=16, timeout_s=args.seconds + 30)
            stop.set()
            probe.join()
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            server.terminate()
            server.wait(timeout=30)
    # Every benchmark event is valid and new, so a 202 applied all of its call's events. With several workers
    # /metrics shows one worker's counters, so the count comes from the answers.
    accepted = float(result.statuses.get(202, 0) * args.batch)
    if args.workers == 1:
        counted = next(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("hyperlift_events_accepted_total"))
        assert counted == accepted + len(probe.visible_ms) + probe.never_visible, (counted, accepted)
    call_ms, visible = result.percentiles(), pct(probe.visible_ms)
    apply_ms = histogram_quantiles(metrics, "hyperlift_event_apply_seconds")
    events_per_s = accepted / result.elapsed_s
    print(f"calls answered {len(result.latencies_ms)} of {calls}, statuses {result.statuses}, errors {result.errors}")
    print(f"events accepted {accepted:.0f} ({events_per_s:.0f}/s achieved of {args.rate:.0f}/s offered)")
    print(f"call round trip ms: p50 {call_ms['p50']:.2f} p99 {call_ms['p99']:.2f} p99.9 {call_ms['p99.9']:.2f}")
    print(f"server apply (received → rows online), one worker's histogram, bucket bounds ms: "
          f"p50 ≤ {apply_ms.get(0.5, float('nan')):.1f}, p99 ≤ {apply_ms.get(0.99, float('nan')):.1f}")
    print(f"probe accepted → visible online ms ({len(probe.visible_ms)} probes, {probe.never_visible} never "
          f"visible): p50 {visible['p50']:.2f} p99 {visible['p99']:.2f} max {visible['max']:.2f}")
    if args.write:
        load = os.getloadavg()
        section = f"{SECTION}, {args.workers} worker(s)"
        table = "\n".join([
            section, "",
            f"`.venv/bin/python -m bench.stream_freshness --rate {args.rate:.0f} --batch {args.batch} "
            f"--seconds {args.seconds:.0f} --workers {args.workers} --write` after `make demo` ({args.workers} uvicorn "
            f"worker(s); load generator, probe and "
            f"Redis on the same 2 cores; load average at the end of the run {load[0]:.1f}).", "",
            "| measure | p50 ms | p99 ms | p99.9 / max ms |", "|---|---|---|---|",
            f"| call round trip ({args.batch} events per call, open loop) | {call_ms['p50']:.2f} | {call_ms['p99']:.2f} "
            f"| {call_ms['p99.9']:.2f} |",
            f"| probe event accepted → visible online (independent reader) | {visible['p50']:.2f} | {visible['p99']:.2f} "
            f"| {visible['max']:.2f} |",
            f"| server: call received → its rows online (histogram bucket bound, one worker) | ≤ {apply_ms.get(0.5, 0):.1f} "
            f"| ≤ {apply_ms.get(0.99, 0):.1f} | |", "",
            f"Offered {args.rate:.0f} events/s, achieved {events_per_s:.0f}/s ({accepted:.0f} events, statuses "
            f"{result.statuses}, {result.errors} connection errors); {len(probe.visible_ms)} probes, "
            f"{probe.never_visible} never visible within 2 s.", "",
        ])
        write_section(section, table)
        print(f"recorded in {DOCS}")


if __name__ == "__main__":
    main()
