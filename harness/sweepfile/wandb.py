"""W&B sweep files as people write them: what `sweep run` reads of W&B's own syntax, and the names W&B
users give their settings.

`sweep run` takes a W&B sweep file whose parameters have harness names (`learning_rate`, `r`):
- `accept` reads W&B's top-level keys the way W&B means them (`method: bayes` is TPE, `run_cap` is
  `budget.n_trials`, a metric logged as `eval/loss` is `eval_loss`, hyperband's `max_iter`/`s` give its
  first rung) and drops the keys only W&B's agent reads (`program`, `command`, `project`, `entity`, ...);
  each change is one note, printed when the sweep runs;
- `parameter` rewrites the W&B distributions that are exactly an Optuna one (`inv_log_uniform_values` is
  `log_uniform_values`) and names the ones Optuna has no equivalent for, as the parameter's error.
Script names (`lr`, `lora-r`, `batch_size`) are not renamed by `sweep run`: an unknown name stays an error,
and `harness_name` gives its hint. `sweep convert` (harness.sweepfile.convert) renames them, with a line
for each.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

from harness.sweepfile.schema import TASK_METRICS, TRAINER_METRICS

IGNORED: dict[str, type] = {
    "program": str,
    "command": list,
    "project": str,
    "entity": str,
    "controller": dict,
    "job": str,
    "image_uri": str,
    "apiVersion": str,
    "kind": str,
    "scheduler": dict,
}
"""W&B's top-level keys for its own agent and server, with the type W&B gives each: harness runs its trials
itself, so these are ignored (with a note). A key of another type is left to the schema (a typo's error)."""

METRIC_EXTRAS = ("target", "impute", "impute_while_running")
"""W&B `metric:` keys harness has no use for: its study runs `n_trials` trials, and a failed trial fails."""

EXACT = {"inv_log_uniform_values": "log_uniform_values", "inv_log_uniform": "log_uniform_values"}
"""W&B distributions that are an Optuna distribution under another name: 1/X log-uniform in [1/max, 1/min]
is X log-uniform in [min, max]; `inv_log_uniform` takes -ln of the bounds (X in [e^-max, e^-min])."""

NO_OPTUNA = {
    "normal": "an unbounded normal",
    "q_normal": "an unbounded normal",
    "log_normal": "an unbounded log-normal",
    "q_log_normal": "an unbounded log-normal",
    "beta": "a beta distribution",
    "q_beta": "a beta distribution",
    "q_log_uniform": "a log scale with a step",
    "q_log_uniform_values": "a log scale with a step",
}
"""W&B distributions with no Optuna equivalent (Optuna samples bounded ranges, log-scaled or stepped, not
both): an error naming the parameter, with what to write instead."""

_LOGGED = {
    "rewards/accuracies": "rewards_accuracy",
    "rewards/margins": "rewards_margin",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
}
"""trl's DPO metrics as the Trainer logs them to W&B (eval/rewards/accuracies) -> harness's names."""

HARNESS_METRICS = frozenset(m for names in (*TASK_METRICS.values(), *TRAINER_METRICS.values()) for m in names)


def accept(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A sweep file's top level with W&B's own keys read as harness's -> (the data, one note per change).
    Only keys of W&B's shape are touched; anything else is left for the schema to judge."""
    out = dict(data)
    notes: list[str] = []
    ignored = [k for k, kind in IGNORED.items() if isinstance(out.get(k), kind)]
    if ignored:
        for k in ignored:
            del out[k]
        tracking = {"project", "entity"} & set(ignored)
        notes.append(
            f"W&B key{'s' if len(ignored) > 1 else ''} {', '.join(ignored)} ignored: harness runs each trial "
            "itself" + ("; `tracking: {backend: wandb, project: ...}` logs trials to W&B" if tracking else "")
        )
    if out.get("method") == "bayes":
        out["method"] = "tpe"
        notes.append("method: bayes is W&B's Bayesian search; harness runs TPE, Optuna's Bayesian sampler")
    cap = out.get("run_cap")
    if isinstance(cap, int) and not isinstance(cap, bool):
        del out["run_cap"]
        budget = out.get("budget", {})
        if isinstance(budget, dict) and "n_trials" not in budget:
            out["budget"] = {**budget, "n_trials": cap}
            notes.append(f"W&B's run_cap: {cap} read as budget.n_trials: {cap}")
        else:
            notes.append("W&B's run_cap ignored: budget.n_trials is given")
    if isinstance(out.get("metric"), dict):
        out["metric"] = _metric(out["metric"], "metric", notes)
    if isinstance(out.get("metrics"), list):
        out["metrics"] = [
            _metric(m, f"metrics.{i}", notes) if isinstance(m, dict) else m
            for i, m in enumerate(out["metrics"])
        ]
    terminate = out.get("early_terminate")
    if isinstance(terminate, dict) and terminate.get("type") == "hyperband":
        out["early_terminate"], note = hyperband(terminate)
        if note:
            notes.append(note)
    return out, notes


def metric_name(name: str) -> str:
    """A metric as W&B shows what the HF Trainer logs -> harness's name: `eval/loss` -> `eval_loss`,
    `eval/mae` -> `mae`, `eval/rewards/accuracies` -> `rewards_accuracy`, `train/loss` -> `train_loss`."""
    prefix, sep, rest = name.partition("/")
    if not sep:
        return name
    if prefix == "eval":
        flat = rest.replace("/", "_")
        if rest in _LOGGED:
            return _LOGGED[rest]
        return flat if flat in HARNESS_METRICS else f"eval_{flat}"
    return name.replace("/", "_")


def _metric(metric: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    out = dict(metric)
    dropped = [k for k in METRIC_EXTRAS if k in out]
    for k in dropped:
        del out[k]
    name = out.get("name")
    if isinstance(name, str) and "/" in name:
        out["name"] = metric_name(name)
        notes.append(f"{where}.name {name} (W&B's name for a logged metric) read as {out['name']}")
    if dropped:
        notes.append(
            f"{where}: W&B's {', '.join(dropped)} ignored (the study runs budget.n_trials trials; a failed "
            "trial is recorded as failed)"
        )
    return out


def hyperband(terminate: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """W&B's `early_terminate: {type: hyperband, ...}` -> harness's (min_iter, eta), and a note when
    anything changed. W&B's rungs are `max_iter / eta**k` for k = 1..s (or `min_iter * eta**k`): the
    first is harness's `min_iter`, the later ones follow from eta either way. `strict` has no equivalent."""
    out = dict(terminate)
    said: list[str] = []
    eta = out.get("eta", 3)
    if isinstance(eta, float) and eta.is_integer():
        out["eta"] = eta = int(eta)
    max_iter, s = out.get("max_iter"), out.get("s")
    if _number(max_iter) and _number(s) and _number(eta) and eta > 1 and "min_iter" not in out:
        rungs = []
        band = float(max_iter)
        for _ in range(int(s)):
            band /= eta
            if band < 1:
                break
            rungs.append(int(band))
        del out["max_iter"], out["s"]
        if rungs:
            out["min_iter"] = min(rungs)
            said.append(f"max_iter {max_iter}, s {s} read as min_iter {out['min_iter']} (W&B's first rung)")
        else:
            said.append(f"max_iter {max_iter}, s {s} give W&B no rung; min_iter left at its default")
    for key in ("max_iter", "s"):
        if _number(out.get(key)):
            said.append(f"{key} {out.pop(key)} ignored (the rungs start at min_iter and grow by eta)")
    if isinstance(out.get("strict"), bool):
        said.append(f"strict {out.pop('strict')} ignored (harness's hyperband is Optuna's)")
    return out, ("early_terminate: " + "; ".join(said)) if said else None


def parameter(body: Any) -> tuple[Any, str | None]:
    """One `parameters:` entry with W&B's distributions read as harness's -> (body, problem or None)."""
    if not isinstance(body, dict):
        return body, None
    if "parameters" in body:
        return body, (
            "a nested W&B `parameters:` block: harness settings are one level deep (`sweep convert` "
            "flattens and maps them)"
        )
    if "probabilities" in body:
        return body, (
            "W&B's `probabilities` weight the values; Optuna samples categorical values unweighted: drop "
            "`probabilities` (or list a value twice)"
        )
    dist = body.get("distribution")
    if not isinstance(dist, str):
        return body, None  # a list or a mapping: ParamSpec's validation names what a distribution may be
    if dist == "categorical_w_probabilities":
        return body, "W&B's categorical_w_probabilities needs `probabilities`: use categorical"
    if dist in EXACT:
        out = {**body, "distribution": EXACT[dist]}
        lo, hi = body.get("min"), body.get("max")
        if dist == "inv_log_uniform" and _number(lo) and _number(hi):
            out["min"], out["max"] = _exp(-hi), _exp(-lo)
        return out, None
    if dist in NO_OPTUNA:
        return body, (
            f"W&B's {dist} is {NO_OPTUNA[dist]}, which Optuna cannot sample; give `min` and `max` with "
            "distribution uniform, int_uniform, log_uniform_values or q_uniform, or `values: [...]` "
            "(`sweep convert` approximates it)"
        )
    return body, None


def _number(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf  # an absurd bound: the range check names it


# ----------------------------------------------------------------------------------------------------
# The names W&B users give their settings (their own scripts' argument names)

ALIASES: dict[str, tuple[str, ...]] = {
    "learning_rate": (
        "learning_rate", "lr", "learningrate", "learn_rate", "lrate", "base_lr", "init_lr", "initial_lr",
        "lr_init", "max_lr", "peak_lr", "lr0", "optimizer_lr", "optim_lr", "adam_lr",
    ),
    "r": ("r", "rank", "lora_r", "lora_rank", "lora_dim", "lora_r_dim", "peft_r", "adapter_rank"),
    "lora_alpha": ("lora_alpha", "alpha", "peft_alpha", "adapter_alpha", "lora_scaling_alpha"),
    "lora_alpha_multiple": (
        "lora_alpha_multiple", "alpha_multiple", "lora_alpha_ratio", "alpha_ratio", "alpha_over_r",
        "lora_alpha_multiplier", "alpha_multiplier",
    ),
    "lora_dropout": (
        "lora_dropout", "dropout", "lora_drop", "lora_dropout_rate", "dropout_rate", "lora_p",
        "adapter_dropout", "peft_dropout",
    ),
    "per_device_train_batch_size": (
        "per_device_train_batch_size", "micro_batch_size", "per_device_batch_size",
        "per_gpu_train_batch_size", "train_micro_batch_size_per_gpu", "micro_bs", "train_batch_size",
        "batch_size", "batchsize", "bs", "train_bs", "mini_batch_size", "minibatch_size", "batch",
        "batch_size_train",
    ),
    "gradient_accumulation_steps": (
        "gradient_accumulation_steps", "grad_accum", "grad_accum_steps", "gradient_accumulation",
        "grad_accumulation", "grad_accumulation_steps", "accumulation_steps", "accum_steps",
        "accumulate_grad_batches", "grad_acc_steps", "grad_acc", "gradient_accumulate_every", "ga_steps",
        "gas", "accumulation",
    ),
    "weight_decay": (
        "weight_decay", "wd", "weight_decay_rate", "l2", "l2_reg", "l2_regularization", "l2_lambda",
        "l2_penalty", "decay", "regularization",
    ),
    "warmup_ratio": (
        "warmup_ratio", "warmup", "warmup_frac", "warmup_fraction", "warmup_proportion", "warmup_pct",
        "warmup_percent", "pct_start", "lr_warmup_ratio", "lr_warmup", "warmup_steps", "num_warmup_steps",
        "warmup_iters", "warmup_step", "lr_warmup_steps",
    ),
    "optim": (
        "optim", "optimizer", "optimiser", "optimizer_name", "optimizer_type", "optim_name", "opt",
        "optimizer_cls",
    ),
    "lr_scheduler_type": (
        "lr_scheduler_type", "lr_scheduler", "scheduler", "scheduler_type", "lr_schedule", "schedule",
        "lr_scheduler_name", "scheduler_name", "lr_decay", "lr_decay_type", "lr_decay_style", "lr_policy",
        "sched", "decay_schedule",
    ),
    "max_grad_norm": (
        "max_grad_norm", "grad_clip", "gradient_clip_val", "gradient_clipping", "clip_grad_norm",
        "clip_grad", "grad_norm_clip", "max_norm", "clip_norm", "grad_clip_norm", "gradient_clip",
        "max_grad_l2_norm", "clip",
    ),
    "beta": ("beta", "dpo_beta"),
    "loss_type": ("loss_type", "dpo_loss_type", "dpo_loss"),
    "num_generations": ("num_generations", "n_generations", "group_size", "grpo_group_size"),
    "temperature": ("temperature", "temp", "sampling_temperature"),
    "max_completion_length": (
        "max_completion_length", "max_new_tokens", "max_gen_len", "generation_max_length",
        "max_response_length",
    ),
    # Fixed settings (one value), and what harness budgets, names and reads elsewhere.
    "epochs": (
        "epochs", "epoch", "n_epochs", "num_epochs", "num_train_epochs", "max_epochs", "train_epochs",
        "nb_epochs", "total_epochs", "training_epochs",
    ),
    "budget.max_steps": (
        "max_steps", "num_steps", "steps", "max_iters", "train_steps", "total_steps", "num_train_steps",
        "training_steps", "n_steps", "iterations", "num_iterations",
    ),
    "budget.eval_steps": (
        "eval_steps", "eval_interval", "eval_every", "evaluation_steps", "eval_freq", "eval_every_n_steps",
        "validate_every_n_steps",
    ),
    "training.max_seq_length": (
        "max_seq_length", "max_length", "max_seq_len", "seq_len", "seq_length", "sequence_len",
        "sequence_length", "cutoff_len", "context_length", "model_max_length", "max_len", "block_size",
    ),
    "training.target_modules": ("target_modules", "lora_target_modules", "lora_target", "lora_targets"),
    "model.quantization": ("quantization", "quant_type", "bnb_4bit_quant_type", "quantization_type"),
    "seed": ("seed", "random_seed", "seeds"),
    "model.name": (
        "model", "model_name", "model_name_or_path", "base_model", "model_id", "model_path",
        "pretrained_model_name_or_path", "base_model_name", "hf_model", "model_checkpoint",
    ),
    "dataset.source": (
        "dataset", "dataset_name", "dataset_path", "dataset_id", "data_path", "train_file", "train_data",
        "train_path", "data_dir",
    ),
}  # fmt: skip
"""harness's name -> the names people give it in their scripts, normalized: snake case,
lower case (`normalize`). Tunable settings, then fixed ones (`epochs`: budget.epochs, one value)."""

_BY_ALIAS = {alias: target for target, aliases in ALIASES.items() for alias in aliases}


def normalize(name: str) -> str:
    """`learning-rate`, `learningRate`, `--lr`, `Learning Rate` -> `learning_rate`, `learningrate`, ..."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")


def lookup(name: str) -> str | None:
    """What a W&B parameter name means in harness (an ALIASES key), or None. A dotted or slashed name
    (`model.learning_rate`, `lora.r`) is tried whole, then by its last part."""
    text = str(name)
    tries = [normalize(text)]
    last = re.split(r"[./]", text.strip())[-1]
    if last != text.strip():
        tries.append(normalize(last))
    for candidate in tries:
        if candidate in _BY_ALIAS:
            return _BY_ALIAS[candidate]
    return None


def harness_name(name: str, tunable: tuple[str, ...]) -> str | None:
    """The tunable setting a script's parameter name means (`lr` -> `learning_rate`), for error hints."""
    target = lookup(name)
    setting = target.rsplit(".", 1)[-1] if target else None  # training.target_modules: tunable now
    return setting if setting in tunable and setting != name else None
