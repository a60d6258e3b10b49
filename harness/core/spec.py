"""The two records that cross the recipe/objective boundary: what to train, and what came out.

Neither knows Optuna or transformers, so the recipe can be run without a study and the objective
can be tested with a fake recipe.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.errors import ConfigError, check_callable_spec
from harness.sweepfile.schema import SEED_LIMIT, ModelConfig, SweepConfig, TrainingConfig


@dataclass(frozen=True)
class TrialSpec:
    number: int
    """Trial number in the study (0-based), or -1 for a run outside a study."""
    params: dict[str, Any]
    """What the search space sampled, as sampled (for reports)."""
    training: TrainingConfig
    """Fixed training settings with the sampled ones applied: what the recipe actually uses."""
    sweep: SweepConfig
    output_dir: Path
    seed: int
    data_seed: int | None = None
    """The training data's shuffling seed; None: the sweep's seed, so every trial sees the same order
    (differences come from the params). Seed repeats (`sweep confirm`) set their own."""
    resume_from: Path | None = None
    """A checkpoint folder (trialdir layout) to continue from: set on the retry of an interrupted trial."""
    quantization: str | None = None
    """The base's quantization when the search space samples it; None: the sweep's `model.quantization`."""

    @classmethod
    def build(cls, sweep: SweepConfig, params: dict[str, Any], number: int, output_dir: Path) -> TrialSpec:
        values = dict(params)
        multiple = values.pop("lora_alpha_multiple", None)
        quantization = values.pop("quantization", None)
        # Validated, not copied in: a value is used as its setting's type ('8' sampled for r trains r=8).
        training = TrainingConfig.model_validate({**sweep.training.model_dump(), **values})
        if multiple is not None:
            alpha = float(multiple) * training.r
            training = TrainingConfig.model_validate({**training.model_dump(), "lora_alpha": alpha})
        return cls(
            number=number,
            params=dict(params),
            training=training,
            sweep=sweep,
            output_dir=output_dir,
            seed=(sweep.seed + max(number, 0)) % SEED_LIMIT,  # numpy takes seeds below 2**32
            quantization=None if quantization is None else str(quantization),
        )

    @property
    def model(self) -> ModelConfig:
        """The base this trial trains on: the sweep's `model:` with the sampled quantization."""
        if self.quantization is None or self.quantization == self.sweep.model.quantization:
            return self.sweep.model
        return self.sweep.model.model_copy(update={"quantization": self.quantization})  # checked at load

    @property
    def lora_alpha(self) -> float:
        return self.training.lora_alpha if self.training.lora_alpha is not None else 2.0 * self.training.r


@dataclass
class TrialResult:
    value: float | None
    """The objective: the best value of sweep.metric seen during the trial (not the last one)."""
    metrics: dict[str, float]
    """Final metrics, measured with the best adapter restored."""
    best_step: int
    steps_run: int
    duration_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per eval: {'step': .., 'eval_loss': .., 'perplexity': .., ...}."""
    pruned: bool = False
    stopped_early: bool = False
    generations: list[dict[str, Any]] = field(default_factory=list)
    """Prompt, reference, prediction and per-row scores of the final generation pass."""
    train_log: list[dict[str, float]] = field(default_factory=list)
    """Trainer log lines (loss, learning rate, grad norm) by step."""
    before_metrics: dict[str, float] = field(default_factory=dict)
    """Generation metrics of the untrained base (adapter disabled) on the same rows as `metrics`
    (evaluation.compare_base); the per-row `prediction_before` is in `generations`."""
    max_steps: int | None = None
    """The optimizer steps the trial was budgeted (budget.max_steps, or derived from budget.epochs for
    its batch size); None from a recipe that does not say."""
    eval_steps: int | None = None
    """The steps between its evals (budget.eval_steps, or derived from a fraction of an epoch)."""
    world_size: int = 1
    """The ranks that trained it (training.distributed with --devices-per-worker K): its effective batch
    is per_device_train_batch_size * gradient_accumulation_steps * world_size."""
    trained: dict[str, Any] = field(default_factory=dict)
    """What the adapter really trained, read from the model: `lora_modules` (the adapted modules' names
    within their block, sorted) and `base_layer` (the class of the base layers under the adapters, e.g.
    Linear4bit). Added to params.json (trialdir.write_result) and the trial's user attrs."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("generations")
        d.pop("train_log")
        d.pop("trained")  # params.json's, with what was asked for
        return d


