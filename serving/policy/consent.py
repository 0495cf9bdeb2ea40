"""Consent gating of actions and of features, per the region bundle's consent rule.

Without consent a user may only get actions that do not require it (with `required_for=all_actions`: only the
neutral action), and the features the rule lists are treated as missing (NaN) before scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from serving.decision.surfaces import PolicyConfig


def consent_purposes(config: "PolicyConfig") -> tuple[str, ...]:
    """The consent features (purposes) any region bundle reads, sorted: what consent events may name."""
    return tuple(sorted({bundle.consent.feature for bundle in config.regions.values()}))


def purposes_needed(config: "PolicyConfig") -> Callable[[str | None, str], tuple[str, ...]]:
    """`(region, action) -> the consent purposes the action needs for a user of that region` (the neutral action
    is the caller's to leave out): what the decision log is checked against (training.consent)."""

    def needed(region: str | None, action: str) -> tuple[str, ...]:
        rules = config.rules_for(region)
        return rules.consent_features if rules.consent_for_all_actions or action in rules.consent_actions else ()

    return needed


def consented(value: float | int | None) -> bool:
    """A consent feature value as a decision: missing, NaN or 0 mean no consent."""
    return value is not None and value == value and bool(value)


def consent_allows(
    actions: Sequence[str], neutral: str, has_consent: bool, required_for_all: bool, needing: Collection[str]
) -> list[str]:
    """Actions a user may get: all with consent; else those that do not need it (the neutral always)."""
    if has_consent:
        return list(actions)
    return [a for a in actions if a == neutral or (not required_for_all and a not in needing)]


def mask_features(values: np.ndarray, positions: Sequence[int], has_consent: bool) -> np.ndarray:
    """A copy of `values` with the listed positions set to NaN when the user has not consented (else `values`)."""
    if has_consent or not positions:
        return values
    masked = values.copy()
    masked[list(positions)] = np.nan
    return masked
