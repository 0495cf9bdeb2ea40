"""Keyed erasure end to end: a user seeded into every store through the normal paths (the pipeline's assets, the
decision service's routes, the drains, MLflow registration), then erased. Afterwards no file under the home (the
Redis server's own files included, read back by a second server), no Redis key and no stream entry holds the user's
id, the lake's pseudonym of it, its user key or a Feast entity key (only the audit trail and the receipt name the
user key, on purpose), and everyone else's features, rebuilt from the erased lake, are byte for byte what they
were."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient

from dagster_project.assets import decisions, features, ingestion, online_store, stream_state, training, validation
from dagster_project.partitions import shop_days
from dagster_project.resources import build_resources
from dagster_project.resources.data_lake import QUARANTINE, TRAINING_SET, VALIDATED_EVENTS
from infra import keys
from infra.audit import AuditLog
from infra.erasure.procedure import DRAINED, Target, erase, export
from infra.erasure.subject import Subject, entity_key
from infra.redis_server import EmbeddedRedis
from infra.settings import HyperliftSettings
from serving.core.config import ServingSettings
from serving.main import create_app
from serving.store.wal import Entry, parse
from serving.ops.json_logs import JsonFormatter
from simulator import ShopConfig
from tests import lake_ids
from tests.lake_ids import raw_users
from tests.serving.conftest import ACTIONS, FEATURES, write_policy_dir
from training.learners import TLearner
from training.pyfunc import UpliftModel
from training.registry import CHAMPION_ALIAS, log_and_register

SHOP = ShopConfig(n_users=150, n_items=40, n_days=6, seed=5)
PIPELINE = dg.load_assets_from_modules([ingestion, validation, features, online_store, stream_state, training])
REBUILD = dg.load_assets_from_modules([validation, features, online_store, stream_state])  # from the erased raw lake
DRAINS = [decisions.decision_trace, decisions.outcome_events, decisions.stream_quarantine, decisions.consent_events]
FEATURE_TABLES = ("features/user_activity", "features/activity_tiles", "features/user_profile.parquet",
                  "validated/events")


def salt() -> str:
    """The home's trace salt (the world fixture makes it, as the service's first start in dev mode would)."""
    return keys.trace_salt()


def subject_of(user: int) -> Subject:
    """The user as the home's keys know them: user keys and the lake's pseudonyms (the pipeline made that key)."""
    return Subject.of(user, salt(), pseudonymizers=keys.pseudonymizers())


def lake_id(user: int) -> int:
    """The user's id in the lake and Redis: the pseudonym under the home's current key (feature_repo/pseudonyms.py)."""
    return lake_ids.lake_id(HyperliftSettings(), user)


# -- seeding -----------------------------------------------------------------------------------------------------


def pick_subject(settings: HyperliftSettings) -> int:
    """A user with training rows and, if any has one, a quarantined batch event."""
    trained = raw_users(settings, pd.read_parquet(settings.data_dir / TRAINING_SET)["user_id"].value_counts().index)
    quarantined = set(pd.read_parquet(settings.data_dir / QUARANTINE)["user_id"].dropna().astype(int))  # raw ids
    both = [u for u in trained if u in quarantined]
    return both[0] if both else trained[0]


def register_champion(settings: HyperliftSettings, subject: int) -> None:
    """A small model logged as models.py logs one: its input example is the training set (the subject's rows first)."""
    data = pd.read_parquet(settings.data_dir / TRAINING_SET)
    mine = data["user_id"] == lake_id(subject)
    data = pd.concat([data[mine], data[~mine]], ignore_index=True)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((300, len(FEATURES))), columns=FEATURES)
    treatment = np.array(ACTIONS)[np.arange(300) % 3]
    learner = TLearner(objective="reg:squarederror", n_estimators=5).fit(X, treatment, rng.random(300))
    log_and_register(
        model=UpliftModel(learner, FEATURES, {"pct10_sitewide": 0.0, "push_reminder": 0.02}),
        tracking_uri=settings.mlflow_uri, experiment="erasure-test", artifact_dir=settings.mlflow_artifacts_dir,
        model_name="hyperlift_uplift", feature_service="uplift_v1", params={}, metrics={}, tags={},
        input_example=data, alias=CHAMPION_ALIAS,
    )


