"""POST /v1/consent end to end: a revocation is in effect for the next decision, an older grant or an older CRM row
does not undo it, a later CRM row does, and the decision log shows the consent each decision used."""

import json

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from serving.main import create_app
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
    """What a materialization of the CRM snapshot writes for the user: the profile row at its event time."""
    store = client.app.state.runtime.service.champions[("hyperlift_uplift", "champion")].features.store
    view = store.get_feature_view(PROFILE_VIEW)
    online = store.get_online_features([f"{PROFILE_VIEW}:{f.name}" for f in view.features], [{"user_id": user}])
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

    write_profile_row(client, user, users, consent=1, stamp=pd.Timestamp(now + 60, unit="s", tz="UTC"))
    assert served(client, user) - {NEUTRAL}  # the CRM recorded a consent after the revocation: it wins


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
