"""Where a sweep stands: `collect(study)` -> a `View` (counts, running trials, best, ETA), and the plain
lines of `sweep status` and the table of `sweep list` drawn from it.

Computed from the storage alone (opened read-only by harness.study.storage), so it works from another shell
while
`sweep run` writes. `View` is plain data (testable without a terminal); harness.results.watch draws it live.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import JustifyMethod, RenderableType
from rich.table import Table

from harness.core import attrs
from harness.core.display import SHORT
from harness.errors import StorageError
from harness.results import agreement, cost, plots
from harness.results import view as sv
from harness.study import failures, ranking
from harness.study import storage as st

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Running:
    number: int
    step: int | None
    value: float | None
    curve: list[float]
    elapsed_s: float | None
    attrs: dict[str, Any]


@dataclass
class View:
    name: str
    metric: str
    goal: str
    n_trials: int | None
    max_steps: int | None
    counts: dict[str, int]
    running: list[Running] = field(default_factory=list)
    best: FrozenTrial | None = None
    mean_s: float | None = None
    eta_s: float | None = None
    recent: list[FrozenTrial] = field(default_factory=list)
    note: str = ""
    counted: int | None = None  # finished trials that use up n_trials (failures.counts); None: all do
    summary: list[str] = field(default_factory=list)  # the cost line and the rung agreement lines

    @property
    def workers(self) -> list[str]:
        """Each worker training now (host:pid (device)), once: from its running trial's user attrs."""
        return list(dict.fromkeys(w for r in self.running if (w := sv.worker_text(r.attrs))))

    @property
    def finished(self) -> int:
        """Finished trials that count toward n_trials: not seed repeats or audits (`sweep confirm`, `sweep
        audit`), nor interrupted trials (their retry counts), so "8/8 finished" is the budget."""
        if self.counted is not None:
            return self.counted
        return sum(self.counts.get(s.name, 0) for s in FINISHED)

    @property
    def finished_text(self) -> str:
        """`8/8 finished`, and the finished trials that do not count, if any."""
        total = f"/{self.n_trials}" if self.n_trials is not None else ""
        extra = sum(self.counts.get(s.name, 0) for s in FINISHED) - self.finished
        more = f" (+{extra} not counted: re-runs, interrupted)" if extra > 0 else ""
        return f"{self.finished}{total} finished{more}"

    @property
    def done(self) -> bool:
        return not self.running and self.n_trials is not None and self.finished >= self.n_trials

    def signature(self) -> tuple[Any, ...]:
        """What a new plain-text frame is printed for: states and reported steps, not the clock."""
        return (
            tuple(sorted(self.counts.items())),
            tuple((r.number, r.step) for r in self.running),
            self.note,
        )


def collect(study: optuna.Study, now: datetime | None = None) -> View:
    now = now or datetime.now()  # optuna stores naive local times
    budget = attrs.config(study).get("budget") or {}
    trials = study.get_trials(deepcopy=False)

    # budget.epochs (or a fractional eval_steps): trials report by eval index; the step is index x the
    # trial's own eval_steps, recorded at its first eval with its max_steps.
    per_trial = budget.get("epochs") is not None or isinstance(budget.get("eval_steps"), float)
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        steps = sorted(t.intermediate_values)
        step = steps[-1] if steps else None
        if per_trial and step is not None:
            every, most = attrs.eval_steps(t), attrs.max_steps(t)
            step = min(step * every, most) if every is not None and most is not None else None
        running.append(
            Running(
                number=t.number,
                step=step,
                value=t.intermediate_values[steps[-1]] if steps else None,
                curve=[t.intermediate_values[s] for s in steps],
                elapsed_s=(now - t.datetime_start).total_seconds() if t.datetime_start else None,
                attrs=dict(t.user_attrs),
            )
        )

    finished = [t for t in trials if t.state in FINISHED]
    counted = sum(failures.counts(t) for t in finished)
    durations = [d for d in (sv.trial_duration(t) for t in finished) if d is not None]
    mean_s = sum(durations) / len(durations) if durations else None
    n_trials = budget.get("n_trials")
    eta = None
    if mean_s is not None and isinstance(n_trials, int):
        # Trials not started yet take a mean duration each; a running one, what the mean leaves of it.
        remaining = max(0, n_trials - counted)
        waiting = max(0, remaining - len(running))
        eta = mean_s * waiting + sum(max(0.0, mean_s - (r.elapsed_s or 0.0)) for r in running[:remaining])

    return View(
        name=study.study_name,
        metric=sv.metric_name(study),
        goal=ranking.goals(study)[0],
        n_trials=n_trials if isinstance(n_trials, int) else None,
        max_steps=budget.get("max_steps"),
        counts=sv.counts_by_state(study),
        running=running,
        best=ranking.best_trial(study),  # multi-objective: the Pareto-optimal trial best on the first metric
        mean_s=mean_s,
        eta_s=eta,
        recent=sorted(finished, key=lambda t: t.number)[-8:],
        counted=counted,
        summary=[cost.line(cost.collect(study)), *agreement.lines(study)],
    )


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def params_text(params: dict[str, Any]) -> str:
    """`lr=0.001 r=8 ...` in the report's cell format, with the terminal table's short names."""
    return " ".join(f"{SHORT.get(k, k)}={plots.fmt_cell(v)}" for k, v in params.items())


