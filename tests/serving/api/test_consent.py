"""POST /v1/consent end to end: a revocation is in effect for the next decision, an older grant or an older CRM row
does not undo it, a later CRM row does, the decision log shows the consent each decision used, and a replay of the
log against the consent log (the Dagster check) finds no promotion after a revocation, and does find one when the
service ignores consent."""

import json

import dagster as dg
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from dagster_project.assets.decisions import CONSENT_EVENTS, consent_events, decision_trace
from dagster_project.checks.decision_log import decisions_honour_consent
from dagster_project.resources import DataLakeResource, RedisResource
from serving.decision.identity import user_key
from serving.main import create_app
from serving.store.consent import CONSENT_STREAM
from serving.store.decision_log import CONSENT_FORMAT, read_partitions
from tests.lake_ids import lake_id
from tests.serving.api.test_api import users_with
from tests.serving.conftest import SHOP

NEUTRAL = "no_action"
PROFILE_VIEW = "user_profile_fv"


@pytest.fixture
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def served(client, user: int, n: int = 40) -> set[str]:
    return {client.post("/v1/decisions", json={"user_id": user, "surface": "home"}).json()["actions"][0]["action_id"]
            for _ in range(n)}


def write_profile_row(client, user: int, users: pd.DataFrame, consent: int, stamp: pd.Timestamp) -> None:
    """What a materialization of the CRM snapshot writes for the user: the profile row at its event time, keyed by
    the user's pseudonym (the lake's id, feature_repo/pseudonyms.py)."""
    service = client.app.state.runtime.service
    store = service.champions[("hyperlift_uplift", "champion")].features.store
    view = store.get_feature_view(PROFILE_VIEW)
    online = store.get_online_features([f"{PROFILE_VIEW}:{f.name}" for f in view.features],
                                       [{"user_id": service.pseudonymizer(user)}])
    row = {name: values[0] for name, values in online.to_dict().items()}
    row.update(consent_marketing=consent, event_timestamp=stamp)
    store.write_to_online_store(PROFILE_VIEW, pd.DataFrame([row]))


def test_a_revocation_holds_until_a_later_event_grants_again(client, served_world, serving_settings):
    users = served_world[2]
    user = users_with(served_world)[0]
    assert served(client, user) - {NEUTRAL}  # consented: promotions are served (ε = 0.2 over three actions)
    now = client.app.state.runtime.service.clock.time()

    revoked = client.post("/v1/consent", json={"user_id": user, "granted": False, "event_id": "rev-1"})
    assert revoked.status_code == 202, revoked.text
    assert revoked.json() == {"event_id": "rev-1", "applied": True,
                              "in_effect": {"granted": False, "ts": pytest.approx(now, abs=1e-3), "source": "api"}}
    assert served(client, user) == {NEUTRAL}
    # Stored by the user's pseudonym, never by the raw id: the consent hash and the audit stream's record.
    settings = served_world[0]
    pseudonym = lake_id(settings, user)
    assert pseudonym != user
    store = redis.Redis.from_url(serving_settings.redis_url)
    assert store.hget(f"hyperlift:consent:{{{pseudonym}}}", "consent_marketing") is not None
    assert not store.exists(f"hyperlift:consent:{{{user}}}")
    (_, fields), = store.xrevrange(CONSENT_STREAM, count=1)
    audited = json.loads(fields[b"record"])
    assert audited["event_id"] == "rev-1" and audited["user_id"] == pseudonym
    assert audited["user_key"] == user_key(user, client.app.state.runtime.service.salt)

    older_grant = client.post("/v1/consent", json={"user_id": user, "granted": True, "ts": now - 3600})
    assert older_grant.status_code == 200 and older_grant.json()["applied"] is False
    sign_up = pd.Timestamp(now - 86400 * 10, unit="s", tz="UTC")
    write_profile_row(client, user, users, consent=1, stamp=sign_up)  # an older CRM snapshot materialized again
    assert served(client, user) == {NEUTRAL}
    assert client.get(f"/v1/consent/{user}").json() == {
        "consent_marketing": {"granted": False, "ts": pytest.approx(now, abs=1e-3), "source": "api"}}

    trace = redis.Redis.from_url(serving_settings.redis_url)
    client.app.state.runtime.service.trace.flush()
    (_, fields), = trace.xrevrange(serving_settings.decision_stream, count=1)
    record = json.loads(fields[b"record"])
    logged = [row for view, row in record["features"].items() if view.startswith(PROFILE_VIEW)]
    assert logged and logged[0]["values"]["consent_marketing"] == 0.0  # the log shows the consent the policy used

    # The CRM records a consent after the revocation: its new profile row wins in serving by its stamp alone; a CRM
    # sync also reports it as a consent event (source "crm"), which is what the lake's consent log knows.
    write_profile_row(client, user, users, consent=1, stamp=pd.Timestamp(now + 60, unit="s", tz="UTC"))
    assert served(client, user) - {NEUTRAL}
    runtime = client.app.state.runtime
    runtime.consent.record(pseudonym, "consent_marketing", True, ts=now + 60, source="crm", client_id="crm-sync",
                           user_key=user_key(user, runtime.service.salt), received=now)


