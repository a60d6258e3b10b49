"""What tuning changed: the untrained base vs the best trial, on the same prompts and the same eval subset.

Two records, both cheap next to training:
- `baseline_metrics` (study user attr): the base model's loss (and generation) metrics, measured once per
  study before its first trial (recipe.baseline_metrics).
- per trial (recipes.scoring.compare_with_base, `evaluation.compare_base`): `prediction_before` next to
  `prediction` in generations.jsonl and the base's corpus scores in metrics.json `before_metrics`.
At the end of `sweep run`, the best trial's rows are copied to results/<study>/before_after.jsonl and
`summary_lines` prints what changed, then sets the best trial beside the task baselines
(harness.tasks.baselines: constant answers, a bag-of-words model, the untrained base) and warns when it
does not beat the simplest. Which metrics are shown is the task's (harness.tasks: headline, table).
`baselines_frame` is the same comparison as a table (report.md/html, `sweep compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from harness.core import attrs, trialdir
from harness.sweepfile.schema import LOSS_METRICS, SweepConfig
from harness.tasks import baselines, get
from harness.tasks.baselines import finite

ROW_FIELDS = ("prompt", "reference", "prediction_before", "prediction")


def headline(cfg: SweepConfig) -> list[str]:
    """Generation metrics to compare: the objectives' own, then the task's headline ones (at most 3)."""
    return metric_names([m.name for m in cfg.objectives], get(cfg.task).headline)[:3]


def metric_names(objectives: list[str], columns: tuple[str, ...]) -> list[str]:
    """The objectives that are generation metrics, then the task's `columns` (Task.headline, Task.table)
    not already named."""
    names = [n for n in objectives if n not in LOSS_METRICS]
    return names + [n for n in columns if n not in names]


def write_before_after(cfg: SweepConfig, trial: optuna.trial.FrozenTrial) -> tuple[Path, int] | None:
    """The best trial's before/after rows -> results/<study>/before_after.jsonl (atomic); None when the
    trial has no comparison (compare_base off, no generation rows)."""
    rows = trialdir.read_generations(trialdir.trial_dir(cfg.study_dir, trial.number))
    rows = [r for r in rows if "prediction_before" in r]
    if not rows:
        return None
    path = cfg.study_dir / "before_after.jsonl"
    keep = [{"trial": trial.number, **{k: r.get(k) for k in ROW_FIELDS}, **_scores(r)} for r in rows]
    trialdir.write_jsonl(path, keep)
    return path, len(keep)


def _scores(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ROW_FIELDS}


def summary_lines(cfg: SweepConfig, study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> list[str]:
    """The objective (or eval_loss) untrained -> best; the best trial's headline metrics base -> tuned;
    each headline metric of the best trial beside the task baselines, and a warning when it does not beat
    the simplest; where the per-prompt comparison is."""
    lines: list[str] = []
    baseline = finite(attrs.baseline_metrics(study))
    if best is None:
        if "eval_loss" in baseline:
            lines.append(f"eval_loss: untrained {baseline['eval_loss']:.4g} (no complete trial yet)")
        return lines
    tuned = finite(attrs.metrics(best))
    # dpo/grpo: their objective (rewards_accuracy, reward: eval_loss is a DPO loss of a chosen loss_type,
    # or absent); sft: eval_loss (a generation objective has its own base -> tuned line below).
    objective = cfg.metric.name
    name = objective if cfg.trainer != "sft" and objective in baseline and objective in tuned else "eval_loss"
    if name in baseline and name in tuned:
        b, t = baseline[name], tuned[name]
        ratio = f" ({t / b:.2f}x)" if b > 0 else ""
        lines.append(f"{name}: untrained {b:.4g} -> best {t:.4g}{ratio}  (trial {best.number})")
    before = finite(attrs.before_metrics(best))
    pairs = [f"{n} {before[n]:.4g} -> {tuned[n]:.4g}" for n in headline(cfg) if n in before and n in tuned]
    if pairs:
        lines.append(f"best trial {best.number}: {', '.join(pairs)} (base -> tuned)")
    lines += baseline_lines(cfg, study, best)
    written = write_before_after(cfg, best)
    if written:
        path, n = written
        lines.append(f"before/after on {n} prompts: {path}")
    return lines


def baseline_lines(cfg: SweepConfig, study: optuna.Study, best: optuna.trial.FrozenTrial) -> list[str]:
    """`best trial 5: mae 54.84 | baselines: mean 67.16, median 58.31, bag_of_words 14.44, ...` per
    headline metric, then the warning of baselines.verdict when there is one."""
    rungs = baselines.ladder(study.user_attrs)
    tuned = finite(attrs.metrics(best))
    lines = []
    for name in headline(cfg):
        shown = [f"{b} {m[name]:.4g}" for b, m in rungs.items() if name in m]
        if name in tuned and shown:
            lines.append(
                f"best trial {best.number}: {name} {tuned[name]:.4g} | baselines: {', '.join(shown)}"
            )
    warning = baselines.verdict(cfg.task, cfg.metric.name, best.number, tuned, rungs)
    return lines + ([warning] if warning else [])


def baselines_frame(
    task: str, objective: str, user_attrs: dict[str, Any], best: optuna.trial.FrozenTrial | None
) -> pd.DataFrame:
    """The ladder as a table: one row per baseline (what it predicts, its metrics), then the best trial.
    Empty when the study stored no baselines."""
    rungs = baselines.ladder(user_attrs)
    if not rungs:
        return pd.DataFrame()
    tuned = finite(attrs.metrics(best)) if best is not None else {}
    metrics = [
        m
        for m in metric_names([objective], get(task).table)
        if m in tuned or any(m in r for r in rungs.values())
    ]
    rows: list[dict[str, Any]] = [
        {"model": name, "what": baselines.about(task, name), **{m: r.get(m) for m in metrics}}
        for name, r in rungs.items()
    ]
    if best is not None:
        rows.append(
            {
                "model": f"best trial {best.number}",
                "what": "the fine-tune",
                **{m: tuned.get(m) for m in metrics},
            }
        )
    return pd.DataFrame(rows).astype({m: "float64" for m in metrics})


def baselines_report(
    task: str, objective: str, user_attrs: dict[str, Any], best: optuna.trial.FrozenTrial | None
) -> tuple[pd.DataFrame, str | None]:
    """A stored study's baselines table (baselines_frame) and baselines.verdict's warning, if any."""
    table = baselines_frame(task, objective, user_attrs, best)
    if best is None:
        return table, None
    tuned = finite(attrs.metrics(best))
    return table, baselines.verdict(task, objective, best.number, tuned, baselines.ladder(user_attrs))


def metric_references(metric: str, user_attrs: dict[str, Any]) -> dict[str, float]:
    """Each baseline's value of `metric`: reference lines in the plots of that metric."""
    return {name: m[metric] for name, m in baselines.ladder(user_attrs).items() if metric in m}


def price_references(study_dir: Path, task: str) -> dict[str, list[tuple[float, float]]]:
    """Each baseline's (true, predicted) prices, from baselines.jsonl: the predicted-vs-true scatter of a
    task with a label (the price its answers state: Task.answer_value)."""
    answer_value = get(task).answer_value
    out: dict[str, list[tuple[float, float]]] = {}
    for row in baselines.read_rows(study_dir):
        true = row.get("price_true")
        if not isinstance(true, (int, float)):
            continue
        for name, answer in row.items():
            pred = answer_value(str(answer)) if name not in baselines.ROW_FIELDS else None
            if pred is not None:
                out.setdefault(name, []).append((float(true), pred))
    return out
