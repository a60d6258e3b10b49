"""P5 (sampler): Optuna sampler + storage overhead per trial at 1,000 trials, through harness's own code.

harness.study.open_storage / open_study on a SQLite file in a temp dir (the default storage kind), the
default sweep file's sampler (TPE) and search space (search_spaces/qlora.yaml), search_space.suggest in
each trial, and the bookkeeping a real trial writes: one trial.report + should_prune per eval (the sweep
file's median pruner) and the user attrs objective.record sets. The objective itself does no work, so the
time per trial is all sampler + storage; it grows with the study, so the mean over 1,000 is printed, with
the mean of the last 100.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_avg, result_line, sweep_config

TARGET_MS = 50.0
N_TRIALS = 1000
EVALS_PER_TRIAL = 6
STORAGE_ONLY_TRIALS = 200


def main() -> list[str]:
    import warnings

    import optuna

    from harness import search_space
    from harness import study as st
    from harness.objective import record
    from harness.spec import TrialResult

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with tempfile.TemporaryDirectory(prefix="bench-p5s-") as tmp:
        cfg = sweep_config(tmp, "name=p5-sampler", f"budget.n_trials={N_TRIALS}")
        url = st.storage_url(cfg)
        study = st.open_study(cfg, st.open_storage(url), url)
        stamps: list[float] = []

        def objective(trial: optuna.Trial) -> float:
            params = search_space.suggest(trial, cfg.parameters)
            # a smooth function of the params, so TPE has a real landscape to model
            value = abs(math.log10(params["learning_rate"]) + 3) + params["lora_dropout"] + 1 / params["r"]
            for i in range(1, EVALS_PER_TRIAL + 1):
                trial.report(value + 1 / i, i * cfg.budget.eval_steps)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            record(
                trial,
                TrialResult(
                    value=value, metrics={"eval_loss": value}, best_step=1, steps_run=1, duration_s=0.0
                ),
            )
            return value

        def stamp(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        study.optimize(objective, n_trials=N_TRIALS, callbacks=[stamp])
        wall = time.perf_counter() - t0
        # Diagnostic: the same trials with the random sampler and no pruner = the storage's share.
        plain = sweep_config(tmp, "name=p5-storage", "method=random", "early_terminate.type=none")
        url2 = st.storage_url(plain)
        study2 = st.open_study(plain, st.open_storage(url2), url2)
        t1 = time.perf_counter()
        study2.optimize(objective, n_trials=STORAGE_ONLY_TRIALS)
        storage_ms = 1000 * (time.perf_counter() - t1) / STORAGE_ONLY_TRIALS
    per_trial = 1000 * wall / N_TRIALS
    last = 1000 * (stamps[-1] - stamps[-101]) / 100 if len(stamps) > 100 else per_trial
    print(
        f"P5 sampler: {N_TRIALS} trials in {wall:.1f}s (TPE, SQLite, {len(cfg.parameters)} params); "
        f"last 100: {last:.1f} ms/trial; random sampler + no pruner (storage alone): "
        f"{storage_ms:.1f} ms/trial; "
        f"{load_avg()}"
    )
    line = result_line(
        "P5",
        "sampler_storage_ms_per_trial",
        per_trial,
        "ms",
        TARGET_MS,
        higher_is_better=False,
        reason=(
            f"storage alone (random sampler, no pruner) is {storage_ms:.0f} ms/trial: a SQLite commit per "
            "trial.report / set_user_attr"
        ),
    )
    print(line)
    return [line]


if __name__ == "__main__":
    main()
