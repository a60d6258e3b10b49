"""What every trainer's trial shares: the eval loop (early stopping, best-adapter snapshot, pruning hook,
checkpoints), adapter snapshots, generation scoring, and releasing the shared base (the adapter's own
config: lora.py).

Knows transformers/peft, not Optuna. Each trainer (sft.py, dpo.py, grpo.py) supplies only its Trainer and
what it measures at an eval; harness/recipe.py runs one trial top to bottom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from harness import compat
from harness.core import interrupt, ranks, trialdir
from harness.core.spec import (
    EVAL_EVERY,
    EVAL_INDEX,
    EVAL_MAX_STEPS,
    EVAL_OWN_STEPS,
    EVAL_TOKENS,
    OnEval,
    TrialSpec,
)
from harness.errors import NonFiniteLoss
from harness.sweepfile.schema import LOSS_METRICS, trainer_metrics
from harness.trial import session
from harness.trial.base import compute_dtype, use_gradient_checkpointing
from harness.trial.recipes.scoring import score

# measure(model, generate) -> the metrics of one eval; the trainer's module builds it (see recipe.py).
Measure = Callable[[Any, bool], dict[str, float]]


class EvalLoop(TrainerCallback):
    """Every eval_steps: the trainer's measure (sft: token-weighted loss/perplexity; dpo, grpo: see their
    modules) and generation metrics when the objective needs them, early stopping on the objective, a
    snapshot of the best adapter, the pruning hook and a checkpoint.

    Our own loop rather than Trainer eval + EarlyStoppingCallback: the Trainer's eval_loss is a mean of
    batch means (not token-weighted), and its EarlyStoppingCallback needs a checkpoint save at every eval
    plus load_best_model_at_end; a LoRA snapshot in memory does the same at a fraction of the cost.
    """

    def __init__(self, spec: TrialSpec, fixtures: session.Fixtures, on_eval: OnEval) -> None:
        s = spec.sweep
        self.spec, self.fx, self.on_eval = spec, fixtures, on_eval
        # What one eval measures; the trainer's module sets it once its Trainer exists (recipe.finetune).
        self.measure: Measure = lambda model, generate: evaluate(model, fixtures, spec, generate)[0]
        self.metric, self.maximize = s.metric.name, s.metric.goal == "maximize"
        measured = LOSS_METRICS + trainer_metrics(s.trainer, s.training.reward_functions)
        self.generate_each_eval = s.evaluation.every_eval or self.metric not in measured
        self.history: list[dict[str, float]] = []
        self.train_log: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_evals = 0
        self.pruned = self.stopped_early = False
        self.trainer: Any = None  # set by finetune: checkpoints need the optimizer, scheduler and state
        self.checkpoint_dir = trialdir.checkpoint_dir(spec.output_dir) if spec.number >= 0 else None
        self.max_steps, self.eval_steps = trial_steps(spec, fixtures)
        self.start_step = self.start_tokens = 0  # where this run began: a resumed one, its checkpoint's
        # fsdp: the base is sharded, so every forward (evals, generation) needs every rank.
        self.lockstep = lockstep(spec)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any):
        # After the Trainer restored a checkpoint's state: what the interrupted trial already spent.
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen

    def spent(self, state: Any) -> tuple[int, int]:
        """(optimizer steps, real tokens) this run has trained so far (num_input_tokens_seen: see
        training_args; grpo's trl counts prompt and completion tokens itself)."""
        return state.global_step - self.start_step, int(state.num_input_tokens_seen - self.start_tokens)

    def state(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "train_log": self.train_log,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
        }

    def load_state(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
        self.history, self.train_log = state["history"], state["train_log"]
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]
        self.best_state = best_state

    def gain(self, value: float) -> float:
        """How much `value` improves on the best so far (positive = better); inf for the first eval."""
        if self.best is None:
            return math.inf
        return value - self.best if self.maximize else self.best - value

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any):
        if logs and not any(k.startswith("eval_") for k in logs):  # a trainer's own eval (dpo) is in history
            self.train_log.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()}})
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise NonFiniteLoss(f"non-finite loss at step {state.global_step}")

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        interrupt.check()  # a Ctrl-C that something on the way swallowed (a finalizer) stops the trial here
        step = state.global_step
        if step % self.eval_steps and step < state.max_steps:
            return
        # Several ranks: rank 0 measures on the unwrapped model and decides, the others wait for its
        # decision (ranks.decide); so an eval is computed once, never once per rank. With fsdp every rank
        # runs the forwards (the base is sharded) and rank 0's figures are the ones kept.
        measured = self.measure(model, self.generate_each_eval) if self.lockstep else None
        if ranks.decide(lambda: self.judge(step, state, control, model, measured)):
            control.should_training_stop = True

    def judge(self, step: int, state: Any, control: Any, model: Any, measured: dict | None = None) -> bool:
        """One eval: measure, keep the best, early stopping, pruning, checkpoint -> True to stop."""
        metrics = measured if measured is not None else self.measure(model, self.generate_each_eval)
        metrics["step"] = step
        if not math.isfinite(metrics.get("eval_loss", 0.0)):
            raise NonFiniteLoss(f"non-finite loss at step {step} (eval_loss {metrics['eval_loss']})")
        self.history.append(metrics)
        value = metrics.get(self.metric, math.nan)
        gain = self.gain(value) if math.isfinite(value) else -math.inf
        # The threshold (min_delta) only decides patience; the value, best step and adapter snapshot
        # follow the true best, so an improvement smaller than the threshold is still kept.
        self.bad_evals = 0 if gain > self.spec.sweep.early_stopping.threshold else self.bad_evals + 1
        if gain > 0:
            self.best, self.best_step = value, step
            self.best_state = adapter_state(model)
        patience = self.spec.sweep.early_stopping.patience
        if patience and self.bad_evals >= patience and step < state.max_steps:  # at the end it is no stop
            self.stopped_early = control.should_training_stop = True
        # The eval's index rides along for the objective: with budget.epochs it reports by eval, not step.
        extra = {EVAL_INDEX: len(self.history), EVAL_MAX_STEPS: self.max_steps, EVAL_EVERY: self.eval_steps}
        extra[EVAL_OWN_STEPS], extra[EVAL_TOKENS] = self.spent(state)
        if self.on_eval(step, {**metrics, **{k: float(v) for k, v in extra.items()}}):
            self.pruned = control.should_training_stop = True
        # A pruned trial's checkpoint is saved at the eval that pruned it only when it is to be kept
        # (early_terminate.keep_pruned_checkpoints): `sweep audit` then continues exactly where it stopped.
        keep = self.pruned and self.spec.sweep.early_terminate.keep_pruned_checkpoints
        if self.checkpoint_dir is not None and self.trainer is not None and step < state.max_steps:
            if keep or not control.should_training_stop:
                save_checkpoint(self.checkpoint_dir, self.trainer, adapter_state(model), self)
        return bool(control.should_training_stop)


