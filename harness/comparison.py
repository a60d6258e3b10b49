"""What tuning changed: the untrained base vs the best trial, on the same prompts and the same eval subset.

Two records, both cheap next to training:
- `baseline_metrics` (study user attr): the base model's loss (and generation) metrics, measured once per
  study before its first trial (recipe.baseline_metrics).
- per trial (recipe.compare_with_base, `evaluation.compare_base`): `prediction_before` next to
  `prediction` in generations.jsonl and the base's corpus scores in metrics.json `before_metrics`.
At the end of `sweep run`, the best trial's rows are copied to results/<study>/before_after.jsonl and
`summary_lines` prints what changed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna

from harness import trialdir
from harness.config import LOSS_METRICS, SweepConfig

# The numbers a user of each task looks at first.
HEADLINE = {"pricer": ("mae", "hit_rate"), "text": ("rougeL", "exact_match")}
ROW_FIELDS = ("prompt", "reference", "prediction_before", "prediction")


def finite(metrics: dict[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def headline(cfg: SweepConfig) -> list[str]:
    """Generation metrics to compare: the objectives' own, then the task's headline ones (at most 3)."""
    names = [m.name for m in cfg.objectives if m.name not in LOSS_METRICS]
    names += [n for n in HEADLINE.get(cfg.task, ()) if n not in names]
    return names[:3]


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
    """At most 3 lines: eval_loss untrained -> best; the best trial's headline metrics base -> tuned;
    where the per-prompt comparison is."""
    lines: list[str] = []
    baseline = finite(study.user_attrs.get("baseline_metrics"))
    if best is None:
        if "eval_loss" in baseline:
            lines.append(f"eval_loss: untrained {baseline['eval_loss']:.4g} (no complete trial yet)")
        return lines
    tuned = finite(best.user_attrs.get("metrics"))
    if "eval_loss" in baseline and "eval_loss" in tuned:
        b, t = baseline["eval_loss"], tuned["eval_loss"]
        ratio = f" ({t / b:.2f}x)" if b > 0 else ""
        lines.append(f"eval_loss: untrained {b:.4g} -> best {t:.4g}{ratio}  (trial {best.number})")
    before = finite(best.user_attrs.get("before_metrics"))
    pairs = [f"{n} {before[n]:.4g} -> {tuned[n]:.4g}" for n in headline(cfg) if n in before and n in tuned]
    if pairs:
        lines.append(f"best trial {best.number}: {', '.join(pairs)} (base -> tuned)")
    written = write_before_after(cfg, best)
    if written:
        path, n = written
        lines.append(f"before/after on {n} prompts: {path}")
    return lines
