"""Metrics on generated text: ROUGE/BLEU/exact match for every task, then the task's own, then custom metrics.

No torch: the trials' generations (evaluation.py generates, then calls score_generations) and the task
baselines (harness.tasks.baselines, which need no model) are scored by these same functions, so their numbers
are comparable. What each number means is documented once, in evaluation.py's docstring.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer

from harness.core.spec import raised_at
from harness.errors import CALLABLE_SPEC, ConfigError, closest
from harness.tasks.task import get

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# ----------------------------------------------------------------------------------------------------
# Metrics on generated text

_SCORER: rouge_scorer.RougeScorer | None = None


def _rouge_rows(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    global _SCORER
    if _SCORER is None:  # built lazily: the Porter stemmer setup is not free and most imports never score
        _SCORER = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        scores = _SCORER.score(ref, pred)  # rouge-score's order is (target, prediction)
        rows.append({k: scores[k].fmeasure for k in ROUGE_KEYS})
    return rows


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def _text_metrics(
    predictions: Sequence[str], references: Sequence[str], rouge: list[dict[str, float]]
) -> dict[str, float]:
    n = len(predictions)
    out = {k: sum(r[k] for r in rouge) / n for k in ROUGE_KEYS}
    out["bleu"] = float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
    out["exact_match"] = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)) / n
    return out


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """rouge1, rouge2, rougeL, rougeLsum (fractions), bleu (0-100), exact_match (fraction)."""
    _check_lengths(predictions, references)
    return _text_metrics(predictions, references, _rouge_rows(predictions, references))


def score_generations(
    task: str,
    predictions: Sequence[str],
    references: Sequence[str],
    rows: Sequence[Mapping[str, Any]] | None,
    custom: Sequence[str] = (),
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Corpus metrics for `task` and one dict of scores per row (for generations.jsonl).

    Per row: exact_match (0/1) and rougeL always, then the task's own scores (Task.score; the pricer's:
    harness.tasks.pricer.score). An unknown task is a ConfigError. Custom metrics (`module:function`
    specs) are called with (predictions, references, rows) and their returned names are added to the
    corpus metrics; they may not reuse a built-in name.
    """
    scorer = get(task)
    _check_lengths(predictions, references)
    rows = list(rows) if rows is not None else [{} for _ in predictions]
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(rows)} rows")

    rouge = _rouge_rows(predictions, references)
    metrics = _text_metrics(predictions, references, rouge)
    per_row: list[dict[str, Any]] = [
        {"exact_match": float(p.strip() == r.strip()), "rougeL": rg["rougeL"]}
        for p, r, rg in zip(predictions, references, rouge, strict=True)
    ]

    own, own_rows = scorer.score(predictions, references, rows)
    metrics.update(own)
    for out, scores in zip(per_row, own_rows, strict=True):
        out.update(scores)

    for spec in custom:
        metrics.update(_run_custom(spec, predictions, references, rows, taken=set(metrics)))
    return metrics, per_row


# ----------------------------------------------------------------------------------------------------
# Custom metrics


class CustomMetricError(RuntimeError):
    """A custom metric raised or returned something unusable. Not a HarnessError on purpose: it is a bug
    in the user's code, so the trial fails with the full traceback (chained as __cause__)."""


def load_custom_metric(spec: str) -> Callable[..., Mapping[str, float]]:
    """Import `package.module:function`; any problem is a ConfigError that says what to fix."""
    if not isinstance(spec, str) or not CALLABLE_SPEC.fullmatch(spec.strip()):
        raise ConfigError(
            f"custom metric {spec!r} is not of the form package.module:function "
            "(for example mymetrics:length_ratio)"
        )
    module_name, _, attr_path = spec.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(
                f"custom metric {spec!r}: module {module_name!r} not found "
                "(is it installed, or its folder on PYTHONPATH? e.g. PYTHONPATH=. sweep run ...)"
            ) from e
        raise ConfigError(f"custom metric {spec!r}: importing {module_name!r} failed: {e}") from e
    except SyntaxError as e:  # not an ImportError: the user's file is there but is not Python
        where = f"{e.filename}, line {e.lineno}" if e.filename else repr(module_name)
        raise ConfigError(f"custom metric {spec!r}: {where}: syntax error: {e.msg}") from None
    except (Exception, SystemExit) as e:  # the user's module raised (or exited) while it was imported
        raise ConfigError(
            f"custom metric {spec!r}: importing {module_name!r} failed: {type(e).__name__}: {e} "
            f"({raised_at(e)})"
        ) from e

    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = closest(part, names)
            raise ConfigError(
                f"custom metric {spec!r}: {module_name!r} has no attribute {part!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"custom metric {spec!r} is a {type(obj).__name__}, not a function")
    return obj


def _run_custom(
    spec: str,
    predictions: Sequence[str],
    references: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    taken: set[str],
) -> dict[str, float]:
    fn = load_custom_metric(spec)
    try:
        # Copies: a metric that mutates its inputs must not change what later metrics or the report see.
        result = fn(list(predictions), list(references), [dict(r) for r in rows])
    except Exception as e:
        raise CustomMetricError(f"custom metric {spec} raised {type(e).__name__}: {e}") from e
    if not isinstance(result, Mapping):
        raise CustomMetricError(
            f"custom metric {spec} returned {type(result).__name__}; expected a dict of name -> number"
        )
    out: dict[str, float] = {}
    for name, value in result.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, Real):
            raise CustomMetricError(
                f"custom metric {spec} returned {name!r}: {value!r}; expected str names and numeric values"
            )
        if name in taken:
            raise CustomMetricError(
                f"custom metric {spec} returned {name!r}, which is already a metric; pick another name"
            )
        out[name] = float(value)
    return out