def save_checkpoint(folder: Path, trainer: Any, adapter: dict[str, torch.Tensor], loop: EvalLoop) -> None:
    """The trial so far -> folder (trialdir's layout), atomically: adapter and best adapter as
    safetensors, the Trainer's optimizer/scheduler/RNG/state in its own resume layout, loop.json last."""
    from safetensors.torch import save_file

    def to_file(state: dict[str, torch.Tensor], name: str) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / name))

    tmp = trialdir.fresh_tmp(folder)
    to_file(adapter, trialdir.ADAPTER_FILE)
    if loop.best_state is not None:
        to_file(loop.best_state, trialdir.BEST_FILE)
    # Private Trainer calls: the Trainer has no public "save resumable state" without saving the model,
    # and saving the model would go through state_dict() on the shared 4-bit base (see adapter_state).
    compat.save_optimizer_and_scheduler(trainer, tmp)
    compat.save_rng_state(trainer, tmp)
    trainer.state.save_to_json(str(tmp / trialdir.STATE_FILE))
    trialdir.write_loop(tmp, loop.state())
    trialdir.swap_in(tmp, folder)


def load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    path = folder / name
    return load_file(str(path)) if path.is_file() else None


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """A copy of the trainable (LoRA) weights.

    Read from named_parameters, never from model.state_dict(): on CPU, bitsandbytes repacks 4-bit weights
    on their first forward, and state_dict() of a repacked Linear4bit rewrites its quant state in place
    (bitsandbytes 0.50.2), silently changing the shared base model's outputs.
    """
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_adapter(model: Any, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n])


