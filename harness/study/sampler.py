"""The sweep's sampler: seeded per trial, so any number of workers can share one study."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness import compat
from harness.core import agreement, attrs
from harness.study import space
from harness.sweepfile.schema import SEED_LIMIT, SweepConfig


def make_sampler(cfg: SweepConfig) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded per trial (`PerTrialSeed`): trial N's params depend on the seed, N and
    the study so far, never on which worker asks or how many ask at once; a resumed run asks for new trial
    numbers, so it does not replay the first run's random start-up samples."""
    if cfg.method == "tpe":
        startup = min(5, cfg.budget.n_trials)
        # constant_liar: a running trial counts as a bad result, so workers asking at once are steered
        # away from the configs already being trained instead of all picking the same promising one.
        return PerTrialSeed(
            cfg.seed,
            lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=startup, constant_liar=True),
        )
    if cfg.method == "random":
        return PerTrialSeed(cfg.seed, lambda s: optuna.samplers.RandomSampler(seed=s))
    if cfg.method == "grid":
        grid = space.grid(cfg.parameters)
        # One shuffle for every trial: GridSampler gives trial N point N of its shuffled grid, so samplers
        # shuffled by per-trial seeds handed out points of different orders (repeats, points never run).
        return PerTrialSeed(cfg.seed, lambda s: optuna.samplers.GridSampler(grid, seed=cfg.seed))
    if cfg.method == "cmaes":
        return PerTrialSeed(
            cfg.seed, lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False)
        )
    if cfg.method == "gp":
        return PerTrialSeed(cfg.seed, lambda s: optuna.samplers.GPSampler(seed=s))
    raise AssertionError(cfg.method)


class PerTrialSeed(optuna.samplers.BaseSampler):
    """A sampler re-made for each trial with seed `seed + 7919 * trial.number` (modulo 2**32: numpy's limit).

    One seed per process gave two workers started together the same random stream, so they trained the
    same params side by side. Trial numbers are unique in a study (the storage hands them out), so seeding
    by them keeps one worker's sweep reproducible and keeps workers apart. The samplers' state lives in
    the storage (TPE, CMA-ES, grid read the trials), so a fresh one per trial loses nothing but caches,
    and those are handed on (keep_caches)."""

    def __init__(self, seed: int, make: Callable[[int], optuna.samplers.BaseSampler]) -> None:
        self.seed, self.make = seed, make
        self.inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fresh = self.make((self.seed + 7919 * trial.number) % SEED_LIMIT)
        keep_caches(self.inner, fresh)
        self.inner = fresh
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, space: dict[str, Any]
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any
    ) -> Any:
        return self.inner.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


# Incremental caches of one study's search space: TPE's IntersectionSearchSpace reads only the trials
# finished since its last call. They hold no randomness, so handing them to the next trial's sampler keeps
# every trial's params exactly as before; without them TPE rescanned the whole study on every trial, ~3x
# the sampler's time per trial at 500 trials (P7).
_CACHES = compat.SAMPLER_CACHES  # private sampler attributes: harness.compat owns their names


def keep_caches(old: optuna.samplers.BaseSampler, new: optuna.samplers.BaseSampler) -> None:
    if type(old) is not type(new):
        return
    for name in _CACHES:
        if getattr(old, name, None) is not None and hasattr(new, name):
            setattr(new, name, getattr(old, name))


def make_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    """Intermediate values are reported at the training step, so resources are counted in steps; except
    when a trial's steps depend on its batch size (budget.epochs, or eval_steps a fraction of an epoch):
    then they are reported by eval index (objective.on_eval) and resources are counted in evals.

    Why evals and not "min_iter x the smallest eval interval the space can produce": Optuna's pruners
    take one number per rung, and a rung in steps would compare a batch-8 trial with a batch-4 one that
    has seen half the rows at the same step; an eval index is the same share of an epoch for every trial
    (eval_steps a fraction of one), needs no train-row count before the data is loaded, and keeps min_iter
    what its docs say: evals."""
    p, b = cfg.early_terminate, cfg.budget
    if p.type == "none" or cfg.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    every = 1 if b.per_trial else b.eval_steps  # one resource unit per eval (see above), else steps
    assert isinstance(every, int)  # a fractional eval_steps is per_trial
    if not isinstance(p.min_iter, int):  # "auto": successive halving only (schema.PrunerConfig)
        return AdaptiveRung(p.eta, p.min_agreement, "eval" if b.per_trial else "step")
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps * every
        )
    if p.type == "hyperband":
        # The longest trial: max_steps, or in evals the most an epochs budget can run ("auto": Optuna
        # takes it from the first finished trial when it cannot be known before the data).
        longest: int | str | None = b.max_evals() if b.per_trial else b.max_steps
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_iter * every, max_resource=longest or "auto", reduction_factor=p.eta
        )
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_iter * every, reduction_factor=p.eta)


