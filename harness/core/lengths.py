"""How the rows fit max_seq_length: figures per split, measured where the rows are tokenized (trial.prepare),
stored in the study (user attr `data_lengths`), and the text that says what happened to the long rows.

The figures of one split (a plain dict, JSON-ready):
  rows            rows in the split
  shortened       rows used, but not whole: prompt shortened (keep_answer) or sequence cut (right)
  dropped         rows used nowhere: no completion token fits (drop, or the completion alone is too long)
  median, p95, max  tokens of a whole row (prompt + completion + EOS), before any truncation
  max_seq_length, truncation  the settings they were fitted with

No torch, no tokenizer: `lines` runs on what the study stored (`sweep report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Encoded(Protocol):
    """What the figures read of a tokenized row (harness.trial.tokens.Encoded)."""

    @property
    def length(self) -> int: ...
    @property
    def shortened(self) -> bool: ...
    @property
    def has_completion(self) -> bool: ...


SUGGEST_ABOVE = 0.10
"""Above this share of a split's rows shortened or dropped, the line suggests a max_seq_length."""


def summary(encoded: Sequence[Encoded], max_seq_length: int, truncation: str) -> dict[str, Any]:
    """The figures of one split from its tokenized rows (see the module docstring)."""
    lengths = sorted(e.length for e in encoded)
    return {
        "rows": len(encoded),
        "shortened": sum(e.shortened for e in encoded),
        "dropped": sum(not e.has_completion for e in encoded),
        "median": _rank(lengths, 0.5),
        "p95": _rank(lengths, 0.95),
        "max": lengths[-1] if lengths else 0,
        "max_seq_length": max_seq_length,
        "truncation": truncation,
    }


def _rank(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile: at least a share q of the values are <= it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0


def suggested_length(figures: Mapping[str, Mapping[str, Any]]) -> int:
    """A max_seq_length that fits whole at least 95% of the rows of every split (rounded up to 8)."""
    p95 = max((f["p95"] for f in figures.values()), default=0)
    return 8 * math.ceil(p95 / 8)


_WHAT = {
    "keep_answer": "prompts shortened",
    "right": "cut from the right, answers lose their end",
    "drop": "rows dropped",
}


def lines(name: str, figures: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line: the length distribution and what happened to rows over max_seq_length, per split, e.g.
    `pricer: 964 of 4000 train, 127 of 500 validation, 113 of 500 test rows exceed max_seq_length=96
    (train: median 92, p95 102, max 113 tokens): prompts shortened (truncation: keep_answer);
    max_seq_length=104 fits 95% of rows`. Empty when there are no figures."""
    if not figures:
        return []
    first_split, first = next(iter(figures.items()))
    limit, mode = first["max_seq_length"], first["truncation"]
    dist = f"{first_split}: median {first['median']}, p95 {first['p95']}, max {first['max']} tokens"
    over = {s: f["shortened"] + f["dropped"] for s, f in figures.items()}
    if not any(over.values()):
        total = sum(f["rows"] for f in figures.values())
        return [f"{name}: all {total} rows fit max_seq_length={limit} ({dist})"]
    counts = ", ".join(f"{over[s]} of {f['rows']} {s}" for s, f in figures.items())
    shortened = sum(f["shortened"] for f in figures.values())
    dropped = sum(f["dropped"] for f in figures.values())
    what = []
    if shortened:
        what.append(_WHAT[mode])
    if dropped and mode != "drop":
        why = "no answer token left" if mode == "right" else "the answer alone does not fit"
        what.append(f"{dropped} rows dropped ({why})")
    elif dropped:
        what.append(_WHAT[mode])
    line = f"{name}: {counts} rows exceed max_seq_length={limit} ({dist}): {', '.join(what)}"
    line += f" (truncation: {mode})"
    if any(over[s] > SUGGEST_ABOVE * f["rows"] for s, f in figures.items()):
        line += f"; max_seq_length={suggested_length(figures)} fits 95% of rows"
    return [line]
