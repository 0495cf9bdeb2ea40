"""The loop's plot: true value per round of the served policy and the references; off-policy estimates vs truth."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

SHOWN = (("policy", "served policy", "C0"), ("policy_greedy", "champion, greedy", "C9"),
         ("response_model", "response model", "C1"), ("random_promotion", "random promotion", "C7"),
         ("best_single_action", "best single action", "C5"), ("feature_limited_oracle", "feature-limited oracle", "C4"),
         ("oracle", "oracle (constrained)", "C3"), ("oracle_unconstrained", "oracle (unconstrained)", "C8"),
         ("no_action", "no action", "k"))


def plot_rounds(summary: dict, path: Path) -> Path:
    """Left: value per decision by round with 95 % intervals; right: the gate's DR interval vs the challenger's truth."""
    rounds = summary["rounds"]
    x = [r["round"] for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for key, label, color in SHOWN:
        values = [r["value_per_user"].get(key) for r in rounds]
        if any(v is None for v in values):
            continue
        means = [v["mean"] for v in values]
        errors = [[v["mean"] - v["lower"] for v in values], [v["upper"] - v["mean"] for v in values]]
        left.errorbar(x, means, yerr=errors, label=label, color=color, marker="o", capsize=3,
                      linestyle="--" if "oracle" in key else "-")
    left.set(xlabel="round (simulated day)", ylabel="true incremental net value per decision",
             title=f"Closed loop on the {summary['shop']['name']} shop ({summary['shop']['users']} users)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    ope = [(r["round"], r["off_policy"]) for r in rounds if "dr" in r["off_policy"]]
    if ope:
        rx = [k for k, _ in ope]
        estimate = [o["dr"]["estimate"] for _, o in ope]
        errors = [[o["dr"]["estimate"] - o["dr"]["lower"] for _, o in ope],
                  [o["dr"]["upper"] - o["dr"]["estimate"] for _, o in ope]]
        right.errorbar(rx, estimate, yerr=errors, fmt="o", capsize=4, label="DR estimate, 95 % interval")
        right.scatter(rx, [o["true_value"] for _, o in ope], marker="x", color="C3", s=60, zorder=3,
                      label="true value")
    right.set(xlabel="round", ylabel="challenger's net value per decision on the gate window",
              title="Off-policy estimate of each challenger vs its true value")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
