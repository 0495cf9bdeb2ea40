"""The decision-log assets drain real Redis streams into the lake and join outcomes; the drain adds the days that hold
decisions (and are over) as decision_days partitions; the sensor asks for drains; the schedule reads out yesterday."""

import datetime as dt
import json
import uuid

import dagster as dg
import pytest
import redis

from dagster_project.assets.decisions import (
    DECISION_TRACE,
    OUTCOME_EVENTS,
    decision_outcomes,
    decision_outcomes_table,
    decision_trace,
    outcome_events,
)
from dagster_project.definitions import defs
from dagster_project.jobs import decision_log_job, decision_readout_schedule
from dagster_project.partitions import DECISION_DAYS
from dagster_project.resources import DataLakeResource, RedisResource
from dagster_project.sensors import decision_log_sensor, readout_final_sensor
from serving.store.decision_log import DECISION_STREAM, DRAIN_GROUP, OUTCOME_STREAM, read_partition
from training.outcome_join import DECISION_OUTSIDE_WINDOW, NO_DECISION_IN_WINDOW

DAY = "2026-10-02"
D0 = 1_790_899_200.0  # 2026-10-02 00:00 UTC
H = 3600.0


def decision(n: int, user: str, ts: float, experiments: dict | None = None) -> dict:
    return {
        "decision_id": uuid.UUID(int=n).hex, "ts": ts, "surface": "home", "region": "eu", "policy_version": "p1",
        "user_key": user, "context_hash": "c" * 32, "candidates": ["no_action", "push"], "scores": [None, 0.4],
        "probabilities": [0.2, 0.8], "chosen": ["push"], "chosen_probabilities": [0.8], "model_name": "m",
        "model_version": "1", "feature_service": "uplift_v1", "experiments": experiments or {}, "fallback": None,
        "latency_ms": {"total": 3.0},
    }


def outcome(oid: str, user: str, ts: float, revenue: float, decision_id: str | None = None) -> dict:
    return {"outcome_id": oid, "ts": ts, "user_key": user, "decision_id": decision_id, "kind": "purchase",
            "revenue": revenue}


def push(client: redis.Redis, stream: str, records: list[dict]) -> None:
    for record in records:
        client.xadd(stream, {"record": json.dumps(record)})


@pytest.fixture
def world(redis_databases, settings):
    url = redis_databases.fresh()
    resources = {"lake": DataLakeResource(root=str(settings.data_dir)), "redis": RedisResource(url=url)}
    return redis.Redis.from_url(url), resources


@pytest.fixture
def instance():
    """One Dagster instance per test: the drain adds decision_days partitions to it, the join's runs read them."""
    return dg.DagsterInstance.ephemeral()


def days(instance: dg.DagsterInstance) -> list[str]:
    return DECISION_DAYS.get_partition_keys(dynamic_partitions_store=instance)


def did(n: int) -> str:
    return uuid.UUID(int=n).hex


