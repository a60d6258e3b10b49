"""`sweep report / compare / status / list`: trials -> DataFrame -> md/csv/parquet/html, and terminal views.

Reads only the storage and the trial folders and never writes to the storage, so it is safe to run while a
sweep is running (SQLite readers do not block the writer; journal files are read without their lock).
Outputs: results/<study>/report.{md,html,csv,parquet}; comparisons in results/compare-<a>-vs-<b>/.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from harness import plots, results
from harness import study as st
from harness.errors import HarnessError, StorageError
from harness.plots import Curve, Section

FORMATS = ("md", "html", "csv", "parquet")
STEP_COLUMNS = ("best_step", "steps_run", "pruned_at")
RESOURCE_COLUMNS = ("peak_rss_mb", "cuda_peak_allocated_mb", "cuda_peak_reserved_mb")
STATE_RANK = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3}
TOP_K = 5
SAMPLE_ROWS = 8


# ----------------------------------------------------------------------------------------------------
# Loading (read-only)


@dataclass
class StudyData:
    """A study as reports see it: the storage's record, its trial folders, and the trials table."""

    study: optuna.Study
    url: str
    folder: Path
    frame: pd.DataFrame

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def config(self) -> dict[str, Any]:
        return self.study.user_attrs.get("config") or {}

    @property
    def metric(self) -> str:
        return self.study.user_attrs.get("metric") or (self.config.get("metric") or {}).get("name") or "value"

    @property
    def goal(self) -> str:
        return st.goals(self.study)[0]

    @property
    def task(self) -> str:
        return self.study.user_attrs.get("task") or self.config.get("task") or "text"

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def best(self) -> FrozenTrial | None:
        return best_of(self.study)

    def ranked(self) -> list[FrozenTrial]:
        return ranked_trials(self.study)

    def trial_folder(self, number: int) -> Path:
        return results.trial_dir(self.folder, number)


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first, then pruned, running, failed; ties by trial number."""
    sign = -1.0 if st.goals(study)[0] == "maximize" else 1.0
    pareto = st.pareto_numbers(study)  # multi-objective: Pareto-optimal trials first, then by metrics[0]

    def key(t: FrozenTrial) -> tuple[int, bool, float, int]:
        v = st.primary_value(t)
        value = sign * v if v is not None else math.inf
        return (STATE_RANK.get(t.state, 4), t.number not in pareto, value, t.number)

    return sorted(study.get_trials(deepcopy=False), key=key)


def best_of(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial (the lowest number among equals), without study.best_trial's exception.
    Multi-objective: the Pareto-optimal trial best on the first metric (see study.best_trial)."""
    return st.best_trial(study)


def load_study_data(target: str, results_dir: str = "results", storage: str | None = None) -> StudyData:
    url, name = st.locate(target, results_dir, storage)
    study = load_readonly(url, name)
    return StudyData(study, url, study_folder(study, results_dir), trials_frame(study))


