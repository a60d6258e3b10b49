"""Everything a trial shares with the other trials of its worker: the base, its tokenizer and the trial
data, assembled by `get(sweep)` from the session cache (harness.trial.cache). A trial whose quantization
the search space sampled gets the same tokenizer and data on a base of its own kind (`for_trial`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.core import ranks
from harness.core.spec import TrialSpec
from harness.sweepfile.schema import ModelConfig, SweepConfig
from harness.trial import base, prepare


@dataclass(frozen=True)
class Fixtures:
    """Everything a trial shares with other trials. Built by `get(sweep)`."""

    model: Any
    tokenizer: Any
    train: Any  # sft: datasets.Dataset with input_ids, labels (no re-tokenizing); dpo/grpo: the text rows
    eval_batches: list[dict[str, torch.Tensor]]  # fixed validation subset for loss/perplexity
    eval_rows: list[dict[str, Any]]  # the same subset as rows (dpo: its pairs; grpo: its prompts)
    generation_rows: list[dict[str, Any]]  # fixed validation subset for generation metrics (rows that fit)
    test_rows: list[dict[str, Any]]
    device: str
    lengths: dict[str, dict[str, Any]]  # per split: how the rows fit max_seq_length (harness.core.lengths)
    dropped: dict[str, Any]  # bad rows left out (dataset.bad_rows: drop; harness.core.badrows), {} for none
    quantization: str  # the base's kind (model.quantization): nf4, fp4, int8 or none


def get(sweep: SweepConfig, model: ModelConfig | None = None) -> Fixtures:
    """All session fixtures for a sweep; cheap after the first call with the same model and data. `model`:
    the base's settings when they are not the sweep's (a sampled quantization); tokenizer and data are
    the sweep's either way."""
    base.check_backend(sweep.model)
    path = base.resolve_model_path(sweep.model, sweep.source_path)
    model_key = {"model": sweep.model.model_dump(mode="json", exclude={"max_cached_bases"}), "path": path}
    tok = base.tokenizer(model_key, sweep.model, path)
    data = prepare.trial_data(sweep, tok)
    gc = base.use_gradient_checkpointing(sweep.training)
    settings = model or sweep.model
    shard = sweep.training.distributed == "fsdp" and ranks.launched()
    base_key = {
        "model": settings.model_dump(mode="json", exclude={"max_cached_bases"}),
        "path": path,
        "gradient_checkpointing": gc,
        "shard": shard,
    }
    return Fixtures(
        model=base.base_model(base_key, settings, path, gc, shard, keep=settings.max_cached_bases),
        tokenizer=tok,
        train=data.train,
        eval_batches=data.eval_batches,
        eval_rows=data.eval_rows,
        generation_rows=data.generation_rows,
        test_rows=data.test_rows,
        device=base.device(),
        lengths=data.lengths,
        dropped=data.dropped,
        quantization=settings.quantization,
    )


def for_trial(fixtures: Fixtures, spec: TrialSpec) -> Fixtures:
    """The fixtures `spec` trains with: `fixtures` when its base is of the trial's kind, else the same
    data on a base of that kind (loaded once per worker, within model.max_cached_bases). A trial never
    trains on a base of the wrong kind."""
    if fixtures.quantization == spec.model.quantization:
        return fixtures
    return get(spec.sweep, spec.model)
