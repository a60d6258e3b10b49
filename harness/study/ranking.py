"""Which trial is best: the one ranking rule every view and verb uses, for one objective or several."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.core import attrs
from harness.study import failures, noise

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
    a config already ranked, not competitors. Audits of pruned trials (`sweep audit`) do compete: each is
    the full-budget run its pruned trial would have been, so a config the pruner cut wrongly can win."""
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


# ----------------------------------------------------------------------------------------------------
# Pruning: which pruned trials looked best when they were cut, and what the audit of them found
# (`sweep audit`, harness.study.confirm). Audits (user attr audit_of) are full-budget runs of configs the
# sampler chose, so rank_key and best_trial let them compete like any trial; the regret is measured
# against the best of the sweep's own trials (audits and seed repeats left out).


def standing(trials: list[FrozenTrial], t: FrozenTrial, maximize: bool) -> float:
    """The share of the other trials that reported at `t`'s last reported step whose value there was no
    better than `t`'s (1.0: none was better, or none reached it). Re-runs are left out: they report none."""
    step = max(t.intermediate_values)
    mine = t.intermediate_values[step]
    peers = [
        p.intermediate_values[step]
        for p in trials
        if p.number != t.number
        and not failures.is_rerun(p)
        and math.isfinite(p.intermediate_values.get(step, math.nan))
    ]
    if not peers:
        return 1.0
    better = sum((v > mine) if maximize else (v < mine) for v in peers)
    return 1.0 - better / len(peers)


def most_promising(study: optuna.Study) -> list[FrozenTrial]:
    """The study's pruned trials, most promising first: the highest standing at the step each was cut;
    ties go to the one cut later (it had passed more rungs), then the better value there, then the number."""
    trials = study.get_trials(deepcopy=False)
    maximize = goals(study)[0] == "maximize"
    sign = -1.0 if maximize else 1.0
    pruned = [
        t
        for t in trials
        if t.state == TrialState.PRUNED and not failures.is_rerun(t) and t.intermediate_values
    ]

    def key(t: FrozenTrial) -> tuple[float, int, float, int]:
        step = max(t.intermediate_values)
        return (-standing(trials, t, maximize), -step, sign * t.intermediate_values[step], t.number)

    return sorted(pruned, key=key)


@dataclass(frozen=True)
class Audited:
    pruned: int  # the pruned trial
    pruned_at: int | None  # the step it was cut at
    audit: int  # the audit trial
    state: str  # the audit's state (COMPLETE, RUNNING, FAIL...)
    from_step: int  # the step the audit's training started at: its checkpoint's, or 0
    value: float | None  # the audit's value, when complete
    margin: float | None  # how much better than the sweep's best (negative: worse), when both exist


@dataclass(frozen=True)
class AuditSummary:
    best_trial: int | None  # the sweep's best trial, audits and repeats left out
    best_value: float | None
    audited: tuple[Audited, ...]
    beaten: int  # audits better than the sweep's best
    regret: float  # how much better the best audit is than the sweep's best; 0 when none is

    def to_json(self) -> dict[str, Any]:
        """As stored on the study (user attr pruning_audit): plain JSON, lists for tuples."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def audit_summary(study: optuna.Study) -> AuditSummary:
    """Every audited pruned trial against the sweep's best single run (one objective; a multi-objective
    study is never pruned). For a pruned trial audited more than once (an interrupted audit and its
    retry), its complete audit, else its latest."""
    trials = study.get_trials(deepcopy=False)
    maximize = goals(study)[0] == "maximize"
    own = [t for t in trials if t.state == TrialState.COMPLETE and not failures.is_rerun(t) and t.values]
    own = [t for t in own if math.isfinite(t.values[0])]
    best = (max if maximize else min)(own, key=lambda t: t.values[0], default=None)
    best_value = best.values[0] if best is not None else None
    by_number = {t.number: t for t in trials}
    latest: dict[int, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: (t.state == TrialState.COMPLETE, t.number)):
        of = attrs.audit_of(t)
        if of is not None and of in by_number:
            latest[of] = t
    audited = []
    for of, a in sorted(latest.items()):
        value = a.values[0] if a.state == TrialState.COMPLETE and a.values else None
        margin = None
        if value is not None and best_value is not None:
            margin = value - best_value if maximize else best_value - value
        pruned_at = attrs.steps_run(by_number[of])
        audited.append(
            Audited(of, pruned_at, a.number, a.state.name, attrs.resumed_at(a) or 0, value, margin)
        )
    margins = [x.margin for x in audited if x.margin is not None]
    beaten = sum(m > 0 for m in margins)
    regret = max([0.0, *margins])
    return AuditSummary(best.number if best else None, best_value, tuple(audited), beaten, regret)
