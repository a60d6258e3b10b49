"""`sweep audit`: the most promising pruned trials re-trained to the full budget, the pruning regret they
show, and `early_terminate.keep_pruned_checkpoints` (the audit then continues where the trial was cut)."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers import TINY, FakeRecipe, sweep
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.cli import main
from harness.core import attrs, trialdir
from harness.core.spec import TrialResult, TrialSpec
from harness.results import audit
from harness.study import confirm, failures, ranking
from harness.study import storage as st
from harness.study.run import real_recipe, run_sweep
from harness.suite.confirm import audit_target

PRUNED_SWEEP = ("budget.n_trials=8", "early_terminate.type=successive_halving", "budget.max_steps=40")


class LateBloomer:
    """FakeRecipe's curves, except that a trial of odd seed learns late: far worse at the first eval (so
    successive halving always cuts it there), far better than any other at the end. An audit trains with its
    pruned trial's seed, so it blooms as the pruned trial would have."""

    def __init__(self) -> None:
        self.inner = FakeRecipe()
        self.specs: list[TrialSpec] = []

    def __call__(self, spec: TrialSpec, on_eval) -> TrialResult:
        self.specs.append(spec)
        if spec.seed % 2 == 0:
            return self.inner(spec, on_eval)
        late = dataclasses.replace(self.inner, base=-8.5, decay=145.0, calls=[])  # +5 at step 10, -5 at 40
        return late(spec, on_eval)


def console() -> Console:
    return Console(file=io.StringIO(), width=250, highlight=False)


def text(c: Console) -> str:
    return c.file.getvalue()  # type: ignore[attr-defined]


def swept(tmp_path: Path, recipe, *overrides: str) -> optuna.Study:
    cfg = sweep(tmp_path, *PRUNED_SWEEP, "budget.eval_steps=10", *overrides)
    return run_sweep(cfg, recipe=recipe, console=console()).study


def standing_by_hand(trials: list[FrozenTrial], t: FrozenTrial) -> float:
    """The documented rule, written out again: the share of the other sweep trials that reported at t's
    last step whose value there was no better (lower eval_loss) than t's."""
    step = max(t.intermediate_values)
    peers = [
        p.intermediate_values[step]
        for p in trials
        if p.number != t.number and step in p.intermediate_values and "audit_of" not in p.user_attrs
    ]
    return sum(v >= t.intermediate_values[step] for v in peers) / len(peers) if peers else 1.0


def test_audit_adds_k_full_budget_reruns_of_the_most_promising_pruned_trials(tmp_path):
    recipe = FakeRecipe()
    study = swept(tmp_path, recipe)
    cfg = sweep(tmp_path, *PRUNED_SWEEP, "budget.eval_steps=10")
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(pruned) >= 3, [t.state for t in trials]
    by_hand = sorted(
        pruned,
        key=lambda t: (-standing_by_hand(trials, t), -max(t.intermediate_values), t.number),
    )
    expected = [t.number for t in by_hand[:2]]

    out = confirm.run_audit(cfg, 2, url=st.storage_url(cfg), recipe=recipe, console=console())
    assert out.targets == expected
    assert (out.added, out.ran) == (2, 2)
    after = out.study.get_trials()
    audits = [t for t in after if attrs.audit_of(t) is not None]
    assert sorted(attrs.audit_of(t) for t in audits) == sorted(expected)
    originals = {t.number: t for t in trials}
    for a in audits:
        o = originals[attrs.audit_of(a)]
        assert a.state == TrialState.COMPLETE
        assert a.params == o.params and attrs.seed(a) == attrs.seed(o)
        assert attrs.steps_run(a) == cfg.budget.max_steps > attrs.steps_run(o)
        assert not a.intermediate_values  # never reported to the pruner, never pruned
        assert attrs.resumed_at(a) is None  # no checkpoint was kept: from step 0
    assert failures.done(out.study) == 8  # audits do not use up n_trials

    again = confirm.run_audit(cfg, 2, url=st.storage_url(cfg), recipe=recipe, console=console())
    assert (again.added, again.ran, len(again.study.get_trials())) == (0, 0, len(after))
    more = confirm.run_audit(cfg, 3, url=st.storage_url(cfg), recipe=recipe, console=console())
    assert more.added == 1 and more.targets[:2] == expected  # the same two, then the next one


