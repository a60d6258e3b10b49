"""`sweep run PATH`: discovery, -k, -x, --collect-only, --smoke, verdicts and exit codes.

Most tests swap the QLoRA fine-tune for a fake recipe (milliseconds); the last one runs the real recipe on
the builtin model to prove the session fixtures are built once for several trials and several sweeps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import steady_recipe

from harness.cli import main
from harness.errors import ConfigError
from harness.study import run as runner
from harness.suite import collect
from harness.suite.collect import find_sweep_files
from harness.suite.keywords import KeywordExpr
from harness.trial import cache


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds the real recipe; here it gets the fake one instead: eval_loss 1 + 10/step in every
    trial (1.5 at step 20), hit_rate 0.5."""
    monkeypatch.setattr(runner, "real_recipe", lambda cfg: steady_recipe)


def write_sweep(folder: Path, stem: str, suffix: str = ".yaml", **fields: Any) -> Path:
    data: dict[str, Any] = {
        "name": stem,
        "parameters": {"learning_rate": {"values": [0.001, 0.002]}},
        "budget": {"n_trials": 2, "max_steps": 20, "eval_steps": 10},
        "early_terminate": {"type": "none"},
        **fields,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{suffix}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------
# Discovery and -k


def test_discovery_is_sorted_recursive_and_skips_hidden_and_search_spaces(tmp_path):
    write_sweep(tmp_path / "sweeps", "b")
    write_sweep(tmp_path / "sweeps", "a", suffix=".yml")
    write_sweep(tmp_path / "sweeps/nested", "c")
    write_sweep(tmp_path / "sweeps/.hidden", "d")
    (tmp_path / "sweeps/.e.yaml").write_text("name: e\n")
    (tmp_path / "sweeps/space.yaml").write_text("description: x\nparameters: {r: {values: [4, 8]}}\n")
    (tmp_path / "sweeps/notes.txt").write_text("not yaml")
    found = [p.relative_to(tmp_path / "sweeps").as_posix() for p in find_sweep_files(tmp_path / "sweeps")]
    assert found == ["a.yml", "b.yaml", "nested/c.yaml"]
    with pytest.raises(ConfigError, match="no such file or folder"):
        find_sweep_files(tmp_path / "missing")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("pricer", True),
        ("PRIC", True),  # case-insensitive substring, like pytest
        ("slow", False),
        ("pricer and fast", True),
        ("pricer and not fast", False),
        ("slow or fast", True),
        ("not (slow or gpu)", True),
        ("not slow and (fast or gpu)", True),
        ("smoke-ok", True),
    ],
)
def test_keyword_expressions(expr, expected):
    assert KeywordExpr(expr).matches(["pricer.yaml", "pricer", "fast", "smoke-ok"]) is expected


@pytest.mark.parametrize("expr", ["", "a and", "(a or b", "a b", "and a", "a $ b"])
def test_bad_keyword_expressions_are_user_errors(expr):
    with pytest.raises(ConfigError, match="-k"):
        KeywordExpr(expr)


def test_smoke_config_is_tiny_and_elsewhere(tmp_path):
    cfg = collect.load(write_sweep(tmp_path, "s", storage="journal:x.log"), smoke=True)
    assert (cfg.budget.n_trials, cfg.budget.max_steps, cfg.budget.eval_steps) == (1, 4, 2)
    assert (cfg.dataset.max_eval_rows, cfg.evaluation.samples) == (16, 4)
    assert cfg.storage is None and cfg.study_dir == Path("results/.smoke/s")


# ----------------------------------------------------------------------------------------------------
# The CLI


def test_collect_only_lists_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path / "sweeps", "alpha", tags=["fast"])
    write_sweep(tmp_path / "sweeps/sub", "beta")
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["run", "sweeps", "--collect-only"]) == 0
    out = capsys.readouterr().out
    assert "sweeps/alpha.yaml  name=alpha  tags=fast  trials=2" in out
    assert "sweeps/sub/beta.yaml  name=beta" in out
    assert last_line(out) == "2 collected"
    assert not (tmp_path / "results").exists() and sorted(tmp_path.rglob("*")) == before
    assert main(["run", "sweeps", "--collect-only", "--smoke", "-k", "fast"]) == 0
    out = capsys.readouterr().out
    assert "trials=1  max_steps=4" in out and last_line(out) == "1 collected, 1 deselected"


def test_an_impossible_expectation_fails_with_exit_1_and_is_named(tmp_path, fake, capsys):
    path = write_sweep(tmp_path, "hopeless", expect={"eval_loss": "< 0.001", "hit_rate": ">= 0.3"})
    assert main(["run", str(path), "--results-dir", str(tmp_path / "results")]) == 1
    out = capsys.readouterr().out
    assert "FAIL eval_loss < 0.001 (measured 1.5)" in out
    assert "PASS hit_rate >= 0.3 (measured 0.5)" in out
    assert f"FAILED {path} - eval_loss < 0.001 (measured 1.5)" in out
    assert last_line(out) == "0 passed, 1 failed"


