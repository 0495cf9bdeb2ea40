"""infra/keys.py: keys are made once on first use (0600, outside the lake), rotated with an audit entry, and a rotation
keeps the retired versions readable: the service honours decision ids made under them (unless compromised), erasure
finds pseudonyms made under them, and nothing prints or audits a secret."""

import hashlib
import hmac
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from infra import keys
from infra.audit import AuditLog
from infra.erasure.procedure import Target
from infra.erasure.subject import Subject
from infra.keys import PSEUDONYM, TRACE_SALT, KeysError, Pseudonymizer
from serving.core.config import ServingSettings
from serving.decision.identity import issued_decision_id, new_decision_id, user_key

DEFAULT_SALT = ServingSettings.model_fields["hash_salt"].default


@pytest.fixture
def key_home(settings, monkeypatch):
    """The test's home as HYPERLIFT_HOME, no key configured from outside, its audit trail in the home."""
    monkeypatch.setenv("HYPERLIFT_HOME", str(settings.home))
    for name in (keys.KEYS_FILE_ENV, keys.TRACE_SALT_ENV, "HYPERLIFT_AUDIT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return settings


def audit_lines(settings) -> list[dict]:
    return AuditLog(settings.home / "audit").entries()


def test_a_key_is_made_once_on_first_use_private_and_outside_the_lake(key_home):
    path = keys.key_file()
    assert path == key_home.home / "keys" / "keys.json" and not path.exists()
    assert keys.versions(TRACE_SALT) == () and keys.trace_salt() is None
    with ThreadPoolExecutor(8) as pool:  # processes starting together agree on one key (the file lock)
        made = set(pool.map(lambda _: keys.trace_salt(create=True), range(16)))
    assert len(made) == 1 and len(made.pop()) == 2 * keys.SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.is_relative_to(key_home.data_dir)
    (only,) = keys.versions(TRACE_SALT)
    assert only.version == 1 and only.retired is None and not only.compromised
    assert keys.versions(PSEUDONYM) == ()  # each key is made when it is first asked for
    assert keys.pseudonymizers(create=True)[0].version == 1 and len(keys.versions(PSEUDONYM)) == 1


def test_dev_mode_makes_the_trace_salt_and_production_only_reads_it(key_home):
    production = ServingSettings(redis_url="redis://localhost:1/0")
    assert production.hash_salt == DEFAULT_SALT  # nothing stored: the public default, which production refuses
    assert not keys.key_file().exists()
    dev = ServingSettings(redis_url="redis://localhost:1/0", mode="dev")
    assert dev.hash_salt == keys.trace_salt() != DEFAULT_SALT
    assert ServingSettings(redis_url="redis://localhost:1/0").hash_salt == dev.hash_salt  # the same key, read


def test_the_environment_variable_overrides_the_current_trace_salt(key_home, monkeypatch):
    stored = keys.trace_salt(create=True)
    monkeypatch.setenv(keys.TRACE_SALT_ENV, "from-the-environment-0123456789")
    assert ServingSettings(redis_url="redis://localhost:1/0").hash_salt == "from-the-environment-0123456789"
    assert keys.trace_salts() == ("from-the-environment-0123456789", stored)
    with pytest.raises(KeysError, match=r"the trace-salt key is set by HYPERLIFT_SERVING_HASH_SALT: run `python -m "
                                        r"infra.keys adopt trace-salt` to keep it in the key file, unset"):
        keys.rotate(TRACE_SALT, "cli:test", "test")
    adopted = keys.adopt("cli:test")
    assert adopted.version == 2 and adopted.secret == "from-the-environment-0123456789"
    assert keys.adopt("cli:test") == adopted  # already current: no new version
    monkeypatch.delenv(keys.TRACE_SALT_ENV)
    assert keys.trace_salts() == ("from-the-environment-0123456789", stored)
    assert [e["action"] for e in audit_lines(key_home)] == ["key.adopt"]


def test_the_environment_variable_is_the_current_pseudonym_key_and_can_be_adopted(key_home, monkeypatch):
    (stored,) = keys.pseudonymizers(create=True)
    secret = "cd" * 32
    monkeypatch.setenv(keys.PSEUDONYM_ENV, secret)
    current, retired = keys.pseudonymizers(create=True)  # nothing is made while the variable is set
    assert (current.version, retired.version) == (2, 1) and current(42) == Pseudonymizer(secret)(42) != stored(42)
    assert len(keys.versions(PSEUDONYM)) == 1
    with pytest.raises(KeysError, match=r"the pseudonym key is set by HYPERLIFT_PSEUDONYM_KEY: run `python -m "
                                        r"infra.keys adopt pseudonym`"):
        keys.rotate(PSEUDONYM, "cli:test", "test")
    assert keys.main(["adopt", "pseudonym"]) == 0
    assert [v.version for v in keys.versions(PSEUDONYM)] == [2, 1] and keys.pseudonymizers()[0].version == 2
    monkeypatch.delenv(keys.PSEUDONYM_ENV)
    assert keys.pseudonymizers()[0](42) == Pseudonymizer(secret)(42)  # adopted: the file's current version now
    monkeypatch.setenv(keys.PSEUDONYM_ENV, "not-hex-" * 8)
    with pytest.raises(KeysError, match="HYPERLIFT_PSEUDONYM_KEY is not hex: make one with"):
        keys.pseudonymizers()
    monkeypatch.setenv(keys.PSEUDONYM_ENV, "ab" * 8)
    with pytest.raises(KeysError, match="at least 32 hex characters"):
        keys.pseudonymizers()
    for call in (lambda: keys.rotate("salt", "cli:test", "test"), lambda: keys.adopt("cli:test", name="salt")):
        with pytest.raises(KeysError, match=r"unknown key 'salt': the keys are \['trace-salt', 'pseudonym'\]"):
            call()


def test_rotation_keeps_the_old_salt_readable_and_is_audited_without_the_secret(key_home):
    old = keys.trace_salt(create=True)
    issued_before = new_decision_id(old)
    new = keys.rotate(TRACE_SALT, "cli:test", "yearly rotation")
    assert new.version == 2 and keys.trace_salts() == (new.secret, old)
    retired = keys.versions(TRACE_SALT)[1]
    assert retired.version == 1 and retired.retired is not None and not retired.compromised
    # the service starts on the new salt and still honours decisions made under the old one (outcomes come later)
    service = ServingSettings(redis_url="redis://localhost:1/0", mode="dev")
    assert service.hash_salt == new.secret
    assert issued_decision_id(issued_before, service.hash_salt)
    assert issued_decision_id(new_decision_id(service.hash_salt), service.hash_salt)
    assert not issued_decision_id(new_decision_id("some-other-salt-0123456789"), service.hash_salt)
    (entry,) = audit_lines(key_home)
    assert (entry["actor"], entry["action"], entry["target"], entry["reason"]) == (
        "cli:test", "key.rotate", "key:trace-salt", "yearly rotation")
    assert entry["details"] == {"version": 2, "previous": 1, "compromised": False}
    text = "".join(p.read_text() for p in (key_home.home / "audit").glob("*.jsonl"))
    assert old not in text and new.secret not in text


def test_a_compromised_rotation_stops_honouring_the_leaked_salts_decision_ids(key_home):
    old = keys.trace_salt(create=True)
    issued_before = new_decision_id(old)
    keys.rotate(TRACE_SALT, "cli:test", "leaked", compromised=True)
    service = ServingSettings(redis_url="redis://localhost:1/0", mode="dev")
    assert not issued_decision_id(issued_before, service.hash_salt)
    assert keys.versions(TRACE_SALT)[1].compromised
    assert keys.former_salts(service.hash_salt) == (old,)  # erasure still looks under it


def test_erasure_finds_the_pseudonyms_made_under_every_version(key_home):
    old = keys.trace_salt(create=True)
    new = keys.rotate(TRACE_SALT, "cli:test", "test").secret
    target = Target(key_home, "redis://localhost:1/0", new, key_home.home / "wal")
    subject = target.subject(42)
    assert subject == Subject(42, user_key(42, new), (user_key(42, old),))
    assert subject.owns_record({"user_key": user_key(42, old)}) and subject.owns_record({"user_key": user_key(42, new)})
    assert not subject.owns_record({"user_key": user_key(43, old)})
    assert Target(key_home, "redis://localhost:1/0", new, key_home.home / "wal", former_salts=()).subject(42) == \
        Subject(42, user_key(42, new))


def test_rotating_the_pseudonym_key_keeps_the_old_version_for_reads(key_home):
    (first,) = keys.pseudonymizers(create=True)
    before = first(42)
    keys.rotate(PSEUDONYM, "cli:test", "test")
    current, retired = keys.pseudonymizers()
    assert (current.version, retired.version) == (2, 1)
    assert retired(42) == before != current(42)


def test_the_pseudonym_is_a_keyed_nonnegative_int64_within_the_id_range():
    secret = "ab" * 32
    pseudonym = Pseudonymizer(secret)
    digest = hmac.new(bytes.fromhex(secret), (42).to_bytes(8, "big"), hashlib.sha256).digest()
    assert pseudonym(42) == int.from_bytes(digest[:8], "big") & (2**53 - 1)
    ids = np.arange(100_000, dtype=np.int64)
    many = pseudonym.many(ids)
    assert many.dtype == np.int64 and (many >= 0).all() and len(set(many.tolist())) == len(ids)
    assert many[42] == pseudonym(42) == pseudonym(np.int64(42))
    assert Pseudonymizer("cd" * 32)(42) != pseudonym(42)
    assert 0 <= pseudonym(2**53 - 1) <= 2**53 - 1  # the largest id the contracts accept, and its pseudonym
    assert (many <= 2**53 - 1).all() and (many.astype(np.float64).astype(np.int64) == many).all()  # float64-exact


def test_a_key_file_in_the_lake_or_open_to_others_is_refused(key_home, monkeypatch):
    monkeypatch.setenv(keys.KEYS_FILE_ENV, str(key_home.data_dir / "keys.json"))
    with pytest.raises(KeysError, match=r"is inside the parquet lake .*: keys must live outside the data they key; "
                                        r"set HYPERLIFT_KEYS_FILE to a path outside it"):
        keys.key_file()
    monkeypatch.setenv(keys.KEYS_FILE_ENV, str(key_home.home / "mlflow" / "artifacts" / "keys.json"))
    with pytest.raises(KeysError, match=r"inside MLflow's artifacts"):
        keys.key_file()
    secret_file = key_home.home / "secrets" / "keys.json"
    monkeypatch.setenv(keys.KEYS_FILE_ENV, str(secret_file))
    assert keys.key_file() == secret_file
    keys.trace_salt(create=True)
    os.chmod(secret_file, 0o644)
    with pytest.raises(KeysError, match=r"is open to other users \(mode -rw-r--r--\): run `chmod 600 "):
        keys.trace_salt()
    os.chmod(secret_file, 0o440)  # a Kubernetes secret mounted read-only for the group is fine
    assert keys.trace_salt() is not None
    os.chmod(secret_file, 0o600)
    secret_file.write_text("{not json")
    with pytest.raises(KeysError, match=r"is not a key file of format 1 .*restore it from the secret store's copy"):
        keys.trace_salt()


def test_a_key_that_cannot_be_made_says_where_and_what_to_set(key_home, monkeypatch):
    blocked = key_home.home / "not-a-folder"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the key folder would go")
    monkeypatch.setenv(keys.KEYS_FILE_ENV, str(blocked / "keys.json"))
    with pytest.raises(KeysError, match=r"cannot make the trace-salt key in .*not-a-folder/keys.json \(.*\): make its "
                                        r"folder writable, or point HYPERLIFT_KEYS_FILE at a writable path"):
        ServingSettings(redis_url="redis://localhost:1/0", mode="dev")


def test_the_cli_rotates_and_shows_without_printing_a_secret(key_home, capsys, monkeypatch):
    salt = keys.trace_salt(create=True)
    assert keys.running_experiments() == ["policy_holdout"]  # serving/conf/experiments.yaml
    assert keys.main(["rotate", "trace-salt", "--reason", "drill"]) == 2
    assert ("experiments ['policy_holdout'] draw their arms from user_key, which the trace salt keys: a rotation "
            "re-draws every user's arm mid-experiment") in capsys.readouterr().err
    assert keys.trace_salt() == salt  # refused: nothing rotated
    assert keys.main(["rotate", "pseudonym"]) == 0  # the pseudonym key does not key experiments
    capsys.readouterr()
    assert keys.main(["rotate", "trace-salt", "--reason", "drill", "--reshuffle-experiments"]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert (rotated["key"], rotated["version"]) == ("trace-salt", 2) and "secret" not in rotated
    assert keys.main(["show"]) == 0
    shown = capsys.readouterr().out
    assert salt not in shown and keys.trace_salt() not in shown
    assert [v["version"] for v in json.loads(shown)["keys"]["trace-salt"]] == [2, 1]
    assert [v["version"] for v in json.loads(shown)["keys"]["pseudonym"]] == [1]
    assert keys.main(["adopt"]) == 2
    assert "HYPERLIFT_SERVING_HASH_SALT is not set" in capsys.readouterr().err
