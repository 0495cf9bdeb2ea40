"""The audit trail: entries from several processes merged by time, filters, refusal of raw ids, torn lines."""

import json
import os
import subprocess
import sys

import pytest

from infra.audit import AuditError, AuditLog, main


def test_entries_from_every_process_are_merged_oldest_first_and_filtered(tmp_path, monkeypatch):
    log = AuditLog(tmp_path)
    log.record("ops-key", "safe_mode.on", target="all surfaces", reason="incident 12")
    other = subprocess.run(
        [sys.executable, "-c", "from infra.audit import default_log; "
         "default_log().record('cli:ana', 'model.promote', target='m@3', reason='hotfix', previous='2')"],
        env={**os.environ, "HYPERLIFT_AUDIT_DIR": str(tmp_path)}, check=True,
    )
    assert other.returncode == 0
    log.record("crm", "consent.revoke", target="user_key:abc", purpose="consent_marketing")
    assert len(list(tmp_path.glob("*.jsonl"))) == 2  # one file per process
    entries = log.entries()
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("ops-key", "safe_mode.on"), ("cli:ana", "model.promote"), ("crm", "consent.revoke")]
    assert entries[1]["details"] == {"previous": "2"} and entries[1]["target"] == "m@3"
    assert [e["action"] for e in log.entries(action="consent")] == ["consent.revoke"]
    assert [e["action"] for e in log.entries(actor="cli:ana")] == ["model.promote"]
    assert log.entries(since=entries[2]["ts"]) == [entries[2]]


def test_raw_identifiers_are_refused_and_a_torn_line_is_not_an_entry(tmp_path):
    log = AuditLog(tmp_path)
    with pytest.raises(AuditError, match=r"never hold raw identifiers: drop \['user_id'\]"):
        log.record("crm", "consent.revoke", user_id=42)
    log.record("crm", "consent.grant", target="user_key:abc")
    with log.path.open("ab") as f:
        f.write(b'{"ts": 1, "actor": "x", "acti')  # a crash in the middle of a write
    assert [e["action"] for e in log.entries()] == ["consent.grant"]


def test_the_cli_prints_the_entries(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPERLIFT_AUDIT_DIR", str(tmp_path))
    AuditLog(tmp_path).record("ops-key", "safe_mode.off", target="all surfaces", reason="resolved")
    assert main(["--json", "--action", "safe_mode"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["reason"] == "resolved"
    with pytest.raises(SystemExit):
        main(["--since", "yesterday"])
