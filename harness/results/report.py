"""`sweep report STUDY`: one study -> results/<study>/report.{md,html,csv,parquet} and a terminal summary.

Reads only the storage and the trial folders and never writes to the storage, so it is safe to run while a
sweep is running (SQLite readers do not block the writer; journal files are read without their lock).
The trials table and its ranking come from harness.results.view; plots.py draws; studies or trials side by
side are harness.results.compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from harness import tasks
from harness.core import attrs, lengths, provenance, trialdir
from harness.errors import HarnessError
from harness.results import agreement, audit, comparison, cost, plots
from harness.results.importance import param_importances
from harness.results.plots import Curve, Section, md_table
from harness.results.status import params_text
from harness.results.view import (
    StudyData,
    best_first,
    counts_by_state,
    counts_text,
    noise_lines,
    trials_table,
)
from harness.study import ranking
from harness.study import storage as st

FORMATS = ("md", "html", "csv", "parquet")
TOP_K = 5
SAMPLE_ROWS = 8
NONE = "no task baselines in this study (evaluation.samples: 0, or a study from before they existed)"


def _primary_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """optuna.visualization/importance need `target=` for a multi-objective study: use metrics[0]."""
    return (lambda t: t.values[0]) if ranking.is_multi(study) else None


# ----------------------------------------------------------------------------------------------------
# Trial folders -> curves and generations


def eval_curve(data: StudyData, t: FrozenTrial, key: str = "eval_loss") -> tuple[list[float], list[float]]:
    """`key` by step from the trial's log.jsonl; the objective's reported values when the log is missing
    (a running trial has no log yet) and the objective is that metric."""
    history = trialdir.read_eval_history(data.trial_folder(t.number))
    points = [(h["step"], h[key]) for h in history if _finite(h.get(key))]
    if not points and data.metric == key:
        points = sorted((s, v) for s, v in t.intermediate_values.items() if _finite(v))
    return [p[0] for p in points], [p[1] for p in points]


def trial_label(data: StudyData, t: FrozenTrial, with_study: bool = False) -> str:
    head = f"{data.name} " if with_study else ""
    value = f" {data.metric} {ranking.primary_value(t):.4g}" if ranking.primary_value(t) is not None else ""
    return f"{head}trial {t.number} ({t.state.name.lower()}{value})"


def curves_for(
    data: StudyData, trials: Sequence[FrozenTrial], highlight: int | None, with_study: bool = False
) -> list[Curve]:
    curves = []
    for t in trials:
        steps, values = eval_curve(data, t)
        label = trial_label(data, t, with_study)
        curves.append(Curve(label, steps, values, t.number == highlight, params_text(t.params)))
    return curves


def predictions_by_prompt(data: StudyData, t: FrozenTrial) -> dict[str, str]:
    rows = trialdir.read_generations(data.trial_folder(t.number))
    return {str(r["prompt"]): str(r.get("prediction", "")) for r in rows if "prompt" in r}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------------------------------
# One study: terminal summary, markdown, html


def best_text(data: StudyData) -> str:
    best = data.best()
    if best is None:
        return "no complete trial yet"
    step = attrs.best_step(best)
    at = f" at step {step}" if step is not None else ""
    stats = ranking.confirmed(data.study, best)
    if stats is not None:  # chosen by its mean over seeds (sweep confirm)
        return (
            f"trial {best.number}: {data.metric} = {stats.mean:.6g} ± {stats.ci95:.3g} "
            f"(confirmed mean of {stats.n} seeds, 95% interval; "
            f"its own run {ranking.primary_value(best):.6g}{at})"
        )
    return f"trial {best.number}: {data.metric} = {ranking.primary_value(best):.6g}{at}"


def print_summary(data: StudyData, console: Console, importances: dict[str, float], why: str) -> None:
    console.print(
        f"[bold]{data.name}[/] ({st.mask_url(data.url)}): {data.metric} ({data.goal}), task {data.task}"
    )
    console.print(f"trials: {counts_text(counts_by_state(data.study))}")
    console.print(f"best: {best_text(data)}")
    best = data.best()
    if best is not None:
        console.print(f"      {params_text(best.params)}", markup=False)
    console.print(trials_table(data.study, data.metric, data.goal, limit=TOP_K))
    if importances:
        table = Table(title="parameters that mattered most", title_justify="left")
        table.add_column("parameter")
        table.add_column("importance", justify="right")
        for name, v in list(importances.items())[:TOP_K]:
            table.add_row(name, f"{v:.2f}")
        if len(importances) > TOP_K:
            table.caption = f"{len(importances) - TOP_K} more in report.md"
        console.print(table)
    if why:
        warn = why.startswith("warning")
        console.print(
            f"[yellow]{why}[/]"
            if warn
            else f"[dim]{why}[/]"
            if importances
            else f"parameter importances: {why}"
        )
    summary = [cost.line(cost.collect(data.study)), *agreement.lines(data.study)]  # as `sweep status`
    for line in [*summary, *noise_lines(data.study), *provenance.lines(attrs.provenance(data.study))]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in lengths.lines(data.name, attrs.data_lengths(data.study)):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _objectives_text(data: StudyData) -> str:
    if not ranking.is_multi(data.study):
        return f"{data.metric} ({data.goal})"
    pairs = zip(ranking.metric_names(data.study), ranking.goals(data.study), strict=True)
    names = ", ".join(f"{n} ({g})" for n, g in pairs)
    return (
        f"{names}: multi-objective, {len(ranking.pareto_numbers(data.study))} Pareto-optimal trial(s); "
        f"'best' is the Pareto-optimal trial best on {data.metric}, plots show {data.metric} only"
    )


def summary_frame(data: StudyData) -> pd.DataFrame:
    """The few facts at the top of every report: where, what, how many, who won."""
    best = data.best()
    rows = [
        ("storage", st.mask_url(data.url)),
        ("metric", _objectives_text(data)),
        ("task", data.task),
        ("trials", counts_text(counts_by_state(data.study))),
        ("best", best_text(data)),
        ("best params", params_text(best.params) if best else "-"),
        *(("seed noise", line) for line in noise_lines(data.study)),
        *(("provenance", line) for line in provenance.lines(attrs.provenance(data.study))),
    ]
    return pd.DataFrame(rows, columns=["", " "])


def report_markdown(data: StudyData, importances: dict[str, float], why: str) -> str:
    best = data.best()
    lines = [
        f"# Sweep report: {data.name}",
        "",
        md_table(summary_frame(data)),
        "",
    ]
    if best is not None:
        lines += ["## Best trial", "", md_table(_params_frame(best.params)), ""]
    table, warning = comparison.baselines_report(data.task, data.metric, data.study.user_attrs, best)
    if not table.empty:
        lines += ["## Baselines", "", md_table(table), "", *([f"**{warning}**", ""] if warning else [])]
    noise = noise_lines(data.study)
    if noise:
        lines += ["## Seed noise (sweep confirm)", "", *noise, ""]
    lines += audit.markdown(data.study, md_table)
    lines += cost.markdown(data.study, md_table)
    fit = lengths.lines(data.name, attrs.data_lengths(data.study))
    prov = provenance.lines(attrs.provenance(data.study))
    lines += ["## Data", "", *([*fit, ""] if fit else []), *[f"- {line}" for line in prov], ""]
    if any(c.startswith("test_") for c in data.frame.columns):
        lines += ["_Columns test_* are measured on the held-out test split (`sweep confirm --test`)._", ""]
    lines += ["## Parameters that mattered most", ""]
    if importances:
        lines += [md_table(pd.DataFrame(list(importances.items()), columns=["parameter", "importance"])), ""]
    if why:
        lines += [f"_{why}_", ""]
    lines += agreement.markdown(data.study, md_table)
    lines += ["## Trials (best first)", "", md_table(best_first(data)), ""]
    if best is not None:
        rows = trialdir.read_generations(data.trial_folder(best.number))[:SAMPLE_ROWS]
        if rows:
            cols = [c for c in ("prompt", "reference", "prediction") if any(c in r for r in rows)]
            lines += [
                f"## Sample generations (trial {best.number})",
                "",
                md_table(pd.DataFrame(rows)[cols]),
                "",
            ]
    lines += ["Plots: report.html (opens offline).", ""]
    return "\n".join(lines)


def _params_frame(params: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([(k, plots.fmt_cell(v)) for k, v in params.items()], columns=["parameter", "value"])


def report_html(data: StudyData, importances: dict[str, float], why: str) -> str:
    from optuna import visualization as vis

    complete = data.trials((TrialState.COMPLETE,))
    best = data.best()
    none_yet = plots.note("no complete trial yet: nothing to plot")

    target = _primary_target(data.study)

    def optuna_plot(fn: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: fn(data.study, target=target, target_name=data.metric) if complete else none_yet

    table, warning = comparison.baselines_report(data.task, data.metric, data.study.user_attrs, best)
    refs = comparison.metric_references(data.metric, data.study.user_attrs)
    ladder = plots.table_html(table) if not table.empty else plots.note(NONE)
    ladder += plots.note(warning) if warning else ""
    sections = [
        Section("trials", "Trials (best first)", plots.table_html(best_first(data))),
        Section("baselines", "Baselines", ladder),
        *audit.sections(data.study),
        cost.html_section(data.study),
        plots.plot_section(
            "optimisation-history",
            "Optimisation history",
            lambda: plots.reference_lines(optuna_plot(vis.plot_optimization_history)(), refs),
        ),
        _importance_section(importances, why),
        plots.plot_section(
            "parallel-coordinates", "Parallel coordinates", optuna_plot(vis.plot_parallel_coordinate)
        ),
        plots.plot_section("slice-plots", "Slice plots", lambda: _slice_plot(data, complete)),
        agreement.section(data.study),
        *([_pareto_section(data, complete)] if ranking.is_multi(data.study) else []),
        plots.plot_section(
            "learning-curves",
            "Eval-loss learning curves",
            lambda: plots.learning_curves(
                curves_for(data, data.trials(), best.number if best else None), "eval_loss"
            ),
        ),
    ]
    label = tasks.get(data.task).label
    if label is not None:  # its answers state a number (pricer: a price): predicted against true
        sections.append(
            plots.plot_section(
                f"{label}-scatter",
                f"Predicted vs true {label} (best trial)",
                lambda: _best_price_scatter(data, best),
            )
        )
    sections.append(Section("generations", "Sample generations of the top trials", _top_generations(data)))
    summary = plots.table_html(summary_frame(data), header=False)
    return plots.page(f"Sweep report: {data.name}", summary, sections)


def _slice_plot(data: StudyData, complete: list[FrozenTrial]) -> Any:
    from optuna import visualization as vis

    if not complete:
        return plots.note("no complete trial yet: nothing to plot")
    fig = vis.plot_slice(data.study, target=_primary_target(data.study), target_name=data.metric)
    n_params = len({p for t in complete for p in t.params})
    fig.update_layout(width=max(900, 260 * n_params))  # one panel per parameter; the section scrolls sideways
    return fig


def _pareto_section(data: StudyData, complete: list[FrozenTrial]) -> Section:
    """Multi-objective studies: the Pareto front (the other plots show the first metric only)."""
    from optuna import visualization as vis

    names = ranking.metric_names(data.study)

    def draw() -> Any:
        if not complete:
            return plots.note("no complete trial yet: nothing to plot")
        return (
            vis.plot_pareto_front(data.study, target_names=names)
            if len(names) <= 3
            else plots.note("more than 3 objectives: see the pareto column of the trials table")
        )

    return plots.plot_section("pareto-front", f"Pareto front ({', '.join(names)})", draw)


def _importance_section(importances: dict[str, float], why: str) -> Section:
    section = plots.plot_section(
        "param-importances",
        "Parameter importances",
        lambda: plots.importance_bars(importances) if importances else plots.note(why),
    )
    if importances and why:  # the caveat goes under the plot
        section = Section(section.id, section.title, section.body + plots.note(why))
    return section


def _best_price_scatter(data: StudyData, best: FrozenTrial | None) -> Any:
    if best is None:
        return plots.note("no complete trial yet")
    rows = trialdir.read_generations(data.trial_folder(best.number))
    references = comparison.price_references(data.folder, data.task)
    return plots.price_scatter(rows, f"trial {best.number}", references)


def _top_generations(data: StudyData, k: int = 3) -> str:
    top = [t for t in data.ranked() if t.state == TrialState.COMPLETE][:k]
    if not top:
        return plots.note("no complete trial yet")
    reference = trialdir.read_generations(data.trial_folder(top[0].number))
    columns = {trial_label(data, t): predictions_by_prompt(data, t) for t in top}
    return plots.generations_table(reference, columns, SAMPLE_ROWS)


# ----------------------------------------------------------------------------------------------------
# Writing


def parse_formats(spec: str | None, allowed: Sequence[str] = FORMATS) -> list[str]:
    asked = [f.strip().lower().lstrip(".") for f in (spec or ",".join(allowed)).split(",") if f.strip()]
    bad = [f for f in asked if f not in allowed]
    if bad or not asked:
        raise HarnessError(f"--format {spec!r}: choose from {', '.join(allowed)} (comma-separated)")
    return list(dict.fromkeys(asked))


def write_outputs(
    out_dir: Path,
    formats: Sequence[str],
    frame: pd.DataFrame,
    markdown: Callable[[], str],
    html: Callable[[], str],
) -> list[Path]:
    """report.<fmt> for each format; each file appears whole or not at all (temp file + rename)."""
    written = []
    for fmt in formats:
        path = out_dir / f"report.{fmt}"
        if fmt == "md":
            trialdir.atomic_write_text(path, markdown())
        elif fmt == "html":
            trialdir.atomic_write_text(path, html())
        elif fmt == "csv":
            trialdir.atomic_write_text(path, frame.to_csv(index=False))
        elif fmt == "parquet":
            atomic_write_parquet(frame, path)
        written.append(path)
    return written


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """The same atomic write (and file mode) as every other output: pandas hands back the bytes."""
    trialdir.atomic_write_bytes(path, frame.to_parquet(index=False))


def write_report(
    data: StudyData, formats: Sequence[str] = FORMATS
) -> tuple[list[Path], dict[str, float], str]:
    importances, why = param_importances(data.study)
    paths = write_outputs(
        data.folder,
        formats,
        data.frame,
        lambda: report_markdown(data, importances, why),
        lambda: report_html(data, importances, why),
    )
    return paths, importances, why
