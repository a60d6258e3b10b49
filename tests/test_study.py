"""The study side with a fake recipe: milliseconds per trial, no transformers."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from helpers import SWEEP, FakeRecipe, fake_recipe, sweep
from optuna.trial import TrialState

from harness.core import trialdir
from harness.errors import StorageError
from harness.study.run import run_sweep
from harness.study.storage import check_url, mask_url
from harness.sweepfile.load import load_sweep


def test_sweep_runs_and_writes_trial_folders(tmp_path, storage):
    cfg = sweep(tmp_path, "budget.n_trials=3")
    out = run_sweep(cfg, storage=storage, recipe=fake_recipe)
    assert len(out.study.trials) == 3 and out.ran == 3
    for t in out.study.trials:
        folder = trialdir.trial_dir(cfg.study_dir, t.number)
        params = json.loads((folder / "params.json").read_text())
        assert params["sampled"] == t.params
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["state"] == t.state.name
        if t.state == TrialState.COMPLETE:
            assert metrics["value"] == pytest.approx(t.value)
            assert t.user_attrs["steps_run"] == 60


def test_resume_runs_only_the_missing_trials(tmp_path, storage):
    first = run_sweep(sweep(tmp_path, "budget.n_trials=2"), storage=storage, recipe=fake_recipe)
    before = {t.number: (t.params, t.value) for t in first.study.trials}
    again = run_sweep(sweep(tmp_path, "budget.n_trials=2"), storage=storage, recipe=fake_recipe)
    assert again.ran == 0 and len(again.study.trials) == 2
    more = run_sweep(sweep(tmp_path, "budget.n_trials=3"), storage=storage, recipe=fake_recipe)
    assert more.ran == 1 and len(more.study.trials) == 3
    assert {t.number: (t.params, t.value) for t in more.study.trials if t.number < 2} == before
    assert more.study.trials[2].params != more.study.trials[0].params  # resumed sampler does not replay


def test_same_file_and_seed_give_the_same_params(tmp_path):
    a = run_sweep(sweep(tmp_path / "a", "budget.n_trials=4"), recipe=fake_recipe).study
    b = run_sweep(sweep(tmp_path / "b", "budget.n_trials=4"), recipe=fake_recipe).study
    c = run_sweep(sweep(tmp_path / "c", "budget.n_trials=4", "seed=7"), recipe=fake_recipe).study
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_resume_refuses_a_changed_objective_or_space(tmp_path):
    run_sweep(sweep(tmp_path, "budget.n_trials=1"), recipe=fake_recipe)
    with pytest.raises(StorageError, match="start a new study"):
        run_sweep(sweep(tmp_path, "metric.goal=maximize"), recipe=fake_recipe)
    with pytest.raises(StorageError, match="different search space"):
        run_sweep(sweep(tmp_path, "parameters.r={values: [2, 64]}"), recipe=fake_recipe)


def test_pruned_trials_are_recorded(tmp_path):
    cfg = sweep(
        tmp_path,
        "budget.n_trials=8",
        "early_terminate.type=median",
        "early_terminate.n_startup_trials=1",
        "early_terminate.n_warmup_steps=0",
    )
    study = run_sweep(cfg, recipe=fake_recipe).study
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "with a median pruner some clearly worse trials must be pruned"
    assert all(t.user_attrs["pruned_at"] < 60 or t.user_attrs["pruned_at"] == 60 for t in pruned)


def test_the_shipped_pruner_keeps_the_best_third_at_each_rung(tmp_path):
    """The sweep file's own pruner (successive halving, first rung at the first eval, eta 3): a pruned trial
    stopped at an eval where it was behind the best third of the trials that had reached that step, and the
    study's best trial was never pruned."""
    cfg = sweep(
        tmp_path, "budget.n_trials=9", "budget.eval_steps=20", "early_terminate.type=successive_halving"
    )
    shipped = load_sweep(SWEEP).early_terminate
    assert (shipped.type, shipped.min_iter, shipped.eta) == ("successive_halving", 1, 3)
    assert cfg.early_terminate == shipped  # the file's settings, only `type` restated over helpers' none
    study = run_sweep(cfg, recipe=fake_recipe).study
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and study.best_trial.state == TrialState.COMPLETE
    for t in pruned:
        step = t.user_attrs["pruned_at"]
        assert step % 20 == 0 and step < 60
        earlier = [u for u in study.trials if u.number < t.number and step in u.intermediate_values]
        ahead = sorted(u.intermediate_values[step] for u in earlier)
        assert t.intermediate_values[step] > ahead[max(len(ahead) // 3 - 1, 0)]


def test_a_crashing_trial_fails_and_the_sweep_goes_on(tmp_path):
    flaky = FakeRecipe(fail={1: RuntimeError("boom")})
    study = run_sweep(sweep(tmp_path, "budget.n_trials=3"), recipe=flaky).study
    assert flaky.calls == [0, 1, 2]
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and len(states) == 3
    failed = study.trials[1]
    assert failed.user_attrs["fail_reason"] == "RuntimeError: boom"
    saved = json.loads((trialdir.trial_dir(Path(tmp_path) / "pricer", 1) / "metrics.json").read_text())
    assert saved["state"] == "FAIL" and "boom" in saved["fail_reason"]


def test_storage_urls_are_checked_and_masked():
    assert mask_url("postgresql://me:s3cret@db/x") == "postgresql://me:***@db/x"
    with pytest.raises(StorageError, match="not a storage URL") as e:
        check_url("mongodb://me:s3cret@host/db")
    assert "s3cret" not in str(e.value)
    with pytest.raises(StorageError, match="three slashes"):
        check_url("sqlite://study.db")


def test_end_of_trial_attrs_are_one_storage_call(tmp_path, storage):
    """rdb.set_user_attrs writes every attr (read back by a fresh load) in one transaction on RDB."""
    from sqlalchemy import event

    from harness import compat
    from harness.study import rdb, resume
    from harness.study import storage as st

    cfg = sweep(tmp_path, "budget.n_trials=1")
    url = st.storage_url(cfg, storage)
    study = resume.open_study(cfg, st.open_storage(url), url)
    trial = study.ask()
    # Through compat (raises if Optuna moved its private names): an RDB URL must give an engine, the
    # journal none, so a lost engine fails here instead of skipping the one-commit check below.
    engine = compat.rdb_engine(compat.study_storage(study))
    assert (engine is not None) == ("://" in url), f"{url}: engine {engine!r}"
    commits: list[int] = []
    if engine is not None:
        event.listen(engine, "commit", lambda conn: commits.append(1))
    attrs = {"metrics": {"eval_loss": 0.7}, "steps_run": 60, "duration_s": 1.5, "peak_rss_mb": 800.0}
    rdb.set_user_attrs(trial, attrs)
    if engine is not None:
        assert len(commits) == 1
    assert trial.user_attrs == {**trial.user_attrs, **attrs}  # the trial's own view, as set_user_attr
    study.tell(trial, 0.7)
    again = optuna.load_study(study_name=cfg.name, storage=st.open_storage(url))
    stored = again.trials[0].user_attrs
    assert {k: stored[k] for k in attrs} == attrs
