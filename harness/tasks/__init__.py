"""The tasks (`task:` in a sweep file): what a sweep's answers are judged as, one module per task.

    from harness import tasks
    tasks.get(cfg.task).headline        # a Task (harness.tasks.task): metrics, headline, baselines, ...

pricer.py and text.py each hold everything about their task (data formatting, metrics, headline and
table, baselines, rewards) and register one `Task`; the task-independent machinery is beside them:
scoring.py (ROUGE/BLEU, custom metrics), baselines.py (the registry of baselines, measuring them, the
ladder), rewards.py (resolving and checking reward functions). Importing anything under harness.tasks
runs this module, so every task below is registered before any lookup.

Adding a task: a module that builds a Task and `add`s it (text.py is the smallest), imported below; then
its name in sweepfile.schema's `task:` Literal and TASK_METRICS, the copies sweepfile keeps because it
imports no task (tests/test_tasks.py checks that they agree with the registry).

Never optuna (tests/test_structure.py).
"""

from __future__ import annotations

from harness.errors import CALLABLE_SPEC, ConfigError
from harness.sweepfile.schema import SweepConfig
from harness.tasks import baselines, pricer, rewards, text  # noqa: F401 - pricer, text: registered at import
from harness.tasks.task import Task, get, names

__all__ = ["Task", "check", "get", "names"]


def check(cfg: SweepConfig) -> list[str]:
    """A validated sweep's problems only the tasks can see, as '  - key: message' lines (none: []):
    `baseline.NAME` in `expect:` that is no baseline of the task (any name passes when the sweep has
    custom metrics, whose modules may register more), and GRPO reward functions that do not resolve or
    belong to another task, and custom metrics that do not import (a missing module, a syntax error).
    sweepfile.load.load_sweep(..., checks=check) reports them with the schema's problems; run_sweep checks
    again before it writes anything."""
    get(cfg.task)
    found = [] if cfg.evaluation.custom else baselines.unknown(cfg.task, cfg.expectations)
    return found + rewards.problems(cfg) + custom_metric_problems(cfg)


def custom_metric_problems(cfg: SweepConfig) -> list[str]:
    """`evaluation.custom` specs that do not import, found now rather than when the first trial is scored."""
    from harness.tasks import scoring

    out = []
    for spec in cfg.evaluation.custom:
        if not CALLABLE_SPEC.fullmatch(spec):
            continue  # not a module:function at all: sweepfile's checks say so (harness.sweepfile.checks)
        try:
            scoring.load_custom_metric(spec)
        except ConfigError as e:
            out.append(f"  - evaluation.custom: {e}")
    return out
