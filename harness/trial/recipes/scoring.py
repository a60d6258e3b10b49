"""Generation, scored for the task: a trial's generation metrics and per-row evidence, the untrained base's
answers beside them (generated once per process), and the held-out test split's metrics (`sweep train`)."""

from __future__ import annotations

from typing import Any

from harness.core.spec import TrialSpec
from harness.trial import prepare, session


def score(
    model: Any, fixtures: session.Fixtures, spec: TrialSpec, rows: list[dict[str, Any]]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy batched generation on `rows`, scored for the task; per-row evidence for generations.jsonl.

    The model is fed each prompt as training sees it (shortened by training.truncation), and rows the
    rule drops are left out, so generation metrics and eval_loss are measured on the same rows."""
    from harness.trial import evaluation as ev

    s = spec.sweep
    fitted = prepare.encode_rows(rows, fixtures.tokenizer, spec.training)
    rows = [r for r, e in zip(rows, fitted, strict=True) if e.has_completion]
    if not rows:
        return {}, []
    prompts = [r["prompt"] for r in rows]
    refs = [r["completion"] for r in rows]
    prompt_ids = [e.prompt_ids for e in fitted if e.has_completion]
    preds = ev.generate(
        model, fixtures.tokenizer, prompt_ids, s.evaluation.max_new_tokens, s.evaluation.batch_size
    )
    metrics, per_row = ev.score_generations(s.task, preds, refs, rows, s.evaluation.custom)
    evidence = [
        {"prompt": p, "reference": r, "prediction": y, **sc}
        for p, r, y, sc in zip(prompts, refs, preds, per_row, strict=True)
    ]
    return metrics, evidence


_BASE_SCORES: dict[tuple[Any, ...], tuple[dict[str, float], list[dict[str, Any]]]] = {}


def compare_with_base(
    model: Any, fixtures: session.Fixtures, spec: TrialSpec, generations: list[dict[str, Any]]
) -> dict[str, float]:
    """The same generation rows with the adapter disabled (= the untrained base): adds
    `prediction_before` and `before_<score>` to each row of `generations` (in place) and returns the
    base's corpus metrics, so a user sees what tuning changed."""
    e = spec.sweep.evaluation
    key = (
        id(fixtures.model),
        fixtures.quantization,  # a dropped base's id may be reused by one of another kind (cache._evict)
        spec.sweep.task,
        e.max_new_tokens,
        tuple(e.custom),
        spec.training.max_seq_length,  # with truncation: which prompt ids the base is fed
        spec.training.truncation,
        tuple(r["prompt"] for r in fixtures.generation_rows),
    )
    if key not in _BASE_SCORES:  # the base answers the same in every trial: generate once per process
        with model.disable_adapter():
            _BASE_SCORES[key] = score(model, fixtures, spec, fixtures.generation_rows)
    before, rows = _BASE_SCORES[key]
    for row, base in zip(generations, rows, strict=True):
        row["prediction_before"] = base["prediction"]
        same = ("prompt", "reference", "prediction", "price_true")
        row.update({f"before_{k}": v for k, v in base.items() if k not in same})
    return dict(before)


def test_metrics(
    model: Any, fixtures: session.Fixtures, spec: TrialSpec, rows: list[dict[str, Any]]
) -> dict[str, float]:
    """Loss and generation metrics on the held-out test split, prefixed test_."""
    from harness.trial import evaluation as ev

    s, t = spec.sweep, spec.training
    batches = ev.eval_batches(
        rows,
        fixtures.tokenizer,
        t.max_seq_length,
        s.evaluation.batch_size,
        truncation=t.truncation,
        response_template=t.response_template,
    )
    out = ev.loss_metrics(*ev.token_nll(model, batches))
    if s.evaluation.samples:
        out.update(score(model, fixtures, spec, rows)[0])
    return {f"test_{k}": v for k, v in out.items()}
