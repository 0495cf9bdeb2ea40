"""`python -m training.guards`: a person turns a surface cautious or back, audited."""

import json

import redis

from infra.audit import AuditLog
from training.guards.__main__ import main


def test_a_person_turns_a_surface_back_and_it_is_audited(redis_databases, monkeypatch, tmp_path, capsys):
    url = redis_databases.fresh()
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("HYPERLIFT_AUDIT_DIR", str(tmp_path / "audit"))
    assert main(["cautious", "home", "on", "--reason", "incident 7"]) == 0
    assert json.loads(capsys.readouterr().out)["home"]["enabled"] is True
    assert main(["cautious", "home", "off", "--reason", "upstream fixed"]) == 0
    assert json.loads(redis.Redis.from_url(url).hget("hyperlift:cautious", "home"))["enabled"] is False
    entries = AuditLog(tmp_path / "audit").entries(action="guard")
    assert [(e["action"], e["target"], e["reason"]) for e in entries] == [
        ("guard.cautious_on", "surface:home", "incident 7"), ("guard.cautious_off", "surface:home", "upstream fixed")]
    assert all(e["actor"].startswith("cli:") for e in entries)


def test_without_redis_url_it_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["status"]) == 2 and "REDIS_URL" in capsys.readouterr().err
