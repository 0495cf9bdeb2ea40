"""Schemathesis over every operation of the published OpenAPI document, in-process against the app uvicorn runs
(the decision fast path in front of FastAPI), on the real Redis, Feast and MLflow of the served world.

Positive and negative data, every check (no 5xx, statuses, content types, bodies and headers as documented, schema-
valid requests accepted, schema-invalid ones refused, auth not ignored, unsupported methods refused with `Allow`),
a fixed seed and deterministic generation, bounded in examples and time: the same cases on every run.

Four answers depend on what the schema cannot state, and are declared as expected for schema-valid requests:
a 404 for a surface that is not configured and a 422 for a candidate action the surface does not offer
(decisions), a 422 for an outcome stamped after the service's clock (outcomes), a 422 when every event of a call
breaks its contract (events: the contracts are checked per event, time against the watermark), a 422 for a
consent purpose no region bundle uses or a consent stamped after the service's clock (consent).
"""

from __future__ import annotations

import json
import time

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.python import asgi

from serving.api.fast_path import DecisionFastPath
from serving.main import create_app
from serving.ops.api_keys import SCOPES, hash_secret

TOKEN = "hlk_fuzz-key-of-every-scope"
CONFIG = f"""
seed = 20261206
workers = 1
continue-on-failure = true
headers = {{ Authorization = "Bearer {TOKEN}" }}

[generation]
mode = "all"
max-examples = 200
deterministic = true
database = "none"

[cache]
enabled = false

[phases.stateful]
max-steps = 6
generation.max-examples = 40

[checks]
enabled = true
# A body over the 64 kB limit is refused with 413 before it is read, whatever else is wrong with it.
negative_data_rejection.expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

[[operations]]
include-path = "/v1/decisions"
checks.positive_data_acceptance.expected-statuses = ["2xx", 404, 422]

[[operations]]
include-path = "/v1/outcomes"
checks.positive_data_acceptance.expected-statuses = ["2xx", 422]

[[operations]]
include-path = "/v1/events"
checks.positive_data_acceptance.expected-statuses = ["2xx", 422]

[[operations]]
include-path = "/v1/consent"
checks.positive_data_acceptance.expected-statuses = ["2xx", 422]
"""


def failures_of(event: events.ScenarioFinished) -> list[str]:
    """One line per failed check of a scenario: operation, check, what went wrong, the request as curl."""
    lines = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            case = event.recorder.cases[case_id].value
            lines.append(f"{event.recorder.label} [{check.name}] {failure.title}: {failure.message[:300]}\n"
                         f"    {case.as_curl_command()[:500]}")
    return lines


@pytest.fixture
def fuzzed_app(serving_settings, tmp_path):
    """The app in production mode with one API key of every scope (TOKEN, sent on every call), so every operation is
    fuzzed behind its authentication; shut down afterwards."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"id": "fuzz", "sha256": hash_secret(TOKEN), "scopes": list(SCOPES)}]}))
    app = create_app(serving_settings.model_copy(
        update={"mode": "production", "api_keys_file": keys, "hash_salt": "fuzz-salt-" + "x" * 16}
    ))
    yield app
    asgi.shutdown_lifespans()


def test_every_operation_answers_as_the_openapi_document_says(fuzzed_app):
    assert isinstance(fuzzed_app.app.app, DecisionFastPath)  # raw ASGI, behind rate limit and counter
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app, config=SchemathesisConfig.from_str(CONFIG))
    operations = sorted(f"{op.method.upper()} {op.path}" for op in (r.ok() for r in schema.get_all_operations()))
    assert operations == [
        "GET /healthz", "GET /metrics", "GET /readyz", "GET /v1/consent/{user_id}", "GET /v1/stats",
        "POST /v1/admin/clock", "POST /v1/admin/erasure", "POST /v1/admin/safe-mode", "POST /v1/consent",
        "POST /v1/decisions", "POST /v1/events",
        "POST /v1/outcomes",
    ]
    started = time.monotonic()
    found, errors, tested, cases = [], [], set(), 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested.add(event.recorder.label)
            cases += len(event.recorder.cases)
            found.extend(failures_of(event))
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.EngineFinished):
            stop = event.stop_reason
    print(f"schemathesis: {cases} requests in {time.monotonic() - started:.1f} s, stopped: {stop}")
    assert errors == []
    assert found == [], "\n".join(found)
    assert tested - {"Stateful tests"} == set(operations)
    assert cases > 1_000
    assert stop == "completed"
