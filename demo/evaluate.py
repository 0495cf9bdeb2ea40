"""Score served decisions against the simulator's ground truth, next to reference policies."""

from __future__ import annotations

import numpy as np

from simulator import CONTROL_ACTION, Shop, policy_value

REFERENCE_POLICIES = ("policy", "no_action", "random", "random_promotion", "oracle")


def incremental_value(shop: Shop, user_ids: np.ndarray, chosen: list[str], window_hours: float) -> dict[str, dict[str, float]]:
    """Expected incremental revenue and net value per served user, for the served policy and the references.

    Users without marketing consent may only get the control action under every policy (ours, random, oracle), so
    they add 0; the references are evaluated on the consented users and averaged over all served users.
    """
    chosen_arr = np.asarray(chosen, dtype=object)
    consent = shop.users.set_index("user_id").loc[user_ids, "consent_marketing"].to_numpy(dtype=bool)
    violations = int(((chosen_arr != CONTROL_ACTION) & ~consent).sum())
    if violations:
        raise ValueError(f"{violations} promotions were served to users without marketing consent")
    share = float(consent.mean())
    values = policy_value(shop, user_ids[consent], chosen_arr[consent], window_hours)
    return {
        metric: {name: share * values[name][f"incremental_{metric}_per_user"] for name in REFERENCE_POLICIES}
        for metric in ("revenue", "net_value")
    }
