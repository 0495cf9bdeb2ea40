"""Every off-policy estimator on the simulator's logs against its exact truth, over many seeds.

    .venv/bin/python -m bench.ope_simulator              # 40 seeds; prints progress, the table, writes the section
    .venv/bin/python -m bench.ope_simulator --seeds 3 --no-write

Per seed s: a small shop `ShopConfig(n_users, n_days, seed=s)` is simulated (`simulator.simulate`); its logged
promo_exposure events carry action_id and the exact logging propensity. The reward of an exposure is the revenue
attributed to it — the project's training label, `training.labels.attributed_revenue` (purchases of the same
session within 72 h, last touch) — on the mature exposures (whole window before the end of the log). Its
expectation given (user, action) is `simulator.response.expected_revenue(shop, users, 72)` up to the rounding of
prices to cents, so the truth of a target policy π on the same exposures is exact:

    V(π) = (1/n) Σ_i Σ_a π(a | i) · expected_revenue[user_i, a]

Target policies (users without marketing consent can only get no_action, under every policy as under logging):
- rule: mobile → push_reminder, desktop → pct10_sitewide (deterministic, one-hot);
- epsilon-greedy (ε = 0.1) and softmax (T = 0.5, floor 0.02) over a noisy score, expected_revenue + N(0, 0.5²) per
  (user, action), computed by the decision service's own exploration code (`training.ope.policies`).
DM and the DR family use an XGBoost regressor of the reward on [observable user features, one-hot action],
cross-fitted over 3 folds; the user features are region, device, consent and aggregates of the user's page views
(count, mean log price, share per category), which the simulator draws independently of the action and the purchase,
so they carry no reward of the row they describe. Bias = mean(V̂ − V), RMSE = √mean((V̂ − V)²), coverage = share of
seeds whose 95 % interval holds V; width = mean interval width.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from xgboost import XGBRegressor

from bench.report import DOCS, machine_line, write_section
from simulator import ACTION_IDS, CONTROL_ACTION, Shop, ShopConfig, build_shop, expected_revenue, simulate
from training.labels import attributed_revenue, mature_exposures
from training.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    OffPolicyEvaluation,
    RegressionModel,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    convert_to_action_dist,
    epsilon_greedy_action_dist,
    softmax_action_dist,
)

HEADING = (
    "## Off-policy estimators on the simulator against its exact truth (`.venv/bin/python -m bench.ope_simulator`)"
)
WINDOW = pd.Timedelta(hours=72)
SWITCH_LAMBDA = 10.0  # as in bench.ope_obd; the rule policy's weights reach 1/(0.7/9) ≈ 12.9
SHRINKAGE_LAMBDA = 100.0
NOISE_SD = 0.5  # sd of the score noise, in expected-revenue units (promotions differ by 0.1 … 1.6 per exposure)
EPSILON = 0.1
TEMPERATURE, FLOOR = 0.5, 0.02
N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class SeedLog:
    """One seed's mature exposures as OBP inputs, with the exact expected reward of every action."""

    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    context: np.ndarray
    expected: np.ndarray  # (n, n_actions) expected attributed revenue
    consent: np.ndarray
    mobile: np.ndarray
    users: np.ndarray


def estimators() -> list:
    """The compared estimators (λ as in bench.ope_obd)."""
    return [
        InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(), DirectMethod(), DoublyRobust(),
        SelfNormalizedDoublyRobust(), SwitchDoublyRobust(lambda_=SWITCH_LAMBDA),
        DoublyRobustWithShrinkage(lambda_=SHRINKAGE_LAMBDA),
    ]


def user_features(shop: Shop, events: pd.DataFrame) -> np.ndarray:
    """Per user: region one-hot, mobile, consent, page-view count, mean log price viewed, view share per category."""
    users = shop.users.set_index("user_id").sort_index()
    views = events[events["event_type"] == "page_view"]
    user = views["user_id"].to_numpy(dtype=np.int64)
    n_users, n_categories = shop.n_users, shop.config.n_categories
    count = np.bincount(user, minlength=n_users).astype(float)
    log_price = np.bincount(user, weights=np.log(views["price"].to_numpy(dtype=float)), minlength=n_users)
    shares = np.zeros((n_users, n_categories))
    np.add.at(shares, (user, views["category_id"].to_numpy(dtype=np.int64)), 1.0)
    seen = np.maximum(count, 1.0)
    return np.column_stack([
        pd.get_dummies(users["region"]).to_numpy(dtype=float),
        (users["device"] == "mobile").to_numpy(dtype=float),
        users["consent_marketing"].to_numpy(dtype=float),
        count, log_price / seen, shares / seen[:, None],
    ])


