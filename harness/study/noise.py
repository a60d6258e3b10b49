"""Seed-to-seed noise: which trials repeat which config, and each confirmed config's mean and interval.

`sweep confirm` (harness.study.confirm) re-trains the best configs with further seeds as trials of the same
study,
each tagged with user attr `repeat_of` (the original trial's number) and `repeat_index` (1..S). A config's
runs are its original trial plus its COMPLETE repeats; `n_seeds` counts them all. The interval is a
Student-t 95% interval over those runs: `value_ci95` is its half-width. Pure functions over frozen trials:
nothing here reads folders or writes to the storage.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from harness.core import attrs

COLUMNS = ("value_mean", "value_std", "value_ci95", "n_seeds")


def is_repeat(t: FrozenTrial) -> bool:
    return attrs.repeat_of(t) is not None


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (scipy, which optuna brings)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95% t-interval of the mean; NaN for fewer than 2 values."""
    if len(values) < 2:
        return math.nan
    return t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


@dataclass(frozen=True)
class ConfigStats:
    """A confirmed config: its original trial and the values of all its runs (original first)."""

    number: int
    runs: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def ci95(self) -> float:
        return ci95(self.values)

    def columns(self) -> dict[str, Any]:
        return {"value_mean": self.mean, "value_std": self.std, "value_ci95": self.ci95, "n_seeds": self.n}

    def text(self) -> str:
        """`0.7123 ± 0.0213 (n=3)`: the mean and the 95% half-width."""
        return f"{self.mean:.4g} ± {self.ci95:.2g} (n={self.n})"


def _value(t: FrozenTrial) -> float | None:
    v = t.values[0] if t.values else None
    return float(v) if v is not None and math.isfinite(v) else None


def config_stats(trials: Iterable[FrozenTrial]) -> dict[int, ConfigStats]:
    """{original number: its stats} for every COMPLETE original with at least one COMPLETE repeat."""
    trials = list(trials)
    by_number = {t.number: t for t in trials}
    repeats: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        n = attrs.repeat_of(t)
        if n is not None and t.state == TrialState.COMPLETE and _value(t) is not None:
            repeats.setdefault(n, []).append(t)
    out = {}
    for n, reps in sorted(repeats.items()):
        original = by_number.get(n)
        if original is None or original.state != TrialState.COMPLETE or _value(original) is None:
            continue
        runs = [original, *sorted(reps, key=lambda t: t.number)]
        out[n] = ConfigStats(n, tuple(t.number for t in runs), tuple(_value(t) or 0.0 for t in runs))
    return out


def runs_of(trials: Iterable[FrozenTrial], number: int) -> list[FrozenTrial]:
    """The COMPLETE runs of trial `number`'s config: the original, then its repeats."""
    trials = list(trials)
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and (t.number == number or attrs.repeat_of(t) == number)
    ]


def mean_metrics(runs: Sequence[FrozenTrial], objective: str) -> dict[str, float]:
    """Each metric's mean over the runs that measured it (the objective from trial.values when the recipe
    did not report it by name): what `expect:` checks for a confirmed config."""
    sums: dict[str, list[float]] = {}
    for t in runs:
        metrics = attrs.metrics(t)
        if objective not in metrics and t.values:
            metrics[objective] = float(t.values[0])
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                sums.setdefault(k, []).append(float(v))
    return {k: statistics.fmean(v) for k, v in sums.items()}


def better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def verdict(stats: dict[int, ConfigStats], maximize: bool, metric: str) -> str:
    """One plain sentence: is the best confirmed config distinguishable from the runner-up, and how big
    the seed-to-seed noise is (the pooled standard deviation of the runs around their config's mean)."""
    if not stats:
        return ""
    ranked = sorted(stats.values(), key=lambda s: -s.mean if maximize else s.mean)
    floor = noise_floor(ranked)
    runs = sum(s.n for s in ranked)
    noise = f"the seed-to-seed noise floor is ±{floor:.3g} {metric} (pooled std of {runs} runs)"
    first = ranked[0]
    if len(ranked) == 1:
        alone = f"only trial {first.number}'s config is confirmed ({first.text()})"
        return f"{alone}: nothing to compare it with; {noise}."
    second = ranked[1]
    lo1, hi1 = first.mean - first.ci95, first.mean + first.ci95
    lo2, hi2 = second.mean - second.ci95, second.mean + second.ci95
    overlap = not (hi1 < lo2 or hi2 < lo1) or math.isnan(first.ci95) or math.isnan(second.ci95)
    head = (
        f"best config trial {first.number} ({first.text()}) vs runner-up trial {second.number} "
        f"({second.text()}): "
    )
    if overlap:
        return head + f"their 95% intervals overlap, so the data cannot tell them apart; {noise}."
    return (
        head + f"their 95% intervals do not overlap, so the best config is distinguishably better; {noise}."
    )


def noise_floor(stats: Iterable[ConfigStats]) -> float:
    """The pooled standard deviation of runs around their own config's mean."""
    ss, df = 0.0, 0
    for s in stats:
        ss += sum((v - s.mean) ** 2 for v in s.values)
        df += s.n - 1
    return math.sqrt(ss / df) if df else math.nan
