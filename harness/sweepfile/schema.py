"""The schema of a sweep file: pydantic models only (field docstrings are the docs).

Reading a file, applying overrides and turning problems into one error is sweepfile.py's job;
`sweepfile.load` returns a frozen `SweepConfig` whose `parameters` hold the parsed search space
(`ParamSpec`s) and whose `expectations` hold the parsed `expect:` block, so nothing downstream re-parses.
This module imports nothing else of harness but errors and paramspec (the bottom of the import graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import ConfigError, check_name, closest
from harness.sweepfile.params import ParamSpec

# Metrics every task reports; tasks add their own (evaluation.py is the source of truth for values).
# The tasks' are a copy of the registry's (harness.tasks: Task.metrics), kept here as plain data because
# sweepfile imports no task; tests/test_tasks.py checks that TASK_METRICS and `task:` agree with it.
LOSS_METRICS = ("eval_loss", "perplexity")
TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match")
PRICER_METRICS = ("mae", "rmsle", "hit_rate", "r2", "unparseable_rate")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "text": LOSS_METRICS + TEXT_METRICS,
    "pricer": LOSS_METRICS + TEXT_METRICS + PRICER_METRICS,
}
# What each trainer measures at every eval, besides the task's generation metrics (recipes/*.py). DPO's
# eval_loss is the DPO loss; GRPO adds `reward_<function>` per reward function.
TRAINER_METRICS: dict[str, tuple[str, ...]] = {
    "sft": LOSS_METRICS,
    "dpo": ("eval_loss", "rewards_accuracy", "rewards_margin", "rewards_chosen", "rewards_rejected"),
    "grpo": ("reward", "reward_std", "kl", "clipped_ratio"),
}
DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
DataFormat = Literal["auto", "prompt-completion", "conversational", "preference", "prompt-only"]
# Which row formats each trainer trains on (data.py detects `auto`; formats.py reads the last two).
TRAINER_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt-completion", "conversational"),
    "dpo": ("preference",),
    "grpo": ("prompt-only",),
}


# What transformers 5 accepts as `optim` and `lr_scheduler_type` (OptimizerNames, SchedulerType), checked
# at load time so a typo is a config error naming the closest name, not a failure of every trial.
# tests/test_config.py checks that every name here is one transformers knows.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
    "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
    "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
    "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw",
    "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam",
    "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw",
)  # fmt: skip
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)  # fmt: skip


SEED_LIMIT = 2**32
"""numpy's RandomState (every Optuna sampler, transformers' set_seed) takes seeds 0 .. 2**32 - 1: the
seeds derived from the sweep's (per trial, per sampler, per repeat) are taken modulo SEED_LIMIT."""


def _one_of(value: str, names: tuple[str, ...], what: str) -> str:
    if value not in names:
        hint = closest(value, names)
        raise ValueError(
            f"{value!r} is not a {what}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; choose one of: {', '.join(names)}"
        )
    return value


class Strict(BaseModel):
    """Unknown keys are errors (a typo must never silently become a default); configs are immutable."""

    # `.inf` / `.nan` are YAML floats; no setting of a sweep means them (an infinite learning rate passes
    # `gt=0`, a NaN passes no check at all and fails every trial).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class ModelConfig(Strict):
    name: str = "builtin:tiny-llama"
    """Base model: `builtin:tiny-llama` (made offline by harness), a local folder, or a hub id."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub repo. Off unless you trust the repo."""
    quantization: Literal["nf4", "fp4", "int8", "none"] = "nf4"
    """How the frozen base is stored (bitsandbytes): `nf4` or `fp4` 4-bit (QLoRA; layers `Linear4bit`),
    `int8` 8-bit (LLM.int8(), layers `Linear8bitLt`), or `none` (the compute dtype: plain LoRA). Searchable
    (`parameters: {quantization: {values: [nf4, int8]}}`): each trial trains on a base of its kind."""
    double_quant: bool = True
    """Quantize the quantization constants too (saves ~0.4 bit/param)."""
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """dtype of the 4-bit matmuls; `auto` = bfloat16 on a GPU that supports it, else float32."""
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    """Attention kernel; `auto` lets transformers choose (sdpa where available)."""
    backend: Literal["transformers", "unsloth"] = "transformers"
    """How the base is loaded and its LoRA adapter wrapped: `transformers` (+ peft, bitsandbytes), or
    `unsloth` (`pip install 'harness[unsloth]'`; its FastLanguageModel and fused LoRA kernels, one CUDA GPU;
    quantization nf4, int8 or none)."""
    max_cached_bases: int = Field(2, ge=1)
    """Loaded bases a worker keeps at once when `quantization` is searched (one per kind); loading another
    first drops the least recently used. 1 holds the least memory and reloads on every change of kind."""


