"""Erasure after a rotation of the trace salt: the user's decisions logged before it (under the old pseudonym) are
found and anonymised in the lake, their caps deleted in Redis and their log lines removed, like those logged after
it; another user's rows under either salt are left alone."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import redis

from infra.erasure import lake, logs, redis_store
from infra.erasure.anonymise import Anonymiser
from infra.erasure.receipt import StoreReport
from infra.erasure.subject import Subject
from serving.decision.identity import user_key

OLD, NEW = "old-trace-salt-0123456789", "new-trace-salt-0123456789"


def decisions_file(root):
    path = root / "data" / "decisions" / "date=2026-10-07" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    rows = [("d1", user_key(42, OLD)), ("d2", user_key(42, NEW)), ("d3", user_key(43, OLD)), ("d4", user_key(43, NEW))]
    pq.write_table(pa.table({"decision_id": [d for d, _ in rows], "user_key": [k for _, k in rows],
                             "context_hash": ["c" * 32] * 4, "features": ['{"v": 1}'] * 4}), path)
    return path


def test_the_lake_rows_under_the_old_pseudonym_are_anonymised_too(tmp_path):
    path = decisions_file(tmp_path)
    rejected = tmp_path / "data" / "decisions" / lake.REJECTED_DIR / "x.jsonl"
    rejected.parent.mkdir(parents=True)
    rejected.write_text(json.dumps({"record": json.dumps({"user_key": user_key(42, OLD)})}) + "\n"
                        + json.dumps({"record": json.dumps({"user_key": user_key(43, OLD)})}) + "\n")
    report = StoreReport("lake")
    lake.erase_lake(tmp_path / "data", tmp_path, Subject.of(42, NEW, (OLD,)), Anonymiser(), report)
    after = pq.read_table(path).to_pylist()
    assert report.rows_anonymised == 2 and report.entries_removed == 1
    assert [r["user_key"] for r in after][2:] == [user_key(43, OLD), user_key(43, NEW)]  # the other user's, kept
    assert {r["user_key"] for r in after[:2]}.isdisjoint({user_key(42, OLD), user_key(42, NEW)})
    assert [r["features"] for r in after] == [None, None, '{"v": 1}', '{"v": 1}']
    assert user_key(43, OLD) in rejected.read_text() and user_key(42, OLD) not in rejected.read_text()


def test_without_the_former_salt_the_old_rows_would_be_missed(tmp_path):
    decisions_file(tmp_path)
    report = StoreReport("lake")
    lake.erase_lake(tmp_path / "data", tmp_path, Subject.of(42, NEW), Anonymiser(), report)
    assert report.rows_anonymised == 1  # the row logged before the rotation is still the user's


def test_caps_and_log_lines_under_either_pseudonym_are_found(online_redis_url):
    subject = Subject.of(42, NEW, (OLD,))
    client = redis.Redis.from_url(online_redis_url)
    for salt in (OLD, NEW):
        for user in (42, 43):
            client.zadd(f"hyperlift:caps:{{{user_key(user, salt)}}}:pushes_per_day", {"t": 1})
    found = {k.decode() for k in redis_store.user_keys(client, subject)}
    assert found == {f"hyperlift:caps:{{{user_key(42, s)}}}:pushes_per_day" for s in (OLD, NEW)}
    client.close()
    pattern = logs.line_pattern(subject)
    assert pattern.search(f"user {user_key(42, OLD)}: online store read failed".encode())
    assert pattern.search(f"user {user_key(42, NEW)}: online store read failed".encode())
    assert not pattern.search(f"user {user_key(43, OLD)}: online store read failed".encode())
