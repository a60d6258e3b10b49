"""trial -> TrialSpec -> recipe -> value. Knows Optuna, not transformers.

The recipe is passed in (`Recipe`), so the study side is tested with a fake recipe in milliseconds.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness import monitor, results, search_space, tracking
from harness.config import SweepConfig
from harness.spec import OnEval, TrialResult, TrialSpec

Recipe = Callable[[TrialSpec, OnEval], TrialResult]
Progress = Callable[[str, dict], None]


class TrialFailed(RuntimeError):
    """A trial that ran but produced no usable value (e.g. every eval was NaN)."""


class Objective:
    def __init__(self, cfg: SweepConfig, recipe: Recipe, progress: Progress | None = None) -> None:
        self.cfg, self.recipe = cfg, recipe
        self.progress = progress or (lambda event, data: None)
        self.study_dir = Path(cfg.study_dir)
        # One tracker for the whole sweep; SafeTracker inside: tracking can never fail a trial.
        self.tracker = tracking.make_tracker(cfg)

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = self.cfg
        params = search_space.suggest(trial, cfg.parameters)
        spec = TrialSpec.build(cfg, params, trial.number, results.trial_dir(self.study_dir, trial.number))
        results.write_params(spec)
        self.progress("trial_start", {"trial": trial.number, "params": params})
        self.tracker.start(spec)
        usage = monitor.ResourceMonitor().start()

        def on_eval(step: int, metrics: dict[str, float]) -> bool:
            value = metrics.get(cfg.metric.name)
            if value is not None and math.isfinite(value):
                trial.report(value, step)
            self.progress("eval", {"trial": trial.number, "step": step, "metrics": metrics})
            monitor.record(trial, usage.snapshot())  # live memory figures for `sweep watch`
            self.tracker.log_eval(step, metrics)
            return trial.should_prune()

        try:
            result = self.recipe(spec, on_eval)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".strip()[:2000]
            trial.set_user_attr("fail_reason", reason)
            resources = usage.stop()
            monitor.record(trial, resources)
            results.write_json(
                spec.output_dir / "metrics.json",
                {
                    "state": "FAIL",
                    "fail_reason": reason,
                    "traceback": traceback.format_exc(),
                    "resources": resources,
                },
            )
            self.tracker.finish("FAIL", {**resources})
            self.progress("trial_fail", {"trial": trial.number, "reason": reason})
            raise
        except BaseException:  # KeyboardInterrupt: Optuna records FAIL; close the run as that too
            usage.stop()
            self.tracker.finish("FAIL", {})
            raise
        resources = usage.stop()
        monitor.record(trial, resources)
        record(trial, result)
        if result.pruned:
            state = "PRUNED"
        elif result.value is None or not math.isfinite(result.value):
            state = "FAIL"
            trial.set_user_attr("fail_reason", f"no finite {cfg.metric.name} was measured")
        else:
            state = "COMPLETE"
        results.write_result(spec, result, state)
        monitor.add_to_metrics_file(spec.output_dir / "metrics.json", resources)
        self.tracker.finish(state, {**result.metrics, **resources})
        if result.pruned:
            self.progress("trial_pruned", {"trial": trial.number, "step": result.steps_run})
            raise optuna.TrialPruned(f"pruned at step {result.steps_run}")
        if state == "FAIL":
            raise TrialFailed(trial.user_attrs["fail_reason"])
        self.progress("trial_end", {"trial": trial.number, "value": result.value, "result": result})
        return float(result.value)  # type: ignore[arg-type]


def record(trial: optuna.Trial, result: TrialResult) -> None:
    """What reports need without opening trial folders: finite metrics, steps, timing."""
    trial.set_user_attr("metrics", {k: v for k, v in result.metrics.items() if math.isfinite(v)})
    trial.set_user_attr("best_step", result.best_step)
    trial.set_user_attr("steps_run", result.steps_run)
    trial.set_user_attr("duration_s", round(result.duration_s, 3))
    trial.set_user_attr("stopped_early", result.stopped_early)
    if result.pruned:
        trial.set_user_attr("pruned_at", result.steps_run)


class StopAfterFailures:
    """Stop a sweep that keeps failing: `max_failures` FAIL trials in a row."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures, self.streak, self.tripped = max_failures, 0, False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.streak = self.streak + 1 if trial.state == TrialState.FAIL else 0
        if self.streak >= self.max_failures:
            self.tripped = True
            study.stop()
