"""Small hand-made event frames in the raw union schema."""

from __future__ import annotations

import pandas as pd

from feature_repo.contracts import RAW_COLUMNS

START = pd.Timestamp("2026-10-01", tz="UTC")


def event(**fields) -> dict:
    """One raw event row with sensible defaults for a valid page_view."""
    row = {c: None for c in RAW_COLUMNS}
    row.update(
        event_id="e1", event_type="page_view", event_version=1, ts=START + pd.Timedelta(hours=1), user_id=1,
        session_id="s1", item_id=10, category_id=2, price=10.0, device="mobile", region="north",
    )
    row.update(fields)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    """A raw event frame with the dtypes the simulator and ingestion produce."""
    df = pd.DataFrame(rows, columns=list(RAW_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for name in ("event_version", "user_id", "item_id", "category_id"):
        df[name] = df[name].astype("Int64")
    for name in ("price", "revenue", "propensity"):
        df[name] = df[name].astype("float64")
    return df


def materialize_shop(settings, redis_url: str, shop_config):
    """Feature tables of a simulated shop written, applied and materialized, keyed by the users' pseudonyms as the
    pipeline keys them (through the door, feature_repo/pseudonyms.py, under the home's current pseudonym key); returns
    (store, activity, profile, shop): the tables hold pseudonyms, the shop raw ids (what requests carry)."""
    from feature_repo.contracts import validate_events
    from feature_repo.definitions import ACTIVITY_TABLE, PROFILE_TABLE, UPLIFT_FEATURE_SERVICE, build_repo
    from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize, pseudonymize_ids
    from feature_repo.store import feature_store
    from feature_repo.transforms import SnapshotWindow, user_activity_snapshots, user_profile_rows
    from infra import keys
    from simulator import build_shop, simulate_events

    shop = build_shop(shop_config)
    door = lake_pseudonymizer(path=keys.key_file(settings))  # the key the service of this home reads
    accepted = pseudonymize(validate_events(simulate_events(shop), pd.Timestamp(shop_config.end)).accepted, door)
    window = SnapshotWindow(pd.Timestamp(shop_config.start), shop_config.n_days)
    activity = user_activity_snapshots(accepted, pseudonymize_ids(shop.users["user_id"], door), window)
    profile = user_profile_rows(pseudonymize(shop.users, door))
    # The activity source is a folder of snapshot files (one per stamp, as the asset writes it); profiles, a file.
    for path, table_frame in ((ACTIVITY_TABLE + "/all.parquet", activity), (PROFILE_TABLE, profile)):
        (settings.data_dir / path).parent.mkdir(parents=True, exist_ok=True)
        table_frame.to_parquet(settings.data_dir / path, index=False)
    store = feature_store(redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    end = window.stamps()[-1] + pd.Timedelta(seconds=1)
    views = [projection.name for projection in store.get_feature_service(UPLIFT_FEATURE_SERVICE).feature_view_projections]
    store.materialize(profile["event_timestamp"].min().to_pydatetime(), end.to_pydatetime(), feature_views=views)
    return store, activity, profile, shop


def purchase(**fields) -> dict:
    """A valid purchase event (an `event` with revenue and the neutral action)."""
    return event(**{"event_type": "purchase", "revenue": 9.0, "action_id": "no_action", **fields})


def exposure(**fields) -> dict:
    """A valid promo exposure event (an `event` with an action, its propensity and a surface)."""
    defaults = dict(event_type="promo_exposure", item_id=None, category_id=None, price=None, action_id="pct10_sitewide",
                    propensity=0.25, surface="home")
    return event(**{**defaults, **fields})
