"""Budgets in epochs (issue 27, item 3): `budget.epochs` instead of `max_steps`, `eval_steps` as a fraction
of an epoch, each trial's steps derived from its own batch size, and the pruner counting evals then."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import ROOT, SWEEP

from harness.errors import ConfigError
from harness.sweepfile.load import load_sweep
from harness.sweepfile.schema import DEFAULT_MAX_STEPS, BudgetConfig


def sweep_file(tmp_path: Path, budget: dict, **changes) -> Path:
    """sweeps/pricer.yaml with its budget replaced by `budget` (n_trials kept) and `changes` set."""
    data = yaml.safe_load(SWEEP.read_text())
    data["search_space"] = str(ROOT / "search_spaces/qlora-tiny.yaml")
    data["results_dir"] = str(tmp_path)
    data["budget"] = {"n_trials": data["budget"]["n_trials"], **budget}
    data.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------------------------------
# The schema: exactly one of max_steps / epochs


def test_a_file_with_neither_keeps_the_default_max_steps(tmp_path):
    cfg = load_sweep(sweep_file(tmp_path, {"eval_steps": 25}))
    assert cfg.budget.max_steps == DEFAULT_MAX_STEPS == 150 and cfg.budget.epochs is None
    assert not cfg.budget.per_trial


def test_shipped_max_steps_file_is_unchanged():
    cfg = load_sweep(SWEEP)
    assert (cfg.budget.max_steps, cfg.budget.epochs, cfg.budget.eval_steps) == (300, None, 50)
    assert cfg.budget.steps(4000, 4, 1) == (300, 50)  # the rows and batch do not matter in steps


def test_epochs_only(tmp_path):
    cfg = load_sweep(sweep_file(tmp_path, {"epochs": 0.5, "eval_steps": 0.1}))
    assert cfg.budget.max_steps is None and cfg.budget.epochs == 0.5 and cfg.budget.eval_steps == 0.1
    assert cfg.budget.per_trial and cfg.budget.unit_text == "epochs=0.5"


def test_both_is_one_error_naming_both_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_sweep(sweep_file(tmp_path, {"max_steps": 100, "epochs": 1.0}))
    assert "max_steps" in str(e.value) and "epochs" in str(e.value)
    # An override on a file that budgets in steps: the same error, and max_steps=null switches units.
    path = sweep_file(tmp_path, {"max_steps": 100})
    with pytest.raises(ConfigError, match="max_steps and epochs are both given"):
        load_sweep(path, ["budget.epochs=0.5"])
    assert load_sweep(path, ["budget.max_steps=null", "budget.epochs=0.5"]).budget.epochs == 0.5


@pytest.mark.parametrize(
    "budget, problem",
    [
        ({"epochs": 0}, "greater than 0"),
        ({"epochs": -0.5}, "greater than 0"),
        ({"epochs": 0.5, "eval_steps": 1.5}, "fraction of an epoch below 1"),
        ({"eval_steps": 0}, "greater than 0"),
    ],
)
def test_bad_budgets_are_errors_at_load(tmp_path, budget, problem):
    with pytest.raises(ConfigError, match=problem):
        load_sweep(sweep_file(tmp_path, budget))


def test_eval_steps_forms():
    assert BudgetConfig(eval_steps=25.0).eval_steps == 25 and isinstance(
        BudgetConfig(eval_steps=25.0).eval_steps, int
    )
    assert BudgetConfig(eval_steps=0.25).eval_steps == 0.25
    assert BudgetConfig(eval_steps=7).eval_steps == 7


# ----------------------------------------------------------------------------------------------------
# The step arithmetic


@pytest.mark.parametrize(
    "epochs, rows, batch, accumulation, devices, expected",
    [
        (0.02, 1000, 4, 1, 1, 5),
        (0.02, 1000, 8, 1, 1, 3),  # 2.5 steps: the last partial step is trained
        (0.5, 4000, 4, 4, 1, 125),
        (0.5, 4000, 4, 4, 2, 63),  # two ranks share each step
        (0.1, 10, 16, 1, 1, 1),  # at least one step
        (3.0, 1000, 16, 2, 1, 94),
    ],
)
def test_epochs_become_steps_for_the_trials_batch(epochs, rows, batch, accumulation, devices, expected):
    b = BudgetConfig(epochs=epochs)
    max_steps, eval_steps = b.steps(rows, batch, accumulation, devices)
    assert max_steps == expected == math.ceil(Fraction(str(epochs)) * rows / (batch * accumulation * devices))
    assert eval_steps == 25  # an int eval_steps stays steps


def test_a_fractional_eval_steps_is_a_share_of_one_epoch_in_steps():
    b = BudgetConfig(epochs=1.0, eval_steps=0.1)
    assert b.steps(1000, 4, 1) == (250, 25)
    assert b.steps(1000, 8, 1) == (125, 12)  # 12.5 -> 12: an eval comes no later than the share
    assert b.steps(10, 8, 1) == (2, 1)  # at least one step
    # With max_steps the budget stays steps; the interval is still a share of the trial's epoch.
    assert BudgetConfig(max_steps=40, eval_steps=0.5).steps(100, 5, 1) == (40, 10)
    assert b.max_evals() == 11 and BudgetConfig(epochs=1.0).max_evals() is None


def test_training_args_and_eval_loop_use_the_derived_steps(tmp_path):
    from types import SimpleNamespace

    from harness.core import ranks
    from harness.core.spec import TrialSpec
    from harness.trial.recipes import common

    cfg = load_sweep(sweep_file(tmp_path, {"epochs": 0.5, "eval_steps": 0.25}), ["evaluation.samples=0"])
    spec = TrialSpec.build(cfg, {"per_device_train_batch_size": 8}, 0, tmp_path / "t")
    ga = spec.training.gradient_accumulation_steps
    fixtures = SimpleNamespace(train=list(range(960)))
    expected = (math.ceil(0.5 * 960 / (8 * ga)), max(1, math.floor(0.25 * 960 / (8 * ga))))
    assert common.trial_steps(spec, fixtures) == expected  # type: ignore[arg-type]
    args = common.training_args(spec, fixtures, cuda=False)  # type: ignore[arg-type]
    assert args["max_steps"] == expected[0]
    assert args["logging_steps"] == max(1, min(10, expected[1]))
    assert ranks.group_size() == 1  # torch.distributed is not initialised here


# ----------------------------------------------------------------------------------------------------
# The pruner: in evals when a trial's steps depend on its batch size


def test_pruner_resources_with_epochs(tmp_path):
    from harness.study.sampler import make_pruner

    def pruner(budget: dict, **terminate):
        cfg = load_sweep(sweep_file(tmp_path, budget, early_terminate={"min_iter": 2, "eta": 3, **terminate}))
        return make_pruner(cfg)

    sh = pruner({"epochs": 1.0, "eval_steps": 0.1}, type="successive_halving")
    assert isinstance(sh, optuna.pruners.SuccessiveHalvingPruner)
    assert sh._min_resource == 2  # min_iter evals (trials report by eval index)
    hb = pruner({"epochs": 1.0, "eval_steps": 0.1}, type="hyperband")
    assert (hb._min_resource, hb._max_resource) == (2, 11)  # the most evals a trial can run
    hb_auto = pruner({"epochs": 1.0, "eval_steps": 20}, type="hyperband")
    assert hb_auto._max_resource == "auto"  # evals of a trial unknown before the data is loaded
    median = pruner({"epochs": 1.0}, type="median", n_warmup_steps=3)
    assert median._n_warmup_steps == 3
    # In steps, as before.
    steps = pruner({"max_steps": 300, "eval_steps": 50}, type="hyperband")
    assert (steps._min_resource, steps._max_resource) == (100, 300)
    assert pruner({"max_steps": 300, "eval_steps": 50}, type="successive_halving")._min_resource == 100


def test_smoke_mode_budgets_a_few_steps_whatever_the_unit(tmp_path):
    from harness.suite.collect import SMOKE, smoke_config

    cfg = load_sweep(sweep_file(tmp_path, {"epochs": 2.0, "eval_steps": 0.1}))
    b = smoke_config(cfg).budget
    assert (b.max_steps, b.epochs, b.eval_steps) == (SMOKE["max_steps"], None, SMOKE["eval_steps"])


# ----------------------------------------------------------------------------------------------------
# What it must show: budget.epochs trials run exactly the derived steps for their sampled batch size


def test_epochs_budget_on_the_tiny_model_runs_the_derived_steps(tmp_path):
    from harness.core import attrs
    from harness.results.view import trials_frame
    from harness.study.run import run_sweep
    from harness.trial import session

    data = yaml.safe_load(SWEEP.read_text())
    data.pop("search_space")
    data.update(
        results_dir=str(tmp_path),
        method="grid",
        parameters={"per_device_train_batch_size": {"values": [4, 8]}},
        budget={"n_trials": 2, "epochs": 0.02, "eval_steps": 0.01},
        early_terminate={"type": "none"},
        early_stopping={"patience": 0},
        expect={},
    )
    data["dataset"] = {**data["dataset"], "max_eval_rows": 16, "max_train_rows": 1000}
    data["evaluation"] = {**data["evaluation"], "samples": 0}
    path = tmp_path / "epochs.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_sweep(path)
    outcome = run_sweep(cfg)
    assert outcome.ran == 2
    train_rows = len(session.get(cfg).train)  # the trial data's own rows, not a number written here
    assert train_rows > 0
    seen = {}
    for trial in outcome.study.trials:
        folder = Path(attrs.trial_dir(trial) or "")
        params = json.loads((folder / "params.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        bs = params["training"]["per_device_train_batch_size"]
        ga = params["training"]["gradient_accumulation_steps"]
        expected = math.ceil(Fraction("0.02") * train_rows / (bs * ga))
        every = max(1, math.floor(Fraction("0.01") * train_rows / (bs * ga)))
        assert metrics["steps_run"] == expected, (bs, ga, train_rows)
        assert (params["max_steps"], params["eval_steps"]) == (expected, every)
        assert (metrics["max_steps"], metrics["eval_steps"]) == (expected, every)
        assert (attrs.max_steps(trial), attrs.eval_steps(trial), attrs.steps_run(trial)) == (
            expected,
            every,
            expected,
        )
        # Evals at every `every` steps and at the end; reported to Optuna by eval index 1..n.
        evals = [h["step"] for h in metrics["history"]]
        assert evals == sorted({*range(every, expected + 1, every), expected})
        assert sorted(trial.intermediate_values) == list(range(1, len(evals) + 1))
        seen[bs] = expected
    assert set(seen) == {4, 8} and seen[4] > seen[8]  # the same data: fewer steps with the larger batch
    frame = trials_frame(outcome.study).set_index("param_per_device_train_batch_size")
    assert frame.loc[8, attrs.MAX_STEPS] == seen[8] and frame.loc[4, "steps_run"] == seen[4]


def test_status_shows_a_running_trials_own_steps(tmp_path):
    """With epochs a trial reports by eval index; `sweep status` shows its step out of its own max_steps."""
    from helpers import sweep

    from harness.core import attrs
    from harness.results import status
    from harness.study import resume
    from harness.study import storage as st

    cfg = sweep(tmp_path, "budget.max_steps=null", "budget.epochs=0.5", "budget.eval_steps=0.25")
    url = st.storage_url(cfg)
    study = resume.open_study(cfg, st.open_storage(url), url)
    trial = study.ask()
    trial.set_user_attr(attrs.MAX_STEPS, 37)
    trial.set_user_attr(attrs.EVAL_STEPS, 9)
    trial.report(2.0, 1)
    trial.report(1.5, 2)
    view = status.collect(study)
    assert view.max_steps is None and view.running[0].step == 18  # eval 2 x 9 steps
    running = next(line for line in status.status_lines(study, url) if line.startswith("  running:"))
    assert "step 18/37" in running
