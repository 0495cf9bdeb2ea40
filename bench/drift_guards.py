"""Drift guards on the simulator: decisions to alarm, cautious mode, rollback and value protected per injected drift,
and the false-alarm rate over stationary seeds.

    .venv/bin/python -m bench.drift_guards [--seeds 20] [--length 4000] [--shift 2000] [--write]

Each run: a small simulated shop (simulator/drift.py), a linear uplift model fitted on a 5,000-decision training
window (the guards' reference: deciles of every logged feature and of the best score), then `--length` served
decisions with champion version 1 serving until `--shift`, where version 2 is promoted (MLflow registry in a temp
folder, audited) and the drift is injected. The guard runner (training/guards/runner.py, serving/conf/guards.yaml)
reads the decision records every 250 decisions, outcomes mature 250 decisions later; once it turns the surface
cautious, the stream follows the cautious policy from the next decision (as the workers would after their poll).
Value protected = Σ over decisions after the switch of (expected net value under the policy served − under the
normal policy), from the simulator's truth, per 1,000 decisions after the shift. A false alarm is any alarm in a
stationary run. With `--write`, the section replaces its namesake in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import redis

from infra.audit import AuditLog
from serving.ops.cautious import CautiousSwitch
from simulator.actions import ACTION_IDS, UNIT_COSTS
from simulator.drift import SCENARIOS, T0, DriftStream
from training.guards.config import GuardConfig, load_guard_config
from training.guards.drift import Reference
from training.guards.monitor import SCORE
from training.guards.runner import GuardMetrics, GuardRunner

HEADING = "## Drift guards on the simulator (`.venv/bin/python -m bench.drift_guards --write`)"
SURFACE = "home"
NEUTRAL = ACTION_IDS[0]
COSTS = dict(zip(ACTION_IDS, UNIT_COSTS.tolist()))
MATURITY = 250  # decisions until an outcome is known
NOTES = """How to read it: a drift's delay counts decisions from the shift to the look that alarmed (looks every 250,
so 250 is the first look whose window holds shifted decisions); a run without rollback is one whose realised value
stayed within the previous champion's interval. The false-alarm rate comes from the Bonferroni level (5 % over
10,000 decisions), not from tuning. Value protected compares, with the simulator's exact expected values, the
policy served after the switch with the normal policy on the same decisions: negative means caution cost value
(the drifted model still beat the neutral action); the rollback returns to the same linear fit here (versions 1
and 2 are one model), so it cannot add value in this bench."""


@dataclass
class RunResult:
    """One run of one scenario."""

    scenario: str
    seed: int
    alarm_at: int | None  # decisions after the shift at the first alarm (negative: before it)
    alarm_columns: tuple[str, ...]
    cautious: bool
    rolled_back: bool
    protected_per_1000: float  # expected net value protected per 1,000 decisions after the shift
    runner: GuardRunner


class MemoryRegistry:
    """The champion's history without MLflow (stationary runs): a rollback is written to the audit trail only."""

    def __init__(self, audit: AuditLog, model: str):
        self.audit, self.model, self.champion = audit, model, "1"
        self.history: list[str] = []
        self.promoted: dict[str, float] = {}

    def promote(self, version: str) -> None:
        """Make `version` the champion now."""
        self.history.append(self.champion)
        self.champion, self.promoted[version] = version, time.time()

    def rollback(self, actor: str, reason: str) -> None:
        """Return to the previous champion (audited like training.lifecycle.rollback)."""
        current, self.champion = self.champion, self.history.pop()
        self.audit.record(actor, "model.rollback", target=f"{self.model}@{self.champion}", reason=reason,
                          previous=current)


def reference_of(stream: DriftStream, n: int, bins: int) -> Reference:
    """The guards' reference from the stream's training window (every logged feature and the best score)."""
    window = stream.training_window(n)
    return Reference.fit({**window.features, SCORE: window.scores.max(axis=1)}, bins, model_version="1")


