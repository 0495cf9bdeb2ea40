"""`make loop`'s exploration options: parsed and checked up front, and written into the copy of the policy folder
the service, the gate and the truth all read."""

import argparse

import pytest

from demo.loop import SURFACE, _parse, _policy_folder, exploration_spec
from feature_repo.transforms import REGIONS
from serving.decision.surfaces import load_policy_config


@pytest.mark.parametrize(("text", "spec"), [
    ("epsilon_greedy:0.2", {"method": "epsilon_greedy", "epsilon": 0.2}),
    ("softmax:0.1", {"method": "softmax", "temperature": 0.1}),
    ("softmax:0.1:0.005", {"method": "softmax", "temperature": 0.1, "floor": 0.005}),
])
def test_exploration_specs_become_the_surfaces_mapping(text, spec):
    assert exploration_spec(text) == spec


@pytest.mark.parametrize(("text", "message"), [
    ("softmax:x", "the numbers after the method must be decimals"),
    ("thompson:1", "give epsilon_greedy:EPSILON or softmax:TEMPERATURE[:FLOOR]"),
    ("epsilon_greedy:0.1:0.2", "give epsilon_greedy:EPSILON"),
    ("epsilon_greedy:1.5", "epsilon must be in [0, 1]"),
    ("softmax:0", "temperature must be finite and > 0"),
])
def test_bad_specs_are_refused_with_what_to_write(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        exploration_spec(text)


def test_epsilon_is_a_shortcut_and_the_two_options_exclude_each_other(capsys):
    assert _parse(["--epsilon", "0.2"]).exploration == {"method": "epsilon_greedy", "epsilon": 0.2}
    assert _parse([]).exploration is None
    with pytest.raises(SystemExit):
        _parse(["--epsilon", "0.2", "--exploration", "softmax:0.1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_policy_folder_copy_explores_as_asked_and_nothing_else_changes(tmp_path):
    folder = _policy_folder(tmp_path, exploration_spec("softmax:0.05:0.01"))
    assert folder == tmp_path / "conf"
    copied, default = load_policy_config(folder, REGIONS), load_policy_config(_policy_folder(tmp_path, None), REGIONS)
    exploration = copied.surfaces[SURFACE].exploration.build()
    assert (exploration.method, exploration.temperature, exploration.floor) == ("softmax", 0.05, 0.01)
    assert default.surfaces[SURFACE].exploration.build().method == "epsilon_greedy"
    assert copied.surfaces[SURFACE].budgets == default.surfaces[SURFACE].budgets
    assert set(copied.surfaces) == set(default.surfaces)
