"""Many workers on one study: real `sweep run` subprocesses (fake recipe via `--recipe`), on every storage
backend of the `storage` fixture (SQLite, journal file, a real PostgreSQL server the suite starts)."""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pg
import pytest
from helpers import ROOT, SWEEP, FakeRecipe, fake_recipe, sweep
from optuna.trial import TrialState
from rich.console import Console

from harness.errors import HarnessError
from harness.results import status
from harness.results import view as studyview
from harness.study import failures, rdb, resume, sampler, workers
from harness.study import storage as st
from harness.study.run import run_sweep

N = 6
# 3 evals a trial; no task baselines to measure; no pruning (these tests are about workers, not pruners)
FAST = ["budget.max_steps=60", "evaluation.samples=0", "early_terminate.type=none"]


def command(tmp_path, storage: str | None, *extra: str, recipe: str = "parallel_recipe") -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(SWEEP), f"results_dir={tmp_path}", *FAST]
    cmd += [f"budget.n_trials={N}", "--recipe", f"helpers:{recipe}", *extra]
    return cmd + (["--storage", storage] if storage else [])


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # `helpers` for --recipe
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def load(tmp_path, storage: str | None) -> optuna.Study:
    return st.load_readonly(storage or f"sqlite:///{tmp_path}/pricer/study.db", "pricer")


