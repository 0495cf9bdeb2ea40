"""Experiment assignment is stable, splits traffic as configured, keeps layers independent; bad configs are refused."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from serving.decision.experiments import (
    DEFAULT_EXPERIMENTS_PATH,
    N_BUCKETS,
    ArmOverrides,
    Assignment,
    ExperimentAssigner,
    ExperimentsConfig,
    ExperimentsConfigError,
    arms_by_experiment,
    bucket,
    load_experiments,
)
from serving.decision.identity import user_key

KEYS = [user_key(i, "experiments-test") for i in range(20_000)]
REPO = Path(__file__).resolve().parents[3]


def _experiment(name, buckets, arms=(("control", 1.0), ("treatment", 1.0)), **extra):
    return {"name": name, "buckets": list(buckets), "arms": [{"name": a, "weight": w} for a, w in arms], **extra}


TWO_LAYERS = {
    "layers": [
        {
            "name": "promotions",
            "experiments": [
                _experiment("a1", (0, 3000), arms=(("control", 1.0), ("treatment", 3.0))),
                _experiment("a2", (3000, 5000)),
            ],
        },
        {"name": "ranking", "experiments": [_experiment("b1", (0, 5000)), _experiment("b2", (5000, 10_000))]},
    ]
}


@pytest.fixture(scope="module")
def assigned() -> list[dict[str, str]]:
    """{experiment: arm} of each of the 20,000 keys under TWO_LAYERS on the home surface."""
    assigner = ExperimentAssigner(ExperimentsConfig.model_validate(TWO_LAYERS))
    return [arms_by_experiment(assigner.assign(key, "home")) for key in KEYS]


def test_bucket_is_the_documented_sha256_prefix_mod_10000():
    key = KEYS[0]
    expected = int.from_bytes(hashlib.sha256(f"promotions:{key}".encode()).digest()[:8], "big") % N_BUCKETS
    assert bucket("promotions", key) == expected


def test_assignment_is_deterministic_and_the_same_in_another_process():
    config = ExperimentsConfig.model_validate(TWO_LAYERS)
    first = [arms_by_experiment(ExperimentAssigner(config).assign(key, "home")) for key in KEYS[:200]]
    again = [arms_by_experiment(ExperimentAssigner(config).assign(key, "home")) for key in KEYS[:200]]
    assert first == again
    script = (
        "import json, sys\n"
        "from serving.decision.experiments import ExperimentAssigner, ExperimentsConfig, arms_by_experiment\n"
        "config, keys = json.loads(sys.stdin.read())\n"
        "assigner = ExperimentAssigner(ExperimentsConfig.model_validate(config))\n"
        "print(json.dumps([arms_by_experiment(assigner.assign(k, 'home')) for k in keys]))\n"
    )
    # A different PYTHONHASHSEED: Python's hash() would change the arms, sha256 does not.
    result = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps([TWO_LAYERS, KEYS[:200]]), capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True,
    )
    assert json.loads(result.stdout) == first


def test_each_layer_gives_at_most_one_assignment_with_the_arms_overrides():
    arms = [
        {"name": "holdout", "weight": 1, "overrides": {"holdout": True}},
        {"name": "explore", "weight": 1, "overrides": {"epsilon": 0.2}},
    ]
    experiment = {"name": "e", "buckets": [0, N_BUCKETS], "arms": arms}
    config = ExperimentsConfig.model_validate({"layers": [{"name": "l", "experiments": [experiment]}]})
    assigner = ExperimentAssigner(config)
    assert all(len(assigner.assign(key, "home")) == 1 for key in KEYS[:100])  # the experiment owns every bucket
    seen = {a.arm: a for key in KEYS[:100] for a in assigner.assign(key, "home")}
    assert seen["holdout"] == Assignment("e", "holdout", ArmOverrides(holdout=True))
    assert seen["explore"] == Assignment("e", "explore", ArmOverrides(epsilon=0.2))


def test_traffic_share_per_experiment_and_per_arm_matches_ranges_and_weights(assigned):
    n = len(KEYS)
    for experiment, share in {"a1": 0.3, "a2": 0.2, "b1": 0.5, "b2": 0.5}.items():
        observed = sum(experiment in arms for arms in assigned) / n
        assert abs(observed - share) < 4 * np.sqrt(share * (1 - share) / n), (experiment, observed)
    # a1 splits 1:3, a2 1:1 (shares of the experiment's users)
    for experiment, treated_share in {"a1": 0.75, "a2": 0.5}.items():
        arms = [a[experiment] for a in assigned if experiment in a]
        observed = arms.count("treatment") / len(arms)
        se = np.sqrt(treated_share * (1 - treated_share) / len(arms))
        assert abs(observed - treated_share) < 4 * se, (experiment, observed)
    # nobody is in two experiments of one layer
    assert not any({"a1", "a2"} <= set(a) or {"b1", "b2"} <= set(a) for a in assigned)


def _cell(arms: dict[str, str], layer: tuple[str, ...]) -> str:
    """"experiment:arm" of a user in one layer, or "none"."""
    return next((f"{e}:{arms[e]}" for e in layer if e in arms), "none")


def test_layers_are_independent(assigned):
    """Users of each promotions experiment and arm spread over the ranking experiments and arms in proportion."""
    table = Counter((_cell(a, ("a1", "a2")), _cell(a, ("b1", "b2"))) for a in assigned)
    rows, columns = sorted({r for r, _ in table}), sorted({c for _, c in table})
    assert rows == ["a1:control", "a1:treatment", "a2:control", "a2:treatment", "none"]
    assert columns == ["b1:control", "b1:treatment", "b2:control", "b2:treatment"]
    contingency = np.array([[table[(r, c)] for c in columns] for r in rows])
    assert stats.chi2_contingency(contingency).pvalue > 0.001, contingency
    # the check can fail: the ranking layer hashed with the promotions salt (one config refuses that) is dependent
    promotions, ranking = TWO_LAYERS["layers"]
    first = ExperimentAssigner(ExperimentsConfig.model_validate({"layers": [promotions]}))
    second = ExperimentAssigner(ExperimentsConfig.model_validate({"layers": [{**ranking, "salt": "promotions"}]}))
    correlated = Counter(
        (_cell(arms_by_experiment(first.assign(k, "home")), ("a1", "a2")),
         _cell(arms_by_experiment(second.assign(k, "home")), ("b1", "b2")))
        for k in KEYS
    )
    contingency = np.array([[correlated[(r, c)] for c in columns] for r in rows])
    assert stats.chi2_contingency(contingency).pvalue < 1e-6


def test_surfaces_filter_leaves_the_user_out_without_moving_them():
    config = ExperimentsConfig.model_validate(
        {"layers": [{"name": "l", "experiments": [
            _experiment("home_only", (0, 5000), surfaces=["home"]), _experiment("anywhere", (5000, N_BUCKETS)),
        ]}]}
    )
    assigner = ExperimentAssigner(config)
    on_home = [arms_by_experiment(assigner.assign(key, "home")) for key in KEYS[:500]]
    on_checkout = [arms_by_experiment(assigner.assign(key, "checkout")) for key in KEYS[:500]]
    assert any("home_only" in a for a in on_home)
    for home, checkout in zip(on_home, on_checkout):
        if "home_only" in home:
            assert checkout == {}  # not re-bucketed into the other experiment of the layer
        else:
            assert checkout == home == {"anywhere": home["anywhere"]}


def test_no_layers_assign_nothing():
    assert ExperimentAssigner(ExperimentsConfig()).assign(KEYS[0], "home") == []


def test_control_arm_defaults_to_the_first_arm_and_control_arms_lists_all():
    config = ExperimentsConfig.model_validate(TWO_LAYERS)
    assert config.control_arms() == {"a1": "control", "a2": "control", "b1": "control", "b2": "control"}
    assert config.layers[0].salt == "promotions"


def test_overlapping_ranges_in_one_layer_are_refused_naming_both_experiments():
    overlapping = {"layers": [{"name": "l", "experiments": [_experiment("x", (0, 600)), _experiment("y", (500, 900))]}]}
    with pytest.raises(ValidationError, match=r"layer 'l': experiments 'x' buckets \[0, 600\] and 'y' buckets "
                                              r"\[500, 900\] overlap"):
        ExperimentsConfig.model_validate(overlapping)
    # adjacent ranges ([0, 600) and [600, 900)) do not overlap
    ExperimentsConfig.model_validate(
        {"layers": [{"name": "l", "experiments": [_experiment("x", (0, 600)), _experiment("y", (600, 900))]}]}
    )


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        (_experiment("e", (0, 10), control_arm="nope"), r"control_arm 'nope' is not one of its arms \['control', "),
        (_experiment("e", (9000, 10_001)), r"buckets \[9000, 10001\) must satisfy 0 <= start < end <= 10000"),
        (_experiment("e", (500, 500)), r"buckets \[500, 500\) must satisfy"),
        (_experiment("e", (0, 10), arms=(("a", 1.0), ("a", 2.0))), r"arm names must be unique; repeated: \['a'\]"),
        (_experiment("e", (0, 10), arms=(("a", 1.0),)), r"arms\n.*at least 2 items"),
        (_experiment("e", (0, 10), arms=(("a", 1.0), ("b", 0.0))), r"weight\n.*greater than 0"),
        (_experiment("e", (0, 10), surfaces=[]), r"surfaces\n.*at least 1 item"),
    ],
)
def test_invalid_experiments_are_refused_with_the_reason(experiment, message):
    with pytest.raises(ValidationError, match=message):
        ExperimentsConfig.model_validate({"layers": [{"name": "l", "experiments": [experiment]}]})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epsilon": 1.5}, r"epsilon\n.*less than or equal to 1"),
        ({"uncertainty_bonus": -0.1}, r"uncertainty_bonus\n.*greater than or equal to 0"),
        ({"diversity_penalty": float("inf")}, r"diversity_penalty\n.*finite number"),
        ({"holdot": True}, r"holdot\n.*Extra inputs are not permitted"),
    ],
)
def test_invalid_overrides_are_refused(overrides, message):
    arm = {"name": "b", "weight": 1.0, "overrides": overrides}
    experiment = {"name": "e", "buckets": [0, 10], "arms": [{"name": "a", "weight": 1.0}, arm]}
    with pytest.raises(ValidationError, match=message):
        ExperimentsConfig.model_validate({"layers": [{"name": "l", "experiments": [experiment]}]})


def test_names_must_be_unique_across_layers_and_salts_distinct():
    repeated = {"layers": [
        {"name": "l1", "experiments": [_experiment("e", (0, 10))]},
        {"name": "l2", "experiments": [_experiment("e", (0, 10))]},
    ]}
    with pytest.raises(ValidationError, match=r"experiment names \(across layers\) must be unique; repeated: \['e'\]"):
        ExperimentsConfig.model_validate(repeated)
    same_salt = {"layers": [{"name": "l1", "experiments": []}, {"name": "l2", "salt": "l1", "experiments": []}]}
    with pytest.raises(ValidationError, match=r"layer salts must be unique; repeated: \['l1'\]"):
        ExperimentsConfig.model_validate(same_salt)


def test_load_names_the_file_and_the_bad_field(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "layers:\n  - name: l\n    experiments:\n      - name: e\n        buckets: [0, 10]\n"
        "        arms:\n          - {name: a, weight: 1}\n          - {name: b, weight: 1, overides: {holdout: true}}\n"
    )
    with pytest.raises(ExperimentsConfigError) as raised:
        load_experiments(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: invalid experiments config:")
    assert "layers[0].experiments[0].arms[1].overides: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layers: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "the top level must be a mapping with a 'layers' list; got list"),
        ("layer: []\n", "layer: Extra inputs are not permitted"),
    ],
)
def test_unreadable_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentsConfigError, match=message) as raised:
        load_experiments(path)
    assert str(raised.value).startswith(str(path))


def test_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ExperimentsConfigError, match=r"missing\.yaml: cannot read the experiments file"):
        load_experiments(tmp_path / "missing.yaml")


def test_empty_file_means_no_experiments(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing running\n")
    assert load_experiments(path) == ExperimentsConfig()


def test_shipped_config_loads_a_ten_percent_policy_holdout():
    config = load_experiments(DEFAULT_EXPERIMENTS_PATH)
    (layer,) = config.layers
    (experiment,) = layer.experiments
    assert (layer.name, experiment.name, experiment.buckets) == ("promotions", "policy_holdout", (0, 1000))
    assert experiment.surfaces == ["home", "checkout"] and experiment.control_arm == "holdout"
    assert [(a.name, a.weight, a.overrides) for a in experiment.arms] == [
        ("holdout", 1.0, ArmOverrides(holdout=True)), ("policy", 1.0, ArmOverrides()),
    ]
    assigner = ExperimentAssigner(config)
    arms = Counter(a.arm for key in KEYS for a in assigner.assign(key, "home"))
    assert abs(sum(arms.values()) / len(KEYS) - 0.1) < 4 * np.sqrt(0.1 * 0.9 / len(KEYS))
    assert not any(assigner.assign(key, "search") for key in KEYS[:2000])