def serve(settings: HyperliftSettings, redis_url: str, subject: int, others: list[int], tmp: Path,
          resources: dict) -> None:
    """Decisions, an outcome, events (one refused) and a consent revocation through the service; the streams
    drained into the lake half way, so the lake, the streams and the write-ahead files all hold the subject."""
    policy = write_policy_dir(tmp / "policy")
    serving = ServingSettings(redis_url=redis_url, seed=3, config_dir=policy, model_refresh_s=0, log_decisions=False,
                              experiments_file=policy / "experiments.yaml", mode="dev", now=SHOP.end)
    with TestClient(create_app(serving)) as client:
        decided = [client.post("/v1/decisions", json={"user_id": u, "surface": s}).json()
                   for u in [subject, *others] for s in ("home", "push")]
        assert all("decision_id" in d for d in decided), decided
        outcome = client.post("/v1/outcomes", json={"user_id": subject, "decision_id": decided[0]["decision_id"],
                                                    "revenue": 12.5, "idempotency_key": "order-1"})
        assert outcome.status_code in (200, 202), outcome.text
        now = pd.Timestamp(SHOP.end)
        events = [
            {"event_id": "live-1", "event_type": "page_view", "event_version": 1,
             "ts": (now - pd.Timedelta("1h")).isoformat(), "user_id": subject, "session_id": "live-s1", "item_id": 3,
             "category_id": 2, "price": 9.5, "device": "mobile", "region": "north"},
            {"event_id": "live-2", "event_type": "teleport", "event_version": 1, "ts": now.isoformat(),
             "user_id": str(subject), "session_id": "live-s1"},
        ]
        answered = client.post("/v1/events", json={"events": events})
        assert answered.status_code in (200, 202, 207), answered.text
        revoked = client.post("/v1/consent", json={"user_id": subject, "granted": False, "event_id": "rev-1"})
        assert revoked.status_code == 202, revoked.text
        dg.materialize(DRAINS, resources=resources)
        for surface in ("home", "push"):  # after the drain: only in the stream and the write-ahead files
            assert client.post("/v1/decisions", json={"user_id": subject, "surface": surface}).status_code == 200


def write_service_log(settings: HyperliftSettings, subject: int) -> Path:
    """The service's JSON log lines as a deployment keeps them (a file), one naming the user by pseudonym."""
    path = settings.home / "logs" / "service.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("serving.decision.service")
    logger.addHandler(handler)
    try:
        ukey = Subject.of(subject, salt()).user_key
        logger.warning("user %s: online store read failed: %s", ukey, "timeout")  # the service's own line
        logger.warning("safe mode is off")
    finally:
        logger.removeHandler(handler)
        handler.close()
    return path


# -- scanning ----------------------------------------------------------------------------------------------------


