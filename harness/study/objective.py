"""trial -> TrialSpec -> recipe -> value. Knows Optuna, not transformers.

The recipe is passed in (`spec.Recipe`), so the study side is tested with a fake recipe in milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.core import attrs, interrupt, ranks, trialdir
from harness.core.cost import DEVICE_HOUR_S, TrialCost, measure
from harness.core.spec import (
    EVAL_EVERY,
    EVAL_INDEX,
    EVAL_MAX_STEPS,
    EVAL_OWN_STEPS,
    EVAL_TOKENS,
    NOT_METRICS,
    OnEval,
    Recipe,
    TrialResult,
    TrialSpec,
)
from harness.errors import TrialFailed
from harness.study import failures, rdb, space
from harness.sweepfile.schema import SweepConfig
from harness.trial import monitor, tracking

Progress = Callable[[str, dict], None]


class Objective:
    def __init__(self, cfg: SweepConfig, recipe: Recipe, progress: Progress | None = None) -> None:
        self.cfg, self.recipe = cfg, recipe
        self.progress = progress or (lambda event, data: None)
        self.study_dir = Path(cfg.study_dir)
        # One tracker for the whole sweep; SafeTracker inside: tracking can never fail a trial.
        self.tracker = tracking.make_tracker(cfg)
        self.started = 0  # trials this process ran (other workers add theirs to the same study)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        cfg = self.cfg
        started = time.perf_counter()  # the trial's cost runs from here, however it ends
        self.started += 1
        folder = trialdir.trial_dir(self.study_dir, trial.number)
        # Ctrl-C / SIGTERM outside training waits for the trial's writes (interrupt.py): here until the
        # trial is set up, so it lands in training, where the trial is re-queued.
        with interrupt.deferred():
            failures.mark_start(trial, folder)  # first: who runs it (stale check after a kill) and where
            params = space.suggest(trial, cfg.parameters)
            spec = retry_spec(trial, TrialSpec.build(cfg, params, trial.number, folder))
            trialdir.write_params(spec)
            self.progress("trial_start", {"trial": trial.number, "params": params})
            self.skip_duplicate(trial, spec, started)
            self.tracker.start(spec)
            usage = monitor.ResourceMonitor().start()

        # Optuna cannot report or prune multi-objective trials (trial.report raises there); a seed repeat
        # (`sweep confirm`) or an audit (`sweep audit`) is never pruned and does not feed the pruner's
        # statistics: it reports no intermediate values, so no rung or median ever counts it.
        prunable = not cfg.multi_objective and not failures.is_rerun(trial.user_attrs)

        budget_recorded: list[bool] = []
        spent: dict[str, int] = {}  # steps and tokens so far: what a trial that fails later spent

        def on_eval(step: int, metrics: dict[str, float]) -> bool:
            extra = {k: int(metrics.pop(k)) for k in NOT_METRICS if k in metrics}
            spent.update({k: extra[k] for k in (EVAL_OWN_STEPS, EVAL_TOKENS) if k in extra})
            if EVAL_MAX_STEPS in extra and not budget_recorded:  # at the first eval, for `sweep status`
                budget = {attrs.MAX_STEPS: extra[EVAL_MAX_STEPS], attrs.EVAL_STEPS: extra.get(EVAL_EVERY)}
                rdb.set_user_attrs(trial, budget)
                budget_recorded.append(True)
            # With budget.epochs (or eval_steps a fraction of an epoch) each trial has its own steps (its
            # batch size decides them), so trials are compared at the same eval index: the same share of an
            # epoch seen when eval_steps is a fraction of one. By step, a batch-8 trial at step 10 would be
            # judged against a batch-4 one that has seen half the rows (see sampler.make_pruner).
            at = extra.get(EVAL_INDEX, step) if cfg.budget.per_trial else step
            value = metrics.get(cfg.metric.name)
            if value is not None and math.isfinite(value) and prunable:
                trial.report(value, at)
            of = extra.get(EVAL_MAX_STEPS)
            self.progress("eval", {"trial": trial.number, "step": step, "metrics": metrics, "max_steps": of})
            monitor.record(trial, usage.snapshot())  # live memory figures for `sweep watch`
            self.tracker.log_eval(step, metrics)
            return prunable and trial.should_prune()

        result: TrialResult | None = None
        failed: str | None = None  # the traceback of an exception that fails this trial only
        try:
            with failures.heartbeat(trial):
                result = self.run_recipe(trial, spec, on_eval)
        except Exception as e:
            failed = traceback.format_exc()
            trial.set_user_attr(attrs.FAIL_REASON, failures.reason(e))
            raise
        finally:
            with interrupt.deferred():  # the re-queue, or the result's recording, is never cut short
                # One place for every way out. Neither a result nor an exception: Ctrl-C / SIGTERM. Optuna
                # records FAIL; the retry is queued here and keeps the checkpoint it resumes from.
                resources = usage.stop()
                cost = trial_cost(started, result, spent, resources)
                if result is None:  # a finished trial writes them with its results, in one call (record)
                    monitor.record(trial, resources)
                    record_cost(trial, cost)  # a failed or interrupted trial's time counts too
                if result is None and failed is None:
                    self.tracker.finish("FAIL", {})
                    trial.set_user_attr(attrs.FAIL_REASON, failures.INTERRUPTED)
                    trialdir.write_failure(
                        folder, failures.INTERRUPTED, resources=resources, cost=cost.to_dict()
                    )
                    failures.requeue(trial.study, trial.number, params, trial.user_attrs)
                else:
                    pruned = result is not None and result.pruned
                    cleanup(spec, keep_own=pruned and cfg.early_terminate.keep_pruned_checkpoints)
                if failed is not None:
                    reason = trial.user_attrs[attrs.FAIL_REASON]
                    trialdir.write_failure(
                        folder, reason, traceback=failed, resources=resources, cost=cost.to_dict()
                    )
                    self.tracker.finish("FAIL", {**resources})
                    self.progress("trial_fail", {"trial": trial.number, "reason": reason})
        with interrupt.deferred():
            assert result is not None  # every other way out raised above
            record(trial, result, resources, cost)
            values = objective_values(cfg, result)
            missing = [m.name for m, v in zip(cfg.objectives, values, strict=True) if v is None]
            if result.pruned:
                state = "PRUNED"
            elif missing:
                state = "FAIL"
                trial.set_user_attr(attrs.FAIL_REASON, f"no finite {' or '.join(missing)} was measured")
            else:
                state = "COMPLETE"
            trialdir.write_result(spec, result, state, resources, cost.to_dict())
            self.tracker.finish(state, {**result.metrics, **resources})
            self.keep_adapter(trial, spec, values[0] if state == "COMPLETE" else None)
            if result.pruned:
                self.progress("trial_pruned", {"trial": trial.number, "step": result.steps_run})
                raise optuna.TrialPruned(f"pruned at step {result.steps_run}")
            if state == "FAIL":
                raise TrialFailed(trial.user_attrs[attrs.FAIL_REASON])
            self.progress(
                "trial_end", {"trial": trial.number, "value": values[0], "values": values, "result": result}
            )
            finite = [float(v) for v in values if v is not None]
            return tuple(finite) if cfg.multi_objective else finite[0]

    def skip_duplicate(self, trial: optuna.Trial, spec: TrialSpec, started: float) -> None:
        """A config that failed is not trained again: FAIL 'duplicate of failed trial N' (failures.py)."""
        stored = trial.user_attrs
        if attrs.RETRY_OF in stored or failures.is_rerun(stored):
            return
        dup = failures.duplicate_of_failed(trial.study, spec.params, trial.number)
        if dup is None:
            return
        why = f"duplicate of failed trial {dup}"
        cost = measure(time.perf_counter() - started, 1, 0, 0, {})  # nothing trained: its few ms
        rdb.set_user_attrs(trial, {attrs.FAIL_REASON: why, attrs.COST: cost.to_dict()})
        trialdir.write_failure(spec.output_dir, why, cost=cost.to_dict())
        self.progress("trial_fail", {"trial": trial.number, "reason": why})
        raise TrialFailed(why)

    def run_recipe(self, trial: optuna.Trial, spec: TrialSpec, on_eval: OnEval) -> TrialResult:
        """An out-of-memory config is retried once, in the same trial, with half the per-device batch and
        twice the accumulation (same effective batch); recorded as user attr oom_retry."""
        try:
            return self.recipe(spec, on_eval)
        except Exception as e:
            smaller = failures.halve_batch(spec.training) if failures.is_oom(e) else None
            if smaller is None:
                raise
        # Outside the except block, so the failed attempt's traceback (and its tensors) are released.
        trial.set_user_attr(attrs.OOM_RETRY, smaller)
        _free_memory()
        trialdir.remove_checkpoint(trialdir.checkpoint_dir(spec.output_dir))
        training = spec.training.model_copy(update=smaller)
        return self.recipe(dataclasses.replace(spec, training=training, resume_from=None), on_eval)

    def keep_adapter(self, trial: optuna.Trial, spec: TrialSpec, value: float | None) -> None:
        """The best COMPLETE trial's adapter becomes results/<study>/best-adapter/; others are deleted."""
        adapter = trialdir.adapter_dir(spec.output_dir)
        if not adapter.exists():
            return
        study = trial.study
        better = False
        if value is not None and len(study.directions) == 1:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            done = [t.value for t in complete if t.value is not None]
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            best = (max if maximize else min)(done) if done else None
            better = best is None or (value > best if maximize else value < best)
        if better:
            info = {"trial": trial.number, "value": value, "params": spec.params}
            trialdir.keep_best_adapter(self.study_dir, adapter, info)
        else:
            shutil.rmtree(adapter, ignore_errors=True)


