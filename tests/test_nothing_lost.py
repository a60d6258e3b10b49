"""Nothing lost (issue 26, item 6): bad input given to a study that already has trials (a changed sweep
file on resume, a corrupt override, a broken model, user module or storage) is refused with exit 2 and
leaves the study exactly as it was (every trial's state, params, values, intermediate values and attrs;
the study's attrs) and the results folder too (every file's bytes and mtime). The study then resumes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT

from harness import compat
from harness.cli import main
from harness.study import storage as st

RUN = [
    "run",
    "sweep.yaml",
    "results_dir=results",
    "budget.n_trials=3",
    "budget.max_steps=20",
    "budget.eval_steps=10",
    "early_terminate.type=none",
    "evaluation.samples=8",
    "--recipe",
    "helpers:fake_recipe",
]
URL = "sqlite:///results/pricer/study.db"

# (what, extra arguments, a part of the message); each is given to the study of 3 trials
BAD: list[tuple[str, list[str], str]] = [
    ("another search space", ["parameters.r={values: [2, 64]}"], "different search space"),
    ("another objective", ["metric.goal=maximize"], "start a new study"),
    ("a corrupt override", ["budget.n_trials=lots"], "budget.n_trials"),
    ("an override that is no key=value", ["budget"], "key.sub=value"),
    ("an unknown key", ["budget.n_trails=4"], "n_trials"),
    ("a negative seed", ["seed=-1"], "seed"),
    ("a continuous range under grid", ["method=grid"], "method: grid"),
    ("a float range for an integer", ["parameters.r={min: 2.0, max: 8.0}"], "whole number"),
    ("a NaN bound", ["parameters.learning_rate={min: .nan, max: 0.01}"], "finite"),
    ("a custom metric that does not parse", ["evaluation.custom=[broken_metric:score]"], "syntax error"),
    ("a custom metric outside the project", ["evaluation.custom=[../x:score]"], "never by a path"),
    ("a storage that is not SQLite", ["--storage", "sqlite:///notes.db"], "not a SQLite database"),
    ("a sweep file with a repeated key", ["--", "bad.yaml"], "given twice"),
]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: its sha256 and mtime; every folder (its mtime moves whenever SQLite makes
    and removes the -wal/-shm files of a connection, a reader's too)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        if p.is_file()
        else ("folder", 0)
        for p in sorted(root.rglob("*"))
    }


def study_state() -> dict[str, Any]:
    """What Optuna holds of the study, read the way `sweep status` reads it; the connections are closed
    after (an open one keeps SQLite's -wal/-shm files beside study.db)."""
    study = st.load_readonly(URL, "pricer")
    try:
        return _state(study)
    finally:
        compat.rdb_engine(compat.study_storage(study)).dispose()


def _state(study: Any) -> dict[str, Any]:
    return {
        "user_attrs": study.user_attrs,
        "directions": [d.name for d in study.directions],
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "distributions": {k: repr(v) for k, v in t.distributions.items()},
                "values": t.values,
                "intermediate": t.intermediate_values,
                "user_attrs": t.user_attrs,
                "system_attrs": t.system_attrs,
                "start": t.datetime_start,
                "end": t.datetime_complete,
            }
            for t in study.trials
        ],
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A study of 3 trials (the fake recipe), made once; each test works on a copy of its folder."""
    root = tmp_path_factory.mktemp("study")
    text = (
        (ROOT / "sweeps/pricer.yaml").read_text().replace("../search_spaces/", f"{ROOT / 'search_spaces'}/")
    )
    (root / "sweep.yaml").write_text(text)
    (root / "bad.yaml").write_text(text.replace("seed: 42\n", "seed: 42\nseed: 7\n"))
    (root / "broken_metric.py").write_text("def score(predictions, references, rows)\n    return {}\n")
    (root / "notes.db").write_text("not a database\n")
    # A process of its own: its storage is closed when it exits (a writer's pooled connections in this
    # process would checkpoint SQLite's log into study.db whenever they are collected).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *RUN], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: an `expect:` line failed on the fake numbers
    return root


@pytest.fixture
def study_with_trials(made, tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(made, folder)  # copy2: the files keep their mtimes
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing a user module writes no .pyc
    return folder


@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_bad_input_leaves_a_study_with_trials_as_it_was(study_with_trials, bad, capsys):
    what, extra, message = bad
    files = snapshot(study_with_trials)
    state = study_state()
    assert len(state["trials"]) == 3 and files == snapshot(study_with_trials)
    argv = ["run", *extra[1:], *RUN[2:]] if extra[0] == "--" else [*RUN[:-2], *extra, *RUN[-2:]]
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert message in " ".join(err.split()), err
    assert snapshot(study_with_trials) == files, f"{what}: the results folder changed"
    assert study_state() == state, f"{what}: the study changed"


def test_a_broken_model_leaves_the_study_as_it_was(study_with_trials, capsys):
    """The real recipe: the model folder is checked before anything of the study is opened."""
    model = study_with_trials / "model"
    shutil.copytree(ROOT / "harness/builtin/tiny-llama-v2", model)
    (model / "config.json").write_text("{not json")
    files, state = snapshot(study_with_trials), study_state()
    code = main([*RUN[:-2], "model.name=model"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "config.json is not valid JSON" in err, err
    assert snapshot(study_with_trials) == files and study_state() == state


def test_after_bad_input_the_study_resumes(study_with_trials, capsys):
    before = study_state()
    assert main([*RUN, "parameters.r={values: [2, 64]}"]) == 2
    assert main([*RUN, "budget.n_trials=4"]) in (0, 1)
    after = study_state()
    assert len(after["trials"]) == 4
    assert after["trials"][:3] == before["trials"]  # the old trials, untouched, and one more
