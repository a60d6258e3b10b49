"""The task registry (harness.tasks): one Task per task module, the copies sweepfile keeps agree with it,
and the load-time checks that need the tasks (baseline names, reward functions) run from the tasks layer."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest
from helpers import ROOT, SWEEP, FakeRecipe, sweep

from harness import tasks
from harness.errors import ConfigError
from harness.study.run import run_sweep
from harness.sweepfile.load import load_sweep
from harness.sweepfile.schema import LOSS_METRICS, TASK_METRICS, SweepConfig
from harness.tasks import baselines, rewards, scoring

GRPO = ["trainer=grpo", "metric.name=reward", "metric.goal=maximize", "expect={}"]


def test_the_schema_copies_agree_with_the_registry():
    """sweepfile imports no task, so it keeps the names and metrics as plain data: the same as here."""
    assert get_args(SweepConfig.model_fields["task"].annotation) == tasks.names() == ("pricer", "text")
    assert set(TASK_METRICS) == set(tasks.names())
    for name in tasks.names():
        assert TASK_METRICS[name] == LOSS_METRICS + tasks.get(name).metrics, name


@pytest.mark.parametrize("name", ["pricer", "text"])
def test_each_task_reports_what_it_declares_and_names_what_it_has(name):
    task = tasks.get(name)
    metrics, per_row = scoring.score_generations(name, ["12", "x"], ["12.00", "30.00"], [{}, {"price": 30}])
    assert tuple(m for m in metrics if m in task.metrics) == task.metrics  # pricer: + its band counts
    assert len(per_row) == 2 and {"exact_match", "rougeL"} <= set(per_row[0])
    assert set(task.headline) <= set(task.metrics) and set(task.table) <= set(task.metrics)
    assert task.lower_is_better <= set(task.metrics)
    metric, reference = task.reference
    assert metric in task.metrics and reference in baselines.names(name)
    assert all(rewards.owner(r) is task for r in task.rewards)


def test_an_unknown_task_is_a_config_error_naming_the_tasks():
    with pytest.raises(ConfigError, match="unknown task 'prices'; the tasks are: pricer, text"):
        tasks.get("prices")
    with pytest.raises(ConfigError, match="unknown task"):
        scoring.score_generations("prices", ["1"], ["1"], None)


def test_the_sweep_file_layer_imports_no_task():
    code = (
        "import sys, harness.sweepfile.load; print([m for m in sys.modules if m.startswith('harness.tasks')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_check_names_baselines_and_rewards_the_task_does_not_have():
    cfg = load_sweep(SWEEP, ["expect={mae: '< baseline.medain', hit_rate: {min: baseline.mean}}"])
    assert tasks.check(cfg) == [
        "  - expect: mae: 'medain' is not a baseline of task 'pricer' (did you mean 'median'?); choose from: "
        "baseline.mean, baseline.median, baseline.bag_of_words, baseline.untrained_base"
    ]
    custom = load_sweep(SWEEP, ["expect={mae: '< baseline.mine'}", "evaluation.custom=[os.path:join]"])
    assert tasks.check(custom) == []  # custom metric modules may register baselines: checked at the end

    text = load_sweep(
        SWEEP, [*GRPO, "task=text", "training.reward_functions=[price_accuracy, number_format]"]
    )
    assert tasks.check(text) == [
        "  - training.reward_functions: price_accuracy reads the pricer's price column; use task: pricer"
    ]
    none = load_sweep(SWEEP, [*GRPO, "training.reward_functions=[]"])
    assert tasks.check(none) == [
        "  - training.reward_functions: trainer grpo needs at least one reward function "
        "(builtin: price_accuracy, number_format; or module:function beside the sweep file)"
    ]


def test_load_reports_the_tasks_problems_with_the_schemas_and_run_refuses_them(tmp_path):
    bad = [f"results_dir={tmp_path}", "expect={mae: '< baseline.medain', hit_rat: '> 0.1'}"]
    with pytest.raises(ConfigError) as e:
        load_sweep(SWEEP, bad, checks=tasks.check)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{SWEEP}: 2 problems:"
    assert lines[1].startswith(
        "  - expect: hit_rat: not a metric task 'pricer' reports (did you mean 'hit_rate'?)"
    )
    assert lines[2].startswith("  - expect: mae: 'medain' is not a baseline of task 'pricer'")
    # a config loaded without the checks: run_sweep refuses it before writing anything
    cfg = sweep(tmp_path, "expect={mae: '< baseline.medain'}")
    with pytest.raises(ConfigError, match="'medain' is not a baseline of task 'pricer'"):
        run_sweep(cfg, recipe=FakeRecipe())
    assert not any(tmp_path.iterdir())
