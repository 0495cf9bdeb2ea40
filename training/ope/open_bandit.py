"""Open Bandit Dataset (ZOZOTOWN, 80 items × 3 slots) read into OBP's bandit_feedback, and BTS's action_dist.

`load_open_bandit(data_path, behavior_policy)` reads `<data_path>/<behavior_policy>/<campaign>/<campaign>.csv[.gz]`
and `item_context.csv` exactly as OBP's `OpenBanditDataset` does:

- rows sorted by timestamp (pandas' default sort, as OBP: the three slots of one impression share a timestamp);
- action = item_id, position = dense rank of the 1-based position − 1 (0-based slot), reward = click,
  pscore = propensity_score (the logging probability of the item at that slot);
- context = one-hot of the hashed user features (`pd.get_dummies(..., drop_first=True)`), as float;
- action_context = the label-encoded categorical item features followed by item_feature_0.

`on_policy_value(reward)`: the mean reward of a policy's own log — OBP's ground truth for evaluating that policy
off-policy from another policy's log (`OpenBanditDataset.calc_on_policy_policy_value_estimate`) — with a normal
95 % interval mean ± z·sd(ddof=1)/√n. `bts_action_dist` computes the BTS policy's slot probabilities from the
production Beta priors in prior_bts.yaml, as OBP's `BernoulliTS(is_zozotown_prior=True, campaign=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import rankdata
from sklearn.preprocessing import LabelEncoder

from training.ope.intervals import normal_interval
from training.ope.policies import bernoulli_ts_action_dist

BEHAVIOR_POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
LEN_LIST = 3


@dataclass(frozen=True)
class OnPolicyValue:
    """A policy's mean reward in its own log with a normal-approximation interval."""

    value: float
    se: float
    lower: float
    upper: float
    n_rounds: int

    def contains(self, estimate: float) -> bool:
        """Whether `estimate` lies inside the interval."""
        return self.lower <= estimate <= self.upper


def load_open_bandit(data_path: Path | str, behavior_policy: str, campaign: str = "all") -> dict[str, object]:
    """OBP's bandit_feedback dict of one policy's log: n_rounds, n_actions, action, position, reward, pscore,
    context, action_context."""
    if behavior_policy not in BEHAVIOR_POLICIES:
        raise ValueError(f"behavior_policy must be one of {BEHAVIOR_POLICIES}; got {behavior_policy!r}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}; got {campaign!r}")
    folder = Path(data_path) / behavior_policy / campaign
    log_file = next((p for p in (folder / f"{campaign}.csv", folder / f"{campaign}.csv.gz") if p.exists()), None)
    if log_file is None:
        raise ValueError(f"no {campaign}.csv or {campaign}.csv.gz in {folder}; point data_path at the dataset root")
    data = pd.read_csv(log_file, index_col=0)
    item_context = pd.read_csv(folder / "item_context.csv", index_col=0)
    data = data.sort_values("timestamp")  # pandas' default (non-stable) sort, exactly as OBP
    action = data["item_id"].to_numpy()
    user_columns = data.columns[data.columns.str.contains("user_feature")]
    context = pd.get_dummies(data.loc[:, user_columns], drop_first=True).to_numpy(dtype=float)
    categorical = item_context.drop(columns=["item_id", "item_feature_0"]).apply(LabelEncoder().fit_transform)
    action_context = pd.concat([categorical, item_context["item_feature_0"].to_frame()], axis=1).to_numpy(dtype=float)
    return {
        "n_rounds": int(data.shape[0]),
        "n_actions": int(action.max() + 1),
        "action": action.astype(int),
        "position": (rankdata(data["position"].to_numpy(), "dense") - 1).astype(int),
        "reward": data["click"].to_numpy(dtype=float),
        "pscore": data["propensity_score"].to_numpy(dtype=float),
        "context": context,
        "action_context": action_context,
    }


def load_bts_prior(path: Path | str, campaign: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of the production BTS policy's Beta priors for `campaign` from prior_bts.yaml."""
    with open(path, "rb") as handle:
        prior = yaml.safe_load(handle)
    if campaign not in prior:
        raise ValueError(f"{path} has no campaign {campaign!r}; it has {sorted(prior)}")
    return np.asarray(prior[campaign]["alpha"], dtype=float), np.asarray(prior[campaign]["beta"], dtype=float)


def bts_action_dist(
    prior_path: Path | str, n_rounds: int, campaign: str = "all", n_sim: int = 100000, random_state: int | None = 12345
) -> np.ndarray:
    """BTS's action_dist (n_rounds, 80, 3) from its production prior, seeded (OBP's examples use 12345)."""
    alpha, beta = load_bts_prior(prior_path, campaign)
    return bernoulli_ts_action_dist(alpha, beta, len_list=LEN_LIST, n_rounds=n_rounds, n_sim=n_sim,
                                    random_state=random_state)


def on_policy_value(reward: np.ndarray, alpha: float = 0.05) -> OnPolicyValue:
    """Mean reward of a policy's own log and its normal interval: OBP's on-policy ground truth."""
    values = np.asarray(reward, dtype=float)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"reward must be 1-D with at least two rounds; got shape {values.shape}")
    mean = float(values.mean())
    se = float(values.std(ddof=1) / np.sqrt(values.size))
    lower, upper = normal_interval(mean, se, alpha)
    return OnPolicyValue(mean, se, lower, upper, int(values.size))
