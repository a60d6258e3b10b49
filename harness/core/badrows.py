"""Rows a dataset cannot use (`dataset.bad_rows`): gathered over the whole dataset, so one error names them
all, or, with `bad_rows: drop`, left out and counted (study user attr `dropped_rows`).

A bad row is one whose answer is empty or missing, whose label is not a number, or whose values are of the
wrong type (a list where text belongs). harness.trial.datasets finds them while it formats the rows; this
module words what it found. Rows are numbered per split from 1, in the order the file holds them (a CSV's
header is not a row), so "train row 7" is the 7th row a user counts. No torch, pandas or datasets here:
the study side prints the start-up line from what the study stored.

The figures stored (a plain dict, JSON-ready): `rows` (rows read), `dropped` (rows left out) and
`reasons` ({reason: rows}, most common first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import DataError

SHOWN = 20
"""Bad rows an error names one by one; the rest are counted by reason."""
NUMBERING = "row N is the Nth row of its split, counting from 1; a CSV header is not a row"


@dataclass(frozen=True)
class BadRow:
    split: str  # the source's split name (a single file's rows are its `train` split)
    number: int  # 1-based, as a user counts the split's rows
    reason: str  # short and categorical ("empty chosen"), so reasons can be counted


@dataclass
class BadRows:
    """What a dataset's formatting found: how many rows it read, and which of them cannot be used."""

    rows: int = 0
    found: list[BadRow] = field(default_factory=list)

    def add(self, split: str, index: int, reason: str) -> None:
        """Row `index` (0-based, as the rows are held) of `split` cannot be used, because `reason`."""
        self.found.append(BadRow(split, index + 1, reason))

    def __bool__(self) -> bool:
        return bool(self.found)

    def reasons(self) -> Counter[str]:
        return Counter(b.reason for b in self.found)

    def error(self, where: str) -> DataError:
        """One paragraph: the first SHOWN bad rows by reason, the rest counted, and the two ways out."""
        n = len(self.found)
        head = (
            f"no usable rows: all {n} rows are bad"
            if n >= self.rows
            else f"{n} of {self.rows} rows cannot be used"
        )
        groups: dict[str, dict[str, list[int]]] = {}  # reason -> split -> row numbers, in file order
        for b in self.found[:SHOWN]:
            groups.setdefault(b.reason, {}).setdefault(b.split, []).append(b.number)
        shown = "; ".join(
            f"{reason}: " + ", ".join(_rows(split, numbers) for split, numbers in splits.items())
            for reason, splits in groups.items()
        )
        rest = f"; and {n - SHOWN} more ({n} in all: {tally(self.reasons())})" if n > SHOWN else ""
        fix = (
            "fix or remove them"
            if n >= self.rows
            else "fix or remove them, or set dataset.bad_rows=drop to train without them"
        )
        return DataError(f"{where}: {head} ({NUMBERING}): {shown}{rest}. {fix.capitalize()}.")

    def figures(self) -> dict[str, Any]:
        """The user attr `dropped_rows` for a run that left these rows out."""
        return {"rows": self.rows, "dropped": len(self.found), "reasons": dict(self.reasons().most_common())}


def _rows(split: str, numbers: list[int]) -> str:
    return f"{split} row{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"


def tally(reasons: Mapping[str, int]) -> str:
    """`{"empty completion": 2, "price not a number": 1}` -> `2 empty completion, 1 price not a number`."""
    ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{count} {reason}" for reason, count in ordered)


def line(name: str, figures: Mapping[str, Any]) -> str | None:
    """The start-up line of a run that dropped rows (None when it dropped none)."""
    dropped = figures.get("dropped") or 0
    if not dropped:
        return None
    why = tally(figures.get("reasons") or {})
    return f"{name}: dropped {dropped} of {figures.get('rows', '?')} rows ({why})"


def kind(value: Any) -> str:
    """A value's type in words, for reasons like 'price is a list'."""
    if isinstance(value, Mapping):
        return "a dict"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, (int, float)):
        return "a number"
    return "text" if isinstance(value, str) else f"a {type(value).__name__}"
