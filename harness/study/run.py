"""`sweep run`: validated config -> shared fixtures -> study (created or resumed) -> trials -> table.

Order matters for "bad input writes nothing": everything that can be checked without writing (config,
search space, storage URL form, dataset, model) is checked before the storage is created.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from rich.console import Console

from harness import compat, tasks
from harness.core import attrs, badrows, cost, interrupt, lengths, ranks, trialdir
from harness.core import provenance as recorded
from harness.core.display import SHORT
from harness.core.display import fmt as _fmt
from harness.core.spec import (
    MeasuresBaseline,
    MeasuresTaskBaselines,
    Recipe,
    ReportsData,
    ReportsDroppedRows,
    ReportsProvenance,
)
from harness.errors import HarnessError, TrialFailed, problems_error
from harness.study import failures, ranking, resume
from harness.study import storage as st
from harness.study.objective import Objective, StopAfterFailures, StopAtDeviceHours
from harness.study.sampler import AdaptiveRung
from harness.sweepfile import checks
from harness.sweepfile.schema import SweepConfig
from harness.tasks import baselines
from harness.trial import provenance


@dataclass
class RunOutcome:
    study: optuna.Study
    ran: int
    stopped_for_failures: bool
    seconds: float


def real_recipe(cfg: SweepConfig) -> Recipe:
    """The QLoRA recipe with this sweep's session fixtures (imported here: the study side runs without
    torch until a real trial is needed)."""
    from harness.trial.recipe import QLoRARecipe

    return QLoRARecipe(cfg)


def quiet_libraries() -> None:
    """Trial output is ours; library chatter at 2 a.m. hides it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # An interrupted trial is not a failure to explain: no traceback for Ctrl-C / SIGTERM.
    logging.getLogger(compat.OPTIMIZE_LOGGER).addFilter(_not_an_interrupt)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(transformers|peft|trl|bitsandbytes|torch|accelerate)")
    try:
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars
        datasets.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def run_sweep(
    cfg: SweepConfig,
    *,
    storage: str | None = None,
    recipe: Recipe | None = None,
    console: Console | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> RunOutcome:
    """`callbacks` run after each trial, as Optuna's (e.g. a budget in train steps; benchmarks/quality.py)."""
    # A config built without load_sweep's checks: still nothing written.
    found = checks.config_problems(cfg) + checks.space_problems(cfg) + tasks.check(cfg)
    if found:
        raise problems_error(cfg.source_path or cfg.name, found)
    console = console or Console(highlight=False)
    quiet_libraries()
    url = st.storage_url(cfg, storage)
    st.check_url(url)
    start = time.perf_counter()
    ranks.start()  # rank 0 of K (training.distributed): join the group before any Trainer exists
    if recipe is None:
        console.print(
            f"[bold]{cfg.name}[/]: loading base model and data ({cfg.model.name}, {cfg.dataset.source})"
        )
        recipe = real_recipe(cfg)
    if not ranks.launched():
        return _run(cfg, url, recipe, console, callbacks, start)
    # Each trial's spec and decisions go to the other ranks; fsdp: they measure the base with rank 0.
    leader = ranks.Leader(recipe, lockstep=cfg.training.distributed == "fsdp")
    try:
        outcome = _run(cfg, url, leader, console, callbacks, start)
    except Exception:
        leader.stop()
        raise
    leader.stop()
    return outcome


def follow_sweep(cfg: SweepConfig, recipe: Recipe | None = None) -> int:
    """A non-zero rank of a distributed worker (training.distributed): the same base and data, then each
    trial rank 0 sends, until it says stop. Never opens the storage; returns the trials trained."""
    quiet_libraries()
    ranks.start()
    return ranks.follow(recipe if recipe is not None else real_recipe(cfg))


def _run(
    cfg: SweepConfig,
    url: str,
    recipe: Recipe,
    console: Console,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
    start: float,
) -> RunOutcome:
    optuna_storage = st.open_storage(url)
    try:
        study = resume.open_study(cfg, optuna_storage, url)
    except HarnessError:  # refused (another search space or objective): leave nothing open behind
        st.close(optuna_storage)
        raise
    if isinstance(study.pruner, AdaptiveRung):  # min_iter: auto says when its first rung moves
        study.pruner.say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
    report_lengths(study, recipe, console)
    report_dropped(study, recipe, console)
    record_provenance(cfg, study, recipe, console)
    recovered = failures.recover_interrupted(study)
    if recovered:
        console.print(
            f"{cfg.name}: trial(s) {', '.join(map(str, recovered))} were interrupted; "
            "retrying with the same params from their last checkpoint"
        )
    done = failures.done(study)  # interrupted trials do not use up the budget (failures.py)
    budget = failures.SharedBudget(cfg.budget.n_trials)
    # Other workers' running trials will count too: a worker joining a study about to finish starts none.
    remaining = 0 if budget.spent(study) else max(0, cfg.budget.n_trials - done)
    device_budget = StopAtDeviceHours(cfg.budget.device_hours)
    if remaining and device_budget.spent(study):  # spent by earlier runs (or other workers)
        remaining, device_budget.tripped = 0, True
    others = sum(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))
    console.print(
        f"[bold]{cfg.name}[/]: {done} finished trial(s) in {st.mask_url(url)}"
        + (f", {others} running in other workers" if others else "")
        + f"; running up to {remaining} more (n_trials={cfg.budget.n_trials} for the whole study, "
        f"metric={cfg.metric.name} {cfg.metric.goal})"
    )
    if cfg.multi_objective:
        goals = ", ".join(f"{m.name} {m.goal}" for m in cfg.objectives)
        console.print(
            f"{cfg.name}: multi-objective study ({goals}): pruning and intermediate reports are off "
            "(Optuna cannot prune multi-objective trials); Pareto-optimal trials are marked ★"
        )
    stopper = StopAfterFailures(cfg.budget.max_failures)
    display = ProgressPrinter(cfg, console, first=done, total=cfg.budget.n_trials)
    best = ranking.best_trial(study)
    if best is not None:
        display.best = ranking.primary_value(best)
    measure_baseline(study, recipe, remaining, console, cfg.metric.name)
    measure_task_baselines(cfg, study, recipe, console)
    ran = 0
    if remaining:
        objective = Objective(cfg, recipe, progress=display)
        timeout = cfg.budget.timeout_minutes * 60 if cfg.budget.timeout_minutes else None
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            catch=(Exception,),
            # First: a Ctrl-C that came while a trial was recorded stops here, before the next is asked for.
            callbacks=[lambda *_: interrupt.check(), stopper, budget, device_budget, *callbacks],
        )
        ran = objective.started
    if device_budget.tripped:
        console.print(
            f"{cfg.name}: budget.device_hours={cfg.budget.device_hours:g} spent "
            f"({cost.hours_text(device_budget.spent_s(study))} by the study's trials): no new trial started",
            markup=False,
            soft_wrap=True,
        )
    if budget.recovered:
        console.print(
            f"{cfg.name}: trial(s) {', '.join(map(str, budget.recovered))} of a worker that died were "
            "retried with the same params"
        )
    if budget.over(study):
        console.print(
            f"{cfg.name}: {budget.over(study)} trial(s) over n_trials={cfg.budget.n_trials}: workers started "
            "them while the last ones were finishing (at most workers - 1)"
        )
    return RunOutcome(study, ran, stopper.tripped, time.perf_counter() - start)


