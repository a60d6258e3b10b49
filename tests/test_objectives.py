"""Objective choice, multi-objective studies (Pareto front) and the before/after summary, with a fake
recipe: milliseconds per trial, real Optuna storage, real reports."""

from __future__ import annotations

import io
import json
import math

import pytest
from helpers import ROOT, sweep
from optuna.trial import TrialState
from rich.console import Console

from harness.core.spec import TrialResult, TrialSpec
from harness.errors import ConfigError, StorageError
from harness.results import report
from harness.results import view as studyview
from harness.results.view import trials_table
from harness.study import ranking, resume
from harness.study.run import run_sweep
from harness.suite.session import print_summary
from harness.suite.verdicts import check_study
from harness.sweepfile.expect import parse_expectations
from harness.sweepfile.load import load_sweep

TWO = "metrics=[{name: eval_loss, goal: minimize}, {name: hit_rate, goal: maximize}]"


def trade_off_recipe(spec: TrialSpec, on_eval) -> TrialResult:
    """eval_loss falls with the learning rate while hit_rate falls too: a real trade-off, so several
    trials are Pareto-optimal. Per-row before/after evidence as the real recipe writes it."""
    lr = spec.training.learning_rate
    x = math.log10(lr) + 4  # 0 .. ~1.5 over the qlora.yaml range
    history = []
    for step in (10, 20):
        metrics = {"eval_loss": 3.0 - x - step / 100, "perplexity": math.exp(3.0 - x - step / 100)}
        history.append({"step": step, **metrics})
        assert on_eval(step, metrics) is False  # multi-objective: never pruned
    final = {**history[-1], "hit_rate": round(0.9 - 0.5 * x, 6), "mae": 50.0 - 10 * x}
    final.pop("step")
    gens = [
        {"prompt": f"p{i}", "reference": "10.00", "prediction": "11.00", "prediction_before": "99.00"}
        for i in range(3)
    ]
    return TrialResult(
        value=final["eval_loss"],
        metrics=final,
        best_step=20,
        steps_run=20,
        duration_s=0.01,
        history=history,
        generations=gens,
        before_metrics={"hit_rate": 0.0, "mae": 400.0},
    )


trade_off_recipe.baseline = lambda: {"eval_loss": 6.0, "perplexity": math.exp(6.0)}  # type: ignore[attr-defined]


def test_metrics_list_is_validated_against_the_task():
    with pytest.raises(ConfigError, match="did you mean 'hit_rate'"):
        load_sweep(ROOT / "sweeps/pricer.yaml", ["metrics=[{name: eval_loss}, {name: hitrate}]"])
    with pytest.raises(ConfigError, match="listed twice"):
        load_sweep(ROOT / "sweeps/pricer.yaml", ["metrics=[{name: mae}, {name: mae, goal: maximize}]"])
    with pytest.raises(ConfigError, match="cmaes cannot"):
        load_sweep(ROOT / "sweeps/pricer.yaml", [TWO, "method=cmaes"])
    with pytest.raises(ConfigError, match="metric and metrics are both given"):
        load_sweep(ROOT / "sweeps/pricer.yaml", ["metrics=[{name: hit_rate, goal: maximize}, {name: mae}]"])
    with pytest.raises(ConfigError, match="not reported by task 'text'"):
        load_sweep(ROOT / "sweeps/alpaca-text.yaml", ["metrics=[{name: eval_loss}, {name: mae}]"])
    cfg = load_sweep(ROOT / "sweeps/pricer.yaml", [TWO])
    assert cfg.multi_objective and [m.name for m in cfg.objectives] == ["eval_loss", "hit_rate"]
    assert cfg.metric.name == "eval_loss"  # the primary metric
    # The stored/exported config (metric and metrics both present) loads again.
    again = type(cfg).model_validate(cfg.model_dump(mode="json", exclude={"parameters"}))
    assert again.objectives == cfg.objectives


