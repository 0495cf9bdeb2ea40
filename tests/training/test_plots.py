"""The evaluation figures build, carry the expected artists and save as PNG; the calibration panels fit their points
and the pooled one carries the promotion gate's slope."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from training.calibration import calibration_summary, uplift_calibration
from training.learners import TLearner
from training.metrics import multi_action_auuc, multi_action_qini
from training.plots import POOLED_PANEL, calibration_figure, qini_figure, uplift_curve_figure
from training.train import evaluate_uplift, split_training_set, train_uplift

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


def _fitted_slope(ax) -> float:
    (line,) = [line for line in ax.lines if line.get_label().startswith("fitted")]
    (x0, x1), (y0, y1) = line.get_xdata(), line.get_ydata()
    return (y1 - y0) / (x1 - x0)


def _points_fill_the_axes(ax) -> None:
    """Every bin point is inside the limits and the points span most of each axis (no sliver in a wide frame)."""
    xs = np.concatenate([c.lines[0].get_xdata() for c in ax.containers])
    ys = np.concatenate([c.lines[0].get_ydata() for c in ax.containers])
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    assert x_low < xs.min() and xs.max() < x_high and y_low < ys.min() and ys.max() < y_high
    assert np.ptp(xs) >= 0.8 * (x_high - x_low)  # 10 % padding on each side
    assert np.ptp(ys) >= 0.5 * (y_high - y_low)  # the y axis also spans the predicted range, for the y = x line


def test_calibration_figure_has_one_panel_per_action(holdout):
    y, actions, uplift = holdout
    tables = {}
    for j, action in enumerate(TREATMENTS):
        rows = (actions == action) | (actions == "no_action")
        tables[action] = uplift_calibration(y[rows], (actions[rows] == action).astype(int), 3 * uplift[rows, j])
    figure = calibration_figure(tables)
    assert len(figure.axes) == 2
    for ax, action in zip(figure.axes, TREATMENTS):
        summary = calibration_summary(tables[action])
        assert ax.get_title().startswith(f"{action} alone\nslope {summary['slope']:.2f} ± {summary['slope_se']:.2f}")
        assert len(ax.containers) == 1  # the error bars
        assert len(ax.containers[0].lines[0].get_xdata()) == 10  # one point per bin
        assert any(line.get_label().startswith("perfect calibration") for line in ax.lines)
        assert _fitted_slope(ax) == pytest.approx(summary["slope"], rel=1e-9)
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
        _points_fill_the_axes(ax)
    assert _png(figure).startswith(b"\x89PNG")
    single = calibration_figure(tables["discount_10"])
    assert len(single.axes) == 1 and single.axes[0].get_title().startswith("slope")
    plt.close(single)
    four = calibration_figure({f"a{i}": tables["discount_10"] for i in range(4)})
    assert len(four.axes) == 4  # 2 × 3 grid, the two empty panels removed
    plt.close(four)


def test_a_table_with_fewer_than_two_usable_bins_says_so_instead_of_nan():
    table = uplift_calibration(np.arange(8.0), np.array([1, 0] * 4), np.arange(8.0), n_bins=4)  # 1 row per arm and bin
    figure = calibration_figure({"a": table})
    (ax,) = figure.axes
    assert "slope n/a (0 usable bins)" in ax.get_title() and "nan" not in ax.get_title()
    assert not any(line.get_label().startswith("fitted") for line in ax.lines)
    plt.close(figure)
    rng = np.random.default_rng(2)  # an action whose recalibrated uplift is one constant: usable bins, no line
    flat = uplift_calibration(rng.normal(size=400), np.array([1, 0] * 200), np.full(400, 0.55), n_bins=5)
    figure = calibration_figure({"free_shipping": flat})
    (ax,) = figure.axes
    assert ax.get_title().startswith("free_shipping alone\nslope n/a (every bin predicts the same uplift), coverage")
    assert ax.get_xlim() == pytest.approx((0.05, 1.05))  # ±0.5 around the one predicted value
    plt.close(figure)


def test_the_pooled_panel_shows_the_promotion_gates_slope_for_the_same_model_and_data():
    rng = np.random.default_rng(1)
    n = 6000
    frame = pd.DataFrame({
        "user_id": np.arange(n), "event_timestamp": pd.Timestamp("2026-10-02", tz="UTC"),
        "action_id": rng.choice(["no_action", *TREATMENTS, "push"], size=n), "propensity": 0.25,
        "f": rng.normal(size=n), "g": rng.normal(size=n),
    })
    effect = frame["action_id"].map({"no_action": 0.0, "discount_10": 1.5, "free_shipping": 0.5, "push": 0.0})
    frame["label_revenue"] = (rng.random(n) < 0.1) * rng.exponential(20, n) + effect * np.maximum(0, frame["f"])
    trained = train_uplift(frame, ["f", "g"], {a: 0.1 for a in [*TREATMENTS, "push"]}, TLearner(n_estimators=30))
    # what the promotion check (challenger_beats_champion) computes: the model scored on its holdout users
    gate = evaluate_uplift(trained.model, split_training_set(frame, 0.2).test)
    slope = gate.metrics["holdout_calibration_slope"]
    figure = gate.figures()["holdout_uplift_calibration"]
    pooled = figure.axes[0]
    assert pooled.get_title().startswith(f"{POOLED_PANEL}\nslope {slope:.2f} ± "
                                         f"{gate.metrics['holdout_calibration_slope_se']:.2f}")
    assert _fitted_slope(pooled) == pytest.approx(slope, rel=1e-9)
    assert [len(c.lines[0].get_xdata()) for c in pooled.containers] == [5, 5, 5]  # every action's bins
    _points_fill_the_axes(pooled)
    # the action panels follow, each with its own (noisier) slope and standard error
    assert [ax.get_title().split("\n")[0] for ax in figure.axes[1:]] == [f"{a} alone" for a in gate.treatments]
    # what training logs to MLflow (metric and figure) is the same evaluation of the same holdout
    logged = trained.figures["holdout_uplift_calibration"]
    assert trained.metrics["holdout_calibration_slope"] == pytest.approx(slope, rel=1e-9)
    assert _fitted_slope(logged.axes[0]) == pytest.approx(slope, rel=1e-9)
    for fig in (figure, *trained.figures.values()):
        plt.close(fig)


def test_figures_are_not_kept_by_pyplot_so_a_long_running_process_does_not_accumulate_them(holdout):
    """Training runs in long-lived processes (Dagster's code server, `make loop`'s rounds): a figure made through
    pyplot stays in its registry until closed; ours are plain Figures, freed with their last reference."""
    y, actions, uplift = holdout
    scores = multi_action_qini(y, actions, uplift, TREATMENTS, "no_action")
    rows = (actions == TREATMENTS[0]) | (actions == "no_action")
    table = uplift_calibration(y[rows], (actions[rows] == TREATMENTS[0]).astype(int), 3 * uplift[rows, 0])
    before = plt.get_fignums()
    figures = [qini_figure(y, actions, uplift, TREATMENTS, "no_action", scores),
               uplift_curve_figure(y, actions, uplift, TREATMENTS, "no_action", scores),
               calibration_figure({TREATMENTS[0]: table})]
    assert plt.get_fignums() == before
    assert all(_png(figure).startswith(b"\x89PNG") for figure in figures)
