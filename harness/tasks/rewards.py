"""GRPO reward functions: the builtin ones (a task's own, Task.rewards, and the task-independent ones
here), and the user's `module:function` found beside the sweep file.

A reward function is called as trl calls it: `f(prompts, completions, **columns) -> list[float]`, one
reward per completion, where `columns` are the dataset's other columns repeated per completion (for the
builtin pricer data: `price`). Completions are strings, or message lists for conversational prompts.

No torch here: the sweep file's reward functions are resolved (and a missing one reported) at load time,
by `problems` (harness.tasks.check).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.core.spec import import_callable
from harness.errors import CALLABLE_SPEC, ConfigError, RewardFailed
from harness.sweepfile.schema import SweepConfig, reward_name
from harness.tasks.task import RewardFn, Task, every

_CLEAN_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")


def completion_text(completion: Any) -> str:
    """A completion's text: the string itself, or the last message's content (conversational)."""
    if isinstance(completion, list):
        return str(completion[-1].get("content", "")) if completion else ""
    return "" if completion is None else str(completion)


def number_format(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
    """1.0 when the completion is just a number (like the pricer's `129.00`), 0.5 when it starts with one
    and goes on, 0.0 when it does not start with a number."""
    out = []
    for completion in completions:
        text = completion_text(completion)
        if _CLEAN_NUMBER.fullmatch(text):
            out.append(1.0)
        elif re.match(r"\s*\d", text):
            out.append(0.5)
        else:
            out.append(0.0)
    return out


ANY_TASK: dict[str, RewardFn] = {"number_format": number_format}
"""Builtin reward functions for every task; a task adds its own (Task.rewards)."""


def builtin() -> dict[str, RewardFn]:
    """Every builtin reward function by name: the tasks' own, then those for any task."""
    return {**{name: fn for t in every() for name, fn in t.rewards.items()}, **ANY_TASK}


def owner(spec: str) -> Task | None:
    """The task whose own reward function `spec` is (None: any task's, or the user's)."""
    return next((t for t in every() if spec in t.rewards), None)


def resolve(spec: str, folder: Path | None = None) -> RewardFn:
    """A builtin name, or `module:function` importable from `folder` (the sweep file's) or sys.path."""
    found = builtin()
    if spec in found:
        return found[spec]
    if ":" not in spec:
        raise ConfigError(
            f"reward function {spec!r} is neither a builtin ({', '.join(found)}) nor module:function"
        )
    fn: RewardFn = import_callable(spec, "reward function", [folder] if folder is not None else [])
    return fn


def checked(fn: RewardFn, name: str) -> RewardFn:
    """`fn` as trl calls it, failing the trial with the function's name when it raises, returns the wrong
    number of rewards, or returns something that is not a finite number (None is trl's 'no reward')."""

    def call(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        try:
            out = fn(prompts=prompts, completions=completions, **kwargs)
        except Exception as e:
            raise RewardFailed(f"reward function {name} raised {type(e).__name__}: {e}") from e
        try:
            values = list(out)
        except TypeError:
            raise RewardFailed(f"reward function {name} returned {type(out).__name__}, not a list") from None
        if len(values) != len(completions):
            raise RewardFailed(
                f"reward function {name} returned {len(values)} rewards for {len(completions)} completions"
            )
        bad = [v for v in values if v is not None and not _finite(v)]
        if bad:
            raise RewardFailed(
                f"reward function {name} returned a non-number or non-finite reward: {bad[0]!r}"
            )
        return values

    call.__name__ = name  # trl names each reward's metrics after __name__
    return call


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def load(specs: Sequence[str], folder: Path | None = None) -> list[RewardFn]:
    """The sweep's reward functions, each wrapped by `checked` and named as in its metrics."""
    return [checked(resolve(s, folder), reward_name(s)) for s in specs]


def problems(cfg: SweepConfig) -> list[str]:
    """A GRPO sweep's reward-function problems, as '  - key: message' lines: none given, one that does not
    resolve, a task's own one under another task. (The weights' count is sweepfile.trainers' check.)"""
    if cfg.trainer != "grpo":
        return []
    specs = cfg.training.reward_functions
    if not specs:
        return [
            "  - training.reward_functions: trainer grpo needs at least one reward function "
            f"(builtin: {', '.join(builtin())}; or module:function beside the sweep file)"
        ]
    out = []
    folder = Path(cfg.source_path).parent if cfg.source_path else None
    for spec in specs:
        if ":" in spec and not CALLABLE_SPEC.fullmatch(spec):
            continue  # not a module:function at all: sweepfile's checks say so (harness.sweepfile.checks)
        try:
            resolve(spec, folder)
        except ConfigError as e:
            out.append(f"  - training.reward_functions: {e}")
        task = owner(spec)
        if task is not None and task.name != cfg.task:
            out.append(
                f"  - training.reward_functions: {spec} reads the {task.name}'s {task.label} column; "
                f"use task: {task.name}"
            )
    return out
