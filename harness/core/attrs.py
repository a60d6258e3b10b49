"""Every Optuna user attribute harness stores: each key spelled once, with what it holds and who writes it.

Optuna keeps free-form JSON per study and per trial (`study.user_attrs`, `trial.user_attrs`); harness
writes them with `set_user_attr`, `enqueue_trial(user_attrs=...)` and harness.study.rdb.set_user_attrs.
No other module spells a key (tests/test_attrs.py), so a writer and its readers cannot drift apart.

The readers take anything with a `.user_attrs` mapping (optuna's Study, Trial and FrozenTrial, a test's
stand-in) or that mapping itself (one read of a Study's attrs is one storage query: read it once, pass
the dict); they return a typed value, or None / an empty container when the attr is absent or not of
the type harness writes. No optuna, torch or pandas here: core sits below study, trial and results.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TypeAlias


class HasUserAttrs(Protocol):
    @property
    def user_attrs(self) -> Mapping[str, Any]: ...


Source: TypeAlias = HasUserAttrs | Mapping[str, Any]
"""A study, a trial, or its `user_attrs` already read."""

# ----------------------------------------------------------------------------------------------------
# Study attrs: written once, when a study is created or first run

FINGERPRINT = "fingerprint"  # hash of search space + objectives; resume._create, check_resumable
METRIC = "metric"  # the primary metric's name; resume._create
METRICS = "metrics"  # study: the objectives' names in order, multi-objective only (resume._create);
# trial: its final metrics {name: finite value}, measured with the best adapter (objective.record)
TASK = "task"  # the sweep's task ("pricer", "text"); resume._create
CONFIG = "config"  # the sweep config as JSON, without parameters, storage URL masked; resume._create
PARAMETERS = "parameters"  # the search space as JSON, for `sweep confirm STUDY`; run.record_provenance, once
PROVENANCE = "provenance"  # content hashes of base, tokenizer and data (harness.trial.provenance); run, once
DATA_LENGTHS = "data_lengths"  # how the rows fit max_seq_length per split (harness.core.lengths); every run
DROPPED_ROWS = "dropped_rows"  # bad rows left out (dataset.bad_rows: drop; harness.core.badrows); a run
# that dropped some, or that finds it already there
PRUNING_AUDIT = "pruning_audit"  # the last `sweep audit`'s regret figures (confirm.run_audit; recomputable
# from the trials: ranking.audit_summary)
BASELINE_METRICS = "baseline_metrics"  # the untrained base's metrics; run.measure_baseline, once
TASK_BASELINES = "task_baselines"  # baseline name -> its metrics (harness.tasks.baselines); run, once
AUTO_RUNG = "auto_first_rung"  # min_iter: auto: the first rung chosen {step, rho, n, complete, threshold}
# (step None: not pruning); study.sampler.AdaptiveRung, whenever the choice changes

# ----------------------------------------------------------------------------------------------------
# Trial attrs: who runs it (failures.mark_start, the trial's first line; failures.heartbeat)

PID = "pid"  # the worker process's pid
HOST = "host"  # the worker's hostname: the pid check only judges this host's trials
PID_START = "pid_start"  # that process's start time (/proc), so a recycled pid is not taken for it
DEVICE = "device"  # what the worker trains on ("cuda:1", "cpu×8"); shown by the views
TRIAL_DIR = "trial_dir"  # the trial's folder (harness.core.trialdir), for its retry's checkpoint
HEARTBEAT = "heartbeat"  # time.time() every HEARTBEAT_S while it trains, journal storage only

# Trial attrs: seeds, retries and seed repeats

SEED = "seed"  # the training seed; objective.retry_spec on every trial, enqueued on repeats and retries
DATA_SEED = "data_seed"  # the data-order seed of a seed repeat; confirm.owed enqueues it
REPEAT_OF = "repeat_of"  # a seed repeat's original trial number (`sweep confirm`); confirm.owed enqueues it
REPEAT_INDEX = "repeat_index"  # which repeat of that config, 1..S; confirm.owed enqueues it
AUDIT_OF = "audit_of"  # the pruned trial an audit re-trains fully (`sweep audit`); confirm enqueues it
RETRY_OF = "retry_of"  # the interrupted trial a retry re-runs; failures.retry_attrs enqueues it
RESUME_FROM = "resume_from"  # the checkpoint folder a retry (failures.retry_attrs) or an audit
# (confirm.audits_owed: the pruned trial's kept checkpoint) resumes from, or None
RESUMED_AT = "resumed_at_step"  # the step of the checkpoint a trial resumed from; objective.retry_spec
RESTARTED = "restarted"  # why a retry trained from step 0 (checkpoint not reachable); objective.retry_spec
FAIL_REASON = "fail_reason"  # why a FAIL trial failed ("interrupted": retried); objective, failures, confirm
OOM_RETRY = "oom_retry"  # the smaller batch an out-of-memory trial was retried with; objective.run_recipe

# Trial attrs: what a finished trial measured (objective.record, one storage call), METRICS above

BEFORE_METRICS = "before_metrics"  # the untrained base's generation metrics on the same rows (compare_base)
BEST_STEP = "best_step"  # the step of the best eval (the adapter kept)
STEPS_RUN = "steps_run"  # train steps actually run
DURATION_S = "duration_s"  # the recipe's own wall time, rounded to ms
STOPPED_EARLY = "stopped_early"  # early stopping ended it
PRUNED_AT = "pruned_at"  # the step a pruned trial stopped at (pruned trials only)
MAX_STEPS = "max_steps_used"  # the optimizer steps it was budgeted: budget.max_steps, or derived from
# budget.epochs for its batch size (TrialResult.max_steps); also written at its first eval (objective)
EVAL_STEPS = (
    "eval_steps_used"  # the steps between its evals (derived when eval_steps is a fraction of an epoch)
)
WORLD_SIZE = "world_size"  # the ranks that trained it (training.distributed; TrialResult.world_size), >1 only
TRAINED = "trained_on"  # what the adapter really covered: {lora_modules, base_layer} (TrialResult.trained)
COST = "trial_cost"  # what it spent: {wall_s, devices, device_s, steps, tokens, peak_memory_mb}
# (harness.core.cost), also metrics.json's "cost"; objective, when the trial ends however it ends

# Trial attrs: memory and GPU figures (harness.trial.monitor.record: live while it runs, final at the end)

PEAK_RSS_MB = "peak_rss_mb"  # the process's peak resident memory
RSS_MB = "rss_mb"  # its resident memory at the last sample
CUDA_PEAK_ALLOCATED_MB = "cuda_peak_allocated_mb"  # peak CUDA tensor memory, summed over devices
CUDA_PEAK_RESERVED_MB = "cuda_peak_reserved_mb"  # peak CUDA allocator cache (what nvidia-smi shows)
CUDA_UTIL = "cuda_util"  # mean GPU utilisation (%) over the samples

RESOURCES = (PEAK_RSS_MB, RSS_MB, CUDA_PEAK_ALLOCATED_MB, CUDA_PEAK_RESERVED_MB, CUDA_UTIL)
"""Every figure a ResourceMonitor reports, in its order (also metrics.json's "resources")."""


# ----------------------------------------------------------------------------------------------------
# Readers


def of(source: Source) -> Mapping[str, Any]:
    """The user attrs of a study or trial (read once), or the mapping given."""
    return source if isinstance(source, Mapping) else source.user_attrs


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _dict(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, Mapping) else {}


# Study


def config(study: Source) -> dict[str, Any]:
    """The stored sweep config; {} for a study not created by `sweep run`."""
    return _dict(of(study).get(CONFIG))


def metric(study: Source) -> str | None:
    return _str(of(study).get(METRIC))


def objective_names(study: Source) -> list[str] | None:
    """The objectives' names of a multi-objective study; None for one objective."""
    names = of(study).get(METRICS)
    return [str(n) for n in names] if isinstance(names, list) and names else None


def task(study: Source) -> str | None:
    return _str(of(study).get(TASK))


def provenance(study: Source) -> dict[str, Any] | None:
    v = of(study).get(PROVENANCE)
    return dict(v) if isinstance(v, Mapping) else None


def data_lengths(study: Source) -> dict[str, Any]:
    return _dict(of(study).get(DATA_LENGTHS))


def dropped_rows(study: Source) -> dict[str, Any]:
    """{rows, dropped, reasons} of the last run that left bad rows out; {} when none ever did."""
    return _dict(of(study).get(DROPPED_ROWS))


def auto_rung(study: Source) -> dict[str, Any]:
    """The first rung `min_iter: auto` chose last ({} before any choice was made)."""
    return _dict(of(study).get(AUTO_RUNG))


def baseline_metrics(study: Source) -> dict[str, Any]:
    return _dict(of(study).get(BASELINE_METRICS))


def task_baselines(study: Source) -> dict[str, Any]:
    return _dict(of(study).get(TASK_BASELINES))


# Trial


def fail_reason(trial: Source) -> str | None:
    return _str(of(trial).get(FAIL_REASON))


def metrics(trial: Source) -> dict[str, float]:
    """A finished trial's final metrics (finite values only, as objective.record stores them)."""
    return _dict(of(trial).get(METRICS))


def before_metrics(trial: Source) -> dict[str, float]:
    return _dict(of(trial).get(BEFORE_METRICS))


def trained(trial: Source) -> dict[str, Any]:
    """{lora_modules: [...], base_layer: "Linear4bit"} of a trained trial; {} for one without."""
    return _dict(of(trial).get(TRAINED))


def cost(trial: Source) -> dict[str, Any]:
    """The trial's cost record (harness.core.cost.TrialCost.to_dict); {} for a trial without one (killed,
    still running, or run before harness recorded costs)."""
    return _dict(of(trial).get(COST))


def best_step(trial: Source) -> int | None:
    return _int(of(trial).get(BEST_STEP))


def steps_run(trial: Source) -> int | None:
    return _int(of(trial).get(STEPS_RUN))


def max_steps(trial: Source) -> int | None:
    """The steps a trial was budgeted (recorded from its first eval); None for a trial without."""
    return _int(of(trial).get(MAX_STEPS))


def eval_steps(trial: Source) -> int | None:
    return _int(of(trial).get(EVAL_STEPS))


def duration_s(trial: Source) -> float | None:
    return _float(of(trial).get(DURATION_S))


def seed(trial: Source) -> int | None:
    return _int(of(trial).get(SEED))


def data_seed(trial: Source) -> int | None:
    return _int(of(trial).get(DATA_SEED))


def repeat_of(trial: Source) -> int | None:
    """The original trial's number for a seed repeat; None for a trial the sampler chose."""
    return _int(of(trial).get(REPEAT_OF))


def audit_of(trial: Source) -> int | None:
    """The pruned trial's number for an audit (`sweep audit`); None for any other trial."""
    return _int(of(trial).get(AUDIT_OF))


def resumed_at(trial: Source) -> int | None:
    """The step a trial's training started at when it resumed from a checkpoint; None from step 0."""
    return _int(of(trial).get(RESUMED_AT))


def pruning_audit(study: Source) -> dict[str, Any]:
    return _dict(of(study).get(PRUNING_AUDIT))


def repeat_index(trial: Source) -> int | None:
    return _int(of(trial).get(REPEAT_INDEX))


def trial_dir(trial: Source) -> Path | None:
    v = of(trial).get(TRIAL_DIR)
    return Path(v) if isinstance(v, str) and v else None


def resume_from(trial: Source) -> str | None:
    v = _str(of(trial).get(RESUME_FROM))
    return v or None
