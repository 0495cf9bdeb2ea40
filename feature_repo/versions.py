"""Schema versions of feature views: explicit names, the pins a model records, and which versions Redis keeps.

The rule (docs/data-plane.md, "Schema versions"):
- a feature view's schema never changes in place. A new schema is a new view, `<stem>_v<N>_fv` (version 1 is the
  plain `<stem>_fv`), read by a new feature service `<use_case>_v<M>`; `UPLIFT_FEATURE_SERVICE` moves to it;
- every registered model pins its feature service and the schema of each view in it (`view@<schema hash>`, the
  MLflow model-version tag `feature_views`); serving refuses a model whose pinned views are not in the Feast
  registry with that schema;
- the online store keeps writing every view version a live model pins (dual write), and stops writing a version
  once no live model pins it and the current feature service does not read it; its definition can then go.

Feast 0.67's own versioning (`registry.enable_online_feature_view_versioning`) is left off: with the Redis online
store, re-applying an unchanged view from fresh objects (every `feast apply`) resets its version to 0, so the
newest version writes into the keys of the oldest, and `get_online_features` of a feature service reads a latest
view at v1+ under its unversioned name (tests/feature_repo/test_versions.py shows both).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from feast import FeatureService, FeatureStore, FeatureView
from feast.errors import FeatureViewNotFoundException

from feature_repo.definitions import build_repo

_VIEW_NAME = re.compile(r"^(?P<stem>[a-z][a-z0-9_]*?)(?:_v(?P<version>[0-9]+))?_fv$")
_SERVICE_NAME = re.compile(r"^(?P<use_case>[a-z][a-z0-9_]*?)_v(?P<version>[0-9]+)$")


def view_version_name(stem: str, version: int) -> str:
    """The name of version `version` of a view: `<stem>_fv` for 1, `<stem>_v<N>_fv` after."""
    if version < 1:
        raise ValueError(f"view versions start at 1, got {version}")
    return f"{stem}_fv" if version == 1 else f"{stem}_v{version}_fv"


def view_version(name: str) -> tuple[str, int]:
    """(stem, version) of a view named by the rule; raises ValueError naming the rule otherwise."""
    match = _VIEW_NAME.match(name)
    if match is None:
        raise ValueError(f"feature view {name!r} is not named <stem>_fv or <stem>_v<N>_fv")
    version = int(match["version"] or 1)
    if match["version"] is not None and version < 2:
        raise ValueError(f"feature view {name!r}: version 1 is named {match['stem']}_fv, versions after it _v2, _v3, ...")
    return match["stem"], version


def next_view_version(name: str) -> str:
    """The name the next schema of view `name` takes."""
    stem, version = view_version(name)
    return view_version_name(stem, version + 1)


def use_case_of(feature_service: str) -> str:
    """The `<use_case>` of a feature service named `<use_case>_v<N>`."""
    match = _SERVICE_NAME.match(feature_service)
    if match is None:
        raise ValueError(f"feature service {feature_service!r} is not named <use_case>_v<N>")
    return match["use_case"]


def schema_hash(view: FeatureView) -> str:
    """12 hex digits of the view's schema: its entities and its features' names and types (order-free, as Feast
    compares schemas). TTL, tags, description and source are not schema: changing them keeps the version."""
    schema = {
        "entities": sorted(view.entities),
        "features": sorted([feature.name, str(feature.dtype)] for feature in view.features),
    }
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:12]


def service_view_pins(store: FeatureStore, feature_service: str) -> dict[str, str]:
    """{view: schema hash} of every view of `feature_service` as the Feast registry has them, in service order."""
    service = store.get_feature_service(feature_service)
    return {p.name: schema_hash(store.get_feature_view(p.name)) for p in service.feature_view_projections}


def definition_view_pins(feature_service: str) -> dict[str, str] | None:
    """{view: schema hash} of `feature_service` as feature_repo/definitions.py declares it; None if it does not."""
    repo = build_repo(Path("."))  # the data folder does not enter a schema
    services = [o for o in repo.objects() if isinstance(o, FeatureService) and o.name == feature_service]
    if not services:
        return None
    views = {o.name: o for o in repo.objects() if isinstance(o, FeatureView)}
    return {p.name: schema_hash(views[p.name]) for p in services[0].feature_view_projections}


def format_view_pins(pins: Mapping[str, str]) -> str:
    """The `feature_views` tag value: `view@hash` joined by commas, in service order."""
    return ",".join(f"{view}@{digest}" for view, digest in pins.items())


def parse_view_pins(text: str) -> dict[str, str]:
    """Inverse of `format_view_pins`; raises ValueError on a value it did not write."""
    pins: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        view, at, digest = item.partition("@")
        if not at or not view or not digest:
            raise ValueError(f"feature_views tag {text!r}: {item!r} is not <view>@<schema hash>")
        pins[view] = digest
    return pins


def pin_problem(store: FeatureStore, feature_service: str, pins: Mapping[str, str] | None) -> str | None:
    """Why a model that pins `pins` of `feature_service` cannot be served from `store`, or None if it can.

    The feature service itself must exist (FeatureServiceNotFoundException propagates, for the caller's message).
    """
    served = [p.name for p in store.get_feature_service(feature_service).feature_view_projections]
    if not pins:
        return (
            f"records no feature view versions (model version tag 'feature_views'), so serving cannot tell whether "
            f"feature service {feature_service!r} still has the schemas it was trained on; re-register it with "
            "training.registry.log_and_register, which pins them"
        )
    if sorted(served) != sorted(pins):
        return (
            f"was trained on feature service {feature_service!r} reading views {sorted(pins)}, but the Feast "
            f"registry's {feature_service!r} reads {sorted(served)}; a feature service's views never change: restore "
            "it and declare the new views in a new feature service version (docs/data-plane.md, 'Schema versions')"
        )
    for view, pinned in pins.items():
        try:
            current = schema_hash(store.get_feature_view(view))
        except FeatureViewNotFoundException:
            return (
                f"was trained on feature view {view!r} (schema {pinned}), which the Feast registry does not have; "
                "keep the view in feature_repo/definitions.py and run `feast apply` (the feast_registry asset) while "
                "a registered model uses it, or move the alias to a model trained on the current feature service"
            )
        if current != pinned:
            return (
                f"was trained on feature view {view!r} with schema {pinned}, but the Feast registry's {view!r} has "
                f"schema {current}: a view's schema never changes in place; restore it and declare the new schema "
                f"as {_next_name(view)!r} in a new feature service (docs/data-plane.md, 'Schema versions')"
            )
    return None


def _next_name(view: str) -> str:
    try:
        return next_view_version(view)
    except ValueError:
        return f"{view}_v2"


@dataclass(frozen=True)
class OnlineWritePlan:
    """Which views of a use case the online store writes, and which it no longer writes."""

    write: tuple[str, ...]  # the current feature service's views, then the other views live models pin
    retired: tuple[str, ...]  # views of the use case's feature services that nothing reads any more
    missing: tuple[str, ...]  # views live models pin that the Feast registry does not have (cannot be written)
    users: dict[str, tuple[str, ...]]  # view -> the live model versions pinning it

    def metadata(self) -> dict[str, object]:
        """The plan as asset metadata."""
        return {
            "views_written": list(self.write), "views_retired": list(self.retired),
            "views_missing": list(self.missing), "view_users": {v: list(u) for v, u in self.users.items()},
        }


def online_write_plan(
    store: FeatureStore, current_service: str, in_use: Mapping[str, Collection[str]]
) -> OnlineWritePlan:
    """The views to materialize: those of `current_service` (what new models train on) and every view that a live
    model pins (`in_use`: view -> model versions, from training.lifecycle.view_users). Views of the other feature
    services of the same use case that neither reads are retired: still registered, no longer written."""
    use_case = use_case_of(current_service)
    current = [p.name for p in store.get_feature_service(current_service).feature_view_projections]
    registered = {view.name for view in store.list_feature_views()}
    pinned = [view for view in sorted(in_use) if view not in current]
    write = [*current, *(view for view in pinned if view in registered)]
    family: set[str] = set()
    for service in store.list_feature_services():
        match = _SERVICE_NAME.match(service.name)
        if match is not None and match["use_case"] == use_case:
            family.update(p.name for p in service.feature_view_projections)
    return OnlineWritePlan(
        write=tuple(write),
        retired=tuple(sorted(family - set(write))),
        missing=tuple(view for view in pinned if view not in registered),
        users={view: tuple(sorted(in_use[view], key=_version_key)) for view in sorted(in_use)},
    )


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (0, version)
