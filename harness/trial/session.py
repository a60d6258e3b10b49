"""Everything a trial shares with the other trials of its worker: the base, its tokenizer and the trial
data, assembled by `get(sweep)` from the session cache (harness.trial.cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.sweepfile.schema import SweepConfig
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


def get(sweep: SweepConfig) -> Fixtures:
    """All session fixtures for a sweep; cheap after the first call with the same model and data."""
    path = base.resolve_model_path(sweep.model, sweep.source_path)
    model_key = {"model": sweep.model.model_dump(mode="json"), "path": path}
    tok = base.tokenizer(model_key, sweep.model, path)
    data = prepare.trial_data(sweep, tok)
    gc = base.use_gradient_checkpointing(sweep.training)
    return Fixtures(
        model=base.base_model({**model_key, "gradient_checkpointing": gc}, sweep.model, path, gc),
        tokenizer=tok,
        train=data.train,
        eval_batches=data.eval_batches,
        eval_rows=data.eval_rows,
        generation_rows=data.generation_rows,
        test_rows=data.test_rows,
        device=base.device(),
        lengths=data.lengths,
    )
