"""What a study cost: its trials' cost records (harness.core.cost, user attr `trial_cost`) summed, per trial
state, and until the best value was first reached. `sweep report` shows the table, `sweep status` and the
end of `sweep run` the line.

Every figure is a sum (or a max) of the records each trial's metrics.json also holds, so it can be
recomputed from the trial folders. Trials without a record (killed with SIGKILL, or run before harness
recorded costs) are counted apart, never guessed; running trials are not in the totals yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from harness.core import attrs
from harness.core.cost import DEVICE_HOUR_S, TrialCost, hours_text
from harness.results import plots
from harness.study import ranking

STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Totals:
    trials: int = 0
    device_s: float = 0.0
    steps: int = 0
    tokens: int | None = None
    """None when no trial counted its tokens (a recipe that does not)."""
    peak_memory_mb: float | None = None
    """The largest trial's peak (a max, not a sum: trials run one at a time per worker)."""

    def add(self, cost: TrialCost) -> None:
        self.trials += 1
        self.device_s += cost.device_s
        self.steps += cost.steps or 0
        if cost.tokens is not None:
            self.tokens = (self.tokens or 0) + cost.tokens
        if cost.peak_memory_mb is not None:
            self.peak_memory_mb = max(self.peak_memory_mb or 0.0, cost.peak_memory_mb)


@dataclass
class StudyCost:
    total: Totals
    by_state: dict[str, Totals]
    """COMPLETE, PRUNED, FAIL (interrupted trials are FAIL: their time was spent too)."""
    best: int | None = None
    """The trial that first reached the study's best value (by completion time)."""
    to_best: Totals | None = None
    """Every trial that ended before or with it."""
    unrecorded: list[int] = field(default_factory=list)
    """Finished trials without a cost record."""
    running: int = 0
    limit_h: float | None = None
    """The study's stored budget.device_hours."""


def trial_costs(trials: Iterable[FrozenTrial]) -> list[tuple[FrozenTrial, TrialCost]]:
    """The finished trials that hold a cost record, with it."""
    out = []
    for t in trials:
        cost = TrialCost.from_dict(attrs.cost(t))
        if t.state in STATES and cost is not None:
            out.append((t, cost))
    return out


