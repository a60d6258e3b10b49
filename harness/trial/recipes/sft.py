"""SFT: trl's SFTTrainer on rows fixtures already tokenized (prompt/completion, labels on the completion).
Its eval is ours: token-weighted loss and perplexity on the fixed validation subset (common.evaluate)."""

from __future__ import annotations

from typing import Any

from harness.core.spec import TrialSpec
from harness.trial import session
from harness.trial.recipes.common import Measure, evaluate, training_args
from harness.trial.recipes.lora import adapt, lora_config


def build(spec: TrialSpec, fixtures: session.Fixtures, callbacks: list[Any]) -> Any:
    from peft import get_peft_model
    from trl import SFTTrainer

    model = adapt(spec, fixtures.model) or get_peft_model(fixtures.model, lora_config(spec, fixtures.model))
    return SFTTrainer(
        model=model,
        args=sft_config(spec, fixtures, fixtures.device == "cuda"),
        train_dataset=fixtures.train,
        processing_class=fixtures.tokenizer,
        callbacks=callbacks,
    )


def measure(trainer: Any, fixtures: session.Fixtures, spec: TrialSpec) -> Measure:
    return lambda model, generate: evaluate(model, fixtures, spec, generate)[0]


def sft_config(spec: TrialSpec, fixtures: session.Fixtures, cuda: bool) -> Any:
    from trl import SFTConfig

    t = spec.training
    return SFTConfig(
        **training_args(spec, fixtures, cuda),
        max_length=t.max_seq_length,
        completion_only_loss=t.completion_only_loss,
        # fixtures already tokenized and labelled the data once for all trials
        dataset_kwargs={"skip_prepare_dataset": True},
    )