@dataclass
class Measured:
    """Task baselines measured on the rows trials are scored on (harness.tasks.baselines.measure)."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """name -> metrics (stored as the study user attr `task_baselines`)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One per eval row: prompt, reference (price_true for pricer) and each baseline's answer."""
    skipped: dict[str, str] = field(default_factory=dict)
    """name -> why it could not be measured (a baseline is context: it never stops a sweep)."""


# on_eval(step, metrics) -> True to stop the trial now (pruned). The objective supplies it.
OnEval = Callable[[int, dict[str, float]], bool]
EVAL_INDEX = "eval_index"
"""on_eval's metrics also carry, not as metrics: the eval's 1-based index (with budget.epochs the
objective reports intermediate values by eval index, not by step) and the trial's budget in steps."""
EVAL_MAX_STEPS = "trial_max_steps"
EVAL_EVERY = "trial_eval_steps"
NOT_METRICS = (EVAL_INDEX, EVAL_MAX_STEPS, EVAL_EVERY)


class Recipe(Protocol):
    """What the study side runs per trial: train one config, report each eval, return the result.
    A plain function with this signature is a recipe (tests pass fakes)."""

    def __call__(self, spec: TrialSpec, on_eval: OnEval) -> TrialResult: ...


@runtime_checkable
class MeasuresBaseline(Protocol):
    """Optional: a recipe that can also score the untrained base, once per study (`baseline_metrics`)."""

    def baseline(self) -> dict[str, float]: ...


@runtime_checkable
class ReportsData(Protocol):
    """Optional: a recipe that can say how the rows fit max_seq_length, per split (harness.core.lengths),
    printed when a run starts and stored in the study (user attr `data_lengths`)."""

    def data_report(self) -> dict[str, dict[str, Any]]: ...


@runtime_checkable
class ReportsDroppedRows(Protocol):
    """Optional: a recipe whose data left bad rows out (`dataset.bad_rows: drop`): how many and why
    (harness.core.badrows figures, {} for none), printed when a run starts and stored (`dropped_rows`)."""

    def dropped_rows(self) -> dict[str, Any]: ...


@runtime_checkable
class ReportsProvenance(Protocol):
    """Optional: a recipe that hashes the base, tokenizer and data splits it trains on
    (harness.trial.provenance), stored once per study (`provenance`); for any other recipe runner hashes
    them from the config."""

    def provenance(self) -> dict[str, Any]: ...


@runtime_checkable
class MeasuresTaskBaselines(Protocol):
    """Optional: a recipe that measures the task baselines (harness.tasks.baselines) on exactly the rows it
    scores trials on, once per study (`task_baselines`); for any other recipe runner measures them from
    the data alone."""

    def task_baselines(self) -> Measured: ...


# ----------------------------------------------------------------------------------------------------
# Recipe injection (`sweep run --recipe`, the pytest plugin's `--sweep-recipe`, tests)


def import_recipe(spec: str, search: Sequence[Path] = ()) -> Recipe:
    """`package.module:function` -> the callable, for running collections with a fake recipe.
    `search`: folders tried too (the pytest rootdir: the `pytest` script does not put it on sys.path)."""
    recipe: Recipe = import_callable(spec, "recipe", search)
    return recipe


def import_callable(text: str, what: str, search: Sequence[Path] = ()) -> Any:
    """`package.module:function` (or `module:Class.method`) -> the callable, importing from `search`
    folders too; every problem is a ConfigError naming `what` (a recipe, a reward function) and `text`."""
    check_callable_spec(text, what)  # dotted names only: never a path, never a relative `..` import
    module, _, name = text.partition(":")
    added = [str(p) for p in search if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{what} {text!r}: cannot import {module}: {e}") from None
    except SyntaxError as e:  # not an ImportError: the user's file is there but is not Python
        where = f"{e.filename}, line {e.lineno}" if e.filename else module
        raise ConfigError(f"{what} {text!r}: {where}: syntax error: {e.msg}") from None
    except (Exception, SystemExit) as e:  # the user's module raised (or exited) while it was imported
        raise ConfigError(
            f"{what} {text!r}: importing {module} raised {type(e).__name__}: {e} ({raised_at(e)})"
        ) from None
    finally:
        for p in added:
            sys.path.remove(p)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {text!r}: {module} has no {name}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{what} {text!r} is not callable")
    return obj


def raised_at(e: BaseException) -> str:
    """'file, line N' of the innermost frame of e's traceback outside Python's import machinery: where the
    user's module went wrong."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename and not f.filename.startswith("<")]
    last = (ours or frames)[-1] if frames else None
    return f"{last.filename}, line {last.lineno}" if last else "while importing"
