"""A second schema of user activity declared by the versioning rule: `user_activity_v2_fv` read by `uplift_v2`."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from feast import FeatureService, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float32

from feature_repo.definitions import FeatureRepo
from feature_repo.freshness import FreshnessContract, freshness_tags
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from feature_repo.versions import view_version_name

ACTIVITY_V2_TABLE = "features/user_activity_v2"
NEW_FEATURE = "purchase_rate"
ACTIVITY_V2_FEATURES = (*(f for f in ACTIVITY_FEATURES if f != "mobile_view_share"), NEW_FEATURE)
"""v2 drops mobile_view_share and adds purchase_rate: a schema change, so a new view version."""
V2_FEATURES = [*ACTIVITY_V2_FEATURES, *PROFILE_FEATURES]


def activity_v2_rows(activity: pd.DataFrame) -> pd.DataFrame:
    """The v2 snapshot rows computed from v1's (the same users and stamps)."""
    rows = activity.drop(columns=["mobile_view_share"]).copy()
    views = rows["page_views_total"].where(rows["page_views_total"] > 0)
    rows[NEW_FEATURE] = (rows["purchases_total"] / views).fillna(0.0).astype("float32")
    return rows


def v2_objects(repo: FeatureRepo, data_dir) -> tuple[FileSource, FeatureView, FeatureService]:
    """Source, view and feature service of activity v2, next to the repo's v1 objects."""
    source = FileSource(
        name="user_activity_v2_source", path=str(data_dir / ACTIVITY_V2_TABLE), timestamp_field="event_timestamp",
    )
    view = FeatureView(
        name=view_version_name("user_activity", 2), entities=[repo.user], ttl=timedelta(days=2),
        schema=[Field(name=name, dtype=Float32) for name in ACTIVITY_V2_FEATURES], source=source, online=True,
        tags={"owner": "hyperlift", **freshness_tags(FreshnessContract(timedelta(days=2), "fallback"))},
    )
    service = FeatureService(name="uplift_v2", features=[view, repo.user_profile_fv])
    return source, view, service


def apply_v2(store: FeatureStore, repo: FeatureRepo, data_dir, activity: pd.DataFrame) -> FeatureView:
    """Write the v2 table, apply its objects (v1's stay); returns the v2 view."""
    path = data_dir / ACTIVITY_V2_TABLE / "all.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    activity_v2_rows(activity).to_parquet(path, index=False)
    source, view, service = v2_objects(repo, data_dir)
    store.apply([source, view, service])
    return view

