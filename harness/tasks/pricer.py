"""The pricer task's numbers: read a price out of a completion, then score a list of them.

Small and pure (no torch, no I/O) so every rule here is tested on hand-worked tables.

Conventions, chosen so a model that answers garbage can never look good:
- `parse_price` returns None for anything that is not a non-negative number; a negative "price" is
  nonsense for this task and counts as unparseable rather than being silently flipped or clipped.
- In `price_metrics`, an unparseable prediction (None) is scored as a prediction of $0 for MAE, RMSLE,
  hit rate, bands and r² (and is also counted in `unparseable_rate`). Dropping those rows instead would
  let a model that answers only the easy items score better than one that answers all of them.
- Bands follow the course's colours: green if the error is < $40 or < 20% of the true price, orange if
  < $80 or < 40%, red otherwise. `hit_rate` is the share of green rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

GREEN_ABS, GREEN_REL = 40.0, 0.2
ORANGE_ABS, ORANGE_REL = 80.0, 0.4

# A number, optionally signed and/or with a '$' before it. Thousands separators are only accepted in
# proper groups of three ("1,299.99") so that a list like "3,4" is not read as 34. A '-' counts as a
# sign only when it does not follow a letter or digit ("X-5" is a model name, not minus five).
_NUMBER = re.compile(
    r"""
    (?P<sign>(?<![\w.])-)?\s*(?:(?P<dollar>\$)\s*(?P<sign2>-)?\s*)?   # -$5, $-5, $ 5
    (?P<num>
        \d{1,3}(?:,\d{3})+(?:\.\d+)?              # 1,299 or 1,299.99
      | \d+(?:\.\d+)?                             # 129 or 129.00
      | \.\d+                                     # .99
    )
    """,
    re.VERBOSE,
)


def parse_price(text: str | None) -> float | None:
    """The price in `text`, or None when there is none (or it is negative).

    The first number written with a '$' wins ("Model X200, $45" -> 45.0); without one, the first number.
    `"$1,299.99"` -> 1299.99, `"  42"` -> 42.0, `"about 30 dollars"` -> 30.0, `"129.00"` -> 129.0,
    `""` / `"garbage"` / `"-5"` / `"$-5"` -> None.
    """
    if not text:
        return None
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = next((m for m in matches if m.group("dollar")), matches[0])
    if m.group("sign") or m.group("sign2"):
        return None
    value = float(m.group("num").replace(",", ""))
    # float() of a very long digit string can overflow to inf; that is not a usable price either.
    return value if math.isfinite(value) else None


def to_price(value: Any) -> float | None:
    """A positive finite price from a number or text like '$1,299.00'; None if there is none."""
    if isinstance(value, bool) or value is None:
        return None
    price = float(value) if isinstance(value, (int, float)) else parse_price(str(value))
    return price if price is not None and math.isfinite(price) and price > 0 else None


def _rel_error(err: float, true: float) -> float:
    """err/true, with a true price of 0 counting as 0% off only when the prediction is exact."""
    if true > 0:
        return err / true
    return 0.0 if err == 0 else math.inf


def band(pred: float | None, true: float) -> str:
    """'green', 'orange' or 'red' for one prediction (None counts as a prediction of $0)."""
    err = abs((0.0 if pred is None else pred) - true)
    rel = _rel_error(err, true)
    if err < GREEN_ABS or rel < GREEN_REL:
        return "green"
    if err < ORANGE_ABS or rel < ORANGE_REL:
        return "orange"
    return "red"


def price_metrics(predicted: Sequence[float | None], truth: Sequence[float]) -> dict[str, float]:
    """mae, rmsle, hit_rate, r2, unparseable_rate (rates as fractions in [0, 1]) and green/orange/red counts.

    RMSLE = sqrt(mean((log1p(pred) - log1p(true))²)); negative numbers (possible only when a caller passes
    them, parse_price never returns one) are clipped to 0 first because log1p is undefined below -1.
    r² = 1 - SS_res/SS_tot; when every true price is the same SS_tot is 0 and, like scikit-learn's
    `force_finite`, r² is 1.0 for a perfect fit and 0.0 otherwise (never NaN: it may be an objective).
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions but {len(truth)} true prices")
    if not truth:
        raise ValueError("no prices to score")
    unparseable = np.array([p is None for p in predicted])
    pred = np.array([0.0 if p is None else float(p) for p in predicted], dtype=np.float64)
    true = np.asarray(truth, dtype=np.float64)
    err = np.abs(pred - true)

    log_diff = np.log1p(np.clip(pred, 0.0, None)) - np.log1p(np.clip(true, 0.0, None))
    ss_res = float(np.sum((true - pred) ** 2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:
        r2 = 1.0 if ss_res == 0 else 0.0

    bands = [band(None if u else p, t) for p, t, u in zip(pred, true, unparseable, strict=True)]
    return {
        "mae": float(err.mean()),
        "rmsle": float(np.sqrt(np.mean(log_diff**2))),
        "hit_rate": bands.count("green") / len(bands),
        "r2": float(r2),
        "unparseable_rate": float(unparseable.mean()),
        "green": float(bands.count("green")),
        "orange": float(bands.count("orange")),
        "red": float(bands.count("red")),
    }
