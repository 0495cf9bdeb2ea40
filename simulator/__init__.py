"""Seeded, deterministic simulated shop: users, items, promotions, event streams and ground-truth uplift."""

from simulator.actions import ACTION_IDS, ACTIONS, CONTROL_ACTION, Action, actions_frame
from simulator.closed_loop import ClosedLoopDriver, DayLog, ServiceClient
from simulator.config import ShopConfig
from simulator.evaluation import oracle_actions, policy_value
from simulator.events import CORRUPTION_KINDS, EVENT_COLUMNS, Simulation, simulate, simulate_events
from simulator.response import expected_net_value, expected_revenue
from simulator.world import Shop, build_shop

__all__ = [
    "ACTIONS",
    "ACTION_IDS",
    "CONTROL_ACTION",
    "CORRUPTION_KINDS",
    "EVENT_COLUMNS",
    "Action",
    "ClosedLoopDriver",
    "DayLog",
    "ServiceClient",
    "Shop",
    "ShopConfig",
    "Simulation",
    "actions_frame",
    "build_shop",
    "expected_net_value",
    "expected_revenue",
    "oracle_actions",
    "policy_value",
    "simulate",
    "simulate_events",
]
