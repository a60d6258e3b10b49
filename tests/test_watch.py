"""`sweep watch` and `sweep dashboard`, on real storages built with the study side (no transformers)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import sys
import warnings
from types import ModuleType

import optuna
import pytest
from helpers import fake_recipe, sweep
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.cli import cmd_dashboard, cmd_watch, main
from harness.errors import HarnessError, StorageError
from harness.results import status, watch
from harness.study import resume
from harness.study import storage as st
from harness.study.run import run_sweep

PLANNED = ("budget.n_trials=4", "budget.max_steps=120")  # the frames below: 4 trials of 120 steps


def finished(
    number: int, value: float, seconds: float, state: TrialState = TrialState.COMPLETE
) -> FrozenTrial:
    start = dt.datetime.now() - dt.timedelta(minutes=30)
    return FrozenTrial(
        number=number,
        trial_id=number,
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + dt.timedelta(seconds=seconds),
        params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-2, log=True)},
        user_attrs={"steps_run": 120, "peak_rss_mb": 812.4},
        system_attrs={},
        intermediate_values={20: value + 1, 120: value},
    )


@pytest.fixture
def live_study(tmp_path) -> optuna.Study:
    """4 planned trials: 2 finished in 60 s each, and one RUNNING that has reported 4 evals."""
    cfg = sweep(tmp_path, *PLANNED)
    url = st.storage_url(cfg)
    study = resume.open_study(cfg, st.open_storage(url), url)
    study.add_trial(finished(0, 1.30, 60))
    study.add_trial(finished(1, 1.05, 60))
    with warnings.catch_warnings():  # "heartbeat is meant for optimize()": this trial stands in for one
        warnings.simplefilter("ignore")
        trial = study.ask()
    trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    for step, loss in ((20, 2.0), (40, 1.5), (60, 1.2), (80, 1.1)):
        trial.report(loss, step)
    trial.set_user_attr("rss_mb", 700.0)
    trial.set_user_attr("peak_rss_mb", 901.0)
    return study


def test_sparkline_scales_between_min_and_max():
    assert watch.sparkline([2.0, 1.5, 1.2, 1.1]) == "█▄▂▁"
    assert watch.sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert watch.sparkline([3.0, 3.0]) == "▁▁"
    assert watch.sparkline([1.0, float("nan"), 2.0]) == "▁█"
    assert watch.sparkline(list(range(100)), width=10) == "▁▂▃▃▄▅▆▆▇█"  # the last 10 only
    assert watch.sparkline([]) == ""


def test_watch_once_shows_the_running_trial_sparkline_and_eta(tmp_path, live_study, capsys):
    code = main(["watch", "pricer", "--results-dir", str(tmp_path), "--once"])
    out = capsys.readouterr().out
    print(out)  # shown with -s: the sample in the issue note comes from here
    assert code == 0
    assert "2/4 finished" in out and "2 complete, 0 pruned, 0 failed, 1 running" in out
    running = next(line for line in out.splitlines() if line.startswith("running"))
    assert "trial 2" in running and "step 80/120" in running and "eval_loss 1.1" in running
    assert "█▄▂▁" in running
    assert "rss 700 MB" in running and "peak 901 MB" in running
    # 2 left x 60 s, less the moments the running trial has already used
    assert re.search(r"ETA\s+~(1m[45]\ds|2m00s)\s+\(2 left × mean 1m00s per trial\)", out), out
    assert re.search(r"best\s+eval_loss 1\.05\s+trial 1", out)
    assert re.search(r"^\s*1\s+complete\s+1\.05\s+120\s+1m00s\s+812", out, re.M)


def test_eta_counts_pruned_and_failed_trials_as_finished(tmp_path):
    cfg = sweep(tmp_path, *PLANNED)
    url = st.storage_url(cfg)
    study = resume.open_study(cfg, st.open_storage(url), url)
    study.add_trial(finished(0, 1.0, 100))
    study.add_trial(finished(1, 1.0, 20, TrialState.PRUNED))
    view = status.collect(study)
    assert view.finished == 2 and view.mean_s == pytest.approx(60)
    assert view.eta_s == pytest.approx(120)  # 2 not started x 60 s
    assert not view.done and view.best is not None and view.best.number == 0


def test_watch_without_once_stops_when_the_sweep_is_done(tmp_path):
    cfg = sweep(tmp_path, *PLANNED, "budget.n_trials=2")
    run_sweep(cfg, recipe=fake_recipe)
    buf = io.StringIO()
    args = argparse.Namespace(
        study="pricer", results_dir=str(tmp_path), storage=None, interval=0.2, once=False
    )
    assert cmd_watch(args, Console(file=buf, width=120)) == 0  # not a tty: plain frames, then exit
    out = buf.getvalue()
    assert "ETA   done" in out and "2/2 finished" in out and "peak MB" in out
    # What `sweep status` says below the counts: the cost so far and the rung agreement, as there.
    data = status.collect(optuna.load_study(study_name="pricer", storage=st.storage_url(cfg)))
    assert data.summary[0].startswith("cost: ") and data.summary[1].startswith("rung agreement: ")
    assert all(line[:60] in out for line in data.summary)  # (a long line wraps at the frame's width)


def test_a_failed_refresh_keeps_the_last_frame(live_study):
    view = status.collect(live_study)

    class Locked:
        def __getattr__(self, name):
            raise RuntimeError("(sqlite3.OperationalError) database is locked")

    again = watch._refresh(Locked(), view)  # type: ignore[arg-type]
    assert again.running[0].number == 2 and "database is locked" in again.note
    buf = io.StringIO()
    Console(file=buf, width=120).print(watch.render(again))
    assert "storage read failed, retrying" in buf.getvalue()


def test_watching_a_missing_study_creates_nothing(tmp_path):
    args = argparse.Namespace(study="nope", results_dir=str(tmp_path), storage=None, interval=1.0, once=True)
    with pytest.raises(StorageError, match="no study 'nope'"):
        cmd_watch(args, Console(file=io.StringIO()))
    assert list(tmp_path.iterdir()) == []


def test_dashboard_without_the_extra_says_how_to_install(tmp_path, live_study, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import now raises ImportError
    args = argparse.Namespace(study="pricer", results_dir=str(tmp_path), storage=None)
    with pytest.raises(HarnessError, match=r"pip install 'harness\[dashboard\]'"):
        cmd_dashboard(args, Console(file=io.StringIO()))


def test_dashboard_serves_the_same_storage_on_localhost(tmp_path, live_study, monkeypatch):
    calls = []
    fake = ModuleType("optuna_dashboard")
    fake.run_server = lambda storage, host, port: calls.append((storage, host, port))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    buf = io.StringIO()
    args = argparse.Namespace(study="pricer", results_dir=str(tmp_path), storage=None)
    assert cmd_dashboard(args, Console(file=buf, width=200)) == 0
    ((storage, host, port),) = calls
    assert host == "127.0.0.1" and port == 8080
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert names == ["pricer"]
    assert "http://127.0.0.1:8080" in buf.getvalue()