class TemplateConfig(Strict):
    prompt: str
    """Format string over the dataset's columns, e.g. `"{instruction}\\n{input}\\n### Response:\\n"`."""
    completion: str
    """Format string for the trained completion, e.g. `"{output}"`."""


class DatasetConfig(Strict):
    source: str = "builtin:pricer"
    """`builtin:pricer`, a local .json/.jsonl/.csv/.parquet file or folder, or a hub dataset id."""
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    """When the source has only a train split, this share (by a hash of the row) becomes validation..."""
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    """...and this share becomes test. Hashed splits stay stable when rows are added."""
    max_train_rows: int | None = Field(None, gt=0)
    max_eval_rows: int = Field(256, gt=0)
    """Validation rows used for eval loss/perplexity at each eval (a fixed, seeded subset)."""
    template: TemplateConfig | None = None
    """Map named columns onto prompt/completion (e.g. Alpaca instruction/input/output)."""
    text_column: str = "text"
    """pricer on a hub/local dataset: the column with the product description."""
    price_column: str = "price"
    """pricer on a hub/local dataset: the column with the true price."""
    messages_column: str = "messages"
    """Chat datasets: the column with a list of {role, content}; the last assistant turn is the completion."""
    format: DataFormat = "auto"
    """Row format (trl's names): `prompt-completion` (or a template, text, pricer columns) and
    `conversational` (`messages`) for sft; `preference` (`prompt`/`chosen`/`rejected`, strings or message
    lists, or `chosen`/`rejected` with the prompt implicit in them) for dpo; `prompt-only` (`prompt`, plus
    any columns the reward functions read) for grpo. `auto` detects it from the columns and the trainer."""
    bad_rows: Literal["error", "drop"] = "error"
    """Rows that cannot be used: an empty or missing answer (completion, chosen, rejected, prompt), a label
    that is not a number (pricer: a price that is a list, text, NaN or not positive), a value of the wrong
    type. `error`: the run stops before anything is written, naming every bad row (split and row number,
    counted from 1 in file order, up to 20 of them, the rest counted); `drop`: train without them; the run
    says how many it dropped and why, and stores it in the study (user attr `dropped_rows`)."""


Truncation = Literal["keep_answer", "right", "drop"]