def first_best(study: optuna.Study, trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The earliest-completed trial whose value is as good as the best trial's: where the search first
    reached what it ends with (a later tie found nothing new)."""
    best = ranking.best_trial(study)
    value = ranking.primary_value(best) if best is not None else None
    if best is None or value is None:
        return None
    maximize = ranking.goals(study)[0] == "maximize"

    def reached(t: FrozenTrial) -> bool:
        v = ranking.primary_value(t)
        return v is not None and (v >= value if maximize else v <= value)

    done = [t for t in trials if t.state == TrialState.COMPLETE and reached(t)]
    return min(done, key=_ended, default=best)


def _ended(t: FrozenTrial) -> tuple[datetime, int]:
    return (t.datetime_complete or datetime.max, t.number)


def collect(study: optuna.Study) -> StudyCost:
    trials = study.get_trials(deepcopy=False)
    recorded = trial_costs(trials)
    total, by_state = Totals(), {s.name: Totals() for s in STATES}
    for t, cost in recorded:
        total.add(cost)
        by_state[t.state.name].add(cost)
    out = StudyCost(total, by_state, running=sum(t.state == TrialState.RUNNING for t in trials))
    limit = (attrs.config(study).get("budget") or {}).get("device_hours")
    out.limit_h = float(limit) if isinstance(limit, (int, float)) else None
    have = {t.number for t, _ in recorded}
    out.unrecorded = sorted(t.number for t in trials if t.state in STATES and t.number not in have)
    best = first_best(study, trials)
    if best is not None:
        out.best, out.to_best = best.number, Totals()
        for t, cost in recorded:
            if _ended(t) <= _ended(best):
                out.to_best.add(cost)
    return out


# ----------------------------------------------------------------------------------------------------
# Rendering: one line (status, end of run), a table (report)


def seconds(device_s: float) -> str:
    """Device-seconds as shown everywhere: 0.1 s, so a sum of metrics.json figures rounds to the same."""
    return f"{device_s:.1f}"


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


def line(sc: StudyCost) -> str:
    """`cost: 0.0123 device-hours (44.3 device-s) in 6 trials (complete 30.1, pruned 10.2, fail 4.0 s);
    until the best (trial 3): 20.1 device-s (45%); 1200 steps, 345678 tokens, peak memory 812 MB`."""
    t = sc.total
    if not t.trials:
        return "cost: no trial has a cost record yet" + _apart(sc)
    states = ", ".join(f"{s.lower()} {seconds(v.device_s)}" for s, v in sc.by_state.items() if v.trials)
    text = f"cost: {hours_text(t.device_s)} in {t.trials} trial(s) ({states} s)"
    if sc.to_best is not None:
        text += (
            f"; until the best (trial {sc.best}): {seconds(sc.to_best.device_s)} device-s "
            f"({_share(sc.to_best.device_s, t.device_s)})"
        )
    text += f"; {t.steps} steps"
    if t.tokens is not None:
        text += f", {t.tokens} tokens"
    if t.peak_memory_mb is not None:
        text += f", peak memory {t.peak_memory_mb:.0f} MB"
    if sc.limit_h is not None:
        spent = t.device_s >= sc.limit_h * DEVICE_HOUR_S
        share = (
            "spent: no new trial starts"
            if spent
            else f"{_share(t.device_s, sc.limit_h * DEVICE_HOUR_S)} spent"
        )
        text += f"; budget.device_hours={sc.limit_h:g}: {share}"
    return text + _apart(sc)


def _apart(sc: StudyCost) -> str:
    parts = []
    if sc.unrecorded:
        parts.append(f"{len(sc.unrecorded)} finished trial(s) without a cost record (killed, or older)")
    if sc.running:
        parts.append(f"{sc.running} running, not counted yet")
    return f" ({'; '.join(parts)})" if parts else ""


def frame(sc: StudyCost) -> pd.DataFrame:
    """One row per group: all trials, each state, and the trials until the best was first reached."""
    rows: list[tuple[str, Totals]] = [("all trials", sc.total)]
    rows += [(s.lower(), v) for s, v in sc.by_state.items()]
    if sc.to_best is not None:
        rows.append((f"until the best (trial {sc.best})", sc.to_best))
    return pd.DataFrame(
        [
            {
                "trials": name,
                "n": v.trials,
                "device-s": seconds(v.device_s),
                "device-hours": f"{v.device_s / DEVICE_HOUR_S:.4f}",
                "share": _share(v.device_s, sc.total.device_s),
                "steps": v.steps,
                "tokens": "" if v.tokens is None else str(v.tokens),
                "max peak memory (MB)": "" if v.peak_memory_mb is None else f"{v.peak_memory_mb:.0f}",
            }
            for name, v in rows
        ]
    )


NOTE = (
    "device-s: each trial's wall time (its first line to its result, failure or interruption) x the "
    "devices it trained on; loading the base and measuring baselines are not in it. Steps and tokens are "
    "what each trial trained itself (real tokens, padding left out); a failed trial's, up to its last eval. "
    "Every figure sums the `cost` of the trials' metrics.json."
)


def markdown(study: optuna.Study, table: Callable[[pd.DataFrame], str]) -> list[str]:
    """The report's `## Cost` section; `table` renders a frame as markdown (report.md_table)."""
    sc = collect(study)
    return ["## Cost", "", table(frame(sc)), "", f"_{NOTE}{_apart(sc)}_", ""]


def html_section(study: optuna.Study) -> plots.Section:
    sc = collect(study)
    return plots.Section("cost", "Cost", plots.table_html(frame(sc)) + plots.note(NOTE + _apart(sc)))
