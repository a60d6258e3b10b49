"""`sweep run`: validated config -> shared fixtures -> study (created or resumed) -> trials -> table.

Order matters for "bad input writes nothing": everything that can be checked without writing (config,
search space, storage URL form, dataset, model) is checked before the storage is created.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from rich.console import Console
from rich.table import Table

from harness import study as st
from harness.config import SweepConfig
from harness.errors import HarnessError
from harness.objective import Objective, Recipe, StopAfterFailures
from harness.spec import OnEval, TrialResult, TrialSpec


@dataclass
class RunOutcome:
    study: optuna.Study
    ran: int
    stopped_for_failures: bool
    seconds: float


def real_recipe(cfg: SweepConfig) -> Recipe:
    """Bind the session fixtures once; every trial of every sweep in this process reuses them."""
    from harness import fixtures
    from harness.recipe import finetune

    shared = fixtures.get(cfg)

    def run(spec: TrialSpec, on_eval: OnEval) -> TrialResult:
        return finetune(spec, shared, on_eval)

    return run


def quiet_libraries() -> None:
    """Trial output is ours; library chatter at 2 a.m. hides it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(transformers|peft|trl|bitsandbytes|torch|accelerate)")
    try:
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_error()
        datasets.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def run_sweep(
    cfg: SweepConfig,
    *,
    storage: str | None = None,
    recipe: Recipe | None = None,
    console: Console | None = None,
) -> RunOutcome:
    console = console or Console(highlight=False)
    quiet_libraries()
    url = st.storage_url(cfg, storage)
    st.check_url(url)
    start = time.perf_counter()
    if recipe is None:
        console.print(f"[bold]{cfg.name}[/]: loading base model and data ({cfg.model.name}, {cfg.dataset.source})")
        recipe = real_recipe(cfg)
    optuna_storage = st.open_storage(url)
    study = st.open_study(cfg, optuna_storage, url)
    done = st.count(study)
    remaining = max(0, cfg.budget.n_trials - done)
    console.print(
        f"[bold]{cfg.name}[/]: {done} finished trial(s) in {st.mask_url(url)}; "
        f"running {remaining} more (n_trials={cfg.budget.n_trials}, metric={cfg.metric.name} {cfg.metric.goal})"
    )
    stopper = StopAfterFailures(cfg.budget.max_failures)
    display = ProgressPrinter(cfg, console, first=done, total=cfg.budget.n_trials)
    if st.count(study, (optuna.trial.TrialState.COMPLETE,)):
        display.best = study.best_value
    ran = 0
    if remaining:
        objective = Objective(cfg, recipe, progress=display)
        timeout = cfg.budget.timeout_minutes * 60 if cfg.budget.timeout_minutes else None
        before = len(study.trials)
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(Exception,), callbacks=[stopper])
        ran = len(study.trials) - before
    return RunOutcome(study, ran, stopper.tripped, time.perf_counter() - start)


class ProgressPrinter:
    """One line per eval and per trial end: readable in a log file, over SSH, and in CI."""

    def __init__(self, cfg: SweepConfig, console: Console, first: int, total: int) -> None:
        self.cfg, self.console, self.total = cfg, console, total
        self.index = first
        self.best: float | None = None
        self.maximize = cfg.metric.goal == "maximize"

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        name = self.cfg.metric.name
        tag = f"trial {data['trial']:>3} [{self.index + 1}/{self.total}]"
        if event == "trial_start":
            params = " ".join(f"{SHORT.get(k, k)}={_fmt(v)}" for k, v in data["params"].items())
            self.console.print(f"{tag} start  {params}")
        elif event == "eval":
            m = data["metrics"]
            value = m.get(name, math.nan)
            self.console.print(
                f"{tag} step {data['step']:>4}/{self.cfg.budget.max_steps}  {name} {_fmt(value)}  "
                f"best {_fmt(self.best) if self.best is not None else '-'}"
            )
        elif event in ("trial_end", "trial_pruned", "trial_fail"):
            if event == "trial_end":
                v = data["value"]
                if self.best is None or (v > self.best if self.maximize else v < self.best):
                    self.best = v
                r = data["result"]
                how = " (early stop)" if r.stopped_early else ""
                self.console.print(
                    f"{tag} [green]done[/]  {name} {_fmt(v)} at step {r.best_step}/{r.steps_run}{how}  "
                    f"{r.duration_s:.1f}s"
                )
            elif event == "trial_pruned":
                self.console.print(f"{tag} [yellow]pruned[/] at step {data['step']}")
            else:
                self.console.print(f"{tag} [red]failed[/]: {data['reason']}")
            self.index += 1


# Short column names so a 10-parameter table fits a terminal.
SHORT = {
    "r": "r",
    "lora_alpha": "alpha",
    "lora_alpha_multiple": "alpha/r",
    "lora_dropout": "drop",
    "learning_rate": "lr",
    "lr_scheduler_type": "sched",
    "warmup_ratio": "warm",
    "per_device_train_batch_size": "bs",
    "gradient_accumulation_steps": "ga",
    "optim": "optim",
    "weight_decay": "wd",
    "max_grad_norm": "clip",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trials_table(study: optuna.Study, metric: str, goal: str, limit: int | None = None) -> Table:
    """All trials, best first (by the objective); pruned and failed after the complete ones."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    param_names = sorted({p for t in trials for p in t.params})
    sign = -1 if goal == "maximize" else 1
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.FAIL: 3}

    def key(t: optuna.trial.FrozenTrial) -> tuple[int, float, int]:
        value = t.value if t.value is not None else math.inf * sign
        return (order.get(t.state, 4), sign * value, t.number)

    table = Table(title=f"{study.study_name}: trials by {metric} ({goal})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column(metric, justify="right")
    table.add_column("steps", justify="right")
    table.add_column("s", justify="right")
    for p in param_names:
        table.add_column(SHORT.get(p, p), justify="right")
    for t in sorted(trials, key=key)[:limit]:
        steps = t.user_attrs.get("steps_run")
        dur = t.user_attrs.get("duration_s")
        table.add_row(
            str(t.number),
            t.state.name.lower(),
            _fmt(t.value) if t.value is not None else "-",
            str(steps) if steps is not None else "-",
            f"{dur:.0f}" if dur is not None else "-",
            *(_fmt(t.params.get(p, "-")) for p in param_names),
        )
    return table


def check_failures(outcome: RunOutcome, cfg: SweepConfig) -> None:
    if outcome.stopped_for_failures:
        raise SweepStopped(
            f"{cfg.name}: stopped after {cfg.budget.max_failures} failed trials in a row; the reasons are in "
            f"{cfg.study_dir}/trial-*/metrics.json. Fix the cause and run the same command to resume."
        )


class SweepStopped(HarnessError):
    """The sweep stopped itself (too many failures in a row)."""
