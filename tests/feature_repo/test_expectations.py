import pandas as pd

from feature_repo.contracts import validate_events
from feature_repo.expectations import run_suites
from tests.feature_repo.factories import START, event, frame

AS_OF = START + pd.Timedelta(days=1)


def test_accepted_events_pass_every_suite():
    rows = [event(event_id=f"e{i}") for i in range(5)] + [event(event_id="bad", price=-1.0)]
    outcomes = run_suites(validate_events(frame(rows), AS_OF).accepted, AS_OF)
    assert [o.suite for o in outcomes] == ["add_to_cart_v1", "page_view_v1", "promo_exposure_v1", "purchase_v1"]
    assert all(o.success for o in outcomes)
    assert {o.suite: o.rows for o in outcomes}["page_view_v1"] == 5


def test_suite_catches_rows_that_bypassed_validation():
    rows = [event(event_id="a"), event(event_id="a"), event(event_id="b", price=-1.0, device="tv")]
    outcomes = {o.suite: o for o in run_suites(frame(rows), AS_OF)}
    page_view = outcomes["page_view_v1"]
    assert not page_view.success
    assert page_view.failed == {
        "expect_column_values_to_be_between(price)": 1,
        "expect_column_values_to_be_in_set(device)": 1,
        "expect_column_values_to_be_unique(event_id)": 2,
    }
