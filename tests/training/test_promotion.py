import pytest

from training.promotion import promotion_gate


def test_first_model_passes_when_calibrated():
    result = promotion_gate(0.01, None, margin=0.005, calibration_failures=[])
    assert result.passed and result.reasons == ()


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "passed"),
    [(0.030, 0.020, 0.005, True), (0.0251, 0.020, 0.005, True), (0.025, 0.020, 0.005, False),
     (0.024, 0.020, 0.005, False), (0.010, 0.020, 0.0, False), (0.020, 0.020, 0.0, False)],
)
def test_challenger_must_beat_champion_by_the_margin(challenger, champion, margin, passed):
    assert promotion_gate(challenger, champion, margin, calibration_failures=[]).passed is passed


def test_worse_challenger_is_refused_with_the_figures():
    result = promotion_gate(0.010, 0.020, 0.005, calibration_failures=[])
    assert result.reasons == ("challenger holdout Qini 0.0100 < champion 0.0200 + margin 0.0050: not above",)


def test_a_tie_and_a_retrain_on_the_champions_dataset_are_refused_with_their_reasons():
    result = promotion_gate(0.020, 0.020, 0.0, calibration_failures=[], same_dataset_as_champion=True)
    assert result.reasons == (
        "challenger holdout Qini 0.0200 = champion 0.0200 + margin 0.0000: not above",
        "trained on the champion's dataset (same dataset hash): a retrain on unchanged data",
    )
    assert not promotion_gate(0.9, 0.020, 0.0, calibration_failures=[], same_dataset_as_champion=True).passed


def test_uncalibrated_challenger_is_refused_even_if_it_ranks_better():
    result = promotion_gate(0.5, 0.0, 0.0, calibration_failures=["slope 0.300 (se 0.120) outside [0.8, 1.25]"])
    assert not result.passed and not result.calibration_passed
    assert result.reasons == ("uplift calibration: slope 0.300 (se 0.120) outside [0.8, 1.25]",)
