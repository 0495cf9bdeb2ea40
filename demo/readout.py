"""The demo's decision-log stage: the simulated shop answers the served decisions with purchases (POST /v1/outcomes),
then, in this process on the demo's Dagster instance (the runs and partitions show in `make dagster`),
`decision_log_job` drains the streams into the lake and adds the served days to the decision_days partitions, and
`decision_readout_job` materializes `decision_outcomes` and `experiment_readout` for each of them. One line per day:
decisions, outcomes joined, and the readout's headline (an arm against its control, revenue per user, 95 % interval).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from dagster_project.assets.decisions import DECISION_TRACE, OUTCOME_EVENTS
from dagster_project.partitions import DECISION_DAYS
from demo.traffic import Served
from simulator import ServiceClient, Shop
from simulator.actions import ACTION_INDEX
from simulator.response import sample_session_outcomes

OUTCOME_DRAWS = 23  # the random stream of the demo's purchases, apart from the shop's history and the loop's
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the stage prints its own line per day


def served_days(served: Served) -> list[str]:
    """UTC dates (YYYY-MM-DD) on which the decisions were served, ascending."""
    return sorted({datetime.fromtimestamp(ts, UTC).date().isoformat() for ts in served.served_at})


def window_end(days: list[str], window_hours: float) -> datetime:
    """The instant the attribution windows of the last served day close: outcomes by then are all in."""
    last = date.fromisoformat(days[-1]) + timedelta(days=1)
    return datetime.combine(last, datetime.min.time(), UTC) + timedelta(hours=window_hours)


def sampled_outcomes(shop: Shop, served: Served, n_known: int, until: datetime) -> pd.DataFrame:
    """The purchases the shop's users make after the first `n_known` served decisions (users the shop knows; the
    cold-start ones are not in it): decision_id, revenue and ts (epoch seconds), for those made by `until`."""
    unknown = sorted(set(served.actions[:n_known]) - set(ACTION_INDEX))
    if unknown:
        raise ValueError(f"the service served {unknown}, which the simulated shop does not know; its actions are "
                         f"{list(ACTION_INDEX)}")
    actions = np.array([ACTION_INDEX[a] for a in served.actions[:n_known]], dtype=np.int64)
    rng = np.random.default_rng([shop.config.seed, OUTCOME_DRAWS])
    drawn = sample_session_outcomes(shop, rng, np.asarray(served.user_ids[:n_known], dtype=np.int64), actions)
    ts = served.served_at[:n_known] + np.nan_to_num(drawn.delay_hours) * 3600.0
    made = drawn.converted & (ts <= until.timestamp())
    return pd.DataFrame({"decision_id": np.asarray(served.decision_ids[:n_known], dtype=object)[made],
                         "revenue": drawn.revenue[made], "ts": ts[made]})


def post_outcomes(base_url: str, outcomes: pd.DataFrame, clock: datetime) -> int:
    """Move the service's simulated clock to `clock` (no outcome may be in its future) and POST each outcome."""
    with ServiceClient(base_url, admin_token=os.environ.get("HYPERLIFT_SERVING_ADMIN_TOKEN")) as client:
        client.advance_clock(clock)
        for row in outcomes.itertuples():
            client.post_outcome(row.decision_id, row.revenue, datetime.fromtimestamp(row.ts, UTC))
    return len(outcomes)


def clear_days(data_dir: Path, days: list[str], window_hours: float) -> int:
    """Remove the lake's decisions of `days` and the outcomes that could be attributed to them (earlier demo runs
    of the same simulated day), so each run's readout counts its own decisions; returns the folders removed."""
    span = math.ceil(window_hours / 24)
    folders = [data_dir / DECISION_TRACE / f"date={d}" for d in days]
    folders += [data_dir / OUTCOME_EVENTS / f"date={date.fromisoformat(d) + timedelta(days=k)}"
                for d in days for k in range(span + 1)]
    removed = [f for f in folders if f.is_dir()]
    for folder in removed:
        shutil.rmtree(folder)
    return len(removed)


@dataclass(frozen=True)
class DayReadout:
    """One served day as the readout stage left it in Dagster."""

    day: str
    decisions: int
    outcomes_joined: int
    unmatched: int
    status: str  # "final" once the day's attribution windows had closed, else "interim"
    headline: dict | None  # an arm against its control: revenue per user difference and interval; None without one

    def line(self) -> str:
        """`2026-10-31: 3030 decisions, 412 outcomes joined (3 unmatched), final; policy_holdout …`."""
        text = (f"{self.day}: {self.decisions} decisions, {self.outcomes_joined} outcomes joined "
                f"({self.unmatched} unmatched), {self.status}")
        h = self.headline
        if h is None:
            return text + "; no decision in an experiment arm with a control"
        return (text + f"; {h['experiment']} {h['arm']} − {h['control_arm']}: revenue per user {h['diff']:+.3f} "
                f"[{h['low']:+.3f}, {h['high']:+.3f}] ({h['n_arm']} vs {h['n_control']} users)")


def headline(readout: pd.DataFrame) -> dict | None:
    """The readout's first non-control arm with a control (experiments by name): revenue-per-user difference with
    its interval and the users on both sides."""
    arms = readout[~readout["is_control"].astype(bool) & readout["control_arm"].notna()]
    if arms.empty:
        return None
    row = arms.sort_values(["experiment", "arm"]).iloc[0]
    control = readout[(readout["experiment"] == row["experiment"]) & (readout["arm"] == row["control_arm"])]
    return {"experiment": row["experiment"], "arm": row["arm"], "control_arm": row["control_arm"],
            "diff": float(row["revenue_diff"]), "low": float(row["revenue_ci_low"]),
            "high": float(row["revenue_ci_high"]), "n_arm": int(row["n_users"]),
            "n_control": int(control["n_users"].iloc[0]) if len(control) else 0}


def read_out_days(
    defs: dg.Definitions, instance: dg.DagsterInstance, days: list[str], now: datetime
) -> list[DayReadout]:
    """Drain the streams (decision_log_job on the clock `now`, which adds the days that are over as partitions), then
    materialize decision_outcomes and experiment_readout for each of `days`; raises when a run fails."""
    clock = now.isoformat()
    drain = defs.resolve_job_def("decision_log_job").execute_in_process(
        instance=instance, run_config={**QUIET, "ops": {"decision_trace": {"config": {"now": clock}}}},
        raise_on_error=False,
    )
    if not drain.success:
        raise RuntimeError("decision_log_job failed; see the Dagster log above")
    missing = sorted(set(days) - set(instance.get_dynamic_partitions(DECISION_DAYS.name)))
    if missing:
        raise RuntimeError(f"{missing} are not decision_days partitions after the drain: no decision of theirs reached "
                           f"the lake, or they are not over at {clock}")
    return [_read_out(defs, instance, day, clock) for day in days]


def _read_out(defs: dg.Definitions, instance: dg.DagsterInstance, day: str, clock: str) -> DayReadout:
    result = defs.resolve_job_def("decision_readout_job").execute_in_process(
        instance=instance, partition_key=day, raise_on_error=False,
        run_config={**QUIET, "ops": {"decision_outcomes": {"config": {"now": clock}}}},
    )
    if not result.success:
        raise RuntimeError(f"decision_readout_job failed for {day}; see the Dagster log above")
    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    joined, readout = meta["decision_outcomes"], meta["experiment_readout"]
    return DayReadout(day, int(joined["decisions"]), int(joined["outcomes_attributed"]),
                      int(joined["unmatched_outcomes"]), str(joined["status"]),
                      headline(pd.read_parquet(readout["path"])))
