"""The pruning audit (`sweep audit`, harness.study.confirm) as `sweep audit`, `sweep report` and the
report's HTML show it: a verdict line and one row per audited pruned trial. Every figure is recomputed
from the trials (ranking.audit_summary), never read back from the stored copy."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna
import pandas as pd

from harness.study import ranking
from harness.study.ranking import AuditSummary

if TYPE_CHECKING:
    from harness.results.plots import Section

TITLE = "Pruning audit (sweep audit)"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def verdict(summary: AuditSummary, metric: str) -> str:
    n = len(summary.audited)
    done = sum(a.margin is not None for a in summary.audited)
    if summary.best_trial is None:
        return f"pruning audit: {n} pruned trial(s) audited; no complete trial of the sweep to compare with"
    head = (
        f"pruning audit: {done} of {n} audited pruned trial(s) trained to the full budget; "
        f"{summary.beaten} would have beaten the sweep's best (trial {summary.best_trial}, "
        f"{metric} {_fmt(summary.best_value)})"
    )
    if summary.beaten:
        top = max((a for a in summary.audited if a.margin is not None), key=lambda a: a.margin or 0.0)
        return (
            f"{head}: pruning regret {summary.regret:.6g} {metric} (trial {top.pruned}, audited as trial "
            f"{top.audit}); the pruner cut a better config: prune later (early_terminate.min_iter, or "
            "n_warmup_steps for median)"
        )
    return f"{head}: pruning regret 0, the pruner cut nothing better"


def frame(summary: AuditSummary, metric: str) -> pd.DataFrame:
    rows = [
        {
            "pruned trial": a.pruned,
            "pruned at step": a.pruned_at,
            "audit trial": a.audit,
            "state": a.state,
            "trained from step": a.from_step,
            metric: a.value,
            "vs best": a.margin,
            "beats best": a.margin is not None and a.margin > 0,
        }
        for a in summary.audited
    ]
    return pd.DataFrame(rows)


def lines(study: optuna.Study) -> list[str]:
    """`sweep audit`'s closing lines; nothing for a study never audited."""
    summary = ranking.audit_summary(study)
    if not summary.audited:
        return []
    metric = ranking.metric_names(study)[0]
    out = [verdict(summary, metric)]
    for a in summary.audited:
        vs = f", {a.margin:+.6g} vs best" if a.margin is not None else ""
        out.append(
            f"  trial {a.pruned} (pruned at step {a.pruned_at}) -> audit trial {a.audit} "
            f"from step {a.from_step}: {a.state} {metric} {_fmt(a.value)}{vs}"
        )
    return out


def markdown(study: optuna.Study, md_table: Callable[[pd.DataFrame], str]) -> list[str]:
    """The report's section (report.py renders its tables with `md_table`); nothing when never audited."""
    summary = ranking.audit_summary(study)
    if not summary.audited:
        return []
    metric = ranking.metric_names(study)[0]
    return [f"## {TITLE}", "", verdict(summary, metric), "", md_table(frame(summary, metric)), ""]


def sections(study: optuna.Study) -> list[Section]:
    from harness.results import plots  # plotly: only the HTML report pays for it, not `sweep audit`

    summary = ranking.audit_summary(study)
    if not summary.audited:
        return []
    metric = ranking.metric_names(study)[0]
    body = plots.note(verdict(summary, metric)) + plots.table_html(frame(summary, metric))
    return [plots.Section("pruning-audit", TITLE, body)]
