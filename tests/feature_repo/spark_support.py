"""The one SparkSession of the Spark tests (local[2], shared by every test of the session), skipped without Java."""

from __future__ import annotations

import pytest

SPARK_TEST_MASTER = "local[2]"


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession with the engine's defaults; skips the test when no Java runtime is installed."""
    from feature_repo.spark_session import java_available, spark_session

    if not java_available():
        pytest.skip("Spark tests need a Java 17 runtime (JAVA_HOME or `java` on PATH); none found on this machine")
    # Not stopped at the end: one JVM for the whole test session, which ends with the process.
    return spark_session(SPARK_TEST_MASTER)
