"""bench.learner_settings reads a pseudonymous lake: the latest features come back by raw id (the simulator's truth
is indexed by it), newest snapshot only, under the key of the home the lake belongs to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.learner_settings import latest_features
from dagster_project.resources.data_lake import USER_ACTIVITY, USER_PROFILE
from feature_repo.pseudonyms import lake_pseudonymizer, pseudonymize
from infra import keys

RAW = np.array([4, 9, 2], dtype=np.int64)


def write_lake(settings) -> None:
    """Two activity snapshots and the profiles of three users, keyed by pseudonym as the pipeline writes them."""
    door = lake_pseudonymizer(path=keys.key_file(settings))
    stamps = pd.to_datetime(["2026-10-01", "2026-10-02"], utc=True)
    activity = pd.DataFrame({"user_id": np.tile(RAW, 2), "event_timestamp": np.repeat(stamps, 3),
                             "page_views_total": [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]})
    profile = pd.DataFrame({"user_id": RAW, "event_timestamp": stamps[0], "consent_marketing": [1, 0, 1]})
    (settings.data_dir / USER_ACTIVITY).mkdir(parents=True)
    pseudonymize(activity, door).to_parquet(settings.data_dir / USER_ACTIVITY / "all.parquet", index=False)
    pseudonymize(profile, door).to_parquet(settings.data_dir / USER_PROFILE, index=False)


def test_the_latest_features_are_by_raw_id_sorted_and_newest(settings):
    write_lake(settings)
    users = latest_features(settings, np.arange(10))
    assert users["user_id"].tolist() == [2, 4, 9]
    assert users["page_views_total"].tolist() == [30.0, 10.0, 20.0]
    assert users["consent_marketing"].tolist() == [1, 1, 0]


def test_users_the_shop_does_not_know_are_an_error_not_wrong_rows(settings):
    write_lake(settings)
    with pytest.raises(KeyError, match="none of the 3 known users'"):
        latest_features(settings, np.arange(3))
