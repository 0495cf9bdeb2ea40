import pandas as pd
import pytest

from feature_repo.contracts import CONTRACTS, validate_events
from tests.feature_repo.factories import START, event, frame

AS_OF = START + pd.Timedelta(days=2)


def purchase(**fields) -> dict:
    return event(**{"event_type": "purchase", "revenue": 9.0, "action_id": "no_action", **fields})


def exposure(**fields) -> dict:
    defaults = dict(event_type="promo_exposure", item_id=None, category_id=None, price=None, action_id="pct10_sitewide",
                    propensity=0.25, surface="home")
    return event(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (event(event_id=None), "event_id.required"),
        (event(event_type="pageview_v0"), "event_type.known"),
        (event(event_version=2), "event_version.supported"),
        (event(user_id=None), "user_id.required"),
        (event(user_id=-4), "user_id.range"),
        (event(category_id=8), "category_id.range"),
        (event(price=0.0), "price.range"),
        (event(device="tv"), "device.allowed"),
        (event(ts=AS_OF + pd.Timedelta(minutes=6)), "ts.not_future"),
        (purchase(revenue=-1.0), "revenue.range"),
        (purchase(revenue=None), "revenue.required"),
        (exposure(propensity=0.0), "propensity.range"),
        (exposure(propensity=1.5), "propensity.range"),
        (exposure(action_id=None), "action_id.required"),
        (exposure(surface=None), "surface.required"),
    ],
)
def test_each_broken_rule_is_quarantined_with_its_name(row, rule):
    result = validate_events(frame([event(event_id="ok"), row]), AS_OF)
    assert list(result.quarantined["rule"]) == [rule]
    assert result.rule_counts == {rule: 1}
    assert list(result.accepted["event_id"]) == ["ok"]
    assert result.quarantined["reason"].str.len().gt(0).all()


def test_valid_events_of_every_type_are_accepted_and_typed():
    rows = [event(event_id="a"), event(event_id="b", event_type="add_to_cart"), purchase(event_id="c"),
            exposure(event_id="d", propensity=1.0), event(event_id="e", ts=AS_OF + pd.Timedelta(minutes=4))]
    result = validate_events(frame(rows), AS_OF)
    assert result.quarantined.empty
    assert sorted(result.accepted["event_id"]) == ["a", "b", "c", "d", "e"]
    assert str(result.accepted["user_id"].dtype) == "Int64"
    assert str(result.accepted["ts"].dtype) == "datetime64[ns, UTC]"


def test_duplicates_keep_the_first_copy_and_quarantine_the_rest():
    rows = [event(event_id="x", price=1.0), event(event_id="x", price=2.0), event(event_id="x", price=3.0)]
    result = validate_events(frame(rows), AS_OF)
    assert list(result.accepted["price"]) == [1.0]
    assert list(result.quarantined["rule"]) == ["event_id.unique", "event_id.unique"]


def test_a_bad_copy_does_not_shadow_a_good_one():
    rows = [event(event_id="x", user_id=None), event(event_id="x")]
    result = validate_events(frame(rows), AS_OF)
    assert len(result.accepted) == 1 and list(result.quarantined["rule"]) == ["user_id.required"]


def test_first_broken_rule_wins_and_counts_add_up():
    rows = [event(event_id=f"e{i}") for i in range(20)] + [
        event(event_id=None, user_id=None),
        purchase(event_id="p", revenue=-3.0, category_id=99),
    ]
    result = validate_events(frame(rows), AS_OF)
    assert result.n_in == 22 == len(result.accepted) + len(result.quarantined)
    assert dict(zip(result.quarantined["event_id"].fillna("<none>"), result.quarantined["rule"])) == {
        "<none>": "event_id.required",
        "p": "category_id.range",
    }


def test_wrong_types_are_quarantined_not_crashing():
    rows = [event(event_id="a")]
    raw = frame(rows).astype({"user_id": object, "price": object})
    raw.loc[0, "price"] = "ten"
    result = validate_events(raw, AS_OF)
    assert list(result.quarantined["rule"]) == ["price.type"]


def test_missing_columns_is_an_error_naming_them():
    with pytest.raises(ValueError, match=r"raw events lack columns \['propensity'\]"):
        validate_events(frame([event()]).drop(columns=["propensity"]), AS_OF)


def test_contracts_are_versioned_per_event_type():
    assert set(CONTRACTS) == {("page_view", 1), ("add_to_cart", 1), ("purchase", 1), ("promo_exposure", 1)}
    units = {f.name: f.unit for f in CONTRACTS[("purchase", 1)].fields if f.unit}
    assert units["revenue"] == "currency paid, after discount"
