"""What a study was run on: base/tokenizer/data hashes recorded, reported, compared; and reproducible runs."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from helpers import TINY, FakeRecipe, sweep
from rich.console import Console

from harness.builtin import tiny_model as tm
from harness.cli import main
from harness.study.run import run_sweep
from harness.trial import provenance
from harness.trial.datasets import load_splits


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def stored(root: Path, name: str = "pricer") -> dict:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{root}/{name}/study.db")
    return study.user_attrs["provenance"]  # the stored format: user attr `provenance`


def test_the_shipped_base_is_the_pinned_bytes_and_the_study_records_them(tmp_path):
    """The builtin weights ship as files (no build per machine): their hash is pinned, so a silent
    change of the shipped bytes fails here, and every study records the same hash."""
    hashes = provenance.model_hashes(tm.ensure_tiny_model())
    assert hashes == {"base_model_sha256": tm.WEIGHTS_SHA256, "tokenizer_sha256": tm.TOKENIZER_SHA256}
    run_sweep(sweep(tmp_path, "budget.n_trials=1"), recipe=FakeRecipe(), console=quiet())
    prov = stored(tmp_path)
    assert prov["base_model_sha256"] == tm.WEIGHTS_SHA256 and prov["tokenizer_sha256"] == tm.TOKENIZER_SHA256
    splits = load_splits(sweep(tmp_path)).as_dict()
    for name in ("train", "validation", "test"):
        assert prov["data"][name] == provenance.rows_sha256(splits[name].to_list())
        assert prov["rows"][name] == len(splits[name])


def test_model_hash_is_over_content_not_file_dates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"weights")
        (d / "tokenizer.json").write_text("tok")
    assert provenance.model_hashes(a) == provenance.model_hashes(b)
    (b / "model.safetensors").write_bytes(b"weightz")
    changed = provenance.model_hashes(b)
    assert changed["base_model_sha256"] != provenance.model_hashes(a)["base_model_sha256"]
    assert changed["tokenizer_sha256"] == provenance.model_hashes(a)["tokenizer_sha256"]


def test_compare_warns_when_studies_differ_in_data(tmp_path, capsys):
    run_sweep(sweep(tmp_path, "budget.n_trials=1"), recipe=FakeRecipe(), console=quiet())
    run_sweep(sweep(tmp_path, "budget.n_trials=1", "name=same"), recipe=FakeRecipe(), console=quiet())
    other = ["budget.n_trials=1", "name=fewer", "dataset.max_train_rows=300"]
    run_sweep(sweep(tmp_path, *other), recipe=FakeRecipe(), console=quiet())
    assert main(["compare", "pricer", "same", "--results-dir", str(tmp_path)]) == 0
    assert "not comparable" not in capsys.readouterr().out
    assert main(["compare", "pricer", "fewer", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: pricer and fewer differ in train data" in out and "not comparable" in out
    assert "base weights" not in out.split("warning:")[1].split("\n")[0]  # same base: not named
    md = next(p for p in tmp_path.glob("compare-*/report.md") if "fewer" in str(p)).read_text()
    assert "differ in train data" in md


def test_report_shows_the_hashes(tmp_path, capsys):
    run_sweep(sweep(tmp_path, "budget.n_trials=2"), recipe=FakeRecipe(), console=quiet())
    assert main(["report", "pricer", "--results-dir", str(tmp_path), "--format", "md"]) == 0
    out = capsys.readouterr().out
    prov = stored(tmp_path)
    assert f"weights {tm.WEIGHTS_SHA256[:12]}" in out and prov["data"]["train"][:12] in out
    assert f"train {prov['data']['train'][:12]} (4000 rows)" in (tmp_path / "pricer/report.md").read_text()


def test_a_resumed_run_on_other_data_says_so(tmp_path):
    run_sweep(sweep(tmp_path, "budget.n_trials=1"), recipe=FakeRecipe(), console=quiet())
    c = quiet()
    run_sweep(
        sweep(tmp_path, "budget.n_trials=2", "dataset.max_train_rows=300"), recipe=FakeRecipe(), console=c
    )
    assert "warning: this run's train data differ" in c.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("n_trials", [2])
def test_two_fresh_runs_give_identical_params_and_values(tmp_path, n_trials):
    """Real 4-bit QLoRA trials: the same sweep file and seed, in two results folders, on this machine."""
    runs = []
    for folder in ("first", "second"):
        cfg = sweep(tmp_path / folder, *TINY, f"budget.n_trials={n_trials}")
        study = run_sweep(cfg, console=quiet()).study
        runs.append([(t.params, t.value, t.user_attrs["metrics"]) for t in study.get_trials()])
    assert len(runs[0]) == n_trials
    assert runs[0] == runs[1]
    assert stored(tmp_path / "first") == stored(tmp_path / "second")