class Traces:
    """Where the subject still shows: a set of places (file paths relative to the home, Redis keys and streams)."""

    def __init__(self, subject: Subject, feature_rows: list[dict]):
        self.subject = subject
        self.feature_rows = feature_rows
        uid = b"(?:" + b"|".join(str(i).encode() for i in subject.ids) + b")"  # the raw id and every pseudonym
        self.patterns = [re.escape(subject.user_key.encode()), *(re.escape(k) for k in subject.entity_keys),
                         rb"\{" + uid + rb"\}", rb"\"user_id\"\s*:\s*\"?" + uid + rb"(?![0-9])"]
        self.found: set[str] = set()

    def value(self, where: str, value: object, key: str = "") -> None:
        """Any value of a record or a table cell (recursively)."""
        if isinstance(value, dict):
            for k, v in value.items():
                self.value(where, v, str(k))
        elif isinstance(value, list | tuple | np.ndarray):
            for v in value:
                self.value(where, v, key)
        elif isinstance(value, bytes):
            if any(re.search(p, value) for p in self.patterns):
                self.found.add(where)
        elif isinstance(value, str):
            self.value(where, value.encode(), key)
            if value[:1] in "{[":
                try:
                    self.value(where, json.loads(value), key)
                except ValueError:
                    pass
        elif key == "user_id" and isinstance(value, int | float) and value in self.subject.ids:
            self.found.add(where)

    def parquet(self, where: str, path: Path) -> None:
        for row in pq.read_table(path).to_pylist():
            self.value(where, row)

    def example(self, where: str, path: Path) -> None:
        """An MLflow input example holding one of the subject's feature rows."""
        example = json.loads(path.read_text())
        split = example.get("dataframe_split", example)
        for values in split["data"]:
            for row in self.feature_rows:
                if all(np.float32(v) == np.float32(row[c]) for c, v in zip(split["columns"], values)):
                    self.found.add(where)

    def files(self, home: Path) -> None:
        for path in sorted(p for p in home.rglob("*") if p.is_file()):
            where = str(path.relative_to(home))
            if where.startswith(("audit/", "erasure/receipts/")):
                continue  # the pseudonym on purpose: checked apart
            if path.suffix == ".parquet":
                self.parquet(where, path)
            elif path.name.endswith("input_example.json"):
                self.example(where, path)
            self.value(where, path.read_bytes())

    def redis(self, client: redis.Redis, where: str = "redis") -> None:
        for key in client.scan_iter(count=1000):
            self.value(f"{where}:key", key)
            kind = client.type(key).decode()
            if kind == "hash":
                self.value(f"{where}:{kind}", list(client.hgetall(key).items()))
            elif kind == "string":
                self.value(f"{where}:{kind}", client.get(key))
            elif kind == "zset":
                self.value(f"{where}:{kind}", client.zrange(key, 0, -1))
            elif kind == "stream":
                for _, fields in client.xrange(key):
                    self.value(f"{where}:{key.decode()}", {k.decode(): v.decode() for k, v in fields.items()})

    def redis_files(self, home: Path, tmp: Path) -> None:
        """The server's append-only file and snapshot, each loaded by a second server and scanned."""
        for name in ("appendonly.aof", "dump.rdb"):
            copy = tmp / f"restore-{name}"
            copy.mkdir(parents=True)
            shutil.copy(home / "redis" / name, copy / name)
            with EmbeddedRedis(copy, persist=name.endswith(".aof")) as server:
                for db in range(16):
                    client = redis.Redis.from_url(server.url.rsplit("/", 1)[0] + f"/{db}")
                    self.redis(client, where=f"redis/{name}")
                    client.close()


def scan(home: Path, client: redis.Redis, subject: Subject, feature_rows: list[dict], tmp: Path) -> set[str]:
    traces = Traces(subject, feature_rows)
    traces.files(home)
    traces.redis(client)
    traces.redis_files(home, tmp)
    return traces.found


def feature_state(settings: HyperliftSettings, client: redis.Redis, others: list[int]) -> tuple[dict, dict]:
    """(lake feature tables as frames, others' Redis rows and tiles as raw bytes)."""
    frames = {t: pd.read_parquet(settings.data_dir / t) for t in FEATURE_TABLES}
    rows = {}
    for user in others:
        rows[user] = (client.hgetall(entity_key(lake_id(user))), client.hgetall(f"hyperlift:tiles:{{{lake_id(user)}}}"))
    return frames, rows


def file_bytes(settings: HyperliftSettings) -> dict[str, bytes]:
    out = {}
    for table in FEATURE_TABLES:
        path = settings.data_dir / table
        for p in sorted(path.rglob("*.parquet") if path.is_dir() else [path]):
            out[str(p.relative_to(settings.data_dir))] = p.read_bytes()
    return out


# -- the test ----------------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Settings of a fresh home and its own persistent redis-server (append-only file and snapshot in the home)."""
    home = tmp_path / "hyperlift"
    monkeypatch.setenv("HYPERLIFT_HOME", str(home))
    monkeypatch.delenv("HYPERLIFT_AUDIT_DIR", raising=False)
    settings = HyperliftSettings(home=home, reports_dir=home / "reports")
    keys.trace_salt(create=True)  # the home's trace salt (infra/keys.py), as the service's first start makes it
    with EmbeddedRedis(home / "redis", persist=True) as server:
        # Uncompressed snapshots, so scanning their bytes sees every string, a stream entry only flagged deleted too.
        redis.Redis.from_url(server.url).config_set("rdbcompression", "no")
        yield settings, server.url


