"""Consent gating of actions and features."""

import numpy as np
import pytest

from serving.policy.consent import consent_allows, consented, mask_features

ACTIONS = ["no_action", "pct10_sitewide", "push_reminder"]


@pytest.mark.parametrize(("value", "expected"), [(1.0, True), (1, True), (0.0, False), (None, False), (float("nan"), False)])
def test_consent_value(value, expected):
    assert consented(value) is expected


def test_with_consent_everything_passes():
    assert consent_allows(ACTIONS, "no_action", True, True, []) == ACTIONS


def test_without_consent_all_actions_rule_leaves_the_neutral_only():
    assert consent_allows(ACTIONS, "no_action", False, True, []) == ["no_action"]


def test_without_consent_listed_rule_drops_only_listed_actions():
    assert consent_allows(ACTIONS, "no_action", False, False, ["push_reminder"]) == ["no_action", "pct10_sitewide"]


def test_masking_sets_positions_to_nan_only_without_consent():
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    masked = mask_features(values, [0, 2], has_consent=False)
    assert np.isnan(masked[[0, 2]]).all() and masked[1] == 2.0
    assert values[0] == 1.0, "the input must not be modified"
    assert mask_features(values, [0, 2], has_consent=True) is values
