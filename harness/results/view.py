"""The study as one pandas table, and the facts every view of it derives: one rule each.

`sweep report`, `compare`, `status`, `list`, `watch`, `best` and the table `sweep run` ends with all rank
trials with `rank_key`, time them with `trial_duration`, count them with `counts_by_state` and pick the
winner with `study.best_trial`, so no two views of one study can disagree about which trial won or how long a
trial took. Read-only: nothing here writes to the storage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from harness.core import attrs, trialdir
from harness.core.display import SHORT, fmt
from harness.study import noise, ranking
from harness.study import storage as st
from harness.sweepfile import levers

STEP_COLUMNS = (attrs.BEST_STEP, attrs.STEPS_RUN, attrs.PRUNED_AT)
RESOURCE_COLUMNS = (attrs.PEAK_RSS_MB, attrs.CUDA_PEAK_ALLOCATED_MB, attrs.CUDA_PEAK_RESERVED_MB)
COST_COLUMNS = ("device_s", "tokens")  # from the trial's cost record (harness.core.cost): what it spent
TRAINED_COLUMNS = ("lora_modules", "base_layer")
"""What each trial's adapter really covered (attrs.trained): `attention+mlp (7)`, `Linear4bit`."""
# Complete trials first, failed ones (and any other state) last.


# ----------------------------------------------------------------------------------------------------
# A study as reports see it


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
        return attrs.config(self.study)

    @property
    def metric(self) -> str:
        return metric_name(self.study)

    @property
    def goal(self) -> str:
        return ranking.goals(self.study)[0]

    @property
    def task(self) -> str:
        return attrs.task(self.study) or self.config.get("task") or "text"

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def best(self) -> FrozenTrial | None:
        return ranking.best_trial(self.study)

    def ranked(self) -> list[FrozenTrial]:
        return ranked_trials(self.study)

    def trial_folder(self, number: int) -> Path:
        return trialdir.trial_dir(self.folder, number)


def load_study_data(target: str, results_dir: str = "results", storage: str | None = None) -> StudyData:
    """A study name or sweep file -> its StudyData, opened read-only (harness.study.storage.load_readonly)."""
    url, name = st.locate(target, results_dir, storage)
    study = st.load_readonly(url, name)
    return StudyData(study, url, st.study_folder(study, results_dir), trials_frame(study))


def metric_name(study: optuna.Study) -> str:
    """The primary metric's name (user attr `metric`, else the stored config's, else "value")."""
    stored = study.user_attrs
    return attrs.metric(stored) or (attrs.config(stored).get("metric") or {}).get("name") or "value"


