"""A user who revoked consent (POST /v1/consent, drained into the consent lake) trains nothing: the next training
set has none of their rows, and says how many it left out."""

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_project.assets.decisions import CONSENT_EVENTS
from dagster_project.assets.training import training_set
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import VALIDATED_EVENTS
from feature_repo.contracts import validate_events
from serving.store.decision_log import CONSENT_FORMAT
from simulator import ShopConfig, simulate_events
from tests.feature_repo.factories import materialize_shop

SHOP = ShopConfig(n_users=200, n_items=40, n_days=8, seed=5)  # exposures of days 2–5 mature (72 h window)


def consent_lake(settings, rows: list[dict]) -> None:
    """Consent records as the drain writes them (consent/date=…/part-*.parquet)."""
    path = settings.data_dir / CONSENT_EVENTS / "date=2026-10-05" / "part-1-2.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"stream_id": f"{i}-0", **row} for i, row in enumerate(rows, start=1)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CONSENT_FORMAT.table_schema(set())), path)


def event(event_id: str, user: int, granted: bool, ts: float) -> dict:
    return {"event_id": event_id, "ts": ts, "user_id": user, "user_key": f"k{user}", "purpose": "consent_marketing",
            "granted": granted, "source": "api", "client": "test", "applied": True, "received": ts}


def test_revoked_users_rows_leave_the_next_training_set(settings, online_redis_url):
    _, _, _, shop = materialize_shop(settings, online_redis_url, SHOP)
    accepted = validate_events(simulate_events(shop), pd.Timestamp(SHOP.end)).accepted
    (settings.data_dir / VALIDATED_EVENTS).parent.mkdir(parents=True, exist_ok=True)
    accepted.to_parquet(settings.data_dir / VALIDATED_EVENTS, index=False)
    resources = build_resources(settings, online_redis_url, SHOP)

    def build() -> tuple[pd.DataFrame, dict]:
        result = dg.materialize([training_set], resources=resources)
        metadata = result.asset_materializations_for_node("training_set")[0].metadata
        return pd.read_parquet(metadata["path"].value), metadata

    before, meta = build()
    assert meta["revoked_users_rows_excluded"].value == 0
    counts = before["user_id"].value_counts()
    revoked, regranted = int(counts.index[0]), int(counts.index[1])  # the two users with the most rows
    consent_lake(settings, [
        event("r1", revoked, False, 1_790_000_000.0),
        event("r2", regranted, False, 1_790_000_000.0), event("g2", regranted, True, 1_790_000_100.0),
    ])
    after, meta = build()
    assert revoked not in set(after["user_id"]) and regranted in set(after["user_id"])
    assert meta["revoked_users"].value == 1
    assert meta["revoked_users_rows_excluded"].value == counts[revoked] == len(before) - len(after)
