"""A sweep's trial data, prepared in one pass: the splits, the tokenized training set, the fixed eval and
generation subsets, the test rows, and how every split fits max_seq_length (harness.core.lengths).

`trial_data(sweep, tok)` is the one way in, session-cached (harness.trial.cache) per model and data: every
trial of every sweep with the same data trains and is measured on exactly these rows. The rule that turns a
row into tokens is harness.trial.tokens, the same for training, eval loss and generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.core import lengths
from harness.errors import DataError
from harness.sweepfile.schema import SweepConfig, TrainingConfig, Truncation
from harness.trial import cache
from harness.trial.tokens import Encoded, encode_batch


@dataclass(frozen=True)
class TrialData:
    """What every trial of a sweep trains and is measured on."""

    train: Any  # sft: datasets.Dataset with input_ids, labels (no re-tokenizing); dpo/grpo: the text rows
    eval_batches: list[dict[str, torch.Tensor]]  # fixed validation subset for loss/perplexity
    eval_rows: list[dict[str, Any]]  # the same subset as rows (dpo: its pairs; grpo: its prompts)
    generation_rows: list[dict[str, Any]]  # fixed validation subset for generation metrics (rows that fit)
    test_rows: list[dict[str, Any]]
    lengths: dict[str, dict[str, Any]]  # per split: how the rows fit max_seq_length (harness.core.lengths)
    dropped: dict[str, Any]  # bad rows left out (dataset.bad_rows: drop; harness.core.badrows), {} for none


def trial_data(sweep: SweepConfig, tok: Any) -> TrialData:
    """The sweep's trial data; cheap after the first call with the same data, tokenizer and lengths."""
    return _prepare(_tok_key(sweep), sweep, tok)


def data_splits(sweep: SweepConfig, tok: Any) -> Any:
    """The sweep's formatted splits (datasets.Splits), session-cached: the rows the trials train on."""
    return splits(_data_key(sweep), sweep, tok)


@cache.session_fixture
def splits(sweep_key: dict[str, Any], sweep: SweepConfig, tok: Any) -> Any:
    from harness.trial.datasets import load_splits

    return load_splits(sweep, tokenizer=tok)


@cache.session_fixture
def _prepare(key: dict[str, Any], sweep: SweepConfig, tok: Any) -> TrialData:
    from harness.trial.datasets import generation_subset, seeded_subset
    from harness.trial.evaluation import eval_batches

    t = sweep.training
    data = data_splits(sweep, tok)
    train, report = _train_and_lengths(data, sweep, tok)
    # The fixed, seeded validation subset every eval measures (`dataset.max_eval_rows` rows).
    eval_rows = seeded_subset(data.validation, sweep.dataset.max_eval_rows, sweep.seed)
    batches = eval_batches(
        eval_rows,
        tok,
        t.max_seq_length,
        batch_size=32,
        truncation=t.truncation,
        response_template=t.response_template,
    )
    generation_rows = generation_subset(data.validation, sweep)  # the rows task baselines use too
    return TrialData(
        train=train,
        eval_batches=batches,
        eval_rows=eval_rows,
        generation_rows=_fitting(generation_rows, tok, t),
        test_rows=[data.test[i] for i in range(len(data.test))],
        lengths=report,
        dropped=dict(data.dropped),
    )


def _train_and_lengths(data: Any, sweep: SweepConfig, tok: Any) -> tuple[Any, dict[str, Any]]:
    """The training set, and how the rows of every split fit max_seq_length: one pass of the rule."""
    from datasets import Dataset

    t = sweep.training
    if sweep.trainer != "sft":
        # trl's DPO/GRPO trainers tokenize their own formats; the length figures are for prompt+answer
        # (dpo: chosen), and only where the rows carry an answer (grpo's reference is optional).
        with_answer = {
            name: ds.filter(lambda r: bool(r["completion"])) for name, ds in data.as_dict().items()
        }
        report = {
            name: lengths.summary(encode_rows(ds, tok, t), t.max_seq_length, t.truncation)
            for name, ds in with_answer.items()
            if len(ds)
        }
        return data.train, report
    encoded = {
        name: encode_rows(ds, tok, t, completion_only=t.completion_only_loss if name == "train" else True)
        for name, ds in data.as_dict().items()
    }
    report = {name: lengths.summary(enc, t.max_seq_length, t.truncation) for name, enc in encoded.items()}
    train = [e for e in encoded["train"] if e.has_completion]
    if not train:
        raise DataError(
            f"{sweep.dataset.source}: no training row has completion tokens within "
            f"max_seq_length={t.max_seq_length} (truncation: {t.truncation}); raise training.max_seq_length"
        )
    columns = {"input_ids": [e.input_ids for e in train], "labels": [e.labels for e in train]}
    return Dataset.from_dict(columns), report


def _fitting(rows: list[dict[str, Any]], tok: Any, training: TrainingConfig) -> list[dict[str, Any]]:
    """The rows the truncation rule keeps: generation is measured on the rows training and eval use."""
    return [r for r, e in zip(rows, encode_rows(rows, tok, training), strict=True) if e.has_completion]


def tokenize_rows(
    rows: Any,
    tok: Any,
    max_length: int,
    completion_only: bool,
    *,
    truncation: Truncation = "keep_answer",
    response_template: str | None = None,
) -> dict[str, list[list[int]]]:
    """prompt + completion + eos -> input_ids, labels (-100 on the prompt when completion_only), by
    harness.trial.tokens: the same tokens eval_batches scores and generation continues from. One entry per
    row; a dropped row's are empty (or, under `right`, hold no completion token)."""
    training = TrainingConfig(
        max_seq_length=max_length, truncation=truncation, response_template=response_template
    )
    encoded = encode_rows(rows, tok, training, completion_only)
    return {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}


def encode_rows(rows: Any, tok: Any, training: TrainingConfig, completion_only: bool = True) -> list[Encoded]:
    """A split's rows (a Dataset or a list of dicts) through harness.trial.tokens with the sweep's
    max_seq_length, truncation and response_template."""
    prompts, completions = (
        [r[c] for r in rows] if isinstance(rows, list) else list(rows[c]) for c in ("prompt", "completion")
    )
    return encode_batch(
        prompts,
        completions,
        tok,
        training.max_seq_length,
        completion_only,
        truncation=training.truncation,
        response_template=training.response_template,
    )


def _data_key(sweep: SweepConfig) -> dict[str, Any]:
    # source_path matters because relative dataset paths resolve against the sweep file's folder.
    return {
        "dataset": sweep.dataset.model_dump(mode="json"),
        "task": sweep.task,
        "response_template": sweep.training.response_template,
        "model": sweep.model.name,  # chat datasets are rendered with the model's chat template
        "trainer": sweep.trainer,  # dpo reads pairs, grpo prompts
        "source": str(Path(sweep.source_path).parent) if sweep.source_path else None,
    }


def _tok_key(sweep: SweepConfig) -> dict[str, Any]:
    return {
        **_data_key(sweep),
        "model": sweep.model.model_dump(mode="json"),
        "max_seq_length": sweep.training.max_seq_length,
        "truncation": sweep.training.truncation,
        "completion_only": sweep.training.completion_only_loss,
        "seed": sweep.seed,
    }
