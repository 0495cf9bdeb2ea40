"""Ground truth of a closed-loop round: the true incremental net value per decision of the served policy and of the
reference policies, on the same decisions (users, their logged candidates), from the simulator's exact response.

v[i, a] = expected_net_value(u_i, a) − expected_net_value(u_i, no_action): the exact expected revenue within the
attribution window minus the action's unit cost, relative to showing nothing. Per policy the value of decision i is

    served                  v[i, served action]
    no_action               0
    random_promotion        mean of v[i, a] over the promotions among the decision's candidates (0 if none)
    best_single_action      v[i, a*] if a* is a candidate (else 0); a* = the action with the best mean over the shop
    oracle_unconstrained    max over all actions of v[i, a] (≥ 0: no_action is one): no exploration, caps, budgets
                            or eligibility — consent and regional rules included, so it bounds every policy above
    oracle                  the constrained oracle: (1 − ε)·v[i, x_i] + ε·mean_{a ∈ candidates_i} v[i, a], where x is
                            the assignment maximising Σ v subject to each paced campaign's daily budget
                            (count(a) ≤ budget/cost: a linear program, HiGHS) — the same exploration rate,
                            candidates (eligibility, consent, caps) and budgets as the served surface. Under a
                            softmax surface: Σ_a p_ia v[i, a] with p the surface's softmax of v over the candidates
                            (same temperature and floor; the daily budgets are not imposed on a softmax)
    feature_limited_oracle  the same constrained assignment chosen by v̂ (v predicted from the logged features by
                            the champion's base learner, cross-fitted), valued by v: what the features can see
    response_model          chosen by r̂(x, a) − cost(a) − r̂(x, no_action), r̂ one XGBoost of revenue on features +
                            action trained on the round's training set; valued by v
    policy_greedy           chosen by the champion's own scores (uplift − cost), the same constrained way

Values are means over decisions with a normal 95 % interval (paired against no_action, whose value is 0 for every
decision). Pacing through the day and frequency caps are not in the oracle's constraints (only the daily budget):
it is an upper bound of the best policy under the surface's rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from sklearn.model_selection import KFold
from xgboost import XGBRegressor

from serving.policy.exploration import Exploration, distribution
from simulator.actions import ACTION_IDS, ACTION_INDEX, CONTROL_ACTION, UNIT_COSTS
from simulator.response import expected_net_value
from simulator.world import Shop

PROMOTIONS = [a for a in ACTION_IDS if a != CONTROL_ACTION]


@dataclass(frozen=True)
class Value:
    """Mean true incremental net value per decision with a 95 % normal interval."""

    mean: float
    lower: float
    upper: float

    @classmethod
    def of(cls, values: np.ndarray) -> Value:
        """Mean ± 1.96·sd/√n of per-decision values."""
        values = np.asarray(values, dtype=float)
        half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        return cls(float(values.mean()), float(values.mean() - half), float(values.mean() + half))

    def as_dict(self) -> dict[str, float]:
        """Rounded for the summary."""
        return {"mean": round(self.mean, 4), "lower": round(self.lower, 4), "upper": round(self.upper, 4)}


def incremental_truth(shop: Shop, user_ids: np.ndarray) -> np.ndarray:
    """v (n, n_actions) in ACTION_IDS order: exact expected net value minus that of no_action."""
    net = expected_net_value(shop, np.asarray(user_ids, dtype=np.int64))
    return net - net[:, [ACTION_INDEX[CONTROL_ACTION]]]


def candidate_mask(candidates: Sequence[Sequence[str]]) -> np.ndarray:
    """(n, n_actions) booleans: which actions each decision could serve."""
    mask = np.zeros((len(candidates), len(ACTION_IDS)), dtype=bool)
    for i, names in enumerate(candidates):
        mask[i, [ACTION_INDEX[a] for a in names]] = True
    return mask


def budget_counts(budgets: Sequence[Mapping]) -> dict[int, int]:
    """Per budgeted action, the most exposures one day's budget pays for (a surface's paced campaigns)."""
    counts: dict[int, int] = {}
    for budget in budgets:
        for action, cost in budget["costs"].items():
            if cost > 0:
                n = int(budget["daily_budget"] // cost)
                counts[ACTION_INDEX[action]] = min(counts.get(ACTION_INDEX[action], n), n)
    return counts


def constrained_choice(scores: np.ndarray, mask: np.ndarray, counts: Mapping[int, int]) -> np.ndarray:
    """x (n, n_actions), rows summing to 1 on candidates: argmax of `scores`, or the LP optimum when a budget binds."""
    masked = np.where(mask, scores, -np.inf)
    greedy = masked.argmax(axis=1)
    x = np.zeros_like(scores, dtype=float)
    x[np.arange(len(scores)), greedy] = 1.0
    if all((greedy == a).sum() <= n for a, n in counts.items()):
        return x
    rows, cols = np.nonzero(mask)
    n_vars = len(rows)
    one_each = coo_matrix((np.ones(n_vars), (rows, np.arange(n_vars))), shape=(len(scores), n_vars))
    budgeted = [(a, n) for a, n in counts.items()]
    caps = coo_matrix(
        (np.ones(sum(int((cols == a).sum()) for a, _ in budgeted)),
         (np.concatenate([np.full(int((cols == a).sum()), k) for k, (a, _) in enumerate(budgeted)]),
          np.concatenate([np.nonzero(cols == a)[0] for a, _ in budgeted]))),
        shape=(len(budgeted), n_vars),
    )
    result = linprog(-scores[rows, cols], A_ub=caps, b_ub=[n for _, n in budgeted], A_eq=one_each,
                     b_eq=np.ones(len(scores)), bounds=(0, 1), method="highs")
    if not result.success:
        raise RuntimeError(f"the budget assignment LP failed: {result.message}")
    x = np.zeros_like(scores, dtype=float)
    x[rows, cols] = result.x
    return x


def explored(v: np.ndarray, x: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
    """Per decision: (1 − ε)·Σ_a x_ia v_ia + ε·mean over the candidates of v."""
    uniform = np.where(mask, v, 0.0).sum(axis=1) / mask.sum(axis=1)
    return (1 - epsilon) * (x * v).sum(axis=1) + epsilon * uniform


def policy_value(v: np.ndarray, scores: np.ndarray, mask: np.ndarray, counts: Mapping[int, int],
                 exploration: Exploration) -> np.ndarray:
    """Per decision, the expected true value v of the surface's policy driven by `scores`: epsilon-greedy (or greedy)
    around the budget-constrained assignment (`constrained_choice`, `explored`), or the softmax of the scores over
    each decision's candidates (budgets not imposed). Thompson needs each user's uncertainty, which a score matrix
    does not carry: refused."""
    if exploration.method in ("greedy", "epsilon_greedy"):
        epsilon = exploration.epsilon if exploration.method == "epsilon_greedy" else 0.0
        return explored(v, constrained_choice(scores, mask, counts), mask, epsilon)
    if exploration.method != "softmax":
        raise ValueError(f"the loop's truth values greedy, epsilon_greedy and softmax surfaces; got {exploration.method!r}")
    out = np.empty(len(v))
    with np.errstate(over="ignore"):
        for i in range(len(v)):
            candidates = np.flatnonzero(mask[i])
            out[i] = float(distribution(scores[i, candidates].astype(float), exploration) @ v[i, candidates])
    return out


def cross_fitted_truth_model(X: np.ndarray, v: np.ndarray, seed: int = 0, **xgb: object) -> np.ndarray:
    """v̂ (n, n_actions): per action, an XGBoost regressor of v on the features, each row predicted out of fold."""
    out = np.zeros_like(v)
    folds = KFold(n_splits=2, shuffle=True, random_state=seed)
    for train, test in folds.split(X):
        for a in range(v.shape[1]):
            if ACTION_IDS[a] == CONTROL_ACTION:
                continue
            model = XGBRegressor(random_state=seed, n_jobs=1, **xgb).fit(X[train], v[train, a])
            out[test, a] = model.predict(X[test])
    return out


def response_model_scores(train: pd.DataFrame, features: list[str], X: np.ndarray, seed: int = 0,
                          **xgb: object) -> np.ndarray:
    """r̂(x, a) − cost(a) − r̂(x, no_action) per action: one XGBoost of revenue on features + the action (one-hot)."""
    onehot = (train["action_id"].to_numpy()[:, None] == np.array(ACTION_IDS)[None, :]).astype(np.float32)
    model = XGBRegressor(random_state=seed, n_jobs=2, **xgb).fit(
        np.hstack([train[features].to_numpy(np.float32), onehot]), train["label_revenue"].to_numpy(float)
    )
    predictions = np.column_stack([
        model.predict(np.hstack([X, np.tile(np.eye(len(ACTION_IDS), dtype=np.float32)[a], (len(X), 1))]))
        for a in range(len(ACTION_IDS))
    ]) - UNIT_COSTS[None, :]
    return predictions - predictions[:, [ACTION_INDEX[CONTROL_ACTION]]]


def round_values(
    shop: Shop,
    user_ids: np.ndarray,
    served: Sequence[str],
    candidates: Sequence[Sequence[str]],
    exploration: Exploration,
    budgets: Sequence[Mapping],
    best_single: str,
    learned_scores: Mapping[str, np.ndarray],
) -> dict[str, Value]:
    """The value of every policy of the module docstring on one round's decisions."""
    v = incremental_truth(shop, user_ids)
    mask = candidate_mask(candidates)
    rows = np.arange(len(v))
    counts = budget_counts(budgets)
    promos = mask.copy()
    promos[:, ACTION_INDEX[CONTROL_ACTION]] = False
    n_promos = promos.sum(axis=1)
    values = {
        "policy": v[rows, [ACTION_INDEX[a] for a in served]],
        "no_action": np.zeros(len(v)),
        "random_promotion": np.where(n_promos > 0, np.where(promos, v, 0).sum(axis=1) / np.maximum(n_promos, 1), 0.0),
        "best_single_action": np.where(mask[:, ACTION_INDEX[best_single]], v[:, ACTION_INDEX[best_single]], 0.0),
        "oracle_unconstrained": v.max(axis=1),
        "oracle": policy_value(v, v, mask, counts, exploration),
    }
    for name, scores in learned_scores.items():
        values[name] = policy_value(v, scores, mask, counts, exploration)
    return {name: Value.of(x) for name, x in values.items()}


def best_single_action(shop: Shop) -> str:
    """The one action that earns the most incremental net value over all the shop's consenting users."""
    users = shop.users.loc[shop.users["consent_marketing"], "user_id"].to_numpy()
    return ACTION_IDS[int(incremental_truth(shop, users).mean(axis=0).argmax())]