class TrainingConfig(Strict):
    """Fixed training settings. Any of the tunable ones can be sampled instead by the search space."""

    max_seq_length: int = Field(128, gt=8)
    truncation: Truncation = "keep_answer"
    """Rows longer than max_seq_length. `keep_answer`: shorten the prompt's body (BOS, the prompt's last
    line, e.g. `Price is $`, and the response_template stay) so the whole completion and EOS fit; `right`:
    cut from the right, as trl does (the answer loses its end); `drop`: leave the row out. In every mode a
    row whose completion alone does not fit is left out. One rule for training, eval loss and generation."""
    target_modules: str | list[str] = "all-linear"
    """Where the adapter goes: a preset, resolved for the base's architecture (Llama/Qwen/Mistral/Gemma
    `q_proj, k_proj, v_proj, o_proj` and `gate_proj, up_proj, down_proj`; GPT-2 `attn.c_attn, attn.c_proj`
    and `mlp.c_fc, mlp.c_proj`; ...): `attention`, `mlp` or `all-linear` (every linear layer but the output
    head); or a list of module names, each the end of a module's path (`q_proj`, `mlp.c_proj`); a
    comma-separated string is a list too. Searchable. A choice that matches no layer of the base is an
    input error before the study starts."""
    r: int = Field(8, gt=0)
    lora_alpha: float | None = Field(None, gt=0)
    """LoRA alpha; None means 2*r (the common 'alpha = 2r' rule). Searching `lora_alpha_multiple` instead
    sets alpha = multiple * r; give one of the two, not both."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: the adapter's output is scaled by alpha/sqrt(r) instead of alpha/r, so high
    ranks keep learning (peft `use_rslora`)."""
    loraplus_lr_ratio: float | None = Field(None, ge=1)
    """LoRA+: B's learning rate is this times `learning_rate` (A's), e.g. 16; None = plain LoRA. Built with
    peft's create_loraplus_optimizer from the `optim` class (the scheduler follows it); not with the
    GaLore, APOLLO, LOMO or layer-wise optimizers."""
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    per_device_train_batch_size: int = Field(16, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    optim: str = "paged_adamw_32bit"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """`auto` = on when training on a GPU (saves memory), off on CPU (only costs time there)."""
    distributed: Literal["none", "ddp", "fsdp"] = "none"
    """One trial on K ranks (`sweep run --devices-per-worker K`, or under torchrun/srun): `ddp` replicates
    the base and adapter on every rank; `fsdp` shards the frozen base over the ranks (torch FSDP2
    `fully_shard`) and replicates the small adapter. Rank 0 owns the trial; the effective batch is
    per_device_train_batch_size * gradient_accumulation_steps * K. A fixed setting, not searchable."""
    completion_only_loss: bool = True
    """Train only on completion tokens; the prompt is context."""
    response_template: str | None = None
    """For datasets with a single text column: the string where the completion starts (e.g. 'Price is $')."""
    # DPO and GRPO settings (trl's names); searchable like the others.
    beta: float | None = Field(None, ge=0)
    """dpo: how far the policy may move from the reference (trl default 0.1); grpo: the KL weight (trl
    default 0.0: no reference pass). The reference is always the base with the adapter disabled."""
    loss_type: str = "sigmoid"
    """dpo: the preference loss (trl's DPO loss types: sigmoid, hinge, ipo, robust, ...)."""
    num_generations: int = Field(4, ge=2)
    """grpo: completions sampled per prompt. The effective batch (per_device_train_batch_size *
    gradient_accumulation_steps) must be a multiple of it: it holds batch/num_generations prompts."""
    temperature: float = Field(1.0, gt=0)
    """grpo: sampling temperature of the training generations (validation generates greedily)."""
    max_completion_length: int = Field(16, gt=0)
    """grpo: tokens generated per completion, in training and validation."""
    reward_functions: list[str] = []
    """grpo: builtin `price_accuracy`, `number_format`, or `module:function` beside the sweep file, called as
    f(prompts, completions, **columns) -> one float per completion."""
    reward_weights: list[float] | None = None
    """grpo: one weight per reward function (default all 1.0); the reward is their weighted sum."""

    @field_validator("target_modules")
    @classmethod
    def _target_modules(cls, v: str | list[str]) -> str | list[str]:
        return target_choice(v)

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        return _one_of(v, DPO_LOSSES, "trl DPO loss type")

    @field_validator("optim")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return _one_of(v, OPTIMIZERS, "transformers optimizer")

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        return _one_of(v, SCHEDULERS, "transformers learning-rate scheduler")


TARGET_PRESETS = ("attention", "mlp", "all-linear")
"""target_modules presets (harness.sweepfile.levers resolves them per architecture)."""


def target_choice(value: Any) -> str | list[str]:
    """A target_modules setting in its one form: a preset name, or a list of module names (a
    comma-separated string, as a searched list is sampled, becomes a list)."""
    if isinstance(value, str) and value.strip() in TARGET_PRESETS:
        return value.strip()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names]
    if not names or not all(names):
        raise ValueError(
            f"give a preset ({', '.join(TARGET_PRESETS)}) or module names such as [q_proj, v_proj] "
            f"(got {value!r})"
        )
    return list(dict.fromkeys(names))


