"""The closed loop's figures for docs/benchmarks.md: runs `make loop`'s code (demo.loop) and tabulates its summary.

    .venv/bin/python -m bench.closed_loop [--rounds 4 --users 10000 --history-days 21 --shop default --seed 7]
"""

from __future__ import annotations

import json
import sys

from bench.report import machine_line, write_section
from demo import loop
from infra.settings import HyperliftSettings

TITLE = "## Closed loop, {shop} shop, ε = {epsilon} (`.venv/bin/python -m bench.closed_loop`, the code of `make loop`)"
COLUMNS = ("policy", "policy_greedy", "response_model", "best_single_action", "random_promotion",
           "feature_limited_oracle", "oracle", "oracle_unconstrained")


def _title(summary: dict) -> str:
    return TITLE.format(shop=summary["shop"]["name"], epsilon=summary["exploration"]["epsilon"])


def section(summary: dict, command: str, machine: str) -> str:
    """The summary as a markdown section: value per decision per round, the gate, the off-policy check."""
    shop = summary["shop"]
    lines = [
        _title(summary), "",
        f"`{command}`; {machine}. Shop `{shop['name']}`: {shop['users']} users, {shop['history_days']} days of "
        f"history, seed {shop['seed']} (config {shop['config_hash']}, surfaces {shop['surfaces_hash']}, catalogue "
        f"{shop['catalogue_hash']}); surface `{summary['surface']}` ({summary['exploration']['method']}, ε = "
        f"{summary['exploration']['epsilon']}); {summary['seconds']:.0f} s in all. True incremental net value per "
        "decision (mean [95 % interval]) from the simulator's exact response, on each round's served decisions:",
        "",
        "| round | decisions | " + " | ".join(COLUMNS) + " | gate | DR of the challenger [interval] vs truth |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|---|",
    ]
    for r in summary["rounds"]:
        values = r["value_per_user"]
        cells = [f"{values[c]['mean']:.3f} [{values[c]['lower']:.3f}, {values[c]['upper']:.3f}]" for c in COLUMNS]
        gate = "promoted v" + r["gate"]["champion_after"] if r["gate"]["passed"] else "refused: " + "; ".join(
            reason.split(":")[0] if reason.startswith(("dr", "snipw")) else reason.split(";")[0].split(":")[0]
            for reason in r["gate"]["reasons"])
        ope = r["off_policy"]
        check = (f"{ope['dr']['estimate']:.3f} [{ope['dr']['lower']:.3f}, {ope['dr']['upper']:.3f}] vs "
                 f"{ope['true_value']:.3f} ({'covered' if ope['dr']['covers_truth'] else 'missed'}; ESS "
                 f"{ope['ess']:.0f})") if "dr" in ope else "–"
        lines.append(f"| {r['round']} | {r['decisions']} | " + " | ".join(cells) + f" | {gate} | {check} |")
    final = summary["final"]
    lines += ["", f"Final round: {final['share_of_constrained_oracle']:.0%} of the constrained oracle, "
              f"{final['share_of_unconstrained_oracle']:.0%} of the unconstrained one, "
              f"{final['vs_response_model']}× the response model; DR intervals covered the challenger's truth in "
              f"{final['dr_interval_coverage']} rounds; value never below the previous round's lower bound: "
              f"{final['never_below_previous_lower_bound']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the loop, then write its section of docs/benchmarks.md."""
    argv = sys.argv[1:] if argv is None else argv
    machine = machine_line()
    code = loop.main(argv)
    summary = json.loads((HyperliftSettings().reports_dir / "loop_summary.json").read_text())
    text = section(summary, " ".join([".venv/bin/python -m bench.closed_loop", *argv]), machine)
    write_section(_title(summary), text)
    print(text)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
