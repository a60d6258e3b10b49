"""Rung agreement: does a trial's value at an early eval rank it the way its final value does?

Pruning rests on that assumption. For every eval step, over the trials that reached it and ran to the
end (COMPLETE, with intermediate values): Spearman's rho between the value at that step and the trial's
value (its best eval), with n. rho near 1: the step ranks trials as the end does, pruning there loses
little; near 0: pruning there is close to guessing. Computed from stored intermediate values only, so it
works on any study. Pure Python (no pandas/optuna): results/ shows it, study/ (min_iter: auto) uses it.

rho does not depend on the objective's direction: the step's value and the final value are the same
metric, so ranking both ascending or both descending gives the same coefficient.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIN_TRIALS = 4
"""Finished trials a rho needs before it is trusted: the warning below it; `min_iter: auto` prunes nothing
until that many trials finished."""
WARN_BELOW = 0.5
"""A first rung whose rho is below this is warned about: its ranking is close to a coin toss."""
MIN_RHO_N = 3  # fewer pairs have no rank correlation worth a number

Curve = tuple[Mapping[int, float], float]
"""One finished trial: its intermediate values {step: value} and its final value."""


@dataclass(frozen=True)
class StepAgreement:
    step: int
    rho: float | None  # None: fewer than 3 trials, or one side all ties
    n: int
    rung: bool = False  # a step where the configured pruner judges trials


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank (what Spearman's rho with ties uses)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation of the average ranks; None when n < 3 or a side has a single rank."""
    if len(xs) != len(ys) or len(xs) < MIN_RHO_N:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def by_step(curves: Iterable[Curve], rungs: Iterable[int] = ()) -> list[StepAgreement]:
    """rho and n at every step any finished trial reported, in step order."""
    pairs: dict[int, tuple[list[float], list[float]]] = {}
    for values, final in curves:
        if not _finite(final):
            continue
        for step, v in values.items():
            if _finite(v):
                xs, ys = pairs.setdefault(int(step), ([], []))
                xs.append(float(v))
                ys.append(float(final))
    marked = set(rungs)
    return [
        StepAgreement(step, spearman(xs, ys), len(xs), step in marked)
        for step, (xs, ys) in sorted(pairs.items())
    ]


def first_clearing(table: Sequence[StepAgreement], threshold: float) -> StepAgreement | None:
    """The earliest step whose rho clears `threshold` on at least MIN_TRIALS trials (min_iter: auto)."""
    for row in table:
        if row.n >= MIN_TRIALS and row.rho is not None and row.rho >= threshold:
            return row
    return None


def rung_steps(
    terminate: Mapping[str, Any], every: int, steps: Sequence[int], auto_rung: int | None = None
) -> list[int]:
    """Which of `steps` (the reported steps, sorted) the pruner judges trials at.

    `terminate` is the sweep's early_terminate (as stored in the study's config); `every` is the steps per
    resource unit (budget.eval_steps, or 1 when trials report by eval index). Successive halving and
    hyperband judge at the first report at or past min_resource x eta**k (hyperband's brackets share those
    rungs); median at every report from n_warmup_steps on; `min_iter: auto` at the chosen first rung
    (`auto_rung`, in reported steps) x eta**k, none before one is chosen."""
    kind = terminate.get("type", "successive_halving")
    if kind == "none" or not steps:
        return []
    if kind == "median":
        warmup = int(terminate.get("n_warmup_steps", 0)) * every
        return [s for s in steps if s >= warmup]
    eta = max(2, int(terminate.get("eta", 3)))
    first: int | None
    if terminate.get("min_iter", 1) == "auto":
        first = auto_rung
    else:
        first = int(terminate.get("min_iter", 1)) * every
    if first is None or first <= 0:
        return []
    out: list[int] = []
    resource = first
    while resource <= steps[-1]:
        hit = next(s for s in steps if s >= resource)
        if hit not in out:
            out.append(hit)
        resource *= eta
    return out


def warning(table: Sequence[StepAgreement], unit: str = "step") -> str | None:
    """The first rung's warning: rho below WARN_BELOW or fewer than MIN_TRIALS trials behind it."""
    first = next((row for row in table if row.rung), None)
    if first is None:
        return None
    if first.n < MIN_TRIALS:
        why = f"only {first.n} finished trial(s) behind it"
    elif first.rho is None or first.rho < WARN_BELOW:
        why = f"rho {_rho(first.rho)}"
    else:
        return None
    return f"pruning at {unit} {first.step} is close to guessing here ({why}): raise `min_iter`"


def line(table: Sequence[StepAgreement], unit: str = "step", threshold: float = 0.7) -> str | None:
    """One line for `sweep status` and the end of a run: the first rung's rho, and the earliest step that
    agrees well; None when no trial finished with intermediate values."""
    if not table:
        return None
    first = next((row for row in table if row.rung), None)
    head = (
        f"rung agreement: first rung {unit} {first.step} rho {_rho(first.rho)} (n={first.n})"
        if first
        else "rung agreement: no rung (nothing pruned)"
    )
    good = first_clearing(table, threshold)
    tail = (
        f"; earliest {unit} with rho >= {threshold:g} (n >= {MIN_TRIALS}): {good.step}"
        if good
        else f"; no {unit} reaches rho {threshold:g} on {MIN_TRIALS}+ trials"
    )
    return head + tail


def _rho(rho: float | None) -> str:
    return "n/a" if rho is None else f"{rho:.2f}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
