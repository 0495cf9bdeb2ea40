import numpy as np
import pytest

from demo.evaluate import incremental_value
from simulator import ShopConfig, build_shop, oracle_actions, policy_value

SHOP = build_shop(ShopConfig(n_users=400, n_items=50, n_days=2, seed=2))
USERS = np.arange(400)
CONSENT = SHOP.users["consent_marketing"].to_numpy(bool)


def test_serving_nothing_is_worth_zero_and_references_are_consent_weighted():
    value = incremental_value(SHOP, USERS, ["no_action"] * 400, 72.0)
    assert value["net_value"]["policy"] == 0.0 and value["revenue"]["no_action"] == 0.0
    consented = policy_value(SHOP, USERS[CONSENT], ["no_action"] * int(CONSENT.sum()), 72.0)
    share = CONSENT.mean()
    assert value["net_value"]["oracle"] == pytest.approx(share * consented["oracle"]["incremental_net_value_per_user"])
    assert value["revenue"]["random"] == pytest.approx(share * consented["random"]["incremental_revenue_per_user"])


def test_the_consent_respecting_oracle_policy_scores_as_the_oracle():
    chosen = np.where(CONSENT, oracle_actions(SHOP, USERS, 72.0), "no_action")
    value = incremental_value(SHOP, USERS, list(chosen), 72.0)
    assert value["net_value"]["policy"] == pytest.approx(value["net_value"]["oracle"])


def test_a_promotion_served_without_consent_is_an_error():
    chosen = ["no_action"] * 400
    chosen[int(np.flatnonzero(~CONSENT)[0])] = "push_reminder"
    with pytest.raises(ValueError, match="1 promotions were served to users without marketing consent"):
        incremental_value(SHOP, USERS, chosen, 72.0)
