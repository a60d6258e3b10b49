"""Every user mistake: one short message naming the file/key, exit 2, no traceback, nothing written.

Table-driven. Most cases run `harness.cli.main` in-process (fast; the builtin model is loaded once per
worker); a few run the real `sweep` command in a subprocess to prove "no traceback" end to end.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT, TINY, fake_recipe, sweep_cli

from harness.cli import main

PRICES = [{"text": f"A widget, model {i}", "price": 10.0 + i} for i in range(40)]


@dataclass
class Case:
    id: str
    overrides: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    """Substrings the message must contain (the file and/or the key, and the problem)."""
    sweep: str | None = None
    """Replaces the sweep file's text (for YAML-level mistakes)."""
    files: dict[str, str] = field(default_factory=dict)
    """Extra files in the working folder (datasets, search spaces)."""
    options: list[str] = field(default_factory=list)
    argv: list[str] | None = None
    """A whole command line instead of `run sweep.yaml ...`."""


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


CASES = [
    Case(
        "malformed-yaml",
        sweep="name: pricer\nbudget: [1, 2\n",
        expect=["sweep.yaml", "malformed YAML", "line"],
    ),
    Case("unknown-key", ["budget.max_stepz=3"], expect=["sweep.yaml", "budget.max_stepz", "max_steps"]),
    Case(
        "optim-typo",
        ["training.optim=adamw_tourch"],
        expect=["sweep.yaml", "training.optim", "'adamw_torch'"],
    ),
    Case(
        "scheduler-typo",
        ["training.lr_scheduler_type=cosin"],
        expect=["sweep.yaml", "training.lr_scheduler_type", "'cosine'"],
    ),
    Case(
        "optim-typo-in-search-space",
        ["parameters.optim={values: [adamw_torch, pagd_adamw_8bit]}"],
        expect=["parameters.optim", "'pagd_adamw_8bit'", "'paged_adamw_8bit'"],
    ),
    Case("wrong-type", ["budget.max_steps=lots"], expect=["sweep.yaml", "budget.max_steps", "integer"]),
    Case(
        "empty-search-space",
        ["search_space=null", "parameters={}"],
        expect=["sweep.yaml", "search space is empty"],
    ),
    Case(
        "min-greater-than-max",
        ["parameters.learning_rate={min: 0.1, max: 0.001}"],
        expect=["learning_rate", "min"],
    ),
    Case(
        "log-min-not-positive",
        ["parameters.learning_rate={distribution: log_uniform_values, min: 0, max: 0.1}"],
        expect=["learning_rate", "log"],
    ),
    Case(
        "missing-search-space-file",
        ["search_space=nope.yaml"],
        expect=["search_space", "nope.yaml", "not found"],
    ),
    Case("missing-dataset", ["dataset.source=./nope.jsonl"], expect=["nope.jsonl", "not found"]),
    Case("missing-model", ["model.name=./no-model"], expect=["model.name", "no-model"]),
    Case(
        "dataset-without-columns",
        ["dataset.source=cols.jsonl"],
        files={"cols.jsonl": jsonl([{"foo": 1}] * 20)},
        expect=["cols.jsonl", "column"],
    ),
    Case(
        "dataset-empty-after-filtering",
        ["dataset.source=noprice.jsonl"],
        files={"noprice.jsonl": jsonl([{"text": "a thing", "price": "n/a"}] * 20)},
        expect=["noprice.jsonl", "no usable rows"],
    ),
    Case(
        "response-template-not-found",
        ["task=text", "dataset.source=texts.jsonl", "training.response_template='Answer is $'", "expect={}"],
        files={"texts.jsonl": jsonl([{"text": f"question {i} answer {i}"} for i in range(30)])},
        expect=["texts.jsonl", "response_template", "Answer is $"],
    ),
    Case(
        "invalid-storage-url",
        options=["--storage", "mongodb://me:s3cret@host/db"],
        expect=["mongodb://me:***@host/db", "storage"],
    ),
    Case("unwritable-storage", options=["--storage", "sqlite:///ro/sub/study.db"], expect=["storage", "ro"]),
    Case(
        "storage-under-a-file",
        options=["--storage", "sqlite:///cols.txt/study.db"],
        files={"cols.txt": "x"},
        expect=["storage", "cols.txt"],
    ),
    Case("study-name-with-path", ["name=../escape"], expect=["name", "../escape", "folder"]),
    # DPO / GRPO (issue 13): each a one-line reason, before anything is written
    Case("trainer-ppo", ["trainer=ppo"], expect=["trainer", "ppo", "'sft', 'dpo' or 'grpo'"]),
    Case(
        "preference-without-rejected",
        ["trainer=dpo", "dataset.source=pairs.jsonl", "expect={}"],
        files={
            "pairs.jsonl": jsonl([{"prompt": f"Price of item {i}?", "chosen": f"{i}.00"} for i in range(30)])
        },
        expect=["pairs.jsonl", "'rejected'", "found columns: prompt, chosen"],
    ),
    Case(
        "grpo-without-reward-functions",
        ["trainer=grpo", "metric.name=reward", "metric.goal=maximize", "expect={}"],
        expect=["training.reward_functions", "at least one"],
    ),
    Case(
        "reward-function-not-found",
        [
            "trainer=grpo",
            "metric.name=reward",
            "metric.goal=maximize",
            "expect={}",
            "training.reward_functions=[no_such_rewards:score]",
        ],
        expect=["no_such_rewards:score", "cannot import"],
    ),
    Case(
        "num-generations-not-dividing-the-batch",
        [
            "trainer=grpo",
            "metric.name=reward",
            "metric.goal=maximize",
            "expect={}",
            "training.reward_functions=[price_accuracy]",
            "training.num_generations=3",
        ],
        expect=["num_generations 3", "per_device_train_batch_size 8"],
    ),
    Case("n-trials-zero", options=["--n-trials", "0"], expect=["budget.n_trials", "greater than 0"]),
    Case("metric-not-produced", ["metric.name=bleu_score"], expect=["metric.name", "bleu_score", "task"]),
    Case("bad-override", ["budget"], expect=["budget"]),
    Case("missing-sweep-file", argv=["run", "missing.yaml"], expect=["missing.yaml", "not found"]),
    Case("status-of-missing-study", argv=["status", "nostudy"], expect=["nostudy"]),
]