def load_readonly(url: str, name: str) -> optuna.Study:
    storage = open_existing(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        have = f"; it holds: {', '.join(names)}" if names else "; it holds no study"
        raise StorageError(f"storage {st.mask_url(url)} has no study named {name!r}{have}") from None


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist: reading must create nothing (not even an empty journal)."""
    st.check_url(url)
    journal = _journal_file(url)
    if journal is not None and not journal.exists():
        raise StorageError(f"no journal storage at {journal} (run `sweep run` first)")
    with warnings.catch_warnings():
        # RDBStorage's heartbeat argument is "experimental": noise for someone reading a report.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return st.open_storage(url, create_dirs=False)


def _journal_file(url: str) -> Path | None:
    # Same forms as harness.study accepts: journal:PATH, or a bare path ending in .log / .journal.
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:").removeprefix("//"))
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url)
    return None


def study_folder(study: optuna.Study, results_dir: str) -> Path:
    """results/<study>: where the trial folders are and the report goes.

    The --results-dir given now wins; the results_dir the study was created with is the fallback, so a
    study run with `results_dir: runs` in its sweep file still finds its trial folders."""
    here = Path(results_dir) / study.study_name
    stored = (study.user_attrs.get("config") or {}).get("results_dir")
    if not here.exists() and stored and (Path(stored) / study.study_name).exists():
        return Path(stored) / study.study_name
    return here


# ----------------------------------------------------------------------------------------------------
# The trials table


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial order: number, state, value, param_<name>..., metrics..., steps,
    duration_s, peak memory, fail_reason. Missing values are NaN/<NA>, never invented."""
    trials = study.get_trials(deepcopy=False)
    params = _ordered(p for t in trials for p in t.params)
    metric_names = _ordered(m for t in trials for m in (t.user_attrs.get("metrics") or {}))
    fixed = {"number", "state", "value", *STEP_COLUMNS, "duration_s", *RESOURCE_COLUMNS, "fail_reason"}
    # A custom metric called e.g. "value" must not overwrite the objective column.
    metric_cols = {m: (f"metric_{m}" if m in fixed or m.startswith("param_") else m) for m in metric_names}
    resources = ["peak_rss_mb"] + [c for c in RESOURCE_COLUMNS[1:] if any(c in t.user_attrs for t in trials)]
    columns = [
        "number",
        "state",
        "value",
        *(f"param_{p}" for p in params),
        *metric_cols.values(),
        *STEP_COLUMNS,
        "duration_s",
        *resources,
        "fail_reason",
    ]
    rows = []
    for t in trials:
        attrs = t.user_attrs
        metrics = attrs.get("metrics") or {}
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": st.primary_value(t)}
        row.update({f"param_{p}": t.params.get(p) for p in params})
        row.update({col: metrics.get(m) for m, col in metric_cols.items()})
        row.update({c: attrs.get(c) for c in STEP_COLUMNS})
        row["duration_s"] = trial_duration(t)
        row.update({c: attrs.get(c) for c in resources})
        # Only a failure has a reason (the objective also tags pruned trials that have no value).
        row["fail_reason"] = attrs.get("fail_reason") if t.state == TrialState.FAIL else None
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    if st.is_multi(study):  # which trials are on the Pareto front (no trial is "the" best)
        pareto = st.pareto_numbers(study)
        frame.insert(3, "pareto", [n in pareto for n in frame["number"]])
    return _typed(frame, [f"param_{p}" for p in params], list(metric_cols.values()), resources)


def _typed(frame: pd.DataFrame, params: list[str], metrics: list[str], resources: list[str]) -> pd.DataFrame:
    """Stable dtypes, so csv/parquet readers and comparisons across studies see the same schema."""
    frame = frame.astype({"number": "int64", "state": "str", "value": "float64", "fail_reason": "str"})
    frame = frame.astype({c: "Int64" for c in STEP_COLUMNS})
    frame = frame.astype({c: "float64" for c in ["duration_s", *resources, *metrics]})
    return _text_if_mixed(frame, params)


def _text_if_mixed(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A column mixing types (a categorical like [0, "auto"], or one param typed differently in two
    studies) cannot be a parquet column; as text it stays readable and comparable."""
    for col in columns:
        kinds = {type(v) for v in frame[col] if not _missing(v)}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[col] = frame[col].map(lambda v: None if _missing(v) else str(v)).astype("str")
    return frame


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def trial_duration(t: FrozenTrial) -> float | None:
    """The recipe's own timing when it finished; storage timestamps for a failed or interrupted trial."""
    d = t.user_attrs.get("duration_s")
    if isinstance(d, (int, float)):
        return float(d)
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def _ordered(names: Iterable[str]) -> list[str]:
    """First-seen order: params appear as the sweep file lists them, not alphabetically."""
    return list(dict.fromkeys(names))


def _primary_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """optuna.visualization/importance need `target=` for a multi-objective study: use metrics[0]."""
    return (lambda t: t.values[0]) if st.is_multi(study) else None


def best_first(data: StudyData) -> pd.DataFrame:
    """The trials table in report order (see ranked_trials)."""
    order = [t.number for t in data.ranked()]
    return data.frame.set_index("number").loc[order].reset_index()


# ----------------------------------------------------------------------------------------------------
# Parameter importances


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """(importances, note). Empty importances come with the reason; non-empty ones with a caveat if any.

    optuna's default evaluator (PED-ANOVA) needs no extra packages; with few trials its ranking is rough,
    and the note says so rather than presenting noise as a finding."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if st.primary_value(t) is not None
    ]
    if len(complete) < 2:
        return {}, f"parameter importances need at least 2 complete trials; this study has {len(complete)}"
    names = _ordered(p for t in complete for p in t.params)
    varying = [p for p in names if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varying:
        return (
            {},
            "every complete trial used the same parameter values, so no parameter can explain a difference",
        )
    if len({st.primary_value(t) for t in complete}) < 2:
        return {}, "every complete trial reached the same value, so no parameter made a difference"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "few trials" warnings: the note below says it once, plainly
            importances = optuna.importance.get_param_importances(
                study, params=varying, target=_primary_target(study)
            )
    except Exception as e:  # noqa: BLE001 - a report without importances beats no report
        return {}, f"parameter importances could not be computed: {type(e).__name__}: {e}"
    importances = {k: float(v) for k, v in importances.items() if math.isfinite(v)}
    if not importances:
        return {}, "parameter importances came out undefined for these trials"
    caveat = ""
    if len(complete) < 20:
        caveat = f"estimated from {len(complete)} complete trials with optuna's PED-ANOVA: a rough ranking"
    return importances, caveat


# ----------------------------------------------------------------------------------------------------
# Trial folders -> curves and generations


def eval_curve(data: StudyData, t: FrozenTrial, key: str = "eval_loss") -> tuple[list[float], list[float]]:
    """`key` by step from the trial's log.jsonl; the objective's reported values when the log is missing
    (a running trial has no log yet) and the objective is that metric."""
    history = results.read_eval_history(data.trial_folder(t.number))
    points = [(h["step"], h[key]) for h in history if _finite(h.get(key))]
    if not points and data.metric == key:
        points = sorted((s, v) for s, v in t.intermediate_values.items() if _finite(v))
    return [p[0] for p in points], [p[1] for p in points]


def trial_label(data: StudyData, t: FrozenTrial, with_study: bool = False) -> str:
    head = f"{data.name} " if with_study else ""
    value = f" {data.metric} {st.primary_value(t):.4g}" if st.primary_value(t) is not None else ""
    return f"{head}trial {t.number} ({t.state.name.lower()}{value})"


def params_text(params: dict[str, Any]) -> str:
    from harness.runner import SHORT

    return " ".join(f"{SHORT.get(k, k)}={plots.fmt_cell(v)}" for k, v in params.items())


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
    rows = results.read_generations(data.trial_folder(t.number))
    return {str(r["prompt"]): str(r.get("prediction", "")) for r in rows if "prompt" in r}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------------------------------
# One study: terminal summary, markdown, html


def counts_by_state(data: StudyData | optuna.Study) -> dict[str, int]:
    study = data.study if isinstance(data, StudyData) else data
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def counts_text(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{n} {s.lower()}" for s, n in sorted(counts.items(), key=lambda kv: _state_rank(kv[0]))]
    return f"{total}" + (f" ({', '.join(parts)})" if parts else "")


def _state_rank(name: str) -> int:
    return next((r for s, r in STATE_RANK.items() if s.name == name), 4)


def best_text(data: StudyData) -> str:
    best = data.best()
    if best is None:
        return "no complete trial yet"
    step = best.user_attrs.get("best_step")
    at = f" at step {step}" if step is not None else ""
    return f"trial {best.number}: {data.metric} = {st.primary_value(best):.6g}{at}"


def print_summary(data: StudyData, console: Console, importances: dict[str, float], why: str) -> None:
    from harness.runner import trials_table

    console.print(
        f"[bold]{data.name}[/] ({st.mask_url(data.url)}): {data.metric} ({data.goal}), task {data.task}"
    )
    console.print(f"trials: {counts_text(counts_by_state(data))}")
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
        console.print(f"[dim]{why}[/]" if importances else f"parameter importances: {why}")


def _objectives_text(data: StudyData) -> str:
    if not st.is_multi(data.study):
        return f"{data.metric} ({data.goal})"
    pairs = zip(st.metric_names(data.study), st.goals(data.study), strict=True)
    names = ", ".join(f"{n} ({g})" for n, g in pairs)
    return (
        f"{names}: multi-objective, {len(st.pareto_numbers(data.study))} Pareto-optimal trial(s); "
        f"'best' is the Pareto-optimal trial best on {data.metric}, plots show {data.metric} only"
    )


def summary_frame(data: StudyData) -> pd.DataFrame:
    """The few facts at the top of every report: where, what, how many, who won."""
    best = data.best()
    rows = [
        ("storage", st.mask_url(data.url)),
        ("metric", _objectives_text(data)),
        ("task", data.task),
        ("trials", counts_text(counts_by_state(data))),
        ("best", best_text(data)),
        ("best params", params_text(best.params) if best else "-"),
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
    lines += ["## Parameters that mattered most", ""]
    if importances:
        lines += [md_table(pd.DataFrame(list(importances.items()), columns=["parameter", "importance"])), ""]
    if why:
        lines += [f"_{why}_", ""]
    lines += ["## Trials (best first)", "", md_table(best_first(data)), ""]
    if best is not None:
        rows = results.read_generations(data.trial_folder(best.number))[:SAMPLE_ROWS]
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

    sections = [
        Section("trials", "Trials (best first)", plots.table_html(best_first(data))),
        plots.plot_section(
            "optimisation-history", "Optimisation history", optuna_plot(vis.plot_optimization_history)
        ),
        _importance_section(importances, why),
        plots.plot_section(
            "parallel-coordinates", "Parallel coordinates", optuna_plot(vis.plot_parallel_coordinate)
        ),
        plots.plot_section("slice-plots", "Slice plots", lambda: _slice_plot(data, complete)),
        *([_pareto_section(data, complete)] if st.is_multi(data.study) else []),
        plots.plot_section(
            "learning-curves",
            "Eval-loss learning curves",
            lambda: plots.learning_curves(
                curves_for(data, data.trials(), best.number if best else None), "eval_loss"
            ),
        ),
    ]
    if data.task == "pricer":
        sections.append(
            plots.plot_section(
                "price-scatter",
                "Predicted vs true price (best trial)",
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

    names = st.metric_names(data.study)

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
    rows = results.read_generations(data.trial_folder(best.number))
    return plots.price_scatter(rows, f"trial {best.number}")


def _top_generations(data: StudyData, k: int = 3) -> str:
    top = [t for t in data.ranked() if t.state == TrialState.COMPLETE][:k]
    if not top:
        return plots.note("no complete trial yet")
    reference = results.read_generations(data.trial_folder(top[0].number))
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
            results.atomic_write_text(path, markdown())
        elif fmt == "html":
            results.atomic_write_text(path, html())
        elif fmt == "csv":
            results.atomic_write_text(path, frame.to_csv(index=False))
        elif fmt == "parquet":
            atomic_write_parquet(frame, path)
        written.append(path)
    return written


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def md_table(frame: pd.DataFrame) -> str:
    """GitHub markdown, rendered here so no extra dependency (tabulate) is needed; numbers right-aligned."""
    cols = [str(c) for c in frame.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame
    ]
    head = "| " + " | ".join(_md_escape(c) for c in cols) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = [
        "| " + " | ".join(_md_escape(plots.fmt_cell(v)) for v in row) + " |"
        for row in frame.itertuples(index=False, name=None)
    ]
    return "\n".join([head, rule, *body])


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


# ----------------------------------------------------------------------------------------------------
# Comparing studies


def compare_frame(datas: Sequence[StudyData]) -> pd.DataFrame:
    """One row per study: counts, best value and best params (param_<name>, blank where a study lacks it)."""
    rows = []
    for d in datas:
        best = d.best()
        counts = counts_by_state(d)
        row: dict[str, Any] = {
            "study": d.name,
            "metric": d.metric,
            "goal": d.goal,
            "trials": sum(counts.values()),
            **{s.lower(): counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
            "best_trial": best.number if best else None,
            "best_value": st.primary_value(best) if best else None,
            "best_step": best.user_attrs.get("best_step") if best else None,
        }
        row.update({f"param_{k}": v for k, v in (best.params if best else {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.astype({"best_trial": "Int64", "best_step": "Int64", "best_value": "float64"})


def distribution_frame(datas: Sequence[StudyData]) -> pd.DataFrame:
    """The objective over complete trials, per study: count, mean, std, min, quartiles, max."""
    stats = []
    for d in datas:
        values = pd.Series([st.primary_value(t) for t in d.trials((TrialState.COMPLETE,))], dtype="float64")
        desc = values.describe()
        stats.append({"study": d.name, "metric": d.metric, **{k: desc.get(k) for k in desc.index}})
    return pd.DataFrame(stats)


def all_trials_frame(datas: Sequence[StudyData]) -> pd.DataFrame:
    """Every trial of every study, with a `study` column first (the compare report's csv/parquet)."""
    frame = pd.concat([d.frame.assign(study=d.name) for d in datas], ignore_index=True)
    frame = frame[["study", *[c for c in frame.columns if c != "study"]]]
    return _text_if_mixed(frame, [c for c in frame.columns if c.startswith("param_")])


def compare_markdown(datas: Sequence[StudyData]) -> str:
    names = [d.name for d in datas]
    lines = [f"# Study comparison: {' vs '.join(names)}", ""]
    if len({d.metric for d in datas}) > 1:
        lines += ["_The studies optimise different metrics; their values are not directly comparable._", ""]
    lines += ["## Best per study", "", md_table(compare_frame(datas)), ""]
    lines += ["## Metric distribution (complete trials)", "", md_table(distribution_frame(datas)), ""]
    lines += ["Plots: report.html (opens offline).", ""]
    return "\n".join(lines)


def compare_html(datas: Sequence[StudyData]) -> str:
    metrics = {d.metric for d in datas}
    y_title = metrics.pop() if len(metrics) == 1 else "objective (metrics differ per study)"
    values = {d.name: [st.primary_value(t) for t in d.trials((TrialState.COMPLETE,))] for d in datas}

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
        rows = results.read_generations(data.trial_folder(t.number))
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


# ----------------------------------------------------------------------------------------------------
# Status and list


def discover(results_dir: str, storage: str | None) -> list[tuple[str, list[optuna.Study] | StorageError]]:
    """(storage URL, its studies or the error opening it) for --storage, or for every results/*/study.db."""
    if storage:
        urls = [storage]
    else:
        urls = [f"sqlite:///{p.as_posix()}" for p in sorted(Path(results_dir).glob("*/study.db"))]
    found: list[tuple[str, list[optuna.Study] | StorageError]] = []
    for url in urls:
        try:
            opened = open_existing(url)
            names = optuna.get_all_study_names(opened)
            found.append((url, [optuna.load_study(study_name=n, storage=opened) for n in names]))
        except StorageError as e:
            if storage:
                raise  # the one storage the user named: its error is the answer
            found.append((url, e))  # one broken database must not hide the others
    return found


def status_lines(study: optuna.Study, url: str, now: datetime | None = None) -> list[str]:
    """Plain lines (no markup): counts, best so far, each running trial's last step, and an ETA."""
    from harness.watch import collect, fmt_duration

    view = collect(study, now)
    lines = [f"{view.name}  ({st.mask_url(url)})  {view.metric} ({view.goal})"]
    total = f"/{view.n_trials}" if view.n_trials is not None else ""
    parts = [f"{n} {s.lower()}" for s, n in sorted(view.counts.items(), key=lambda kv: _state_rank(kv[0]))]
    lines.append(f"  trials: {view.finished}{total} finished; " + (", ".join(parts) or "none yet"))
    if view.best is not None:
        lines.append(
            f"  best: trial {view.best.number}  {view.metric} {st.primary_value(view.best):.6g}  "
            + params_text(view.best.params)
        )
    else:
        lines.append("  best: no complete trial yet")
    for r in view.running:
        of = f"/{view.max_steps}" if view.max_steps else ""
        step = f"step {r.step}{of}" if r.step is not None else "no eval yet"
        value = f"  {view.metric} {r.value:.4g}" if r.value is not None else ""
        lines.append(f"  running: trial {r.number}  {step}{value}  ({fmt_duration(r.elapsed_s)} so far)")
    lines.append("  " + eta_text(view))
    return lines


def eta_text(view: Any) -> str:
    from harness.watch import fmt_duration

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


def list_table(found: list[tuple[str, list[optuna.Study] | StorageError]]) -> Table:
    table = Table(title="studies", title_justify="left")
    for col, just in [
        ("study", "left"),
        ("storage", "left"),
        ("trials", "right"),
        ("complete", "right"),
        ("pruned", "right"),
        ("fail", "right"),
        ("running", "right"),
        ("metric", "left"),
        ("best", "right"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for url, studies in found:
        if isinstance(studies, StorageError):
            table.add_row("?", st.mask_url(url), "", "", "", "", "", "", f"error: {studies}")
            continue
        for study in studies:
            counts = counts_by_state(study)
            best = best_of(study)
            metric = study.user_attrs.get("metric") or "value"
            table.add_row(
                study.study_name,
                st.mask_url(url),
                str(sum(counts.values())),
                *(str(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")),
                f"{metric} ({st.goals(study)[0]})",
                f"{st.primary_value(best):.6g} (#{best.number})" if best else "-",
            )
    return table


# ----------------------------------------------------------------------------------------------------
# CLI verbs


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    formats = parse_formats(getattr(args, "format", None))
    targets = list(args.study)
    results_dir = args.results_dir or "results"
    if getattr(args, "trials", None):
        if len(targets) != 1:
            raise HarnessError("--trials compares trials of one study: give exactly one study")
        data = load_study_data(targets[0], results_dir, args.storage)
        _print_written(console, write_trials_compare(data, args.trials, formats))
        return 0
    if getattr(args, "compare", False):
        return _compare(targets, results_dir, args.storage, formats, console)
    for target in targets:
        data = load_study_data(target, results_dir, args.storage)
        paths, importances, why = write_report(data, formats)
        print_summary(data, console, importances, why)
        _print_written(console, paths)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    formats = parse_formats(getattr(args, "format", None) or "md,html")
    return _compare(list(args.study), args.results_dir or "results", args.storage, formats, console)


def _compare(
    targets: list[str], results_dir: str, storage: str | None, formats: list[str], console: Console
) -> int:
    if len(targets) < 2:
        raise HarnessError("comparing needs two or more studies, e.g. `sweep compare pricer pricer-v2`")
    datas = [load_study_data(t, results_dir, storage) for t in targets]
    if len({d.name for d in datas}) < len(datas):
        raise HarnessError(f"the same study is named twice: {' '.join(targets)}")
    table = Table(title="best per study", title_justify="left")
    for col in ("study", "metric", "trials", "best", "trial"):
        table.add_column(col)
    for d in datas:
        best = d.best()
        table.add_row(
            d.name,
            f"{d.metric} ({d.goal})",
            counts_text(counts_by_state(d)),
            f"{st.primary_value(best):.6g}" if best else "-",
            str(best.number) if best else "-",
        )
    console.print(table)
    _print_written(console, write_compare(datas, compare_dir(results_dir, datas), formats))
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from harness.runner import trials_table

    results_dir = args.results_dir or "results"
    if args.study:
        data = load_study_data(args.study, results_dir, args.storage)
        for line in status_lines(data.study, data.url):
            console.print(line, markup=False)
        console.print(trials_table(data.study, data.metric, data.goal))
        return 0
    found = discover(results_dir, args.storage)
    if not found:
        console.print(f"no studies in {results_dir}/ (run `sweep run` first)")
    for url, studies in found:
        if isinstance(studies, StorageError):
            console.print(f"{st.mask_url(url)}: {studies}", markup=False)
            continue
        for study in studies:
            for line in status_lines(study, url):
                console.print(line, markup=False)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    results_dir = args.results_dir or "results"
    found = discover(results_dir, args.storage)
    if not found:
        console.print(f"no studies in {results_dir}/ (run `sweep run` first)")
        return 0
    console.print(list_table(found))
    return 0


def _print_written(console: Console, paths: Sequence[Path]) -> None:
    if paths:
        console.print("wrote " + ", ".join(str(p) for p in paths), markup=False)
