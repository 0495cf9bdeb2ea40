"""erasure_job and retention_job in-process: the job erases the configured user (a receipt, none of their rows left)
and refuses a config without a valid user id; the retention job deletes an expired partition."""

import dagster as dg
import pandas as pd
import pytest
import redis

from dagster_project.assets import features, ingestion, online_store, stream_state, validation
from dagster_project.definitions import build_definitions
from dagster_project.partitions import shop_days
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import VALIDATED_EVENTS
from infra.erasure.subject import Subject
from simulator import ShopConfig

SHOP = ShopConfig(n_users=80, n_items=30, n_days=4, seed=11)


@pytest.fixture
def seeded(settings, online_redis_url):
    resources = build_resources(settings, online_redis_url, SHOP)
    assets = dg.load_assets_from_modules([ingestion, validation, features, online_store, stream_state])
    assert dg.materialize(assets, resources=resources, tags=shop_days(SHOP)).success
    return settings, online_redis_url, build_definitions(resources)


def test_erasure_job_erases_the_configured_user(seeded, monkeypatch):
    settings, url, defs = seeded
    user = int(pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"].iloc[0])
    monkeypatch.setenv("ERASE_USER_ID", str(user))  # the run config names the variable, never the id
    run_config = {"ops": {"erase_user": {"config": {"user_id": {"env": "ERASE_USER_ID"}, "reason": "job test"}}}}
    result = defs.resolve_job_def("erasure_job").execute_in_process(
        run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert str(user) not in str(result.dagster_run.run_config)
    receipt = result.output_for_node("erase_user")
    assert Subject.of(user, "hyperlift-dev-salt").user_key in receipt
    assert user not in set(pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"])
    client = redis.Redis.from_url(url)
    assert not client.exists(f"hyperlift:tiles:{{{user}}}") and not client.exists(Subject.of(user, "s").entity_key)
    client.close()


def test_erasure_job_refuses_a_config_without_a_valid_user(seeded):
    _, _, defs = seeded
    result = defs.resolve_job_def("erasure_job").execute_in_process(
        run_config={"ops": {"erase_user": {"config": {"user_id": -3}}}}, instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "user_id" in failure.to_string() and "greater than or equal to 0" in failure.to_string()


def test_retention_job_deletes_expired_partitions(seeded):
    settings, _, defs = seeded
    first = sorted((settings.data_dir / "raw" / "events").glob("*.parquet"))[0]
    result = defs.resolve_job_def("retention_job").execute_in_process(
        run_config={"ops": {"enforce_retention": {"config": {"now": "2027-06-01T00:00:00+00:00"}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success and not first.exists()
    assert f"data/raw/events/{first.name}" in result.output_for_node("enforce_retention")["lake"]
