import pandas as pd
import pytest

from feature_repo.contracts import CONTRACTS, validate_events
from tests.feature_repo.factories import START, event, exposure, frame, purchase

AS_OF = START + pd.Timedelta(days=2)


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


NOT_INT = "user_id is not an integer: send a JSON number without a fraction (not text, not true/false)"
NOT_NUMBER = "price is not a number: send a JSON number (not text, not true/false)"


@pytest.mark.parametrize(
    ("field", "value", "rule", "reason"),
    [
        ("user_id", True, "user_id.type", NOT_INT),  # True is not user 1
        ("user_id", "12", "user_id.type", NOT_INT),  # text is not a number
        ("user_id", 1.5, "user_id.type", "user_id is not an integer"),
        ("user_id", 2**53 + 1, "user_id.range", "user_id must be <= 9007199254740991"),  # would read as 2^53
        ("user_id", float(2**53), "user_id.range", "user_id must be <= 9007199254740991"),
        ("user_id", 10**400, "user_id.range", "user_id must be <= 9007199254740991"),  # pandas cannot convert it
        ("item_id", False, "item_id.type", NOT_INT.replace("user_id", "item_id")),
        ("price", 9.2e12, "price.range", "price must be <= 1000000.0"),  # used to overflow its int64 tile
        ("price", 1e300, "price.range", "price must be <= 1000000.0"),
        ("price", float("inf"), "price.range", "price must be <= 1000000.0"),
        ("price", "12.5", "price.type", NOT_NUMBER),
        ("price", True, "price.type", NOT_NUMBER),
    ],
)
def test_numbers_are_json_numbers_within_bounds_in_both_validators(field, value, rule, reason):
    from feature_repo.record_validation import validate_records

    rows = [event(event_id="ok"), event(event_id="bad", **{field: value})]
    batch = validate_events(pd.DataFrame(rows, dtype=object), AS_OF)  # values as sent, as the stream sees them
    stream = validate_records(rows, AS_OF)
    for result in (batch, stream):
        assert result.quarantined[["event_id", "rule", "reason"]].values.tolist() == [["bad", rule, reason]]
        assert list(result.accepted["event_id"]) == ["ok"]


def test_a_whole_number_sent_as_a_float_is_that_integer_and_the_largest_safe_id_is_accepted():
    rows = [event(event_id="a", user_id=7.0), event(event_id="b", user_id=2**53 - 1),
            purchase(event_id="c", revenue=1_000_000)]
    result = validate_events(pd.DataFrame(rows, dtype=object), AS_OF)
    assert result.quarantined.empty
    assert result.accepted.set_index("event_id")["user_id"].to_dict() == {"a": 7, "b": 2**53 - 1, "c": 1}
