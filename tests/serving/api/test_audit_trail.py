"""Admin calls and consent changes through the API land in the audit trail with who, what and why, never a raw id."""

import pytest
from fastapi.testclient import TestClient

from infra.audit import AuditLog, audit_dir
from serving.decision.identity import user_key
from serving.main import create_app
from serving.ops.api_keys import ANONYMOUS
from tests.serving.api.test_api import users_with


@pytest.fixture
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def test_admin_and_consent_calls_are_audited_without_raw_ids(client, served_world, serving_settings):
    log = AuditLog(audit_dir())
    seen = len(log.entries())
    user = users_with(served_world)[5]
    assert client.post("/v1/admin/safe-mode", json={"enabled": True, "reason": "incident 12"}).status_code == 200
    assert client.post("/v1/admin/safe-mode", json={"enabled": False, "reason": "resolved"}).status_code == 200
    assert client.post("/v1/consent", json={"user_id": user, "granted": False}).status_code == 202
    now = client.app.state.runtime.service.clock.now()
    assert client.post("/v1/admin/clock", json={"now": now.isoformat()}).status_code == 200
    entries = log.entries()[seen:]
    assert [(e["action"], e["target"], e["reason"]) for e in entries] == [
        ("safe_mode.on", "all surfaces", "incident 12"), ("safe_mode.off", "all surfaces", "resolved"),
        ("consent.revoke", f"user_key:{user_key(user, serving_settings.hash_salt)}", ""),
        ("clock.advance", "simulated clock", ""),
    ]
    assert {e["actor"] for e in entries} == {ANONYMOUS}  # dev mode: no key; in production the API key id
    consent = entries[2]
    assert consent["details"]["purpose"] == "consent_marketing" and consent["details"]["applied"] is True
    assert "user_id" not in consent["details"] and consent["clock"] == pytest.approx(now.timestamp())
