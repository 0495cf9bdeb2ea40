"""Registry aliases over a model's life: challenger → champion (promotion) and back (rollback).

Every promotion appends the replaced champion's version to the registered model's `champion_history` tag, so a
rollback can move `champion` back one step; it never deletes versions.

A version is *live* while serving may load it: it holds an alias (champion, challenger or any other a surface
names), or it is the champion a rollback would return to (the last entry of `champion_history`). The online store
keeps writing the feature views live versions pin (`view_users`), and only those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

from infra.audit import default_log
from training.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, view_pins_of

HISTORY_TAG = "champion_history"
# Versions a rollback took the champion alias away from: the promotion gate refuses them until a person promotes
# one by hand (`python -m training.cli promote N`), which clears it from this list.
ROLLED_BACK_TAG = "rolled_back_versions"


class NothingToRollBack(RuntimeError):
    """The champion has no predecessor to return to."""


class UnknownVersion(ValueError):
    """A version the registry does not hold for the model."""


@dataclass(frozen=True)
class AliasMove:
    """The champion alias moved from `previous` (None: there was none) to `current`."""

    model_name: str
    previous: str | None
    current: str


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def _require_version(client: MlflowClient, model_name: str, version: str) -> None:
    """Raise UnknownVersion, naming the versions there are, unless the registry holds `version` of `model_name`."""
    try:
        client.get_model_version(model_name, version)
        return
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)):
            raise
    try:
        known = sorted((str(v.version) for v in client.search_model_versions(f"name='{model_name}'")), key=int)
    except MlflowException:
        known = []
    raise UnknownVersion(
        f"{model_name} has no version {version!r}; versions: {', '.join(known) or 'none (run `make demo` first)'}"
    )


def alias_version(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """The version behind `alias`, or None when no version has it (or the model does not exist yet)."""
    try:
        return str(_client(tracking_uri).get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        # A missing model says RESOURCE_DOES_NOT_EXIST; a missing alias says INVALID_PARAMETER_VALUE "... not found".
        missing = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}
        if exc.error_code in missing and "not found" in str(exc):
            return None
        raise


def champion_history(tracking_uri: str, model_name: str) -> list[str]:
    """Earlier champions, oldest first."""
    tags = _client(tracking_uri).get_registered_model(model_name).tags
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def promote(tracking_uri: str, model_name: str, version: str, actor: str = "system", reason: str = "") -> AliasMove:
    """Make `version` the champion; remember the one it replaces; drop the challenger alias if it pointed there.
    Written to the audit trail (infra/audit.py) with `actor` and `reason`. A version the registry does not hold is
    refused (UnknownVersion) before anything changes."""
    client = _client(tracking_uri)
    _require_version(client, model_name, str(version))
    previous = alias_version(tracking_uri, model_name, CHAMPION_ALIAS)
    if previous == str(version):
        return AliasMove(model_name, previous, previous)
    if previous is not None:
        history = champion_history(tracking_uri, model_name) + [previous]
        client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    rolled_back = rolled_back_versions(tracking_uri, model_name)
    if str(version) in rolled_back:  # a person (or a caller acting for one) promoted it again
        client.set_registered_model_tag(
            model_name, ROLLED_BACK_TAG, json.dumps([v for v in rolled_back if v != str(version)])
        )
    if alias_version(tracking_uri, model_name, CHALLENGER_ALIAS) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)
    default_log().record(actor, "model.promote", target=f"{model_name}@{version}", reason=reason, previous=previous)
    return AliasMove(model_name, previous, str(version))


def rollback(tracking_uri: str, model_name: str, actor: str = "system", reason: str = "") -> AliasMove:
    """Move the champion alias back to the previous champion (written to the audit trail with `actor`, `reason`)."""
    history = champion_history(tracking_uri, model_name)
    if not history:
        raise NothingToRollBack(f"{model_name} has no earlier champion to roll back to (tag {HISTORY_TAG} is empty)")
    client = _client(tracking_uri)
    current = alias_version(tracking_uri, model_name, CHAMPION_ALIAS)
    target = history.pop()
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, target)
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    if current is not None:
        rolled_back = rolled_back_versions(tracking_uri, model_name)
        client.set_registered_model_tag(model_name, ROLLED_BACK_TAG, json.dumps(sorted({*rolled_back, current}, key=int)))
    default_log().record(actor, "model.rollback", target=f"{model_name}@{target}", reason=reason, previous=current)
    return AliasMove(model_name, current, target)


def rolled_back_versions(tracking_uri: str, model_name: str) -> list[str]:
    """Versions a rollback removed from the champion alias and nobody has promoted since (oldest first)."""
    return list(json.loads(_client(tracking_uri).get_registered_model(model_name).tags.get(ROLLED_BACK_TAG, "[]")))


def live_versions(tracking_uri: str, model_name: str) -> dict[str, tuple[str, ...]]:
    """Version -> why it is live (its aliases, and `rollback` for the champion a rollback returns to); {} when the
    model is not registered yet."""
    try:
        model = _client(tracking_uri).get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return {}
        raise
    reasons: dict[str, list[str]] = {}
    for alias, version in sorted(model.aliases.items()):
        reasons.setdefault(str(version), []).append(alias)
    history = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    if history:
        reasons.setdefault(str(history[-1]), []).append("rollback")
    return {version: tuple(why) for version, why in reasons.items()}


def view_users(tracking_uri: str, model_name: str) -> dict[str, tuple[str, ...]]:
    """Feature view -> the live versions of `model_name` that pin it (versions that pin none are left out: serving
    refuses them)."""
    users: dict[str, list[str]] = {}
    for version in sorted(live_versions(tracking_uri, model_name), key=int):
        for view in view_pins_of(tracking_uri, model_name, version) or {}:
            users.setdefault(view, []).append(version)
    return {view: tuple(versions) for view, versions in sorted(users.items())}


def views_in_use(tracking_uri: str, model_name: str) -> set[str]:
    """The feature views some live version of `model_name` pins: the ones the online store must keep writing."""
    return set(view_users(tracking_uri, model_name))
