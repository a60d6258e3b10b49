"""Task baselines: what a fine-tune must beat to be worth training, on the rows its trials are scored on.

The ladder every model is judged against: constant predictions, a bag-of-words linear model, the untrained
base, then the fine-tune. A baseline needs data, not a model:

    predict(train_rows, eval_rows) -> one answer per eval row (a string, like a model's generation)

Its answers are scored by harness.tasks.scoring.score_generations, the function that scores the trials'
generations (with the sweep's custom metrics too), so a baseline's numbers carry the same names and the
same meaning as a trial's, and `baselines.jsonl` holds the answers they were computed from.

Builtin (each registered by its task's module, harness.tasks.pricer / .text, in ladder order):
  pricer  mean, median     the train split's mean / median price, for every item
          bag_of_words     scikit-learn CountVectorizer on the prompt + Ridge(alpha=1) on log1p(price),
                           fitted on the train split (untuned on purpose: a floor, not a competitor)
  text    empty            the empty answer
          copy_input       the prompt as the answer
          most_frequent    the train split's most frequent completion (exact match's floor)
  any     untrained_base   the base model without an adapter: measured by the recipe (study user attr
                           `baseline_metrics`) and shown as the last rung; not computed here

Where they are measured: runner.measure_task_baselines, once per study (user attr `task_baselines`:
name -> metrics). The real recipe (QLoRARecipe.task_baselines) passes exactly its generation rows and
train split; any other recipe (a fake, a user's function) gets them from the data alone
(harness.study.run.baselines_from_data: the same seeded rows, before the truncation rule's fit filter, and
without a tokenizer, so chat datasets are skipped there).

Your own baselines: register them next to your custom metrics. The modules named in `evaluation.custom`
are imported before baselines are measured, so a registration there is picked up:

    from harness.tasks.baselines import register

    @register("text", "first_line", about="the prompt's first line")
    def first_line(train_rows, eval_rows):
        return [r["prompt"].splitlines()[0] for r in eval_rows]

`expect:` can name any of them: `rougeL: "> baseline.first_line"` (see harness.sweepfile.expect).

The main check (Task.reference): the best trial should beat the simplest meaningful baseline on the task's
main metric, else `verdict` words a warning. pricer: mae vs `median` (the constant that minimises absolute
error); text: rougeL vs `copy_input` (echoing the prompt costs nothing and scores on overlap metrics).
`unknown` words the load-time check of `baseline.NAME` names (harness.tasks.check: sweepfile knows no task).
No torch here; the data and the scorers are imported only when measuring.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core import attrs
from harness.core.spec import Measured
from harness.errors import closest
from harness.sweepfile.schema import LOSS_METRICS, Expectation, SweepConfig
from harness.tasks.task import every, get

Row = Mapping[str, Any]
Predict = Callable[[Sequence[Row], Sequence[Row]], list[str]]

FILE = "baselines.jsonl"
"""results/<study>/baselines.jsonl: prompt, reference (and price_true), and each baseline's answer."""
UNTRAINED = "untrained_base"
ROW_FIELDS = ("prompt", "reference", "price_true")


@dataclass(frozen=True)
class Baseline:
    name: str
    about: str
    predict: Predict


REGISTRY: dict[str, dict[str, Baseline]] = {}
"""task -> name -> Baseline, in registration (= ladder) order."""


def register(task: str, name: str, about: str = "") -> Callable[[Predict], Predict]:
    """Decorator: `predict(train_rows, eval_rows) -> answers` becomes baseline `name` of `task`."""
    if not name.isidentifier() or name in (UNTRAINED, *ROW_FIELDS):
        raise ValueError(f"baseline name {name!r}: use an identifier other than {UNTRAINED}/{ROW_FIELDS}")

    def add(fn: Predict) -> Predict:
        REGISTRY.setdefault(task, {})[name] = Baseline(name, about or (fn.__doc__ or "").strip(), fn)
        return fn

    return add


def names(task: str) -> tuple[str, ...]:
    """The baseline names `expect:` may use for `task` (the untrained base included)."""
    return (*REGISTRY.get(task, {}), UNTRAINED)


def about(task: str, name: str) -> str:
    if name == UNTRAINED:
        return "the base model without an adapter"
    found = REGISTRY.get(task, {}).get(name)
    return found.about if found else ""


