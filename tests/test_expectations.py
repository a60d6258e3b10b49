"""`expect:` blocks: parsing (malformed ones are load-time user errors) and PASS/FAIL against metrics."""

from __future__ import annotations

import math

import pytest
from helpers import FakeRecipe, sweep

from harness.errors import ConfigError
from harness.study.run import run_sweep
from harness.suite.verdicts import check, check_study
from harness.sweepfile.expect import Condition, Expectation, parse_expectations
from harness.sweepfile.load import load_sweep


def one(spec, metric: str = "eval_loss", **kw) -> Expectation:
    (e,) = parse_expectations({metric: spec, **kw})
    return e


@pytest.mark.parametrize(
    ("text", "passing", "failing"),
    [
        ("< 2.5", 2.4, 2.5),
        ("<= 2.5", 2.5, 2.6),
        ("> 0.3", 0.31, 0.3),
        (">= 0.3", 0.3, 0.29),
        ("== 0", 0.0, 0.1),
        ("!= 0", 0.1, 0.0),
        ("<1e-3", 1e-4, 1e-3),  # no space, scientific notation
    ],
)
def test_string_conditions(text, passing, failing):
    e = one(text)
    assert e.holds(passing) and not e.holds(failing)


def test_mapping_bounds_are_inclusive_and_combine():
    e = one({"min": 1, "max": 12}, "perplexity")
    assert e.conditions == (Condition(">=", 1.0), Condition("<=", 12.0))
    assert e.holds(1) and e.holds(12) and not e.holds(12.01) and not e.holds(0.5)
    assert e.describe() == "perplexity >= 1 and <= 12"
    assert one({"max": 12}, "perplexity").conditions == (Condition("<=", 12.0),)


def test_nan_never_passes():
    assert not one("!= 0").holds(math.nan)


def test_scope_per_expectation_and_per_block():
    a, b = parse_expectations({"scope": "all", "eval_loss": "< 3", "mae": {"max": 40, "scope": "best"}})
    assert (a.scope, b.scope) == ("all", "best")
    assert a.describe() == "eval_loss < 3 in every trial"
    assert parse_expectations({"eval_loss": "< 3"})[0].scope == "best"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"eval_loss": "=< 2.5"}, "eval_loss: operator '=<' in '=< 2.5': did you mean '<='?"),
        ({"eval_loss": "<< 2.5"}, "eval_loss: '<< 2.5': unknown operator"),
        ({"eval_loss": "~ 2.5"}, "eval_loss: '~ 2.5' does not start with an operator"),
        ({"eval_loss": "< two"}, "eval_loss: 'two' in '< two' is not a number"),
        ({"eval_loss": "< nan"}, "nan is not a threshold"),
        ({"eval_loss": 2.5}, "eval_loss: a bare number is ambiguous"),
        ({"eval_loss": ["< 2"]}, "eval_loss: expected a condition"),
        ({"perplexity": {"max": "12"}}, "perplexity: max: '12' is not a number"),
        ({"perplexity": {"maxx": 12}}, "perplexity: unknown key 'maxx' (did you mean 'max'?)"),
        ({"perplexity": {}}, "perplexity: give min:, max:, or both"),
        ({"perplexity": {"min": 5, "max": 1}}, "perplexity: min 5 is above max 1"),
        ({"perplexity": {"max": 3, "scope": "worst"}}, "perplexity: scope 'worst' is not one of best, all"),
        ({"scope": "some", "eval_loss": "< 2"}, "scope: 'some' is not one of best, all"),
        ({"smoke": "no", "eval_loss": "< 2"}, "smoke: must be true or false"),
        ({"perplx": "< 2"}, "perplx: not a metric task 'pricer' reports (did you mean 'perplexity'?)"),
    ],
)
def test_malformed_expectations_are_config_errors(block, message):
    with pytest.raises(ConfigError) as e:
        parse_expectations(block)
    assert message in str(e.value)


