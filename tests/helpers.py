"""What the test files share: the fake recipe, the sweep-config helper, and the tiny real budgets.

A plain module, imported as `from helpers import ...` (tests/ is on sys.path, as it is for conftest.py:
pytest's default "prepend" import mode inserts the folder of a test file that is not in a package). Test
modules import from here, never from each other.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.core.spec import TrialResult, TrialSpec
from harness.study import failures
from harness.sweepfile.load import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "sweeps/pricer.yaml"

# Budgets small enough for seconds per real trial on the builtin model, large enough to learn something.
TINY = [
    "budget.max_steps=12",
    "budget.eval_steps=4",
    "dataset.max_eval_rows=32",
    "dataset.max_train_rows=400",
    "evaluation.samples=8",
    "early_terminate.type=none",
    "early_stopping.patience=0",
]
# The DPO/GRPO recipes' smallest budgets (tests/test_trainers.py, tests/test_bad_rows.py).
DPO_TINY = [
    "budget.max_steps=12",
    "budget.eval_steps=4",
    "dataset.max_train_rows=200",
    "dataset.max_eval_rows=32",
    "evaluation.samples=8",
    "early_terminate.type=none",
    "early_stopping.patience=0",
]


def sweep(tmp_path: Path, *overrides: str):
    """sweeps/pricer.yaml with its results under tmp_path, 60 steps (evals at 50 and 60, the file's
    eval_steps) and no pruning: the file's successive halving would stop a worse trial at its first eval, so
    a test that prunes names its pruner. `overrides` come after these, so they win (`budget.max_steps=120`,
    `early_terminate.type=median`)."""
    return load_sweep(
        SWEEP, [f"results_dir={tmp_path}", "budget.max_steps=60", "early_terminate.type=none", *overrides]
    )


def journal(tmp_path: Path) -> str:
    """A journal storage URL under tmp_path (no database file, unlike the default SQLite)."""
    return f"journal:{tmp_path}/studies/journal.log"


PROMPTS = [f"Product {i}: a thing that costs something" for i in range(6)]


@dataclass
class FakeRecipe:
    """The recipe's contract in milliseconds, without transformers: the study side tested for real.

    One eval every `eval_steps` (and at `max_steps`, as the real recipe does), reported through `on_eval`;
    a True answer prunes the trial there. The loss falls with steps and, by default, is best near lr=1e-3:

        eval_loss(step) = base + lr_weight * |log10(lr) + 3| + r_weight * r + decay / step

    The value is the best (min or max, per the sweep's metric goal) of the eval history, never simply the
    last eval, and the final metrics are those of the best eval, as the real recipe's are.
    """

    base: float = 0.0
    lr_weight: float = 1.0
    """0 makes every trial score the same: numbers a test can assert on whatever the sampler picks."""
    r_weight: float = 0.0
    decay: float = 10.0
    extra: dict[str, float] = field(default_factory=dict)
    """Metrics added to the final ones (the generation metrics a real trial measures), e.g. hit_rate."""
    artifacts: bool = False
    """What a real trial writes besides the eval history: price generations (the prediction is off by the
    trial number, one answer is unparseable, so mae = number), a train log, and duration 0.5 + number s."""
    fail: dict[int, BaseException] = field(default_factory=dict)
    """Trial number -> exception to raise instead of training (a crash, an OOM, a Ctrl-C)."""
    calls: list[int] = field(default_factory=list)
    """The trial numbers this recipe was called with, in order."""
    pause_s: float = 0.0
    """A pause before each eval, so a worker in a subprocess is seen mid-trial (and can be killed there)."""
    rendezvous: int = 0
    """Several workers: a trial waits until this many trial folders exist before training. A worker runs
    one trial at a time, so the first trials can only finish once as many workers have each started one:
    every worker takes part, however fast the first one was."""

    def failing(self, fail: dict[int, BaseException]) -> FakeRecipe:
        """The same recipe, raising `fail[number]` in those trials instead of training."""
        return replace(self, fail=fail, calls=[])

    def loss(self, spec: TrialSpec, step: int) -> float:
        t = spec.training
        return (
            self.base
            + self.lr_weight * abs(math.log10(t.learning_rate) + 3)
            + self.r_weight * t.r
            + self.decay / step
        )

    def __call__(self, spec: TrialSpec, on_eval) -> TrialResult:
        self.calls.append(spec.number)
        if spec.number in self.fail:
            error = self.fail[spec.number]
            raise type(error)(*error.args)  # a fresh one each call: no traceback piles up on a shared one
        budget, metric = spec.sweep.budget, spec.sweep.metric
        self.meet(spec.output_dir.parent)
        steps = list(range(budget.eval_steps, budget.max_steps + 1, budget.eval_steps))
        if not steps or steps[-1] != budget.max_steps:
            steps.append(budget.max_steps)
        duration = 0.5 + spec.number if self.artifacts else 0.01
        history: list[dict[str, float]] = []
        for step in steps:
            time.sleep(self.pause_s)
            loss = self.loss(spec, step)
            metrics = {"eval_loss": loss, "perplexity": math.exp(loss)}
            history.append({"step": step, **metrics})
            if on_eval(step, metrics):
                return TrialResult(None, metrics, step, step, duration, history, pruned=True)
        best = self.best(history, metric.name, metric.goal == "maximize")
        final = {k: v for k, v in best.items() if k != "step"} | self.extra
        if self.artifacts:
            final["mae"] = float(spec.number)
        value = final.get(metric.name, math.nan)
        generations = self.generations(spec) if self.artifacts else []
        train_log = [{"step": 10, "loss": 3.0, "learning_rate": spec.training.learning_rate}]
        return TrialResult(
            value,
            final,
            int(best["step"]),
            budget.max_steps,
            duration,
            history,
            generations=generations,
            train_log=train_log if self.artifacts else [],
        )

    def meet(self, study_dir: Path, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(list(study_dir.glob("trial-*"))) < self.rendezvous:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rendezvous: fewer than {self.rendezvous} workers started a trial")
            time.sleep(0.05)

    @staticmethod
    def best(history: list[dict[str, float]], metric: str, maximize: bool) -> dict[str, float]:
        """The best eval by the sweep's metric; the last one when the history does not hold that metric
        (a generation metric measured only at the end)."""
        scored = [h for h in history if math.isfinite(h.get(metric, math.nan))]
        if not scored:
            return history[-1]
        return (max if maximize else min)(scored, key=lambda h: h[metric])

    @staticmethod
    def generations(spec: TrialSpec) -> list[dict[str, Any]]:
        n = spec.number
        return [
            {
                "prompt": p,
                "reference": f"{10 * (i + 1)}.00",
                "prediction": f"{10 * (i + 1) + n}.00",
                "price_true": 10.0 * (i + 1),
                "price_pred": 10.0 * (i + 1) + n if i != 5 else None,  # one unparseable answer
            }
            for i, p in enumerate(PROMPTS)
        ]


# The variants the test files use. A test that needs calls recorded or failures injected makes its own
# FakeRecipe(...), so nothing recorded leaks from one test into another.
fake_recipe = FakeRecipe()
"""eval_loss falls with steps and is best near lr=1e-3: the study, crash, tracking and watch tests."""
reporting_recipe = FakeRecipe(r_weight=0.01, artifacts=True)
"""Also writes generations, mae, a train log and distinct durations: the report and promote tests."""
steady_recipe = FakeRecipe(base=1.0, lr_weight=0.0, extra={"hit_rate": 0.5})
"""The same numbers for every trial (eval_loss 1 + 10/step, hit_rate 0.5): expectation verdicts with
exact measured values (`sweep run` and the pytest plugin)."""
parallel_recipe = FakeRecipe(base=1.0, lr_weight=0.0, rendezvous=2, pause_s=0.05)
"""steady_recipe's numbers, for several `sweep run` processes on one study (`sweep run --recipe
helpers:parallel_recipe`): each of two workers takes part in the first trials (rendezvous)."""
slow_recipe = FakeRecipe(base=1.0, lr_weight=0.0, rendezvous=2, pause_s=0.5)
"""The same, half a second before each eval: a worker can be killed mid-trial at an eval line."""


def sweep_cli(
    argv: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    path: tuple[Path, ...] = (),
    timeout: int = 180,
) -> subprocess.CompletedProcess[str]:
    """`sweep ARGV` as a user runs it: a fresh process in `cwd` (one torch thread), harness importable from
    the checkout and `path` (a test's own modules), `env` on top of this process's environment."""
    full = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, path)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_requeued(study: Any, shown: str = "") -> None:
    """After Ctrl-C / SIGTERM of a run training one trial: nothing left RUNNING, that trial FAIL
    `interrupted`, and its retry WAITING with the same params (enqueued: the sampler is not asked)."""
    from optuna.trial import TrialState

    assert not study.get_trials(states=(TrialState.RUNNING,)), shown
    interrupted = [t for t in study.trials if t.user_attrs.get("fail_reason") == failures.INTERRUPTED]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(interrupted) == 1 and len(waiting) == 1, shown
    assert waiting[0].system_attrs["fixed_params"] == interrupted[0].params
