"""The verdict of a sweep, pytest-style: its expectations checked on the study, passed / failed / error /
skipped, the closing `N passed, N failed` line and the exit code (see harness.suite.collect for the rules)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.markup import escape

from harness.core import attrs
from harness.sweepfile.schema import Expectation, SweepConfig
from harness.tasks import baselines

if TYPE_CHECKING:
    from harness.study.run import RunOutcome


Status = Literal["passed", "failed", "error", "skipped"]
EXIT = {"ok": 0, "failed": 1, "error": 2}


@dataclass
class SweepReport:
    path: Path
    status: Status
    name: str = ""
    outcomes: list[Outcome] = field(default_factory=list)
    message: str = ""
    """Why it failed or errored, in one or a few lines (no traceback for user errors)."""
    best_value: float | None = None
    trials_run: int = 0

    @property
    def failed_outcomes(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def reason(self) -> str:
        """One line for the short summary: the failed expectations, or the message."""
        failed = self.failed_outcomes
        if failed:
            return "; ".join(f"{o.expectation.describe()} ({o.detail})" for o in failed)
        if not self.message:
            return self.status
        # One line: the file is already named by the summary line, and a validation list folds up.
        text = self.message.removeprefix(f"{self.path}: ")
        text = " ".join(line.strip() for line in text.splitlines() if line.strip())
        return text if len(text) <= 300 else text[:297] + "..."


def judge(
    cfg: SweepConfig, path: Path, outcome: RunOutcome, console: Console, err: Console, smoke: bool = False
) -> SweepReport:
    """The end of a sweep: its trials table, each expectation's PASS/FAIL, and the verdict."""
    from optuna.trial import TrialState

    from harness.results.view import trials_table
    from harness.study.run import SweepStopped, check_failures

    console.print(trials_table(outcome.study, cfg.metric.name, cfg.metric.goal))
    console.print(
        f"{outcome.ran} trial(s) run in {outcome.seconds:.0f}s; results in {cfg.study_dir}/", soft_wrap=True
    )
    report = SweepReport(path, "passed", cfg.name, trials_run=outcome.ran)
    from harness.study import ranking

    complete = outcome.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = ranking.best_trial(outcome.study)
        report.best_value = ranking.primary_value(best) if best is not None else None
    report.outcomes = check_study(cfg.expectations, outcome.study, cfg.metric.name, smoke=smoke)
    stats = ranking.confirmed(outcome.study, ranking.best_trial(outcome.study)) if complete else None
    if stats is not None and report.outcomes:
        console.print(
            f"expectations use trial {stats.number}'s confirmed mean over {stats.n} seeds (sweep confirm)",
            soft_wrap=True,
        )
    for o in report.outcomes:
        label = "[green]PASS[/]" if o.passed else "[red]FAIL[/]"
        console.print(f"{label} {escape(o.expectation.describe())} ({escape(o.detail)})", soft_wrap=True)
    try:
        check_failures(outcome, cfg)
    except SweepStopped as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        report.status, report.message = "failed", str(e)
        return report
    if not complete:
        report.status = "failed"
        report.message = (
            f"{cfg.name}: no trial completed; the reasons are in {cfg.study_dir}/trial-*/metrics.json"
        )
    elif report.failed_outcomes:
        report.status = "failed"
    return report


def trial_metrics(trial: Any, objective: str) -> dict[str, float]:
    """A finished trial's final metrics (objective.record stores them), with the objective value added
    when the recipe did not report it under its own name."""
    metrics = attrs.metrics(trial)
    if objective not in metrics and trial.values:
        metrics[objective] = float(trial.values[0])
    return metrics


def check_study(
    expectations: Sequence[Expectation], study: Any, objective: str, smoke: bool = False
) -> list[Outcome]:
    """expectations.check on a study: its best trial (multi-objective: the Pareto-optimal trial best on
    the primary metric; a confirmed config: the mean of each metric over its seeds), every COMPLETE
    trial, and its task baselines."""
    from optuna.trial import TrialState

    from harness.study import noise
    from harness.study.ranking import best_trial, confirmed

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_t = best_trial(study)
    best = trial_metrics(best_t, objective) if best_t is not None else None
    if best_t is not None and confirmed(study, best_t) is not None:
        best = noise.mean_metrics(noise.runs_of(complete, best_t.number), objective)
    trials = [(t.number, trial_metrics(t, objective)) for t in complete]
    return check(expectations, best, trials, smoke, baselines.ladder(study.user_attrs))


