"""One erasure (or export) across every store, in the order that leaves nothing behind.

1. Drain the streams into the lake (the drain's own consumer group), so the lake holds everything Redis carried.
2. Read what later steps need from the lake before it changes: the user's feature rows (to find them in MLflow's
   input examples) and outcome ids (their idempotency claims in Redis).
3. The lake, Redis keys and streams, the decision log's write-ahead files, MLflow input examples, log files.
4. Redis rewrites its append-only file and its snapshot from memory; the receipt is written; the audit trail gets
   one entry (target `user_key:<pseudonym>`, as consent calls).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import redis

from infra import keys
from infra.audit import AuditLog, audit_dir, default_log
from infra.erasure import landing, lake, logs, mlflow_artifacts, redis_store, spill
from infra.erasure.anonymise import Anonymiser
from infra.erasure.receipt import Receipt, StoreReport, write_receipt
from infra.erasure.settings import ErasureSettings
from infra.erasure.subject import Subject
from infra.redis_cluster import redis_client
from infra.settings import HyperliftSettings
from serving.store.decision_log import (
    CONSENT_FORMAT, DECISION_FORMAT, DECISION_STREAM, DRAIN_GROUP, OUTCOME_FORMAT, OUTCOME_STREAM, QUARANTINE_FORMAT,
    StreamDrain,
)

DRAINED = {
    # stream → (lake folder, record format): dagster_project/assets/decisions.py, the same folders (a test checks)
    DECISION_STREAM: ("decisions", DECISION_FORMAT),
    OUTCOME_STREAM: ("outcomes", OUTCOME_FORMAT),
    redis_store.QUARANTINE_STREAM: ("quarantine/stream", QUARANTINE_FORMAT),
    redis_store.CONSENT_STREAM: ("consent", CONSENT_FORMAT),
}
DRAIN_CONSUMER = "erasure"


@dataclass(frozen=True)
class Target:
    """Where the stores are: the home's settings, the Redis server, the service's hash salt and write-ahead root;
    `former_salts`, the retired trace salts whose pseudonyms are searched too (None: the key file's)."""

    settings: HyperliftSettings
    redis_url: str
    salt: str
    spill_root: Path
    service_log_dirs: tuple[Path, ...] = ()
    former_salts: tuple[str, ...] | None = None

    def subject(self, user_id: int) -> Subject:
        """The user as the stores know them: hashes under the current trace salt and every retired one, pseudonyms
        under every version of the pseudonym key."""
        former = self.former_salts
        path = keys.key_file(self.settings)
        if former is None:
            former = keys.former_salts(self.salt, path=path)
        return Subject.of(user_id, self.salt, former, keys.pseudonymizers(path=path))

    @classmethod
    def from_env(cls, settings: HyperliftSettings | None = None, redis_url: str | None = None) -> "Target":
        """The deployment's stores: HYPERLIFT_HOME, REDIS_URL, the decision service's settings (hash salt, WAL)."""
        from serving.core.config import ServingSettings  # the service's settings: the one place the salt is read

        settings = settings or HyperliftSettings()
        url = redis_url or settings.redis_url
        if not url:
            raise ValueError("no Redis to erase from: set REDIS_URL, or run through `python -m infra.launch --`")
        serving = ServingSettings(redis_url=url)
        # ServingSettings.wal_root() with *this* home (it reads the home from the environment)
        spill_root = serving.decision_wal_dir or settings.home / "serving" / "decision_wal"
        # The trace salt of *this* home's key file (HYPERLIFT_SERVING_HASH_SALT first), as its service reads it.
        salt = keys.trace_salt(path=keys.key_file(settings)) or serving.hash_salt
        return cls(settings, url, salt, spill_root, tuple(ErasureSettings().service_log_dirs))


def drain_streams(client: redis.Redis, data_dir: Path) -> int:
    """Move every stream's new entries into the lake (write, then acknowledge); returns the rows written."""
    written = 0
    for stream, (folder, record_format) in DRAINED.items():
        if client.exists(stream):
            drain = StreamDrain(client, stream, DRAIN_GROUP, DRAIN_CONSUMER, data_dir / folder, record_format)
            written += drain.drain().written
    return written


def lake_outcome_ids(data_dir: Path, subject: Subject) -> set[str]:
    """Outcome ids of the user's outcomes in the lake."""
    ids: set[str] = set()
    for path in lake.parquet_files(data_dir / "outcomes"):
        table = pq.read_table(path, columns=["user_key", "outcome_id"])
        ids.update(o for k, o in zip(table["user_key"].to_pylist(), table["outcome_id"].to_pylist())
                   if k in subject.user_keys and o)
    return ids


def _delete_export(folder: Path, home: Path, report: StoreReport) -> None:
    """An earlier export of the user under the home goes too."""
    if folder.is_dir():
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file():
                report.files_deleted.append(str(path.relative_to(home)))
                path.unlink()
            else:
                path.rmdir()
        folder.rmdir()


def _finish(receipt: Receipt, target: Target, actor: str, reason: str, audit: AuditLog | None) -> None:
    receipt.finished = time.time()
    path = write_receipt(receipt, target.settings)
    (audit or default_log()).record(actor, "erasure" if receipt.complete else "erasure.incomplete",
                                    target=f"user_key:{receipt.user_key}", reason=reason, receipt=str(path),
                                    touched=receipt.summary())


def erase(user_id: int, target: Target, actor: str, reason: str = "data subject request",
          audit: AuditLog | None = None) -> Receipt:
    """Remove or irreversibly anonymise `user_id` in every store; returns the receipt (also written under the home)."""
    subject = target.subject(user_id)
    home, data_dir = target.settings.home, target.settings.data_dir
    receipt = Receipt(user_key=subject.user_key, actor=actor, reason=reason, started=time.time())
    anonymiser = Anonymiser()
    client = redis_client(target.redis_url)  # redis.Redis, or RedisCluster for a redis+cluster:// URL
    try:
        drained = drain_streams(client, data_dir)
        receipt.report("lake").notes.append(f"drained {drained} stream rows into the lake first")
        feature_rows = mlflow_artifacts.subject_feature_rows(data_dir, subject) if data_dir.is_dir() else []
        outcomes = lake_outcome_ids(data_dir, subject)
        lake.erase_lake(data_dir, home, subject, anonymiser, receipt.report("lake"))
        landing.erase_landing(landing.landing_dir(target.settings), home, subject, receipt.report("landing"))
        redis_store.erase_redis(client, subject, anonymiser, receipt.report("redis"), outcomes)
        spill.erase_spill(target.spill_root, home, subject, anonymiser, receipt.report("decision_spill"))
        mlflow_artifacts.erase_examples(target.settings.mlflow_artifacts_dir, home, feature_rows,
                                        receipt.report("mlflow"))
        logs.erase_logs(home, target.service_log_dirs, subject, receipt.report("logs"))
        _delete_export(exports_dir(target.settings) / subject.user_key, home, receipt.report("exports"))
        redis_store.persist(client, receipt.report("redis_files"), home)
    except Exception as exc:
        # Say what was done and that it is incomplete, then fail: a repeat erases what is left.
        receipt.complete = False
        receipt.error = f"{type(exc).__name__}: {exc}"
        _finish(receipt, target, actor, reason, audit)
        raise
    finally:
        client.close()
    _finish(receipt, target, actor, reason, audit)
    return receipt


def exports_dir(settings: HyperliftSettings) -> Path:
    """Where exports go by default (an erasure deletes the user's)."""
    return settings.home / "erasure" / "exports"


def export(user_id: int, target: Target, out_dir: Path | None = None) -> Path:
    """Everything held about `user_id`, as files under `out_dir/<user_key>/` (lake rows as JSON lines, Redis keys and
    stream entries, write-ahead records, log lines, audit entries, input-example rows); returns that folder."""
    subject = target.subject(user_id)
    folder = Path(out_dir or exports_dir(target.settings)) / subject.user_key
    folder.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(folder)) for p in lake.export_lake(target.settings.data_dir, subject, folder)]
    client = redis_client(target.redis_url)
    try:
        sections: dict[str, Any] = {
            "redis_keys.json": redis_store.export_keys(client, subject),
            "redis_streams.json": redis_store.export_streams(client, subject),
        }
    finally:
        client.close()
    sections["decision_spill.json"] = spill.export_spill(target.spill_root, subject)
    sections["logs.json"] = logs.export_logs(target.settings.home, target.service_log_dirs, subject)
    sections["audit.json"] = [e for e in AuditLog(audit_dir(target.settings)).entries()
                              if e.get("target") in {f"user_key:{k}" for k in subject.user_keys}]
    rows = mlflow_artifacts.subject_feature_rows(target.settings.data_dir, subject)
    artifacts = target.settings.mlflow_artifacts_dir
    sections["mlflow_input_examples.json"] = mlflow_artifacts.export_examples(artifacts, rows)
    for name, content in sections.items():
        (folder / name).write_text(json.dumps(content, indent=2, default=str) + "\n")
        files.append(name)
    (folder / "manifest.json").write_text(json.dumps({"user_id": user_id, "user_key": subject.user_key,
                                                      "exported_at": time.time(), "files": sorted(files)}, indent=2))
    return folder