def retry_spec(trial: optuna.Trial, spec: TrialSpec) -> TrialSpec:
    """A retry of an interrupted trial keeps its seed and continues from its checkpoint (failures.py); a
    seed repeat (harness.study.confirm) brings its own seed and data order; an audit brings its pruned
    trial's seed and, when one was kept, its checkpoint (recorded: user attr resumed_at_step)."""
    stored = trial.user_attrs
    seed = int(stored.get(attrs.SEED, spec.seed))
    trial.set_user_attr(attrs.SEED, seed)
    if attrs.DATA_SEED in stored:
        spec = dataclasses.replace(spec, data_seed=int(stored[attrs.DATA_SEED]))
    resume = stored.get(attrs.RESUME_FROM)
    if resume and trialdir.find_checkpoint(Path(resume)) is None:
        # Another host's worker queued this retry and its checkpoint is not in a folder this one sees.
        trial.set_user_attr(attrs.RESTARTED, f"checkpoint {resume} not reachable here: trained from step 0")
        resume = None
    found = trialdir.find_checkpoint(Path(resume)) if resume else None
    if found is not None:
        trial.set_user_attr(attrs.RESUMED_AT, trialdir.checkpoint_step(found))
    return dataclasses.replace(spec, seed=seed, resume_from=Path(resume) if resume else None)