# ----------------------------------------------------------------------------------------------------
# Ranking, timing, counting


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial, in rank_key order."""
    return sorted(study.get_trials(deepcopy=False), key=ranking.rank_key(study))


def state_rank(name: str) -> int:
    """rank_key's order for a state's name ("COMPLETE" -> 0): counts are listed in that order."""
    return next((r for s, r in ranking.STATE_RANK.items() if s.name == name), ranking.LAST_RANK)


def trial_duration(t: FrozenTrial) -> float | None:
    """The one duration rule: the recipe's own timing when it finished (what `sweep run` printed for the
    trial, without the storage's bookkeeping); storage timestamps for a failed or interrupted trial."""
    d = attrs.duration_s(t)
    if d is not None:
        return d
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def counts_by_state(study: optuna.Study) -> dict[str, int]:
    """{"COMPLETE": 4, "FAIL": 1, ...}: only the states that occur."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def counts_text(counts: dict[str, int]) -> str:
    """The total, then each state in rank order: `5 (4 complete, 1 fail)`."""
    total = sum(counts.values())
    parts = [f"{n} {s.lower()}" for s, n in sorted(counts.items(), key=lambda kv: state_rank(kv[0]))]
    return f"{total}" + (f" ({', '.join(parts)})" if parts else "")


# ----------------------------------------------------------------------------------------------------
# The trials table


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial order: number, state, value, param_<name>..., what the adapter covered
    (lora_modules, base_layer), metrics..., steps, duration_s, device_s, tokens, peak memory, fail_reason.
    Missing values are NaN/<NA>, never invented."""
    trials = study.get_trials(deepcopy=False)
    params = ordered(p for t in trials for p in t.params)
    metric_names = ordered(m for t in trials for m in attrs.metrics(t))
    trained = list(TRAINED_COLUMNS) if any(attrs.trained(t) for t in trials) else []
    # budget.epochs: each trial's own step budget (its batch size decides it) next to the steps it ran.
    budgeted = (
        [attrs.MAX_STEPS] if (attrs.config(study).get("budget") or {}).get("epochs") is not None else []
    )
    fixed = {
        attrs.MAX_STEPS,
        "number",
        "state",
        "value",
        *TRAINED_COLUMNS,
        *STEP_COLUMNS,
        attrs.DURATION_S,
        *COST_COLUMNS,
        *RESOURCE_COLUMNS,
        "worker",
        attrs.FAIL_REASON,
        *noise.COLUMNS,
        attrs.REPEAT_OF,
        attrs.AUDIT_OF,
    }
    # A custom metric called e.g. "value" must not overwrite the objective column.
    metric_cols = {m: (f"metric_{m}" if m in fixed or m.startswith("param_") else m) for m in metric_names}
    resources = [attrs.PEAK_RSS_MB] + [
        c for c in RESOURCE_COLUMNS[1:] if any(c in t.user_attrs for t in trials)
    ]
    confirmed = noise.config_stats(trials)
    columns = [
        "number",
        "state",
        "value",
        *noise.COLUMNS,
        attrs.REPEAT_OF,
        attrs.AUDIT_OF,
        *(f"param_{p}" for p in params),
        *trained,
        *metric_cols.values(),
        *budgeted,
        *STEP_COLUMNS,
        attrs.DURATION_S,
        *COST_COLUMNS,
        *resources,
        "worker",
        attrs.FAIL_REASON,
    ]
    rows = []
    for t in trials:
        stored = t.user_attrs
        metrics = attrs.metrics(stored)
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": ranking.primary_value(t)}
        stats = confirmed.get(t.number)
        row.update(stats.columns() if stats else dict.fromkeys(noise.COLUMNS))
        row[attrs.REPEAT_OF] = attrs.repeat_of(stored)
        row[attrs.AUDIT_OF] = attrs.audit_of(stored)
        row.update({f"param_{p}": t.params.get(p) for p in params})
        row.update(trained_cells(stored) if trained else {})
        row.update({col: metrics.get(m) for m, col in metric_cols.items()})
        row.update({c: stored.get(c) for c in [*budgeted, *STEP_COLUMNS]})
        row[attrs.DURATION_S] = trial_duration(t)
        row.update({c: attrs.cost(stored).get(c) for c in COST_COLUMNS})
        row.update({c: stored.get(c) for c in resources})
        row["worker"] = worker_text(stored)
        # Only a failure has a reason (the objective also tags pruned trials that have no value).
        row[attrs.FAIL_REASON] = stored.get(attrs.FAIL_REASON) if t.state == TrialState.FAIL else None
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    if ranking.is_multi(study):  # which trials are on the Pareto front (no trial is "the" best)
        pareto = ranking.pareto_numbers(study)
        frame.insert(3, "pareto", [n in pareto for n in frame["number"]])
    return _typed(frame, [f"param_{p}" for p in params], list(metric_cols.values()), resources)


def trained_cells(stored: Mapping[str, Any]) -> dict[str, str | None]:
    """A trial's lora_modules and base_layer, short: `attention (4)` (roles, distinct modules),
    `Linear8bitLt`."""
    got = attrs.trained(stored)
    modules = got.get("lora_modules")
    return {
        "lora_modules": levers.describe(modules) if isinstance(modules, list) else None,
        "base_layer": str(got["base_layer"]) if got.get("base_layer") else None,
    }


def worker_text(stored: Mapping[str, Any]) -> str | None:
    """Who ran a trial: `host:pid (device)` from the user attrs failures.mark_start writes."""
    worker = f"{stored.get(attrs.HOST)}:{stored[attrs.PID]}" if attrs.PID in stored else None
    if worker and stored.get(attrs.DEVICE):
        return f"{worker} ({stored[attrs.DEVICE]})"
    return worker


def _typed(frame: pd.DataFrame, params: list[str], metrics: list[str], resources: list[str]) -> pd.DataFrame:
    """Stable dtypes, so csv/parquet readers and comparisons across studies see the same schema."""
    frame = frame.astype(
        {"number": "int64", "state": "str", "value": "float64", "worker": "str", attrs.FAIL_REASON: "str"}
    )
    frame = frame.astype({c: "str" for c in TRAINED_COLUMNS if c in frame.columns})
    frame = frame.astype(
        {c: "Int64" for c in (*STEP_COLUMNS, "n_seeds", attrs.REPEAT_OF, attrs.AUDIT_OF, "tokens")}
    )
    frame = frame.astype({c: "float64" for c in ("value_mean", "value_std", "value_ci95")})
    frame = frame.astype({c: "float64" for c in [attrs.DURATION_S, "device_s", *resources, *metrics]})
    return text_if_mixed(frame, params)


