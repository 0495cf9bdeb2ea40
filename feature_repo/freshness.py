"""Freshness contracts: how old a feature view's online row may be, and what serving does with an older one.

A contract is declared once, on the feature view, as two Feast tags (`freshness_tags`); serving reads it back from
the views it fetched from the Feast registry (`contract_of`), so the definition and the service cannot disagree.

    FeatureView(..., tags={"owner": "hyperlift", **freshness_tags(FreshnessContract(timedelta(days=2), "fallback"))})

`on_stale="use"` scores the stale values and counts them; `on_stale="fallback"` answers the surface's neutral
action with the fallback reason `stale_features`. A view with values but no row timestamp counts as stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal, get_args

from feast import FeatureView

OnStale = Literal["use", "fallback"]
ON_STALE_POLICIES: tuple[str, ...] = get_args(OnStale)
MAX_STALENESS_TAG = "freshness_max_staleness_s"
ON_STALE_TAG = "freshness_on_stale"
_MICROSECONDS = Decimal(1_000_000)


class InvalidFreshnessContract(ValueError):
    """A contract (given in code or read from a view's tags) has values that cannot describe a contract."""


class MissingFreshnessContract(ValueError):
    """A feature view that serving reads declares no freshness contract."""


@dataclass(frozen=True)
class FreshnessContract:
    """The maximum age of a view's online row (now − its event timestamp) and the policy for older rows."""

    max_staleness: timedelta
    on_stale: OnStale

    def __post_init__(self) -> None:
        """Reject contracts that cannot be enforced, saying what to pass instead."""
        if not isinstance(self.max_staleness, timedelta):
            raise InvalidFreshnessContract(
                f"FreshnessContract.max_staleness must be a datetime.timedelta (e.g. timedelta(days=2)), got "
                f"{self.max_staleness!r}"
            )
        if self.max_staleness <= timedelta(0):
            raise InvalidFreshnessContract(
                f"FreshnessContract.max_staleness must be positive, got {self.max_staleness!r}; a view whose rows "
                "never go stale still needs a bound (e.g. timedelta(days=365))"
            )
        if self.on_stale not in ON_STALE_POLICIES:
            raise InvalidFreshnessContract(
                f"FreshnessContract.on_stale must be one of {list(ON_STALE_POLICIES)}, got {self.on_stale!r}"
            )


def freshness_tags(contract: FreshnessContract) -> dict[str, str]:
    """The Feast tags that declare `contract` on a FeatureView (merge them into the view's other tags)."""
    return {MAX_STALENESS_TAG: _seconds_text(contract.max_staleness), ON_STALE_TAG: contract.on_stale}


def contract_from_tags(view_name: str, tags: dict[str, str]) -> FreshnessContract:
    """The contract declared by a view's tags; raises MissingFreshnessContract when neither tag is there."""
    staleness, policy = tags.get(MAX_STALENESS_TAG), tags.get(ON_STALE_TAG)
    if staleness is None and policy is None:
        raise MissingFreshnessContract(
            f"feature view {view_name!r} declares no freshness contract; add "
            f"**freshness_tags(FreshnessContract(max_staleness=..., on_stale='use' | 'fallback')) to its tags in "
            "feature_repo/definitions.py (see feature_repo/freshness.py) and run `feast apply`"
        )
    if staleness is None or policy is None:
        missing = MAX_STALENESS_TAG if staleness is None else ON_STALE_TAG
        raise InvalidFreshnessContract(
            f"feature view {view_name!r} has half a freshness contract: tag {missing!r} is missing; declare both "
            "with freshness_tags(FreshnessContract(...))"
        )
    try:
        seconds = Decimal(staleness)
        max_staleness = timedelta(microseconds=int(seconds * _MICROSECONDS)) if seconds.is_finite() else None
    except (InvalidOperation, OverflowError):
        max_staleness = None
    if max_staleness is None:
        raise InvalidFreshnessContract(
            f"feature view {view_name!r}: tag {MAX_STALENESS_TAG!r} must be a number of seconds, got {staleness!r}"
        )
    try:
        return FreshnessContract(max_staleness, policy)  # type: ignore[arg-type]
    except InvalidFreshnessContract as exc:
        raise InvalidFreshnessContract(f"feature view {view_name!r}: {exc}") from exc


def contract_of(view: FeatureView) -> FreshnessContract:
    """The contract a FeatureView (e.g. fetched from the Feast registry) declares in its tags."""
    return contract_from_tags(view.name, dict(view.tags))


def _seconds_text(delta: timedelta) -> str:
    """Whole seconds as an integer, otherwise seconds with exactly six decimals: exact for every timedelta."""
    total = delta.days * 86_400 + delta.seconds
    return str(total) if not delta.microseconds else f"{total}.{delta.microseconds:06d}"
