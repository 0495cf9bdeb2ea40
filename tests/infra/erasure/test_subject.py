"""The subject's forms: the Feast key matches the repo's configuration, stored ids match however they were kept, and
an anonymised decision keeps its shape but nothing of the user's."""

import json

import pytest
import yaml

from feature_repo.store import REPO_PATH
from infra.erasure.__main__ import main
from infra.erasure.anonymise import Anonymiser
from infra.erasure.spill import anonymised_payload
from infra.erasure.subject import ENTITY_KEY_VERSION, FEAST_PROJECT, Subject, entity_key
from infra.keys import Pseudonymizer


def test_the_entity_key_follows_the_feature_store_configuration():
    config = yaml.safe_load((REPO_PATH / "feature_store.yaml").read_text())
    assert FEAST_PROJECT == config["project"].encode()
    assert ENTITY_KEY_VERSION == config["entity_key_serialization_version"]
    key = entity_key(17)
    assert key.endswith(b"\x11" + b"\x00" * 7 + FEAST_PROJECT) and b"user_id" in key
    # The subject's Feast rows: by raw id (a store written before the lake was pseudonymous) and by each pseudonym.
    door = Pseudonymizer("ab" * 32, 1)
    assert Subject.of(17, "salt").entity_keys == (key,)
    assert Subject.of(17, "salt", pseudonymizers=(door,)).entity_keys == (key, entity_key(door(17)))


@pytest.mark.parametrize("value, owned", [
    (17, True), ("17", True), (" 17 ", True), (17.0, True), ("+17", True), (170, False), ("17a", False),
    (True, False), (None, False), ("x", False), (17.5, False),
])
def test_a_stored_id_is_the_users_however_it_was_kept(value, owned):
    assert Subject.of(17, "salt").owns_id(value) is owned


def test_records_name_the_user_by_id_pseudonym_or_in_a_refused_event():
    subject = Subject.of(17, "salt")
    assert subject.owns_record({"user_key": subject.user_key})
    assert subject.owns_record({"event": json.dumps({"user_id": "17"})})
    assert subject.owns_record({"event": {"user_id": 17}})
    assert not subject.owns_record({"user_key": Subject.of(18, "salt").user_key, "event": "not json"})


@pytest.mark.parametrize("user_id", [-1, 2**63, "17", True, 1.0])
def test_only_an_integer_id_makes_a_subject(user_id):
    with pytest.raises(ValueError, match="user_id must be an integer"):
        Subject.of(user_id, "salt")


def test_an_anonymised_decision_fits_its_line_and_shares_a_token_with_its_outcomes():
    anonymiser = Anonymiser()
    record = {"decision_id": "d1", "ts": 1.0, "user_key": "a" * 32, "context_hash": "b" * 32, "chosen": ["x"],
              "features": {"user_activity_fv": {"values": {"page_views_total": 3.0}}}, "masked_features": []}
    payload = json.dumps(record, separators=(",", ":")).encode()
    out = anonymised_payload(record, len(payload), anonymiser)
    assert len(out) == len(payload)
    changed = json.loads(out)
    assert changed["features"] is None and changed["chosen"] == ["x"] and changed["user_key"] != "a" * 32
    assert anonymiser.outcome({"decision_id": "d1", "user_key": "a" * 32})["user_key"] == changed["user_key"]
    assert anonymiser.token("d2") != changed["user_key"]


@pytest.mark.parametrize("argv, message", [
    (["erase", "--user", "abc"], "--user must be a numeric user id"), (["export", "--user", "-4"], "must be in 0.."),
    (["erase"], "required: --user"),
])
def test_the_cli_refuses_a_bad_user_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err
