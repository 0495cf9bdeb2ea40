"""Materialization with the Spark engine's read: the same latest rows as the pyarrow reader, the same Redis bytes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.materialize import read_latest_pyarrow
from feature_repo.offline_engine import materialize
from infra.settings import HyperliftSettings
from tests.feature_repo.spark_support import SPARK_TEST_MASTER, spark  # noqa: F401  (the session fixture)
from tests.feature_repo.test_materialize import END, START, USERS, VIEWS, dump, pair  # noqa: F401

pytestmark = pytest.mark.spark


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by user, event time as int64 ns (the pyarrow reader keeps the parquet's unit, Spark gives ns)."""
    frame = frame.sort_values("user_id", ignore_index=True)
    return frame.assign(event_timestamp=frame["event_timestamp"].dt.as_unit("ns").array.asi8)


def test_spark_reader_picks_the_rows_the_pyarrow_reader_picks(pair, spark):
    from feature_repo.spark_materialize import read_latest_spark

    (store, _), _ = pair
    # every view over the window; the tie-heavy view also over one instant and over a window with no row
    edges = (END, END), (END + pd.Timedelta(days=30), END + pd.Timedelta(days=31))
    for view, (start, end) in [*((view, (START, END)) for view in VIEWS), *(("double_fv", edge) for edge in edges)]:
        window = start.to_pydatetime(), end.to_pydatetime()
        expected = read_latest_pyarrow(store, store.get_feature_view(view), *window)
        actual = read_latest_spark(store, store.get_feature_view(view), *window, spark)
        assert list(actual.columns) == list(expected.columns), view
        pd.testing.assert_frame_equal(comparable(actual), comparable(expected), check_exact=True, obj=view)
    # the window caught what it is for: ties on event time broken by the created time, users outside it, nulls
    tied = read_latest_spark(store, store.get_feature_view("double_fv"), START.to_pydatetime(), END.to_pydatetime())
    assert 0 < len(tied) < USERS and tied["count"].isna().any()


def test_spark_engine_writes_the_bytes_the_pandas_engine_writes(pair, spark, tmp_path):
    (pandas_store, spark_store), (pandas_client, spark_client) = pair
    window = START.to_pydatetime(), END.to_pydatetime()
    engines = [HyperliftSettings(home=tmp_path / name, offline_engine=name, spark_master=SPARK_TEST_MASTER)
               for name in ("pandas", "spark")]
    by_pandas = materialize(pandas_store, VIEWS, *window, engines[0], mode="newer_or_equal")
    by_spark = materialize(spark_store, VIEWS, *window, engines[1], mode="newer_or_equal")
    assert [(m.view, m.rows) for m in by_spark] == [(m.view, m.rows) for m in by_pandas]
    assert np.all([m.rows > 0 for m in by_spark])
    assert dump(spark_client) == dump(pandas_client)  # every key, field and timestamp, byte for byte
    for view in VIEWS:  # Feast's bookkeeping: the interval is recorded, so materialize-incremental continues
        intervals = spark_store.get_feature_view(view).materialization_intervals
        assert [(a.isoformat(), b.isoformat()) for a, b in intervals] == [(START.isoformat(), END.isoformat())]
