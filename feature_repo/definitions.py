"""Feast objects in dependency order: entity → sources → feature views → feature services.

`build_repo(data_dir)` is the one definition; the module-level objects below are what `feast apply` picks up,
bound to the data folder of the current environment (HYPERLIFT_HOME).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

from feature_repo.embeddings import EMBEDDING_FEATURES, USER_EMBEDDING_TABLE
from feature_repo.freshness import FreshnessContract, freshness_tags
from feature_repo.purpose import check_purposes, purpose_tags
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES
from infra.settings import HyperliftSettings

UPLIFT_FEATURE_SERVICE = "uplift_v1"
"""The feature service shared by training and serving; models record it (and its views' schemas) in their MLflow tags.

A view's schema never changes in place: a new schema is a new view `<stem>_v<N>_fv` in a new `uplift_v<M>`, and the
old ones stay here until no live model pins them (feature_repo/versions.py, docs/data-plane.md "Schema versions")."""

CANDIDATES_FEATURE_SERVICE = "candidates_v1"
"""The feature service of candidate generation: the user's embedding, scored against the item index."""

ACTIVITY_TABLE = "features/user_activity"
"""A folder: one parquet file per snapshot stamp (`YYYY-MM-DD.parquet`), rewritten while late events may change it."""
PROFILE_TABLE = "features/user_profile.parquet"


@dataclass(frozen=True)
class FeatureRepo:
    """Every Feast object of the project, ready for `FeatureStore.apply`."""

    user: Entity
    activity_source: FileSource
    profile_source: FileSource
    user_activity_fv: FeatureView
    user_profile_fv: FeatureView
    uplift_v1: FeatureService
    embedding_source: FileSource
    user_embedding_fv: FeatureView
    candidates_v1: FeatureService

    def objects(self) -> list[object]:
        """All objects in apply order."""
        return [
            self.user, self.activity_source, self.profile_source, self.embedding_source,
            self.user_activity_fv, self.user_profile_fv, self.user_embedding_fv, self.uplift_v1, self.candidates_v1,
        ]


def build_repo(data_dir: Path) -> FeatureRepo:
    """Build the Feast objects whose offline sources live under `data_dir`."""
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A shopper.")
    activity_source = FileSource(
        name="user_activity_source",
        path=str(Path(data_dir) / ACTIVITY_TABLE),
        timestamp_field="event_timestamp",
        description="Daily user activity snapshots written by the user_activity_features asset (late events inside "
        "the watermark rewrite the snapshots they change).",
    )
    profile_source = FileSource(
        name="user_profile_source",
        path=str(Path(data_dir) / PROFILE_TABLE),
        timestamp_field="event_timestamp",
        description="CRM profile rows stamped at sign-up, written by the user_profile_features asset.",
    )
    user_activity_fv = FeatureView(
        name="user_activity_fv",
        entities=[user],
        # Snapshots are daily; two days of TTL tolerates one missed run without serving older values.
        ttl=timedelta(days=2),
        schema=[Field(name=name, dtype=Float32) for name in ACTIVITY_FEATURES],
        source=activity_source,
        online=True,
        # Fallback past two days (the TTL): recency features are relative to the snapshot's midnight, so an older row
        # describes a more active user than today's and would buy uplift that is not there.
        # Purposes: the uplift scores, and the drift guards and fairness report over the logged values.
        tags={
            "owner": "hyperlift", "cadence": "daily",
            **freshness_tags(FreshnessContract(timedelta(days=2), "fallback")),
            **purpose_tags("personalization", "measurement"),
        },
    )
    user_profile_fv = FeatureView(
        name="user_profile_fv",
        entities=[user],
        ttl=timedelta(0),  # profile rows are stamped at sign-up and stay valid until replaced
        schema=[Field(name=name, dtype=Int64) for name in PROFILE_FEATURES],
        source=profile_source,
        online=True,
        # Rows are stamped at sign-up (the shop's users signed up to 3 years ago) and do not decay: the long bound
        # only catches broken stamps, and an old profile is still the user's profile, so it is used (and counted).
        tags={
            "owner": "hyperlift", **freshness_tags(FreshnessContract(timedelta(days=3650), "use")),
            **purpose_tags("personalization", "measurement"),
        },
    )
    uplift_v1 = FeatureService(
        name=UPLIFT_FEATURE_SERVICE,
        features=[user_activity_fv, user_profile_fv],
        description="Features of the uplift models: activity snapshots and CRM profile.",
    )
    embedding_source = FileSource(
        name="user_embedding_source",
        path=str(Path(data_dir) / USER_EMBEDDING_TABLE),
        timestamp_field="event_timestamp",
        description="User vectors of E ≈ UᵀV, written by the item_user_embeddings and user_embeddings_refresh assets.",
    )
    user_embedding_fv = FeatureView(
        name="user_embedding_fv",
        entities=[user],
        # A full retrain rewrites every user's row and a refresh adds newer rows for active users: a vector stays
        # valid until one of them replaces it.
        ttl=timedelta(0),
        schema=[Field(name=name, dtype=Float32) for name in EMBEDDING_FEATURES],
        source=embedding_source,
        online=True,
        # A week without a retrain or refresh is a stalled pipeline worth counting, but a week-old vector still ranks
        # candidates better than none: use it.
        tags={
            "owner": "hyperlift", "cadence": "full retrain + fold-in refresh",
            **freshness_tags(FreshnessContract(timedelta(days=7), "use")),
            **purpose_tags("personalization"),
        },
    )
    candidates_v1 = FeatureService(
        name=CANDIDATES_FEATURE_SERVICE,
        features=[user_embedding_fv],
        description="The user's embedding, whose inner products with the item vectors rank candidate items.",
    )
    repo = FeatureRepo(
        user, activity_source, profile_source, user_activity_fv, user_profile_fv, uplift_v1,
        embedding_source, user_embedding_fv, candidates_v1,
    )
    check_purposes(repo.objects())  # data minimisation: no view reaches `feast apply` without a declared purpose
    return repo


_repo = build_repo(HyperliftSettings().data_dir)
user = _repo.user
user_activity_fv = _repo.user_activity_fv
user_profile_fv = _repo.user_profile_fv
uplift_v1 = _repo.uplift_v1
user_embedding_fv = _repo.user_embedding_fv
candidates_v1 = _repo.candidates_v1