def cleanup(spec: TrialSpec, keep_own: bool = False) -> None:
    """A trial that ended (not interrupted) needs no checkpoint, nor the one it resumed from (an audit's:
    its pruned trial's, now used). `keep_own`: a pruned trial under early_terminate.keep_pruned_checkpoints,
    kept for `sweep audit`."""
    if not keep_own:
        trialdir.remove_checkpoint(trialdir.checkpoint_dir(spec.output_dir))
    trialdir.remove_checkpoint(spec.resume_from)


def _free_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def objective_values(cfg: SweepConfig, result: TrialResult) -> list[float | None]:
    """The trial's value(s). One objective: the best value seen at any eval (result.value). Several: each
    metric as finally measured with the best adapter (the primary's best eval), so they belong together."""
    if not cfg.multi_objective:
        value = result.value
        return [float(value) if value is not None and math.isfinite(value) else None]
    out: list[float | None] = []
    for i, m in enumerate(cfg.objectives):
        v = result.metrics.get(m.name, result.value if i == 0 else None)
        out.append(float(v) if v is not None and math.isfinite(v) else None)
    return out


def trial_cost(
    started: float, result: TrialResult | None, spent: dict[str, int], resources: dict[str, float | None]
) -> TrialCost:
    """What the trial spent (harness.core.cost) from `started` (perf_counter) to now. Without a result
    (failed, interrupted): the steps and tokens of its last eval, on the devices this process trains on."""
    wall = time.perf_counter() - started
    if result is not None:
        own = result.steps_run - result.resumed_at
        return measure(wall, result.world_size, own, result.tokens, resources)
    steps, tokens = spent.get(EVAL_OWN_STEPS, 0), spent.get(EVAL_TOKENS)
    return measure(wall, ranks.group_size(), steps, tokens, resources)


