"""P6: trials per hour with `sweep run --workers 2` against one worker using both cores, and the SQLite
storage's cost per trial with 1, 2 and 4 workers.

Throughput: the default sweep file on the builtin model (real 4-bit QLoRA), pruning and early stopping off,
the same N_TRIALS configs in both runs (drawn once, enqueued into each study before it runs, so the
sampler decides nothing). Side by side in this run: `sweep run FILE` with OMP_NUM_THREADS=2 (one process,
torch on both cores), then `sweep run FILE --workers 2` (two processes, one thread each). Each is timed as
a user sees it, from the command's start to its exit, model loading included.
ratio = wall(1 worker, 2 threads) / wall(2 workers) = throughput(2 workers) / throughput(1 worker).

Storage overhead: W processes run `run_sweep` on one SQLite study with an instant recipe (one eval, no
training), so all of a trial's time is the harness's bookkeeping and the storage (random sampler: the
sampler's share is P7's). Printed per worker count: wall x W / trials = the time one worker spends per
trial, and the study's trials per second.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, load_avg, result_line, sweep_command, sweep_config

TARGET = 1.6
N_TRIALS = 4
BUDGET = [
    "budget.max_steps=12",
    "budget.eval_steps=6",
    "early_stopping.patience=0",
    "early_terminate.type=none",
    "evaluation.samples=8",
    "dataset.max_eval_rows=32",
]
STORAGE_WORKERS = (1, 2, 4)
STORAGE_TRIALS_PER_WORKER = 60


def drawn_params(n: int) -> list[dict[str, Any]]:
    """n configs from the sweep's search space, drawn once with a fixed seed."""
    import optuna

    from harness.study import space as search_space

    cfg = sweep_config(tempfile.gettempdir(), "name=p6-draw")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [search_space.suggest(study.ask(), cfg.parameters) for _ in range(n)]
    # A fixed batch: the ratio is about workers, not about which batch sizes the draw happened to pick.
    return [{**p, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1} for p in drawn]


def enqueue(results: Path, name: str, params: list[dict[str, Any]]) -> None:
    from harness.study import resume
    from harness.study import storage as st

    cfg = sweep_config(results, f"name={name}", f"budget.n_trials={len(params)}", *BUDGET)
    url = st.storage_url(cfg)
    study = resume.open_study(cfg, st.open_storage(url), url)
    for p in params:
        study.enqueue_trial(p)


def timed_run(results: Path, name: str, extra: list[str], threads: int) -> float:
    cmd = [*sweep_command(results), f"name={name}", f"budget.n_trials={N_TRIALS}", *BUDGET, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):  # 1: an `expect:` line missed at this tiny budget; the trials ran
        raise RuntimeError(
            f"{' '.join(extra) or 'one worker'} exited {out.returncode}:\n{out.stdout[-3000:]}"
        )
    return wall


def completed(results: Path, name: str) -> list[tuple]:
    import optuna

    from harness.core import trialdir

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{trialdir.study_db(results / name)}")
    return sorted(tuple(sorted(t.params.items())) for t in study.trials if t.state.name == "COMPLETE")


# ----------------------------------------------------------------------------------------------------
# Storage overhead


def instant(spec: Any, on_eval: Any) -> Any:
    from harness.core.spec import TrialResult

    on_eval(1, {"eval_loss": 1.0})
    return TrialResult(1.0, {"eval_loss": 1.0}, 1, 1, 0.0, [{"step": 1, "eval_loss": 1.0}])


def storage_worker(results: str, total: int) -> None:
    import io

    from rich.console import Console

    from harness.study.run import run_sweep

    cfg = sweep_config(results, "name=p6-storage", f"budget.n_trials={total}", "method=random", *BUDGET)
    run_sweep(cfg, recipe=instant, console=Console(file=io.StringIO()))


def storage_overhead(workers: int) -> tuple[float, float, int]:
    """(ms a worker spends per trial, trials per second, trials) for `workers` processes on one study."""
    import optuna

    from harness.core import trialdir

    total = workers * STORAGE_TRIALS_PER_WORKER
    with tempfile.TemporaryDirectory(prefix="bench-p6s-") as tmp:
        storage_worker(tmp, 1)  # the study and its schema exist before the clock starts
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=storage_worker, args=(tmp, total + 1)) for _ in range(workers)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        db = trialdir.study_db(Path(tmp) / "p6-storage")
        study = optuna.load_study(study_name="p6-storage", storage=f"sqlite:///{db}")
        n = len(study.trials) - 1
    # Process start (imports) is paid once per worker, not per trial: measured and taken off.
    return 1000.0 * (wall - STARTUP_S[0]) * workers / n, n / (wall - STARTUP_S[0]), n


STARTUP_S = [0.0]


def startup_seconds() -> float:
    """One worker process that runs no trial: imports and opening the study, the per-process cost."""
    with tempfile.TemporaryDirectory(prefix="bench-p6s0-") as tmp:
        storage_worker(tmp, 1)
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=storage_worker, args=(tmp, 1))
        t0 = time.perf_counter()
        p.start()
        p.join()
        return time.perf_counter() - t0


def main() -> list[str]:
    print(f"P6 setup: {N_TRIALS} trials x 12 steps (batch 8), same params in both runs; {load_avg()}")
    params = drawn_params(N_TRIALS)
    with tempfile.TemporaryDirectory(prefix="bench-p6-") as tmp:
        results = Path(tmp)
        enqueue(results, "p6-one", params)
        enqueue(results, "p6-two", params)
        one = timed_run(results, "p6-one", [], threads=2)
        two = timed_run(results, "p6-two", ["--workers", "2"], threads=2)
        same = completed(results, "p6-one") == completed(results, "p6-two")
    print(
        f"P6 1 worker x 2 threads: {one:.1f}s ({3600 * N_TRIALS / one:.0f} trials/h); "
        f"--workers 2 x 1 thread: {two:.1f}s ({3600 * N_TRIALS / two:.0f} trials/h); "
        f"same {N_TRIALS} configs completed: {same}; {load_avg()}"
    )
    ratio = one / two
    reason = "" if same else "the two runs did not complete the same configs"
    line = result_line(
        "P6", "workers_throughput_ratio", ratio, "x", TARGET, True, reason or "see the walls above"
    )
    if not same:
        line = line.replace(" PASS", " MISS") + f"  # {reason}"

    STARTUP_S[0] = startup_seconds()
    figures = []
    for w in STORAGE_WORKERS:
        ms, rate, n = storage_overhead(w)
        figures.append(f"{w} worker(s) {ms:.0f} ms/trial per worker, {rate:.0f} trials/s ({n} trials)")
    print(
        "P6 SQLite storage overhead (instant recipe, random sampler, process start "
        f"{STARTUP_S[0]:.1f}s taken off): " + "; ".join(figures) + f"; {load_avg()}"
    )
    print(line)
    return [line]


if __name__ == "__main__":
    main()
