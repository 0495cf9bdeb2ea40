"""One-machine infrastructure: typed runtime settings, the embedded Redis server, and the process launcher."""

# prometheus_client picks its value storage once, when first imported; Feast's import sets PROMETHEUS_MULTIPROC_DIR,
# which would make the decision service's counters shared files. Every entry point imports infra or serving first.
import prometheus_client.values  # noqa: F401  (must stay before any Feast import)
