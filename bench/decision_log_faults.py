"""The decision log under Redis faults: decisions served against decisions in the drained lake.

Run after `make demo` (reads its champion, Feast registry and Redis dump; the demo's own Redis is not touched):
    .venv/bin/python -m bench.decision_log_faults [--rate 150] [--fault-seconds 5] [--workers 1 2] [--write]

Copies the demo's Redis dump into a temporary folder, starts a persistent redis-server on it (append-only,
appendfsync everysec, as `infra.redis_server` runs it), then the decision service (uvicorn, one worker; its
write-ahead folder and safe-mode file in the temporary folder, its decision stream `bench:decisions`; run as `make
serve` runs it, with one or more workers) and sends an open-loop load of --rate decisions/s on the `home` surface
through each scenario, once per worker count:

  pause            SIGSTOP redis-server for --fault-seconds, then SIGCONT
  slow             redis-server blocked for 100 ms out of every 150 ms for --fault-seconds (DEBUG SLEEP 0.1 in a loop)
  kill + restart   SIGKILL redis-server, start it again on the same port 1 s later (it reloads its append-only file)
  out of memory    Redis's maxmemory set just above what it holds (noeviction) for --fault-seconds: writes refused
  graceful restart SIGTERM the service, start a new one on the same port (requests meanwhile are refused: not served)

Each scenario: 3 s of load, the fault, 5 s of load after the fault is over. Then it waits until the service has
sent every record to Redis, drains the stream into a temporary lake as the `decision_trace` asset does, and
compares the decision ids the service answered with the ids in the lake. spilled / replayed / dropped are the service's own counters
(hyperlift_decision_log_*) over the scenario; p99 during the fault is over the requests due in the fault window;
fallbacks are the answers' `fallback` reasons among the requests due in the fault window; recovery is the time from
the fault's end to the last answer due after it that still fell back for a Redis reason (0: none did).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import redis

from bench.decision_latency import start
from bench.report import machine_line, write_section
from infra.redis_server import EmbeddedRedis, free_port
from infra.settings import HyperliftSettings
from serving.api.connection_limits import UVICORN_OPTIONS
from serving.decision.service import (
    DEADLINE,
    FEATURES_CIRCUIT_OPEN,
    FEATURES_LATE,
    FEATURES_UNAVAILABLE,
    LAST_KNOWN_GOOD,
    POLICY_STORE_UNAVAILABLE,
)
from serving.store.decision_log import DECISION_FORMAT, DRAIN_GROUP, StreamDrain, read_partitions
from serving.store.reconcile import reconcile
from simulator import ShopConfig
from training.lifecycle import alias_version
from training.registry import CHAMPION_ALIAS

VENV_BIN = Path(sys.executable).parent
STREAM = "bench:decisions"
TITLE = "## Decision log under Redis faults (`.venv/bin/python -m bench.decision_log_faults`)"
PRE_S, POST_S = 3.0, 5.0
N_USERS = 20_000


@dataclass
class Answers:
    """What the load generator saw: ids served, latency by due time, failures."""

    served: list[str] = field(default_factory=list)
    due: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)  # per answer: its fallback reason, "" when the policy ran
    failed: int = 0  # not served: refused connections and non-200 answers
    status_5xx: int = 0  # of those, answers with a 5xx status


async def _load(url: str, rate: float, until: list[float], answers: Answers) -> None:
    """Open loop until the monotonic time `until[0]` (moved by the fault thread): request i is due at t0 + i/rate
    whatever happened before; latency from the due time."""
    rng = np.random.default_rng(int(time.time()))
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=256)) as client:

        async def one(user: int, due: float) -> None:
            try:
                response = await client.post("/v1/decisions", json={"user_id": user, "surface": "home"})
            except httpx.HTTPError:
                answers.failed += 1
                return
            if response.status_code != 200:
                answers.failed += 1
                answers.status_5xx += response.status_code >= 500
                return
            body = response.json()
            answers.served.append(body["decision_id"])
            answers.fallback.append(body.get("fallback") or "")
            answers.due.append(due)
            answers.latency_ms.append((time.monotonic() - due) * 1000.0)

        t0, tasks, i = time.monotonic(), [], 0
        while (due := t0 + i / rate) < until[0]:
            i += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one(int(rng.integers(0, N_USERS)), due)))
        await asyncio.gather(*tasks)


def log_counters(url: str) -> dict[str, float]:
    """The service's hyperlift_decision_log_* samples (name with labels → value)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("hyperlift_decision_log_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


