"""The Spark session of the offline engine (`HYPERLIFT_OFFLINE_ENGINE=spark`): one per process, master from settings.

Only the Spark engine imports this module; the default pandas engine (and `make demo`) never imports pyspark.

Defaults chosen for the project's tables (a few million rows per job, not terabytes):
- `spark.sql.session.timeZone=UTC`: timestamps are UTC instants everywhere in the project (naive ones count as UTC);
- `spark.sql.parquet.nanosAsLong=true` (Spark's `spark.sql.legacy.parquet.nanosAsLong`): pandas writes the lake's
  timestamps as parquet TIMESTAMP(NANOS), which Spark's TIMESTAMP (microseconds) cannot hold; read as int64
  nanoseconds they compare exactly as the pandas engine compares them;
- shuffle partitions = 2 × the cores of the master (Spark's 200 is sized for clusters; on local[2] most would be
  empty tasks), overridable with `spark_conf`;
- no UI, no event log: tests and benches start and stop sessions, and the UI's port would clash between workers.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


class SparkUnavailableError(RuntimeError):
    """Spark cannot start here (no Java); the message says what to install or which engine to choose instead."""


def java_available() -> bool:
    """Whether a Java runtime Spark can start is on this machine (JAVA_HOME or `java` on PATH)."""
    home = os.environ.get("JAVA_HOME")
    return bool(home and os.path.exists(os.path.join(home, "bin", "java"))) or shutil.which("java") is not None


def master_cores(master: str) -> int:
    """Cores a master string asks for: local[N] → N, local[*] / local / a cluster URL → this machine's count."""
    match = re.fullmatch(r"local\[(\d+)(?:,\d+)?\]", master.strip())
    if match:
        return int(match.group(1))
    return 1 if master.strip() == "local" else (os.cpu_count() or 1)


def spark_session(master: str = DEFAULT_MASTER, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The process's SparkSession on `master` with the project's defaults (module doc); reused when one is running.

    A running session on another master is stopped first: a process holds one SparkContext, and a caller that names
    a master (the bench's local[1] then local[2]) means that one.
    """
    if not java_available():
        raise SparkUnavailableError(
            "HYPERLIFT_OFFLINE_ENGINE=spark needs a Java 17 runtime (apt-get install openjdk-17-jre-headless, or set "
            "JAVA_HOME); without one, unset HYPERLIFT_OFFLINE_ENGINE to use the single-process pandas engine"
        )
    # Python workers (the snapshots' pandas functions) run this interpreter, whose venv has pandas and the project,
    # unless the deployment names its executors' Python itself.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        if active.sparkContext.master == master:
            return active
        active.stop()
    shuffle = str(max(2, 2 * master_cores(master)))
    settings = {
        "spark.sql.session.timeZone": "UTC",
        NANOS_AS_LONG: "true",
        "spark.sql.shuffle.partitions": shuffle,
        "spark.default.parallelism": shuffle,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.eventLog.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": os.environ.get("HYPERLIFT_SPARK_DRIVER_MEMORY", "2g"),
        # Adaptive execution coalesces small shuffle partitions; keep it (Spark's default), it only ever merges.
        **(dict(conf) if conf else {}),
    }
    builder = SparkSession.builder.master(master).appName("hyperlift-offline")
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
