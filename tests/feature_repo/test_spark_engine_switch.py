"""The offline-engine switch: read from the environment, shown by the profile, and pyspark-free when it says pandas."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.profile import describe, profile_environment
from infra.settings import HyperliftSettings


def test_the_engine_is_pandas_unless_the_environment_says_spark(monkeypatch, tmp_path):
    default = HyperliftSettings(home=tmp_path)
    assert (default.offline_engine, default.spark_master) == ("pandas", "local[*]")
    assert "offline engine   pandas, single process" in describe(default)
    assert "HYPERLIFT_OFFLINE_ENGINE" not in profile_environment(default)
    monkeypatch.setenv("HYPERLIFT_OFFLINE_ENGINE", "spark")
    monkeypatch.setenv("HYPERLIFT_SPARK_MASTER", "spark://10.0.0.9:7077")
    chosen = HyperliftSettings(home=tmp_path)
    assert "offline engine   spark, master spark://10.0.0.9:7077 (HYPERLIFT_SPARK_MASTER)" in describe(chosen)
    # a process started by infra.launch runs the same engine
    assert profile_environment(chosen)["HYPERLIFT_OFFLINE_ENGINE"] == "spark"
    assert profile_environment(chosen)["HYPERLIFT_SPARK_MASTER"] == "spark://10.0.0.9:7077"


def test_an_unknown_engine_is_refused_with_the_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERLIFT_OFFLINE_ENGINE", "dask")
    with pytest.raises(ValueError, match="'pandas' or 'spark'"):
        HyperliftSettings(home=tmp_path)


def test_the_definitions_and_the_pandas_engine_work_without_pyspark():
    """The default path needs neither pyspark nor Java: with pyspark unimportable (as without it installed), the
    Dagster definitions load, a day validates and tiles on the pandas engine, and choosing the spark engine says how
    to install it. (Where pyspark is installed, great_expectations and mlflow import it themselves, so "not
    imported" is not the property to test.)"""
    code = (
        "import sys\n"
        "sys.modules['pyspark'] = None  # as if not installed: every import of it raises ImportError\n"
        "import dagster_project.definitions\n"
        "from feature_repo import offline_engine\n"
        "from infra.settings import HyperliftSettings\n"
        "assert HyperliftSettings().offline_engine == 'pandas'\n"
        "import pandas as pd\n"
        "from feature_repo.event_time import Lateness\n"
        "from tests.feature_repo.factories import START, event, frame\n"
        "day = offline_engine.validate_day(frame([event()]), START, Lateness(2), pd.Index([], dtype='string'),\n"
        "                                  HyperliftSettings())\n"
        "assert len(offline_engine.tiles_of_day(day.accepted, HyperliftSettings())) == 1\n"
        "try:\n"
        "    offline_engine._spark(HyperliftSettings(offline_engine='spark'))\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HYPERLIFT_OFFLINE_ENGINE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HYPERLIFT_OFFLINE_ENGINE=spark needs pyspark: pip install 'hyperlift[spark]'" in done.stdout
