"""Fault injection: run the default sweep (tiny budgets, real QLoRA recipe) in a subprocess, SIGKILL it at
chosen moments, re-run the same command until the study is done, and check nothing was lost.

    .venv/bin/python scripts/fault_inject.py [--kills 10] [--trials 6] [--seed 0] [--keep DIR]

A kill moment is an event the run is seen to reach, never a delay, so a plan kills at the same points on a
fast machine and on a loaded one:

    start       a trial printed its start line (base model loaded, nothing evaluated yet)
    eval        a trial printed an eval line (its checkpoint for that step is about to be written)
    checkpoint  a trial's checkpoint/loop.json appeared: a complete checkpoint a retry can resume from
    done        a trial printed its done line (the study is recording it and setting up the next one)

each with the n-th occurrence in that run (`--seed` picks the plan). A run that ends before its moment
comes means the study is done. Prints kills, trials, retried trials, retries resumed from a checkpoint, and
wall time. The checks (no COMPLETE trial lost or changed, no RUNNING/WAITING trial left, exactly n_trials
COMPLETE+PRUNED, retries with the interrupted trial's params) are the ones tests/test_crash.py makes with
3 kills: it imports `kill_and_resume` from here (this script never imports the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "sweeps/pricer.yaml"
# Seconds per trial on the builtin model: 3 evals, 2 checkpoints (none at the last step) per trial.
BUDGET = [
    "budget.max_steps=12",
    "budget.eval_steps=4",
    "dataset.max_eval_rows=32",
    "dataset.max_train_rows=400",
    "evaluation.samples=4",
    "early_terminate.type=none",
    "early_stopping.patience=0",
]
EVENTS = ("start", "eval", "checkpoint", "done")
# runner.ProgressPrinter's lines: "trial   0 [1/3] start  r=8 ..", ".. step    4/12  eval_loss ..", ".. done"
LINE = re.compile(r"^trial\s+\d+ \[\d+/\d+\] (start|step|done)\b")
WORD = {"start": "start", "eval": "step", "done": "done"}
POLL_S = 0.02
TIMEOUT_S = 900.0  # a safety net against a run that hangs, never what decides when to kill


@dataclass(frozen=True)
class Moment:
    """Kill at the `nth` `event` (one of EVENTS) seen in one run."""

    event: str
    nth: int = 1

    def __post_init__(self) -> None:
        if self.event not in EVENTS or self.nth < 1:
            raise ValueError(f"a moment is one of {', '.join(EVENTS)} with nth >= 1, not {self}")

    def __str__(self) -> str:
        return f"{self.event}#{self.nth}"


def random_plan(rng: random.Random, kills: int) -> list[Moment]:
    return [Moment(rng.choice(EVENTS), rng.randint(1, 2)) for _ in range(kills)]


def sweep_command(folder: Path, n_trials: int) -> list[str]:
    """`sweep run sweeps/pricer.yaml` with BUDGET, results under `folder` (SQLite study there)."""
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(SWEEP),
        f"results_dir={folder}",
        *BUDGET,
        f"budget.n_trials={n_trials}",
    ]


def child_env() -> dict[str, str]:
    # Unbuffered: each progress line reaches the pipe as it is printed, so a kill lands right after it.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def check(ok: bool, why: str) -> None:
    if not ok:
        raise AssertionError(why)


def _checkpoints(study_dir: Path) -> set[tuple[str, int, int]]:
    """Every complete checkpoint now, by file identity: a checkpoint rewritten at a later step is new."""
    out = set()
    for loop in study_dir.glob("trial-*/checkpoint/loop.json"):
        try:
            st = loop.stat()
        except FileNotFoundError:  # swapped out between glob and stat
            continue
        out.add((str(loop), st.st_ino, st.st_mtime_ns))
    return out


def _drain(lines: queue.Queue[str | None], wait: float) -> list[str | None]:
    """What the reader has queued: waits up to `wait` for the first line, takes the rest as they are."""
    try:
        out = [lines.get(timeout=wait)]
    except queue.Empty:
        return []
    while True:
        try:
            out.append(lines.get_nowait())
        except queue.Empty:
            return out


def run_until(cmd: list[str], study_dir: Path, moment: Moment, timeout: float = TIMEOUT_S):
    """Run `cmd`; SIGKILL it as soon as `moment` is observed. Returns (None when it was killed, else its
    exit code, -1 if it printed a traceback; the output's last lines)."""
    seen = _checkpoints(study_dir)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # a thread, so the main loop can watch the results folder while output flows
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=40)
    count, ended, traceback = 0, False, False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for line in _drain(lines, POLL_S):
                if line is None:
                    ended = True
                    break
                tail.append(line.rstrip("\n"))
                traceback = traceback or line.startswith("Traceback")
                m = LINE.match(line)
                count += bool(m and m.group(1) == WORD.get(moment.event))
            if moment.event == "checkpoint":
                new = _checkpoints(study_dir) - seen
                count, seen = count + len(new), seen | new
            if count >= moment.nth:
                proc.send_signal(signal.SIGKILL)
                code = proc.wait()
                return (None if code == -signal.SIGKILL else code), list(tail)  # (or it had just ended)
            if ended:
                code = proc.wait()
                return (-1 if traceback else code), list(tail)  # exit 1 is also what a traceback gives
        raise AssertionError(f"no {moment} within {timeout:.0f}s; last output:\n" + "\n".join(tail))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