def test_multi_objective_study_returns_tuples_and_marks_the_pareto_front(tmp_path):
    cfg = sweep(tmp_path, TWO, "budget.n_trials=6", "method=random")
    out = io.StringIO()
    study = run_sweep(cfg, recipe=trade_off_recipe, console=Console(file=out, width=200)).study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert "pruning and intermediate reports are off" in out.getvalue()
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    for t in complete:
        m = t.user_attrs["metrics"]
        assert t.values == [pytest.approx(m["eval_loss"]), pytest.approx(m["hit_rate"])]
        assert t.intermediate_values == {}  # nothing reported: Optuna cannot prune multi-objective
    pareto = {t.number for t in study.best_trials}
    assert pareto == ranking.pareto_numbers(study) and len(pareto) > 1  # a trade-off: several optimal trials

    # "best" = the Pareto-optimal trial best on the first metric
    best = ranking.best_trial(study)
    assert best.number in pareto
    assert best.values[0] == min(t.values[0] for t in complete)
    assert studyview.ranked_trials(study)[0].number == best.number  # tables rank by the same rule

    # Terminal table: one column per objective, a pareto column with a star on exactly the front.
    text = io.StringIO()
    Console(file=text, width=250).print(trials_table(study, cfg.metric.name, cfg.metric.goal))
    table = text.getvalue()
    assert "hit_rate" in table and "pareto" in table and "Pareto-optimal" in table
    starred = [line for line in table.splitlines() if "★" in line and "complete" in line]
    assert len(starred) == len(pareto)

    # Report: a boolean pareto column; html plots use the first metric (target=) plus a Pareto front.
    data = studyview.load_study_data("pricer", str(tmp_path))
    frame = data.frame
    assert frame["pareto"].dtype == bool
    assert set(frame.loc[frame["pareto"], "number"]) == pareto
    assert frame.set_index("number").loc[best.number, "value"] == pytest.approx(best.values[0])
    paths, _, why = report.write_report(data, ["md", "html", "csv"])
    html = (tmp_path / "pricer" / "report.html").read_text()
    assert "Pareto front" in html and "Optimisation history" in html
    assert "multi-objective" in (tmp_path / "pricer" / "report.md").read_text()

    # Expectations check that same trial.
    outcomes = check_study(parse_expectations({"eval_loss": "< 100"}, "pricer"), study, "eval_loss")
    assert outcomes[0].passed and outcomes[0].measured == pytest.approx(
        best.user_attrs["metrics"]["eval_loss"]
    )


def test_resume_checks_every_direction(tmp_path):
    run_sweep(
        sweep(tmp_path, TWO, "budget.n_trials=1"),
        recipe=trade_off_recipe,
        console=Console(file=io.StringIO()),
    )
    flipped = "metrics=[{name: eval_loss, goal: minimize}, {name: hit_rate, goal: minimize}]"
    with pytest.raises(StorageError, match="hit_rate \\(maximize\\).*hit_rate \\(minimize\\)"):
        run_sweep(sweep(tmp_path, flipped, "budget.n_trials=2"), recipe=trade_off_recipe)
    with pytest.raises(StorageError, match="start a new study"):
        run_sweep(sweep(tmp_path, "budget.n_trials=2"), recipe=trade_off_recipe)  # single objective now
    assert resume.fingerprint(sweep(tmp_path, TWO)) != resume.fingerprint(sweep(tmp_path, flipped))
    again = run_sweep(sweep(tmp_path, TWO, "budget.n_trials=2"), recipe=trade_off_recipe)
    assert again.ran == 1


def test_single_objective_fingerprint_is_unchanged(tmp_path):
    """Studies created before `metrics:` existed must still resume."""
    import hashlib

    from harness.study import space as search_space

    cfg = sweep(tmp_path)
    space = {k: repr(v) for k, v in sorted(search_space.distributions(cfg.parameters).items())}
    body = json.dumps({"space": space, "metric": cfg.metric.model_dump()}, sort_keys=True)
    assert resume.fingerprint(cfg) == hashlib.sha256(body.encode()).hexdigest()[:16]


def test_sweep_end_prints_baseline_and_before_after(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=2", "metric.name=mae")
    out = io.StringIO()
    console = Console(file=out, width=200)
    outcome = run_sweep(cfg, recipe=trade_off_recipe, console=console)
    print_summary(cfg, outcome, console)  # what `sweep run` prints under the last trial
    study = outcome.study
    assert study.user_attrs["baseline_metrics"]["eval_loss"] == 6.0
    best = study.best_trial
    text = out.getvalue()
    loss = best.user_attrs["metrics"]["eval_loss"]
    assert f"eval_loss: untrained 6 -> best {loss:.4g} ({loss / 6:.2f}x)" in text
    mae = best.user_attrs["metrics"]["mae"]
    assert f"best trial {best.number}: mae 400 -> {mae:.4g}, hit_rate 0 -> " in text
    rows = [
        json.loads(line) for line in (tmp_path / "pricer" / "before_after.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 3 and {r["trial"] for r in rows} == {best.number}
    assert rows[0]["prediction_before"] == "99.00" and rows[0]["prediction"] == "11.00"
    assert "before/after on 3 prompts" in text
