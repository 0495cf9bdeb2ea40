"""infra.backup on the local profile: a home seeded through the project's own paths (materialized features, a
registered champion, a Dagster run, decision records in the write-ahead files and the stream, an audit entry) is
backed up, wiped, restored, and reads back the same: files identical, SQLite stores with the same rows, the
champion loads and predicts the same, features read back equal, the decision log's entries present."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import redis

from feature_repo.definitions import UPLIFT_FEATURE_SERVICE
from feature_repo.store import feature_store
from infra import backup
from infra.audit import AuditLog, audit_dir
from infra.launch import ensure_dagster_home
from infra.profile import dagster_yaml
from infra.settings import HyperliftSettings
from serving.store.trace import TraceWriter
from serving.store.wal import destination_dir
from simulator import ShopConfig
from tests.feature_repo.factories import materialize_shop
from tests.lake_ids import lake_id
from tests.seeded_stores import SeededStores
from tests.serving.conftest import FEATURES, register_model

SHOP = ShopConfig(n_users=60, n_items=20, n_days=3, seed=11)
STREAM = "hyperlift:decisions"


@dg.asset
def backup_probe() -> int:
    """A one-row asset: its run and materialization go into the home's Dagster storage."""
    return 1


def _online(store, users: list[int]) -> dict:
    service = store.get_feature_service(UPLIFT_FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=[{"user_id": u} for u in users]).to_dict()


def _champion_predictions(settings: HyperliftSettings) -> np.ndarray:
    mlflow.set_tracking_uri(settings.mlflow_uri)
    model = mlflow.pyfunc.load_model("models:/hyperlift_uplift@champion")
    X = pd.DataFrame(np.linspace(0, 1, 4 * len(FEATURES)).reshape(4, len(FEATURES)), columns=FEATURES)
    return np.asarray(model.predict(X), dtype=float)


def _snapshot(home: Path, redis_dir: Path) -> dict[str, str]:
    """{relative path: SHA-256, or the row dump of a SQLite file} of every file the home holds (Redis's own folder
    and lock/side files left out: they are not what the backup promises)."""
    found = {}
    for path in sorted(home.rglob("*")):
        if not path.is_file() or redis_dir in path.parents or path.name.endswith((".lock", "-wal", "-shm", "-journal")):
            continue
        if path.read_bytes()[:16] == backup.SQLITE_MAGIC:
            connection = sqlite3.connect(path)
            found[path.relative_to(home).as_posix()] = "\n".join(connection.iterdump())
            connection.close()
        else:
            found[path.relative_to(home).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory, redis_databases):
    """A local-profile home with something in every store, seeded once per module: its files copied aside, its
    Redis keys dumped, and what reads back from it. The home keeps one path (and its Redis database one URL) for
    the module, because the stores record absolute paths and the write-ahead folder is named after the URL."""
    root = tmp_path_factory.mktemp("backup-seed")
    redis_url = redis_databases.fresh()
    home = root / "home"
    settings = HyperliftSettings(home=home, reports_dir=root / "reports", redis_url=redis_url)
    store, _, _, shop = materialize_shop(settings, redis_url, SHOP)
    register_model(settings, "hyperlift_uplift", UPLIFT_FEATURE_SERVICE)
    ensure_dagster_home(settings.resolved_dagster_home, dagster_yaml(settings))
    with dg.DagsterInstance.from_config(str(settings.resolved_dagster_home)) as instance:
        run_id = dg.materialize([backup_probe], instance=instance).run_id
    wal_root = home / "serving" / "decision_wal"
    trace = TraceWriter(redis.Redis.from_url(redis_url), STREAM, None, destination_dir(wal_root, redis_url, STREAM))
    for n in range(5):
        trace.append({"decision_id": f"d{n}", "surface": "home", "action": "no_action"})
    assert trace.flush(10.0)
    trace.close(2.0)  # sent to Redis, kept on disk: no drain has put them in the lake
    AuditLog(audit_dir(settings)).record("cli:test", "model.promote", target="hyperlift_uplift/1", reason="seed")
    raw_users = [int(u) for u in shop.users["user_id"].to_numpy()[:10]]
    users = [lake_id(settings, u) for u in raw_users]  # the online store is keyed by the users' pseudonyms
    client = redis.Redis.from_url(redis_url)
    online = _online(store, users)
    assert all(None not in values for values in online.values())  # every user's row is there to compare
    expected = {
        "online": online,
        "lake_ids": dict(zip(raw_users, users)),
        "predictions": _champion_predictions(settings),
        "stream": client.xrange(STREAM),
        "keys": {key: client.dump(key) for key in client.scan_iter()},
        "files": _snapshot(home, settings.redis_dir),
        "run_id": run_id,
    }
    client.close()
    return settings, users, expected, SeededStores.take(home, redis_url, root / "seeded-home")