def unknown(task: str, expectations: Iterable[Expectation]) -> list[str]:
    """`baseline.NAME` conditions of `expect:` that name no baseline of `task`, as '  - expect: ...'
    lines (none when all are known). Called at load by harness.tasks.check."""
    valid = names(task)
    out = []
    for e in expectations:
        bad = [c.baseline for c in e.conditions if c.baseline and c.baseline not in valid]
        if bad:
            hint = closest(bad[0], valid)
            out.append(
                f"  - expect: {e.metric}: {bad[0]!r} is not a baseline of task {task!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; choose from: {', '.join('baseline.' + n for n in valid)}"
            )
    return out


# ----------------------------------------------------------------------------------------------------
# Measuring


def measure(cfg: SweepConfig, train_rows: Sequence[Row], eval_rows: Sequence[Row]) -> Measured:
    """Every baseline registered for the sweep's task, scored on `eval_rows` like a trial's generations."""
    import harness.tasks.scoring as scoring

    out = Measured()
    if not eval_rows or not train_rows:
        return out
    custom = list(cfg.evaluation.custom)
    for spec in custom:  # their modules may register baselines (see the module docstring)
        scoring.load_custom_metric(spec)
    refs = [str(r["completion"]) for r in eval_rows]
    out.rows = [{"prompt": r["prompt"], "reference": ref} for r, ref in zip(eval_rows, refs, strict=True)]
    for name, baseline in REGISTRY.get(cfg.task, {}).items():
        try:
            answers = [str(a) for a in baseline.predict(train_rows, eval_rows)]
            try:
                metrics, per_row = scoring.score_generations(cfg.task, answers, refs, eval_rows, custom)
            except scoring.CustomMetricError as e:  # the user's metric, not the baseline, is at fault
                metrics, per_row = scoring.score_generations(cfg.task, answers, refs, eval_rows)
                out.skipped[f"{name} (custom metrics)"] = str(e)
        except Exception as e:  # noqa: BLE001 - a baseline is context, never a reason to stop the sweep
            out.skipped[name] = f"{type(e).__name__}: {e}"
            continue
        out.metrics[name] = finite(metrics)
        for row, answer, scores in zip(out.rows, answers, per_row, strict=True):
            row[name] = answer
            if "price_true" in scores:
                row["price_true"] = scores["price_true"]
    return out


# ----------------------------------------------------------------------------------------------------
# Reading them back (reports, expectations, the closing summary)


def finite(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def ladder(user_attrs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A study's baselines in ladder order: the stored task baselines, then the untrained base's
    generation metrics when it was measured (`baseline_metrics`)."""
    stored = attrs.task_baselines(user_attrs)
    rungs = {str(k): finite(v) for k, v in stored.items() if isinstance(v, Mapping)}
    base = finite(attrs.baseline_metrics(user_attrs))
    if any(k not in ("eval_loss", "perplexity") for k in base):
        rungs[UNTRAINED] = base
    return rungs


def read_rows(study_dir: Path) -> list[dict[str, Any]]:
    path = study_dir / FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lower_is_better(metric: str) -> bool:
    """Losses and the errors a task names (Task.lower_is_better); every other metric is higher-is-better."""
    return metric in LOSS_METRICS or any(metric in t.lower_is_better for t in every())


def better(metric: str, value: float, than: float) -> bool:
    """Strictly better by the metric's own direction (lower for errors and losses, higher otherwise)."""
    return value < than if lower_is_better(metric) else value > than


def verdict(
    task: str, objective: str, best_number: int, best: Mapping[str, float], rungs: Mapping[str, Any]
) -> str | None:
    """A plain warning when the best trial does not beat the task's reference baseline (Task.reference)
    on its main metric; None when it does, or when either number is missing."""
    metric, name = get(task).reference
    value, ref = best.get(metric), (rungs.get(name) or {}).get(metric)
    if value is None or ref is None or better(metric, value, ref):
        return None
    goal = "minimize" if lower_is_better(metric) else "maximize"
    tries = ["more steps (budget.max_steps)", "a larger base model (model.name)"]
    if objective != metric:
        tries.append(f"{metric} as the objective (metric: {{name: {metric}, goal: {goal}}})")
    return (
        f"warning: the best trial ({best_number}) does not beat the {name} baseline on {metric}: "
        f"{value:.4g} vs {ref:.4g} ({about(task, name)}). The fine-tune has not learned the task yet; "
        f"try {', '.join(tries[:-1])} or {tries[-1]}."
    )