class Service:
    """The decision service under test (one uvicorn worker), restartable on the same port."""

    def __init__(self, env: dict[str, str], workers: int = 1):
        self.env, self.port, self.workers = env, free_port(), workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [str(VENV_BIN / "uvicorn"), "serving.main:app", "--port", str(self.port), "--workers",
                   str(self.workers), "--log-level", "warning", "--no-access-log", *UVICORN_OPTIONS]
        self.process = start(command, self.env, f"{self.url}/healthz")

    def stop(self) -> None:
        """SIGTERM: uvicorn's graceful shutdown (the trace writer writes its queue and sends what Redis takes)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def wait_sent(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while log_counters(self.url).get("hyperlift_decision_log_unsent_records", 1.0) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not send its decision log within 60 s")
            time.sleep(0.2)


def run_scenario(
    name: str, fault, service: Service, rate: float, wait: bool = True
) -> tuple[Answers, tuple[float, float], dict]:
    """Load for PRE_S, the fault (in a thread), POST_S; returns the answers, the fault window and the service's
    counters (before, after, and those of a stopped process)."""
    answers, window, until = Answers(), [0.0, 0.0], [float("inf")]
    counters = {"before": log_counters(service.url)}

    failed: list[BaseException] = []

    def inject() -> None:
        time.sleep(PRE_S)
        window[0] = time.monotonic()
        try:
            fault(counters)
        except BaseException as exc:  # noqa: BLE001 — handed to the main thread, which raises it after the load
            failed.append(exc)
        window[1] = time.monotonic()
        until[0] = window[1] + POST_S  # load goes on POST_S after the fault is over (a restart takes a while)

    thread = threading.Thread(target=inject)
    thread.start()
    asyncio.run(_load(service.url, rate, until, answers))  # ends even when the fault failed: `until` always moves
    thread.join()
    if failed:
        raise RuntimeError(f"scenario {name!r}: injecting the fault failed") from failed[0]
    if wait:  # one worker: its /metrics say when it has sent everything (several: the drain waits for the lake)
        service.wait_sent()
    counters["after"] = log_counters(service.url)
    print(f"  {name}: served {len(answers.served)}, failed {answers.failed}", flush=True)
    return answers, (window[0], window[1]), counters


REDIS_REASONS = frozenset({FEATURES_UNAVAILABLE, FEATURES_CIRCUIT_OPEN, FEATURES_LATE, DEADLINE,
                           POLICY_STORE_UNAVAILABLE, LAST_KNOWN_GOOD})
"""Fallback reasons that mean Redis did not answer in time (the others are the request's or the policy's)."""


def drain_until_logged(client: redis.Redis, lake: Path, served: set[str], timeout_s: float = 60.0) -> set[str]:
    """Drain the stream into `lake` until every served id is there or `timeout_s` passed; the ids logged. With
    several workers no single /metrics scrape sees every worker's unsent records, so the lake is the judge."""
    deadline = time.monotonic() + timeout_s
    while True:
        StreamDrain(client, STREAM, DRAIN_GROUP, "bench", lake, DECISION_FORMAT).drain()
        logged = set(read_partitions(lake, record_format=DECISION_FORMAT)["decision_id"]) if lake.exists() else set()
        if served <= logged or time.monotonic() > deadline:
            return logged
        time.sleep(1.0)