def run_scenario(
    scenario: str, seed: int, client: redis.Redis, audit: AuditLog, config: GuardConfig | None = None,
    length: int = 4000, shift: int = 2000, promote: Callable[[], object] | None = None,
    previous_champion: Callable[[], str | None] | None = None, promoted_at: Callable[[str], float | None] | None = None,
    roll_back: Callable[[str, str], object] | None = None, model: str = "hyperlift_uplift",
) -> RunResult:
    """Serve `length` decisions with `scenario` injected at `shift` (where version 2 is promoted) under the guard.
    The registry hooks default to a MemoryRegistry; pass MLflow's (training.lifecycle) to roll back for real."""
    config = config or load_guard_config()
    stream = DriftStream(scenario, seed=seed, shift=shift)
    memory = MemoryRegistry(audit, model)
    key = f"hyperlift:cautious:{scenario}:{seed}"
    client.delete(key)
    switch = CautiousSwitch(client, config.cautious, key=key, poll_s=0)
    runner = GuardRunner(
        SURFACE, model, reference_of(stream, 5000, config.bins), config, switch, NEUTRAL, COSTS,
        previous_champion or (lambda: memory.history[-1] if memory.history else None),
        promoted_at or memory.promoted.get, roll_back or memory.rollback, audit, GuardMetrics(),
    )
    pending: list[dict] = []
    protected, cautious_at = 0.0, None
    version = "1"
    while stream.position < length:
        if stream.position == shift:
            (promote or (lambda: memory.promote("2")))()
            version = "2"
        limit = shift if stream.position < shift else length
        batch = stream.next(min(config.step, limit - stream.position))
        records = stream.records(batch, SURFACE, version)
        if cautious_at is not None:
            protected += float((batch.expected - batch.expected_normal).sum())
        runner.observe(records)
        pending.extend(records)
        matured = [r for r in pending if r["ts"] - T0 < stream.position - MATURITY]
        pending = pending[len(matured):]
        runner.mature(matured)
        if cautious_at is None and switch.policy_for(SURFACE) is not None:
            cautious_at = stream.position
            stream.cautious(cautious_at, config.cautious.neutral_share, config.cautious.epsilon)
        if runner.rolled_back:
            version = "1"
    first = runner.first_alarm
    return RunResult(
        scenario, seed, None if first is None else first.seen - shift, first.alarms if first else (),
        cautious_at is not None, bool(runner.rolled_back), 1000.0 * protected / max(length - shift, 1), runner,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="stationary seeds for the false-alarm rate")
    parser.add_argument("--drift-seeds", type=int, default=5, help="seeds per injected drift")
    parser.add_argument("--length", type=int, default=4000)
    parser.add_argument("--shift", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="replace this section of docs/benchmarks.md")
    args = parser.parse_args()
    from infra.redis_server import EmbeddedRedis
    from training.guards.runner import promotion_time
    from training.lifecycle import promote, rollback

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drift-guards-") as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        os.environ["HYPERLIFT_AUDIT_DIR"] = str(Path(tmp) / "audit")  # lifecycle's entries stay in the temp folder
        audit = AuditLog(Path(tmp) / "audit")
        client = redis.Redis.from_url(server.url)
        uri = f"sqlite:///{tmp}/mlflow.db"
        rows = []
        for scenario in SCENARIOS[1:]:
            for seed in range(args.drift_seeds):
                model = f"drift_{scenario}_{seed}"
                register_versions(uri, model, 2)
                promote(uri, model, "1", "bench", "initial champion")
                result = run_scenario(
                    scenario, seed, client, audit, length=args.length, shift=args.shift, model=model,
                    promote=partial(promote, uri, model, "2", "bench", "new champion"),
                    previous_champion=partial(previous_champion, uri, model),
                    promoted_at=promotion_time(audit, model), roll_back=partial(rollback, uri, model),
                )
                rows.append(result)
        stationary = [run_scenario("stationary", 100 + s, client, audit, length=args.length, shift=args.shift)
                      for s in range(args.seeds)]
    table = format_table(rows, stationary, args)
    print(table)
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.write:
        from bench.report import machine_line, write_section
        write_section(HEADING, f"{HEADING}\n\n{machine_line()}; {time.perf_counter() - started:.0f} s.\n\n{table}\n\n"
                      f"{NOTES}\n")


def previous_champion(uri: str, model: str) -> str | None:
    """The version a rollback of `model` would return to (None: none)."""
    from training.lifecycle import champion_history

    history = champion_history(uri, model)
    return history[-1] if history else None


def register_versions(uri: str, model: str, n: int) -> None:
    """`n` registry versions of `model` (no artifacts: the guard only moves aliases)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(model)
    for _ in range(n):
        client.create_model_version(model, source="none", run_id=None)


def format_table(rows: list[RunResult], stationary: list[RunResult], args: argparse.Namespace) -> str:
    """The markdown table of the runs."""
    lines = ["| scenario | runs | decisions to alarm (median, max) | first columns alarmed | cautious entered | "
             "rollback done | value protected per 1,000 decisions after the shift (cautious − normal policy, truth) |",
             "|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS[1:]:
        runs = [r for r in rows if r.scenario == scenario]
        delays = [r.alarm_at for r in runs if r.alarm_at is not None]
        columns = sorted({c for r in runs for c in r.alarm_columns[:2]})
        lines.append(
            f"| {scenario} | {len(runs)} | {int(np.median(delays)) if delays else '–'}, "
            f"{max(delays) if delays else '–'} (missed {len(runs) - len(delays)}) | {', '.join(columns[:4])} | "
            f"{sum(r.cautious for r in runs)}/{len(runs)} | {sum(r.rolled_back for r in runs)}/{len(runs)} | "
            f"{np.mean([r.protected_per_1000 for r in runs]):+.1f} |" if runs else f"| {scenario} | 0 | | | | | |"
        )
    false = sum(r.alarm_at is not None for r in stationary)
    lines.append(f"| stationary | {len(stationary)} | false alarms: {false} of {len(stationary)} "
                 f"({100.0 * false / max(len(stationary), 1):.0f} %) | | {sum(r.cautious for r in stationary)} | "
                 f"{sum(r.rolled_back for r in stationary)} | |")
    return (f"{args.length} decisions per run, drift (and the promotion of version 2) at decision {args.shift}; "
            f"window 500, a look every 250, outcomes mature 250 decisions later.\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
