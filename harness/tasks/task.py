"""The record every task fills in (`Task`) and the registry the rest of harness asks (`get`).

A task is what a sweep's answers are judged as (`task:` in a sweep file). Its module (pricer.py, text.py)
builds one `Task` and `add`s it; harness/tasks/__init__.py imports every task module, so whatever imports
anything under harness.tasks finds them all here. This module imports no task module: the
task-independent machinery (scoring, baselines, rewards) looks tasks up here without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError
from harness.sweepfile.schema import DatasetConfig

Row = dict[str, Any]
Formatter = Callable[[Row], "Row | str"]
"""A source row -> a prompt/completion row, or a short reason it cannot be used (trial.datasets)."""
RewardFn = Callable[..., list[float]]
Scores = tuple[dict[str, float], list[dict[str, Any]]]
"""Corpus metrics and one dict of scores per row (generations.jsonl)."""

TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match")
"""What harness.tasks.scoring reports for the generations of every task."""


@dataclass(frozen=True)
class Task:
    """One task's rules. The defaults (the methods below) fit a task whose answers are free text, scored
    by the text metrics alone; a task with more to say subclasses it (pricer.py)."""

    name: str
    metrics: tuple[str, ...]
    """What its generations are scored with, in report order (eval_loss and perplexity are every
    trainer's). sweepfile.schema.TASK_METRICS keeps a copy to validate `metric:`; tests/test_tasks.py
    checks that the two agree."""
    headline: tuple[str, ...]
    """The numbers a user looks at first: the closing summary's base -> tuned and baseline lines."""
    table: tuple[str, ...]
    """The columns of the baselines table (report, compare), after the objective."""
    reference: tuple[str, str]
    """(main metric, the baseline the best trial must beat on it): the closing summary warns otherwise."""
    lower_is_better: frozenset[str] = frozenset()
    """Its metrics where lower is better (errors); the others are higher-is-better."""
    label: str | None = None
    """A number every row of its data carries (pricer: `price`): kept as a float column of the splits,
    read by its scoring and its reward functions; the report plots it predicted against true."""
    rewards: Mapping[str, RewardFn] = field(default_factory=dict)
    """Its own builtin GRPO reward functions: they read its label, so other tasks cannot use them."""

    def score(
        self, predictions: Sequence[str], references: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> Scores:
        """Its own metrics, on top of the text metrics every task reports, and its scores per row."""
        return {}, [{} for _ in predictions]

    def formatter(self, ds: DatasetConfig, columns: Sequence[str]) -> Formatter | None:
        """Turns rows in the task's own columns (pricer: a description and a price) into prompt/completion
        rows; None when the data lacks them. Tried after the task-independent row shapes."""
        return None

    def columns_hint(self, ds: DatasetConfig) -> str:
        """Its own columns, for the message when data fits no row shape: `'text' and 'price' (pricer), `."""
        return ""

    def label_of(self, item: Row, row: Row, ds: DatasetConfig) -> float | str:
        """The label of the formatted row `item`, made from the source `row`, or a short reason it has none
        (the row is bad: harness.core.badrows). Only called when `label` is set."""
        return f"no {self.label}"

    def labelled(self, rows: list[Row | str], ds: DatasetConfig) -> list[Row | str]:
        """Preference or prompt-only rows (dpo, grpo) with their label set; a row without one becomes the
        reason (a reason given stays one)."""
        return rows

    def answer_value(self, answer: str) -> float | None:
        """The label's value an answer states (pricer: the price in it), None when it states none."""
        return None


_TASKS: dict[str, Task] = {}


def add(task: Task) -> Task:
    """Register `task` under its name (a task module does this once, at import)."""
    _TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    """The task called `name`; an unknown name is a ConfigError listing the tasks there are."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; the tasks are: {', '.join(_TASKS)}") from None


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def every() -> tuple[Task, ...]:
    return tuple(_TASKS.values())