def test_drain_assets_then_the_days_join(world, instance):
    client, resources = world
    push(client, DECISION_STREAM, [
        decision(1, "u1", D0 + 1 * H, {"policy_holdout": "policy"}),
        decision(2, "u1", D0 + 5 * H),
        decision(3, "u2", D0 + 23 * H),
        decision(4, "u3", D0 - 1 * H),  # the day before: competes for last touch, is not a row of this day
        decision(5, "u1", D0 + 30 * H),  # the day after: a later touch for u1
    ])
    push(client, OUTCOME_STREAM, [
        outcome("by_id", "u1", D0 + 40 * H, 10.0, did(1)),  # named: goes to d1 though d5 is u1's latest
        outcome("touch", "u1", D0 + 6 * H, 4.0),  # latest u1 decision before it: d2
        outcome("touch2", "u1", D0 + 7 * H, 6.0),  # d2 again: summed
        outcome("later_touch", "u1", D0 + 31 * H, 99.0),  # d5 (next day), not d2
        outcome("u2_late", "u2", D0 + 95.5 * H, 5.0),  # 30 min after d3's window: unmatched, on day +3
        outcome("stranger", "u9", D0 + 2 * H, 1.0),  # no decision: unmatched, on this day
        outcome("prev_day", "u3", D0 + 3 * H, 1.0, did(4)),  # names d4 of the day before: counted there
    ])

    drained = dg.materialize([decision_trace, outcome_events], resources=resources, instance=instance)
    assert drained.success
    meta = {e.asset_key.to_user_string(): e.metadata for e in drained.get_asset_materialization_events()
            for e in [e.event_specific_data.materialization]}
    assert meta["decision_trace"]["written"].value == 5 and meta["decision_trace"]["backlog_after"].value == 0
    assert meta["decision_trace"]["dates"].value == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert meta["decision_trace"]["partitions_added"].value == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert days(instance) == ["2026-10-01", "2026-10-02", "2026-10-03"]  # 10-05 holds an outcome, no decision
    assert meta["outcome_events"]["written"].value == 7 and meta["outcome_events"]["rejected"].value == 0
    lake = resources["lake"]
    assert read_partition(lake.path(DECISION_TRACE), DAY)["decision_id"].tolist() == [did(1), did(2), did(3)]
    assert len(read_partition(lake.path(OUTCOME_EVENTS), DAY)) == 4

    joined = dg.materialize([decision_outcomes], resources={"lake": lake}, partition_key=DAY, instance=instance)
    (event,) = joined.asset_materializations_for_node("decision_outcomes")
    rows = lake.read(decision_outcomes_table(DAY))
    got = {r.decision_id: (r.converted, r.revenue, r.n_outcomes) for r in rows.itertuples()}
    assert got == {did(1): (1, 10.0, 1), did(2): (1, 10.0, 2), did(3): (0, 0.0, 0)}
    assert json.loads(rows.set_index("decision_id").loc[did(1), "experiments"]) == {"policy_holdout": "policy"}
    assert {"user_key", "experiments", "converted", "revenue", "ts", "surface", "stream_id"} <= set(rows.columns)
    assert event.metadata["decisions"].value == 3 and event.metadata["outcomes_attributed"].value == 3
    # of this day's outcomes only "stranger" is unmatched; u2_late is reported by the partition of its own day
    assert event.metadata["unmatched_by_reason"].value == {NO_DECISION_IN_WINDOW: 1}
    assert event.metadata["window_closed"].value is True

    # 10-05 is no partition (no decision that day): its unmatched outcome is reported by the latest decision day
    last_day = dg.materialize([decision_outcomes], resources={"lake": lake}, partition_key="2026-10-03",
                              instance=instance)
    (last,) = last_day.asset_materializations_for_node("decision_outcomes")
    assert last.metadata["decisions"].value == 1 and last.metadata["unmatched_by_reason"].value == {
        NO_DECISION_IN_WINDOW: 1
    }
    with pytest.raises(dg.DagsterUnknownPartitionError):
        dg.materialize([decision_outcomes], resources={"lake": lake}, partition_key="2026-10-05", instance=instance)


def test_a_shorter_window_from_config_leaves_outcomes_unmatched(world, instance):
    client, resources = world
    push(client, DECISION_STREAM, [decision(1, "u1", D0 + H)])
    push(client, OUTCOME_STREAM, [outcome("o1", "u1", D0 + 4 * H, 3.0), outcome("o2", "u1", D0 + 4 * H, 2.0, did(1))])
    dg.materialize([decision_trace, outcome_events], resources=resources, instance=instance)
    config = {"ops": {"decision_outcomes": {"config": {"attribution_window_hours": 2.0}}}}
    result = dg.materialize([decision_outcomes], resources=resources, partition_key=DAY, run_config=config,
                            instance=instance)
    (event,) = result.asset_materializations_for_node("decision_outcomes")
    assert event.metadata["converted"].value == 0
    assert event.metadata["unmatched_by_reason"].value == {DECISION_OUTSIDE_WINDOW: 1, NO_DECISION_IN_WINDOW: 1}


def test_a_second_drain_run_picks_up_only_new_entries(world):
    client, resources = world
    push(client, DECISION_STREAM, [decision(i, f"u{i}", D0 + i) for i in range(3)])
    dg.materialize([decision_trace], resources=resources)
    push(client, DECISION_STREAM, [decision(i, f"u{i}", D0 + i) for i in range(3, 5)])
    result = dg.materialize([decision_trace], resources=resources)
    (event,) = result.asset_materializations_for_node("decision_trace")
    assert event.metadata["read"].value == 2
    frame = read_partition(resources["lake"].path(DECISION_TRACE), DAY)
    assert frame["decision_id"].tolist() == [did(i) for i in range(5)]


