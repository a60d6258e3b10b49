"""Issue 26's kinds of bad input, each a few cases: exit 2 from `sweep run FILE` (or the read-only verb), one
paragraph naming the file, the key and what would be valid, no traceback, under 20 kB, and the working
folder (results included) exactly as it was: every file's bytes and mtime.

Checked at load where the file alone tells (sweepfile: the search space against the schema, numbers, names,
`module:function` specs); the rest (model folders, hub ids, user modules, study.db) before the study is
created. test_bad_input.py holds the first table of mistakes; this one the kinds the issue names.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT, TINY, sweep_cli

from harness.cli import main

MAX_OUTPUT = 20_000
TINY_MODEL = ROOT / "harness/builtin/tiny-llama-v2"
GRPO = ["trainer=grpo", "metric.name=reward", "metric.goal=maximize", "expect={}"]


@dataclass
class Case:
    id: str
    overrides: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    """Substrings the message must hold: the file or key, and what is wrong or valid."""
    files: dict[str, str] = field(default_factory=dict)
    """Files written into the working folder first (search spaces, user modules, a broken study.db)."""
    prepare: Callable[[Path], None] | None = None
    """Builds what text files cannot (a model folder)."""
    argv: list[str] | None = None
    """Another verb than `run sweep.yaml`; `--results-dir results` is added."""
    env: dict[str, str] = field(default_factory=dict)


def model_folder(tmp: Path, config: str | None = None, weights: bool | bytes = True) -> None:
    """The shipped base copied to tmp/model, with another config.json, no weights, or other bytes in them."""
    folder = tmp / "model"
    shutil.copytree(TINY_MODEL, folder)
    if config is not None:
        (folder / "config.json").write_text(config)
    for p in folder.glob("*.safetensors"):
        if weights is False:
            p.unlink()
        elif isinstance(weights, bytes):
            p.write_bytes(weights)


def study_db(content: bytes) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / "results/pricer").mkdir(parents=True)
        (tmp / "results/pricer/study.db").write_bytes(content)

    return make


def other_sqlite(tmp: Path) -> None:
    """A SQLite database that is not Optuna's (someone's own data, a copied file)."""
    (tmp / "results/pricer").mkdir(parents=True)
    with sqlite3.connect(tmp / "results/pricer/study.db") as con:
        con.execute("CREATE TABLE prices (item TEXT, price REAL)")


def damaged_study_db(tmp: Path) -> None:
    """A study database cut short (a disk that filled up, a copy interrupted)."""
    import optuna

    path = tmp / "results/pricer/study.db"
    path.parent.mkdir(parents=True)
    optuna.create_study(study_name="pricer", storage=f"sqlite:///{path}")
    with path.open("r+b") as f:
        f.truncate(8192)


SPACE = "parameters:\n  r: {values: [4, 8]}\n  learning_rate: {min: 0.001, max: %s}\n"

CASES = [
    # --- search-space values that contradict their parameter
    Case(
        "float-range-for-an-integer",
        ["parameters.r={min: 4.0, max: 16.0}"],
        ["parameters.r", "whole number", "uniform", "int_uniform"],
    ),
    Case(
        "q-uniform-with-a-fractional-step-for-an-integer",
        ["parameters.per_device_train_batch_size={distribution: q_uniform, min: 2, max: 16, q: 0.5}"],
        ["parameters.per_device_train_batch_size", "whole number", "q_uniform"],
    ),
    Case(
        "int-uniform-with-fractional-bounds",
        ["parameters.gradient_accumulation_steps={distribution: int_uniform, min: 1.5, max: 4}"],
        ["parameters.gradient_accumulation_steps", "whole-number min and max"],
    ),
    Case(
        "infinite-bound",
        ["search_space=space.yaml"],
        ["space.yaml", "parameters.learning_rate.max", "finite", "inf"],
        files={"space.yaml": SPACE % ".inf"},
    ),
    Case(
        "nan-bound",
        ["search_space=space.yaml"],
        ["space.yaml", "parameters.learning_rate.max", "finite", "nan"],
        files={"space.yaml": SPACE % ".nan"},
    ),
    Case("nan-setting", ["training.lora_dropout=.nan"], ["sweep.yaml", "training.lora_dropout", "finite"]),
    Case("infinite-setting", ["training.learning_rate=.inf"], ["training.learning_rate", "finite"]),
    Case(
        "min-above-max-for-an-integer",
        ["parameters.r={min: 32, max: 4}"],
        ["parameters.r", "min (32) is greater than max (4)"],
    ),
    Case(
        "continuous-range-under-grid",
        ["method=grid"],
        ["sweep.yaml", "method: grid cannot enumerate", "parameters.learning_rate", "values: [...]"],
    ),
    Case(
        "grid-too-large",
        [
            "method=grid",
            "search_space=null",
            "parameters={r: {min: 1, max: 100000}, lora_dropout: "
            "{distribution: q_uniform, min: 0, max: 0.5, q: 0.00001}}",
        ],
        ["method: grid", "points", "at most 1,000,000"],
    ),
    Case(
        "log-uniform-bounds-past-exp",
        ["parameters.learning_rate={distribution: log_uniform, min: -10, max: 1000}"],
        ["parameters.learning_rate", "natural-log bounds", "log_uniform_values"],
    ),
    # --- numbers and names past what the machine allows
    Case("negative-seed", ["seed=-1"], ["sweep.yaml", "seed", "greater than or equal to 0"]),
    Case("seed-past-numpy", ["seed=4294967296"], ["sweep.yaml", "seed", "less than 4294967296"]),
    Case("study-name-too-long", ["name=" + "n" * 256], ["name", "256 bytes", "at most 255"]),
    Case("study-name-breaking-the-url", ["name=a?b"], ["name", "'a?b'", "folder name"]),
    Case("negative-trials", ["budget.n_trials=-3"], ["budget.n_trials", "greater than 0"]),
    Case("zero-eval-steps", ["budget.eval_steps=0"], ["budget.eval_steps", "greater than 0"]),
    Case(
        "integer-past-64-bits",
        ["training.r=100000000000000000000000000000"],
        ["training.r", "30-digit number", "2**63 - 1"],
    ),
    Case("results-dir-name-too-long", ["results_dir=" + "r" * 300], ["results_dir", "at most 255"]),
    Case(
        "search-space-under-no-users-home",
        ["search_space=~no_such_user_here/space.yaml"],
        ["search_space", "'~no_such_user_here' names no user"],
    ),
    Case(
        "sweep-file-name-too-long",
        argv=["run", "s" * 300 + ".yaml"],
        expect=["sss...sss", "too long", "at most 255 bytes"],
    ),
    Case(
        "storage-path-too-long",
        argv=["status", "pricer", "--storage", "journal:" + "j" * 300 + "/study.log"],
        expect=["jjj", "too long"],
    ),
    # --- paths that escape
    Case(
        "reward-function-with-dotdot",
        [*GRPO, "training.reward_functions=[..evil:score]"],
        ["training.reward_functions", "'..evil:score'", "package.module:function", "never by a path"],
    ),
    Case(
        "reward-function-absolute-path",
        [*GRPO, "training.reward_functions=[/tmp/evil:score]"],
        ["training.reward_functions", "'/tmp/evil:score'", "never by a path"],
    ),
    Case(
        "custom-metric-with-a-path",
        ["evaluation.custom=[../metrics/mine:score]"],
        ["evaluation.custom", "'../metrics/mine:score'", "never by a path"],
    ),
    Case(
        "recipe-with-dotdot",
        ["--recipe", "..recipes:train"],
        ["recipe", "'..recipes:train'", "package.module:function"],
    ),
    # --- broken models (checked from the files, before the data or the study)
    Case(
        "model-config-not-json",
        ["model.name=model"],
        ["model.name 'model'", "config.json is not valid JSON", "line 1", "model_type"],
        prepare=lambda tmp: model_folder(tmp, config='{"model_type": "llama",'),
    ),
    Case(
        "model-config-without-model-type",
        ["model.name=model"],
        ["model.name 'model'", 'no "model_type"'],
        prepare=lambda tmp: model_folder(tmp, config='{"hidden_size": 64}'),
    ),
    Case(
        "model-folder-without-weights",
        ["model.name=model"],
        ["model.name 'model'", "no weights", "*.safetensors"],
        prepare=lambda tmp: model_folder(tmp, weights=False),
    ),
    Case(
        "hub-id-while-offline",
        ["model.name=no-such-org/no-such-model"],
        ["model.name 'no-such-org/no-such-model'", "offline", "HF_HUB_OFFLINE", "local cache"],
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "model-type-transformers-does-not-know",
        ["model.name=model"],
        ["model.name 'model'", "model_type 'lama'", "does not know", "did you mean 'llama'?"],
        prepare=lambda tmp: model_folder(tmp, config='{"model_type": "lama"}'),
    ),
    Case(
        "model-weights-that-are-not-weights",
        ["model.name=model"],
        ["model.name 'model'", "the base model cannot be loaded"],
        prepare=lambda tmp: model_folder(tmp, weights=b"\x00" * 4096),
    ),
    Case(
        "model-name-neither-folder-nor-hub-id",
        ["model.name=my model/v2/final"],
        ["model.name 'my model/v2/final'", "not a hub id"],
    ),
    # --- user Python that does not import
    Case(
        "reward-module-with-a-syntax-error",
        [*GRPO, "training.reward_functions=[bad_rewards:score]"],
        ["training.reward_functions", "bad_rewards.py, line 2", "syntax error"],
        files={
            "bad_rewards.py": "def score(prompts, completions, **kw):\n    return [1.0 for c in completions\n"
        },
    ),
    Case(
        "reward-module-that-raises-when-imported",
        [*GRPO, "training.reward_functions=[raising_rewards:score]"],
        ["training.reward_functions", "raising_rewards", "NameError", "raising_rewards.py, line 1"],
        files={"raising_rewards.py": "WEIGHTS = load_weights()\n"},
    ),
    Case(
        "reward-module-that-exits-when-imported",
        [*GRPO, "training.reward_functions=[exiting_rewards:score]"],
        ["training.reward_functions", "SystemExit", "exiting_rewards.py, line 2"],
        files={"exiting_rewards.py": "import sys\nsys.exit('needs a GPU')\n"},
    ),
    Case(
        "custom-metric-with-a-syntax-error",
        ["evaluation.custom=[bad_metrics:score]"],
        ["evaluation.custom", "bad_metrics.py, line 1", "syntax error"],
        files={"bad_metrics.py": "def score(predictions, references, rows) -> dict\n    return {}\n"},
    ),
    # --- broken state: a study.db that is not a study database
    Case(
        "zero-byte-study-db-run",
        expect=["study.db", "empty (0 bytes)", "move it away"],
        prepare=study_db(b""),
    ),
    Case(
        "not-sqlite-study-db-run",
        expect=["study.db", "not a SQLite database"],
        prepare=study_db(b"these are my notes, not a database\n" * 10),
    ),
    *[
        Case(
            f"zero-byte-study-db-{verb[0]}",
            argv=verb,
            expect=["study.db", "empty (0 bytes)"],
            prepare=study_db(b""),
        )
        for verb in (
            ["status", "pricer"],
            ["report", "pricer"],
            ["best", "pricer"],
            ["watch", "pricer", "--once"],
        )
    ],
    Case(
        "damaged-study-db-status",
        argv=["status", "pricer"],
        expect=["study.db is damaged", "malformed"],
        prepare=damaged_study_db,
    ),
    Case(
        "journal-ending-in-a-partial-line",
        ["--recipe", "helpers:fake_recipe", "--storage", "journal:study.log"],
        ["study.log", "partial line", "last line break"],
        files={"study.log": '{"op_code": 0, "study_name": "pricer", "directions": [1]}\n{"op_code": 4, "st'},
    ),
    Case(
        "not-optuna-sqlite-status",
        argv=["status", "pricer"],
        expect=["study.db", "without Optuna's tables"],
        prepare=other_sqlite,
    ),
]

SUBPROCESS = {"hub-id-while-offline", "reward-module-with-a-syntax-error", "zero-byte-study-db-status"}


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under root: its sha256 (folders: '') and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(root))] = (digest, p.stat().st_mtime_ns)
    return out


def setup(tmp_path: Path, case: Case) -> list[str]:
    text = (
        (ROOT / "sweeps/pricer.yaml").read_text().replace("../search_spaces/", f"{ROOT / 'search_spaces'}/")
    )
    (tmp_path / "sweep.yaml").write_text(text)
    for name, content in case.files.items():
        (tmp_path / name).write_text(content)
    if case.prepare is not None:
        case.prepare(tmp_path)
    if case.argv is not None:
        return [*case.argv, "--results-dir", "results"]
    return ["run", "sweep.yaml", "results_dir=results", *TINY, *case.overrides]


def check(case: Case, code: int, out: str, err: str, before: dict, after: dict) -> None:
    shown = out + err
    assert code == 2, shown
    assert "Traceback" not in shown
    assert len(shown.encode()) < MAX_OUTPUT
    message = " ".join(err.split())  # rich wraps long lines on a terminal-less stderr
    for part in case.expect:
        assert part in message, f"{part!r} not in {message!r}"
    assert after == before, "bad input must write nothing and change nothing"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_kind_is_one_message_and_exit_2(case, tmp_path, monkeypatch, capsys):
    argv = setup(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # custom metric modules are imported from the path
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an import must not count as a write
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = snapshot(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    check(case, code, captured.out, captured.err, before, snapshot(tmp_path))


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS], ids=sorted(SUBPROCESS))
def test_each_kind_end_to_end(case, tmp_path):
    argv = setup(tmp_path, case)
    before = snapshot(tmp_path)
    proc = sweep_cli(argv, tmp_path, env=case.env, path=(tmp_path,))
    ours = "\n".join(line for line in proc.stderr.splitlines() if _ours(line))
    err = proc.stderr if "Traceback" in proc.stderr else ours
    check(case, proc.returncode, proc.stdout, err, before, snapshot(tmp_path))


def _ours(line: str) -> bool:
    """Library chatter around our message (bitsandbytes' optional-kernel notice, the offline hub's)."""
    noise = ("kernels", "Loading weights", "warnings.warn", "Warning", "publisher trust")
    return bool(line.strip()) and not any(n in line for n in noise)


def test_sweep_list_shows_a_broken_study_db_and_leaves_it(tmp_path, monkeypatch, capsys):
    """`sweep list` lists every study.db: a broken one is a row with its error, never an empty database."""
    study_db(b"")(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(["list", "--results-dir", "results"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "error: study" in out  # the table's last column wraps the rest of the message
    assert snapshot(tmp_path) == before
    assert (tmp_path / "results/pricer/study.db").stat().st_size == 0


def test_a_zero_byte_study_db_being_created_by_another_worker_is_waited_for(tmp_path):
    """Workers started together race to create study.db: one may see it between its creation (0 bytes) and
    its header, microseconds later. That one is not refused."""
    import threading

    from harness.study import storage as st

    path = tmp_path / "study.db"
    path.write_bytes(b"")

    def become_a_database() -> None:
        with sqlite3.connect(path) as con:
            con.execute("PRAGMA journal_mode=WAL")

    timer = threading.Timer(0.2, become_a_database)
    timer.start()
    st.check_sqlite_file(path)  # waits for the header instead of refusing
    timer.join()
    assert path.read_bytes()[:16] == st.SQLITE_HEADER


def test_a_journal_line_being_appended_by_another_worker_is_waited_for(tmp_path):
    """A worker may look at the journal while another one's append is half written: that one completes."""
    import threading

    from harness.study import storage as st

    path = tmp_path / "study.log"
    path.write_text('{"op_code": 0, "study_name": "x", "directions": [1]}\n{"op_code": 4')

    def finish_the_line() -> None:
        with path.open("a") as f:
            f.write(', "study_id": 0}\n')

    timer = threading.Timer(0.2, finish_the_line)
    timer.start()
    st.check_journal_end(path)  # waits for the line to end instead of refusing
    timer.join()


def test_checked_model_folder_is_the_real_one(tmp_path):
    """The shipped base passes the model-folder checks it is held to (they must not refuse a good model)."""
    from harness.trial.base import check_model_folder

    check_model_folder(TINY_MODEL, "builtin:tiny-llama")
    assert json.loads((TINY_MODEL / "config.json").read_text())["model_type"]
