"""Delayed outcomes: cure-model delay distributions by censored MLE, interim metrics and delay-corrected labels.

`observed_outcomes` turns an exposure log and the purchases seen so far into (converted, elapsed) rows;
`DelayModel` / `DelayModelSelector` / `GroupedDelayModel` fit P(convert) = p and the delay F by censored maximum
likelihood; `interim_estimate` and `delay_corrected_labels` add the expected remainder of pending exposures.
"""

from training.delay.censoring import observed_outcomes
from training.delay.families import DEFAULT_KNOTS_HOURS, FAMILIES
from training.delay.interim import (
    InterimEstimate,
    delay_corrected_labels,
    interim_estimate,
    revenue_per_conversion,
    weighted_binary_labels,
)
from training.delay.model import DelayModel, DelayModelSelector, GroupedDelayModel

__all__ = [
    "DEFAULT_KNOTS_HOURS",
    "FAMILIES",
    "DelayModel",
    "DelayModelSelector",
    "GroupedDelayModel",
    "InterimEstimate",
    "delay_corrected_labels",
    "interim_estimate",
    "observed_outcomes",
    "revenue_per_conversion",
    "weighted_binary_labels",
]
