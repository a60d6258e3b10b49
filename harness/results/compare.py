"""Side by side: several studies (`sweep compare A B`, `sweep report A B --compare`) ->
results/compare-A-vs-B/, and chosen trials of one study (`sweep report A --trials 3 7`) ->
results/A/compare-trials-3-7/.

Same outputs and writer as a single-study report (harness.results.report); read-only like it. Not to be
confused
with harness.results.comparison, which sets one study's tuned model against its untrained base.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from harness.core import attrs, provenance, trialdir
from harness.errors import HarnessError
from harness.results import comparison, plots
from harness.results.plots import Section
from harness.results.report import (
    SAMPLE_ROWS,
    curves_for,
    md_table,
    predictions_by_prompt,
    trial_label,
    write_outputs,
)
from harness.results.view import StudyData, counts_by_state, counts_text, load_study_data, text_if_mixed
from harness.study import ranking

# ----------------------------------------------------------------------------------------------------
# Comparing studies


def compare_frame(datas: Sequence[StudyData]) -> pd.DataFrame:
    """One row per study: counts, best value and best params (param_<name>, blank where a study lacks it)."""
    rows = []
    for d in datas:
        best = d.best()
        counts = counts_by_state(d.study)
        row: dict[str, Any] = {
            "study": d.name,
            "metric": d.metric,
            "goal": d.goal,
            "trials": sum(counts.values()),
            **{s.lower(): counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
            "best_trial": best.number if best else None,
            "best_value": ranking.primary_value(best) if best else None,
            attrs.BEST_STEP: attrs.best_step(best) if best else None,
        }
        row.update({f"param_{k}": v for k, v in (best.params if best else {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.astype({"best_trial": "Int64", attrs.BEST_STEP: "Int64", "best_value": "float64"})


def baselines_by_study(datas: Sequence[StudyData]) -> pd.DataFrame:
    """Each study's task baselines and its best trial (comparison.baselines_frame), a `study` column
    first; empty when no study stored baselines."""
    frames = [
        comparison.baselines_frame(d.task, d.metric, d.study.user_attrs, d.best()).assign(study=d.name)
        for d in datas
    ]
    frames = [f for f in frames if len(f.columns) > 1]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame[["study", *[c for c in frame.columns if c != "study"]]]


def distribution_frame(datas: Sequence[StudyData]) -> pd.DataFrame:
    """The objective over complete trials, per study: count, mean, std, min, quartiles, max."""
    stats = []
    for d in datas:
        values = pd.Series(
            [ranking.primary_value(t) for t in d.trials((TrialState.COMPLETE,))], dtype="float64"
        )
        desc = values.describe()
        stats.append({"study": d.name, "metric": d.metric, **{k: desc.get(k) for k in desc.index}})
    return pd.DataFrame(stats)


def all_trials_frame(datas: Sequence[StudyData]) -> pd.DataFrame:
    """Every trial of every study, with a `study` column first (the compare report's csv/parquet)."""
    frame = pd.concat([d.frame.assign(study=d.name) for d in datas], ignore_index=True)
    frame = frame[["study", *[c for c in frame.columns if c != "study"]]]
    return text_if_mixed(frame, [c for c in frame.columns if c.startswith("param_")])


def provenance_warnings(datas: Sequence[StudyData]) -> list[str]:
    """A warning for each study whose base weights, tokenizer, data or eval subset differ from the first
    study's (harness.trial.provenance): their metric values are then not comparable."""
    return provenance.compare_warnings([(d.name, attrs.provenance(d.study)) for d in datas])


def compare_markdown(datas: Sequence[StudyData]) -> str:
    names = [d.name for d in datas]
    lines = [f"# Study comparison: {' vs '.join(names)}", ""]
    lines += [f"**{w}**\n" for w in provenance_warnings(datas)]
    if len({d.metric for d in datas}) > 1:
        lines += ["_The studies optimise different metrics; their values are not directly comparable._", ""]
    lines += ["## Best per study", "", md_table(compare_frame(datas)), ""]
    lines += ["## Metric distribution (complete trials)", "", md_table(distribution_frame(datas)), ""]
    ladder = baselines_by_study(datas)
    if not ladder.empty:
        lines += ["## Baselines (each study's, beside its best trial)", "", md_table(ladder), ""]
    lines += ["Plots: report.html (opens offline).", ""]
    return "\n".join(lines)


def compare_html(datas: Sequence[StudyData]) -> str:
    metrics = {d.metric for d in datas}
    y_title = metrics.pop() if len(metrics) == 1 else "objective (metrics differ per study)"
    values = {d.name: [t.values[0] for t in d.trials((TrialState.COMPLETE,))] for d in datas}

    def best_curves() -> Any:
        curves = []
        for d in datas:
            best = d.best()
            if best is not None:
                curves += curves_for(d, [best], highlight=best.number, with_study=True)
        return (
            plots.learning_curves(curves, "eval_loss")
            if curves
            else plots.note("no complete trial in any study")
        )

    sections = [
        Section(
            "best-per-study", "Best value and parameters per study", plots.table_html(compare_frame(datas))
        ),
        Section(
            "distribution-table", "Metric distribution (table)", plots.table_html(distribution_frame(datas))
        ),
        plots.plot_section(
            "metric-distribution", "Metric distribution per study", lambda: plots.value_boxes(values, y_title)
        ),
        plots.plot_section("best-learning-curves", "Learning curves of each study's best trial", best_curves),
    ]
    ladder = baselines_by_study(datas)
    if not ladder.empty:
        sections.insert(2, Section("baselines", "Baselines beside each best trial", plots.table_html(ladder)))
    summary = (
        plots.note("The studies optimise different metrics.") if len({d.metric for d in datas}) > 1 else ""
    )
    return plots.page(f"Study comparison: {' vs '.join(d.name for d in datas)}", summary, sections)


def write_compare(datas: Sequence[StudyData], out_dir: Path, formats: Sequence[str]) -> list[Path]:
    return write_outputs(
        out_dir,
        formats,
        all_trials_frame(datas),
        lambda: compare_markdown(datas),
        lambda: compare_html(datas),
    )


def load_studies(targets: Sequence[str], results_dir: str, storage: str | None) -> list[StudyData]:
    """Two or more distinct studies, each opened read-only."""
    if len(targets) < 2:
        raise HarnessError("comparing needs two or more studies, e.g. `sweep compare pricer pricer-v2`")
    datas = [load_study_data(t, results_dir, storage) for t in targets]
    if len({d.name for d in datas}) < len(datas):
        raise HarnessError(f"the same study is named twice: {' '.join(targets)}")
    return datas


def best_table(datas: Sequence[StudyData]) -> Table:
    """The terminal summary of a comparison: each study's metric, counts and best trial."""
    table = Table(title="best per study", title_justify="left")
    for col in ("study", "metric", "trials", "best", "trial"):
        table.add_column(col)
    for d in datas:
        best = d.best()
        table.add_row(
            d.name,
            f"{d.metric} ({d.goal})",
            counts_text(counts_by_state(d.study)),
            f"{ranking.primary_value(best):.6g}" if best else "-",
            str(best.number) if best else "-",
        )
    return table


def compare_dir(results_dir: str, datas: Sequence[StudyData]) -> Path:
    return Path(results_dir) / ("compare-" + "-vs-".join(d.name for d in datas))


# ----------------------------------------------------------------------------------------------------
# Comparing chosen trials of one study


def pick_trials(data: StudyData, numbers: Sequence[int]) -> list[FrozenTrial]:
    by_number = {t.number: t for t in data.trials()}
    missing = [n for n in numbers if n not in by_number]
    if missing:
        have = f"trials 0-{max(by_number)}" if by_number else "no trials"
        raise HarnessError(f"study {data.name!r} has no trial {', '.join(map(str, missing))} (it has {have})")
    return [by_number[n] for n in dict.fromkeys(numbers)]


def trials_side_by_side(data: StudyData, trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """Rows are fields (state, value, params, metrics, steps), columns are the chosen trials."""
    frame = data.frame.set_index("number").loc[[t.number for t in trials]]
    frame.index = [f"trial {n}" for n in frame.index]
    side = frame.T.astype(object)
    side.index.name = "field"
    return side.reset_index()


def trials_markdown(data: StudyData, trials: Sequence[FrozenTrial]) -> str:
    numbers = ", ".join(str(t.number) for t in trials)
    return "\n".join(
        [
            f"# {data.name}: trials {numbers} side by side",
            "",
            f"Metric: {data.metric} ({data.goal}).",
            "",
            md_table(trials_side_by_side(data, trials)),
            "",
            "Plots: report.html (opens offline).",
            "",
        ]
    )


def trials_html(data: StudyData, trials: Sequence[FrozenTrial]) -> str:
    best = data.best()
    rank = {t.number: i for i, t in enumerate(data.ranked())}
    ranked = sorted(trials, key=lambda t: rank[t.number])
    reference = _first_generations(data, ranked)
    columns = {trial_label(data, t): predictions_by_prompt(data, t) for t in ranked}
    sections = [
        Section("trials-table", "Trials side by side", plots.table_html(trials_side_by_side(data, trials))),
        plots.plot_section(
            "learning-curves",
            "Eval-loss learning curves",
            lambda: plots.learning_curves(
                curves_for(data, trials, best.number if best else None), "eval_loss"
            ),
        ),
        Section(
            "generations", "Sample generations", plots.generations_table(reference, columns, SAMPLE_ROWS)
        ),
    ]
    numbers = ", ".join(str(t.number) for t in trials)
    return plots.page(f"{data.name}: trials {numbers}", "", sections)


def _first_generations(data: StudyData, trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """Prompt/reference rows from the first of `trials` that has generations (pruned ones have none)."""
    for t in trials:
        rows = trialdir.read_generations(data.trial_folder(t.number))
        if rows:
            return rows
    return []


def write_trials_compare(data: StudyData, numbers: Sequence[int], formats: Sequence[str]) -> list[Path]:
    trials = pick_trials(data, numbers)
    out_dir = data.folder / ("compare-trials-" + "-".join(str(t.number) for t in trials))
    frame = data.frame[data.frame["number"].isin([t.number for t in trials])].reset_index(drop=True)
    return write_outputs(
        out_dir, formats, frame, lambda: trials_markdown(data, trials), lambda: trials_html(data, trials)
    )
