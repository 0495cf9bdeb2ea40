"""Move the project's own entities from the local profile's stores to the cluster profile's (PostgreSQL).

No tool moves Dagster's or MLflow's SQLite stores to PostgreSQL, so this copies what the project needs through each
system's own client API, into empty target stores:

- the Feast registry: every project's entities, data sources, feature views (with their materialization intervals),
  on-demand and stream views, feature services, saved datasets, validation references and permissions, from the file
  registry into the SQL registry;
- MLflow: experiments (with their tags), runs (tags, params, every step of every metric, status, times, artifacts),
  logged models (artifacts, tags, params), and registered models with every version under its *own number*, its tags,
  description and run, the aliases (champion, challenger, ...) and the model tags that hold their history
  (`champion_history`, `rolled_back`). Version numbers are kept because aliases, history tags, the audit trail and
  decision logs all name versions by number: a version deleted in the source is created and deleted again in the
  target. Run and logged-model ids cannot be kept (stores mint them); each copied run is tagged
  `hyperlift.migrated_from_run_id` with the id it had.

Dagster's run history, event log and schedule state do not move: the cluster instance starts empty, and assets are
re-materialized there (docs/profiles.md).

Usage: HYPERLIFT_PROFILE=cluster HYPERLIFT_POSTGRES_URL=... python -m infra.migrate --to cluster [--from-mlflow URI]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Experiment, Metric, Param, Run, ViewType
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.store.entities.paged_list import PagedList

from infra.profile import create_databases, feast_registry
from infra.settings import HyperliftSettings, masked_url

if TYPE_CHECKING:  # Feast is imported when the registry is migrated, not for `--help`
    from feast.infra.registry.registry import Registry
    from feast.infra.registry.sql import SqlRegistry
    from feast.project import Project

MIGRATED_FROM_TAG = "hyperlift.migrated_from_run_id"
METRIC_BATCH, PARAM_BATCH = 900, 90  # MLflow's log_batch takes at most 1000 metrics and 100 params per call
PLACEHOLDER_SOURCE = "hyperlift-migrate://deleted-in-source"


class MigrationConflict(RuntimeError):
    """The target store already holds something the migration would write; nothing was changed."""


@dataclass
class MlflowMigration:
    """What moved: old run id → new, old logged model id → new, and the registered models copied."""

    runs: dict[str, str] = field(default_factory=dict)
    logged_models: dict[str, str] = field(default_factory=dict)
    registered_models: list[str] = field(default_factory=list)


def _pages(fetch: Callable[..., PagedList], **kwargs: Any) -> Iterator[Any]:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = fetch(**kwargs, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def mlflow_conflicts(source_uri: str, target_uri: str) -> list[str]:
    """What the target MLflow store already has of the source's: registered models, experiments holding runs."""
    source = MlflowClient(source_uri, registry_uri=source_uri)
    target = MlflowClient(target_uri, registry_uri=target_uri)
    clashes = [m.name for m in _pages(source.search_registered_models) if _registered_model_exists(target, m.name)]
    for experiment in source.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        existing = target.get_experiment_by_name(experiment.name)
        if existing is not None and target.search_runs([existing.experiment_id], max_results=1):
            clashes.append(f"experiment {experiment.name!r}")
    return [f"MLflow {clash}" for clash in clashes]


def _registered_model_exists(client: MlflowClient, name: str) -> bool:
    """Whether `client`'s registry has a model of that name."""
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _copy_artifacts(artifact_uri: str, tracking_uri: str, upload: Callable[[str], None]) -> None:
    """Download the artifacts under `artifact_uri` and hand the folder to `upload` (skipped when there are none)."""
    with tempfile.TemporaryDirectory(prefix="hyperlift-migrate-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=scratch,
                                                         tracking_uri=tracking_uri))
        if any(local.iterdir()):
            upload(str(local))


