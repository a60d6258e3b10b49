"""Task baselines (harness.tasks.baselines): measured once per study on the rows trials are scored on, shown
beside the best trial (closing summary, report, compare), a warning when the fine-tune loses to the
constant median, and `expect:` thresholds that name a baseline."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import pytest
from helpers import SWEEP, FakeRecipe, reporting_recipe, sweep
from optuna.trial import TrialState
from rich.console import Console

from harness import tasks
from harness.cli import main
from harness.core import trialdir
from harness.errors import ConfigError
from harness.results import compare, report
from harness.results import view as studyview
from harness.study import run as runner
from harness.study.run import run_sweep
from harness.suite.session import print_summary
from harness.suite.verdicts import check
from harness.sweepfile.expect import parse_expectations
from harness.sweepfile.load import load_sweep
from harness.tasks import baselines
from harness.tasks.pricer import price_metrics
from harness.trial.datasets import generation_subset, load_splits


def median_mae(cfg) -> tuple[float, float]:
    """The median baseline worked out by hand from the data: (train median, mae on the generation rows)."""
    data = load_splits(cfg)
    median = statistics.median(float(p) for p in data.train["price"])
    rows = generation_subset(data.validation, cfg)
    return median, sum(abs(median - float(r["price"])) for r in rows) / len(rows)


def section(html: str, section_id: str) -> str:
    start = html.index(f'<section id="{section_id}">')
    return html[start : html.index("</section>", start)]


# ----------------------------------------------------------------------------------------------------
# The real recipe


def test_real_sweep_measures_baselines_on_the_trials_rows_and_shows_them(tiny):
    cfg = tiny("budget.n_trials=1")
    out = io.StringIO()
    console = Console(file=out, width=250)
    outcome = run_sweep(cfg, console=console)
    print_summary(cfg, outcome, console)  # what `sweep run` prints under the last trial
    study = outcome.study
    stored = study.user_attrs["task_baselines"]
    assert list(stored) == ["mean", "median", "bag_of_words"]

    # Recomputable: the median baseline's mae is mean |median - price| over the generation rows, ...
    median, mae = median_mae(cfg)
    assert stored["median"]["mae"] == pytest.approx(mae, rel=1e-12)
    # ... those rows are the ones the trial was scored on, and every stored number is the score of the
    # answers in baselines.jsonl.
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    rows = trialdir.read_jsonl(cfg.study_dir / "baselines.jsonl")
    generations = trialdir.read_generations(trialdir.trial_dir(cfg.study_dir, trial.number))
    assert [r["prompt"] for r in rows] == [g["prompt"] for g in generations] and len(rows) == 8
    assert {float(r["median"]) for r in rows} == {median}
    truth = [r["price_true"] for r in rows]
    for name in ("mean", "median", "bag_of_words"):
        rescored = price_metrics([float(r[name]) for r in rows], truth)
        assert stored[name]["mae"] == pytest.approx(rescored["mae"]), name
        assert stored[name]["hit_rate"] == pytest.approx(rescored["hit_rate"]), name
    assert stored["bag_of_words"]["mae"] < stored["median"]["mae"]  # word counts do know something

    # The closing summary sets the best trial beside them (the untrained base is the last rung).
    tuned = trial.user_attrs["metrics"]["mae"]
    b = {k: v["mae"] for k, v in stored.items()}
    untrained = study.user_attrs["baseline_metrics"]["mae"]
    line = (
        f"best trial {trial.number}: mae {tuned:.4g} | baselines: mean {b['mean']:.4g}, "
        f"median {b['median']:.4g}, bag_of_words {b['bag_of_words']:.4g}, untrained_base {untrained:.4g}"
    )
    assert line in out.getvalue()

    # report.md has the ladder and the best trial in one table.
    report.write_report(studyview.load_study_data(cfg.name, cfg.results_dir), ["md"])
    md = (cfg.study_dir / "report.md").read_text()
    table = md.split("## Baselines", 1)[1].split("##", 1)[0]
    assert "| median |" in table and "| bag_of_words |" in table and f"| best trial {trial.number} |" in table
    assert f"{b['median']:.4g}" in table


# ----------------------------------------------------------------------------------------------------
# Fake recipes: the baselines come from the data alone


@pytest.mark.parametrize(("mae", "code"), [(400.0, 1), (1.0, 0)])
def test_losing_to_the_median_warns_and_fails_an_expectation(tmp_path, monkeypatch, capsys, mae, code):
    recipe = FakeRecipe(base=1.0, lr_weight=0.0, extra={"mae": mae, "hit_rate": 0.5})
    monkeypatch.setattr(runner, "real_recipe", lambda cfg: recipe)
    argv = ["run", str(SWEEP), "--results-dir", str(tmp_path), "budget.n_trials=2", "budget.max_steps=20"]
    assert main([*argv, "expect.mae=< baseline.median"]) == code
    out = capsys.readouterr().out
    _, reference = median_mae(load_sweep(SWEEP))
    verdict = "FAIL" if code else "PASS"
    assert f"{verdict} mae < baseline.median (measured {mae:g}, baseline.median {reference:.6g})" in out
    warned = "does not beat the median baseline on mae" in out
    assert warned == (mae > reference)
    if warned:
        assert "budget.max_steps" in out and "model.name" in out and "metric: {name: mae" in out
        report.write_report(studyview.load_study_data("pricer", str(tmp_path)), ["md"])
        assert "does not beat the median baseline" in (tmp_path / "pricer/report.md").read_text()


def test_an_unknown_baseline_is_a_load_error_listing_the_valid_ones(tmp_path, capsys):
    argv = ["run", str(SWEEP), "--results-dir", str(tmp_path / "r"), "expect.mae=< baseline.medain"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'medain' is not a baseline of task 'pricer' (did you mean 'median'?)" in err
    assert "baseline.mean, baseline.median, baseline.bag_of_words, baseline.untrained_base" in err
    assert not (tmp_path / "r").exists()
    # the names are the task's: sweepfile parses `baseline.NAME`, harness.tasks.check judges it at load
    text = ["task=text", "metric.name=eval_loss", "expect={rougeL: {min: baseline.median}}"]
    with pytest.raises(ConfigError, match="expect: rougeL: 'median' is not a baseline of task 'text'"):
        load_sweep(SWEEP, text, checks=tasks.check)
    assert load_sweep(SWEEP, text).expectations  # without the tasks' checks: parsed, not judged
    # custom metrics may register baselines: any name is accepted at load, then checked against the study
    (e,) = parse_expectations({"rougeL": "> baseline.mine"}, task="text", custom_metrics=True)
    (o,) = check([e], {"rougeL": 0.5}, baselines={"copy_input": {"rougeL": 0.2}})
    assert not o.passed and o.detail == "baseline.mine has no rougeL in this study (baselines: copy_input)"


def test_scope_all_and_bounds_resolve_against_the_baseline():
    (e,) = parse_expectations({"mae": {"max": "baseline.median", "scope": "all"}})
    assert e.describe() == "mae <= baseline.median in every trial"
    ladder = {"median": {"mae": 50.0}}
    (ok,) = check([e], {"mae": 10.0}, [(0, {"mae": 10.0}), (1, {"mae": 50.0})], baselines=ladder)
    (bad,) = check([e], {"mae": 10.0}, [(0, {"mae": 10.0}), (1, {"mae": 51.0})], baselines=ladder)
    assert ok.passed and ok.detail == "2 trials: 10..50, baseline.median 50"
    assert not bad.passed and bad.detail == "trial 1: 51, baseline.median 50"


def test_smoke_runs_still_measure_baselines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "real_recipe", lambda cfg: FakeRecipe(extra={"mae": 1.0}))
    assert main(["run", str(SWEEP), "--smoke", "--results-dir", str(tmp_path)]) == 0
    assert "PASS" in capsys.readouterr().out
    study = studyview.load_study_data("pricer", str(tmp_path / ".smoke")).study
    assert set(study.user_attrs["task_baselines"]) == {"mean", "median", "bag_of_words"}
    assert len(trialdir.read_jsonl(tmp_path / ".smoke/pricer/baselines.jsonl")) == 4  # smoke: 4 samples


def test_report_plots_and_compare_carry_the_baselines(tmp_path):
    run_sweep(sweep(tmp_path, "budget.n_trials=2", "metric.name=mae"), recipe=reporting_recipe)
    run_sweep(sweep(tmp_path, "budget.n_trials=2", "name=pricer-b", "seed=7"), recipe=reporting_recipe)
    data = studyview.load_study_data("pricer", str(tmp_path))
    median = data.study.user_attrs["task_baselines"]["median"]
    html = report.report_html(data, {}, "")
    assert "median" in section(html, "baselines") and "bag_of_words" in section(html, "baselines")
    # mae is the objective: the optimisation history has a line per baseline at its mae
    assert f"median baseline {median['mae']:.4g}" in section(html, "optimisation-history")
    # the predicted-vs-true scatter: the constant median as a line, bag-of-words as points
    answer = trialdir.read_jsonl(tmp_path / "pricer/baselines.jsonl")[0]["median"]
    scatter = section(html, "price-scatter")
    assert f"median baseline ({float(answer):.4g})" in scatter and "bag_of_words baseline" in scatter
    # eval_loss is pricer-b's objective: no baseline has it, so its history has no lines
    other = studyview.load_study_data("pricer-b", str(tmp_path))
    assert "baseline" not in section(report.report_html(other, {}, ""), "optimisation-history")

    datas = [data, other]
    frame = compare.baselines_by_study(datas)
    assert list(frame["study"]) == ["pricer"] * 4 + ["pricer-b"] * 4
    assert list(frame["model"])[:3] == ["mean", "median", "bag_of_words"]
    assert frame["model"].iloc[3] == f"best trial {data.best().number}"
    assert "## Baselines" in compare.compare_markdown(datas)


def test_text_baselines_and_a_registered_one(tmp_path, monkeypatch):
    monkeypatch.setitem(baselines.REGISTRY, "text", dict(baselines.REGISTRY["text"]))

    @baselines.register("text", "first_word", about="the prompt's first word")
    def first_word(train, rows):
        return [r["prompt"].split()[0] for r in rows]

    cfg = load_sweep(SWEEP, ["task=text", "metric.name=eval_loss", "expect={}"])
    train = [{"prompt": "q", "completion": c} for c in ("yes", "no", "yes")]
    rows = [{"prompt": "yes please", "completion": "yes"}, {"prompt": "no way", "completion": "no"}]
    measured = baselines.measure(cfg, train, rows)
    m = measured.metrics
    assert list(m) == ["empty", "copy_input", "most_frequent", "first_word"]
    assert m["empty"]["rougeL"] == 0 and m["empty"]["exact_match"] == 0
    assert m["most_frequent"]["exact_match"] == 0.5  # "yes" for both rows
    assert m["first_word"]["exact_match"] == 1.0 and 0 < m["copy_input"]["rougeL"] < 1
    assert [r["copy_input"] for r in measured.rows] == ["yes please", "no way"]
    assert "first_word" in baselines.names("text")
    assert not baselines.unknown("text", parse_expectations({"rougeL": "> baseline.first_word"}, task="text"))
    ladder = {"copy_input": {"rougeL": 0.9}}
    warning = baselines.verdict("text", "eval_loss", 3, {"rougeL": 0.5}, ladder)
    assert warning and "does not beat the copy_input baseline on rougeL: 0.5 vs 0.9" in warning
    assert baselines.verdict("text", "eval_loss", 3, {"rougeL": 0.95}, ladder) is None


def test_summary_without_baselines_is_unchanged(tmp_path: Path):
    cfg = sweep(tmp_path, "budget.n_trials=1", "evaluation.samples=0")
    out = io.StringIO()
    console = Console(file=out, width=200)
    outcome = run_sweep(cfg, recipe=FakeRecipe(extra={"mae": 5.0}), console=console)
    print_summary(cfg, outcome, console)
    study = outcome.study
    assert "task_baselines" not in study.user_attrs and "| baselines:" not in out.getvalue()
    assert not (cfg.study_dir / "baselines.jsonl").exists()
