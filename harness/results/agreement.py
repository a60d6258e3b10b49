"""Rung agreement of a stored study (harness.core.agreement does the arithmetic): the report's table and
plot, and the one line `sweep status` and the end of a run print.

Everything comes from the storage: the trials' intermediate values (what the objective reported to the
pruner), their values, and the sweep config stored on the study (which steps are rungs). A study of an
older harness has all of it, so its pruning can be judged after the fact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from harness.core import agreement, attrs
from harness.core.agreement import StepAgreement
from harness.results import plots
from harness.results.plots import Section
from harness.study import ranking


def unit(study: optuna.Study | dict[str, Any]) -> str:
    """`eval` when trials report by eval index (an epochs budget), else `step`."""
    budget = _config(study).get("budget") or {}
    return "eval" if _per_trial(budget) else "step"


def table(study: optuna.Study) -> list[StepAgreement]:
    """rho and n per reported step over the COMPLETE trials, rungs marked; [] for a multi-objective study
    (nothing is reported or pruned there)."""
    if ranking.is_multi(study):
        return []
    trials = study.get_trials(deepcopy=False)
    done = [
        (t.intermediate_values, t.value)
        for t in trials
        if t.state == TrialState.COMPLETE and t.intermediate_values and t.value is not None
    ]
    steps = sorted({int(s) for t in trials for s in t.intermediate_values})
    cfg = _config(study)
    terminate = cfg.get("early_terminate") or {}
    budget = cfg.get("budget") or {}
    if _per_trial(budget):
        every = 1
    elif isinstance(budget.get("eval_steps"), int):
        every = budget["eval_steps"]
    else:  # a study without a stored config: its evals come every first-eval steps
        every = steps[0] if steps else 1
    rungs = agreement.rung_steps(terminate, every, steps, attrs.auto_rung(study).get("step"))
    return agreement.by_step(done, rungs)


def lines(study: optuna.Study) -> list[str]:
    """The one line (and the first rung's warning when there is one): [] when no trial finished."""
    rows, u = table(study), unit(study)
    head = agreement.line(rows, u, _threshold(study))
    if head is None:
        return []
    warn = agreement.warning(rows, u)
    return [head] + ([f"warning: {warn}"] if warn else [])


def frame(rows: list[StepAgreement], u: str = "step") -> pd.DataFrame:
    return pd.DataFrame(
        [(r.step, "rung" if r.rung else "", r.rho, r.n) for r in rows], columns=[u, "rung?", "rho", "n"]
    ).astype({"rho": "float64"})


INTRO = (
    "Spearman's rho between each trial's value at that {u} and its final value, over the COMPLETE trials "
    "that reached it (n). Near 1: the {u} ranks trials as the end does, so pruning there loses little; "
    "near 0: pruning there is close to guessing. `rung` marks where the pruner judged trials."
)


def markdown(study: optuna.Study, md_table: Callable[[pd.DataFrame], str]) -> list[str]:
    """report.md's section (empty for a study with no finished trial reporting intermediate values);
    `md_table` is report.md's table renderer."""
    rows, u = table(study), unit(study)
    if not rows:
        return []
    out = ["## Rung agreement", "", INTRO.format(u=u), "", md_table(frame(rows, u)), ""]
    warn = agreement.warning(rows, u)
    return out + ([f"**warning: {warn}**", ""] if warn else [])


def section(study: optuna.Study) -> Section:
    """report.html's section: the plot of rho by step, its table and the warning."""
    rows, u = table(study), unit(study)
    if not rows:
        return Section("rung-agreement", "Rung agreement", plots.note("no finished trial reported evals yet"))
    drawn = plots.plot_section(
        "rung-agreement",
        "Rung agreement",
        lambda: plots.agreement_plot(
            [r.step for r in rows], [r.rho for r in rows], [r.n for r in rows], [r.rung for r in rows], u
        ),
    )
    warn = agreement.warning(rows, u)
    body = (
        plots.note(INTRO.format(u=u))
        + drawn.body
        + plots.table_html(frame(rows, u))
        + (plots.note(f"warning: {warn}") if warn else "")
    )
    return Section(drawn.id, drawn.title, body)


def _config(study: optuna.Study | dict[str, Any]) -> dict[str, Any]:
    return attrs.config(study) if isinstance(study, optuna.Study) else study


def _per_trial(budget: dict[str, Any]) -> bool:
    """The stored budget's `per_trial` (schema.BudgetConfig): epochs, or eval_steps a fraction of one."""
    return budget.get("epochs") is not None or isinstance(budget.get("eval_steps"), float)


def _threshold(study: optuna.Study) -> float:
    terminate = _config(study).get("early_terminate") or {}
    t = terminate.get("min_agreement", 0.7)
    return float(t) if isinstance(t, (int, float)) else 0.7