def test_sensor_requests_a_drain_only_when_entries_are_undrained(world):
    client, resources = world
    with dg.instance_for_test() as instance:
        def tick() -> dg.SensorResult:
            return decision_log_sensor(dg.build_sensor_context(instance=instance, resources=resources))

        first = tick()
        assert not first.run_requests and "nothing to drain" in first.skip_reason.skip_message  # no stream yet
        push(client, OUTCOME_STREAM, [outcome("o1", "u1", D0, 1.0)])
        (request,) = tick().run_requests
        assert request.tags[f"backlog/{OUTCOME_STREAM}"] == "1"
        dg.materialize([decision_trace, outcome_events], resources=resources)
        skip = tick()
        assert not skip.run_requests and "nothing to drain" in skip.skip_reason.skip_message
        # entries delivered to a consumer that died before acknowledging them are still undrained
        push(client, DECISION_STREAM, [decision(1, "u1", D0)])
        client.xreadgroup(DRAIN_GROUP, "dead", {DECISION_STREAM: ">"})
        assert len(tick().run_requests) == 1


def test_sensor_skips_while_a_drain_run_is_in_flight(world):
    client, resources = world
    push(client, DECISION_STREAM, [decision(1, "u1", D0)])
    with dg.instance_for_test() as instance:
        instance.add_run(dg.DagsterRun(job_name=decision_log_job.name, run_id="r1", status=dg.DagsterRunStatus.STARTED))
        result = decision_log_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert not result.run_requests and "r1 is still draining" in result.skip_reason.skip_message


def test_the_training_job_leaves_the_decision_log_to_its_own_job():
    training = {k.to_user_string() for k in defs.resolve_job_def("hyperlift_job").asset_layer.selected_asset_keys}
    drain = {k.to_user_string() for k in defs.resolve_job_def("decision_log_job").asset_layer.selected_asset_keys}
    assert drain == {"decision_trace", "outcome_events", "stream_quarantine", "consent_events"}
    assert not training & {*drain, "decision_outcomes"}
    assert defs.resolve_sensor_def("decision_log_sensor").job_name == "decision_log_job"
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get(dg.AssetKey("decision_outcomes")).parent_keys} \
        == {"decision_trace", "outcome_events"}


