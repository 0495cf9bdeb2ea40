"""Champion/challenger aliases on a real MLflow registry (SQLite in a temp dir)."""

import json

import numpy as np
import pandas as pd
import pytest

from training.learners import TLearner
from infra.audit import AuditLog
from training.lifecycle import (
    NothingToRollBack, UnknownVersion, alias_version, champion_history, promote, rollback, rolled_back_versions,
)
from training.pyfunc import UpliftModel
from training.registry import dataset_hash, feature_service_version, load_alias, log_and_register


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def register(uri: str, tmp_path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"f": rng.normal(size=200)})
    learner = TLearner(objective="reg:squarederror", n_estimators=5).fit(X, rng.choice(["no_action", "p"], 200), rng.normal(size=200))
    return log_and_register(
        model=UpliftModel(learner, ["f"], {"p": 0.0}), tracking_uri=uri, experiment="lifecycle", artifact_dir=tmp_path / "a",
        model_name="m", feature_service="uplift_v3", params={}, metrics={}, tags={}, input_example=X,
    ).version


def test_new_versions_enter_as_challenger(uri, tmp_path):
    version = register(uri, tmp_path, 0)
    assert alias_version(uri, "m", "challenger") == version == "1"
    assert alias_version(uri, "m", "champion") is None
    _, _, feature_service = load_alias(uri, "m", "challenger")
    assert feature_service == "uplift_v3"


def test_promote_then_roll_back(uri, tmp_path):
    v1 = register(uri, tmp_path, 0)
    assert promote(uri, "m", v1).previous is None
    assert alias_version(uri, "m", "challenger") is None  # the challenger became the champion
    v2 = register(uri, tmp_path, 1)
    move = promote(uri, "m", v2)
    assert (move.previous, move.current) == ("1", "2")
    assert champion_history(uri, "m") == ["1"]
    back = rollback(uri, "m")
    assert (back.previous, back.current) == ("2", "1")
    assert alias_version(uri, "m", "champion") == "1" and champion_history(uri, "m") == []
    assert rolled_back_versions(uri, "m") == ["2"]  # the gate will refuse v2 until a person promotes it
    with pytest.raises(NothingToRollBack, match="m has no earlier champion to roll back to"):
        rollback(uri, "m")
    promote(uri, "m", v2)  # by hand
    assert rolled_back_versions(uri, "m") == [] and alias_version(uri, "m", "champion") == "2"


def test_promoting_the_champion_again_changes_nothing(uri, tmp_path):
    v1 = register(uri, tmp_path, 0)
    promote(uri, "m", v1)
    assert promote(uri, "m", v1).previous == "1"
    assert champion_history(uri, "m") == []


def test_missing_model_has_no_alias(uri):
    assert alias_version(uri, "never_registered", "champion") is None


def test_feature_service_version_and_dataset_hash():
    assert feature_service_version("uplift_v12") == "12"
    with pytest.raises(ValueError, match="is not named <use_case>_v<N>"):
        feature_service_version("uplift")
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]})
    assert dataset_hash(frame) == dataset_hash(frame.copy())
    assert dataset_hash(frame) != dataset_hash(frame.assign(b=[0.5, 0.26]))
    assert dataset_hash(frame) != dataset_hash(frame.rename(columns={"b": "c"}))


def test_cli_status_promote_rollback(uri, tmp_path, monkeypatch, capsys):
    from training.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    v1, v2 = register(uri, tmp_path, 0), register(uri, tmp_path, 1)
    assert main(["--model", "m", "promote", v1]) == 0 and main(["--model", "m", "promote", v2]) == 0
    capsys.readouterr()
    assert main(["--model", "m", "status"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "model": "m", "champion": "2", "challenger": None, "earlier_champions": ["1"]
    }
    assert main(["--model", "m", "rollback"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "m", "previous_champion": "2", "champion": "1"}
    assert main(["--model", "m", "rollback"]) == 1
    assert "no earlier champion" in capsys.readouterr().err


def test_moves_are_in_the_audit_trail_with_who_and_why(uri, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERLIFT_AUDIT_DIR", str(tmp_path / "audit"))
    v1, v2 = register(uri, tmp_path, 0), register(uri, tmp_path, 1)
    promote(uri, "m", v1, actor="dagster:run-1", reason="gate passed")
    promote(uri, "m", v2, actor="cli:ana", reason="hotfix")
    rollback(uri, "m", actor="guard:drift", reason="value below the previous champion's interval")
    entries = AuditLog(tmp_path / "audit").entries(action="model")
    assert [(e["actor"], e["action"], e["target"], e["reason"], e["details"]["previous"]) for e in entries] == [
        ("dagster:run-1", "model.promote", "m@1", "gate passed", None),
        ("cli:ana", "model.promote", "m@2", "hotfix", "1"),
        ("guard:drift", "model.rollback", "m@1", "value below the previous champion's interval", "2"),
    ]


def test_promoting_a_version_that_does_not_exist_changes_nothing_and_names_the_versions(uri, tmp_path):
    v1 = register(uri, tmp_path, 0)
    promote(uri, "m", v1)
    with pytest.raises(UnknownVersion, match=r"m has no version '4'; versions: 1"):
        promote(uri, "m", "4")
    assert champion_history(uri, "m") == [] and alias_version(uri, "m", "champion") == "1"