def trainer_metrics(trainer: str, rewards: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """What the trainer measures at every eval (no generation needed): TRAINER_METRICS, plus GRPO's
    `reward_<function>` per reward function."""
    per_function = tuple(f"reward_{reward_name(r)}" for r in rewards) if trainer == "grpo" else ()
    return TRAINER_METRICS.get(trainer, ()) + per_function


def known_metrics(
    task: str, trainer: str = "sft", rewards: list[str] | tuple[str, ...] = ()
) -> tuple[str, ...]:
    """Every metric a sweep reports: the task's and the trainer's."""
    task_metrics = TASK_METRICS.get(task, ())
    if trainer == "grpo":  # no completion likelihood is measured: its evals score generated answers
        task_metrics = tuple(m for m in task_metrics if m not in LOSS_METRICS)
    return tuple(dict.fromkeys(task_metrics + trainer_metrics(trainer, rewards)))


def reward_name(spec: str) -> str:
    """`price_accuracy` -> price_accuracy; `my_rewards:length_penalty` -> length_penalty."""
    return spec.rpartition(":")[2].rpartition(".")[2]


# ----------------------------------------------------------------------------------------------------
# Search space: one entry of a W&B `parameters:` block is a ParamSpec (paramspec.py; search_space.py maps it)

# Tunable names are TrainingConfig fields, plus the "alpha = k * r" form and the base's quantization
# (MODEL_TUNABLE: a ModelConfig field; TrialSpec.build gives each trial its base).
NOT_TUNABLE = {
    "max_seq_length",
    "truncation",
    "completion_only_loss",
    "response_template",
    "gradient_checkpointing",
    "distributed",
    "reward_functions",
    "reward_weights",
}
MODEL_TUNABLE = ("quantization",)
TUNABLE = (
    tuple(f for f in TrainingConfig.model_fields if f not in NOT_TUNABLE)
    + ("lora_alpha_multiple",)
    + MODEL_TUNABLE
)


# ----------------------------------------------------------------------------------------------------
# Expectations: a parsed `expect:` block (expectations.py parses and checks them)

Scope = Literal["best", "all"]


@dataclass(frozen=True)
class Condition:
    op: str
    threshold: float | None
    """None for a `baseline.NAME` condition until it is resolved against the study (expectations)."""
    baseline: str | None = None
    """`< baseline.median`: the threshold is that task baseline's value, set when checking (expectations)."""

    def holds(self, value: float) -> bool:
        t = self.threshold
        if t is None:
            raise ValueError(f"{self} is not resolved against the study's baselines yet")
        if self.op in ("==", "!="):
            # Metrics are floats computed by different code paths; exact equality would be luck.
            same = math.isclose(value, t, rel_tol=1e-9, abs_tol=1e-12)
            return same if self.op == "==" else not same
        return {"<": value < t, "<=": value <= t, ">": value > t, ">=": value >= t}[self.op]

    def __str__(self) -> str:
        return f"{self.op} baseline.{self.baseline}" if self.baseline else f"{self.op} {self.threshold:.6g}"


@dataclass(frozen=True)
class Expectation:
    metric: str
    conditions: tuple[Condition, ...]
    scope: Scope = "best"
    in_smoke: bool = True
    """False: smoke runs only check that the metric was measured (see expectations.py)."""

    def holds(self, value: float) -> bool:
        return math.isfinite(value) and all(c.holds(value) for c in self.conditions)

    def describe(self) -> str:
        text = f"{self.metric} " + " and ".join(str(c) for c in self.conditions)
        return text + (" in every trial" if self.scope == "all" else "")


class MetricConfig(Strict):
    name: str = "eval_loss"
    """Any metric the task reports (TASK_METRICS), e.g. eval_loss, perplexity, mae, hit_rate, rougeL."""
    goal: Literal["minimize", "maximize"] = "minimize"


DEFAULT_MAX_STEPS = 150


class BudgetConfig(Strict):
    n_trials: int = Field(8, gt=0)
    """Trials in the whole study; re-running a finished study adds none."""
    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps per trial (early stopping and pruning may end it sooner). Give this or `epochs`,
    not both; a file that gives neither trains 150 steps."""
    epochs: float | None = Field(None, gt=0)
    """The budget in passes over the train rows instead of steps (0.5 = half an epoch): a trial trains
    ceil(epochs x train rows / (per_device_train_batch_size x gradient_accumulation_steps x devices))
    optimizer steps, so configs with different batch sizes see the same data. The steps a trial really
    used are in its params.json and user attrs (max_steps, eval_steps)."""
    eval_steps: int | float = Field(25, gt=0)
    """Steps between evals; a number below 1 is a fraction of one epoch of the trial, in its steps (at
    least 1 step): 0.25 evaluates four times an epoch whatever the batch size."""
    timeout_minutes: float | None = Field(None, gt=0)
    """Stop starting new trials after this long (this run only)."""
    device_hours: float | None = Field(None, gt=0)
    """Stop starting new trials once the study has spent this many device-hours: wall time x devices,
    summed over all its trials (every worker's, and earlier runs'; running trials count their time so
    far). A trial already running finishes. The totals: `sweep status`, `sweep report`."""
    max_failures: int = Field(5, gt=0)
    """Stop the sweep after this many failed trials in a row."""

    @model_validator(mode="before")
    @classmethod
    def _steps_or_epochs(cls, data: Any) -> Any:
        """Exactly one of max_steps / epochs; neither keeps the old default, so existing files stay valid."""
        if not isinstance(data, dict):
            return data
        if data.get("max_steps") is not None and data.get("epochs") is not None:
            raise ValueError(
                "max_steps and epochs are both given: budget a trial in steps (max_steps) or in passes "
                "over the train rows (epochs), not both"
            )
        if data.get("max_steps") is None and data.get("epochs") is None:
            data = {**data, "max_steps": DEFAULT_MAX_STEPS}
        return data

    @field_validator("eval_steps")
    @classmethod
    def _eval_steps_form(cls, v: int | float) -> int | float:
        if isinstance(v, float):
            if v.is_integer():
                return int(v)  # 25.0 is 25 steps
            if v > 1:
                raise ValueError(
                    f"eval_steps {v}: give whole steps (an int) or a fraction of an epoch below 1"
                )
        return v

    @property
    def unit_text(self) -> str:
        """`max_steps=150` or `epochs=0.5`: the budget as the file gave it."""
        return f"max_steps={self.max_steps}" if self.epochs is None else f"epochs={self.epochs:g}"

    @property
    def per_trial(self) -> bool:
        """A trial's steps depend on its batch size (epochs, or eval_steps a fraction of an epoch): then
        trials report to the pruner by eval index (harness.study.objective), not by step."""
        return self.epochs is not None or isinstance(self.eval_steps, float)

    def max_evals(self) -> int | None:
        """The most evals a trial can run, known without the data only when both budget and interval are in
        epochs (a last eval at max_steps off the interval counts one more); None otherwise."""
        if self.epochs is None or not isinstance(self.eval_steps, float):
            return None
        return math.ceil(round(self.epochs / self.eval_steps, 9)) + 1

    def steps(self, train_rows: int, batch: int, accumulation: int, devices: int = 1) -> tuple[int, int]:
        """(max_steps, eval_steps) of one trial, in optimizer steps: `epochs` and a fractional eval_steps
        become steps for this trial's batch (per device x accumulation x devices). Rounded to 9 places
        before ceil/floor, so 0.02 x 1000 rows / 4 is 5 steps, not 6 from a float's last bit."""
        per_step = batch * accumulation * devices
        epoch = train_rows / per_step  # one epoch, in (fractional) optimizer steps
        if self.max_steps is not None:
            max_steps = self.max_steps
        else:
            assert self.epochs is not None  # _steps_or_epochs
            max_steps = max(1, math.ceil(round(self.epochs * epoch, 9)))
        if isinstance(self.eval_steps, float):
            return max_steps, max(1, math.floor(round(self.eval_steps * epoch, 9)))
        return max_steps, self.eval_steps


class EarlyStoppingConfig(Strict):
    patience: int = Field(3, ge=0)
    """Evals without improvement before a trial stops; 0 turns early stopping off."""
    threshold: float = Field(0.0, ge=0)
    """Minimum improvement of the metric that counts."""


class PrunerConfig(Strict):
    """W&B `early_terminate` form, mapped onto Optuna pruners (study.py). The default is the pruner that got
    to a near-best config soonest in `make bench-quality` (successive halving, ahead of hyperband and median
    on every seed)."""

    type: Literal["median", "hyperband", "successive_halving", "none"] = "successive_halving"
    min_iter: Annotated[int, Field(gt=0)] | Literal["auto"] = 1
    """Hyperband/SH: the smallest budget, in evals. `auto` (successive halving): prune nothing until 4
    trials finished, then the first rung is the earliest eval whose rank agreement with the final value
    (Spearman's rho over the finished trials) reaches `min_agreement`, re-measured as trials finish."""
    min_agreement: float = Field(0.7, ge=-1, le=1)
    """min_iter auto: the rho an eval needs to become the first rung."""
    eta: int = Field(3, ge=2)
    """Hyperband/SH: reduction factor."""
    n_startup_trials: int = Field(2, ge=0)
    """Median: trials that are never pruned, to learn what 'typical' is."""
    n_warmup_steps: int = Field(0, ge=0)
    """Median: evals of each trial before pruning may start."""
    keep_pruned_checkpoints: bool = False
    """A pruned trial keeps its checkpoint, saved at the eval that pruned it, so `sweep audit` continues it
    from there instead of from step 0. Off by default: one checkpoint (adapter + optimizer) per pruned trial
    stays on disk until it is audited."""

    @model_validator(mode="after")
    def _auto_is_successive_halving(self) -> PrunerConfig:
        if self.min_iter == "auto" and self.type != "successive_halving":
            raise ValueError(
                f"min_iter: auto chooses successive halving's first rung; type {self.type} cannot use it "
                "(give min_iter a number of evals, or type: successive_halving)"
            )
        return self


class EvaluationConfig(Strict):
    samples: int = Field(64, ge=0)
    """Validation rows for generation metrics (fixed, seeded subset); 0 skips generation."""
    max_new_tokens: int = Field(8, gt=0)
    batch_size: int = Field(32, gt=0)
    every_eval: bool = False
    """Also generate at each eval (needed when the objective is a generation metric and pruning is on)."""
    custom: list[str] = []
    """Custom metrics as `package.module:function(predictions, references, rows) -> dict`."""
    compare_base: bool = True
    """After a trial, also generate with the adapter disabled (the untrained base) on the same rows, so
    generations.jsonl holds `prediction_before` next to `prediction` and metrics.json the base's scores."""


class TrackingConfig(Strict):
    backend: Literal["none", "wandb", "tensorboard"] = "none"
    """Log each trial as a run: W&B (grouped by study; WANDB_MODE=offline works) or TensorBoard."""
    project: str | None = None
    """W&B project (default: the study name)."""
    entity: str | None = None
    tags: list[str] = []


class PromotionConfig(Strict):
    """`sweep train`: one full fine-tune of the best config, with its own longer budget."""

    max_steps: int = Field(600, gt=0)
    eval_steps: int = Field(50, gt=0)
    output_dir: str | None = None
    """Where the adapter goes (default results/<name>/promoted/)."""


class ConfirmConfig(Strict):
    """`sweep confirm` at the end of every run: re-train the `top` best configs with `seeds` more seeds."""

    top: int = Field(3, gt=0)
    seeds: int = Field(3, gt=0)


class SweepConfig(Strict):
    name: str
    """Study name; also the folder under results/."""
    description: str = ""
    tags: list[str] = []
    task: Literal["pricer", "text"] = "pricer"
    """What the answers are judged as (harness.tasks): `pricer` (a price), `text` (free text)."""
    trainer: Literal["sft", "dpo", "grpo"] = "sft"
    """What each trial trains with (trl): `sft` on prompt/completion or chat rows, `dpo` on preference pairs,
    `grpo` on prompts with `training.reward_functions`. A grpo sweep without `metric:` maximizes `reward`."""
    model: ModelConfig = ModelConfig()
    dataset: DatasetConfig = DatasetConfig()
    search_space: str | None = None
    """A search-space file (W&B `parameters:` syntax), relative to the sweep file."""
    parameters: dict[str, ParamSpec] = {}
    """Inline W&B-style parameters; merged over the file's (inline wins). Once loaded: the whole space."""
    method: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    seed: int = Field(42, ge=0, lt=SEED_LIMIT)
    """Seeds the sampler and every trial (trial N trains with seed + N, its sampler draws with seed + 7919 N,
    seed repeats add 1,000,003 per repeat, each modulo 2**32): 0 .. 2**32 - 1, what numpy accepts."""
    metric: MetricConfig = MetricConfig()
    """The objective (single-objective study), or the primary metric of `metrics:`."""
    metrics: list[MetricConfig] | None = None
    """Several objectives -> a multi-objective study (Pareto front). The first is the primary metric: it
    drives early stopping and the best-adapter snapshot, and `metric:` is set to it (give `metric:` only
    if it equals the first entry). Pruning is off for multi-objective studies (Optuna cannot prune them)."""
    budget: BudgetConfig = BudgetConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    early_terminate: PrunerConfig = PrunerConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    storage: str | None = None
    """Optuna storage URL; default sqlite:///<results_dir>/<name>/study.db."""
    tracking: TrackingConfig = TrackingConfig()
    expect: dict[str, Any] = {}
    """Expectations on the best trial's metrics, e.g. `eval_loss: "< 2.5"`, `perplexity: {max: 12}`."""
    expectations: tuple[Expectation, ...] = Field((), exclude=True)
    """Set by sweepfile.load, not by users: `expect:` parsed (the raw block above is what is stored)."""
    train: PromotionConfig = PromotionConfig()
    confirm: ConfirmConfig | None = None
    """Seed repeats of the best configs after every run (harness.study.confirm); off unless given."""
    results_dir: str = "results"

    # Set by load_sweep, not by users: where the file came from, for messages and relative paths.
    source_path: str | None = Field(None, exclude=True)
    notes: tuple[str, ...] = Field((), exclude=True)
    """Set by sweepfile.load, not by users: one line per W&B key read as harness's or ignored
    (harness.sweepfile.wandb); printed when the sweep runs."""

    @field_validator("name")
    @classmethod
    def _name_is_a_folder(cls, v: str) -> str:
        try:
            return check_name(v, "study name")
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="before")
    @classmethod
    def _grpo_maximizes_reward(cls, data: Any) -> Any:
        """GRPO trains no likelihood of a reference answer: its natural objective is the validation reward."""
        if isinstance(data, dict) and data.get("trainer") == "grpo" and not {"metric", "metrics"} & set(data):
            data = {**data, "metric": {"name": "reward", "goal": "maximize"}}
        return data

    @model_validator(mode="after")
    def _metric_exists(self) -> SweepConfig:
        known = known_metrics(self.task, self.trainer, self.training.reward_functions)
        custom = bool(self.evaluation.custom)
        problems = []
        named = (
            [("metric.name", self.metric)]
            if self.metrics is None
            else [(f"metrics.{i}.name", m) for i, m in enumerate(self.metrics)]
        )
        for where, m in named:
            if m.name not in known and not custom:
                hint = closest(m.name, known)
                problems.append(
                    f"{where} {m.name!r} is not reported by task {self.task!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; choose one of: {', '.join(known)}"
                )
        if self.metrics is not None:
            names = [m.name for m in self.metrics]
            if not names:
                problems.append("metrics: give at least one {name, goal}, or use metric: instead")
            elif len(set(names)) != len(names):
                problems.append(f"metrics: a metric is listed twice ({', '.join(names)})")
            elif not problems and "metric" in self.model_fields_set and self.metric != self.metrics[0]:
                problems.append(
                    "metric and metrics are both given and differ: metrics' first entry is the primary "
                    "metric; drop metric: (or make it equal to metrics[0])"
                )
            if len(names) > 1 and self.method == "cmaes":
                problems.append("method cmaes cannot optimise several metrics; use tpe, random, grid or gp")
        if problems:
            raise ValueError("; ".join(problems))
        if self.metrics:
            # The primary objective everywhere a single metric is needed (early stopping, progress, expect).
            object.__setattr__(self, "metric", self.metrics[0])
        return self

    @property
    def objectives(self) -> list[MetricConfig]:
        """What the study optimises: `metrics:` when given, else `[metric]`."""
        return list(self.metrics) if self.metrics else [self.metric]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def study_dir(self) -> Path:
        return Path(self.results_dir) / self.name

    def resolve_path(self, value: str) -> Path:
        """Paths in a sweep file are relative to the file; fall back to the working directory."""
        p = Path(value).expanduser()
        if p.is_absolute():
            return p
        if self.source_path:
            beside = Path(self.source_path).parent / p
            if beside.exists():
                return beside
        return p
