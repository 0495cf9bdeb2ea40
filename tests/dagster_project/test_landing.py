"""The landing folder: a shop's own files (CSV, JSONL, parquet) in, typed raw events out; rows that cannot be typed
are refused at landing and kept; the files' days bound the partitions; the simulator is one writer of the folder."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
import pytest

from dagster_project.assets import ingestion, validation
from dagster_project.partitions import data_span, partition_range_tags
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import CUSTOMERS, LANDING_QUARANTINE, QUARANTINE, RAW_EVENTS, VALIDATED_EVENTS
from dagster_project.resources.landing import LandingResource, read_file, typed_events
from dagster_project.resources.shop import ShopResource
from infra.settings import HyperliftSettings
from simulator import ShopConfig
from simulator.landing import write_landing

SHOP = ShopConfig(n_users=300, n_items=40, n_days=4, seed=11)


def landing_at(folder, source="files") -> LandingResource:
    return LandingResource(path=str(folder), source=source, shop=ShopResource.from_config(SHOP))


def test_csv_numerals_are_numbers_and_text_in_a_numeric_column_is_refused_with_its_reason():
    frame = pd.DataFrame({
        "event_id": ["a", "b", "c", "d"], "event_type": ["page_view"] * 4, "event_version": ["1"] * 4,
        "ts": ["2026-10-01T10:00:00Z", "2026-10-01T11:00:00Z", "not a time", "2026-10-01T12:00:00Z"],
        "user_id": ["7", "abc", "8", "9.5"], "price": ["12.5", "1", "2", "3"],
    })
    landed, refused = typed_events(frame, "events/2026-10-01.csv")
    assert landed["event_id"].tolist() == ["a"]
    assert landed["user_id"].tolist() == [7] and str(landed["user_id"].dtype) == "Int64"
    assert landed["price"].tolist() == [12.5]
    assert landed["ts"].iloc[0] == pd.Timestamp("2026-10-01T10:00:00Z")
    assert landed["session_id"].isna().all()  # optional columns the file lacks are null
    assert refused["event_id"].tolist() == ["b", "c", "d"]
    assert refused["rule"].tolist() == ["user_id.type", "ts.type", "user_id.type"]
    assert refused["user_id"].tolist() == ["abc", "8", "9.5"]  # kept as written
    assert refused["reason"].iloc[0] == ("user_id is not a number in events/2026-10-01.csv: write a numeral (not "
                                         "text, not true/false)")
    assert len(landed) + len(refused) == len(frame)


def test_json_booleans_are_not_numbers():
    frame = pd.DataFrame({"event_id": ["a"], "event_type": ["page_view"], "ts": ["2026-10-01T10:00:00Z"],
                          "user_id": pd.Series([True], dtype=object)})
    landed, refused = typed_events(frame, "f.jsonl")
    assert landed.empty and refused["rule"].tolist() == ["user_id.type"]


def test_a_file_without_the_envelope_is_refused_whole_with_what_to_add():
    with pytest.raises(ValueError, match=r"lack the columns \['event_type', 'ts'\]"):
        typed_events(pd.DataFrame({"event_id": ["a"]}), "x.csv")


def test_files_are_named_by_day_once(tmp_path):
    events = tmp_path / "events"
    events.mkdir()
    (events / "2026-10-02.csv").write_text("event_id,event_type,ts\n")
    (events / "README.md").write_text("not data")
    (events / ".2026-10-03.csv.tmp").write_text("half written")
    assert list(landing_at(tmp_path).files()) == ["2026-10-02"]
    assert landing_at(tmp_path).span() == (datetime(2026, 10, 2, tzinfo=timezone.utc),
                                            datetime(2026, 10, 3, tzinfo=timezone.utc))
    (events / "2026-10-02.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="two event files for 2026-10-02"):
        landing_at(tmp_path).files()
    (events / "2026-10-02.parquet").unlink()
    (events / "october.csv").write_text("")
    with pytest.raises(ValueError, match="named by their UTC day of arrival"):
        landing_at(tmp_path).files()


def test_an_empty_landing_folder_says_what_to_add(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no event files in .*events: add <YYYY-MM-DD>"):
        landing_at(tmp_path).span()
    with pytest.raises(FileNotFoundError, match="no customers file"):
        landing_at(tmp_path).read_customers()


@pytest.mark.parametrize("fmt", ["csv.gz", "jsonl"])
def test_the_simulators_files_read_back_as_the_simulated_events(tmp_path, fmt):
    rows = write_landing(SHOP, tmp_path / "parquet")
    write_landing(SHOP, tmp_path / fmt, fmt=fmt)
    day = sorted(rows)[1]
    expected, _ = typed_events(read_file(tmp_path / "parquet" / "events" / f"{day}.parquet"), "parquet")
    got, refused = typed_events(read_file(tmp_path / fmt / "events" / f"{day}.{fmt}"), fmt)
    assert refused.empty and len(got) == rows[day]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)
    customers = landing_at(tmp_path / fmt).read_customers()
    assert customers["user_id"].dtype == "int64" and customers["consent_marketing"].dtype == bool
    assert str(customers["signup_ts"].dt.tz) == "UTC"


def test_a_shop_of_files_lands_with_every_row_accounted_for(tmp_path, redis_databases, monkeypatch):
    folder = tmp_path / "landing"
    rows = write_landing(SHOP, folder, fmt="csv.gz")
    first_day = sorted(rows)[0]
    with gzip.open(folder / "events" / f"{first_day}.csv.gz", "at") as handle:  # one row a contract cannot type
        handle.write("bad-1,page_view,1,2026-10-01T09:00:00Z,abc,s1,1,1,1.0,,,,product,mobile,north\n")
    before = {p.name: p.read_bytes() for p in (folder / "events").iterdir()}
    monkeypatch.setenv("HYPERLIFT_LANDING_SOURCE", "files")
    monkeypatch.setenv("HYPERLIFT_LANDING_DIR", str(folder))
    settings = HyperliftSettings(home=tmp_path / "home", reports_dir=tmp_path / "reports")
    start, end = data_span(settings)
    assert (start.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d")) == (first_day, "2026-10-05")

    resources = build_resources(settings, redis_databases.fresh(), ShopConfig(n_users=1, n_days=1))
    result = dg.materialize(
        [ingestion.landing, ingestion.shop_reference, ingestion.raw_events, validation.validated_events],
        resources=resources, instance=dg.DagsterInstance.ephemeral(),
        tags=partition_range_tags(first_day, "2026-10-04"),
    )
    assert result.success
    assert {p.name: p.read_bytes() for p in (folder / "events").iterdir()} == before  # read, never rewritten
    data = settings.data_dir
    raw = pd.read_parquet(data / RAW_EVENTS)
    refused = pd.read_parquet(data / LANDING_QUARANTINE)
    assert len(raw) + len(refused) == sum(rows.values()) + 1
    assert refused[["event_id", "user_id", "rule"]].values.tolist() == [["bad-1", "abc", "user_id.type"]]
    accepted, quarantined = pd.read_parquet(data / VALIDATED_EVENTS), pd.read_parquet(data / QUARANTINE)
    assert len(raw) == len(accepted) + len(quarantined)
    assert len(pd.read_parquet(data / CUSTOMERS)) == SHOP.n_users
    landed = result.asset_materializations_for_node("raw_events")[0].metadata
    assert (landed["rows"].value, landed["refused_at_landing"].value) == (len(raw), 1)


def test_raw_events_refuse_to_land_nothing_when_the_folder_is_empty(tmp_path, redis_databases):
    settings = HyperliftSettings(home=tmp_path / "home", reports_dir=tmp_path / "reports")
    resources = build_resources(settings, redis_databases.fresh(), SHOP)
    result = dg.materialize([ingestion.raw_events], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                            tags=partition_range_tags("2026-10-01", "2026-10-02"), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "no event files in" in str(failure.step_failure_data.error) and "materialize `landing` first" in str(
        failure.step_failure_data.error)
    assert not (settings.data_dir / RAW_EVENTS).exists()
