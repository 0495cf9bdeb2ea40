"""The pseudonymous lake through its normal paths: after the pipeline, every user id below the raw layer (validated
events, tiles, snapshots, profile, Feast's online rows, Redis tiles) is the keyed pseudonym of the raw id the shop
sent, and no raw id is there; the raw layer keeps raw ids. The decision service takes raw ids and writes streamed
events and consent by the same pseudonym."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from dagster_project.assets import features, ingestion, online_store, stream_state, validation
from dagster_project.partitions import shop_days
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import (
    ACTIVITY_TILES, CUSTOMERS, QUARANTINE, RAW_EVENTS, USER_ACTIVITY, USER_PROFILE, VALIDATED_EVENTS,
)
from feature_repo.pseudonyms import lake_pseudonymizer
from feature_repo.stream import tiles_key
from infra import keys
from infra.erasure.subject import entity_key
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from serving.main import create_app
from serving.store.consent import CONSENT_STREAM
from simulator import ShopConfig
from tests.lake_ids import door
from tests.serving.conftest import write_policy_dir

SHOP = ShopConfig(n_users=60, n_items=20, n_days=3, seed=21, corrupt_rate=0.02)


@pytest.fixture(scope="module")
def piped(tmp_path_factory, redis_databases):
    """(settings, redis url, resources, the run's result) after ingestion → validation → features → Feast/Redis."""
    home = tmp_path_factory.mktemp("pseudonymous") / "hyperlift"
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    url = redis_databases.fresh()
    resources = build_resources(settings, url, SHOP)
    assets = dg.load_assets_from_modules([ingestion, validation, features, online_store, stream_state])
    result = dg.materialize(assets, resources=resources, tags=shop_days(SHOP))
    assert result.success
    return settings, url, resources, result


def _all(lake, table: str) -> pd.DataFrame:
    return lake.read_partitions(table, lake.partition_keys(table))


def test_below_the_raw_layer_every_user_id_is_the_pseudonym_of_the_raw_one(piped):
    settings, url, resources, result = piped
    lake = resources["lake"]
    pseudonym = door(settings)
    assert pseudonym.version == 1 and (settings.home / "keys" / "keys.json").exists()  # made by the first run
    customers = lake.read(CUSTOMERS)["user_id"].to_numpy(dtype=np.int64)
    lake_ids = set(pseudonym.many(customers).tolist())
    assert not lake_ids & set(customers.tolist())

    raw = _all(lake, RAW_EVENTS)
    validated = _all(lake, VALIDATED_EVENTS)
    assert len(validated) > 100
    sent = raw.drop_duplicates("event_id").set_index("event_id")["user_id"]
    want = pseudonym.many(pd.to_numeric(sent.loc[validated["event_id"]]).to_numpy(dtype=np.int64))
    np.testing.assert_array_equal(validated["user_id"].to_numpy(dtype=np.int64), want)  # event by event
    assert validated["user_id"].dtype == np.int64

    for table in (ACTIVITY_TILES, USER_ACTIVITY):
        assert set(_all(lake, table)["user_id"]) <= lake_ids, table
    assert set(_all(lake, USER_ACTIVITY)["user_id"]) == lake_ids  # a snapshot of every customer
    profile = lake.read(USER_PROFILE)
    assert sorted(profile["user_id"]) == sorted(lake_ids)
    # The raw layer keeps what the shop sent: raw ids, which are not pseudonyms.
    quarantined = pd.to_numeric(_all(lake, QUARANTINE)["user_id"], errors="coerce").dropna().astype(np.int64)
    assert not set(quarantined) & lake_ids
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("validated_events")][:1]
    assert event.materialization.metadata["pseudonym_key_version"].value == 1

    client = redis.Redis.from_url(url)
    user = int(customers[0])
    assert client.exists(entity_key(pseudonym(user))) and not client.exists(entity_key(user))
    active = int(pd.to_numeric(sent.loc[validated["event_id"]]).iloc[0])
    assert client.exists(tiles_key(pseudonym(active))) and not client.exists(tiles_key(active))
    client.close()


def test_the_service_maps_raw_ids_and_writes_streamed_events_and_consent_by_pseudonym(piped, tmp_path, monkeypatch):
    settings, url, _, _ = piped
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))  # the service reads this home's key file
    pseudonym = door(settings)
    user = int(pd.read_parquet(settings.data_dir / CUSTOMERS)["user_id"].iloc[3])
    lake_id = pseudonym(user)
    policy = write_policy_dir(tmp_path / "policy")
    serving = ServingSettings(redis_url=url, seed=3, config_dir=policy, model_refresh_s=0, log_decisions=False,
                              experiments_file=policy / "experiments.yaml", mode="dev", now=SHOP.end)
    client = redis.Redis.from_url(url)
    with TestClient(create_app(serving)) as http:
        assert http.app.state.runtime.service.pseudonymizer(user) == lake_id
        before = client.hlen(tiles_key(lake_id))
        now = pd.Timestamp(SHOP.end)
        event = {"event_id": "pseudo-1", "event_type": "page_view", "event_version": 1,
                 "ts": (now - pd.Timedelta("1h")).isoformat(), "user_id": user, "session_id": "pseudo-s1",
                 "item_id": 3, "category_id": 2, "price": 9.5, "device": "mobile", "region": "north"}
        answered = http.post("/v1/events", json={"events": [event]})
        assert answered.status_code == 202 and answered.json()["accepted"] == 1, answered.text
        assert client.hlen(tiles_key(lake_id)) > before and not client.exists(tiles_key(user))
        assert client.exists(f"hyperlift:seen:{{{lake_id}}}:pseudo-1")
        assert not client.keys(f"hyperlift:seen:{{{user}}}:*")

        revoked = http.post("/v1/consent", json={"user_id": user, "granted": False, "event_id": "pseudo-rev"})
        assert revoked.status_code == 202, revoked.text
        assert client.hget(f"hyperlift:consent:{{{lake_id}}}", "consent_marketing").startswith(b"0 ")
        assert not client.exists(f"hyperlift:consent:{{{user}}}")
        (_, fields), = client.xrevrange(CONSENT_STREAM, count=1)
        record = json.loads(fields[b"record"])
        assert record["user_id"] == lake_id and record["event_id"] == "pseudo-rev"
        assert http.get(f"/v1/consent/{user}").json()["consent_marketing"]["granted"] is False
    client.close()


def test_without_a_pseudonym_key_a_reader_is_told_where_to_get_one(tmp_path):
    missing = tmp_path / "keys" / "keys.json"
    with pytest.raises(keys.KeysError, match="no pseudonym key in .*keys.json.*rotate pseudonym"):
        lake_pseudonymizer(create=False, path=missing)
    assert not missing.exists()
    made = lake_pseudonymizer(path=missing)  # what the pipeline's first run does
    assert made.version == 1 and lake_pseudonymizer(create=False, path=missing)(42) == made(42)