def test_an_erased_user_leaves_no_trace_and_everyone_else_is_unchanged(world, tmp_path, monkeypatch):
    settings, url = world
    resources = build_resources(settings, url, SHOP)
    assert dg.materialize(PIPELINE, resources=resources, tags=shop_days(SHOP)).success
    user = pick_subject(settings)  # a raw id: what the service and the erasure are called with
    subject = subject_of(user)
    assert subject.lake_ids == (lake_id(user),) and lake_id(user) != user
    validated = set(pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"].astype(int))
    assert user not in validated and lake_id(user) in validated  # the lake holds the pseudonym, never the raw id
    others = sorted(set(raw_users(settings, sorted(validated))) - {user})[:25]
    register_champion(settings, user)
    serve(settings, url, user, others[:2], tmp_path, resources)
    log_file = write_service_log(settings, user)
    monkeypatch.setenv("HYPERLIFT_ERASURE_SERVICE_LOG_DIRS", json.dumps([str(log_file.parent)]))
    client = redis.Redis.from_url(url)
    training_rows = pd.read_parquet(settings.data_dir / TRAINING_SET)
    feature_rows = training_rows[training_rows["user_id"] == lake_id(user)][FEATURES].to_dict("records")

    client.save()  # a snapshot as the server's save points would have written one by now
    time.sleep(1.1)  # appendfsync everysec: the append-only file has every write
    before = scan(settings.home, client, subject, feature_rows, tmp_path / "before")
    expected = {
        "data/raw/events", "data/raw/customers.parquet", "data/validated/events", "data/features/activity_tiles",
        "data/features/user_activity", "data/features/user_profile.parquet", "data/training/training_set.parquet",
        "data/decisions", "data/outcomes", "data/quarantine/stream", "data/consent", "serving/decision_wal",
        "mlflow/artifacts", "logs/service.jsonl", "redis/appendonly.aof", "redis/dump.rdb",
    }
    if (settings.home / "landing").is_dir():  # ingestion reads the shop's files from a landing folder
        expected |= {"landing/customers", "landing/events"}
    assert {p for p in expected if any(f.startswith(p) for f in before)} == expected, sorted(before)
    redis_places = {f for f in before if f.startswith("redis:")}
    assert {"redis:key", "redis:hyperlift:decisions", "redis:hyperlift:outcomes", "redis:hyperlift:quarantine",
            "redis:hyperlift:consent_events"} <= redis_places, sorted(redis_places)
    if user in set(pd.read_parquet(settings.data_dir / QUARANTINE)["user_id"].dropna().astype(int)):
        assert any(f.startswith("data/quarantine/events") for f in before)
    assert client.exists(entity_key(lake_id(user))) and client.exists(f"hyperlift:tiles:{{{lake_id(user)}}}")
    assert not client.exists(entity_key(user)) and not client.exists(f"hyperlift:tiles:{{{user}}}")
    frames_before, rows_before = feature_state(settings, client, others)
    decisions_before = pd.read_parquet(settings.data_dir / "decisions")

    receipt = erase(user, Target.from_env(settings, url), actor="test", reason="erasure test")

    after = scan(settings.home, client, subject, feature_rows, tmp_path / "after")
    assert after == set(), sorted(after)
    # The pseudonym stays in two places on purpose: the receipt and the audit trail (erasure, consent entries).
    receipt_path = Path(receipt.path)
    assert receipt_path.parent == settings.home / "erasure" / "receipts"
    assert receipt_path.name.startswith(f"{subject.user_key}-") and receipt_path.suffix == ".json"
    written = json.loads(receipt_path.read_text())
    raw_only = Traces(subject, [])
    raw_only.patterns = raw_only.patterns[1:]  # everything but the pseudonym
    for audit_file in (settings.home / "audit").glob("*.jsonl"):
        raw_only.value(str(audit_file), audit_file.read_bytes())
    raw_only.value("receipt", receipt_path.read_bytes())
    assert raw_only.found == set()
    stores = {s["store"]: s for s in written["stores"]}
    assert stores["lake"]["rows_removed"] > 0 and stores["lake"]["rows_anonymised"] > 0
    assert stores["redis"]["keys_deleted"] >= 5 and stores["redis"]["entries_removed"] >= 2
    assert stores["redis"]["entries_anonymised"] >= 4
    assert stores["decision_spill"]["entries_anonymised"] >= 2
    for segment in (settings.home / "serving" / "decision_wal").rglob("seg-*.wal"):  # rewritten lines stay valid
        assert all(isinstance(entry, Entry) for entry in parse(segment.read_bytes())), segment
    assert stores["mlflow"]["rows_removed"] >= 1 and stores["logs"]["rows_removed"] == 1
    assert set(stores["redis_files"]["files_rewritten"]) == {"redis/appendonly.aof", "redis/dump.rdb"}
    audit = AuditLog(settings.home / "audit").entries()
    assert {e["action"] for e in audit if subject.user_key in e["target"]} == {"consent.revoke", "erasure"}
    erasure_entry = next(e for e in audit if e["action"] == "erasure")
    assert erasure_entry["target"] == f"user_key:{subject.user_key}" and erasure_entry["actor"] == "test"
    assert erasure_entry["details"]["receipt"] == str(receipt_path)

    # The decision log keeps the decisions (accounting, off-policy evaluation), cut from the user.
    decisions_after = pd.read_parquet(settings.data_dir / "decisions")
    kept = decisions_after.set_index("stream_id").loc[decisions_before["stream_id"]].reset_index()
    mine = (decisions_before["user_key"] == subject.user_key).to_numpy()
    assert mine.sum() >= 2 and kept.loc[mine, "features"].isna().all()
    assert kept.loc[mine, "user_key"].nunique() == mine.sum()  # one random token per decision
    assert kept.loc[~mine].reset_index(drop=True).equals(decisions_before.loc[~mine].reset_index(drop=True))
    assert len(decisions_after) == len(decisions_before) + 2  # drained by the erasure (made after the first drain)

    # Everyone else: the erased lake rebuilds to the same bytes, and their rows are what they were.
    erased_bytes = file_bytes(settings)
    assert dg.materialize(REBUILD, resources=resources, tags=shop_days(SHOP)).success
    assert file_bytes(settings) == erased_bytes
    frames_after, rows_after = feature_state(settings, client, others)
    for table, frame in frames_before.items():
        kept = frame[frame["user_id"] != lake_id(user)].reset_index(drop=True)
        pd.testing.assert_frame_equal(frames_after[table], kept, check_exact=True)
    assert rows_after == rows_before
    assert scan(settings.home, client, subject, feature_rows, tmp_path / "rebuilt") == set()
    client.close()


def test_drained_lake_folders_are_the_pipelines():
    """The erasure drains into the folders the Dagster drain assets write."""
    assert {stream: folder for stream, (folder, _) in DRAINED.items()} == {
        "hyperlift:decisions": decisions.DECISION_TRACE, "hyperlift:outcomes": decisions.OUTCOME_EVENTS,
        "hyperlift:quarantine": decisions.STREAM_QUARANTINE, "hyperlift:consent_events": decisions.CONSENT_EVENTS,
    }


def test_export_holds_what_the_stores_hold_about_the_user(world, tmp_path):
    settings, url = world
    resources = build_resources(settings, url, SHOP)
    assert dg.materialize(PIPELINE, resources=resources, tags=shop_days(SHOP)).success
    user = raw_users(settings, pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"].iloc[:1])[0]
    folder = export(user, Target.from_env(settings, url), tmp_path / "out")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["user_key"] == Subject.of(user, salt()).user_key == folder.name
    exported = pd.read_json(folder / "lake" / "raw" / "customers.jsonl", lines=True)
    assert exported["user_id"].tolist() == [user]
    events = pd.concat([pd.read_json(p, lines=True) for p in sorted((folder / "lake" / "validated").rglob("*.jsonl"))])
    assert len(events) == int((pd.read_parquet(settings.data_dir / VALIDATED_EVENTS)["user_id"] == lake_id(user)).sum())
    assert set(events["user_id"]) == {lake_id(user)}
    stored = json.loads((folder / "redis_keys.json").read_text())
    assert f"hyperlift:tiles:{{{lake_id(user)}}}" in stored
