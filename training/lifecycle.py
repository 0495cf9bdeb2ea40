"""Registry aliases over a model's life: challenger → champion (promotion) and back (rollback).

Every promotion appends the replaced champion's version to the registered model's `champion_history` tag, so a
rollback can move `champion` back one step; it never deletes versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

from training.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS

HISTORY_TAG = "champion_history"


class NothingToRollBack(RuntimeError):
    """The champion has no predecessor to return to."""


@dataclass(frozen=True)
class AliasMove:
    """The champion alias moved from `previous` (None: there was none) to `current`."""

    model_name: str
    previous: str | None
    current: str


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


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


def promote(tracking_uri: str, model_name: str, version: str) -> AliasMove:
    """Make `version` the champion; remember the one it replaces; drop the challenger alias if it pointed there."""
    client = _client(tracking_uri)
    previous = alias_version(tracking_uri, model_name, CHAMPION_ALIAS)
    if previous == str(version):
        return AliasMove(model_name, previous, previous)
    if previous is not None:
        history = champion_history(tracking_uri, model_name) + [previous]
        client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    if alias_version(tracking_uri, model_name, CHALLENGER_ALIAS) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)
    return AliasMove(model_name, previous, str(version))


def rollback(tracking_uri: str, model_name: str) -> AliasMove:
    """Move the champion alias back to the previous champion."""
    history = champion_history(tracking_uri, model_name)
    if not history:
        raise NothingToRollBack(f"{model_name} has no earlier champion to roll back to (tag {HISTORY_TAG} is empty)")
    client = _client(tracking_uri)
    current = alias_version(tracking_uri, model_name, CHAMPION_ALIAS)
    target = history.pop()
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, target)
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(history))
    return AliasMove(model_name, current, target)
