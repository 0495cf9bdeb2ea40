"""The FastAPI decision service, by role: `api` (HTTP edge), `core` (settings, clock, schemas, runtime), `decision`
(the decision pipeline) with `policy` (its rules), `store` (Redis and lake I/O), `ops` (operations)."""

# Before any Feast import: infra pins prometheus_client's value storage to process memory (see infra/__init__.py).
import infra  # noqa: F401