def report_lengths(study: optuna.Study, recipe: Recipe, console: Console) -> None:
    """How the rows fit max_seq_length (figures from the fixtures): one line, and study user attr
    `data_lengths`, so the numbers behind every metric stay with the study."""
    if not isinstance(recipe, ReportsData):
        return
    figures = recipe.data_report()
    study.set_user_attr(attrs.DATA_LENGTHS, figures)
    for line in lengths.lines(study.study_name, figures):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def report_dropped(study: optuna.Study, recipe: Recipe, console: Console) -> None:
    """The bad rows `dataset.bad_rows: drop` left out: one line, and study user attr `dropped_rows` (also
    when a later run drops none, so the study never keeps a stale count)."""
    if not isinstance(recipe, ReportsDroppedRows):
        return
    figures = recipe.dropped_rows()
    if figures or attrs.DROPPED_ROWS in study.user_attrs:
        study.set_user_attr(attrs.DROPPED_ROWS, figures or {"rows": None, "dropped": 0, "reasons": {}})
    line = badrows.line(study.study_name, figures)
    if line:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def record_provenance(cfg: SweepConfig, study: optuna.Study, recipe: Recipe, console: Console) -> None:
    """Once per study: content hashes of base, tokenizer and data (harness.trial.provenance), and the search
    space (so `sweep confirm STUDY` can rebuild the config). A resumed run on other bytes says so."""
    if attrs.PARAMETERS not in study.user_attrs:
        space = {k: v.model_dump(mode="json", exclude_none=True) for k, v in cfg.parameters.items()}
        study.set_user_attr(attrs.PARAMETERS, space)
    found = recipe.provenance() if isinstance(recipe, ReportsProvenance) else provenance.measure(cfg)
    have = attrs.provenance(study)
    if have is None:
        study.set_user_attr(attrs.PROVENANCE, found)
        return
    diff = recorded.differences(have, found)
    if diff:
        console.print(
            f"{cfg.name}: warning: this run's {', '.join(diff)} differ from what the study was started "
            "with (user attr provenance): new trials are not comparable with the old ones",
            markup=False,
            soft_wrap=True,
        )


