"""The pricer task: a product description in, its price out. Everything the task knows lives here: the
prompt and its formatting, reading a price out of an answer and scoring a list of them, the baselines,
the reward function, and the `Task` the registry hands out (harness.tasks.get("pricer")).

The numbers are small and pure (no torch, no I/O) so every rule here is tested on hand-worked tables.

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

import hashlib
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.builtin.pricer_data import QUESTION, RESPONSE
from harness.core import badrows
from harness.errors import DataError
from harness.sweepfile.schema import DatasetConfig
from harness.tasks.baselines import Row as Item
from harness.tasks.baselines import register
from harness.tasks.rewards import completion_text
from harness.tasks.task import TEXT_METRICS, Formatter, Row, Scores, Task, add

NAME = "pricer"
METRICS = ("mae", "rmsle", "hit_rate", "r2", "unparseable_rate")
"""What price_metrics reports, besides the text metrics every task has."""

# The prompt: the question, the description, then the answer's start for the model to complete. Its words
# are the builtin data's (the tiny base's tokenizer is trained on them; builtin sits below the tasks).
PROMPT = QUESTION + "\n\n{description}\n\n" + RESPONSE

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
    price = read_price(value)
    return price if isinstance(price, float) else None


def read_price(value: Any, column: str = "price") -> float | str:
    """A positive finite price from a number or text like '$1,299.00', or why `value` is none: a short
    reason naming `column` (harness.core.badrows). A list or dict is never a price, even with a number in
    it, and neither is text that writes one out ('[45.0]')."""
    if _blank(value):
        return f"no {column}"
    if isinstance(value, str):
        value = None if value.strip().startswith(("[", "{")) else parse_price(value)
        if value is None:
            return f"{column} not a number"
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{column} is {badrows.kind(value)}"
    try:
        price = float(value)
    except (OverflowError, ValueError):
        price = math.inf
    if not math.isfinite(price):
        return f"{column} is {'NaN' if math.isnan(price) else 'infinite'}"
    return price if price > 0 else f"{column} not positive"


def row_price(row: Row, column: str, answer: Any) -> float | str:
    """A row's true price: its price column, else the number its answer states, or why it has none. A
    price column holding something that is not a price is the reason, not a cue to look elsewhere."""
    value = row.get(column)
    if not _blank(value) and not (isinstance(value, float) and math.isnan(value)):
        return read_price(value, column)
    price = to_price(answer) if isinstance(answer, str) else None
    return f"no {column} (and no price in the answer)" if price is None else price


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


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


# ----------------------------------------------------------------------------------------------------
# Data: the prompt, the builtin data, a hub/local dataset's description and price columns


def format_prompt(description: str) -> str:
    """The course-exercise prompt; the model completes it with the price."""
    return PROMPT.format(description=description.strip())


def format_completion(price: float) -> str:
    """Whole dollars with a fixed `.00`, so every completion has the same shape (e.g. `129.00`)."""
    return f"{round(price)}.00"


def builtin_splits(trainer: str) -> dict[str, list[Row]]:
    """The builtin data (harness.builtin.pricer_data) as prompt/completion/price rows, whatever the task;
    for dpo the same items as preference pairs."""
    from harness.builtin.pricer_data import pricer_splits

    raw = {
        name: [
            {
                "prompt": format_prompt(r["text"]),
                "completion": format_completion(r["price"]),
                "price": r["price"],
            }
            for r in rows
        ]
        for name, rows in pricer_splits(seed=0).items()
    }
    return {k: preference_pairs(rows) for k, rows in raw.items()} if trainer == "dpo" else raw


# Factors for the builtin pairs' wrong price: far enough to be in the red band (>= 40% off).
WRONG_FACTORS = (0.3, 0.45, 0.55, 1.7, 2.0, 2.6)


def wrong_price(price: float, key: str) -> float:
    """A plausible wrong price for `price`, fixed by `key` (a hash: the same on every run and machine), and
    always outside the green and orange bands (> $80 and > 40% off), so it is truly worse."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    wrong = price * WRONG_FACTORS[h % len(WRONG_FACTORS)]
    if abs(wrong - price) <= 80:  # cheap items: a factor alone stays close in dollars
        wrong = price + 81 + h % 120 if h % 2 or price < 160 else price - 81 - h % 40
    return float(max(1, round(wrong)))


def preference_pairs(rows: list[Row]) -> list[Row]:
    """prompt/completion/price rows -> preference rows: chosen is the true price, rejected a wrong one."""
    return [
        {
            **r,
            "chosen": r["completion"],
            "rejected": format_completion(wrong_price(float(r["price"]), r["prompt"])),
        }
        for r in rows
    ]


def _formatter(text_column: str, price_column: str) -> Formatter:
    def fmt(row: Row) -> Row | str:
        price = read_price(row.get(price_column), price_column)
        if isinstance(price, str):
            return price
        text = row.get(text_column)
        if _blank(text) or (isinstance(text, float) and math.isnan(text)):
            return f"empty {text_column}"
        if isinstance(text, (Mapping, list, tuple, bytes)):
            return f"{text_column} is {badrows.kind(text)}"
        return {"prompt": format_prompt(str(text)), "completion": format_completion(price), "price": price}

    return fmt