def run_workers(args: argparse.Namespace, settings: HyperliftSettings, dump: Path, workers: int) -> tuple[list[str], str, float]:
    """Every scenario against a service of `workers` workers on a fresh copy of the demo's Redis: table rows, the
    reconciliation line, the dataset's size in MB."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "redis").mkdir()
        shutil.copy(dump, tmp / "redis" / "dump.rdb")
        # A restart reloads the append-only file the scenarios grew (hundreds of MB of decision records): give it
        # more than the default 10 s on a loaded 2-core machine.
        server = EmbeddedRedis(tmp / "redis", persist=True, start_timeout_s=120.0)
        server.start()
        dataset_mb = redis.Redis.from_url(server.url).info("memory")["used_memory"] / 2**20
        env = {
            **settings.environment(server.url),
            "HYPERLIFT_SERVING_NOW": os.environ.get("HYPERLIFT_SERVING_NOW", ShopConfig.from_env().end.isoformat()),
            "HYPERLIFT_SERVING_DECISION_STREAM": STREAM,
            "HYPERLIFT_SERVING_DECISION_WAL_DIR": str(tmp / "wal"),
            "HYPERLIFT_SERVING_SAFE_MODE_FILE": str(tmp / "safe_mode.json"),
            "HYPERLIFT_SERVING_LOG_DECISIONS": "false",
            "HYPERLIFT_SERVING_MODE": "dev",  # a local bench: no API keys (docs/security.md)
        }
        service = Service(env, workers)
        service.start()
        lake = tmp / "lake"
        client = redis.Redis.from_url(server.url)

        def pause(_: dict) -> None:
            os.kill(server.pid, signal.SIGSTOP)
            time.sleep(args.fault_seconds)
            os.kill(server.pid, signal.SIGCONT)

        def slow(_: dict) -> None:
            sleeper = redis.Redis.from_url(server.url, socket_timeout=5)
            end = time.monotonic() + args.fault_seconds
            while time.monotonic() < end:
                sleeper.execute_command("DEBUG", "SLEEP", "0.1")
                time.sleep(0.05)

        def kill_restart(_: dict) -> None:
            server.kill()
            time.sleep(1.0)
            server.start()

        def out_of_memory(_: dict) -> None:
            admin = redis.Redis.from_url(server.url)
            policy = admin.config_get("maxmemory-policy")["maxmemory-policy"]
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 256 * 1024)
            time.sleep(args.fault_seconds)
            admin.config_set("maxmemory", 0)
            admin.config_set("maxmemory-policy", policy)

        def graceful_restart(counters: dict) -> None:
            counters["old"] = log_counters(service.url)
            started = time.monotonic()
            service.stop()
            counters["stop_s"] = time.monotonic() - started
            service.start()
            counters["down_s"] = time.monotonic() - started

        labels = {"pause": f"Redis paused (SIGSTOP) {args.fault_seconds:.0f} s",
                  "slow": f"Redis slowed {args.fault_seconds:.0f} s (100 ms stalls every 150 ms)",
                  "kill + restart": "Redis killed (SIGKILL), restarted 1 s later",
                  "out of memory": f"Redis out of memory {args.fault_seconds:.0f} s (writes refused)",
                  "graceful restart": "service restarted (SIGTERM, new process)"}
        try:
            for name, fault in (("pause", pause), ("slow", slow), ("kill + restart", kill_restart),
                                ("out of memory", out_of_memory), ("graceful restart", graceful_restart)):
                label = labels[name]
                answers, window, counters = run_scenario(name, fault, service, args.rate, wait=workers == 1)
                if "down_s" in counters:
                    label += (f"; stopped in {counters['stop_s']:.1f} s, answering again after "
                              f"{counters['down_s']:.1f} s")
                served = set(answers.served)
                logged = drain_until_logged(client, lake, served)
                before, after = counters["before"], counters["after"]
                if "old" in counters:  # the counters of the stopped process, then the new one's from zero
                    parts = [(counters["old"], before), (after, {})]
                else:
                    parts = [(after, before)]
                if workers == 1:  # one scrape sees the one worker; with more, each scrape sees one of them
                    spilled, replayed, dropped = (
                        f"{sum(delta(a, b, f'hyperlift_decision_log_{m}') for a, b in parts):.0f}"
                        for m in ("spilled_total", "replayed_total", "dropped_total")
                    )
                else:
                    spilled = replayed = dropped = "–"
                due, lat = np.array(answers.due), np.array(answers.latency_ms)
                in_window = (due >= window[0]) & (due <= window[1])
                during = lat[in_window]
                p99 = f"{np.percentile(during, 99):.1f}" if len(during) else "–"
                reasons = Counter(f for f, w in zip(answers.fallback, in_window) if w and f)
                fallbacks = ", ".join(f"{r} {n}" for r, n in reasons.most_common()) or "none"
                late = [d for d, f in zip(answers.due, answers.fallback) if d > window[1] and f in REDIS_REASONS]
                recovery = max(late) - window[1] if late else 0.0
                rows.append(
                    f"| {workers} | {label} | {len(served)} | {len(served & logged)} | {len(served - logged)} | "
                    f"{answers.status_5xx} | {answers.failed - answers.status_5xx} | {fallbacks} | {p99} | "
                    f"{recovery:.1f} | {spilled} | {replayed} | {dropped} |"
                )
                print("  " + rows[-1], flush=True)
            service.stop()  # its final counters: the books of finished writers are exact
            books = reconcile(client, lake, STREAM)
            summary = (f"{workers} worker(s): reconciliation over the run, after the service stopped "
                       f"(`serving.store.reconcile`, {len(books.writers)} service processes): served "
                       f"{books.total('served')}, logged {books.total('logged')}, in flight "
                       f"{books.total('in_flight')}, dropped {books.dropped() or 0}, unaccounted "
                       f"{books.finished_unaccounted()}.")
        finally:
            service.stop()
            server.stop()
    return rows, summary, dataset_mb


def main() -> None:
    """Run the scenarios per worker count, print the table, write it to docs/benchmarks.md with --write."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--fault-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn worker counts to run")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    settings = HyperliftSettings()
    dump = settings.redis_dir / "dump.rdb"
    if alias_version(settings.mlflow_uri, "hyperlift_uplift", CHAMPION_ALIAS) is None or not dump.exists():
        raise SystemExit("no champion or no Redis dump: run `make demo` first")
    machine = machine_line()
    print(machine, flush=True)
    rows, summaries, dataset_mb = [], [], 0.0
    for workers in args.workers:
        print(f"{workers} worker(s):", flush=True)
        more, summary, dataset_mb = run_workers(args, settings, dump, workers)
        rows += more
        summaries.append(summary)
    command = (f".venv/bin/python -m bench.decision_log_faults --rate {args.rate:.0f} --fault-seconds "
               f"{args.fault_seconds:.0f} --workers {' '.join(map(str, args.workers))}")
    table = "\n".join([
        TITLE,
        "",
        f"Command: `{command} --write` (after `make demo`; a copy of its Redis, append-only, {dataset_mb:.0f} MB in "
        f"memory: what a restart reloads). {args.rate:.0f} decisions/s "
        f"open loop on `home`, uvicorn as `make serve` runs it, {PRE_S:.0f} s before each fault and {POST_S:.0f} s "
        "after it is over; the lake is drained after each scenario (until every served decision is in it, at most "
        f"60 s) and compared with the decision ids the service answered. Machine: {machine}.",
        "",
        "| workers | scenario | served | logged | missing | 5xx | refused (not served) | fallbacks during the fault "
        "| p99 during fault ms | recovery s | spilled | replayed | dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *summaries,
        "",
        "Reading: *missing* is served − logged, the target is 0; *5xx* the target is 0 too. *refused*: connections "
        "the service did not answer (a restart's window). *fallbacks*: the answers due in the fault window that "
        "fell back, by reason (the neutral action, answered 200). *recovery*: from the fault's end to the last "
        "answer that still fell back for a Redis reason. *spilled*: records written to the local write-ahead "
        "file that Redis could not take at once; *replayed*: records sent from that file later, in order (with "
        "several workers one /metrics scrape sees one worker: the lake and the reconciliation are the judges). "
        "After a kill, replayed exceeds spilled: on the new run_id the writer resends everything the lake had not "
        "confirmed yet (the append-only file kept most of it; the lake keeps each decision_id once). A SIGKILL of "
        "the service itself is in tests/serving/store/test_trace.py (exact: the records it had not written yet — "
        "the last 20 ms linger plus at most one 150 ms Redis call — are counted at the next start as "
        "`unwritten_at_exit`; everything else arrives). "
        "The p99 during a pause or a slow Redis (54–59 ms) is the 50 ms bound on a decision's Redis calls: since "
        "the breaker counts one stall once (#13 item 5), it opens after five distinct 50 ms episodes instead of "
        "after the first eight concurrent timeouts, so a few dozen decisions wait out the bound before it opens "
        "(9–13 ms before that change); the probe then closes it within 0.25 s of Redis answering (recovery "
        "0.0–0.2 s). Out of memory, Redis refused the decision log's appends (spilled, then replayed) while the "
        "decisions themselves were served. "
        "The service restart row's refused requests are the time "
        "the workers take to start again on this machine: a restart loses no decision it answered, but a single "
        "instance cannot answer while it starts.",
        "",
    ])
    print("\n" + table)
    if args.write:
        write_section(TITLE, table)


if __name__ == "__main__":
    main()
