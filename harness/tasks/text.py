"""The text task: free-text answers, judged against the reference by ROUGE, BLEU and exact match alone.

Everything the task knows lives here: its headline numbers, its baselines and the `Task` the registry hands
out (harness.tasks.get("text")). It has no columns, label or reward functions of its own: the Task
defaults are the free-text ones. The smallest task, so the one to copy for a new task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from harness.tasks.baselines import Row, register
from harness.tasks.task import TEXT_METRICS, Task, add

NAME = "text"

# ----------------------------------------------------------------------------------------------------
# Baselines (harness.tasks.baselines): answers that need no model


@register(NAME, "empty", about="the empty answer")
def _empty(train: Sequence[Row], rows: Sequence[Row]) -> list[str]:
    return [""] * len(rows)


@register(NAME, "copy_input", about="the prompt as the answer")
def _copy_input(train: Sequence[Row], rows: Sequence[Row]) -> list[str]:
    return [str(r["prompt"]) for r in rows]


@register(NAME, "most_frequent", about="the train split's most frequent completion, for every row")
def _most_frequent(train: Sequence[Row], rows: Sequence[Row]) -> list[str]:
    answer = Counter(str(r["completion"]) for r in train).most_common(1)[0][0]
    return [answer] * len(rows)


TASK = add(
    Task(
        name=NAME,
        metrics=TEXT_METRICS,
        headline=("rougeL", "exact_match"),
        table=("rougeL", "bleu", "exact_match"),
        reference=("rougeL", "copy_input"),
    )
)