def with_prices(rows: list[Row | str], price_column: str) -> list[Row | str]:
    """Preference or prompt-only rows: the true price from the price column, else the reference answer
    (GRPO's price_accuracy and the task metrics need it); a row without one becomes the reason."""
    out: list[Row | str] = []
    for row in rows:
        price = row if isinstance(row, str) else row_price(row, price_column, row.get("completion"))
        out.append(price if isinstance(price, str) else {**row, "price": price})  # type: ignore[dict-item]
    return out


# ----------------------------------------------------------------------------------------------------
# Scoring generations


def score(predictions: Sequence[str], references: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Scores:
    """price_metrics, and per row: price_pred (None when unparseable), price_true, abs_error (with an
    unparseable answer taken as $0, as in the corpus metrics) and band. The true price is the row's
    `price` column when present, else the price parsed from the reference."""
    pred_prices = [parse_price(p) for p in predictions]
    true_prices = [
        _true_price(i, row, ref) for i, (row, ref) in enumerate(zip(rows, references, strict=True))
    ]
    per_row: list[dict[str, Any]] = [
        {
            "price_pred": p,
            "price_true": t,
            "abs_error": abs((0.0 if p is None else p) - t),
            "band": band(p, t),
        }
        for p, t in zip(pred_prices, true_prices, strict=True)
    ]
    return price_metrics(pred_prices, true_prices), per_row


def _true_price(i: int, row: Mapping[str, Any], reference: str) -> float:
    value = row.get("price")
    if value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"row {i}: price {value!r} is not a number") from None
    parsed = parse_price(reference)
    if parsed is None:
        raise DataError(f"row {i}: no `price` column and no price in the reference {reference!r}")
    return parsed


# ----------------------------------------------------------------------------------------------------
# Baselines (harness.tasks.baselines): constants from the train split, then a bag-of-words model


def _price_text(value: float) -> str:
    """A price as a model would write it; positional and round-tripping, so parse_price reads it back
    exactly and a baseline's mae can be recomputed from the answers."""
    return str(np.format_float_positional(max(float(value), 0.0), trim="-"))


@register(NAME, "mean", about="the train split's mean price, for every item")
def _mean(train: Sequence[Item], rows: Sequence[Item]) -> list[str]:
    prices = [float(r["price"]) for r in train]
    return [_price_text(sum(prices) / len(prices))] * len(rows)


@register(NAME, "median", about="the train split's median price, for every item")
def _median(train: Sequence[Item], rows: Sequence[Item]) -> list[str]:
    return [_price_text(float(np.median([float(r["price"]) for r in train])))] * len(rows)


@register(NAME, "bag_of_words", about="word counts of the prompt -> ridge regression on log price")
def _bag_of_words(train: Sequence[Item], rows: Sequence[Item]) -> list[str]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(CountVectorizer(), Ridge(alpha=1.0))
    model.fit([r["prompt"] for r in train], np.log1p([float(r["price"]) for r in train]))
    return [_price_text(v) for v in np.expm1(model.predict([r["prompt"] for r in rows]))]


# ----------------------------------------------------------------------------------------------------
# Reward function (GRPO)

# price_accuracy's grades, by the error bands (band): an answer that names no number at all earns less
# than any number, so "say a price" is learned before "say the right price".
BAND_REWARD = {"green": 1.0, "orange": 0.5, "red": 0.1}
UNPARSEABLE_REWARD = 0.0


def price_accuracy(
    prompts: Sequence[Any], completions: Sequence[Any], price: Sequence[float], **_: Any
) -> list[float]:
    """1.0 in the green band (within $40 or 20%), 0.5 orange (within $80 or 40%), 0.1 red; 0.0 when the
    completion names no price. Needs a `price` column (the builtin pricer data has one)."""
    out = []
    for completion, true in zip(completions, price, strict=True):
        guess = parse_price(completion_text(completion))
        out.append(UNPARSEABLE_REWARD if guess is None else BAND_REWARD[band(guess, float(true))])
    return out


# ----------------------------------------------------------------------------------------------------
# The task


class Pricer(Task):
    def score(
        self, predictions: Sequence[str], references: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> Scores:
        return score(predictions, references, rows)

    def formatter(self, ds: DatasetConfig, columns: Sequence[str]) -> Formatter | None:
        if ds.text_column in columns and ds.price_column in columns:
            return _formatter(ds.text_column, ds.price_column)
        return None

    def columns_hint(self, ds: DatasetConfig) -> str:
        return f"{ds.text_column!r} and {ds.price_column!r} (pricer), "

    def label_of(self, item: Row, row: Row, ds: DatasetConfig) -> float | str:
        # The truth: the formatter's, else the price column, else the number in the completion.
        if "price" in item:
            return read_price(item["price"])
        return row_price(row, ds.price_column, item["completion"])

    def labelled(self, rows: list[Row | str], ds: DatasetConfig) -> list[Row | str]:
        return with_prices(rows, ds.price_column)

    def answer_value(self, answer: str) -> float | None:
        return parse_price(answer)


TASK = add(
    Pricer(
        name=NAME,
        metrics=TEXT_METRICS + METRICS,
        headline=("mae", "r2", "hit_rate"),
        table=("mae", "rmsle", "hit_rate", "r2"),
        reference=("mae", "median"),
        lower_is_better=frozenset({"mae", "rmsle", "unparseable_rate"}),
        label="price",
        rewards={"price_accuracy": price_accuracy},
    )
)
