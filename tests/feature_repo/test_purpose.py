"""Data minimisation: every feature view of the real repo declares its purposes, they survive the Feast registry, and
a view or feature without one (or with one outside the vocabulary) is refused by name before `feast apply`."""

from datetime import timedelta

import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

import feature_repo.definitions as definitions
from feature_repo.definitions import build_repo
from feature_repo.purpose import (
    PURPOSES, MissingPurpose, check_purposes, feature_purposes, parse_purposes, purpose_tags,
)
from feature_repo.store import feature_store

DECLARED = {
    "user_activity_fv": {"personalization", "measurement"},
    "user_profile_fv": {"personalization", "measurement"},
    "user_embedding_fv": {"personalization"},
}


def view(name: str = "user_new_fv", tags: dict | None = None, field_tags: dict | None = None) -> FeatureView:
    """A one-feature view of the `user` entity with the given view and feature tags."""
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="s", path="/data/x.parquet", timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[user], ttl=timedelta(days=1), source=source, tags=tags or {},
                       schema=[Field(name="score", dtype=Float32, tags=field_tags or {})])


def test_every_view_of_the_repo_declares_its_purposes(tmp_path):
    found = check_purposes(build_repo(tmp_path).objects())
    assert {name: set().union(*features.values()) for name, features in found.items()} == DECLARED
    assert found["user_profile_fv"]["consent_marketing"] == {"personalization", "measurement"}
    assert len(found["user_embedding_fv"]) == 16


def test_a_view_without_a_purpose_is_refused_by_name_saying_what_to_add():
    with pytest.raises(MissingPurpose, match=(
        r"feature view 'user_new_fv' declares no purpose \(feature 'score' has none either\): add "
        r"\*\*purpose_tags\(\.\.\.\) with one or more of \['fraud', 'measurement', 'personalization'\] to its tags in "
        r"feature_repo/definitions.py \(or to the feature's Field tags\), then run `feast apply`"
    )):
        check_purposes([view(tags={"owner": "hyperlift"})])


def test_build_repo_refuses_a_view_without_a_purpose(tmp_path, monkeypatch):
    """The apply path itself (feast apply imports definitions.py; the feast_registry asset calls build_repo)."""
    real = definitions.purpose_tags
    monkeypatch.setattr(definitions, "purpose_tags",
                        lambda *p: {} if p == ("personalization",) else real(*p))  # the embedding view forgets
    with pytest.raises(MissingPurpose, match=r"feature view 'user_embedding_fv' declares no purpose"):
        build_repo(tmp_path)


def test_a_feature_may_narrow_its_views_purpose_and_a_feature_alone_can_declare_it():
    assert feature_purposes(view(tags=purpose_tags("personalization"), field_tags=purpose_tags("fraud"))) == {
        "score": frozenset({"fraud"})}
    assert feature_purposes(view(field_tags=purpose_tags("measurement"))) == {"score": frozenset({"measurement"})}


@pytest.mark.parametrize(("tags", "message"), [
    ({"purpose": "marketing"}, r"feature view 'v' declares purpose 'marketing': use one or more of "
                               r"\['fraud', 'measurement', 'personalization'\]"),
    ({"purpose": ""}, r"feature view 'v' declares purpose '': use one or more of"),
    ({"purpose": " , "}, r"declares purpose ' , '"),
    ({"purpose": "personalization,ads"}, r"declares purpose 'personalization,ads'"),
])
def test_a_purpose_outside_the_vocabulary_is_refused(tags, message):
    with pytest.raises(MissingPurpose, match=message):
        parse_purposes("feature view 'v'", tags)


def test_an_unknown_feature_purpose_names_the_feature():
    with pytest.raises(MissingPurpose, match=r"feature user_new_fv.score declares purpose 'ads'"):
        feature_purposes(view(tags=purpose_tags("personalization"), field_tags={"purpose": "ads"}))


def test_purpose_tags_is_one_sorted_string_and_refuses_nothing_or_unknown():
    assert purpose_tags("personalization", "measurement", "measurement") == {"purpose": "measurement,personalization"}
    assert parse_purposes("v", {"purpose": " personalization , fraud"}) == {"personalization", "fraud"}
    assert parse_purposes("v", {"owner": "x"}) is None
    assert set(PURPOSES) == {"personalization", "measurement", "fraud"}
    with pytest.raises(MissingPurpose, match=r"purpose_tags needs one or more of"):
        purpose_tags()
    with pytest.raises(MissingPurpose, match=r"got \['ads'\]"):
        purpose_tags("ads")


def test_purposes_survive_the_feast_registry(settings, online_redis_url):
    store = feature_store(online_redis_url, settings)
    store.apply(build_repo(settings.data_dir).objects())
    fetched = [store.get_feature_view(name) for name in DECLARED]
    assert {v.name: set().union(*feature_purposes(v).values()) for v in fetched} == DECLARED