def test_bad_consent_calls_are_refused_with_what_to_send(client, served_world):
    user = users_with(served_world)[1]
    future = client.app.state.runtime.service.clock.time() + 3600
    too_late = client.post("/v1/consent", json={"user_id": user, "granted": False, "ts": future})
    assert too_late.status_code == 422 and "in the future" in too_late.json()["detail"]
    unknown = client.post("/v1/consent", json={"user_id": user, "granted": False, "purpose": "consent_spam"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == "unknown consent purpose 'consent_spam'; the region bundles use ['consent_marketing']"
    assert client.post("/v1/consent", json={"user_id": user, "granted": "no"}).status_code == 422
    assert client.get(f"/v1/consent/{user}").json() == {}


def replay(serving_settings, lake_root) -> dg.AssetCheckEvaluation:
    """Drain the decision and consent streams into a lake and run the decision log's consent check on it."""
    resources = {"lake": DataLakeResource(root=str(lake_root)), "redis": RedisResource(url=serving_settings.redis_url)}
    result = dg.materialize([decision_trace, consent_events, decisions_honour_consent], resources=resources)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_the_decision_log_replayed_against_the_consent_log_finds_no_promotion_after_a_revocation(
    client, served_world, serving_settings, tmp_path
):
    service = client.app.state.runtime.service
    revoked, kept = users_with(served_world)[2:4]
    assert client.post("/v1/consent", json={"user_id": revoked, "granted": False}).status_code == 202
    for user in (revoked, kept):
        served(client, user, n=20)
    service.trace.flush()
    honoured = replay(serving_settings, tmp_path / "lake")
    assert honoured.passed, honoured.metadata
    assert honoured.metadata["revocations"].value >= 1 and honoured.metadata["violations"].value == 0
    # The consent lake knows the user by pseudonym (and user key), never by the raw id.
    consent_lake = read_partitions(tmp_path / "lake" / CONSENT_EVENTS, record_format=CONSENT_FORMAT)
    ours = consent_lake.loc[consent_lake["user_key"] == user_key(revoked, service.salt)]
    assert len(ours) >= 1 and set(ours["user_id"]) == {lake_id(served_world[0], revoked)}
    assert revoked not in set(consent_lake["user_id"])

    service.consent = None  # a service that ignores consent events: its promotions must be caught by the replay
    assert served(client, revoked, n=20) - {NEUTRAL}
    service.trace.flush()
    caught = replay(serving_settings, tmp_path / "lake")
    assert not caught.passed and caught.metadata["violations"].value >= 1
    first = caught.metadata["first_violations"].value[0]
    assert first["purpose"] == "consent_marketing" and first["action"] != NEUTRAL
