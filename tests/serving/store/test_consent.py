"""Consent events in Redis: the later event by event time wins (a revocation at the same instant), every call is
audited, a decision's read takes the later of the event and the CRM's profile row, and revocations reach the
last-known-good cache."""

import json
from datetime import datetime, timezone

import numpy as np
import pytest
import redis

from serving.store.consent import CONSENT_STREAM, ConsentEntry, ConsentStore, ConsentWatcher, apply
from serving.store.feature_cache import LastKnownGood
from serving.store.features import FeatureRead
from serving.store.round_trip import RoundTrip

PURPOSE = "consent_marketing"
PROFILE = "user_profile_fv"
SIGN_UP = datetime(2026, 10, 1, tzinfo=timezone.utc)


@pytest.fixture
def client(online_redis_url) -> redis.Redis:
    return redis.Redis.from_url(online_redis_url)


@pytest.fixture
def store(client) -> ConsentStore:
    return ConsentStore(client, [PURPOSE, "consent_profiling"])


def profile_read(consent: float | None, stamp: datetime | None = SIGN_UP) -> FeatureRead:
    row = {"region_code": 1.0, PURPOSE: consent}
    return FeatureRead(
        values=np.array([1.0, np.nan if consent is None else consent], dtype=np.float32), found=True,
        by_name=dict(row), event_timestamps={PROFILE: stamp}, by_view={PROFILE: dict(row)},
    )


def test_the_later_event_wins_whatever_order_they_arrive_in(store):
    assert store.record(7, PURPOSE, False, ts=200.0).applied
    older = store.record(7, PURPOSE, True, ts=100.0)  # arrives later, happened earlier: stays out
    assert not older.applied and older.in_effect == ConsentEntry(False, 200.0, "api")
    newer = store.record(7, PURPOSE, True, ts=300.5)
    assert newer.applied and newer.in_effect == ConsentEntry(True, 300.5, "api")
    assert store.entries(7) == {PURPOSE: ConsentEntry(True, 300.5, "api")}
    assert store.entries(8) == {}


def test_at_the_same_instant_a_revocation_wins_and_a_replay_changes_nothing(store):
    assert store.record(7, PURPOSE, True, ts=100.0).applied
    assert store.record(7, PURPOSE, False, ts=100.0).applied
    assert not store.record(7, PURPOSE, True, ts=100.0).applied
    assert not store.record(7, PURPOSE, False, ts=100.0).applied  # the same event again
    assert store.entries(7)[PURPOSE].granted is False


def test_every_call_is_in_the_audit_stream_with_its_caller(store, client):
    store.record(7, PURPOSE, False, ts=200.0, client_id="crm-sync", event_id="e-1", user_key="k7", received=250.0)
    store.record(7, PURPOSE, True, ts=100.0, client_id="shop-a", event_id="e-2", user_key="k7", received=260.0)
    records = [json.loads(fields[b"record"]) for _, fields in client.xrange(CONSENT_STREAM)]
    assert records == [
        {"event_id": "e-1", "ts": 200.0, "user_id": 7, "user_key": "k7", "purpose": PURPOSE, "granted": False,
         "source": "api", "client": "crm-sync", "applied": True, "received": 250.0},
        {"event_id": "e-2", "ts": 100.0, "user_id": 7, "user_key": "k7", "purpose": PURPOSE, "granted": True,
         "source": "api", "client": "shop-a", "applied": False, "received": 260.0},
    ]


def test_unknown_purposes_and_sources_are_refused_with_what_is_known(store):
    with pytest.raises(ValueError, match=r"unknown consent purpose 'consent_spam'.*\['consent_marketing', 'consent_profiling'\]"):
        store.record(7, "consent_spam", False, ts=1.0)
    with pytest.raises(ValueError, match="one word"):
        store.record(7, PURPOSE, False, ts=1.0, source="two words")


def test_a_revocation_after_the_profile_row_wins_and_one_before_it_does_not():
    revoked_later = {PURPOSE: ConsentEntry(False, SIGN_UP.timestamp() + 60, "api")}
    read = apply(profile_read(1.0), revoked_later, order=["region_code", PURPOSE])
    assert read.by_name[PURPOSE] == 0.0 and read.by_view[PROFILE][PURPOSE] == 0.0  # what the decision logs
    assert read.values.tolist() == [1.0, 0.0]
    revoked_before = {PURPOSE: ConsentEntry(False, SIGN_UP.timestamp() - 60, "api")}
    assert apply(profile_read(1.0), revoked_before).by_name[PURPOSE] == 1.0  # the CRM recorded consent later
    same_instant = {PURPOSE: ConsentEntry(False, SIGN_UP.timestamp(), "api")}
    assert apply(profile_read(1.0), same_instant).by_name[PURPOSE] == 0.0
    granted_later = {PURPOSE: ConsentEntry(True, SIGN_UP.timestamp() + 60, "api")}
    assert apply(profile_read(0.0), granted_later).by_name[PURPOSE] == 1.0
    assert apply(profile_read(None, stamp=None), granted_later).by_name[PURPOSE] == 1.0  # no profile row yet


def test_the_read_queues_on_the_decision_round_trip(store, client):
    store.record(7, PURPOSE, False, ts=SIGN_UP.timestamp() + 1)
    pipe = RoundTrip(client)
    pipe.hmget("some-feature-key", ["f"])  # the features' commands come first
    consent = store.queue(pipe, 7, ["region_code", PURPOSE])
    read = consent(pipe.execute(), profile_read(1.0))
    assert len(pipe.command_stack) == 2 and read.by_name[PURPOSE] == 0.0


def test_a_revocation_drops_cached_reads_taken_before_it():
    now = [0.0]
    cache = LastKnownGood(max_age_s=300, clock=lambda: now[0])
    cache.put(("1", 7), profile_read(1.0))
    cache.put(("1", 8), profile_read(1.0))
    now[0] = 10.0
    cache.revoke(7)
    assert cache.get(("1", 7)) is None and cache.get(("1", 8)) is not None
    now[0] = 11.0
    cache.put(("1", 7), profile_read(0.0))  # read after the revocation: usable again
    assert cache.get(("1", 7)) is not None


def test_the_watcher_passes_applied_revocations_on(store, client):
    revoked: list[int] = []
    store.record(1, PURPOSE, False, ts=50.0)  # before the watcher started: not its business
    watcher = ConsentWatcher(client, CONSENT_STREAM, revoked.append, block_s=0.05)
    watcher.start()
    watcher.stop()
    store.record(7, PURPOSE, False, ts=200.0)
    store.record(8, PURPOSE, True, ts=200.0)  # a grant
    store.record(9, PURPOSE, False, ts=200.0)
    store.record(9, PURPOSE, False, ts=100.0)  # older: not applied
    client.xadd(CONSENT_STREAM, {"something": "else"})  # not a consent record: skipped, not fatal
    assert watcher.poll() == 2 and revoked == [7, 9]
    assert watcher.poll() == 0
