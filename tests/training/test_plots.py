"""The evaluation figures build, carry the expected artists and save as PNG."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from training.calibration import uplift_calibration
from training.metrics import multi_action_auuc, multi_action_qini
from training.plots import calibration_figure, qini_figure, uplift_curve_figure

TREATMENTS = ["discount_10", "free_shipping"]


@pytest.fixture(scope="module")
def holdout():
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=n)
    actions = rng.choice(["no_action", *TREATMENTS], size=n)
    tau = np.column_stack([np.maximum(0, x), 0.5 + 0.3 * x])
    y = rng.exponential(size=n) * (rng.random(n) < 0.3) * 10
    for j, action in enumerate(TREATMENTS):
        y += (actions == action) * tau[:, j] * 3
    return y, actions, tau + rng.normal(scale=0.3, size=tau.shape)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("draw", "score"), [(qini_figure, multi_action_qini), (uplift_curve_figure, multi_action_auuc)]
)
def test_curve_figures_draw_a_curve_and_a_random_line_per_action(holdout, draw, score):
    y, actions, uplift = holdout
    scores = score(y, actions, uplift, TREATMENTS, "no_action")
    figure = draw(y, actions, uplift, TREATMENTS, "no_action", scores)
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    ax = figure.axes[0]
    assert len(ax.lines) == 2 * len(TREATMENTS)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("discount_10 (") and labels[-1].startswith("random targeting")
    assert f"{scores['mean']:.3f}" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    # every curve runs from 0 to the whole population
    for line in ax.lines:
        assert line.get_xdata()[0] == 0 and line.get_xdata()[-1] == 1
    assert _png(figure).startswith(b"\x89PNG")


def test_curve_figures_accept_weights_and_scores_without_a_mean(holdout):
    y, actions, uplift = holdout
    scores = {"discount_10": 0.1, "free_shipping": 0.2}
    figure = qini_figure(y, actions, uplift, TREATMENTS, "no_action", scores, sample_weight=np.full(len(y), 3.0))
    assert figure.axes[0].get_title() == "Holdout Qini curves"
    assert "by weight" in figure.axes[0].get_xlabel()
    plt.close(figure)


def test_calibration_figure_has_one_panel_per_action(holdout):
    y, actions, uplift = holdout
    tables = {}
    for j, action in enumerate(TREATMENTS):
        rows = (actions == action) | (actions == "no_action")
        tables[action] = uplift_calibration(y[rows], (actions[rows] == action).astype(int), 3 * uplift[rows, j])
    figure = calibration_figure(tables)
    assert len(figure.axes) == 2
    for ax, action in zip(figure.axes, TREATMENTS):
        assert ax.get_title().startswith(f"{action}: MAE")
        assert len(ax.containers) == 1  # the error bars
        assert len(ax.containers[0].lines[0].get_xdata()) == 10  # one point per bin
        assert any(line.get_label().startswith("perfect calibration") for line in ax.lines)
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    assert _png(figure).startswith(b"\x89PNG")
    single = calibration_figure(tables["discount_10"])
    assert len(single.axes) == 1 and single.axes[0].get_title().startswith("MAE")
    plt.close(single)
    four = calibration_figure({f"a{i}": tables["discount_10"] for i in range(4)})
    assert len(four.axes) == 4  # 2 × 3 grid, the two empty panels removed
    plt.close(four)