def text_if_mixed(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A column mixing types (a categorical like [0, "auto"], or one param typed differently in two
    studies) cannot be a parquet column; as text it stays readable and comparable."""
    for col in columns:
        kinds = {type(v) for v in frame[col] if not _missing(v)}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[col] = frame[col].map(lambda v: None if _missing(v) else str(v)).astype("str")
    return frame


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def ordered(names: Iterable[str]) -> list[str]:
    """First-seen order: params appear as the sweep file lists them, not alphabetically."""
    return list(dict.fromkeys(names))


def best_first(data: StudyData) -> pd.DataFrame:
    """The trials table in rank order."""
    order = [t.number for t in data.ranked()]
    return data.frame.set_index("number").loc[order].reset_index()


# ----------------------------------------------------------------------------------------------------
# The trials table in a terminal: the end of `sweep run`, `sweep status STUDY`, the report's summary


def trials_table(study: optuna.Study, metric: str, goal: str, limit: int | None = None) -> Table:
    """All trials in rank_key order (the best `limit` with a limit).

    Multi-objective studies get one column per objective and a ★ on Pareto-optimal trials, which come
    first (then by the primary metric); `metric`/`goal` then name the primary one."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({p for t in trials for p in t.params})
    multi = ranking.is_multi(study)
    names = ranking.metric_names(study) if multi else [metric]
    goal = ranking.goals(study)[0] if multi else goal
    pareto = ranking.pareto_numbers(study)

    title = f"{study.study_name}: trials by {metric} ({goal})"
    if multi:
        objectives = ", ".join(f"{n} ({g})" for n, g in zip(names, ranking.goals(study), strict=True))
        title = f"{study.study_name}: {objectives}; ★ = Pareto-optimal"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("state")
    if multi:
        table.add_column("pareto", justify="center")
    for n in names:
        table.add_column(n, justify="right")
    confirmed = {} if multi else noise.config_stats(trials)
    if confirmed:  # the seed-to-seed noise: mean ± 95% half-width over the config's runs
        table.add_column("mean ± ci95 (n)", justify="right")
    if any(noise.is_repeat(t) for t in trials):
        table.add_column("repeat of", justify="right")
    any_audit = any(attrs.audit_of(t) is not None for t in trials)
    if any_audit:  # `sweep audit`: the pruned trial this one re-trained to the full budget
        table.add_column("audit of", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("s", justify="right")
    for p in param_names:
        table.add_column(SHORT.get(p, p), justify="right")
    # What the adapter covered, where a study varies it (a searched target_modules or quantization).
    shown = [c for c in TRAINED_COLUMNS if len({trained_cells(t.user_attrs)[c] for t in trials} - {None}) > 1]
    for c in shown:
        table.add_column(SHORT.get(c, c), justify="right")
    any_repeat = any(noise.is_repeat(t) for t in trials)
    for t in sorted(trials, key=ranking.rank_key(study))[:limit]:
        steps = t.user_attrs.get(attrs.STEPS_RUN)
        dur = trial_duration(t)
        values = t.values or []
        table.add_row(
            str(t.number),
            t.state.name.lower(),
            *(["★" if t.number in pareto else ""] if multi else []),
            *(fmt(values[i]) if i < len(values) else "-" for i in range(len(names))),
            *([confirmed[t.number].text() if t.number in confirmed else ""] if confirmed else []),
            *([str(attrs.repeat_of(t)) if noise.is_repeat(t) else ""] if any_repeat else []),
            *([str(attrs.audit_of(t) if attrs.audit_of(t) is not None else "")] if any_audit else []),
            str(steps) if steps is not None else "-",
            f"{dur:.0f}" if dur is not None else "-",
            *(fmt(t.params.get(p, "-")) for p in param_names),
            *(trained_cells(t.user_attrs)[c] or "-" for c in shown),
        )
    return table


def noise_lines(study: optuna.Study) -> list[str]:
    """What `sweep confirm`, `sweep report` and the end of a run say about seed noise: the verdict on best
    vs runner-up (harness.study.noise.verdict); nothing for a study without repeats."""
    if ranking.is_multi(study):
        return []
    stats = noise.config_stats(study.get_trials(deepcopy=False))
    text = noise.verdict(stats, ranking.goals(study)[0] == "maximize", metric_name(study))
    return [text] if text else []