def summary_line(reports: Iterable[SweepReport]) -> str:
    counts = {s: 0 for s in ("passed", "failed", "skipped", "error")}
    for r in reports:
        counts[r.status] += 1
    parts = [f"{counts['passed']} passed", f"{counts['failed']} failed"]
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped")
    if counts["error"]:
        parts.append(f"{counts['error']} error{'s' if counts['error'] > 1 else ''}")
    return ", ".join(parts)


def exit_code(reports: Iterable[SweepReport]) -> int:
    statuses = {r.status for r in reports}
    if "error" in statuses:
        return EXIT["error"]
    return EXIT["failed"] if "failed" in statuses else EXIT["ok"]


# ----------------------------------------------------------------------------------------------------
# Checking `expect:` (parsed at load by harness.sweepfile.expect)


@dataclass(frozen=True)
class Outcome:
    expectation: Expectation
    passed: bool
    measured: float | None
    detail: str
    """What was measured, in words: '2.31', 'not measured', 'trial 3: 2.7', '3 trials: 2.1..2.4'."""

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.expectation.describe()} ({self.detail})"


def check(
    expectations: Iterable[Expectation],
    best: Mapping[str, float] | None,
    trials: Iterable[tuple[int, Mapping[str, float]]] = (),
    smoke: bool = False,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Outcome]:
    """`best`: the best trial's metrics (None when no trial completed); `trials`: (number, metrics) of
    every complete trial, for `scope: all`; `baselines`: name -> metrics (harness.tasks.baselines.ladder) for
    `baseline.NAME` thresholds. Pure: the study side is adapted by `harness.suite.verdicts.check_study`."""
    trials = list(trials)
    return [_check_one(e, best, trials, smoke, baselines or {}) for e in expectations]


def _check_one(
    e: Expectation,
    best: Mapping[str, float] | None,
    trials: list[tuple[int, Mapping[str, float]]],
    smoke: bool,
    baselines: Mapping[str, Mapping[str, float]],
) -> Outcome:
    only_measured = smoke and not e.in_smoke
    resolved, refs = e, ""
    if not only_measured and any(c.baseline for c in e.conditions):
        resolved, refs, missing = _resolve(e, baselines)
        if missing:
            return Outcome(e, False, None, missing)
    holds = (lambda v: math.isfinite(v)) if only_measured else resolved.holds
    note = "; threshold not checked in smoke runs" if only_measured else ""
    if e.scope == "best":
        if best is None:
            return Outcome(e, False, None, "no complete trial")
        value = best.get(e.metric)
        if value is None or not math.isfinite(value):
            return Outcome(e, False, value, "not measured")
        return Outcome(e, holds(value), value, f"measured {_fmt(value)}{refs}{note}")
    if not trials:
        return Outcome(e, False, None, "no complete trial")
    values: list[float] = []
    for number, metrics in trials:
        value = metrics.get(e.metric)
        if value is None or not math.isfinite(value):
            return Outcome(e, False, value, f"not measured in trial {number}")
        if not holds(value):
            return Outcome(e, False, value, f"trial {number}: {_fmt(value)}{refs}")
        values.append(value)
    lo, hi = min(values), max(values)
    span = _fmt(lo) if lo == hi else f"{_fmt(lo)}..{_fmt(hi)}"
    return Outcome(e, True, None, f"{len(values)} trial{'s' if len(values) > 1 else ''}: {span}{refs}{note}")


def _resolve(
    e: Expectation, baselines: Mapping[str, Mapping[str, float]]
) -> tuple[Expectation, str, str | None]:
    """`e` with each `baseline.NAME` threshold set to that baseline's value of the metric, the values in
    words (', baseline.median 58.3'), and why it cannot be checked (None when it can)."""
    conditions, shown = [], ""
    for c in e.conditions:
        if c.baseline is None:
            conditions.append(c)
            continue
        value = (baselines.get(c.baseline) or {}).get(e.metric)
        if value is None or not math.isfinite(value):
            have = ", ".join(baselines) or "none"
            return e, "", f"baseline.{c.baseline} has no {e.metric} in this study (baselines: {have})"
        conditions.append(replace(c, threshold=float(value)))
        shown += f", baseline.{c.baseline} {_fmt(value)}"
    return replace(e, conditions=tuple(conditions)), shown, None


def _fmt(v: float) -> str:
    return f"{v:.6g}"
