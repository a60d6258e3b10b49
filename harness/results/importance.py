"""Parameter importances with their uncertainty: which settings mattered, and how sure that is.

Importances are computed over the configs the sampler chose (seed repeats from `sweep confirm` are runs of a
config already counted, so they are left out) with optuna's default evaluator (PED-ANOVA, no extra
packages). Below MIN_TRIALS complete trials the ranking is mostly noise, and the note says so as a warning.
From MIN_TRIALS on, the trials are resampled with replacement RESAMPLES times and the note gives each
parameter's 5th-95th percentile over those resamples, so one number is never presented as a finding.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.results.view import ordered
from harness.study import noise, ranking

MIN_TRIALS = 20
RESAMPLES = 20
SEED = 0


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """(importances, note). Empty importances come with the reason; non-empty ones with the warning (few
    trials) or the bootstrap spread (enough trials)."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if ranking.primary_value(t) is not None and not noise.is_repeat(t)
    ]
    if len(complete) < 2:
        return {}, f"parameter importances need at least 2 complete trials; this study has {len(complete)}"
    names = ordered(p for t in complete for p in t.params)
    varying = [p for p in names if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varying:
        return (
            {},
            "every complete trial used the same parameter values, so no parameter can explain a difference",
        )
    if len({ranking.primary_value(t) for t in complete}) < 2:
        return {}, "every complete trial reached the same value, so no parameter made a difference"
    try:
        importances = _importances(study, complete, varying)
    except Exception as e:  # noqa: BLE001 - a report without importances beats no report
        return {}, f"parameter importances could not be computed: {type(e).__name__}: {e}"
    if not importances:
        return {}, "parameter importances came out undefined for these trials"
    if len(complete) < MIN_TRIALS:
        return importances, (
            f"warning: only {len(complete)} complete trials (fewer than {MIN_TRIALS}): these importances "
            "are a rough ranking from optuna's PED-ANOVA, not a finding; run more trials before trusting them"
        )
    return importances, spread_note(bootstrap(study, complete, varying), len(complete))


def _importances(study: optuna.Study, trials: Sequence[FrozenTrial], params: list[str]) -> dict[str, float]:
    """PED-ANOVA over exactly `trials` (an in-memory study holding copies of them)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" lines
    copy = optuna.create_study(directions=study.directions)
    copy.add_trials(trials)
    target: Callable[[FrozenTrial], float] | None = (
        (lambda t: t.values[0]) if ranking.is_multi(study) else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "few trials" warnings: the note says it once, plainly
        found = optuna.importance.get_param_importances(copy, params=params, target=target)
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def bootstrap(
    study: optuna.Study, trials: Sequence[FrozenTrial], params: list[str], resamples: int = RESAMPLES
) -> dict[str, list[float]]:
    """Each parameter's importance in each resample of the trials (drawn with replacement, seeded)."""
    rng = random.Random(SEED)
    out: dict[str, list[float]] = {p: [] for p in params}
    for _ in range(resamples):
        sample = [rng.choice(trials) for _ in trials]
        if len({ranking.primary_value(t) for t in sample}) < 2:
            continue
        try:
            found = _importances(study, sample, params)
        except Exception:  # noqa: BLE001 - a degenerate resample (one value of a parameter): skip it
            continue
        for p in params:
            out[p].append(found.get(p, 0.0))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    ordered_values = sorted(values)
    if not ordered_values:
        return math.nan
    i = (len(ordered_values) - 1) * q
    lo, hi = math.floor(i), math.ceil(i)
    return ordered_values[lo] + (ordered_values[hi] - ordered_values[lo]) * (i - lo)


def spread_note(samples: dict[str, list[float]], n: int) -> str:
    done = max((len(v) for v in samples.values()), default=0)
    parts = [
        f"{p} {percentile(v, 0.05):.2f}-{percentile(v, 0.95):.2f}"
        for p, v in sorted(samples.items(), key=lambda kv: -percentile(kv[1], 0.5) if kv[1] else 0.0)
        if v
    ]
    return (
        f"importance spread over {done} bootstrap resamples of the {n} complete trials "
        f"(5th-95th percentile): {', '.join(parts)}"
    )