def test_regret_printed_stored_and_reported_recomputes_from_the_study(tmp_path):
    recipe = LateBloomer()
    pruned = [t for t in swept(tmp_path, recipe).get_trials() if t.state == TrialState.PRUNED]
    c = console()
    assert audit_target("pricer", len(pruned), str(tmp_path), None, c, recipe=recipe) == 0
    study = optuna.load_study(study_name="pricer", storage=f"sqlite:///{tmp_path}/pricer/study.db")
    trials = study.get_trials()
    audits = [t for t in trials if attrs.audit_of(t) is not None]
    assert sorted(attrs.audit_of(t) for t in audits) == sorted(t.number for t in pruned)
    own = [t.value for t in trials if t.state == TrialState.COMPLETE and attrs.audit_of(t) is None]
    best = min(own)
    margins = [best - t.value for t in audits]
    beaten = sum(m > 0 for m in margins)
    regret = max(0.0, *margins)
    assert beaten >= 1  # a late bloomer was cut: the audit shows it

    stored = attrs.pruning_audit(study)
    assert stored["best_value"] == best and stored["beaten"] == beaten
    assert stored["regret"] == pytest.approx(regret)
    assert sorted(a["audit"] for a in stored["audited"]) == sorted(t.number for t in audits)
    assert stored == ranking.audit_summary(study).to_json()
    out = text(c)
    assert f"{beaten} would have beaten the sweep's best" in out
    assert f"pruning regret {regret:.6g} eval_loss" in out
    for t in audits:
        assert f"-> audit trial {t.number} from step 0: COMPLETE eval_loss {t.value:.6g}" in out

    # An audit competes: the late bloomer's full run is now the study's best.
    winner = ranking.best_trial(study)
    assert winner is not None and attrs.audit_of(winner) is not None
    assert winner.value == min(own + [t.value for t in audits])
    assert main(["report", "pricer", "--results-dir", str(tmp_path), "--format", "md,csv"]) == 0
    md = (tmp_path / "pricer" / "report.md").read_text()
    assert "## Pruning audit (sweep audit)" in md and f"pruning regret {regret:.6g}" in md
    frame = pd.read_csv(tmp_path / "pricer" / "report.csv")
    assert sorted(frame["audit_of"].dropna().astype(int)) == sorted(attrs.audit_of(t) for t in audits)


