"""Kills, interrupts and failing trials: the study always completes, nothing finished is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import optuna
import pytest
import torch
from helpers import FakeRecipe, assert_one_requeued, fake_recipe, sweep
from optuna.trial import TrialState

from harness.core import trialdir
from harness.study import failures
from harness.study.run import real_recipe, run_sweep
from scripts.fault_inject import ROOT, Moment, child_env, kill_and_resume, sweep_command


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


# ----------------------------------------------------------------------------------------------------
# Interrupts (fake recipe: milliseconds)


def test_ctrl_c_queues_the_trial_and_the_rerun_retries_it_with_the_same_params(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=4", "early_terminate.type=none")
    interrupted_at_trial_2 = FakeRecipe(fail={2: KeyboardInterrupt()})

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, recipe=interrupted_at_trial_2)
    assert interrupted_at_trial_2.calls == [0, 1, 2]  # the interrupt stops the sweep
    study = optuna.load_study(study_name="pricer", storage=f"sqlite:///{tmp_path}/pricer/study.db")
    t2 = study.trials[2]
    assert t2.state == TrialState.FAIL and t2.user_attrs["fail_reason"] == failures.INTERRUPTED
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == 2
    assert waiting[0].system_attrs["fixed_params"] == t2.params  # enqueued: the sampler is not asked
    before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}

    out = run_sweep(cfg, recipe=fake_recipe)
    trials = out.study.trials
    assert counted(out.study) == 4 and not out.study.get_trials(
        states=(TrialState.RUNNING, TrialState.WAITING)
    )
    assert {t.number: t.values for t in trials if t.number in before} == before
    retry = trials[3]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == t2.params
    assert retry.user_attrs["seed"] == t2.user_attrs["seed"]  # same seed: same random streams
    assert len(trials) == 5  # the interrupted trial did not use up the budget


def test_a_killed_trial_left_running_is_recovered_on_the_next_run(tmp_path, storage):
    """SIGKILL leaves the trial RUNNING; its process is gone, so the next run retries it."""
    cfg = sweep(tmp_path, "budget.n_trials=3", "early_terminate.type=none")
    run_sweep(
        cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"n_trials": 1})}),
        storage=storage,
        recipe=fake_recipe,
    )
    from harness.study import storage as st

    study = optuna.load_study(study_name="pricer", storage=st.open_storage(st.storage_url(cfg, storage)))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)})
    for k, v in {"pid": dead.pid, "host": failures.owner()["host"], "seed": 1234}.items():
        ghost.set_user_attr(k, v)
    params = dict(ghost.params)
    assert failures.is_stale(study.trials[-1])
    # A trial of a live process on this host is left alone.
    live = study.ask()
    for k, v in failures.owner().items():
        live.set_user_attr(k, v)
    live_frozen = study.trials[-1]
    assert not failures.is_stale(live_frozen)
    study.tell(live, state=TrialState.FAIL)  # (this process is about to run the sweep itself)

    out = run_sweep(cfg, storage=storage, recipe=fake_recipe)
    trials = out.study.trials
    assert trials[ghost.number].state == TrialState.FAIL
    assert trials[ghost.number].user_attrs["fail_reason"] == failures.INTERRUPTED
    retries = [t for t in trials if t.user_attrs.get("retry_of") == ghost.number]
    assert len(retries) == 1 and retries[0].params["learning_rate"] == params["learning_rate"]
    assert retries[0].user_attrs["seed"] == 1234
    assert not out.study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert counted(out.study) == 3


# ----------------------------------------------------------------------------------------------------
# Failures are data


def test_oom_is_retried_once_with_half_the_batch(tmp_path):
    cfg = sweep(
        tmp_path,
        "budget.n_trials=2",
        "early_terminate.type=none",
        "parameters.per_device_train_batch_size={values: [16]}",
    )
    seen: list[tuple[int, int, int]] = []

    def oom_above_8(spec, on_eval):
        t = spec.training
        seen.append((spec.number, t.per_device_train_batch_size, t.gradient_accumulation_steps))
        if t.per_device_train_batch_size > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fake_recipe(spec, on_eval)

    study = run_sweep(cfg, recipe=oom_above_8).study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    ga = cfg.training.gradient_accumulation_steps
    assert seen[:2] == [(0, 16, ga), (0, 8, 2 * ga)]
    assert study.trials[0].user_attrs["oom_retry"] == {
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2 * ga,
    }


def test_oom_twice_fails_the_trial_and_the_sweep_goes_on(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=3", "early_terminate.type=none")
    oom_on_trial_1 = FakeRecipe(fail={1: MemoryError("host out of memory")})
    study = run_sweep(cfg, recipe=oom_on_trial_1).study
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 2 and states[1] == TrialState.FAIL
    assert study.trials[1].user_attrs["fail_reason"].startswith("MemoryError: host out of memory")
    assert "oom_retry" in study.trials[1].user_attrs
    saved = trialdir.read_json(trialdir.trial_dir(cfg.study_dir, 1) / "metrics.json")
    assert saved["state"] == "FAIL" and "MemoryError" in saved["fail_reason"]


def test_a_failed_config_is_not_trained_again_and_repeated_failures_stop_the_sweep(tmp_path):
    # A one-config space: every trial samples the same params. The first fails for real, the rest are
    # skipped without training as duplicates; max_failures in a row stops the sweep (no endless loop).
    cfg = sweep(
        tmp_path,
        "budget.n_trials=20",
        "budget.max_failures=4",
        "method=random",
        "parameters={learning_rate: {values: [0.001]}}",
        "search_space=null",
    )
    runs: list[int] = []

    def always_fails(spec, on_eval):
        runs.append(spec.number)
        raise ValueError("bad config")

    out = run_sweep(cfg, recipe=always_fails)
    reasons = [t.user_attrs["fail_reason"] for t in out.study.trials]
    assert runs == [0] and out.stopped_for_failures and len(reasons) == 4
    assert reasons[0] == "ValueError: bad config"
    assert reasons[1:] == ["duplicate of failed trial 0"] * 3


# ----------------------------------------------------------------------------------------------------
# Real recipe (tiny): NaN loss, crashing custom metric, resume from checkpoint


def test_non_finite_loss_fails_the_trial_early(tiny, tmp_path, monkeypatch):
    from harness.trial.recipes import sft

    def nan_eval(model, fx, spec, generate):
        return {"eval_loss": float("nan"), "perplexity": float("nan")}, []

    monkeypatch.setattr(sft, "evaluate", nan_eval)
    cfg = tiny("budget.n_trials=1")
    study = run_sweep(cfg).study
    t = study.trials[0]
    assert t.state == TrialState.FAIL
    assert t.user_attrs["fail_reason"].startswith("non-finite loss at step 4")
    assert not (trialdir.trial_dir(cfg.study_dir, 0) / "checkpoint").exists()


def test_a_huge_learning_rate_gives_a_non_finite_training_loss(tiny, tmp_path):
    cfg = tiny(
        "budget.n_trials=1",
        "parameters={learning_rate: {values: [1.0e+30]}}",
        "search_space=null",
        "training.max_grad_norm=1.0e+30",
        "training.optim=sgd",
    )
    t = run_sweep(cfg).study.trials[0]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("non-finite loss at step")


def test_a_crashing_custom_metric_fails_that_trial_only(tiny, tmp_path, monkeypatch):
    cfg = tiny("budget.n_trials=2", "evaluation.custom=[flaky_metric:score]", "budget.max_steps=4")
    # The metric breaks once trial 1 has started (its folder exists): the base, the task baselines and
    # trial 0 are scored normally, however many times each calls it.
    second = trialdir.trial_dir(cfg.study_dir, 1)
    (tmp_path / "flaky_metric.py").write_text(
        "from pathlib import Path\n"
        "def score(predictions, references, rows):\n"
        f"    if Path({str(second)!r}).exists():\n"
        "        raise ZeroDivisionError('metric bug')\n"
        "    return {'flaky': 1.0}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    study = run_sweep(cfg).study
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["COMPLETE", "FAIL"]
    failed = study.trials[1]
    assert "ZeroDivisionError: metric bug" in failed.user_attrs["fail_reason"]
    assert study.trials[0].user_attrs["metrics"]["flaky"] == 1.0


def test_a_retried_trial_resumes_from_its_checkpoint(tiny, tmp_path):
    cfg = tiny("budget.n_trials=1", "budget.max_steps=16")
    real = real_recipe(cfg)
    evals: list[tuple[int, int]] = []

    def killed_at_step_12(spec, on_eval):
        def hook(step, metrics):
            evals.append((spec.number, step))
            if spec.number == 0 and step == 12:
                raise KeyboardInterrupt
            return on_eval(step, metrics)

        return real(spec, hook)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, recipe=killed_at_step_12)
    ckpt = trialdir.find_checkpoint(trialdir.trial_dir(cfg.study_dir, 0) / "checkpoint")
    assert ckpt is not None and trialdir.checkpoint_step(ckpt) == 8

    study = run_sweep(cfg, recipe=killed_at_step_12).study
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    assert evals == [(0, 4), (0, 8), (0, 12), (1, 12), (1, 16)]  # continues at step 12, not 4
    assert retry.user_attrs["steps_run"] == 16
    log = trialdir.read_eval_history(trialdir.trial_dir(cfg.study_dir, 1))
    assert [r["step"] for r in log] == [4, 8, 12, 16]  # history from the checkpoint, then its own
    assert (
        trialdir.find_checkpoint(trialdir.trial_dir(cfg.study_dir, 0) / "checkpoint") is None
    )  # pruned on finish
    best = cfg.study_dir / "best-adapter"
    assert (best / "adapter_model.safetensors").exists()
    assert json.loads((best / "trial.json").read_text())["trial"] == 1


# ----------------------------------------------------------------------------------------------------
# The real thing: `sweep run` in a subprocess, SIGKILLed at observed moments, re-run until done
# (the driver is scripts/fault_inject.py's, which runs the same checks with more kills)


@pytest.mark.slow
def test_sigkill_at_chosen_moments_then_rerun_completes_the_study(tmp_path):
    """Each kill waits for an event, never for a delay: a complete checkpoint on disk, a trial's done line,
    a run's second eval line (its checkpoint is being written then). Same kills on any machine."""
    plan = [Moment("checkpoint"), Moment("done"), Moment("eval", 2)]
    figures = kill_and_resume(tmp_path, n_trials=3, plan=plan)
    assert figures["kills"] == 3, figures
    assert figures["resumed_from_checkpoint"] >= 1, figures  # the first kill left a checkpoint to resume
    leftovers = [p for p in (tmp_path / "pricer").glob("trial-*/checkpoint*")]
    assert not leftovers, "checkpoints of finished trials must be deleted"


def test_sigterm_stops_gracefully_with_exit_143(tmp_path):
    proc = subprocess.Popen(
        sweep_command(tmp_path, 2),
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if " step " in line:  # a trial is training
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted: run the same command again to resume" in err and "Traceback" not in err
    assert_one_requeued(
        optuna.load_study(study_name="pricer", storage=f"sqlite:///{tmp_path}/pricer/study.db")
    )


def test_heartbeat_stale_trials_are_retried_with_our_attrs():
    """Several workers on one RDB: Optuna's heartbeat callback re-queues with retry_of/seed too."""
    study = optuna.create_study()
    t = study.ask()
    t.suggest_float("x", 0, 1)
    t.set_user_attr("seed", 5)
    failures.RetryStale(max_retry=3)(study, study.trials[0])
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == study.trials[0].params
    assert retry.user_attrs == {"retry_of": 0, "resume_from": None, "seed": 5}
    assert not failures.counts(study.trials[0])  # a stale RUNNING trial never used up the budget