def evaluate(
    model: Any, fixtures: session.Fixtures, spec: TrialSpec, generate: bool
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Loss metrics on the fixed eval subset; generation metrics on the fixed generation subset."""
    from harness.trial import evaluation as ev

    batches = fixtures.eval_batches
    nll, n = ev.sharded_token_nll(model, batches) if lockstep(spec) else ev.token_nll(model, batches)
    metrics = {"eval_loss": nll / max(n, 1), "perplexity": ev.perplexity(nll, n)}
    rows: list[dict[str, Any]] = []
    if generate and fixtures.generation_rows:
        metrics_g, rows = score(model, fixtures, spec, fixtures.generation_rows)
        metrics.update(metrics_g)
    return metrics, rows


def baseline_metrics(fixtures: session.Fixtures, spec: TrialSpec) -> dict[str, float]:
    """The untrained base on the trials' eval subset (loss metrics) and generation rows, measured once
    per study. Only forward passes and generate: never state_dict() on the shared 4-bit base
    (see adapter_state)."""
    fixtures.model.eval()
    metrics, _ = evaluate(fixtures.model, fixtures, spec, generate=spec.sweep.evaluation.samples > 0)
    return metrics


def release(base: Any, peft_model: Any, forward: Any) -> None:
    """Give the shared base back exactly as the trial found it: LoRA layers removed (by peft's unload, and
    by hand for any a failed Trainer construction left behind), and its `forward` as it was: trl wraps
    the base's forward for its fused LM head on every Trainer it builds, and wrappers of wrappers would
    pile up, one per trial."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if peft_model is not None:
        peft_model.unload()
    for name, module in list(base.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent = base.get_submodule(name.rpartition(".")[0]) if "." in name else base
            setattr(parent, name.rpartition(".")[2], module.get_base_layer())
    if forward is None:
        base.__dict__.pop("forward", None)
    else:
        base.forward = forward
    base.eval()


def lockstep(spec: TrialSpec) -> bool:
    """Every rank runs every forward of the trial (fsdp on several ranks: the base is sharded)."""
    return spec.training.distributed == "fsdp" and ranks.group_size() > 1


def average_adapter_grads(trainer: Any, spec: TrialSpec) -> None:
    """fsdp: the adapter is whole on every rank (base.shard_frozen), so its gradients are averaged over
    the ranks here, as DDP would, and the Trainer does not wrap the model in DDP (which cannot take the
    sharded base): accelerate's prepare_model in its evaluation mode places the model without wrapping."""
    import functools

    import torch.distributed as dist

    k = ranks.group_size()

    def average(p: torch.Tensor) -> None:
        # After each backward: p.grad holds the ranks' already-averaged earlier micro-batches plus this
        # rank's new one, so the average stays exact under gradient accumulation.
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(k)

    for p in trainer.model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(average)
    accelerator = trainer.accelerator
    accelerator.prepare_model = functools.partial(accelerator.prepare_model, evaluation_mode=True)


def trial_steps(spec: TrialSpec, fixtures: session.Fixtures) -> tuple[int, int]:
    """(max_steps, eval_steps) this trial trains with: budget.epochs and a fractional eval_steps turned
    into optimizer steps for its sampled batch size and accumulation (BudgetConfig.steps)."""
    t = spec.training
    # GRPO's batch counts completions, num_generations per prompt: an epoch of prompts is that many more.
    rows = len(fixtures.train) * (t.num_generations if spec.sweep.trainer == "grpo" else 1)
    return spec.sweep.budget.steps(
        rows, t.per_device_train_batch_size, t.gradient_accumulation_steps, ranks.group_size()
    )


def training_args(spec: TrialSpec, fixtures: session.Fixtures, cuda: bool) -> dict[str, Any]:
    """The TrainingArguments every trainer's config shares: budget, optimizer, precision, no Trainer
    evals or saves (the eval loop does both), quiet logs, and the seeds."""
    t, s = spec.training, spec.sweep
    dtype = compute_dtype(s.model, cuda)
    max_steps, eval_steps = trial_steps(spec, fixtures)
    return {
        "output_dir": str(spec.output_dir / "hf"),
        "max_steps": max_steps,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler_type,
        "warmup_steps": t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of max_steps
        "optim": t.optim,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "gradient_checkpointing": use_gradient_checkpointing(t, cuda),
        "bf16": cuda and dtype == torch.bfloat16,
        "fp16": cuda and dtype == torch.float16,
        "use_cpu": not cuda,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": max(1, min(10, eval_steps)),
        "report_to": "none",
        "disable_tqdm": True,
        "log_level": "error",
        "seed": spec.seed,
        # Same data order for every trial (differences come from the params); seed repeats change it.
        "data_seed": s.seed if spec.data_seed is None else spec.data_seed,
        "dataloader_num_workers": 0,
        # Real tokens trained on (the trial's cost): every micro-batch's attention_mask summed, padding
        # left out (sft, dpo). GRPO's trl counts its prompt and completion tokens itself (its batches are
        # raw prompts the Trainer cannot count).
        "include_num_input_tokens_seen": "no" if s.trainer == "grpo" else "non_padding",
        # K ranks (training.distributed): the group is started (core.ranks.start); batches are sharded
        # over it and the loss is averaged over all ranks' tokens (average_tokens_across_devices).
        **(
            {"ddp_backend": "nccl" if cuda else "gloo", "ddp_find_unused_parameters": False}
            if ranks.group_size() > 1
            else {}
        ),
        "average_tokens_across_devices": True,
    }
