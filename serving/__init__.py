"""The FastAPI decision service: surfaces, policy pipeline, feature and model clients, trace, routes."""

# Before any Feast import: infra pins prometheus_client's value storage to process memory (see infra/__init__.py).
import infra  # noqa: F401