def test_a_sweep_file_without_expectations_runs_as_before(tmp_path, fake, capsys):
    path = write_sweep(tmp_path, "plain")
    assert main(["run", str(path), "budget.n_trials=3", "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "trials by eval_loss" in out and "3 trial(s) run in" in out
    assert last_line(out) == "1 passed, 0 failed"
    assert (tmp_path / "r/plain/study.db").exists()


def test_k_selects_by_tag(tmp_path, fake, capsys):
    write_sweep(tmp_path / "sweeps", "alpha", tags=["fast", "pricer"])
    write_sweep(tmp_path / "sweeps", "beta", tags=["slow"])
    write_sweep(tmp_path / "sweeps", "gamma", tags=["fast"], expect={"eval_loss": "< 0.1"})
    results = tmp_path / "results"
    code = main(["run", str(tmp_path / "sweeps"), "-k", "fast and not gamma", "--results-dir", str(results)])
    assert code == 0
    out = capsys.readouterr().out
    assert "collected 3 sweep files, 2 deselected by -k 'fast and not gamma'" in out
    assert last_line(out) == "1 passed, 0 failed"
    assert sorted(p.name for p in results.iterdir()) == ["alpha"]


def test_x_stops_after_the_first_failure(tmp_path, fake, capsys):
    write_sweep(tmp_path / "sweeps", "a_fails", expect={"hit_rate": "> 0.9"})
    write_sweep(tmp_path / "sweeps", "b_passes")
    write_sweep(tmp_path / "sweeps", "c_passes")
    results = tmp_path / "results"
    assert main(["run", str(tmp_path / "sweeps"), "-x", "--results-dir", str(results)]) == 1
    out = capsys.readouterr().out
    assert "stopping after the first failure (-x)" in out
    assert last_line(out) == "0 passed, 1 failed, 2 skipped"
    assert sorted(p.name for p in results.iterdir()) == ["a_fails"]
    # Without -x every sweep runs.
    assert main(["run", str(tmp_path / "sweeps"), "--results-dir", str(results)]) == 1
    assert last_line(capsys.readouterr().out) == "2 passed, 1 failed"


def test_an_invalid_file_is_an_error_and_the_others_still_run(tmp_path, fake, capsys):
    write_sweep(tmp_path / "sweeps", "good")
    write_sweep(tmp_path / "sweeps", "typo", budget={"n_trails": 2})
    write_sweep(tmp_path / "sweeps", "badexpect", expect={"eval_loss": "=< 2"})
    (tmp_path / "sweeps/broken.yaml").write_text("name: [unclosed\n")
    assert main(["run", str(tmp_path / "sweeps"), "--results-dir", str(tmp_path / "results")]) == 2
    captured = capsys.readouterr()
    assert last_line(captured.out) == "1 passed, 0 failed, 3 errors"
    assert "budget.n_trails: unknown key (did you mean 'n_trials'?)" in captured.err
    assert "expect: eval_loss: operator '=<'" in captured.err
    assert "broken.yaml: malformed YAML" in captured.err
    assert "ERROR " in captured.out and "Traceback" not in captured.err
    assert (tmp_path / "results/good/study.db").exists()


def test_a_malformed_expectation_in_a_single_file_is_exit_2_naming_file_and_key(tmp_path, fake, capsys):
    path = write_sweep(tmp_path, "oops", expect={"perplx": {"max": 12}})
    assert main(["run", str(path), "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "perplx: not a metric task 'pricer' reports (did you mean 'perplexity'?)" in err
    assert not (tmp_path / "results").exists()  # bad input writes nothing


def test_a_sweep_whose_trials_all_fail_fails(tmp_path, monkeypatch, capsys):
    def crash(spec, on_eval):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "real_recipe", lambda cfg: crash)
    path = write_sweep(tmp_path, "crashy", budget={"n_trials": 2, "max_steps": 4, "eval_steps": 2})
    assert main(["run", str(path), "--results-dir", str(tmp_path / "results")]) == 1
    out = capsys.readouterr().out
    assert "no trial completed" in out and last_line(out) == "0 passed, 1 failed"


def test_smoke_runs_never_touch_the_real_study_and_start_fresh(tmp_path, fake, capsys):
    path = write_sweep(tmp_path, "pricey", expect={"eval_loss": "< 5"})
    results = tmp_path / "results"
    for _ in range(2):  # the second smoke run trains again instead of resuming a finished study
        assert main(["run", str(path), "--smoke", "--results-dir", str(results)]) == 0
        out = capsys.readouterr().out
        assert "1 trial(s) run in" in out and "PASS eval_loss < 5 (measured 3.5)" in out
    assert sorted(p.name for p in results.iterdir()) == [".smoke"]
    assert (results / ".smoke/pricey/study.db").exists()


def test_name_override_is_refused_for_a_collection(tmp_path, capsys):
    write_sweep(tmp_path / "sweeps", "a")
    write_sweep(tmp_path / "sweeps", "b")
    assert main(["run", str(tmp_path / "sweeps"), "name=same"]) == 2
    assert "same study" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Session fixtures, for real: one base model for every trial of every collected sweep


def test_base_model_is_built_once_for_several_trials_and_sweeps(tmp_path, capsys):
    tiny = {
        "parameters": {"r": {"values": [4, 8]}, "per_device_train_batch_size": {"value": 2}},
        "budget": {"n_trials": 2, "max_steps": 2, "eval_steps": 1},
        "dataset": {"max_eval_rows": 8, "max_train_rows": 64},
        "evaluation": {"samples": 2, "max_new_tokens": 4},
        "early_terminate": {"type": "none"},
        "method": "random",
    }
    write_sweep(tmp_path / "sweeps", "first", **tiny)
    write_sweep(tmp_path / "sweeps", "second", seed=7, **tiny)  # differs elsewhere: still the same base
    cache.clear_session()  # count from zero even if an earlier test built these in this process
    before = Counter(cache.BUILDS)
    code = main(["run", str(tmp_path / "sweeps"), "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert last_line(out) == "2 passed, 0 failed"
    assert out.count("done  eval_loss") == 4  # 2 sweeps x 2 trials really trained
    built = cache.BUILDS - before
    assert built["base_model"] == 1 and built["tokenizer"] == 1 and built["splits"] == 1