def _complete(db: str) -> dict[int, tuple]:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="pricer", storage=db)
    return {t.number: (t.params, t.values) for t in study.trials if t.state == TrialState.COMPLETE}


def kill_and_resume(folder: Path, n_trials: int, plan: Sequence[Moment], timeout: float = TIMEOUT_S) -> dict:
    """Run the sweep, SIGKILL it at each moment of `plan` in turn (one run per moment), then run it to
    completion. Checks after every run that no COMPLETE trial changed or vanished, and at the end that the
    study is whole. Returns the figures `main` prints."""
    import optuna
    from optuna.trial import TrialState

    cmd, db = sweep_command(folder, n_trials), f"sqlite:///{folder}/pricer/study.db"
    study_dir = Path(folder) / "pricer"
    complete: dict[int, tuple] = {}
    kills: list[str] = []
    start = time.perf_counter()
    for moment in plan:
        code, tail = run_until(cmd, study_dir, moment, timeout)
        # 1: an expectation failed (tiny budgets); anything else is a crash
        check(code in (None, 0, 1), "the run crashed:\n" + "\n".join(tail))
        if code is None:
            kills.append(str(moment))
        if (study_dir / "study.db").exists():
            now = _complete(db)
            check({n: now.get(n) for n in complete} == complete, "a COMPLETE trial changed or vanished")
            complete = now
        if code is not None:
            break  # the study finished before this moment came
    final = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
    crashed = final.returncode not in (0, 1) or "Traceback" in final.stderr
    check(not crashed, f"the final run crashed (exit {final.returncode}):\n{final.stderr[-2000:]}")
    study = optuna.load_study(study_name="pricer", storage=db)
    trials = study.trials
    counted = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    check(counted == n_trials, f"{counted} COMPLETE+PRUNED trials, expected n_trials={n_trials}")
    left = study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    check(not left, f"trial(s) {[t.number for t in left]} left RUNNING or WAITING")
    kept = {n: (trials[n].params, trials[n].values) for n in complete}
    check(kept == complete, "a COMPLETE trial changed or vanished in the final run")
    retried = [t for t in trials if "retry_of" in t.user_attrs]
    for t in retried:  # every retry ran the interrupted trial's exact params
        check(t.params == trials[t.user_attrs["retry_of"]].params, f"retry {t.number} changed the params")
    return {
        "kills": len(kills),
        "moments": kills,
        "trials": len(trials),
        "counted": counted,
        "retried": len(retried),
        "resumed_from_checkpoint": sum(1 for t in retried if t.user_attrs.get("resume_from")),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="picks the kill moments")
    p.add_argument("--keep", help="results folder to keep (default: a temporary one)")
    a = p.parse_args()
    plan = random_plan(random.Random(a.seed), a.kills)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.keep) if a.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        figures = kill_and_resume(folder, a.trials, plan)
    print(json.dumps(figures))
    print(
        f"{figures['kills']} kills ({', '.join(figures['moments'])}); {figures['trials']} trials in the "
        f"study, {figures['counted']} COMPLETE+PRUNED (n_trials={a.trials}); {figures['retried']} retried, "
        f"{figures['resumed_from_checkpoint']} resumed from a checkpoint; {figures['wall_s']}s wall time; "
        "all checks passed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
