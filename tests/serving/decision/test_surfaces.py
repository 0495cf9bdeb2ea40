"""Surface and region files are validated at start-up, with errors naming the file and the field."""

from pathlib import Path

import pytest
import yaml

from feature_repo.transforms import REGIONS
from serving.decision.surfaces import DEFAULT_CONFIG_DIR, PolicyConfigError, load_policy_config
from simulator import ACTION_IDS, CONTROL_ACTION
from tests.serving.conftest import REGIONS as TEST_REGIONS, SURFACES, write_policy_dir


def test_shipped_configuration_loads_and_names_only_catalogue_actions():
    config = load_policy_config(DEFAULT_CONFIG_DIR, REGIONS)
    assert sorted(config.surfaces) == ["checkout", "home"]
    catalogue = {CONTROL_ACTION, *ACTION_IDS}
    for surface in config.surfaces.values():
        assert surface.actions_named() <= catalogue, surface.name
    assert config.bundle_for("north").name == "strict" and config.bundle_for("mars").name == "standard"
    assert len(config.version) == 12


def test_region_is_the_name_of_the_region_code_feature(tmp_path):
    config = load_policy_config(write_policy_dir(tmp_path), REGIONS)
    assert config.region_of(0.0) == REGIONS[0] and config.region_of(3.0) == REGIONS[3]
    assert config.region_of(float("nan")) is None and config.region_of(None) is None and config.region_of(9.0) is None
    assert config.policy_version("home") == f"home@{config.version}"


def test_a_requested_region_only_makes_the_users_rules_stricter(tmp_path):
    regions = {
        "open": {"name": "open", "default": True, "regions": ["south"], "allowed_actions": ["a", "b", "c"],
                 "consent": {"required_for": "listed_actions", "actions": ["b"]}},
        "tight": {"name": "tight", "regions": ["north"], "allowed_actions": ["b", "c", "d"], "blocked_actions": ["c"],
                  "consent": {"feature": "consent_email", "required_for": "listed_actions", "actions": ["d"],
                              "masked_features": ["avg_viewed_price"]}},
        "all": {"name": "all", "regions": ["east"], "consent": {"required_for": "all_actions"}},
    }
    config = load_policy_config(write_policy_dir(tmp_path, regions=regions), REGIONS)
    own = config.rules_for("south")
    assert (own.bundles, own.allowed_actions, own.blocked_actions) == (("open",), {"a", "b", "c"}, set())
    # a strict user naming a lenient region keeps every rule of its own bundle, and gains the other's
    for rules in (config.rules_for("north", "south"), config.rules_for("south", "north")):
        assert rules.allowed_actions == {"b", "c"} and rules.blocked_actions == {"c"}
        assert set(rules.consent_features) == {"consent_marketing", "consent_email"}
        assert rules.consent_actions == {"b", "d"} and not rules.consent_for_all_actions
        assert rules.masked_features == ("avg_viewed_price",)
    assert config.rules_for("north", "south").bundles == ("tight", "open")
    assert config.rules_for("south", "east").consent_for_all_actions  # the stricter consent requirement
    # an unknown or empty requested region adds the default bundle's rules, or nothing
    assert config.rules_for("north", "mars").allowed_actions == {"b", "c"}
    assert config.rules_for("north", "") == config.rules_for("north", None) == config.rules_for("north", 5)
    assert config.rules_for("north", None).allowed_actions == {"b", "c", "d"}


def test_version_changes_when_any_file_changes(tmp_path):
    before = load_policy_config(write_policy_dir(tmp_path / "a")).version
    surfaces = {**SURFACES, "home": {**SURFACES["home"], "exploration": {"method": "greedy"}}}
    after = load_policy_config(write_policy_dir(tmp_path / "b", surfaces=surfaces)).version
    assert before != after and before == load_policy_config(write_policy_dir(tmp_path / "c")).version


def broken(tmp_path: Path, surfaces=SURFACES, regions=TEST_REGIONS) -> str:
    with pytest.raises(PolicyConfigError) as error:
        load_policy_config(write_policy_dir(tmp_path, surfaces=surfaces, regions=regions))
    return str(error.value)


def test_unknown_key_names_the_file_and_the_field(tmp_path):
    message = broken(tmp_path, surfaces={"home": {**SURFACES["home"], "epsilon": 0.1}})
    assert message.endswith("surfaces/home.yaml: epsilon: Extra inputs are not permitted")


def test_bad_value_names_the_nested_field(tmp_path):
    message = broken(tmp_path, surfaces={"home": {**SURFACES["home"], "exploration": {"epsilon": 1.5}}})
    assert "home.yaml: exploration.epsilon: Input should be less than or equal to 1" in message


def test_file_name_must_match_the_surface_name(tmp_path):
    message = broken(tmp_path, surfaces={"home": {**SURFACES["home"], "name": "landing"}})
    assert message.endswith("home.yaml: name 'landing' must match the file name 'home'")


def test_deadline_segments_must_fit_the_total(tmp_path):
    deadlines = {"features_ms": 30, "scoring_ms": 20, "total_ms": 40}
    message = broken(tmp_path, surfaces={"home": {**SURFACES["home"], "deadlines": deadlines}})
    assert "features_ms + scoring_ms (50.0) exceeds total_ms (40.0)" in message


def test_a_shared_cap_must_be_defined_identically_everywhere(tmp_path):
    other = {**SURFACES["push"], "name": "push2",
             "caps": [{"name": "pushes_per_day", "window_s": 86400, "limit": 5, "actions": ["push_reminder"]}]}
    message = broken(tmp_path, surfaces={**SURFACES, "push2": other})
    assert "push2.yaml: cap 'pushes_per_day' differs from its definition in surface 'push'" in message


def test_an_action_in_two_diversity_groups_is_refused(tmp_path):
    groups = {"a": ["push_reminder"], "b": ["push_reminder"]}
    message = broken(tmp_path, surfaces={"cart": {**SURFACES["cart"], "diversity": {"penalty": 1, "groups": groups}}})
    assert "action 'push_reminder' is in diversity groups 'a' and 'b'" in message


def test_regions_need_exactly_one_default_and_no_region_twice(tmp_path):
    no_default = {"standard": {**TEST_REGIONS["standard"], "default": False}, "strict": TEST_REGIONS["strict"]}
    assert "exactly one region bundle must have `default: true`; found none" in broken(tmp_path / "a", regions=no_default)
    twice = {**TEST_REGIONS, "strict": {**TEST_REGIONS["strict"], "regions": ["north", "south"]}}
    assert "strict.yaml: region 'south' is also listed by bundle 'standard'" in broken(tmp_path / "b", regions=twice)


def test_invalid_yaml_and_missing_folders_are_named(tmp_path):
    root = write_policy_dir(tmp_path / "yaml")
    (root / "surfaces" / "home.yaml").write_text("name: [unclosed\n")
    with pytest.raises(PolicyConfigError, match=r"home\.yaml: not valid YAML"):
        load_policy_config(root)
    with pytest.raises(PolicyConfigError, match=r"nowhere/surfaces: folder missing"):
        load_policy_config(tmp_path / "nowhere")
    (root / "surfaces" / "home.yaml").write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(PolicyConfigError, match=r"expected a mapping at the top level, got list"):
        load_policy_config(root)
