"""Rung agreement (harness.core.agreement, harness.results.agreement) and `early_terminate.min_iter: auto`
(harness.study.sampler.AdaptiveRung): rho recomputed independently (pandas ranks + Pearson) from the
study's intermediate values, on a real pruned sweep of the tiny model and on hand-built studies."""

from __future__ import annotations

import io
import re

import optuna
import pandas as pd
import pytest
from helpers import SWEEP, TINY, FakeRecipe, sweep
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from harness.core import agreement, attrs
from harness.errors import ConfigError
from harness.results import agreement as study_agreement
from harness.sweepfile.load import load_sweep


def rho_by_hand(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho as the textbook has it: Pearson on average ranks (pandas does the ranking)."""
    if len(xs) < 3:
        return None
    rx, ry = pd.Series(xs).rank(method="average"), pd.Series(ys).rank(method="average")
    if rx.nunique() < 2 or ry.nunique() < 2:
        return None
    return float(rx.corr(ry))


def expected_table(study: optuna.Study) -> dict[int, tuple[float | None, int]]:
    """step -> (rho, n) over the COMPLETE trials, straight from study.trials."""
    pairs: dict[int, tuple[list[float], list[float]]] = {}
    for t in study.trials:
        if t.state != TrialState.COMPLETE or t.value is None:
            continue
        for step, v in t.intermediate_values.items():
            xs, ys = pairs.setdefault(step, ([], []))
            xs.append(v)
            ys.append(t.value)
    return {s: (rho_by_hand(xs, ys), len(xs)) for s, (xs, ys) in sorted(pairs.items())}


def md_section(markdown: str) -> list[list[str]]:
    """The rung-agreement table's rows of a report.md, as cells."""
    section = markdown.split("## Rung agreement", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


# ----------------------------------------------------------------------------------------------------
# The arithmetic


def test_rho_with_ties_matches_the_textbook():
    xs, ys = [1.0, 2.0, 2.0, 3.0, 5.0], [0.5, 0.7, 0.6, 0.9, 0.9]
    assert agreement.ranks(xs) == [1.0, 2.5, 2.5, 4.0, 5.0]
    assert agreement.spearman(xs, ys) == pytest.approx(rho_by_hand(xs, ys))
    assert agreement.spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_fewer_than_3_trials_or_a_constant_side_has_no_rho():
    assert agreement.spearman([1.0, 2.0], [1.0, 2.0]) is None
    assert agreement.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    rows = agreement.by_step([({1: 0.5}, 0.4), ({1: 0.6, 2: 0.5}, 0.5)])
    assert [(r.step, r.rho, r.n) for r in rows] == [(1, None, 2), (2, None, 1)]


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_rho_is_the_same_whichever_way_the_metric_points(goal):
    """The step's value and the final value are one metric: a maximized metric (negated values, the
    final value its best = max) ranks the same trials the same way."""
    sign = 1.0 if goal == "minimize" else -1.0
    best = min if goal == "minimize" else max
    curves = [
        ({10: 0.9, 20: 0.5}, 0.5),
        ({10: 0.8, 20: 0.7}, 0.7),
        ({10: 0.7, 20: 0.3}, 0.3),
        ({10: 0.95, 20: 0.6}, 0.6),
    ]
    signed = [({s: sign * v for s, v in c.items()}, best(sign * v for v in c.values())) for c, _ in curves]
    rows = agreement.by_step(signed)
    assert [r.n for r in rows] == [4, 4]
    xs10 = [sign * c[10] for c, _ in curves]
    finals = [f for _, f in signed]
    assert rows[0].rho == pytest.approx(rho_by_hand(xs10, finals)) and rows[0].rho == pytest.approx(0.4)
    assert rows[1].rho == pytest.approx(1.0)


def test_rungs_of_each_pruner():
    steps = [50, 100, 150, 200, 250, 300]
    sh = {"type": "successive_halving", "min_iter": 1, "eta": 3}
    assert agreement.rung_steps(sh, 50, steps) == [50, 150]
    assert agreement.rung_steps({**sh, "min_iter": 2, "eta": 2}, 50, steps) == [100, 200]
    assert agreement.rung_steps({"type": "median", "n_warmup_steps": 2}, 50, steps) == [
        100,
        150,
        200,
        250,
        300,
    ]
    assert agreement.rung_steps({"type": "none"}, 50, steps) == []
    assert agreement.rung_steps({**sh, "min_iter": "auto"}, 50, steps) == []  # nothing chosen yet
    assert agreement.rung_steps({**sh, "min_iter": "auto"}, 50, steps, auto_rung=100) == [100, 300]


def test_the_warning_names_the_first_rung():
    weak = [agreement.StepAgreement(50, 0.2, 6, True), agreement.StepAgreement(100, 0.9, 6, False)]
    assert agreement.warning(weak) == (
        "pruning at step 50 is close to guessing here (rho 0.20): raise `min_iter`"
    )
    thin = [agreement.StepAgreement(50, 0.9, 3, True)]
    assert "only 3 finished trial(s)" in (agreement.warning(thin) or "")
    assert agreement.warning([agreement.StepAgreement(50, 0.8, 5, True)]) is None


# ----------------------------------------------------------------------------------------------------
# A real pruned sweep of the tiny model: report.md's table and the run's summary line, recomputed


def test_pruned_sweep_reports_rho_per_step_recomputable_from_the_study(tmp_path):
    from harness.results.report import write_report
    from harness.results.view import load_study_data
    from harness.suite.session import run_one

    overrides = [
        f"results_dir={tmp_path}",
        *TINY,
        "budget.n_trials=6",
        "budget.max_steps=12",
        "budget.eval_steps=3",
        "dataset.max_eval_rows=16",
        "dataset.max_train_rows=200",
        "evaluation.samples=0",
        # the first 3 trials finish (rho needs 3), the next 3 can be pruned from the 2nd eval (step 6) on
        "early_terminate.type=median",
        "early_terminate.n_startup_trials=3",
        "early_terminate.n_warmup_steps=2",
    ]
    cfg = load_sweep(SWEEP, overrides)
    out = io.StringIO()
    run_one(cfg, SWEEP, console=Console(file=out, width=200), err=Console(file=io.StringIO()))
    data = load_study_data(cfg.name, str(tmp_path), None)
    study = data.study
    assert len(study.trials) == 6
    want = expected_table(study)
    assert set(want) == {3, 6, 9, 12} and any(rho is not None for rho, _ in want.values())

    write_report(data, ["md"])
    rows = md_section((tmp_path / cfg.name / "report.md").read_text())
    assert [int(r[0]) for r in rows] == sorted(want)
    for step, rung, rho, n in rows:
        want_rho, want_n = want[int(step)]
        assert int(n) == want_n
        assert rung == ("rung" if int(step) >= 6 else "")  # median from n_warmup_steps x eval_steps on
        if want_rho is None:
            assert rho == ""
        else:
            assert float(rho) == pytest.approx(want_rho, abs=5e-4)  # 4 significant digits shown

    printed = out.getvalue()
    line = next(x for x in printed.splitlines() if x.startswith("rung agreement:"))
    first_rho, first_n = want[6]
    shown = "n/a" if first_rho is None else f"{first_rho:.2f}"
    assert f"first rung step 6 rho {shown} (n={first_n})" in line
    if first_n < agreement.MIN_TRIALS or first_rho is None or first_rho < agreement.WARN_BELOW:
        assert "warning: pruning at step 6 is close to guessing here" in printed

    from harness.results.status import status_lines

    assert any(x.strip() == line for x in status_lines(study, data.url))


# ----------------------------------------------------------------------------------------------------
# min_iter: auto


def curve_trial(values: dict[int, float], value: float | None, state=TrialState.COMPLETE, lr: float = 1e-3):
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"learning_rate": lr},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)},
        intermediate_values=values,
    )