def check_whole(study: optuna.Study, n: int = N) -> list[optuna.trial.FrozenTrial]:
    """Exactly n counted trials, nothing RUNNING or WAITING, no config trained twice (retries aside)."""
    trials = study.get_trials()
    counted = [t for t in trials if failures.counts(t)]
    assert len(counted) == n, [(t.number, t.state.name) for t in trials]
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    fresh = [t for t in counted if "retry_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh), "duplicated params"
    return counted


# ----------------------------------------------------------------------------------------------------
# The checks: two `sweep run`s at once, `--workers 2`, a SIGKILLed worker


def test_two_sweep_runs_started_together_share_one_study(tmp_path, storage):
    procs = [start(command(tmp_path, storage)) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert not any("Traceback" in o or "locked" in o for o in outs)
    counted = check_whole(load(tmp_path, storage))
    pids = {t.user_attrs["pid"] for t in counted}
    assert pids == {p.pid for p in procs}  # both took part (the recipe's rendezvous), two distinct pids
    assert all(t.user_attrs["device"] == "cpu×1" for t in counted)
    assert all(pg.PASSWORD not in o for o in outs)  # the PostgreSQL URL's password is masked


def test_workers_2_runs_the_study_in_one_command(tmp_path, storage):
    proc = start(command(tmp_path, storage, "--workers", "2"))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-4000:]
    counted = check_whole(load(tmp_path, storage))
    assert len({t.user_attrs["pid"] for t in counted}) == 2 and proc.pid not in {
        t.user_attrs["pid"] for t in counted
    }
    assert "w0 " in out and "w1 " in out and f"[{N}/{N}]" in out  # one display, the study's counter
    assert out.count("1 passed, 0 failed") == 1 and out.count("PASS eval_loss") == 1  # judged once
    assert pg.PASSWORD not in out


@pytest.fixture(params=["sqlite", "postgresql", pytest.param("journal", marks=pytest.mark.slow)])
def kill_storage(request, tmp_path) -> str | None:
    """The `storage` backends for the kill test. The journal is slow there: a worker killed while holding
    the journal file's lock leaves it to Optuna's stale-lock grace period (30 s) before others write."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres").new_database()
    return None if request.param == "sqlite" else f"journal:{tmp_path}/studies/journal.log"


def test_sigkill_one_of_two_workers_mid_trial_then_rerun_completes(tmp_path, kill_storage):
    storage = kill_storage
    survivor, victim = (start(command(tmp_path, storage, recipe="slow_recipe")) for _ in range(2))
    assert victim.stdout is not None
    for line in victim.stdout:
        if " step " in line:  # the victim is training a trial: kill it there
            victim.send_signal(signal.SIGKILL)
            break
    victim.wait(timeout=60)
    out = survivor.communicate(timeout=300)[0]
    assert victim.returncode == -signal.SIGKILL and survivor.returncode == 0, out[-3000:]
    study = load(tmp_path, storage)
    dead = [t for t in study.trials if t.user_attrs.get("pid") == victim.pid and not failures.counts(t)]
    assert len(dead) == 1 and dead[0].user_attrs["fail_reason"] == failures.INTERRUPTED
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == dead[0].number]
    assert len(retries) == 1, "one retry, never two"
    assert retries[0].params == dead[0].params and retries[0].user_attrs["pid"] == survivor.pid
    before = {t.number: (t.params, t.values) for t in check_whole(study)}

    again = start(command(tmp_path, storage, recipe="fake_recipe"))
    out = again.communicate(timeout=300)[0]
    assert again.returncode in (0, 1), out[-3000:]  # fake_recipe's losses may miss `expect:`: still whole
    after = check_whole(load(tmp_path, storage))
    assert {t.number: (t.params, t.values) for t in after} == before  # nothing lost, nothing added


def test_ctrl_c_stops_every_worker_and_the_rerun_completes(tmp_path):
    proc = start(command(tmp_path, None, "--workers", "2", recipe="slow_recipe"))
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " step " in line:
            proc.send_signal(signal.SIGINT)
            break
    out = "".join(seen) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted: run the same command again to resume" in out and "Traceback" not in out
    study = load(tmp_path, None)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # every worker re-queued its trial
    interrupted = [t for t in study.trials if t.user_attrs.get("fail_reason") == failures.INTERRUPTED]
    assert interrupted and len(study.get_trials(states=(TrialState.WAITING,))) == len(interrupted)
    again = start(command(tmp_path, None, "--workers", "2"))
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out[-3000:]
    check_whole(load(tmp_path, None))


# ----------------------------------------------------------------------------------------------------
# Devices, exit codes, the combined display


def test_one_gpu_per_worker_and_the_cores_split():
    envs = workers.worker_envs(2, ["0", "1", "2", "3"], cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"8"}
    big = workers.worker_envs(2, ["4", "5", "6", "7"], cores=16, gpus_per_worker=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in big] == ["4,5", "6,7"]  # the ids this process was given
    cpu = workers.worker_envs(3, [], cores=2)
    assert all("CUDA_VISIBLE_DEVICES" not in e and e["OMP_NUM_THREADS"] == "1" for e in cpu)
    assert workers.device_text(big[1]) == "cuda:6,7" and workers.device_text(cpu[0]) == "cpu×1"


def test_impossible_device_plans_are_user_errors():
    with pytest.raises(HarnessError, match="needs 6 GPUs; this machine has 4"):
        workers.worker_envs(3, ["0", "1", "2", "3"], cores=8, gpus_per_worker=2)
    with pytest.raises(HarnessError, match="shows no GPU"):
        workers.worker_envs(2, [], cores=8, gpus_per_worker=1)
    with pytest.raises(HarnessError, match="give 1 or more"):
        workers.worker_envs(0, [], cores=8)


def test_visible_gpus_follow_cuda_visible_devices():
    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_bad_worker_options_exit_2_with_one_line(tmp_path):
    no_gpu = {**env(), "CUDA_VISIBLE_DEVICES": ""}
    for extra, why in (
        (["--workers", "0"], "--workers 0"),
        (["--workers", "2", "--gpus-per-worker", "1"], "no GPU"),
    ):
        out = subprocess.run(
            command(tmp_path, None, *extra), cwd=ROOT, env=no_gpu, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pricer" / "study.db").exists()  # bad input writes nothing


def test_combined_exit_code_and_reasons():
    assert workers.combined_exit([0, 0]) == ("passed", "")
    assert workers.combined_exit([0, 2])[0] == "error"
    status_, why = workers.combined_exit([0, -signal.SIGKILL])
    assert status_ == "failed" and "w1 was killed (SIGKILL)" in why
    assert "w0 was interrupted" in workers.combined_exit([143, 0])[1]


def test_output_tags_lines_counts_the_study_and_prints_errors_once():
    buf, errs = io.StringIO(), io.StringIO()
    out = workers.Output(Console(file=buf, width=200), Console(file=errs, width=200), finished=2, total=8)
    out.line(1, "trial   5 [1/8] step   20/60  eval_loss 1.5  best -")
    out.line(0, "trial   4 [1/8] done  eval_loss 1.1 at step 60/60  0.0s")
    out.line(0, "error: bad file")
    out.line(1, "error: bad file")
    assert buf.getvalue().splitlines() == [
        "w1 trial   5 step   20/60  eval_loss 1.5  best -",
        "w0 trial   4 [3/8] done  eval_loss 1.1 at step 60/60  0.0s",
    ]
    assert errs.getvalue() == "error: bad file\n"


# ----------------------------------------------------------------------------------------------------
# The pieces: sampler seeds, budget, stale checks, SQLite settings, status/report


def test_per_trial_seeds_keep_workers_apart_and_one_worker_reproducible(tmp_path):
    cfg = sweep(tmp_path, "method=random")
    storage = optuna.storages.InMemoryStorage()
    a = resume.open_study(cfg, storage, "memory")
    b = resume.open_study(cfg, storage, "memory")  # a second worker, same seed, same moment
    ta, tb = a.ask(), b.ask()
    from harness.study import space as search_space

    pa, pb = search_space.suggest(ta, cfg.parameters), search_space.suggest(tb, cfg.parameters)
    assert pa != pb
    again = resume.open_study(sweep(tmp_path / "x", "method=random"), optuna.storages.InMemoryStorage(), "m")
    assert search_space.suggest(again.ask(), cfg.parameters) == pa  # trial 0 of this seed: same params


def test_tpe_lies_about_running_trials(tmp_path):
    tpe = sampler.make_sampler(sweep(tmp_path))
    assert tpe.inner._constant_liar is True


def test_the_budget_counts_every_workers_trials(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=3")
    study = run_sweep(cfg, recipe=fake_recipe).study
    budget = failures.SharedBudget(3)
    assert budget.spent(study) and budget.over(study) == 0
    assert not failures.SharedBudget(4).spent(study)
    other = study.ask()  # another worker's running trial fills the 4th slot
    other.set_user_attr("pid", os.getpid())
    assert failures.SharedBudget(4).spent(study)
    study.enqueue_trial(study.trials[0].params)  # an owed retry is run even so
    assert not failures.SharedBudget(4).spent(study)


def test_one_over_the_budget_is_said(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=2")
    run_sweep(cfg, recipe=fake_recipe)
    study = load(tmp_path, None)
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))  # a late worker's
    buf = io.StringIO()
    run_sweep(cfg, recipe=fake_recipe, console=Console(file=buf, width=300))
    assert failures.SharedBudget(2).over(load(tmp_path, None)) == 1
    assert "running up to 0 more" in buf.getvalue()


def test_journal_heartbeat_marks_a_silent_trial_stale_from_any_host(tmp_path):
    now = time.time()
    trial = optuna.trial.create_trial(state=TrialState.RUNNING, params={}, distributions={})
    trial.datetime_start = dt.datetime.now()
    trial.user_attrs = {"pid": 1, "host": "elsewhere", "heartbeat": now - failures.GRACE_S - 1}
    assert failures.is_stale(trial, now)
    trial.user_attrs["heartbeat"] = now - 5
    assert not failures.is_stale(trial, now)  # another host, beating: alive


def test_the_heartbeat_thread_writes_to_the_journal(tmp_path):
    study = optuna.create_study(storage=st.open_storage(f"journal:{tmp_path}/j.log"))
    trial = study.ask()
    with failures.heartbeat(trial, interval=0.01):
        while "heartbeat" not in study.trials[0].user_attrs:
            time.sleep(0.01)
    assert study.trials[0].user_attrs["heartbeat"] <= time.time()


def test_a_trial_that_never_said_who_runs_it_is_stale_only_when_old():
    trial = optuna.trial.create_trial(state=TrialState.RUNNING, params={}, distributions={})
    trial.datetime_start = dt.datetime.now()
    assert not failures.is_stale(trial)  # a live worker may be about to write its pid
    trial.datetime_start -= dt.timedelta(seconds=failures.OWNERLESS_S + 1)
    assert failures.is_stale(trial)


def test_sqlite_writers_wait_for_the_lock(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    assert rdb.sqlite_busy_timeout(st.open_storage(url)) == rdb.BUSY_TIMEOUT_S
    assert rdb.is_transient(RuntimeError("(sqlite3.OperationalError) database is locked"))
    assert not rdb.is_transient(RuntimeError("password authentication failed"))


def test_status_and_report_show_who_runs_each_trial(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=2")
    run_sweep(cfg, recipe=FakeRecipe())
    study = load(tmp_path, None)
    live = study.ask()
    for k, v in {**failures.owner(), "device": "cuda:3"}.items():
        live.set_user_attr(k, v)
    lines = status.status_lines(load(tmp_path, None), "sqlite:///x")
    me = f"{socket.gethostname()}:{os.getpid()} (cuda:3)"
    assert "running: trial 2  no eval yet" in "\n".join(lines) and f"  workers: 1 live: {me}" in lines
    frame = studyview.trials_frame(load(tmp_path, None))
    assert list(frame.columns[-2:]) == ["worker", "fail_reason"]
    assert frame["worker"].iloc[2] == me and frame["worker"].iloc[0].endswith("(cpu×1)")


def test_a_retry_whose_checkpoint_is_out_of_reach_trains_from_step_0_and_says_so(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=1")
    url = st.storage_url(cfg)
    study = resume.open_study(cfg, st.open_storage(url), url)
    elsewhere = str(tmp_path / "other-host" / "trial-0000" / "checkpoint")  # never written here
    study.enqueue_trial({"learning_rate": 1e-3}, user_attrs={"retry_of": 0, "resume_from": elsewhere})
    recipe = FakeRecipe()
    seen = []
    run_sweep(cfg, recipe=lambda spec, on_eval: seen.append(spec.resume_from) or recipe(spec, on_eval))
    trial = load(tmp_path, None).trials[0]
    assert seen == [None] and "not reachable here: trained from step 0" in trial.user_attrs["restarted"]
