"""Freshness contracts: validated values, an exact round trip through Feast tags and the Feast registry."""

from datetime import timedelta

import pytest
from feast import FeatureView

from feature_repo.definitions import build_repo
from feature_repo.freshness import (
    MAX_STALENESS_TAG, ON_STALE_TAG, FreshnessContract, InvalidFreshnessContract, MissingFreshnessContract,
    contract_from_tags, contract_of, freshness_tags,
)
from feature_repo.store import feature_store

DECLARED = {
    "user_activity_fv": FreshnessContract(timedelta(days=2), "fallback"),
    "user_profile_fv": FreshnessContract(timedelta(days=3650), "use"),
    "user_embedding_fv": FreshnessContract(timedelta(days=7), "use"),
}


@pytest.mark.parametrize("max_staleness", [
    timedelta(days=2), timedelta(seconds=1), timedelta(microseconds=1), timedelta(days=3650, seconds=59, microseconds=7),
    timedelta(days=999_999_999, seconds=86_399, microseconds=999_999),  # timedelta.max: no float rounding anywhere
])
@pytest.mark.parametrize("on_stale", ["use", "fallback"])
def test_tags_round_trip_exactly(max_staleness, on_stale):
    contract = FreshnessContract(max_staleness, on_stale)
    assert contract_from_tags("v", freshness_tags(contract)) == contract


def test_tags_are_seconds_and_the_policy():
    assert freshness_tags(FreshnessContract(timedelta(days=2), "fallback")) == {
        MAX_STALENESS_TAG: "172800", ON_STALE_TAG: "fallback",
    }
    assert freshness_tags(FreshnessContract(timedelta(seconds=90, microseconds=5), "use"))[MAX_STALENESS_TAG] == "90.000005"


@pytest.mark.parametrize(("max_staleness", "message"), [
    (timedelta(0), r"max_staleness must be positive, got datetime.timedelta\(0\)"),
    (timedelta(seconds=-1), r"max_staleness must be positive"),
    (3600, r"max_staleness must be a datetime.timedelta \(e.g. timedelta\(days=2\)\), got 3600"),
])
def test_bad_staleness_is_refused_with_what_to_pass(max_staleness, message):
    with pytest.raises(InvalidFreshnessContract, match=message):
        FreshnessContract(max_staleness, "use")


def test_unknown_policy_is_refused_with_the_known_ones():
    with pytest.raises(InvalidFreshnessContract, match=r"on_stale must be one of \['use', 'fallback'\], got 'drop'"):
        FreshnessContract(timedelta(days=1), "drop")


def test_a_view_without_tags_has_no_contract_and_is_told_what_to_add():
    with pytest.raises(MissingFreshnessContract, match=(
        r"feature view 'user_new_fv' declares no freshness contract; add \*\*freshness_tags\(FreshnessContract\("
        r"max_staleness=\.\.\., on_stale='use' \| 'fallback'\)\) to its tags in feature_repo/definitions.py"
    )):
        contract_from_tags("user_new_fv", {"owner": "hyperlift"})


@pytest.mark.parametrize(("tags", "message"), [
    ({MAX_STALENESS_TAG: "60"}, r"'v' has half a freshness contract: tag 'freshness_on_stale' is missing"),
    ({ON_STALE_TAG: "use"}, r"'v' has half a freshness contract: tag 'freshness_max_staleness_s' is missing"),
    ({MAX_STALENESS_TAG: "two days", ON_STALE_TAG: "use"},
     r"'freshness_max_staleness_s' must be a number of seconds, got 'two days'"),
    ({MAX_STALENESS_TAG: "nan", ON_STALE_TAG: "use"}, r"must be a number of seconds, got 'nan'"),
    ({MAX_STALENESS_TAG: "1e30", ON_STALE_TAG: "use"}, r"must be a number of seconds, got '1e30'"),
    ({MAX_STALENESS_TAG: "0", ON_STALE_TAG: "use"}, r"feature view 'v': FreshnessContract.max_staleness must be positive"),
    ({MAX_STALENESS_TAG: "60", ON_STALE_TAG: "Fallback"}, r"feature view 'v': FreshnessContract.on_stale must be one of"),
])
def test_bad_tags_name_the_view_and_the_tag(tags, message):
    with pytest.raises(InvalidFreshnessContract, match=message):
        contract_from_tags("v", tags)


def test_every_feature_view_declares_a_contract(tmp_path):
    views = [o for o in build_repo(tmp_path).objects() if isinstance(o, FeatureView)]
    contracts = {view.name: contract_of(view) for view in views}  # raises for a view that declares none
    assert {name: contracts[name] for name in DECLARED} == DECLARED


def test_contracts_survive_the_feast_registry_and_keep_the_other_tags(settings, online_redis_url):
    store = feature_store(online_redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    fetched = {name: store.get_feature_view(name) for name in DECLARED}
    assert {name: contract_of(view) for name, view in fetched.items()} == DECLARED
    assert fetched["user_activity_fv"].tags == {
        "owner": "hyperlift", "cadence": "daily", MAX_STALENESS_TAG: "172800", ON_STALE_TAG: "fallback",
        "purpose": "measurement,personalization",
    }