def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, capsys):
    swept(tmp_path, FakeRecipe())
    cases = [
        (["audit", "pricer", "--pruned", "0"], "--pruned 0: give 1 or more"),
        (["audit", "nosuch"], "no study 'nosuch'"),
    ]
    for argv, expected in cases:
        assert main([*argv, "--results-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    unpruned = tmp_path / "unpruned"
    run_sweep(sweep(unpruned, "budget.n_trials=2"), recipe=FakeRecipe(), console=console())
    assert main(["audit", "pricer", "--results-dir", str(unpruned)]) == 2
    err = capsys.readouterr().err
    assert "has no pruned trial to audit" in err and "Traceback" not in err
    assert err.strip().count("\n") <= 2  # one paragraph (wrapped by the terminal width at most)


@pytest.mark.slow  # five real trainings of 8 steps on the builtin model: ~30 s on 2 busy cores
def test_keep_pruned_checkpoints_lets_the_audit_continue_where_the_trial_was_cut(tmp_path):
    """Real trials on the builtin model: trial 0 is cut at step 4 without keep_pruned_checkpoints, trial 1
    with it. The cut is the test's (a pruner's choice would rest on this machine's floats); the trial is
    pruned by the same path a pruner takes (the eval hook answers "stop")."""
    tiny = [*TINY, "budget.max_steps=8", "evaluation.samples=0"]
    cfg = sweep(tmp_path, *tiny, "budget.n_trials=1")
    real = real_recipe(cfg)
    evals: list[tuple[int, int]] = []

    def cut_0_and_1_at_step_4(spec, on_eval):
        def hook(step, metrics):
            evals.append((spec.number, step))
            return on_eval(step, metrics) or (spec.number in (0, 1) and step == 4)

        return real(spec, hook)

    run_sweep(cfg, recipe=cut_0_and_1_at_step_4, console=console())
    kept = sweep(tmp_path, *tiny, "budget.n_trials=2", "early_terminate.keep_pruned_checkpoints=true")
    run_sweep(kept, recipe=cut_0_and_1_at_step_4, console=console())
    folder = {n: trialdir.trial_dir(cfg.study_dir, n) for n in range(4)}
    assert trialdir.find_checkpoint(trialdir.checkpoint_dir(folder[0])) is None  # off: removed
    ckpt = trialdir.find_checkpoint(trialdir.checkpoint_dir(folder[1]))
    assert ckpt is not None and trialdir.checkpoint_step(ckpt) == 4  # on: saved at the pruning eval

    c = console()
    evals.clear()
    assert audit_target("pricer", 2, str(tmp_path), None, c, recipe=cut_0_and_1_at_step_4) == 0
    out = text(c)
    assert "trial 1 (pruned at step 4): from its checkpoint at step 4" in out
    assert "trial 0 (pruned at step 4): from step 0 (no checkpoint kept" in out
    study = optuna.load_study(study_name="pricer", storage=st.storage_url(cfg))
    trials = {t.number: t for t in study.get_trials()}
    audit_of = {attrs.audit_of(t): t for t in trials.values() if attrs.audit_of(t) is not None}
    resumed, fresh = audit_of[1], audit_of[0]
    assert attrs.resumed_at(resumed) == 4 and attrs.resumed_at(fresh) is None
    # The resumed audit trains only what the pruned trial had left: its first eval is step 8.
    assert sorted(evals) == sorted([(resumed.number, 8), (fresh.number, 4), (fresh.number, 8)])
    for a, o in ((resumed, trials[1]), (fresh, trials[0])):
        assert a.state == TrialState.COMPLETE and attrs.steps_run(a) == 8  # the full budget
        assert a.params == o.params and attrs.seed(a) == attrs.seed(o)
        history = trialdir.read_eval_history(folder[a.number])
        assert [h["step"] for h in history] == [4, 8]
        # Same params, seed and data order: the audit's step-4 eval is the pruned trial's own.
        assert history[0]["eval_loss"] == pytest.approx(o.intermediate_values[4], rel=1e-6)
    assert trialdir.find_checkpoint(trialdir.checkpoint_dir(folder[1])) is None  # used up by its audit
    summary = ranking.audit_summary(study)
    assert {(a.pruned, a.from_step) for a in summary.audited} == {(0, 0), (1, 4)}
    assert summary.best_trial is None  # every sweep trial was cut: nothing to measure a regret against
    assert audit.lines(study)[0] in out and attrs.pruning_audit(study) == summary.to_json()

    evals.clear()
    assert audit_target("pricer", 2, str(tmp_path), None, console(), recipe=cut_0_and_1_at_step_4) == 0
    assert (
        evals == [] and len(optuna.load_study(study_name="pricer", storage=st.storage_url(cfg)).trials) == 4
    )


def test_standing_compares_a_pruned_trial_with_the_trials_that_reached_its_step():
    def trial(values: dict[int, float], state=TrialState.COMPLETE, **user) -> FrozenTrial:
        return optuna.trial.create_trial(
            state=state,
            value=None if state != TrialState.COMPLETE else 1.0,
            intermediate_values=values,
            user_attrs=user,
        )

    a = trial({1: 1.0, 2: 0.5})
    b = trial({1: 2.0}, TrialState.PRUNED)
    c = trial({1: 3.0}, TrialState.PRUNED)
    d = trial({1: 0.1}, audit_of=1)  # an audit reports nothing in a real study: never a peer
    trials = [a, b, c, d]
    for i, t in enumerate(trials):
        t.number = i
    assert ranking.standing(trials, b, maximize=False) == pytest.approx(0.5)  # beat c, not a
    assert ranking.standing(trials, c, maximize=False) == 0.0
    assert ranking.standing(trials, c, maximize=True) == 1.0
    assert math.isclose(ranking.standing([b], b, maximize=False), 1.0)