def measure_baseline(
    study: optuna.Study, recipe: Recipe, remaining: int, console: Console, metric: str = "eval_loss"
) -> None:
    """The untrained base's metrics, once per study (study user attr `baseline_metrics`). A trial
    failure while measuring it (a GRPO reward function that raises) is one line: the trials then fail
    with the same reason, each recorded, and the next run measures the base again."""
    if (
        not isinstance(recipe, MeasuresBaseline)
        or not remaining
        or attrs.BASELINE_METRICS in study.user_attrs
    ):
        return
    try:
        metrics = baselines.finite(recipe.baseline())
    except TrialFailed as e:
        console.print(f"{study.study_name}: the untrained base could not be measured: {e}", markup=False)
        return
    study.set_user_attr(attrs.BASELINE_METRICS, metrics)
    shown = metric if metric in metrics else "eval_loss"
    if shown in metrics:
        console.print(f"{study.study_name}: untrained base {shown} {metrics[shown]:.4g}")


def measure_task_baselines(cfg: SweepConfig, study: optuna.Study, recipe: Recipe, console: Console) -> None:
    """The task baselines (harness.tasks.baselines), once per study: user attr `task_baselines` and
    results/<study>/baselines.jsonl. Measured by the recipe on its own rows when it can, else from the
    data alone; a problem is one line, never the end of the sweep."""
    if attrs.TASK_BASELINES in study.user_attrs or not cfg.evaluation.samples:
        return
    try:
        found = (
            recipe.task_baselines() if isinstance(recipe, MeasuresTaskBaselines) else baselines_from_data(cfg)
        )
    except HarnessError as e:
        console.print(f"{cfg.name}: task baselines not measured: {e}", markup=False, soft_wrap=True)
        return
    for name, why in found.skipped.items():
        console.print(f"{cfg.name}: baseline {name} skipped: {why}", markup=False, soft_wrap=True)
    if not found.metrics:
        return
    trialdir.write_jsonl(cfg.study_dir / baselines.FILE, found.rows)
    study.set_user_attr(attrs.TASK_BASELINES, found.metrics)
    metric = tasks.get(cfg.task).reference[0]
    shown = ", ".join(f"{n} {m[metric]:.4g}" for n, m in found.metrics.items() if metric in m)
    if shown:
        console.print(
            f"{cfg.name}: baselines on {len(found.rows)} generation rows, {metric}: {shown}",
            markup=False,
            soft_wrap=True,
        )


_FROM_DATA: dict[str, baselines.Measured] = {}


def baselines_from_data(cfg: SweepConfig) -> baselines.Measured:
    """The task baselines from the sweep's data alone (no model, no tokenizer): for recipes that do not
    measure them. Builtin data is generated, so its result is kept for the process (tests run many sweeps)."""
    from harness.trial.datasets import generation_subset, load_splits

    key = json.dumps(
        [
            cfg.dataset.model_dump(mode="json"),
            cfg.task,
            cfg.seed,
            cfg.evaluation.samples,
            cfg.evaluation.custom,
        ]
    )
    builtin = cfg.dataset.source.startswith("builtin:")
    if builtin and key in _FROM_DATA:
        return _FROM_DATA[key]
    if not cfg.evaluation.samples:
        return baselines.Measured()
    data = load_splits(cfg)
    found = baselines.measure(cfg, data.train.to_list(), generation_subset(data.validation, cfg))
    if builtin:
        _FROM_DATA[key] = found
    return found


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    exc = record.exc_info[0] if record.exc_info else None
    return not (exc is not None and issubclass(exc, KeyboardInterrupt))


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
                f"{tag} step {data['step']:>4}/{data.get('max_steps') or self.cfg.budget.max_steps}  "
                f"{name} {_fmt(value)}  "
                f"best {_fmt(self.best) if self.best is not None else '-'}"
            )
        elif event in ("trial_end", "trial_pruned", "trial_fail"):
            if event == "trial_end":
                v = data["value"]
                if self.best is None or (v > self.best if self.maximize else v < self.best):
                    self.best = v
                r = data["result"]
                how = " (early stop)" if r.stopped_early else ""
                values = data.get("values") or [v]
                shown = "  ".join(
                    f"{m.name} {_fmt(x)}" for m, x in zip(self.cfg.objectives, values, strict=False)
                )
                self.console.print(
                    f"{tag} [green]done[/]  {shown} at step {r.best_step}/{r.steps_run}{how}  "
                    f"{r.duration_s:.1f}s"
                )
            elif event == "trial_pruned":
                self.console.print(f"{tag} [yellow]pruned[/] at step {data['step']}")
            else:
                self.console.print(f"{tag} [red]failed[/]: {data['reason']}")
            self.index += 1


def check_failures(outcome: RunOutcome, cfg: SweepConfig) -> None:
    if outcome.stopped_for_failures:
        raise SweepStopped(
            f"{cfg.name}: stopped after {cfg.budget.max_failures} failed trials in a row; the reasons are in "
            f"{cfg.study_dir}/trial-*/metrics.json. Fix the cause and run the same command to resume."
        )


class SweepStopped(HarnessError):
    """The sweep stopped itself (too many failures in a row)."""