def test_events_refused_by_the_stream_are_drained_to_the_lake_as_received(world, settings):
    from feature_repo.definitions import build_repo
    from feature_repo.event_time import Lateness
    from feature_repo.online_writer import OnlineWriter
    from feature_repo.store import feature_store
    from feature_repo.stream import StreamUpdater
    from dagster_project.assets.decisions import STREAM_QUARANTINE, stream_quarantine

    client, resources = world
    store = feature_store(resources["redis"].url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    now = dt.datetime.fromtimestamp(D0 + 12 * H, dt.UTC)
    updater = StreamUpdater(OnlineWriter(store), client, Lateness(2), lambda: now)
    bad = [{"event_id": "x1", "event_type": "teleport"}, {"event_id": "x2", "event_type": "page_view", "user_id": -4}]
    result = updater.apply(bad)
    assert [r["rule"] for r in result.rejected] == ["event_type.known", "event_version.supported"]

    drained = dg.materialize([stream_quarantine], resources=resources)
    (event,) = drained.asset_materializations_for_node("stream_quarantine")
    assert event.metadata["written"].value == 2 and event.metadata["backlog_after"].value == 0
    rows = read_partition(resources["lake"].path(STREAM_QUARANTINE), DAY).sort_values("event_id")
    assert rows[["event_id", "rule"]].values.tolist() == [["x1", "event_type.known"], ["x2", "event_version.supported"]]
    assert [json.loads(e) for e in rows["event"]] == bad and (rows["ts"] == D0 + 12 * H).all()


def test_a_day_read_out_while_its_windows_are_open_is_interim_then_the_sensor_asks_for_the_final(world):
    client, resources = world
    push(client, DECISION_STREAM, [decision(1, "u1", D0 + H), decision(2, "u2", D0 + 2 * H),
                                   decision(3, "u3", D0 + 20 * H)])
    push(client, OUTCOME_STREAM, [outcome("o1", "u1", D0 + 3 * H, 10.0, did(1))])
    now = dt.datetime.fromtimestamp(D0 + 30 * H, dt.UTC).isoformat()  # the loop's clock: the day's windows are open
    with dg.instance_for_test() as instance:
        dg.materialize([decision_trace, outcome_events], resources=resources, instance=instance)
        result = dg.materialize([decision_outcomes], resources=resources, partition_key=DAY, instance=instance,
                                run_config={"ops": {"decision_outcomes": {"config": {"now": now}}}})
        (event,) = result.asset_materializations_for_node("decision_outcomes")
        meta = {k: v.value for k, v in event.metadata.items()}
        assert (meta["status"], meta["window_closed"], meta["now"]) == ("interim", False, "2026-10-03T06:00:00+00:00")
        assert meta["window_closes_at"] == D0 + 24 * H + 72 * H
        # realised 10.0, plus what the two pending decisions are still expected to bring
        assert meta["revenue"] == 10.0 and meta["revenue_delay_corrected"] > 10.0
        requests = readout_final_sensor(dg.build_sensor_context(instance=instance))  # the wall clock is past it
        assert [(r.partition_key, r.run_key) for r in requests] == [(DAY, f"final-{DAY}")]
        dg.materialize([decision_outcomes], resources=resources, partition_key=DAY, instance=instance)
        assert isinstance(readout_final_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)


def drain(resources: dict, instance: dg.DagsterInstance, now: float | None = None) -> list[str]:
    """Run the decision drain (on the given clock) and return the partitions it added."""
    config = {} if now is None else {
        "ops": {"decision_trace": {"config": {"now": dt.datetime.fromtimestamp(now, dt.UTC).isoformat()}}}}
    result = dg.materialize([decision_trace], resources=resources, instance=instance, run_config=config)
    (event,) = result.asset_materializations_for_node("decision_trace")
    return event.metadata["partitions_added"].value


def test_a_drain_of_decisions_on_two_dates_adds_exactly_those_two_partitions(world, instance):
    client, resources = world
    push(client, DECISION_STREAM, [decision(1, "u1", D0 + H), decision(2, "u2", D0 + 23 * H),
                                   decision(3, "u3", D0 + 50 * H)])  # 10-02 twice, 10-04 once; nothing on 10-03
    assert drain(resources, instance) == ["2026-10-02", "2026-10-04"]
    assert days(instance) == ["2026-10-02", "2026-10-04"]
    assert drain(resources, instance) == []  # an empty drain adds none, and keeps those it has
    assert days(instance) == ["2026-10-02", "2026-10-04"]
    result = dg.materialize([decision_outcomes], resources=resources, partition_key="2026-10-04", instance=instance)
    (event,) = result.asset_materializations_for_node("decision_outcomes")
    assert event.partition == "2026-10-04" and event.metadata["decisions"].value == 1
    assert resources["lake"].read(decision_outcomes_table("2026-10-04"))["decision_id"].tolist() == [did(3)]


def test_an_empty_drain_adds_no_partition(world, instance):
    _, resources = world
    assert drain(resources, instance) == [] and days(instance) == []


def test_a_day_becomes_a_partition_only_once_it_is_over(world, instance):
    client, resources = world
    push(client, DECISION_STREAM, [decision(1, "u1", D0 - H), decision(2, "u1", D0 + H)])
    assert drain(resources, instance, now=D0 + 12 * H) == ["2026-10-01"]  # 10-02's decisions are still arriving
    push(client, DECISION_STREAM, [decision(3, "u2", D0 + 13 * H)])
    assert drain(resources, instance, now=D0 + 24 * H) == ["2026-10-02"]  # over: added by the next drain
    assert days(instance) == ["2026-10-01", "2026-10-02"]


def test_the_sensor_adds_a_day_that_ended_after_the_last_drain(world, instance):
    client, resources = world
    push(client, DECISION_STREAM, [decision(1, "u1", D0 + H)])
    assert drain(resources, instance, now=D0 + 2 * H) == []  # traffic stopped during the day
    result = decision_log_sensor(dg.build_sensor_context(instance=instance, resources=resources))  # wall clock: over
    assert not result.run_requests  # nothing left to drain
    (request,) = result.dynamic_partitions_requests
    assert (request.partitions_def_name, list(request.partition_keys)) == ("decision_days", [DAY])


def test_the_daily_schedule_reads_out_the_day_before_only_when_it_holds_decisions():
    with dg.instance_for_test() as instance:  # a schedule's context needs an instance with a reference
        def tick(at: str) -> dg.RunRequest | dg.SkipReason:
            context = dg.build_schedule_context(instance=instance,
                                                scheduled_execution_time=dt.datetime.fromisoformat(at))
            return decision_readout_schedule(context)

        instance.add_dynamic_partitions("decision_days", [DAY])
        request = tick("2026-10-03T01:00:00+00:00")
        assert isinstance(request, dg.RunRequest) and request.partition_key == DAY
        skip = tick("2026-10-04T01:00:00+00:00")
        assert isinstance(skip, dg.SkipReason) and "2026-10-03 is not a decision_days partition" in skip.skip_message
