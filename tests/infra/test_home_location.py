"""A copied home reads and writes only itself: MLflow artifacts, logged models and Feast's file sources move along."""

import shutil
from datetime import timedelta
from pathlib import Path

import mlflow
import pandas as pd
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

from feature_repo.store import feature_store
from infra import home_location
from infra.home_location import LOCATION_FILE, ensure_relocated, previous_location
from infra.settings import HyperliftSettings
from training.registry import ensure_experiment, use_store


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):  # noqa: ARG002 - pyfunc signature
        return model_input["x"] * 2.0


def settings_for(home: Path, monkeypatch) -> HyperliftSettings:
    monkeypatch.setenv("HYPERLIFT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home_location._checked.discard(home.absolute())
    return HyperliftSettings()


def register_model(settings: HyperliftSettings) -> None:
    experiment = ensure_experiment(settings.mlflow_uri, "relocation", settings.mlflow_artifacts_dir)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_metric("m", 1.0)
        mlflow.pyfunc.log_model(name="model", python_model=Doubler(), registered_model_name="relocatable",
                                input_example=pd.DataFrame({"x": [1.0]}))


def apply_view(settings: HyperliftSettings) -> None:
    table = settings.data_dir / "features" / "t"
    table.mkdir(parents=True)
    pd.DataFrame({"user_id": [1], "v": [1.0], "event_timestamp": [pd.Timestamp("2026-10-01", tz="UTC")]}).to_parquet(
        table / "all.parquet")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(name="relocation_fv", entities=[user], ttl=timedelta(days=1), schema=[Field(name="v", dtype=Float32)],
                       source=FileSource(name="relocation_source", path=str(table), timestamp_field="event_timestamp"))
    feature_store("redis://127.0.0.1:1/0", settings).apply([user, view])


def test_a_copied_home_reads_and_writes_only_itself(tmp_path, monkeypatch):
    original, copy = tmp_path / "original" / ".hyperlift", tmp_path / "elsewhere" / ".hyperlift"
    source = settings_for(original, monkeypatch)
    original.mkdir(parents=True)
    register_model(source)
    apply_view(source)
    use_store("sqlite://")  # let go of the original's store before copying it
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # nothing of the original may be needed, or written back

    moved = settings_for(copy, monkeypatch)
    assert (copy / LOCATION_FILE).read_text().strip() == str(copy)
    use_store(moved.mlflow_uri)
    model = mlflow.pyfunc.load_model("models:/relocatable/1")
    assert model.predict(pd.DataFrame({"x": [3.0]})).tolist() == [6.0]
    register_model(moved)  # a new version lands in the copy
    version = mlflow.MlflowClient().get_model_version("relocatable", "2")
    location = mlflow.get_logged_model(version.source.removeprefix("models:/")).artifact_location
    assert location.startswith(copy.as_uri() + "/"), location
    assert len(list(copy.rglob("MLmodel"))) == 2
    view = feature_store("redis://127.0.0.1:1/0", moved).get_feature_view("relocation_fv")
    assert view.batch_source.path == str(copy / "data" / "features" / "t")
    assert not original.exists(), "the copy wrote into the original's folder"


def test_a_home_without_its_record_takes_its_old_location_from_mlflow(tmp_path, monkeypatch):
    home = tmp_path / "a" / ".hyperlift"
    settings = settings_for(home, monkeypatch)
    home.mkdir(parents=True)
    register_model(settings)
    settings_for(home, monkeypatch)  # the next process to open the home writes its record (the home exists now)
    (home / LOCATION_FILE).unlink()
    assert previous_location(home) == home
    copy = tmp_path / "b" / ".hyperlift"
    shutil.copytree(home, copy)
    home_location._checked.discard(copy)
    assert ensure_relocated(copy) == home
    assert previous_location(copy) == copy


def test_a_sibling_with_a_longer_name_is_not_rewritten(tmp_path):
    assert home_location._swap("/x/home/mlflow/a", "/x/home", "/y/h") == "/y/h/mlflow/a"
    assert home_location._swap("/x/home2/mlflow/a", "/x/home", "/y/h") == "/x/home2/mlflow/a"
    assert home_location._swap("/x/home", "/x/home", "/y/h") == "/y/h"


def test_a_home_that_does_not_exist_yet_is_left_alone(tmp_path):
    assert ensure_relocated(tmp_path / "not-yet") is None
    assert not (tmp_path / "not-yet").exists()


def test_a_read_only_home_opens_without_a_rewrite(tmp_path, monkeypatch):
    """A home on a read-only volume: settings still load (no lock file, no record written), instead of failing."""
    home = tmp_path / "ro"
    home.mkdir()
    monkeypatch.setattr(home_location.os, "access", lambda path, mode: False)  # as a read-only mount answers
    assert ensure_relocated(home) is None
    assert list(home.iterdir()) == []
