"""P3: how much training a pruned sweep needs to find what the unpruned sweep finds.

The same seeded sweep (default sweep file, builtin model, `random` sampler with the same seed, so both
sweeps sample the same params in the same order; every trial also has the same training seed and data
order) runs twice in this process: early_terminate none, then the sweep file's pruner (median). Early
stopping inside a trial is off in both, so only pruning differs. Walking the pruned sweep's trials in
order, count the train steps run (user attr steps_run, pruned trials included) until its best eval_loss is
within 2% of the unpruned sweep's best; printed as a share of the unpruned sweep's total steps.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_avg, result_line, setup_torch, sweep_config

TARGET = 50.0  # percent
TOLERANCE = 0.02
N_TRIALS = 8
MAX_STEPS = 40
EVAL_STEPS = 10
PRUNER = "median"


def steps_to_reach(trials: list[dict[str, Any]], goal: float) -> int | None:
    """Train steps spent, in trial order, until a COMPLETE trial's value is <= goal (None if never)."""
    spent = 0
    for t in trials:
        spent += t["steps"]
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] <= goal:
            return spent
    return None


def run(tmp: str, name: str, pruner: str) -> list[dict[str, Any]]:
    from rich.console import Console

    from harness.runner import run_sweep

    cfg = sweep_config(
        tmp,
        f"name={name}",
        "method=random",
        f"budget.n_trials={N_TRIALS}",
        f"budget.max_steps={MAX_STEPS}",
        f"budget.eval_steps={EVAL_STEPS}",
        "early_stopping.patience=0",
        f"early_terminate.type={pruner}",
        "evaluation.samples=0",  # the metric is eval_loss; generation would only add equal time to both
    )
    outcome = run_sweep(cfg, console=Console(file=io.StringIO(), highlight=False))
    return [
        {
            "state": t.state.name,
            "value": t.value,
            "steps": int(t.user_attrs.get("steps_run", 0)),
            "params": t.params,
        }
        for t in sorted(outcome.study.trials, key=lambda t: t.number)
    ]


def main() -> list[str]:
    setup_torch()
    print(
        f"P3 setup: {N_TRIALS} trials x {MAX_STEPS} steps (eval every {EVAL_STEPS}), random sampler, "
        f"none vs {PRUNER} pruner, builtin model; {load_avg()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-p3-") as tmp:
        full = run(tmp, "p3-unpruned", "none")
        pruned = run(tmp, "p3-pruned", PRUNER)
    if [t["params"] for t in full] != [t["params"] for t in pruned]:
        print("P3 warning: the two sweeps sampled different params")
    done = [t["value"] for t in full if t["state"] == "COMPLETE" and t["value"] is not None]
    total = sum(t["steps"] for t in full)
    for label, trials in (("unpruned", full), (PRUNER, pruned)):
        print(
            f"  {label:>8}: "
            + " ".join(
                f"{t['state'][0]}:{t['steps']}" + (f"/{t['value']:.4f}" if t["value"] is not None else "")
                for t in trials
            )
            + f"  total {sum(t['steps'] for t in trials)} steps"
        )
    if not done:
        line = "P3 pruned_steps_to_near_best=nan% target<=50% MISS  # the unpruned sweep completed no trial"
        print(line)
        return [line]
    best = min(done)
    goal = best * (1 + TOLERANCE)
    spent = steps_to_reach(pruned, goal)
    reason = ""
    if spent is None:
        spent = sum(t["steps"] for t in pruned)
        reason = f"the pruned sweep never got within 2% of {best:.4f} (share shown is its whole budget)"
    share = 100.0 * spent / total
    print(
        f"P3 unpruned best eval_loss {best:.4f}; pruned sweep within 2% after {spent}/{total} steps "
        f"(whole pruned sweep: {sum(t['steps'] for t in pruned)} steps); {load_avg()}"
    )
    line = result_line(
        "P3", "pruned_steps_to_near_best", share, "%", TARGET, higher_is_better=False, reason=reason
    )
    if reason and "PASS" in line:
        line = line.replace(" PASS", " MISS") + f"  # {reason}"
    print(line)
    return [line]


if __name__ == "__main__":
    main()