def seed_log(n_users: int, n_days: int, seed: int) -> SeedLog:
    """Simulate a shop, label its mature exposures with attributed revenue, attach the exact expected rewards."""
    shop = build_shop(ShopConfig(n_users=n_users, n_days=n_days, seed=seed))
    events = simulate(shop).clean_events
    exposures = events[events["event_type"] == "promo_exposure"].reset_index(drop=True)
    purchases = events[events["event_type"] == "purchase"]
    label = attributed_revenue(exposures, purchases, WINDOW)
    keep = mature_exposures(exposures, pd.Timestamp(shop.config.end), WINDOW).to_numpy()
    exposures, label = exposures[keep], label[keep]
    users = exposures["user_id"].to_numpy(dtype=np.int64)
    index = {a: i for i, a in enumerate(ACTION_IDS)}
    profile = shop.users.set_index("user_id").sort_index()
    return SeedLog(
        action=exposures["action_id"].map(index).to_numpy(dtype=np.int64),
        reward=label.to_numpy(dtype=float),
        pscore=exposures["propensity"].to_numpy(dtype=float),
        context=user_features(shop, events)[users],
        expected=expected_revenue(shop, users, WINDOW / pd.Timedelta(hours=1)),
        consent=profile["consent_marketing"].to_numpy(dtype=bool)[users],
        mobile=(profile["device"] == "mobile").to_numpy(dtype=bool)[users],
        users=users,
    )


def target_policies(log: SeedLog, seed: int) -> dict[str, np.ndarray]:
    """{policy name: action_dist (n, 9, 1)} for the rule, epsilon-greedy and softmax targets."""
    control, push, pct10 = (ACTION_IDS.index(a) for a in (CONTROL_ACTION, "push_reminder", "pct10_sitewide"))
    rule = np.where(~log.consent, control, np.where(log.mobile, push, pct10))
    noise = np.random.default_rng([seed, 99]).normal(0.0, NOISE_SD, size=(log.users.max() + 1, len(ACTION_IDS)))
    scores = log.expected + noise[log.users]
    candidates = [list(ACTION_IDS) if consented else [CONTROL_ACTION] for consented in log.consent]
    row_scores = [s if consented else s[[control]] for s, consented in zip(scores, log.consent, strict=True)]
    return {
        "rule (deterministic)": convert_to_action_dist(len(ACTION_IDS), rule[:, None]),
        f"epsilon-greedy ε={EPSILON:g}, noisy score": epsilon_greedy_action_dist(
            candidates, row_scores, ACTION_IDS, EPSILON),
        f"softmax T={TEMPERATURE:g} floor {FLOOR:g}, noisy score": softmax_action_dist(
            candidates, row_scores, ACTION_IDS, TEMPERATURE, FLOOR),
    }


