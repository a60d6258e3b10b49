"""harness.tasks.pricer: parsing rules and every price metric checked against hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from harness.tasks.pricer import band, parse_price, price_metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,299.99", 1299.99),
        ("  42", 42.0),
        ("about 30 dollars", 30.0),
        ("129.00", 129.0),
        ("Price is $12.50.", 12.5),  # trailing full stop is not a decimal part
        ("$ 7", 7.0),
        (".99", 0.99),
        ("Model X200, now $45", 45.0),  # a '$' amount beats an earlier bare number
        ("X-5", 5.0),  # a hyphen inside a word is not a minus sign
        ("1234,567", 1234.0),  # not a valid thousands grouping: stop at the comma
        ("3,4", 3.0),
        ("", None),
        (None, None),
        ("garbage", None),
        ("$", None),
        ("-5", None),  # a negative price is nonsense: unparseable, not flipped or clipped
        ("$-5", None),
        ("-$5", None),
        ("9" * 400, None),  # overflows float to inf
    ],
)
def test_parse_price(text: str | None, expected: float | None) -> None:
    got = parse_price(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pred", "true", "expected"),
    [
        (110.0, 100.0, "green"),  # $10 off
        (139.99, 100.0, "green"),  # just under $40
        (140.0, 100.0, "orange"),  # exactly $40 off, 40%: neither green rule holds (both are strict)
        (1150.0, 1000.0, "green"),  # $150 off but 15%
        (179.0, 100.0, "orange"),  # $79
        (180.0, 100.0, "red"),  # $80 and 80%
        (1350.0, 1000.0, "orange"),  # $350 but 35%
        (1400.0, 1000.0, "red"),  # 40% exactly
        (None, 30.0, "green"),  # unparseable = $0, and $30 off is still < $40
        (None, 300.0, "red"),
        (0.0, 0.0, "green"),
        (100.0, 0.0, "red"),  # relative error to a $0 price is infinite
    ],
)
def test_band(pred: float | None, true: float, expected: str) -> None:
    assert band(pred, true) == expected


def test_price_metrics_on_a_small_table() -> None:
    truth = [100.0, 50.0, 1000.0, 10.0, 200.0]
    pred = [110.0, None, 700.0, 10.0, 50.0]
    # errors (None as $0): 10, 50, 300, 0, 150
    # bands: green, orange (50 < 80), orange (30%), green, red ($150, 75%)
    m = price_metrics(pred, truth)
    assert m["mae"] == pytest.approx((10 + 50 + 300 + 0 + 150) / 5)
    rmsle = math.sqrt(
        (
            math.log(111 / 101) ** 2
            + math.log(1 / 51) ** 2
            + math.log(701 / 1001) ** 2
            + 0
            + math.log(51 / 201) ** 2
        )
        / 5
    )
    assert m["rmsle"] == pytest.approx(rmsle)
    assert m["hit_rate"] == pytest.approx(2 / 5)
    assert (m["green"], m["orange"], m["red"]) == (2.0, 2.0, 1.0)
    assert m["unparseable_rate"] == pytest.approx(1 / 5)
    # mean(truth) = 272; SS_tot = 172² + 222² + 728² + 262² + 72² = 682680; SS_res = 10² + 50² + 300² + 150²
    assert m["r2"] == pytest.approx(1 - 115100 / 682680)


def test_garbage_model_cannot_score_well() -> None:
    truth = [100.0, 250.0, 80.0]
    m = price_metrics([None, None, None], truth)
    assert m["unparseable_rate"] == 1.0
    assert m["mae"] == pytest.approx(sum(truth) / 3)  # scored as $0, not skipped
    assert m["hit_rate"] == 0.0
    assert m["r2"] < 0


def test_perfect_predictions() -> None:
    m = price_metrics([5.0, 20.0, 300.0], [5.0, 20.0, 300.0])
    assert (m["mae"], m["rmsle"], m["hit_rate"], m["r2"], m["unparseable_rate"]) == (0.0, 0.0, 1.0, 1.0, 0.0)


def test_r2_with_constant_truth_is_finite() -> None:
    assert price_metrics([10.0, 10.0], [10.0, 10.0])["r2"] == 1.0
    assert price_metrics([9.0, 10.0], [10.0, 10.0])["r2"] == 0.0


def test_negative_predictions_are_clipped_for_rmsle() -> None:
    m = price_metrics([-5.0], [9.0])
    assert m["rmsle"] == pytest.approx(math.log(10.0))
    assert m["mae"] == pytest.approx(14.0)  # MAE uses the number as given


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1"):
        price_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no prices"):
        price_metrics([], [])
