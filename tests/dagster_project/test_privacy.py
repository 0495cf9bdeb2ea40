"""erasure_job and retention_job in-process: the job erases the configured user (a receipt, none of their rows left)
and refuses a config without a valid user id; the retention job deletes an expired partition."""

import dagster as dg
import pandas as pd
import pytest
import redis

from dagster_project.assets import features, ingestion, online_store, stream_state, validation
from dagster_project.assets.decisions import DECISION_TRACE
from dagster_project.definitions import build_definitions
from dagster_project.partitions import DECISION_DAYS, shop_days
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import VALIDATED_EVENTS
from infra.erasure.subject import Subject, entity_key
from infra.settings import HyperliftSettings
from simulator import ShopConfig
from tests.lake_ids import raw_users
from tests.seeded_stores import SeededStores

SHOP = ShopConfig(n_users=80, n_items=30, n_days=4, seed=11)


@pytest.fixture(scope="module")
def seeded_once(tmp_path_factory, redis_databases):
    """The stores the pipeline writes for SHOP, built once per module: the home copied aside and its Redis keys
    dumped, for `seeded` to put back before each test. The home keeps one path (the Feast registry records it)."""
    root = tmp_path_factory.mktemp("privacy")
    settings = HyperliftSettings(home=root / "hyperlift", reports_dir=root / "hyperlift" / "reports")
    url = redis_databases.fresh()
    resources = build_resources(settings, url, SHOP)
    assets = dg.load_assets_from_modules([ingestion, validation, features, online_store, stream_state])
    assert dg.materialize(assets, resources=resources, tags=shop_days(SHOP)).success
    return settings, url, resources, SeededStores.take(settings.home, url, root / "seeded")


@pytest.fixture
def seeded(seeded_once):
    """The module's seeded stores as the pipeline left them (each test erases or deletes from them)."""
    settings, url, resources, stores = seeded_once
    stores.restore()
    return settings, url, build_definitions(resources)


def test_erasure_job_erases_the_configured_user(seeded, monkeypatch):
    settings, url, defs = seeded
    pseudonym = int(pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"].iloc[0])
    user = raw_users(settings, [pseudonym])[0]  # the raw id: what an erasure is asked for
    monkeypatch.setenv("ERASE_USER_ID", str(user))  # the run config names the variable, never the id
    run_config = {"ops": {"erase_user": {"config": {"user_id": {"env": "ERASE_USER_ID"}, "reason": "job test"}}}}
    result = defs.resolve_job_def("erasure_job").execute_in_process(
        run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert str(user) not in str(result.dagster_run.run_config)
    receipt = result.output_for_node("erase_user")
    assert Subject.of(user, "hyperlift-dev-salt").user_key in receipt
    assert pseudonym not in set(pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"])
    assert user not in set(pd.read_parquet(settings.data_dir / "raw" / "customers.parquet")["user_id"])
    client = redis.Redis.from_url(url)
    assert not client.exists(f"hyperlift:tiles:{{{pseudonym}}}") and not client.exists(entity_key(pseudonym))
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


def test_retention_removes_the_decision_days_whose_decisions_it_deleted(seeded):
    """A day whose decisions retention deleted is no longer a decision_days partition; a day it keeps stays (the
    decision log is kept 400 days: 2026-01-01 is past it on 2027-06-01, 2027-05-30 is not)."""
    settings, _, defs = seeded
    expired, kept = "2026-01-01", "2027-05-30"
    for day in (expired, kept):
        folder = settings.data_dir / DECISION_TRACE / f"date={day}"
        folder.mkdir(parents=True)
        pd.DataFrame({"decision_id": [f"d-{day}"]}).to_parquet(folder / "part-0.parquet")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DECISION_DAYS.name, [expired, kept])
    dry = defs.resolve_job_def("retention_job").execute_in_process(
        run_config={"ops": {"enforce_retention": {"config": {"now": "2027-06-01T00:00:00+00:00", "dry_run": True}}}},
        instance=instance,
    )
    assert dry.success and instance.get_dynamic_partitions(DECISION_DAYS.name) == [expired, kept]  # a dry run lists
    result = defs.resolve_job_def("retention_job").execute_in_process(
        run_config={"ops": {"enforce_retention": {"config": {"now": "2027-06-01T00:00:00+00:00"}}}},
        instance=instance,
    )
    assert result.success and not (settings.data_dir / DECISION_TRACE / f"date={expired}").exists()
    assert instance.get_dynamic_partitions(DECISION_DAYS.name) == [kept]
    metadata = next(e.event_specific_data.metadata for e in result.all_events
                    if e.event_type_value == "STEP_OUTPUT" and e.step_key == "enforce_retention")
    assert metadata["decision_days_removed"].value == [expired]