def auto_study(direction: str = "minimize"):
    from harness.study.sampler import AdaptiveRung

    pruner = AdaptiveRung(eta=3, threshold=0.7)
    said: list[str] = []
    pruner.say = said.append
    return optuna.create_study(direction=direction, pruner=pruner), pruner, said


def test_auto_waits_for_4_finished_trials_then_picks_the_earliest_agreeing_eval():
    study, pruner, said = auto_study()
    # step 50 ranks the trials backwards (the fine-tune "clicks" later); step 100 ranks them as the end
    finished = [
        ({50: 0.9, 100: 0.5, 150: 0.4}, 0.4),
        ({50: 0.8, 100: 0.6, 150: 0.5}, 0.5),
        ({50: 0.7, 100: 0.7, 150: 0.6}, 0.6),
        ({50: 0.6, 100: 0.8, 150: 0.7}, 0.7),
    ]
    for values, value in finished[:3]:
        study.add_trial(curve_trial(values, value))
    assert pruner.first_rung(study) is None and not said  # 3 finished: too few to measure
    study.add_trial(curve_trial(*finished[3]))
    assert pruner.first_rung(study) == 100
    stored = attrs.auto_rung(study)
    assert stored["step"] == 100 and stored["n"] == 4 and stored["complete"] == 4
    rows = {r.step: r for r in agreement.by_step(finished)}
    assert stored["rho"] == pytest.approx(
        rho_by_hand([v[100] for v, _ in finished], [f for _, f in finished])
    )
    assert rows[50].rho == pytest.approx(-1.0)
    assert said == [
        f"{study.study_name}: min_iter auto: first rung now step 100 (rho 1.00 with the final value over 4 "
        "finished trials, threshold 0.7)"
    ]
    pruner.first_rung(study)
    assert len(said) == 1  # said when it changes, not on every call

    # A trial judged at the rung: the worst at step 100 of 5 is outside the best 5 // 3 = 1 -> pruned;
    # nothing is judged at step 50, before the first rung.
    trial = study.ask()
    trial.report(0.1, 50)
    assert not trial.should_prune()
    trial.report(0.95, 100)
    assert trial.should_prune()
    good = study.ask()  # 0.45 among [0.45, 0.5, 0.6, 0.7, 0.8, 0.95]: in the best 6 // 3 = 2 -> kept
    good.report(0.99, 50)
    good.report(0.45, 100)
    assert not good.should_prune()


