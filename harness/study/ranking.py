"""Which trial is best: the one ranking rule every view and verb uses, for one objective or several."""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.core import attrs
from harness.study import noise

# ----------------------------------------------------------------------------------------------------
# Single- and multi-objective studies read the same way. A multi-objective study has no study.direction,
# trial.value or study.best_trial (Optuna raises); these helpers give the primary (first) objective's view.


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def goals(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def metric_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names, in order (user attrs written by open_study)."""
    stored = study.user_attrs
    names = attrs.objective_names(stored) or [attrs.metric(stored) or "value"]
    if len(names) != len(study.directions):
        names = [f"value_{i}" for i in range(len(study.directions))]
    return list(names)


def primary_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """trial.value for one objective; the first objective's value for several."""
    values = trial.values
    return float(values[0]) if values else None


def pareto_numbers(study: optuna.Study) -> set[int]:
    """Trial numbers on the Pareto front (empty for a single-objective study)."""
    if not is_multi(study):
        return set()
    return {t.number for t in study.best_trials}


STATE_RANK = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3}
LAST_RANK = 4  # failed and anything else


def rank_key(study: optuna.Study) -> Callable[[FrozenTrial], tuple[bool, int, bool, float, int]]:
    """The one ranking rule: complete trials best first (multi-objective: Pareto-optimal ones first, then
    by the primary metric), then pruned, running, waiting, failed; ties by trial number. Repeats of a
    config (`sweep confirm`, harness.study.noise) come after every config the sampler chose: they are runs of
    a config already ranked, not competitors."""
    sign = -1.0 if goals(study)[0] == "maximize" else 1.0
    pareto = pareto_numbers(study)

    def key(t: FrozenTrial) -> tuple[bool, int, bool, float, int]:
        v = primary_value(t)
        value = sign * v if v is not None else math.inf
        return (
            noise.is_repeat(t),
            STATE_RANK.get(t.state, LAST_RANK),
            t.number not in pareto,
            value,
            t.number,
        )

    return key


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The winning config's original trial, or None (no exception, unlike optuna's study.best_trial).

    The best complete original by rank_key; when that config was confirmed (`sweep confirm`), the
    confirmed config with the best mean over its seeds instead (a lucky single run does not win by luck
    alone). Multi-objective: the Pareto-optimal trial best on the first (primary) metric."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values and not noise.is_repeat(t)]
    best = min(complete, key=rank_key(study), default=None)
    if best is None or is_multi(study):
        return best
    confirmed = noise.config_stats(trials)
    if best.number not in confirmed:
        return best
    maximize = goals(study)[0] == "maximize"
    top = min(confirmed.values(), key=lambda s: (-s.mean if maximize else s.mean, s.number))
    return next(t for t in complete if t.number == top.number)


def confirmed(study: optuna.Study, trial: FrozenTrial | None) -> noise.ConfigStats | None:
    """The seed statistics of `trial`'s config, when it was confirmed."""
    if trial is None:
        return None
    return noise.config_stats(study.get_trials(deepcopy=False)).get(trial.number)
