"""P7: Optuna sampler + storage time per trial at 1,000 trials, through harness's own code.

harness.study.storage.open_storage / open_study (SQLite in WAL mode with harness's busy timeout, the default
storage; then Optuna's file journal; then PostgreSQL where a server is at hand: BENCH_POSTGRES_URL, or one
tests/pg.py can start), the default sweep file's sampler (TPE) and search space (9 params), and the
bookkeeping a real trial does: search_space.suggest, one trial.report + should_prune per eval (the sweep
file's pruner), and at its end objective.record with a CPU trial's memory figures (one storage call
for all of them, rdb.set_user_attrs). The objective itself does no work, so the time per trial is all
sampler + storage; it grows with the study, so the mean over 1,000 is the figure, and the last 100 are
printed beside it. The target is for SQLite; the other storages are printed for comparison.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, load_avg, result_line, sweep_config

TARGET_MS = 20.0
N_TRIALS = 1000
EVALS_PER_TRIAL = 6


def run(storage: str | None, tmp: str, n_trials: int = N_TRIALS) -> tuple[float, float]:
    """(mean ms per trial, mean ms per trial over the last 100) for n_trials on one storage."""
    import optuna

    from harness.core import attrs
    from harness.core.spec import TrialResult
    from harness.study import resume
    from harness.study import space as search_space
    from harness.study import storage as st
    from harness.study.objective import record

    cfg = sweep_config(tmp, "name=p7-sampler", f"budget.n_trials={n_trials}")
    url = st.storage_url(cfg, storage)
    study = resume.open_study(cfg, st.open_storage(url), url)
    stamps: list[float] = []
    # What a CPU trial's ResourceMonitor measured (objective.record writes the measured ones).
    resources = {
        attrs.PEAK_RSS_MB: 812.4,
        attrs.RSS_MB: 640.2,
        attrs.CUDA_PEAK_ALLOCATED_MB: None,
        attrs.CUDA_UTIL: None,
    }

    def objective(trial: optuna.Trial) -> float:
        params = search_space.suggest(trial, cfg.parameters)
        # a smooth function of the params, so TPE has a real landscape to model
        value = abs(math.log10(params["learning_rate"]) + 2.5) + params["lora_dropout"] + 1 / params["r"]
        for i in range(1, EVALS_PER_TRIAL + 1):
            trial.report(value + 1 / i, i * cfg.budget.eval_steps)
            if trial.should_prune():
                raise optuna.TrialPruned()
        metrics = {"eval_loss": value, "perplexity": math.exp(value)}
        result = TrialResult(value=value, metrics=metrics, best_step=1, steps_run=1, duration_s=0.0)
        record(trial, result, resources)
        return value

    def stamp(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, callbacks=[stamp])
    wall = time.perf_counter() - t0
    last = 1000 * (stamps[-1] - stamps[-101]) / 100 if len(stamps) > 100 else 1000 * wall / n_trials
    return 1000 * wall / n_trials, last


@contextmanager
def postgres_url() -> Iterator[str | None]:
    """BENCH_POSTGRES_URL, or a throwaway server from tests/pg.py where one can be started, or None."""
    url = os.environ.get("BENCH_POSTGRES_URL")
    if url:
        yield url
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pg  # type: ignore[import-not-found]
    except ImportError:
        yield None
        return
    if pg.available() is not None:
        yield None
        return
    with pg.Server() as server:
        yield server.new_database()


def main() -> list[str]:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rows = []
    pruner = sweep_config(tempfile.gettempdir()).early_terminate.type
    with tempfile.TemporaryDirectory(prefix="bench-p7-") as tmp:
        sqlite_ms, sqlite_last = run(None, str(Path(tmp) / "sqlite"))
        rows.append(f"SQLite {sqlite_ms:.1f} ms (last 100: {sqlite_last:.1f})")
        journal_ms, journal_last = run(f"journal:{tmp}/journal/study.log", str(Path(tmp) / "journal"))
        rows.append(f"journal {journal_ms:.1f} ms (last 100: {journal_last:.1f})")
        with postgres_url() as pg_url:
            if pg_url is None:
                rows.append("PostgreSQL: no server here (set BENCH_POSTGRES_URL)")
            else:
                pg_ms, pg_last = run(pg_url, str(Path(tmp) / "pg"))
                rows.append(f"PostgreSQL {pg_ms:.1f} ms (last 100: {pg_last:.1f})")
    what = f"TPE, 9 params, {pruner} pruner"
    print(f"P7 ms per trial over {N_TRIALS} trials ({what}): " + "; ".join(rows))
    print(f"P7 {load_avg()}")
    line = result_line(
        "P7",
        "sampler_storage_ms_per_trial",
        sqlite_ms,
        "ms",
        TARGET_MS,
        higher_is_better=False,
        # The journal runs the same sampler, pruner and trials: its time bounds what TPE itself costs, the
        # rest of SQLite's is the RDB storage reading trials back (Optuna re-reads them per suggest/prune).
        reason=(
            f"last 100 trials {sqlite_last:.0f} ms each; the same trials on the journal take "
            f"{journal_ms:.0f} ms, so {max(sqlite_ms - journal_ms, 0):.0f} ms is SQLite storage round trips, "
            "not TPE"
        ),
    )
    print(line)
    return [line]


if __name__ == "__main__":
    main()
