"""bench.decision_latency's command line: `[N]`, `--segments [N]`, `--help`, and a clear error for bad N."""

from __future__ import annotations

import pytest

from bench.decision_latency import cli


def test_n_and_segments_parse_in_either_form():
    assert (cli([]).segments, cli([]).n) == (False, 2000)
    assert (cli(["500"]).segments, cli(["500"]).n) == (False, 500)
    assert (cli(["--segments"]).segments, cli(["--segments"]).n) == (True, 2000)
    assert (cli(["--segments", "300"]).segments, cli(["--segments", "300"]).n) == (True, 300)


@pytest.mark.parametrize("argv, message", [(["x"], "invalid int value: 'x'"), (["0"], "N must be at least 1, got 0")])
def test_a_bad_n_is_a_usage_error_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_help_describes_the_paths_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--help"])
    assert exit_info.value.code == 0 and "decide_in_process" in capsys.readouterr().out
