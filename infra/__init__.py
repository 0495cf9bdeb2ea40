"""One-machine infrastructure: typed runtime settings, the embedded Redis server, and the process launcher."""

import os

# prometheus_client picks its value storage once, when first imported. Feast's import sets PROMETHEUS_MULTIPROC_DIR,
# and a process started by one that imported Feast (a bench, `make demo`) inherits it: either would make the decision
# service's counters mmap'd files shared by every registry of the process (our metrics are per worker, in memory; see
# serving/ops/metrics.py). Every entry point imports infra or serving first, so the choice is made here, without the
# variable; it is put back for Feast's own collector.
_MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
_inherited = {name: os.environ.pop(name) for name in _MULTIPROCESS_VARIABLES if name in os.environ}
import prometheus_client.values  # noqa: E402,F401  (must stay before any Feast import)

os.environ.update(_inherited)