def test_auto_moves_the_rung_when_new_trials_disagree_and_stops_pruning_when_none_agrees():
    study, pruner, said = auto_study()
    for i in range(4):  # step 50 agrees perfectly at first
        study.add_trial(curve_trial({50: 0.5 + i / 10, 100: 0.4 + i / 10}, 0.4 + i / 10))
    assert pruner.first_rung(study) == 50
    for i in range(4):  # then trials whose early evals rank them backwards, at both steps
        study.add_trial(curve_trial({50: 0.9 - i / 10, 100: 0.95 - i / 10}, 0.2 + i / 10))
    assert pruner.first_rung(study) is None
    assert attrs.auto_rung(study)["step"] is None
    assert "not pruning" in said[-1] and len(said) == 2
    trial = study.ask()
    trial.report(5.0, 50)
    assert not trial.should_prune()


def test_auto_prunes_the_other_way_for_a_maximized_metric():
    study, pruner, _ = auto_study("maximize")
    for i in range(4):
        study.add_trial(curve_trial({50: 0.5 + i / 10, 100: 0.6 + i / 10}, 0.6 + i / 10))
    assert pruner.first_rung(study) == 50
    low = study.ask()
    low.report(0.1, 50)
    assert low.should_prune()
    high = study.ask()
    high.report(0.99, 50)
    assert not high.should_prune()


def test_auto_in_a_sweep_is_stored_logged_and_reported(tmp_path):
    from harness.study.run import run_sweep

    cfg = sweep(
        tmp_path,
        "budget.max_steps=300",
        "budget.eval_steps=50",
        "budget.n_trials=10",
        "early_terminate.type=successive_halving",
        "early_terminate.min_iter=auto",
        "early_stopping.patience=0",
        "evaluation.samples=0",
    )
    out = io.StringIO()
    outcome = run_sweep(cfg, recipe=FakeRecipe(), console=Console(file=out, width=200))
    trials = outcome.study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials[:4])  # nothing pruned before 4 finished
    chosen = attrs.auto_rung(outcome.study)
    assert chosen["step"] is not None
    assert re.search(rf"min_iter auto: first rung now step {chosen['step']} ", out.getvalue())
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert agreement.MIN_TRIALS <= chosen["complete"] <= len(finished)
    rows = study_agreement.table(outcome.study)
    assert next(r.step for r in rows if r.rung) == chosen["step"]
    assert any(t.state == TrialState.PRUNED for t in trials)  # the fake's curves agree from step 50


def test_auto_is_an_input_error_for_another_pruner(tmp_path):
    with pytest.raises(ConfigError, match="min_iter: auto"):
        load_sweep(
            SWEEP,
            [f"results_dir={tmp_path}", "early_terminate.type=median", "early_terminate.min_iter=auto"],
        )
    auto = load_sweep(SWEEP, ["early_terminate.min_iter=auto"]).early_terminate
    assert (auto.min_iter, auto.min_agreement) == ("auto", 0.7)


def test_a_study_without_harness_attrs_is_judged_from_its_intermediate_values_alone():
    """An old (or plain Optuna) study: no stored config, so the shipped pruner's rungs (successive halving,
    min_iter 1, eta 3) in units of its first eval; rho and the warning come from the trials alone."""
    study = optuna.create_study(direction="maximize")
    finals = [0.9, 0.7, 0.8, 0.6, 0.5]
    early = [0.2, 0.5, 0.3, 0.4, 0.1]  # step 20 ranks them almost at random
    for e, f in zip(early, finals, strict=True):
        study.add_trial(curve_trial({20: e, 40: f - 0.1, 60: f}, f))
    study.add_trial(curve_trial({20: 0.05}, None, state=TrialState.PRUNED))
    rows = study_agreement.table(study)
    assert [(r.step, r.rung, r.n) for r in rows] == [(20, True, 5), (40, False, 5), (60, True, 5)]
    assert rows[0].rho == pytest.approx(rho_by_hand(early, finals))
    assert rows[1].rho == pytest.approx(1.0)
    lines = study_agreement.lines(study)
    assert lines[0].startswith(f"rung agreement: first rung step 20 rho {rows[0].rho:.2f} (n=5)")
    assert lines[1] == (
        f"warning: pruning at step 20 is close to guessing here (rho {rows[0].rho:.2f}): raise `min_iter`"
    )