def test_metric_names_depend_on_the_task_and_custom_metrics():
    parse_expectations({"hit_rate": ">= 0.3"}, task="pricer")
    with pytest.raises(ConfigError, match="hit_rate: not a metric task 'text' reports"):
        parse_expectations({"hit_rate": ">= 0.3"}, task="text")
    # Custom metric functions report names nobody can know before they run.
    assert parse_expectations({"my_score": "> 0"}, task="text", custom_metrics=True)[0].metric == "my_score"


def test_every_problem_is_listed_at_load_time_with_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nexpect:\n  eval_loss: '=< 2.5'\n  hit_rat: '> 0.3'\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    text = str(e.value)
    assert str(path) in text and "expect:" in text
    assert "eval_loss: operator '=<'" in text and "hit_rat: not a metric" in text and "2 problems" in text


def test_task_comes_from_the_same_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\ntask: text\nexpect:\n  mae: '< 3'\n")
    with pytest.raises(ConfigError, match="mae: not a metric task 'text' reports"):
        load_sweep(path)
    path.write_text("name: t\ntask: text\nparameters: {r: {value: 4}}\nexpect:\n  rougeL: '>= 0.1'\n")
    assert load_sweep(path).expect == {"rougeL": ">= 0.1"}  # the raw block is kept as written


# ----------------------------------------------------------------------------------------------------
# Checking


def test_check_reports_pass_fail_and_measured_value():
    es = parse_expectations({"eval_loss": "< 2.5", "hit_rate": ">= 0.3", "rouge1": "> 0"})
    ok, bad, missing = check(es, {"eval_loss": 2.31, "hit_rate": 0.12})
    assert ok.passed and ok.measured == 2.31 and ok.line() == "PASS eval_loss < 2.5 (measured 2.31)"
    assert not bad.passed and bad.line() == "FAIL hit_rate >= 0.3 (measured 0.12)"
    assert not missing.passed and missing.line() == "FAIL rouge1 > 0 (not measured)"


def test_check_without_a_complete_trial_fails():
    (o,) = check(parse_expectations({"eval_loss": "< 2.5"}), None)
    assert not o.passed and o.detail == "no complete trial"


def test_scope_all_names_the_offending_trial():
    es = parse_expectations({"eval_loss": {"max": 3, "scope": "all"}})
    trials = [(0, {"eval_loss": 2.0}), (1, {"eval_loss": 3.5}), (2, {"eval_loss": 2.5})]
    (o,) = check(es, {"eval_loss": 2.0}, trials)
    assert not o.passed and o.detail == "trial 1: 3.5"
    (o,) = check(es, {"eval_loss": 2.0}, [trials[0], trials[2]])
    assert o.passed and o.detail == "2 trials: 2..2.5"
    (o,) = check(es, {"eval_loss": 2.0}, [*trials, (3, {})])
    assert not o.passed


def test_smoke_false_only_checks_the_metric_was_measured_in_smoke_runs():
    es = parse_expectations({"smoke": False, "eval_loss": "< 0.1", "rouge1": "> 0"})
    loss, rouge = check(es, {"eval_loss": 5.0}, smoke=True)
    assert loss.passed and "threshold not checked in smoke runs" in loss.detail
    assert not rouge.passed and rouge.detail == "not measured"  # a broken pipeline still fails
    loss, _ = check(es, {"eval_loss": 5.0}, smoke=False)
    assert not loss.passed  # full runs check the threshold


# ----------------------------------------------------------------------------------------------------
# Against a real study (fake recipe)


def test_check_study_uses_the_best_trial_and_every_complete_trial(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=4", "early_terminate.type=none")
    # eval_loss depends on the learning rate only (1 + |log10(lr) + 3|); hit_rate is fixed.
    study = run_sweep(cfg, recipe=FakeRecipe(base=1.0, decay=0.0, extra={"hit_rate": 0.25})).study
    block = {"eval_loss": f"== {study.best_value}", "perplexity": {"max": 1e9, "scope": "all"}}
    es = parse_expectations({**block, "hit_rate": "> 0.3"})
    best, every, hit = check_study(es, study, "eval_loss")
    assert best.passed and best.measured == pytest.approx(study.best_value)
    assert every.passed and every.detail.startswith("4 trials: ")
    assert not hit.passed and hit.measured == 0.25
