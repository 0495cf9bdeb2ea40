"""The landing folder in every format ingestion reads: the user's rows leave CSV, JSON-lines (plain and gzipped) and
parquet files, everyone else's rows stay as they were."""

import gzip
import json

import pandas as pd

from infra.erasure.landing import erase_landing
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject

SUBJECT = Subject.of(7, "salt")


def test_the_users_rows_leave_every_landing_format(tmp_path):
    folder = tmp_path / "landing"
    (folder / "events").mkdir(parents=True)
    (folder / "customers.csv").write_text("user_id,region\n7,north\n17,south\n 7 ,east\n70,west\n")
    lines = [{"event_id": "a", "user_id": 7}, {"event_id": "b", "user_id": 8}, {"event_id": "c", "user_id": "7"}]
    (folder / "events" / "2026-10-01.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    pd.DataFrame({"event_id": ["d", "e"], "user_id": pd.array([7, None], dtype="Int64")}).to_parquet(
        folder / "events" / "2026-10-02.parquet", index=False)
    (folder / "actions.csv").write_text("action_id,unit_cost\nx,1.0\n")
    report = StoreReport("landing")

    erase_landing(folder, tmp_path, SUBJECT, report)

    assert (folder / "customers.csv").read_text() == "user_id,region\n17,south\n70,west\n"
    events = gzip.decompress((folder / "events" / "2026-10-01.jsonl.gz").read_bytes())
    kept = [json.loads(x) for x in events.splitlines()]
    assert kept == [{"event_id": "b", "user_id": 8}]
    assert pd.read_parquet(folder / "events" / "2026-10-02.parquet")["event_id"].tolist() == ["e"]
    assert (folder / "actions.csv").read_text() == "action_id,unit_cost\nx,1.0\n"
    assert report.rows_removed == 5 and sorted(report.files_rewritten) == [
        "landing/customers.csv", "landing/events/2026-10-01.jsonl.gz", "landing/events/2026-10-02.parquet"]
