"""Sweep files: pydantic models, dotted overrides, and one error that lists every problem at once.

`load_sweep(path, overrides)` is the only way in. It returns a frozen `SweepConfig` whose `parameters`
already hold the validated search space (see search_space.py), so nothing downstream re-reads files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.errors import ConfigError, check_name, closest

# Metrics every task reports; tasks add their own (evaluation.py is the source of truth for values).
LOSS_METRICS = ("eval_loss", "perplexity")
TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match")
PRICER_METRICS = ("mae", "rmsle", "hit_rate", "r2", "unparseable_rate")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "text": LOSS_METRICS + TEXT_METRICS,
    "pricer": LOSS_METRICS + TEXT_METRICS + PRICER_METRICS,
}


class Strict(BaseModel):
    """Unknown keys are errors (a typo must never silently become a default); configs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(Strict):
    name: str = "builtin:tiny-llama"
    """Base model: `builtin:tiny-llama` (made offline by harness), a local folder, or a hub id."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub repo. Off unless you trust the repo."""
    quantization: Literal["nf4", "fp4", "none"] = "nf4"
    """4-bit bitsandbytes quantization of the frozen base (QLoRA), or `none` for plain LoRA."""
    double_quant: bool = True
    """Quantize the quantization constants too (saves ~0.4 bit/param)."""
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """dtype of the 4-bit matmuls; `auto` = bfloat16 on a GPU that supports it, else float32."""
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    """Attention kernel; `auto` lets transformers choose (sdpa where available)."""


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


class TrainingConfig(Strict):
    """Fixed training settings. Any of the tunable ones can be sampled instead by the search space."""

    max_seq_length: int = Field(128, gt=8)
    target_modules: str | list[str] = "all-linear"
    r: int = Field(8, gt=0)
    lora_alpha: float | None = Field(None, gt=0)
    """LoRA alpha; None means 2*r (the common 'alpha = 2r' rule)."""
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
    completion_only_loss: bool = True
    """Train only on completion tokens; the prompt is context."""
    response_template: str | None = None
    """For datasets with a single text column: the string where the completion starts (e.g. 'Price is $')."""


class MetricConfig(Strict):
    name: str = "eval_loss"
    """Any metric the task reports (TASK_METRICS), e.g. eval_loss, perplexity, mae, hit_rate, rougeL."""
    goal: Literal["minimize", "maximize"] = "minimize"


class BudgetConfig(Strict):
    n_trials: int = Field(8, gt=0)
    """Trials in the whole study; re-running a finished study adds none."""
    max_steps: int = Field(150, gt=0)
    """Optimizer steps per trial (early stopping and pruning may end it sooner)."""
    eval_steps: int = Field(25, gt=0)
    timeout_minutes: float | None = Field(None, gt=0)
    """Stop starting new trials after this long (this run only)."""
    max_failures: int = Field(5, gt=0)
    """Stop the sweep after this many failed trials in a row."""


class EarlyStoppingConfig(Strict):
    patience: int = Field(3, ge=0)
    """Evals without improvement before a trial stops; 0 turns early stopping off."""
    threshold: float = Field(0.0, ge=0)
    """Minimum improvement of the metric that counts."""


class PrunerConfig(Strict):
    """W&B `early_terminate` form, mapped onto Optuna pruners (study.py)."""

    type: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    min_iter: int = Field(1, gt=0)
    """Hyperband/SH: the smallest budget, in evals."""
    eta: int = Field(3, ge=2)
    """Hyperband/SH: reduction factor."""
    n_startup_trials: int = Field(2, ge=0)
    """Median: trials that are never pruned, to learn what 'typical' is."""
    n_warmup_steps: int = Field(0, ge=0)
    """Median: evals of each trial before pruning may start."""


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


class SweepConfig(Strict):
    name: str
    """Study name; also the folder under results/."""
    description: str = ""
    tags: list[str] = []
    task: Literal["pricer", "text"] = "pricer"
    model: ModelConfig = ModelConfig()
    dataset: DatasetConfig = DatasetConfig()
    search_space: str | None = None
    """A search-space file (W&B `parameters:` syntax), relative to the sweep file."""
    parameters: dict[str, Any] = {}
    """Inline W&B-style parameters; merged over the file's (inline wins)."""
    method: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    seed: int = 42
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
    train: PromotionConfig = PromotionConfig()
    results_dir: str = "results"

    # Set by load_sweep, not by users: where the file came from, for messages and relative paths.
    source_path: str | None = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder(cls, v: str) -> str:
        try:
            return check_name(v, "study name")
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("expect")
    @classmethod
    def _expectations_parse(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Parsed here so a malformed expectation fails at load time, before anything trains; the raw
        # mapping is kept (readable in the study's stored config). `task` and `evaluation` are declared
        # above `expect`, so they are already validated (absent when they themselves failed).
        from harness.expectations import parse_expectations

        task = info.data.get("task", "pricer")
        evaluation = info.data.get("evaluation")
        try:
            parse_expectations(v, task, custom_metrics=bool(evaluation and evaluation.custom))
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _metric_exists(self) -> SweepConfig:
        known = TASK_METRICS[self.task]
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


# ----------------------------------------------------------------------------------------------------
# Loading


def read_yaml(path: Path, what: str = "file") -> Any:
    """safe_load only: a sweep file is data, never code."""
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; expected a YAML file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected UTF-8 YAML)") from None


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """`budget.max_steps=20` style overrides; values are parsed as YAML scalars (20 -> int, true -> bool)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r} is not of the form key.sub=value (for example budget.max_steps=20)"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} in {source} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys at the place an unknown key was found, for the 'did you mean' hint."""
    model: type[BaseModel] | None = SweepConfig
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None and field is not None:  # Optional[Model]
            for arg in getattr(ann, "__args__", ()):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    return list(model.model_fields) if model else []


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            valid = [f for f in _fields_at(loc) if f != "source_path"]
            hint = closest(str(loc[-1]), valid)
            msg = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] not in ("value_error", "assertion_error"):
                msg += f" (got {e['input']!r})"
        lines.append(f"  - {key}: {msg}")
    n = len(lines)
    head = f"{source}: {n} problem{'s' if n > 1 else ''}:"
    return "\n".join([head, *lines])


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override, validate; the search space is loaded and checked here too (one error for all)."""
    from harness import search_space  # local: search_space imports this module's types

    path = Path(path)
    data = read_yaml(path, "sweep file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (name:, model:, ...) at the top level")
    data = apply_overrides(data, overrides or [], str(path))
    data.setdefault("name", path.stem)
    data.pop("source_path", None)
    try:
        cfg = SweepConfig.model_validate({**data, "source_path": str(path)})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
    params = search_space.load_parameters(cfg)
    return cfg.model_copy(update={"parameters": params})


def resolve_relative(cfg: SweepConfig, value: str) -> Path:
    """Paths in a sweep file are relative to the file; fall back to the working directory."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    if cfg.source_path:
        beside = Path(cfg.source_path).parent / p
        if beside.exists():
            return beside
    return p
