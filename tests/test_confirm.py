"""`sweep confirm`: seed repeats of the best configs, their statistics, resuming, and who uses the mean."""

from __future__ import annotations

import io
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers import FakeRecipe, sweep
from optuna.trial import TrialState
from rich.console import Console

from harness.cli import main
from harness.core import attrs
from harness.core.spec import TrialResult, TrialSpec
from harness.errors import HarnessError
from harness.study import confirm, failures, noise, ranking
from harness.study import storage as st
from harness.study.run import run_sweep
from harness.suite.session import run_path


class Noisy:
    """FakeRecipe plus a seed-dependent bump (as a LoRA init would give), recording every spec it trains."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.inner = FakeRecipe()
        self.specs: list[TrialSpec] = []
        self.evals: dict[int, list[bool]] = {}
        self.interrupt_at = interrupt_at

    def __call__(self, spec: TrialSpec, on_eval) -> TrialResult:
        if self.interrupt_at is not None and len(self.specs) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt  # Ctrl-C in the middle of confirm
        self.specs.append(spec)

        def watch(step: int, metrics: dict[str, float]) -> bool:
            stop = on_eval(step, metrics)
            self.evals.setdefault(spec.number, []).append(stop)
            return stop

        r = self.inner(spec, watch)
        bump = (spec.seed * 2654435761 % 1000) / 1000 * 0.05 + 0.001 * (spec.data_seed or 0)
        r.value = (r.value or 0.0) + bump
        r.metrics["eval_loss"] += bump
        return r


def console() -> Console:
    return Console(file=io.StringIO(), width=250, highlight=False)


def text(c: Console) -> str:
    return c.file.getvalue()  # type: ignore[attr-defined]


def swept(tmp_path: Path, recipe: Noisy, *overrides: str, storage: str | None = None) -> optuna.Study:
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median", *overrides)
    return run_sweep(cfg, storage=storage, recipe=recipe, console=console()).study


def test_t_interval_and_verdict_numbers():
    assert noise.ci95([1.0, 2.0, 3.0]) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(noise.ci95([1.0]))
    a = noise.ConfigStats(1, (1, 5, 6), (1.0, 1.1, 0.9))
    b = noise.ConfigStats(2, (2, 7, 8), (2.0, 2.1, 1.9))
    c = noise.ConfigStats(3, (3, 9, 10), (1.05, 1.15, 0.95))
    assert a.mean == pytest.approx(1.0) and a.std == pytest.approx(0.1) and a.n == 3
    apart = noise.verdict({1: a, 2: b}, maximize=False, metric="eval_loss")
    assert "trial 1" in apart and "do not overlap" in apart and "±0.1 eval_loss" in apart
    assert "intervals overlap" in noise.verdict({1: a, 3: c}, maximize=False, metric="eval_loss")
    assert noise.verdict({1: a, 2: b}, maximize=True, metric="hit_rate").startswith("best config trial 2")


def test_confirm_adds_top_times_seeds_repeats_that_do_not_count_and_are_never_pruned(tmp_path, storage):
    recipe = Noisy()
    study = swept(tmp_path, recipe, storage=storage)
    url = st.storage_url(sweep(tmp_path), storage)
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median")
    best_two = [t.number for t in confirm.targets(study, 2)]
    out = confirm.run_confirm(cfg, 2, 2, url=url, recipe=recipe, console=console())
    trials = out.study.get_trials(deepcopy=False)
    repeats = [t for t in trials if noise.is_repeat(t)]
    assert (out.added, out.ran, len(trials)) == (4, 4, 9)
    assert sorted((attrs.repeat_of(t), t.user_attrs["repeat_index"]) for t in repeats) == sorted(
        (n, k) for n in best_two for k in (1, 2)
    )
    assert all(t.state == TrialState.COMPLETE for t in repeats)
    assert failures.done(out.study) == 5  # n_trials is unchanged by repeats
    # Seeds: distinct from each other and from every trial's, and deterministic; the data order changes.
    seeds = [t.user_attrs["seed"] for t in trials]
    assert len(set(seeds)) == len(seeds)
    by_number = {t.number: t for t in trials}
    for t in repeats:
        k = t.user_attrs["repeat_index"]
        original = by_number[attrs.repeat_of(t)]
        assert t.params == original.params
        assert t.user_attrs["seed"] == original.user_attrs["seed"] + confirm.SEED_STRIDE * k
        assert t.user_attrs["data_seed"] == cfg.seed + k
        assert not t.intermediate_values  # nothing reported to the pruner
        assert not any(recipe.evals[t.number])  # and never told to stop
    specs = {s.number: s for s in recipe.specs}
    assert {specs[t.number].data_seed for t in repeats} == {cfg.seed + 1, cfg.seed + 2}
    assert all(specs[n].data_seed is None for n in range(5))  # sweep trials: the sweep's data order
    # The originals rank first; repeats are never "the best trial" themselves.
    assert not noise.is_repeat(ranking.best_trial(out.study))
    assert ranking.best_trial(out.study).number in best_two


def test_report_csv_has_the_noise_columns_for_confirmed_configs(tmp_path):
    recipe = Noisy()
    swept(tmp_path, recipe)
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median")
    study = confirm.run_confirm(cfg, 2, 2, url=st.storage_url(cfg), recipe=recipe, console=console()).study
    assert main(["report", "pricer", "--results-dir", str(tmp_path), "--format", "csv,md"]) == 0
    frame = pd.read_csv(tmp_path / "pricer" / "report.csv")
    filled = frame.dropna(subset=["value_mean"])
    targets = sorted(t.number for t in confirm.targets(study, 2))
    assert sorted(filled["number"]) == targets
    for _, row in filled.iterrows():
        runs = noise.runs_of(study.get_trials(), int(row["number"]))
        values = [t.value for t in runs]
        assert row["n_seeds"] == 3 == len(values)
        assert row["value_mean"] == pytest.approx(sum(values) / 3)
        assert row["value_std"] == pytest.approx(pd.Series(values).std())
        assert row["value_ci95"] == pytest.approx(noise.ci95(values))
    assert sorted(frame["repeat_of"].dropna().astype(int)) == sorted(targets * 2)
    md = (tmp_path / "pricer" / "report.md").read_text()
    assert "## Seed noise (sweep confirm)" in md and "runner-up" in md and "noise floor" in md


def test_the_cli_runs_confirm_with_the_studys_own_config(tmp_path, monkeypatch):
    recipe = Noisy()
    swept(tmp_path, recipe, "budget.max_steps=40")  # an override the sweep file does not have
    monkeypatch.setattr("harness.study.run.real_recipe", lambda cfg: recipe)
    before = len(recipe.specs)
    assert main(["confirm", "pricer", "--top", "1", "--seeds", "2", "--results-dir", str(tmp_path)]) == 0
    new = recipe.specs[before:]
    assert len(new) == 2 and all(s.sweep.budget.max_steps == 40 for s in new)  # as the originals trained


def test_killed_confirm_resumes_only_the_missing_repeats(tmp_path, storage):
    recipe = Noisy()
    study = swept(tmp_path, recipe, storage=storage)
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median")
    url = st.storage_url(cfg, storage)
    recipe.interrupt_at = len(recipe.specs) + 2  # two repeats finish, the third is interrupted
    with pytest.raises(KeyboardInterrupt):
        confirm.run_confirm(cfg, 2, 2, url=url, recipe=recipe, console=console())
    done_before = len(recipe.specs)
    c = console()
    out = confirm.run_confirm(cfg, 2, 2, url=url, recipe=recipe, console=c)
    assert "0 repeat(s) added, 2 to run" in text(c)  # the interrupted one (retried) and the last one
    assert len(recipe.specs) - done_before == 2 == out.ran
    stats = noise.config_stats(out.study.get_trials())
    assert sorted(stats) == sorted(t.number for t in confirm.targets(study, 2))
    assert all(s.n == 3 for s in stats.values())
    retried = [t for t in out.study.get_trials() if "retry_of" in t.user_attrs]
    assert len(retried) == 1 and noise.is_repeat(retried[0])  # a retry of a repeat is still a repeat
    # A third run has nothing left to do.
    again = confirm.run_confirm(cfg, 2, 2, url=url, recipe=recipe, console=console())
    assert (again.added, again.ran) == (0, 0)


def test_two_confirms_that_queued_the_same_repeats_train_each_once(tmp_path):
    """Workers that enqueue at the same moment: the later trial of a (config, index) stands down."""
    recipe = Noisy()
    study = swept(tmp_path, recipe)
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median")
    chosen = confirm.targets(study, 1)
    for owed in confirm.owed(study, chosen, 2, cfg.seed) * 2:  # both "workers" queued the pair
        study.enqueue_trial(chosen[0].params, user_attrs=owed)
    before = len(recipe.specs)
    out = confirm.run_confirm(cfg, 1, 2, url=st.storage_url(cfg), recipe=recipe, console=console())
    assert len(recipe.specs) - before == 2
    dups = [t for t in out.study.get_trials() if str(t.user_attrs.get("fail_reason", "")).startswith("dup")]
    assert len(dups) == 2 and failures.done(out.study) == 5
    assert noise.config_stats(out.study.get_trials())[chosen[0].number].n == 3


def test_sweep_file_confirm_block_and_expectations_use_the_mean(tmp_path):
    root = Path(__file__).resolve().parents[1]
    f = tmp_path / "s.yaml"
    text_ = (root / "sweeps/pricer.yaml").read_text().replace("../search_spaces", str(root / "search_spaces"))
    f.write_text(text_ + "\nconfirm: {top: 2, seeds: 1}\n")
    c = console()
    overrides = [
        f"results_dir={tmp_path}",
        "budget.n_trials=4",
        "budget.max_steps=20",
        "budget.eval_steps=10",
    ]
    assert run_path(f, overrides, recipe=Noisy(), console=c, err=c) == 0
    out = text(c)
    assert "confirming trial(s)" in out and "2 repeat(s) added" in out
    assert "expectations use trial" in out and "confirmed mean over 2 seeds" in out
    study = optuna.load_study(study_name="pricer", storage=f"sqlite:///{tmp_path}/pricer/study.db")
    assert len(noise.config_stats(study.get_trials())) == 2


def test_sweep_best_uses_and_names_the_confirmed_mean(tmp_path, capsys):
    recipe = Noisy()
    swept(tmp_path, recipe)
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median")
    out = confirm.run_confirm(cfg, 2, 2, url=st.storage_url(cfg), recipe=recipe, console=console())
    stats = noise.config_stats(out.study.get_trials())
    winner = min(stats.values(), key=lambda s: s.mean)
    assert ranking.best_trial(out.study).number == winner.number
    assert main(["best", "pricer", "--results-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert f"trial {winner.number} (confirmed mean over 3 seeds)" in shown
    assert f"{winner.mean:.6g}" in shown


def test_confirm_needs_a_study_with_a_complete_trial(tmp_path):
    cfg = sweep(tmp_path)
    with pytest.raises(HarnessError, match="run `sweep run` first"):
        confirm.run_confirm(cfg, 1, 1, url=st.storage_url(cfg), recipe=Noisy(), console=console())
    assert main(["confirm", "nosuch", "--results-dir", str(tmp_path)]) == 2


def test_a_retry_queued_before_confirm_is_run_not_stood_down(tmp_path):
    """A sweep interrupted by Ctrl-C leaves its trial's retry waiting; confirm then queues its repeats behind
    it, and Optuna hands out the oldest waiting trial first. The retry is owed: confirm runs it (before, it
    was marked `spare` and never ran again)."""
    recipe = Noisy(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        swept(tmp_path, recipe)
    cfg = sweep(tmp_path, "budget.n_trials=5", "early_terminate.type=median")
    out = confirm.run_confirm(cfg, 1, 2, url=st.storage_url(cfg), recipe=recipe, console=console())
    trials = out.study.get_trials()
    retries = [t for t in trials if attrs.RETRY_OF in t.user_attrs]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)  # it trained
    assert retries[0].number in [spec.number for spec in recipe.specs]
    assert not [t for t in trials if t.user_attrs.get(attrs.FAIL_REASON) == failures.SPARE]
    assert noise.config_stats(trials)[confirm.targets(out.study, 1)[0].number].n == 3
