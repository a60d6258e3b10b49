"""The pytest plugin, run through pytester: sweep files as test items, -k/-m/-x/--junitxml, smoke mode.

Every test but the last uses a fake recipe (`--sweep-recipe`); the last one smoke-runs the real QLoRA
recipe on the builtin model, which is what `pytest sweeps/` does for a user.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import datasets  # noqa: F401  (see below)
import pytest
import yaml

import harness.study.run  # noqa: F401
import harness.study.storage
import harness.trial.recipe  # noqa: F401

# datasets, the study side (optuna, SQLAlchemy) and the recipe stack are imported above on purpose:
# pytester's in-process runs drop the modules first imported inside them, and datasets (pyarrow extension
# types) and SQLAlchemy (its cached traversal internals) cannot be imported twice in one process. The
# plugin itself imports neither until a sweep runs, so nothing else in this process would have. SQLAlchemy
# loads its SQLite dialect and event machinery on the first connection: open one here, outside.
with tempfile.TemporaryDirectory() as _warm:
    harness.study.storage.open_storage(f"sqlite:///{_warm}/warm.db")

pytest_plugins = ["pytester"]

# eval_loss 1 + 10/step in every trial (3.5 at the smoke run's step 4), hit_rate 0.5. pytester runs in this
# process, where tests/ is on sys.path.
FAKE_RECIPE = "from helpers import steady_recipe as recipe\n"


def write(pytester: pytest.Pytester, rel: str, **fields: Any) -> Path:
    data: dict[str, Any] = {
        "parameters": {"learning_rate": {"values": [0.001, 0.002]}},
        "budget": {"n_trials": 3, "max_steps": 20, "eval_steps": 10},
        **fields,
    }
    path = pytester.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A repo with two sweeps (one passes, one cannot), a search space, and YAML that is no sweep."""
    pytester.makepyfile(fakerecipe=FAKE_RECIPE)
    write(pytester, "sweeps/good.yaml", name="good", tags=["fast", "pricer"], expect={"eval_loss": "< 5"})
    write(
        pytester,
        "sweeps/nested/hopeless.yaml",
        name="hopeless",
        tags=["slow"],
        expect={"eval_loss": "< 0.001"},
    )
    (pytester.path / "sweeps/space.yaml").write_text("parameters: {r: {values: [4, 8]}}\n")
    (pytester.path / "ci/workflow.yaml").parent.mkdir()
    (pytester.path / "ci/workflow.yaml").write_text("on: push\njobs: {test: {runs-on: ubuntu}}\n")
    (pytester.path / "ci/params.yaml").write_text("parameters: {lr: 1}\nsteps: 3\n")  # not a sweep key
    (pytester.path / "ci/sweep.yaml").write_text(  # W&B's, for its agent: `sweep convert` makes it one
        "program: train.py\nmethod: bayes\nmetric: {name: eval/loss}\nparameters: {lr: {values: [1]}}\n"
    )
    write(pytester, "experiments/mine.yaml", name="mine", search_space=None)  # content rule
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--sweep-recipe", "fakerecipe:recipe", *args)


def test_the_plugin_is_registered_through_its_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("harness"), "run `pip install -e .` to register pytest11"


def test_collects_sweep_files_only(project):
    result = run(project, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["experiments/mine.yaml::mine", "sweeps/good.yaml::good"])
    result.stdout.fnmatch_lines(["sweeps/nested/hopeless.yaml::hopeless", "3 tests collected*"])
    assert "space.yaml" not in result.stdout.str() and "ci/" not in result.stdout.str()
    assert result.ret == 0

    result = run(project, "--collect-only", "-q", "--sweep-collect=folders")
    result.stdout.fnmatch_lines(["2 tests collected*"])
    assert "mine" not in result.stdout.str()
    assert (
        run(project, "--collect-only", "-q", "--sweep-collect=off").ret == pytest.ExitCode.NO_TESTS_COLLECTED
    )


def test_a_passing_and_a_failing_sweep(project):
    result = run(project, "sweeps")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    # The failure is the expectation, readable, not a traceback into harness internals.
    result.stdout.fnmatch_lines(
        [
            "*_ sweep hopeless (smoke) _*",
            "eval_loss < 0.001 (measured 3.5)",
            "  FAIL eval_loss < 0.001 (measured 3.5)",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED sweeps/nested/hopeless.yaml::hopeless - *eval_loss < 0.001*"])
    assert "Traceback" not in out and "harness/collect.py" not in out
    # Smoke mode: 1 trial, 4 steps, in results/.smoke/ (never the real study).
    assert (project.path / "results/.smoke/good/study.db").exists()
    assert not (project.path / "results/good").exists()
    assert "1 trial(s) run in" in out


def test_full_mode_uses_the_sweep_budget(project):
    result = run(project, "sweeps/good.yaml", "--sweep-full", "--sweep-results-dir", "out", "-s")
    result.assert_outcomes(passed=1)
    assert "3 trial(s) run in" in result.stdout.str()
    assert (project.path / "out/good/study.db").exists()


def test_k_and_m_select_by_tag_and_name(project):
    run(project, "-k", "fast").assert_outcomes(passed=1)
    run(project, "-k", "hopeless").assert_outcomes(failed=1)
    run(project, "-k", "not slow and sweeps").assert_outcomes(passed=1)
    run(project, "-m", "slow").assert_outcomes(failed=1)


def test_x_stops_at_the_first_failure(project):
    write(project, "sweeps/a_first.yaml", name="a_first", expect={"hit_rate": "> 0.9"})
    result = run(project, "sweeps", "-x")
    result.assert_outcomes(failed=1)
    assert "a_first" in result.stdout.str() and "stopping after 1 failures" in result.stdout.str()


def test_junitxml_records_the_failed_expectation(project):
    result = run(project, "sweeps", "--junitxml=report.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    xml = (project.path / "report.xml").read_text()
    assert 'failure message="eval_loss &lt; 0.001 (measured 3.5)' in xml
    assert '<property name="eval_loss &lt; 5" value="PASS: measured 3.5"' in xml


def test_an_invalid_sweep_file_is_a_collection_error_without_traceback(project):
    write(project, "sweeps/typo.yaml", name="typo", budget={"n_trails": 3})
    result = run(project, "sweeps")
    result.stdout.fnmatch_lines(["*ERROR collecting sweeps/typo.yaml*", "*budget.n_trails: unknown key*"])
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_real_smoke_run(pytester):
    """No fake: the builtin 4-bit model really trains for a few steps and its metrics are checked."""
    write(
        pytester,
        "sweeps/real.yaml",
        name="real",
        tags=["pricer"],
        # Smoke mode only ever lowers budgets: these make the real run cheaper still (2 steps, 2 evals).
        parameters={"r": {"value": 4}, "per_device_train_batch_size": {"value": 2}},
        budget={"n_trials": 4, "max_steps": 2, "eval_steps": 1},
        dataset={"max_train_rows": 64, "max_eval_rows": 8},
        evaluation={"samples": 2, "max_new_tokens": 4},
        expect={"eval_loss": "< 50", "perplexity": {"min": 1}, "hit_rate": {"min": 0}},
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "sweeps", "-rA")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "results/.smoke/real/study.db").exists()