# ----------------------------------------------------------------------------------------------------
# `sweep status` and `sweep list`


def status_lines(study: optuna.Study, url: str, now: datetime | None = None) -> list[str]:
    """Plain lines (no markup): counts, best so far, each running trial's last step, and an ETA."""
    view = collect(study, now)
    lines = [f"{view.name}  ({st.mask_url(url)})  {view.metric} ({view.goal})"]
    parts = [f"{n} {s.lower()}" for s, n in sorted(view.counts.items(), key=lambda kv: sv.state_rank(kv[0]))]
    lines.append(f"  trials: {view.finished_text}; " + (", ".join(parts) or "none yet"))
    if view.best is not None:
        lines.append(
            f"  best: trial {view.best.number}  {view.metric} {ranking.primary_value(view.best):.6g}  "
            + params_text(view.best.params)
        )
    else:
        lines.append("  best: no complete trial yet")
    lines.append("  " + view.summary[0])  # the cost line; the rung agreement follows the running trials
    for r in view.running:
        most = attrs.max_steps(r.attrs) or view.max_steps  # the trial's own budget (epochs: its batch's)
        of = f"/{most}" if most else ""
        step = f"step {r.step}{of}" if r.step is not None else "no eval yet"
        value = f"  {view.metric} {r.value:.4g}" if r.value is not None else ""
        on = f"  on {sv.worker_text(r.attrs)}" if sv.worker_text(r.attrs) else ""
        lines.append(f"  running: trial {r.number}  {step}{value}  ({fmt_duration(r.elapsed_s)} so far){on}")
    if view.workers:
        lines.append(f"  workers: {len(view.workers)} live: {', '.join(view.workers)}")
    lines += [f"  {line}" for line in view.summary[1:]]
    lines.append("  " + eta_text(view))
    return lines


def eta_text(view: View) -> str:
    left = None if view.n_trials is None else max(0, view.n_trials - view.finished)
    if left == 0 and not view.running:
        return "done"
    if not view.running:
        # No RUNNING trial: the sweep is not running now (stopped, or interrupted).
        more = f"{left} trial(s) to go; " if left else ""
        return f"not running: {more}`sweep run` on the sweep file resumes it"
    if view.n_trials is None:
        return "ETA: unknown (the study has no stored budget.n_trials)"
    if view.eta_s is None:
        return "ETA: unknown until a trial finishes"
    return f"ETA: ~{fmt_duration(view.eta_s)} (mean {fmt_duration(view.mean_s)} per trial, {left} to go)"


def status_report(target: str | None, results_dir: str, storage: str | None) -> list[RenderableType]:
    """What `sweep status [STUDY]` prints: one study's lines and trials table, or every study's lines."""
    if target:
        data = sv.load_study_data(target, results_dir, storage)
        return [*status_lines(data.study, data.url), sv.trials_table(data.study, data.metric, data.goal)]
    found = st.discover(results_dir, storage)
    if not found:
        return [f"no studies in {results_dir}/ (run `sweep run` first)"]
    out: list[RenderableType] = []
    for url, studies in found:
        if isinstance(studies, StorageError):
            out.append(f"{st.mask_url(url)}: {studies}")
            continue
        for study in studies:
            out += status_lines(study, url)
    return out


def list_table(found: Iterable[tuple[str, list[optuna.Study] | StorageError]]) -> Table:
    """`sweep list`: one row per study (storage.discover's result), a row per storage that failed."""
    table = Table(title="studies", title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [
        ("study", "left"),
        ("storage", "left"),
        ("trials", "right"),
        ("complete", "right"),
        ("pruned", "right"),
        ("fail", "right"),
        ("running", "right"),
        ("metric", "left"),
        ("best", "right"),
    ]
    for col, just in columns:
        table.add_column(col, justify=just)
    for url, studies in found:
        if isinstance(studies, StorageError):
            table.add_row("?", st.mask_url(url), "", "", "", "", "", "", f"error: {studies}")
            continue
        for study in studies:
            counts = sv.counts_by_state(study)
            best = ranking.best_trial(study)
            table.add_row(
                study.study_name,
                st.mask_url(url),
                str(sum(counts.values())),
                *(str(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")),
                f"{sv.metric_name(study)} ({ranking.goals(study)[0]})",
                f"{ranking.primary_value(best):.6g} (#{best.number})" if best else "-",
            )
    return table
