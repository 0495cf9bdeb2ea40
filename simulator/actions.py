"""The promotion catalogue: the baseline `no_action` (index 0) plus 8 promotions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

KINDS: tuple[str, ...] = (
    "none",
    "sitewide_discount",
    "category_discount",
    "free_shipping",
    "push_reminder",
    "email_digest",
    "loyalty_points",
)


@dataclass(frozen=True)
class Action:
    """One promotion the platform can show; unit_cost is paid per exposure, discounts cost revenue instead."""

    action_id: str
    kind: str
    discount: float
    category_id: int | None
    unit_cost: float
    description: str


CONTROL_ACTION = "no_action"

ACTIONS: tuple[Action, ...] = (
    Action(CONTROL_ACTION, "none", 0.0, None, 0.0, "Baseline: show nothing special."),
    Action("pct10_sitewide", "sitewide_discount", 0.10, None, 0.0, "10% off every item."),
    Action("pct20_sitewide", "sitewide_discount", 0.20, None, 0.0, "20% off every item."),
    Action("cat1_pct15", "category_discount", 0.15, 1, 0.0, "15% off items of category 1."),
    Action("cat3_pct15", "category_discount", 0.15, 3, 0.0, "15% off items of category 3."),
    # Shipping is paid by the shop; priced per exposure as the expected subsidy at typical conversion.
    Action("free_shipping", "free_shipping", 0.0, None, 0.25, "Free shipping on the next order."),
    Action("push_reminder", "push_reminder", 0.0, None, 0.02, "Mobile push: 'items you viewed are waiting'."),
    Action("email_digest", "email_digest", 0.0, None, 0.01, "Email digest of new items in favourite categories."),
    # Points are a liability booked at exposure time, so they are the most expensive promotion per exposure.
    Action("loyalty_points", "loyalty_points", 0.0, None, 0.5, "Double loyalty points on the next order."),
)

ACTION_IDS: tuple[str, ...] = tuple(a.action_id for a in ACTIONS)
N_ACTIONS: int = len(ACTIONS)
ACTION_INDEX: dict[str, int] = {a: i for i, a in enumerate(ACTION_IDS)}
# Promotions are every action except the baseline; index 0 is always the control.
PROMOTION_IDS: tuple[str, ...] = ACTION_IDS[1:]
UNIT_COSTS: np.ndarray = np.array([a.unit_cost for a in ACTIONS], dtype=np.float64)


def action_index(action_ids: object) -> np.ndarray:
    """Map action ids to their column index in ACTION_IDS; unknown ids raise a ValueError naming them."""
    ids = np.asarray(action_ids, dtype=object).ravel()
    unknown = sorted({str(a) for a in ids if a not in ACTION_INDEX})
    if unknown:
        raise ValueError(f"unknown action ids {unknown}; known ids are {list(ACTION_IDS)}")
    return np.fromiter((ACTION_INDEX[a] for a in ids), dtype=np.int64, count=len(ids))


def discount_multipliers(item_category: np.ndarray) -> np.ndarray:
    """Price multiplier (1 - discount where it applies) per action and item, shape (n_actions, n_items)."""
    item_category = np.asarray(item_category)
    mult = np.ones((N_ACTIONS, len(item_category)), dtype=np.float64)
    for a, action in enumerate(ACTIONS):
        if action.kind == "sitewide_discount":
            mult[a, :] = 1.0 - action.discount
        elif action.kind == "category_discount":
            mult[a, item_category == action.category_id] = 1.0 - action.discount
    return mult


def actions_frame() -> pd.DataFrame:
    """The catalogue as a table: action_id, kind, discount, category_id (Int64), unit_cost, description."""
    return pd.DataFrame(
        {
            "action_id": pd.Series([a.action_id for a in ACTIONS], dtype=object),
            "kind": pd.Series([a.kind for a in ACTIONS], dtype=object),
            "discount": pd.Series([a.discount for a in ACTIONS], dtype="float64"),
            "category_id": pd.array([a.category_id for a in ACTIONS], dtype="Int64"),
            "unit_cost": pd.Series([a.unit_cost for a in ACTIONS], dtype="float64"),
            "description": pd.Series([a.description for a in ACTIONS], dtype=object),
        }
    )
