"""The user embedding view: its schema, the rows it reads, the stamping rule, and an unchanged uplift_v1."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.types import Float32

from feature_repo.definitions import CANDIDATES_FEATURE_SERVICE, UPLIFT_FEATURE_SERVICE, build_repo
from feature_repo.embeddings import (
    EMBEDDING_DIM,
    EMBEDDING_FEATURES,
    USER_EMBEDDING_TABLE,
    next_stamp,
    user_embedding_rows,
    user_vectors,
)
from feature_repo.store import service_feature_names
from feature_repo.transforms import ACTIVITY_FEATURES, PROFILE_FEATURES

T = pd.Timestamp("2026-10-30 23:59:50.035", tz="UTC")


def test_candidates_v1_serves_one_float_per_component_and_uplift_v1_is_unchanged():
    repo = build_repo(Path("/data"))
    assert repo.candidates_v1.name == CANDIDATES_FEATURE_SERVICE == "candidates_v1"
    assert service_feature_names(repo.candidates_v1) == [f"emb_{k}" for k in range(EMBEDDING_DIM)]
    assert all(field.dtype == Float32 for field in repo.user_embedding_fv.schema)
    assert repo.embedding_source.path == f"/data/{USER_EMBEDDING_TABLE}"
    assert repo.uplift_v1.name == UPLIFT_FEATURE_SERVICE
    assert service_feature_names(repo.uplift_v1) == [*ACTIVITY_FEATURES, *PROFILE_FEATURES]
    assert [p.name for p in repo.uplift_v1.feature_view_projections] == ["user_activity_fv", "user_profile_fv"]
    names = [getattr(o, "name") for o in repo.objects()]
    assert names.index("user_embedding_fv") < names.index("candidates_v1") and len(set(names)) == len(names)


def test_rows_hold_one_stamped_float32_row_per_user():
    vectors = np.arange(2 * EMBEDDING_DIM, dtype=np.float64).reshape(2, EMBEDDING_DIM) / 7
    rows = user_embedding_rows(np.array([5, 9]), vectors, T)
    assert list(rows.columns) == ["user_id", "event_timestamp", *EMBEDDING_FEATURES]
    assert list(rows["user_id"]) == [5, 9] and (rows["event_timestamp"] == T).all()
    assert rows[list(EMBEDDING_FEATURES)].dtypes.eq(np.float32).all()
    np.testing.assert_array_equal(user_vectors(rows), vectors.astype(np.float32))


def test_rows_refuse_wrong_shapes_and_naive_times():
    with pytest.raises(ValueError, match=rf"user vectors must have shape \(n, {EMBEDDING_DIM}\), got \(2, 3\)"):
        user_embedding_rows(np.array([1, 2]), np.zeros((2, 3)), T)
    with pytest.raises(ValueError, match="3 user ids for 2 vectors"):
        user_embedding_rows(np.array([1, 2, 3]), np.zeros((2, EMBEDDING_DIM)), T)
    with pytest.raises(ValueError, match="as_of must be timezone-aware"):
        user_embedding_rows(np.array([1]), np.zeros((1, EMBEDDING_DIM)), pd.Timestamp("2026-10-30"))


def test_stamp_is_the_watermark_rounded_up_and_always_after_what_was_written():
    assert next_stamp(T, None) == pd.Timestamp("2026-10-30 23:59:51", tz="UTC")  # never before the data it saw
    assert next_stamp(T, T.ceil("s") - pd.Timedelta(hours=1)) == T.ceil("s")
    # a retrain over the same events: one second later, so Redis (newer rows only) takes it
    assert next_stamp(T, T.ceil("s")) == T.ceil("s") + pd.Timedelta(seconds=1)
    assert next_stamp(T, T + pd.Timedelta(minutes=5)) == T.floor("s") + pd.Timedelta(minutes=5, seconds=1)