def run_seed(n_users: int, n_days: int, seed: int) -> tuple[list[dict], dict[str, float]]:
    """Rows (policy, estimator, estimate, truth, intervals, ESS) of one seed, and facts about its log."""
    log = seed_log(n_users, n_days, seed)
    model = RegressionModel(
        XGBRegressor(n_estimators=200, max_depth=3, learning_rate=0.05, min_child_weight=20.0, n_jobs=2,
                     random_state=seed),
        n_actions=len(ACTION_IDS),
    )
    q_hat = model.fit_predict(log.context, log.action, log.reward, pscore=log.pscore, n_folds=3, random_state=seed)
    feedback = {"action": log.action, "reward": log.reward, "pscore": log.pscore, "position": None}
    ope = OffPolicyEvaluation(feedback, estimators())
    rows = []
    for policy, action_dist in target_policies(log, seed).items():
        truth = float((action_dist[:, :, 0] * log.expected).sum(axis=1).mean())
        estimates = ope.estimate_with_diagnostics(
            action_dist, q_hat, n_bootstrap_samples=N_BOOTSTRAP,
            random_state=seed,
        )
        for name, e in estimates.items():
            rows.append({
                "seed": seed, "policy": policy, "estimator": name, "estimate": e.value, "truth": truth,
                "lower": e.lower, "upper": e.upper, "boot_lower": e.bootstrap_lower, "boot_upper": e.bootstrap_upper,
                "ess": e.ess, "max_weight": e.max_weight,
            })
    rounds = np.arange(len(log.reward))
    # Sanity check of reward vs truth: E[label_i | user_i, a_i] = expected_revenue[user_i, a_i].
    label_gap = float(np.mean(log.reward - log.expected[rounds, log.action]))
    facts = {"n": len(log.reward), "label_minus_truth": label_gap, "bought": float(np.mean(log.reward > 0)),
             "max_reward": float(log.reward.max())}
    return rows, facts


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Bias, RMSE, coverage and mean width per (policy, estimator) over seeds."""
    err = rows["estimate"] - rows["truth"]
    rows = rows.assign(
        err=err, sq=err**2,
        hit=(rows["lower"] <= rows["truth"]) & (rows["truth"] <= rows["upper"]),
        boot_hit=(rows["boot_lower"] <= rows["truth"]) & (rows["truth"] <= rows["boot_upper"]),
        width=rows["upper"] - rows["lower"], boot_width=rows["boot_upper"] - rows["boot_lower"],
    )
    grouped = rows.groupby(["policy", "estimator"], sort=False)
    out = grouped.agg(
        truth=("truth", "mean"), bias=("err", "mean"), mse=("sq", "mean"), coverage=("hit", "mean"),
        boot_coverage=("boot_hit", "mean"), width=("width", "mean"), boot_width=("boot_width", "mean"),
        ess=("ess", "mean"), max_weight=("max_weight", "max"),
    )
    out["rmse"] = np.sqrt(out.pop("mse"))
    out["bias_se"] = grouped["err"].std(ddof=1) / np.sqrt(grouped.size())
    return out


def table(stats: pd.DataFrame) -> list[str]:
    """Markdown rows of the summary."""
    lines = [
        ("| target policy | mean truth | estimator | bias (± se) | RMSE | coverage analytic / bootstrap "
        "| mean width analytic / bootstrap | mean ESS | max w |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (policy, name), r in stats.iterrows():
        lines.append(
            f"| {policy} | {r['truth']:.3f} | {name} | {r['bias']:+.3f} (± {r['bias_se']:.3f}) | {r['rmse']:.3f} "
            f"| {r['coverage']:.0%} / {r['boot_coverage']:.0%} | {r['width']:.3f} / {r['boot_width']:.3f} "
            f"| {r['ess']:,.0f} | {r['max_weight']:.1f} |"
        )
    return lines


def closing(stats: pd.DataFrame, facts: list[dict[str, float]], n_seeds: int) -> str:
    """The paragraph under the table: how to read bias and coverage, computed from the figures."""
    within = stats["bias"].abs() <= 2 * stats["bias_se"]
    unbiased = [name for name, ok in within.groupby(level="estimator", sort=False).all().items() if ok]
    covered = stats[stats.index.get_level_values("estimator").isin(unbiased)]["coverage"]
    coverage = f"{covered.min():.0%}–{covered.max():.0%}" if len(covered) else "n/a"
    return (
        f"Bias ± se: the se is the sd of V̂ − V over the {n_seeds} seeds / √{n_seeds}, so a bias within about 2 se is "
        f"noise; coverage over {n_seeds} seeds has a binomial sd of about {np.sqrt(0.95 * 0.05 / n_seeds):.0%} at "
        f"95 %. The reward is heavy-tailed ({np.mean([f['bought'] for f in facts]):.1%} of exposures lead to a "
        f"purchase in the window, labels up to {max(f['max_reward'] for f in facts):.0f}), so that se is itself "
        f"rough. Within 2 se of the truth for every target policy: {', '.join(unbiased) or 'none'}; their analytic "
        f"intervals covered the truth in {coverage} of the seeds. DM inherits the reward model's error: revenue "
        "predicted from observable features shrinks the differences between actions toward the logging mix, so DM "
        "underrates policies that pick better promotions, and its interval (the reward model held fixed) is far "
        "too narrow. Switch-DR and DR-OS lean on that model where weights are large and carry part of its bias."
    )


def main() -> None:
    """Run every seed with progress, print the table and write the section unless --no-write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    machine = machine_line()
    started = time.perf_counter()
    rows, facts = [], []
    for seed in range(args.seeds):
        seed_started = time.perf_counter()
        seed_rows, seed_facts = run_seed(args.users, args.days, seed)
        rows += seed_rows
        facts.append(seed_facts)
        print(f"seed {seed + 1}/{args.seeds}: {seed_facts['n']:,} mature exposures, "
              f"{time.perf_counter() - seed_started:.1f} s", flush=True)
    stats = summary(pd.DataFrame(rows))
    n_rounds = np.array([f["n"] for f in facts])
    label_gap = np.array([f["label_minus_truth"] for f in facts])
    text = "\n".join([
        HEADING, "",
        (f"{machine}. {args.seeds} seeds (0…{args.seeds - 1}), each a shop of {args.users:,} users × {args.days} days "
        f"(`ShopConfig(n_users, n_days, seed)`, other settings default) giving {n_rounds.min():,}–{n_rounds.max():,} "
        f"mature exposures (mean {n_rounds.mean():,.0f}); reward = the attributed revenue of the exposure "
        f"(`training.labels.attributed_revenue`, 72 h, the project's training label), truth = the exact expected "
        f"revenue of the target policy on the same exposures (`simulator.response.expected_revenue`). Sanity check of "
        f"that pairing: mean over exposures of label − expected_revenue[user, logged action] = {label_gap.mean():+.4f} "
        f"(± {label_gap.std(ddof=1) / np.sqrt(label_gap.size):.4f} over seeds). Reward model: XGBRegressor(200 trees, "
        f"depth 3) on observable user features + one-hot action, 3-fold cross-fitted. Switch-DR λ = "
        f"{SWITCH_LAMBDA:g}, DR-OS λ = {SHRINKAGE_LAMBDA:g}; bootstrap: OBP's percentile bootstrap, {N_BOOTSTRAP:,} "
        f"resamples. Users without consent get no_action under every policy (weight 1). "
        f"Total {time.perf_counter() - started:.0f} s."),
        "",
        *table(stats),
        "",
        closing(stats, facts, args.seeds),
        "",
    ])
    print(text)
    if not args.no_write:
        write_section(HEADING, text)
        print(f"wrote the section to {DOCS}")


if __name__ == "__main__":
    main()