class AdaptiveRung(optuna.pruners.BasePruner):
    """`early_terminate.min_iter: auto`: successive halving whose first rung is measured, not guessed.

    Nothing is pruned until MIN_TRIALS trials finished with intermediate values; then the first rung is
    the earliest reported step whose rank agreement with the final value (harness.core.agreement) reaches
    `threshold`, re-measured whenever the count of finished trials changes (cached per count), and the
    rungs after it are first x eta**k. No step agreeing: no pruning. The choice is stored on the study
    (attrs.AUTO_RUNG) and said (`say`: the run's console) whenever it changes.

    The halving is done here from the stored intermediate values, not by Optuna's SuccessiveHalvingPruner:
    that one remembers each trial's value per rung *index* in trial system attrs, so once the first rung
    moved, rung 0 would compare values taken at different steps; and trials that ran before a rung was
    chosen (the ones the choice was measured on) would never count as competitors. The rule is Optuna's:
    at each rung a trial must be in the best len // eta (at least the best one) of every trial's value at
    that rung, its own included."""

    def __init__(self, eta: int, threshold: float, unit: str = "step") -> None:
        self.eta, self.threshold, self.unit = eta, threshold, unit
        self.say: Callable[[str], None] = lambda line: None
        self._cache: tuple[int, int | None] | None = None
        self._stored: dict[str, Any] | None = None

    def first_rung(self, study: optuna.Study) -> int | None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        curves = [
            (t.intermediate_values, t.value) for t in done if t.intermediate_values and t.value is not None
        ]
        if self._cache is not None and self._cache[0] == len(curves):
            return self._cache[1]
        chosen = None
        if len(curves) >= agreement.MIN_TRIALS:
            chosen = agreement.first_clearing(agreement.by_step(curves), self.threshold)
        step = chosen.step if chosen else None
        self._cache = (len(curves), step)
        if self._stored is None:
            self._stored = attrs.auto_rung(study)
        if len(curves) < agreement.MIN_TRIALS:
            return None
        record = {
            "step": step,
            "rho": chosen.rho if chosen else None,
            "n": chosen.n if chosen else len(curves),
            "complete": len(curves),
            "threshold": self.threshold,
        }
        if record != self._stored:  # re-measured on more trials: stored; said only when the rung moves
            moved = not self._stored or self._stored.get("step") != step
            study.set_user_attr(attrs.AUTO_RUNG, record)
            self._stored = record
            if moved:
                self.say(auto_line(study.study_name, record, self.unit))
        return step

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        first = None if step is None else self.first_rung(study)
        if step is None or first is None:
            return False
        earlier = [s for s in trial.intermediate_values if s < step]
        since = max(earlier) if earlier else -1
        rungs, resource = [], first
        while resource <= step:  # the rungs this report is the first to reach
            if resource > since:
                rungs.append(resource)
            resource *= self.eta
        if not rungs:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        others = study.get_trials(deepcopy=False)
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        for rung in rungs:
            field = [value] + [
                v for t in others if t.number != trial.number and (v := at_rung(t, rung)) is not None
            ]
            field.sort(reverse=maximize)
            keep = max(1, len(field) // self.eta)
            cut = field[keep - 1]
            if (value < cut) if maximize else (value > cut):
                return True
        return False


def at_rung(trial: FrozenTrial, rung: int) -> float | None:
    """A trial's value at its first report at or past `rung` (None: it never got there, or NaN)."""
    steps = [s for s in trial.intermediate_values if s >= rung]
    if not steps:
        return None
    v = trial.intermediate_values[min(steps)]
    return None if math.isnan(v) else v


def auto_line(name: str, record: dict[str, Any], unit: str = "step") -> str:
    """The console line when `min_iter: auto` changes its first rung."""
    done, t = record.get("complete"), record.get("threshold")
    if record.get("step") is None:
        return (
            f"{name}: min_iter auto: no {unit} agrees with the final value to rho >= {t} over {done} "
            "finished trials: not pruning"
        )
    return (
        f"{name}: min_iter auto: first rung now {unit} {record['step']} "
        f"(rho {record['rho']:.2f} with the final value over {record['n']} finished trials, threshold {t})"
    )
