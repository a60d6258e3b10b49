"""DPO: trl's DPOTrainer on preference pairs, with a fresh LoRA adapter on the shared 4-bit base.

The reference model is the base with the adapter disabled (trl does this when it wraps the base with our
`peft_config` itself): no second copy of the model in memory. An eval is trl's own DPO evaluation on the
fixed validation pairs (`eval_loss` = the DPO loss of `loss_type`, rewards_accuracy, rewards_margin, ...),
plus the task's generation metrics when the objective needs them at every eval.
"""

from __future__ import annotations

from typing import Any

from harness.core.spec import TrialSpec
from harness.trial import session
from harness.trial.recipes.common import Measure, training_args
from harness.trial.recipes.lora import adapt, lora_config
from harness.trial.recipes.scoring import score

PAIR = ["prompt", "chosen", "rejected"]
# trl's eval log names -> ours (harness metric names have no '/').
METRICS = {
    "eval_loss": "eval_loss",
    "eval_rewards/accuracies": "rewards_accuracy",
    "eval_rewards/margins": "rewards_margin",
    "eval_rewards/chosen": "rewards_chosen",
    "eval_rewards/rejected": "rewards_rejected",
}
DEFAULT_BETA = 0.1  # trl's


def dpo_config(spec: TrialSpec, fixtures: session.Fixtures, cuda: bool) -> Any:
    from trl import DPOConfig

    t, s = spec.training, spec.sweep
    return DPOConfig(
        **training_args(spec, fixtures, cuda),
        beta=DEFAULT_BETA if t.beta is None else t.beta,
        loss_type=[t.loss_type],
        max_length=t.max_seq_length,
        # trl turns dropout off for DPO by default; here lora_dropout is a searched setting and must act.
        disable_dropout=False,
        per_device_eval_batch_size=s.evaluation.batch_size,
        precompute_ref_log_probs=False,  # the reference is the base: one forward with the adapter off
    )


def build(spec: TrialSpec, fixtures: session.Fixtures, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl import DPOTrainer

    wrapped = adapt(spec, fixtures.model)  # model.backend unsloth: Unsloth's own LoRA
    return DPOTrainer(
        model=wrapped or fixtures.model,
        args=dpo_config(spec, fixtures, fixtures.device == "cuda"),
        train_dataset=fixtures.train.select_columns(PAIR),
        eval_dataset=Dataset.from_list([{k: r[k] for k in PAIR} for r in fixtures.eval_rows]),
        processing_class=fixtures.tokenizer,
        # trl wraps the base: the reference is the base, adapter disabled
        peft_config=None if wrapped is not None else lora_config(spec, fixtures.model),
        callbacks=callbacks,
    )


def measure(trainer: Any, fixtures: session.Fixtures, spec: TrialSpec) -> Measure:
    def run(model: Any, generate: bool) -> dict[str, float]:
        logged = trainer.evaluate()  # trl adds its rewards/* means to the returned dict when it logs it
        metrics = {ours: float(logged[theirs]) for theirs, ours in METRICS.items() if theirs in logged}
        if generate and fixtures.generation_rows:
            metrics.update(score(model, fixtures, spec, fixtures.generation_rows)[0])
        return metrics

    return run
