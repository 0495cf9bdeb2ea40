"""Log an uplift model run to MLflow, register it, and resolve the champion by alias."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from feature_repo.versions import definition_view_pins, format_view_pins, parse_view_pins
from training.pyfunc import UpliftModel

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
FEATURE_SERVICE_TAG = "feature_service"
FEATURE_SERVICE_VERSION_TAG = "feature_service_version"
FEATURE_VIEWS_TAG = "feature_views"
"""The views of the model's feature service and their schemas, `view@<schema hash>,...` (feature_repo/versions.py)."""
DATASET_HASH_TAG = "dataset_hash"


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version and the run that produced it."""

    name: str
    version: str
    run_id: str


def use_store(tracking_uri: str) -> None:
    """Point MLflow's process-wide tracking *and* registry URIs at one store.

    MLflow resolves the registry from global state first; setting only the tracking URI lets a registry URI set
    earlier in the process (another store) win.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def ensure_experiment(tracking_uri: str, experiment: str, artifact_dir: Path) -> str:
    """Get or create the experiment (artifacts under `artifact_dir`); returns its id."""
    use_store(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(experiment, artifact_location=artifact_dir.resolve().as_uri())


def log_and_register(
    *,
    model: UpliftModel,
    tracking_uri: str,
    experiment: str,
    artifact_dir: Path,
    model_name: str,
    feature_service: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    input_example: pd.DataFrame,
    figures: dict[str, Any] | None = None,
    alias: str = CHALLENGER_ALIAS,
    feature_views: Mapping[str, str] | None = None,
    run_name: str | None = None,
    dataset: pd.DataFrame | None = None,
    description: str | None = None,
) -> RegisteredModel:
    """Log params, metrics, figures and the pyfunc; register it under `model_name` and point `alias` at it.

    New models enter as the challenger; `training.lifecycle.promote` makes one the champion. The model version is
    tagged with its feature service and the schema of each view in it: `feature_views` as the training read them
    (`feature_repo.versions.service_view_pins(store, feature_service)`), else as feature_repo/definitions.py declares
    the service. A service that is neither given nor declared gets no `feature_views` tag, and serving refuses it.
    `run_name`, `dataset` (logged as the run's training input: hash, schema, rows) and `description` (on the run and
    the model version) make the run readable in the MLflow UI.
    """
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_dir)
    service_tags = {
        FEATURE_SERVICE_TAG: feature_service,
        FEATURE_SERVICE_VERSION_TAG: feature_service_version(feature_service),
    }
    pins = dict(feature_views) if feature_views is not None else definition_view_pins(feature_service)
    if pins:
        service_tags[FEATURE_VIEWS_TAG] = format_view_pins(pins)
    run_tags = {**tags, **service_tags}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags,
                          description=description) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        if dataset is not None:  # the run's input: name, content hash, schema and row count (no values)
            mlflow.log_input(mlflow.data.from_pandas(dataset, name=f"{feature_service} training set",
                                                     digest=dataset_hash(dataset)), context="training")
        card = {"action_costs": model.action_costs, "features": model.feature_names, "uplift_se": model.uplift_se}
        mlflow.log_dict(card, "model_card.json")
        for name, figure in (figures or {}).items():
            mlflow.log_figure(figure, f"plots/{name}.png")
        example = input_example[model.feature_names].head(5)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            input_example=example,
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if description:
        client.update_model_version(model_name, version, description=description)
    for key, value in service_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, alias, version)
    return RegisteredModel(model_name, version, run.info.run_id)


def load_alias(tracking_uri: str, model_name: str, alias: str = CHAMPION_ALIAS) -> tuple[UpliftModel, RegisteredModel, str]:
    """Load the model version behind `alias`: (python model, its identity, the feature service it was trained with)."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(model_name, alias)
    feature_service = version.tags.get(FEATURE_SERVICE_TAG)
    if not feature_service:
        raise ValueError(
            f"model {model_name} v{version.version} has no '{FEATURE_SERVICE_TAG}' tag; register it with "
            "training.registry.log_and_register so serving knows which features it needs"
        )
    use_store(tracking_uri)
    # Load the version just resolved, not the alias again: the alias may move in between.
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version.version}")
    python_model = loaded.unwrap_python_model()
    if not isinstance(python_model, UpliftModel):
        raise TypeError(f"{model_name}@{alias} is a {type(python_model).__name__}, not a training.pyfunc.UpliftModel")
    return python_model, RegisteredModel(model_name, str(version.version), version.run_id), feature_service


def view_pins_of(tracking_uri: str, model_name: str, version: str) -> dict[str, str] | None:
    """{view: schema hash} a registered model version pins (tag `feature_views`); None when it records none."""
    tags = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version(model_name, version).tags
    text = tags.get(FEATURE_VIEWS_TAG)
    return parse_view_pins(text) if text else None


def feature_service_version(feature_service: str) -> str:
    """The N of a feature service named `<use_case>_v<N>` (the naming rule of the Feast repo)."""
    stem, _, version = feature_service.rpartition("_v")
    if not stem or not version.isdigit():
        raise ValueError(f"feature service {feature_service!r} is not named <use_case>_v<N>")
    return version


def dataset_hash(frame: pd.DataFrame) -> str:
    """Content hash of a training set (values and column names, not row index), for the run's lineage."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