SUBPROCESS = {
    "malformed-yaml",
    "missing-dataset",
    "dataset-without-columns",
    "invalid-storage-url",
    "preference-without-rejected",
}


def snapshot(root: Path) -> dict[str, float | None]:
    """Every file with its mtime, every folder by name. A folder's own mtime is left out: SQLite reading a
    WAL-mode study.db creates and removes its -wal/-shm files, which touches the folder and writes nothing."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.stat().st_mtime_ns
        for p in sorted(root.rglob("*"))
    }


def setup(tmp_path: Path, case: Case) -> list[str]:
    text = case.sweep
    if text is None:
        text = (
            (ROOT / "sweeps/pricer.yaml")
            .read_text()
            .replace("../search_spaces/", f"{ROOT / 'search_spaces'}/")
        )
    (tmp_path / "sweep.yaml").write_text(text)
    for name, content in case.files.items():
        (tmp_path / name).write_text(content)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if case.argv is not None:
        return (
            [*case.argv, "--results-dir", str(tmp_path / "results")] if case.argv[0] != "run" else case.argv
        )
    return ["run", "sweep.yaml", f"results_dir={tmp_path / 'results'}", *TINY, *case.overrides, *case.options]


def check(case: Case, code: int, err: str, before: dict, after: dict) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 6, err
    for part in case.expect:
        assert part in err, f"{part!r} not in {err!r}"
    assert "s3cret" not in err
    assert after == before, "bad input must write nothing"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(case, tmp_path, monkeypatch, capsys):
    argv = setup(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    if case.id == "unwritable-storage" and os.geteuid() == 0:  # root writes anywhere: pretend it cannot
        real_access = os.access
        monkeypatch.setattr(
            "harness.study.storage.os.access", lambda p, m: Path(p).name != "ro" and real_access(p, m)
        )
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    check(case, code, err, before, snapshot(tmp_path))


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS], ids=sorted(SUBPROCESS))
def test_bad_input_end_to_end(case, tmp_path):
    argv = setup(tmp_path, case)
    before = snapshot(tmp_path)
    proc = sweep_cli(argv, tmp_path, timeout=120)
    err = "\n".join(line for line in proc.stderr.splitlines() if _ours(line))
    check(
        case, proc.returncode, proc.stderr if "Traceback" in proc.stderr else err, before, snapshot(tmp_path)
    )


def _ours(line: str) -> bool:
    """Library chatter that precedes our message (bitsandbytes' optional-kernel notice, progress bars)."""
    noise = ("kernels", "Loading weights", "warnings.warn", "Warning")
    return bool(line.strip()) and not any(n in line for n in noise)


def test_a_changed_study_is_refused_and_left_untouched(tmp_path, monkeypatch, capsys):
    """Resuming with another search space or direction: exit 2, and the study's files are unchanged."""
    from harness.study import storage as st
    from harness.study.run import run_sweep
    from harness.sweepfile.load import load_sweep

    case = Case("resume-changed")
    argv = setup(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    first = run_sweep(
        load_sweep(tmp_path / "sweep.yaml", argv[2:] + ["budget.n_trials=1"]), recipe=fake_recipe
    )
    # As when `sweep run` exits: its connection closed, SQLite folds the -wal file into study.db. Left open,
    # the refused run's own close would do that fold and change the files this test compares.
    st.close(first.study._storage)
    for change, expect in [
        (["metric.goal=maximize"], "start a new study"),
        (["parameters.r={values: [2, 64]}"], "different search space"),
    ]:
        before = snapshot(tmp_path)
        code = main([*argv, *change])
        err = capsys.readouterr().err
        check(Case("x", expect=[expect, "pricer"]), code, err, before, snapshot(tmp_path))


def test_a_password_in_the_storage_url_is_never_stored(tmp_path):
    """The study keeps its config (reports show it, `sweep best --export` writes it): masked."""
    import optuna

    from harness.study import resume
    from harness.sweepfile.load import load_sweep

    cfg = load_sweep(
        ROOT / "sweeps/pricer.yaml", [f"results_dir={tmp_path}", "storage=postgresql://me:s3cret@db/x"]
    )
    url = f"sqlite:///{tmp_path}/study.db"
    study = resume.open_study(cfg, optuna.storages.RDBStorage(url), url)
    assert study.user_attrs["config"]["storage"] == "postgresql://me:***@db/x"
    assert "s3cret" not in json.dumps(study.user_attrs)