def _copy_run(source: MlflowClient, target: MlflowClient, source_uri: str, run: Run, experiment_id: str) -> str:
    """A copy of `run` in `experiment_id` of the target (tags, params, metric histories, artifacts, status); its id."""
    tags = {**run.data.tags, MIGRATED_FROM_TAG: run.info.run_id}
    copy = target.create_run(experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
    new_id = copy.info.run_id
    params = [Param(key, value) for key, value in run.data.params.items()]
    metrics = [m for key in run.data.metrics for m in source.get_metric_history(run.info.run_id, key)]
    for start in range(0, len(params), PARAM_BATCH):
        target.log_batch(new_id, params=params[start:start + PARAM_BATCH])
    for start in range(0, len(metrics), METRIC_BATCH):
        batch = metrics[start:start + METRIC_BATCH]
        target.log_batch(new_id, metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in batch])
    _copy_artifacts(run.info.artifact_uri, source_uri, lambda local: target.log_artifacts(new_id, local))
    target.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    return new_id


def _target_experiment(target: MlflowClient, experiment: Experiment, artifacts_dir: Path) -> str:
    """The target's experiment of that name (created with the shared artifact root, and the source's tags)."""
    existing = target.get_experiment_by_name(experiment.name)
    if existing is not None:
        return existing.experiment_id
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    return target.create_experiment(experiment.name, artifact_location=artifacts_dir.resolve().as_uri(),
                                    tags=dict(experiment.tags))


def _copy_logged_models(source: MlflowClient, target: MlflowClient, source_uri: str, source_experiment: str,
                        experiment_id: str, moved: MlflowMigration) -> None:
    """MLflow 3's logged models of one experiment (what model versions point at as `models:/<id>`)."""
    for model in _pages(source.search_logged_models, experiment_ids=[source_experiment]):
        copy = target.create_logged_model(
            experiment_id, name=model.name, source_run_id=moved.runs.get(model.source_run_id or ""),
            tags=dict(model.tags), params=dict(model.params), model_type=model.model_type,
        )
        _copy_artifacts(model.artifact_location, source_uri,
                        lambda local: target.log_model_artifacts(copy.model_id, local))
        target.finalize_logged_model(copy.model_id, model.status)
        moved.logged_models[model.model_id] = copy.model_id


def _logged_model_id(version: ModelVersion) -> str | None:
    """The logged model a version was registered from: `models:/<model id>` (the SQL store keeps no `model_id`)."""
    if version.model_id:
        return version.model_id
    if version.source.startswith("models:/") and version.source.count("/") == 1:
        return version.source.removeprefix("models:/")
    return None


def _version_source(version: ModelVersion, moved: MlflowMigration, source: MlflowClient, target: MlflowClient) -> str:
    """Where the copied version's model lives in the target: its logged model, run path, or the source as given."""
    old_model = _logged_model_id(version)
    if old_model in moved.logged_models:
        return f"models:/{moved.logged_models[old_model]}"
    new_run = moved.runs.get(version.run_id or "")
    if new_run:
        if version.source.startswith(f"runs:/{version.run_id}"):
            return version.source.replace(version.run_id, new_run, 1)
        old_root = source.get_run(version.run_id).info.artifact_uri
        if version.source.startswith(old_root):
            return target.get_run(new_run).info.artifact_uri + version.source[len(old_root):]
    return version.source


