"""How often the promotion gate's off-policy intervals cover the challenger's true value, over (round, seed) pairs
of the closed loop (issue #12's target: ≥ 90 % of at least 30 pairs), with the intervals' widths.

    .venv/bin/python -m bench.loop_ope_coverage [--seeds 8 --rounds 4 --users 4000 --history-days 14]
                                                [--exploration softmax:0.1:0.005]

Each seed is a whole `make loop` run (demo.loop) on a smaller shop, so that 30+ pairs fit in ~20 minutes here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from bench.report import machine_line, write_section
from demo.loop import exploration_spec
from infra.settings import HyperliftSettings

TITLE = "## Closed loop: off-policy interval coverage over (round, seed) pairs (`.venv/bin/python -m bench.loop_ope_coverage`)"


def main(argv: list[str] | None = None) -> int:
    """Run the loop once per seed; tabulate coverage, width and ESS of the gate's DR and SNIPW intervals."""
    parser = argparse.ArgumentParser(prog="python -m bench.loop_ope_coverage")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--history-days", type=int, default=14)
    parser.add_argument("--exploration", type=exploration_spec, default=None, metavar="METHOD:ARGS",
                        help="the loop's --exploration (default: the surface's own, epsilon-greedy 0.05)")
    args = parser.parse_args(argv)
    explore = [] if args.exploration is None else ["--exploration", _spec_text(args.exploration)]
    machine = machine_line()
    started = time.perf_counter()
    pairs: list[dict] = []
    failed: list[int] = []
    for seed in range(1, args.seeds + 1):
        print(f"\n##### seed {seed}/{args.seeds} ({time.perf_counter() - started:.0f} s so far)", flush=True)
        # One process per run: MLflow and Dagster keep per-process handles on the SQLite stores a new run deletes.
        report = HyperliftSettings().reports_dir / "loop_summary.json"
        report.unlink(missing_ok=True)
        run = subprocess.run([sys.executable, "-m", "demo.loop", "--rounds", str(args.rounds), "--users",
                              str(args.users), "--history-days", str(args.history_days), "--seed", str(seed),
                              *explore])
        if run.returncode != 0 or not report.exists():  # counted and said, the other seeds still count
            failed.append(seed)
            print(f"seed {seed}: the loop failed (exit {run.returncode}); see its output above", flush=True)
            continue
        summary = json.loads(report.read_text())
        pairs += [{"seed": seed, "round": r["round"], **r["off_policy"]} for r in summary["rounds"]
                  if "dr" in r["off_policy"]]
    title = TITLE if args.exploration is None else f"{TITLE[:-2]} --exploration {_spec_text(args.exploration)}`)"
    dump = HyperliftSettings().reports_dir / "loop_ope_coverage.json"
    dump.write_text(json.dumps({"args": vars(args), "failed_seeds": failed, "pairs": pairs}, indent=1))
    print(f"wrote {dump} (every pair: estimates, intervals, ESS, truth)", flush=True)
    served = "ε-greedy, ε = 0.05" if args.exploration is None else _spec_text(args.exploration)
    lines = [title, "", f"`.venv/bin/python -m bench.loop_ope_coverage --seeds {args.seeds} --rounds {args.rounds} "
             f"--users {args.users} --history-days {args.history_days}{' ' + ' '.join(explore) if explore else ''}`; "
             f"{machine}; {len(pairs)} (round, seed) pairs in {time.perf_counter() - started:.0f} s. Each pair: the "
             f"gate's estimate of that round's challenger on its window (the day just served, {served}), against the "
             f"challenger's exact value there. Seeds whose loop failed: {failed or 'none'}.", "",
             "| estimator | pairs | truth inside the 95 % interval | median width | median ESS | mean |estimate − truth| "
             "| mean estimate − truth |",
             "|---|---|---|---|---|---|---|"]
    for name in ("dr", "snipw"):
        covered = sum(p[name]["covers_truth"] for p in pairs)
        widths = [p[name]["upper"] - p[name]["lower"] for p in pairs]
        errors = [p[name]["estimate"] - p["true_value"] for p in pairs]
        lines.append(f"| {name} | {len(pairs)} | {covered}/{len(pairs)} ({covered / max(len(pairs), 1):.0%}) | "
                     f"{np.median(widths):.3f} | {np.median([p['ess'] for p in pairs]):.0f} | "
                     f"{np.mean(np.abs(errors)):.3f} | {np.mean(errors):+.3f} |")
    by_ess = sorted(pairs, key=lambda p: p["ess"])
    half = len(by_ess) // 2
    for label, group in (("lower half of ESS", by_ess[:half]), ("upper half of ESS", by_ess[half:])):
        if group:
            covered = sum(p["dr"]["covers_truth"] for p in group)
            lines.append(f"| dr, {label} (ESS {group[0]['ess']:.0f}–{group[-1]['ess']:.0f}) | {len(group)} | "
                         f"{covered}/{len(group)} ({covered / len(group):.0%}) | "
                         f"{np.median([p['dr']['upper'] - p['dr']['lower'] for p in group]):.3f} | – | – | "
                         f"{np.mean([p['dr']['estimate'] - p['true_value'] for p in group]):+.3f} |")
    lines.append("")
    text = "\n".join(lines)
    write_section(title, text)
    print(text)
    return 0


def _spec_text(spec: dict) -> str:
    """The --exploration text of a parsed spec (inverse of demo.loop.exploration_spec)."""
    if spec["method"] == "epsilon_greedy":
        return f"epsilon_greedy:{spec['epsilon']:g}"
    return f"softmax:{spec['temperature']:g}" + (f":{spec['floor']:g}" if "floor" in spec else "")


if __name__ == "__main__":
    raise SystemExit(main())
