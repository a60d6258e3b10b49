"""The adapter a trial trains: its LoraConfig (target_modules resolved on the loaded base, rsLoRA), the LoRA+
optimizer, and what it really covered (params.json's lora_modules and base_layer).

Which layers a preset means is harness.sweepfile.levers' rule over module paths; here it meets the loaded
model: its linear layers, its output head, its `model_type`.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.core.spec import TrialSpec
from harness.errors import ConfigError, problems_error
from harness.sweepfile import levers
from harness.sweepfile.schema import TARGET_PRESETS, SweepConfig
from harness.trial.base import use_gradient_checkpointing


def layers(model: Any) -> tuple[list[str], list[str]]:
    """(linear layers but the output head: what presets choose from, every layer a list may name: linear
    layers, the head and embeddings). bitsandbytes' Linear4bit and Linear8bitLt are torch Linears."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear, adaptable = [], []
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            adaptable.append(name)
            if module is not head:
                linear.append(name)
        elif isinstance(module, torch.nn.Embedding):
            adaptable.append(name)
    return linear, adaptable


def model_type(model: Any) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def target_modules(model: Any, choice: str | list[str]) -> str | list[str]:
    """What LoraConfig gets: `all-linear` as peft reads it (every linear layer but the head), a list as
    given (peft matches each name as the end of a path), a preset as the paths it selects here."""
    if choice == "all-linear" or isinstance(choice, list):
        return choice
    return levers.select(choice, layers(model)[0], model_type(model))


def check_targets(model: Any, cfg: SweepConfig) -> None:
    """Every target_modules a trial of `cfg` can get must select layers of this base: an input error
    before the study starts, never an empty (or partly missing) adapter."""
    linear, adaptable = layers(model)
    arch = model_type(model)
    found = []
    for where, choice in levers.target_choices(cfg):
        if isinstance(choice, list):
            missing = levers.unmatched(choice, adaptable)
            if missing:
                found.append(f"  - {where}: {', '.join(map(repr, missing))} matches no layer of this base")
        elif not levers.select(choice, linear, arch):
            found.append(f"  - {where}: preset {choice!r} matches no layer of this base")
    if found:
        names = ", ".join(levers.block_names(linear)) or "none"
        found.append(
            f"  - model.name {cfg.model.name!r} (model_type {arch}): its linear layers are {names}; name "
            f"them in a list, or use a preset that fits ({', '.join(TARGET_PRESETS)})"
        )
        raise problems_error(cfg.source_path or cfg.name, found)


def lora_config(spec: TrialSpec, model: Any) -> Any:
    from peft import LoraConfig

    t = spec.training
    return LoraConfig(
        r=t.r,
        lora_alpha=spec.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; k*r may be fractional
        lora_dropout=t.lora_dropout,
        target_modules=target_modules(model, t.target_modules),
        use_rslora=t.use_rslora,  # scaling alpha/sqrt(r) instead of alpha/r
        bias="none",
        task_type="CAUSAL_LM",
    )


def adapt(spec: TrialSpec, base: Any) -> Any | None:
    """model.backend unsloth: the base wrapped in the trial's LoRA by Unsloth's own get_peft_model (its
    fused LoRA kernels), given to the Trainer as the model (no peft_config). None for transformers: each
    trainer wraps the base with peft as before. Unsloth names layers, not paths: a preset or all-linear
    becomes the last names of the layers it selects (`q_proj`; the presets span every block)."""
    if spec.model.backend != "unsloth":
        return None
    from unsloth import FastLanguageModel

    t = spec.training
    choice = target_modules(base, t.target_modules)
    paths = layers(base)[0] if choice == "all-linear" else choice
    names = sorted({path.rsplit(".", 1)[-1] for path in paths})  # `q_proj`, as Unsloth's checks want
    return FastLanguageModel.get_peft_model(
        base,
        r=t.r,
        target_modules=names,
        lora_alpha=spec.lora_alpha,
        lora_dropout=t.lora_dropout,
        bias="none",
        use_gradient_checkpointing="unsloth" if use_gradient_checkpointing(t) else False,
        random_state=spec.seed,
        use_rslora=t.use_rslora,
        max_seq_length=t.max_seq_length,
    )


NEEDS_THE_MODEL = ("params", "model", "optimizer_dict")
"""Optimizer kwargs transformers sets when it builds the optimizer's groups itself (GaLore, APOLLO,
LOMO, layer-wise): LoRA+ cannot give B its own rate through them (sweepfile.levers says so at load)."""


def loraplus_optimizer(trainer: Any, spec: TrialSpec) -> Any | None:
    """LoRA+ (peft create_loraplus_optimizer): the `optim` class and its kwargs as transformers builds
    them, A's parameters at `learning_rate`, B's at `loraplus_lr_ratio` times it. The Trainer's scheduler
    then scales every group alike, so the ratio holds all along. None without loraplus_lr_ratio."""
    ratio = spec.training.loraplus_lr_ratio
    if ratio is None:
        return None
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    args = trainer.args
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, trainer.model)
    if set(NEEDS_THE_MODEL) & set(kwargs):
        raise ConfigError(f"training.optim {args.optim!r} cannot be used with loraplus_lr_ratio")
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    return create_loraplus_optimizer(
        trainer.model,
        cls,
        lr=args.learning_rate,
        loraplus_lr_ratio=ratio,
        loraplus_weight_decay=args.weight_decay,
        **kwargs,
    )


def trained(model: Any) -> dict[str, Any]:
    """What the adapter covers in `model` (the peft model): `lora_modules`, the adapted modules' names
    within their block (sorted), and `base_layer`, the class of the layers under the adapters."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    kinds = sorted({type(m.get_base_layer()).__name__ for m in tuned.values()})
    return {
        "lora_modules": levers.block_names(n.removeprefix("base_model.model.") for n in tuned),
        "base_layer": ",".join(kinds),
    }