@pytest.fixture
def seeded(seeded_template):
    """The module's seeded home, put back as it was seeded (files copied, Redis keys restored) for this test."""
    settings, users, expected, stores = seeded_template
    stores.restore()
    assert _snapshot(settings.home, settings.redis_dir) == expected["files"]
    return settings, users, expected


def _wipe(settings: HyperliftSettings) -> None:
    shutil.rmtree(settings.home)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    client.close()


def test_a_wiped_home_comes_back_identical_from_its_backup(seeded, tmp_path):
    settings, users, expected = seeded
    manifest = backup.create(tmp_path / "backup", settings)
    assert {"redis", "lake", "mlflow-store", "mlflow-artifacts", "dagster", "feast-registry", "decision-log-spill",
            "audit", "home"} <= set(manifest["stores"])
    assert manifest["stores"]["redis"]["keys"] == len(expected["keys"])
    assert manifest["stores"]["decision-log-spill"]["files"] >= 2  # a segment and the writer's counters

    _wipe(settings)
    assert not settings.home.exists()
    backup.restore(tmp_path / "backup", settings)

    assert _snapshot(settings.home, settings.redis_dir) == expected["files"]
    client = redis.Redis.from_url(settings.redis_url)
    assert {key: client.dump(key) for key in client.scan_iter()} == expected["keys"]
    assert client.xrange(STREAM) == expected["stream"]
    assert [json.loads(fields[b"record"])["decision_id"] for _, fields in client.xrange(STREAM)] == [
        f"d{n}" for n in range(5)]
    client.close()
    assert _online(feature_store(settings.redis_url, settings), users) == expected["online"]
    # The pseudonym key came back with the home: raw ids still map to the lake ids the restored stores hold.
    assert {u: lake_id(settings, u) for u in expected["lake_ids"]} == expected["lake_ids"]
    np.testing.assert_array_equal(_champion_predictions(settings), expected["predictions"])
    with dg.DagsterInstance.from_config(str(settings.resolved_dagster_home)) as instance:
        run = instance.get_run_by_id(expected["run_id"])
        assert run is not None and run.is_success
        assert instance.get_latest_materialization_event(dg.AssetKey("backup_probe")) is not None
    # The restored write-ahead folder is adopted by the next writer, which still holds the five records for the lake.
    trace = TraceWriter(redis.Redis.from_url(settings.redis_url), STREAM, None,
                        destination_dir(settings.home / "serving" / "decision_wal", settings.redis_url, STREAM))
    assert trace.pending_records == 5
    trace.close(1.0)
    assert [e["action"] for e in AuditLog(audit_dir(settings)).entries()] == ["model.promote"]


def test_restore_refuses_stores_that_hold_data_unless_told_to_replace(seeded, tmp_path):
    settings, users, expected = seeded
    backup.create(tmp_path / "backup", settings)
    with pytest.raises(backup.BackupError, match=r"already holds .*pass --replace"):
        backup.restore(tmp_path / "backup", settings)
    client = redis.Redis.from_url(settings.redis_url)
    client.set("written-after-the-backup", b"1")
    (settings.data_dir / "written-after-the-backup.parquet").write_bytes(b"x")
    backup.restore(tmp_path / "backup", settings, replace=True)
    assert client.exists("written-after-the-backup") == 0
    assert not (settings.data_dir / "written-after-the-backup.parquet").exists()
    assert client.xrange(STREAM) == expected["stream"]
    client.close()
    np.testing.assert_array_equal(_champion_predictions(settings), expected["predictions"])


def test_a_changed_backup_file_is_refused_before_anything_is_written(seeded, tmp_path):
    settings, _, _ = seeded
    backup.create(tmp_path / "backup", settings)
    registry = tmp_path / "backup" / "files" / "feast-registry" / "registry.db"
    registry.write_bytes(registry.read_bytes() + b"!")
    assert backup.main(["verify", str(tmp_path / "backup")]) == 2  # the command line says the same
    _wipe(settings)
    with pytest.raises(backup.BackupError, match=r"1 file\(s\) missing or changed .*files/feast-registry/registry.db"):
        backup.restore(tmp_path / "backup", settings)
    assert not settings.home.exists()


def test_create_never_overwrites_a_folder(tmp_path, settings):
    (tmp_path / "taken").mkdir()
    with pytest.raises(backup.BackupError, match="exists; name a new folder"):
        backup.create(tmp_path / "taken", settings)


def test_a_redis_that_holds_keys_is_refused_before_any_file_is_restored(seeded, tmp_path):
    settings, _, expected = seeded
    backup.create(tmp_path / "backup", settings)
    shutil.rmtree(settings.home)  # the files go, the keys stay
    with pytest.raises(backup.BackupError, match=rf"Redis .* holds {len(expected['keys'])} key\(s\); .*--replace"):
        backup.restore(tmp_path / "backup", settings)
    assert not settings.data_dir.exists() and not settings.feast_registry_path.exists()
