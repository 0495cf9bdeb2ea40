"""Data minimisation: every feature view declares what its features may be used for, and a view without a purpose is
refused before it reaches the Feast registry.

    FeatureView(..., tags={"owner": "hyperlift", **purpose_tags("personalization")})
    Field(name="chargebacks_30d", dtype=Int64, tags=purpose_tags("fraud"))   # one feature narrower than its view

A feature's purposes are its own `purpose` tag, else its view's. `check_purposes` runs in `build_repo`, so `feast
apply` (the CLI imports feature_repo/definitions.py) and the `feast_registry` asset both refuse an undeclared view or
feature, naming it and saying what to add; tests/feature_repo/test_purpose.py runs it over the real repo.
"""

from __future__ import annotations

from collections.abc import Iterable

from feast import FeatureView, OnDemandFeatureView

PURPOSE_TAG = "purpose"
PURPOSES: dict[str, str] = {
    "personalization": "choosing what a user is shown: uplift scores, candidate generation, policy inputs",
    "measurement": "measuring effects: experiment readouts, off-policy evaluation, drift and fairness reports",
    "fraud": "detecting abuse of promotions and the API, never to choose what a user is offered",
}
"""The vocabulary (docs/privacy.md, "Purpose of each feature view"): a new purpose is added here and documented."""


class MissingPurpose(ValueError):
    """A feature view or feature declares no purpose, or one outside the vocabulary."""


def purpose_tags(*purposes: str) -> dict[str, str]:
    """The tag that declares `purposes` (comma-separated in Feast, whose tags are strings)."""
    unknown = sorted(set(purposes) - set(PURPOSES))
    if not purposes or unknown:
        raise MissingPurpose(f"purpose_tags needs one or more of {sorted(PURPOSES)}; got {list(purposes)}")
    return {PURPOSE_TAG: ",".join(sorted(set(purposes)))}


def parse_purposes(owner: str, tags: dict[str, str] | None) -> frozenset[str] | None:
    """The purposes a `purpose` tag declares (None without one); an empty or unknown one is refused, naming `owner`."""
    value = (tags or {}).get(PURPOSE_TAG)
    if value is None:
        return None
    declared = frozenset(p.strip() for p in value.split(",") if p.strip())
    unknown = sorted(declared - set(PURPOSES))
    if not declared or unknown:
        raise MissingPurpose(f"{owner} declares purpose {value!r}: use one or more of {sorted(PURPOSES)} "
                             "(feature_repo/purpose.py), e.g. **purpose_tags('personalization')")
    return declared


def feature_purposes(view: FeatureView | OnDemandFeatureView) -> dict[str, frozenset[str]]:
    """Each feature of `view` with its purposes; raises MissingPurpose for the first without any."""
    kind = "on-demand feature view" if isinstance(view, OnDemandFeatureView) else "feature view"
    of_view = parse_purposes(f"{kind} {view.name!r}", view.tags)
    found: dict[str, frozenset[str]] = {}
    for feature in view.features:
        own = parse_purposes(f"feature {view.name}.{feature.name}", feature.tags)
        purposes = own if own is not None else of_view
        if purposes is None:
            raise MissingPurpose(
                f"{kind} {view.name!r} declares no purpose (feature {feature.name!r} has none either): add "
                f"**purpose_tags(...) with one or more of {sorted(PURPOSES)} to its tags in "
                "feature_repo/definitions.py (or to the feature's Field tags), then run `feast apply`"
            )
        found[feature.name] = purposes
    if not view.features and of_view is None:
        raise MissingPurpose(f"{kind} {view.name!r} declares no purpose: add **purpose_tags(...) to its tags")
    return found


def check_purposes(objects: Iterable[object]) -> dict[str, dict[str, frozenset[str]]]:
    """Every feature view's features with their purposes; raises MissingPurpose, naming the view, for any without."""
    return {o.name: feature_purposes(o) for o in objects if isinstance(o, (FeatureView, OnDemandFeatureView))}
