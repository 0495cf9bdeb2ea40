"""The FastAPI decision service: surfaces, policy pipeline, feature and model clients, trace, routes."""

# prometheus_client picks its value storage once, when first imported: importing Feast first sets
# PROMETHEUS_MULTIPROC_DIR, which would put our counters in files shared by every registry of the process.
import prometheus_client.values  # noqa: F401  (must stay before any Feast import)