def record_cost(trial: optuna.Trial, cost: TrialCost) -> None:
    try:
        trial.set_user_attr(attrs.COST, cost.to_dict())
    except Exception:  # noqa: BLE001 - a storage hiccup on the way out must not hide why the trial ended
        pass


def record(
    trial: optuna.Trial,
    result: TrialResult,
    resources: dict[str, float | None] | None = None,
    cost: TrialCost | None = None,
) -> None:
    """What reports need without opening trial folders: finite metrics, steps, timing, memory figures.
    One storage call for all of them (rdb.set_user_attrs): on SQLite each attr would be its own commit."""
    written: dict[str, object] = {
        attrs.METRICS: {k: v for k, v in result.metrics.items() if math.isfinite(v)},
        attrs.BEST_STEP: result.best_step,
        attrs.STEPS_RUN: result.steps_run,
        attrs.DURATION_S: round(result.duration_s, 3),
        attrs.STOPPED_EARLY: result.stopped_early,
    }
    if result.max_steps is not None:
        written[attrs.MAX_STEPS] = result.max_steps
    if result.eval_steps is not None:
        written[attrs.EVAL_STEPS] = result.eval_steps
    if result.before_metrics:
        written[attrs.BEFORE_METRICS] = {k: v for k, v in result.before_metrics.items() if math.isfinite(v)}
    if result.pruned:
        written[attrs.PRUNED_AT] = result.steps_run
    if result.trained:
        written[attrs.TRAINED] = dict(result.trained)
    if result.world_size > 1:
        written[attrs.WORLD_SIZE] = result.world_size
    written.update(monitor.measured(resources or {}))
    if cost is not None:
        written[attrs.COST] = cost.to_dict()
    rdb.set_user_attrs(trial, written)


class StopAfterFailures:
    """Stop a sweep that keeps failing: `max_failures` FAIL trials in a row."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures, self.streak, self.tripped = max_failures, 0, False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.streak = self.streak + 1 if trial.state == TrialState.FAIL else 0
        if self.streak >= self.max_failures:
            self.tripped = True
            study.stop()


class StopAtDeviceHours:
    """`budget.device_hours`: no trial starts once the study has spent them. The study's total, read from
    the storage after each trial (so every worker's trials count): finished trials' device-seconds
    (user attr trial_cost), plus each running trial's time so far x the ranks it started on."""

    def __init__(self, hours: float | None) -> None:
        self.limit_s = None if hours is None else hours * DEVICE_HOUR_S
        self.tripped = False

    def spent_s(self, study: optuna.Study) -> float:
        now = datetime.now()  # optuna stores naive local times
        total = 0.0
        for t in study.get_trials(deepcopy=False):
            cost = TrialCost.from_dict(attrs.cost(t))
            if cost is not None:
                total += cost.device_s
            elif t.state == TrialState.RUNNING and t.datetime_start is not None:
                devices = t.user_attrs.get(attrs.WORLD_SIZE, 1)  # failures.mark_start
                total += max(0.0, (now - t.datetime_start).total_seconds()) * devices
        return total

    def spent(self, study: optuna.Study) -> bool:
        return self.limit_s is not None and self.spent_s(study) >= self.limit_s

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.spent(study):
            self.tripped = True
            study.stop()