@contextlib.contextmanager
def _global_tracking_uri(client: MlflowClient) -> Iterator[None]:
    """MLflow's SQL registry resolves a `models:/<id>` source through the *process-wide* tracking URI, not the
    client's: point it at `client`'s store for the duration, so the target's logged model is found, not the source's."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _copy_registered_model(
    source: MlflowClient, target: MlflowClient, model: RegisteredModel, moved: MlflowMigration
) -> None:
    """One registered model: its tags (alias history), every version under its own number, then the aliases."""
    target.create_registered_model(model.name, tags=dict(model.tags), description=model.description)
    versions = {int(v.version): v for v in _pages(source.search_model_versions, filter_string=f"name='{model.name}'")}
    for number in range(1, max(versions, default=0) + 1):
        version = versions.get(number)
        if version is None:  # deleted in the source: take the number, so later ones keep theirs
            target.create_model_version(model.name, PLACEHOLDER_SOURCE)
            target.delete_model_version(model.name, str(number))
            continue
        with _global_tracking_uri(target):
            copy = target.create_model_version(
                model.name, _version_source(version, moved, source, target),
                run_id=moved.runs.get(version.run_id or ""), tags=dict(version.tags), description=version.description,
                model_id=moved.logged_models.get(_logged_model_id(version) or ""),
            )
        if int(copy.version) != number:
            raise RuntimeError(f"{model.name} v{number} became v{copy.version} in the target; was it empty?")
    for alias, number in model.aliases.items():
        target.set_registered_model_alias(model.name, alias, str(number))
    moved.registered_models.append(model.name)


def migrate_mlflow(source_uri: str, target_uri: str, artifacts_dir: Path) -> MlflowMigration:
    """Copy experiments, runs, logged models and registered models from `source_uri` to an empty `target_uri`.

    New experiments keep their artifacts under `artifacts_dir` (the cluster's shared path).
    """
    if clashes := mlflow_conflicts(source_uri, target_uri):
        raise MigrationConflict(_conflict_message(clashes))
    source = MlflowClient(source_uri, registry_uri=source_uri)
    target = MlflowClient(target_uri, registry_uri=target_uri)
    moved = MlflowMigration()
    for experiment in source.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        experiment_id = _target_experiment(target, experiment, artifacts_dir)
        runs = _pages(source.search_runs, experiment_ids=[experiment.experiment_id], order_by=["start_time ASC"])
        for run in runs:
            moved.runs[run.info.run_id] = _copy_run(source, target, source_uri, run, experiment_id)
        _copy_logged_models(source, target, source_uri, experiment.experiment_id, experiment_id, moved)
    for model in _pages(source.search_registered_models):
        _copy_registered_model(source, target, model, moved)
    return moved


def _aliases(model: RegisteredModel) -> dict[str, str]:
    """{alias: version}; PostgreSQL stores give the version as int, SQLite ones as str."""
    return {alias: str(version) for alias, version in model.aliases.items()}


def registry_differences(source_uri: str, target_uri: str) -> list[str]:
    """What differs between two stores' registered models: versions, their tags and runs' params and metrics,
    aliases, model tags (empty when the migration is complete)."""
    source = MlflowClient(source_uri, registry_uri=source_uri)
    target = MlflowClient(target_uri, registry_uri=target_uri)
    differences = []
    for model in _pages(source.search_registered_models):
        if not _registered_model_exists(target, model.name):
            differences.append(f"{model.name}: missing")
            continue
        copy = target.get_registered_model(model.name)
        if (dict(model.tags), _aliases(model)) != (dict(copy.tags), _aliases(copy)):
            differences.append(f"{model.name}: tags or aliases differ")
        for version in _pages(source.search_model_versions, filter_string=f"name='{model.name}'"):
            other = target.get_model_version(model.name, version.version)
            if dict(version.tags) != dict(other.tags):
                differences.append(f"{model.name} v{version.version}: tags differ")
            if version.run_id:
                run, run_copy = source.get_run(version.run_id), target.get_run(other.run_id)
                if (run.data.params, run.data.metrics) != (run_copy.data.params, run_copy.data.metrics):
                    differences.append(f"{model.name} v{version.version}: run params or metrics differ")
    return differences


def _conflict_message(clashes: list[str]) -> str:
    """Why the migration stopped, and what to do."""
    return (f"the target stores already have {', '.join(clashes)}; migrate into empty stores (fresh databases), or "
            "delete those there first. Nothing was copied")


@contextlib.contextmanager
def _feast_registries(
    source: HyperliftSettings, target: HyperliftSettings
) -> Iterator[tuple[Registry, SqlRegistry]]:
    """(the source's file registry, the target's SQL registry); the SQL one's connections are closed afterwards."""
    from feast.infra.registry.registry import Registry
    from feast.infra.registry.sql import SqlRegistry, SqlRegistryConfig
    from feast.repo_config import RegistryConfig

    registry_type, url = feast_registry(target)
    if registry_type != "sql":
        raise ValueError("the target profile's Feast registry is not a SQL registry; set HYPERLIFT_PROFILE=cluster")
    files = Registry(None, RegistryConfig(path=str(source.feast_registry_path)), repo_path=None)
    sql = SqlRegistry(SqlRegistryConfig(registry_type="sql", path=url), None, None)
    try:
        yield files, sql
    finally:
        for engine in {sql.write_engine, sql.read_engine}:
            engine.dispose()


def feast_conflicts(source: HyperliftSettings, target: HyperliftSettings) -> list[str]:
    """Projects of the source's file registry that the target's SQL registry already holds objects of."""
    with _feast_registries(source, target) as (files, sql):
        return [
            f"Feast project {project.name!r}" for project in files.list_projects(allow_cache=False)
            if sql.list_feature_views(project.name, allow_cache=False)
            or sql.list_entities(project.name, allow_cache=False)
        ]


def migrate_feast_registry(source: HyperliftSettings, target: HyperliftSettings) -> dict[str, list[str]]:
    """Copy every object of the file registry into the target's SQL registry; {project: names of objects copied}."""
    if clashes := feast_conflicts(source, target):
        raise MigrationConflict(_conflict_message(clashes))
    copied: dict[str, list[str]] = {}
    with _feast_registries(source, target) as (files, sql):
        for project in files.list_projects(allow_cache=False):
            copied[project.name] = _copy_feast_project(files, sql, project)
    return copied


def _copy_feast_project(files: Registry, sql: SqlRegistry, project: Project) -> list[str]:
    """Every object of one project, in dependency order (views name entities and sources, services name views)."""
    name = project.name
    sql.apply_project(project, commit=True)
    groups = [
        (files.list_entities, sql.apply_entity),
        (files.list_data_sources, sql.apply_data_source),
        (files.list_feature_views, sql.apply_feature_view),
        (files.list_stream_feature_views, sql.apply_feature_view),
        (files.list_on_demand_feature_views, sql.apply_feature_view),
        (files.list_feature_services, sql.apply_feature_service),
        (files.list_saved_datasets, sql.apply_saved_dataset),
        (files.list_validation_references, sql.apply_validation_reference),
        (files.list_permissions, sql.apply_permission),
    ]
    names = []
    for listing, apply in groups:
        for item in listing(name, allow_cache=False):
            apply(item, name, commit=True)
            names.append(item.name)
    return names


def main(argv: list[str]) -> int:
    """Entry point: migrate the home folder's local stores into the cluster profile's, then verify the registry."""
    parser = argparse.ArgumentParser(prog="python -m infra.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", choices=["cluster"], required=True, help="the profile to move to")
    parser.add_argument("--from-mlflow", help="the source MLflow store (default: the local profile's SQLite store)")
    parser.add_argument("--skip-feast", action="store_true", help="leave the Feast registry alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run and model is noise here
    target = HyperliftSettings(profile=args.to)
    source = target.model_copy(update={"profile": "local", "mlflow_tracking_uri": None, "mlflow_artifacts_root": None})
    source_uri = args.from_mlflow or source.mlflow_uri
    feast = not args.skip_feast and source.feast_registry_path.exists()
    if not args.skip_feast and not feast:
        print(f"[migrate] no Feast registry at {source.feast_registry_path}: the registry is left out", file=sys.stderr)
    print(f"[migrate] MLflow {masked_url(source_uri)} → {masked_url(target.mlflow_uri)}", file=sys.stderr)
    try:
        created = create_databases(target)
    except ConnectionError as error:
        print(f"[migrate] {error}", file=sys.stderr)
        return 1
    if created:
        print(f"[migrate] created databases {', '.join(created)}", file=sys.stderr)
    # Both targets are checked before either is written, so a refused migration leaves both untouched.
    clashes = mlflow_conflicts(source_uri, target.mlflow_uri) + (feast_conflicts(source, target) if feast else [])
    if clashes:
        print(f"[migrate] {_conflict_message(clashes)}", file=sys.stderr)
        return 1
    if feast:
        copied = migrate_feast_registry(source, target)
        print(f"[migrate] Feast registry: {sum(map(len, copied.values()))} objects", file=sys.stderr)
    moved = migrate_mlflow(source_uri, target.mlflow_uri, target.mlflow_artifacts_dir)
    print(f"[migrate] MLflow: {len(moved.runs)} runs, {len(moved.logged_models)} logged models, registered models "
          f"{moved.registered_models}", file=sys.stderr)
    differences = registry_differences(source_uri, target.mlflow_uri)
    for line in differences:
        print(f"[migrate] differs: {line}", file=sys.stderr)
    print("[migrate] Dagster's run history and schedule state do not move: re-materialize the assets on the cluster "
          "and turn schedules and sensors on there (docs/profiles.md)", file=sys.stderr)
    return 1 if differences else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
