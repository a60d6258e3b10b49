"""ParamSpecs (the sweep file's `parameters:`, parsed by harness.sweepfile.space) -> Optuna distributions.

`suggest(trial, params)` is the only place in harness that calls `trial.suggest_*`.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from harness.errors import ConfigError
from harness.sweepfile.params import ParamSpec


def to_distribution(spec: ParamSpec) -> BaseDistribution:
    kind = spec.kind
    if kind == "constant":
        return CategoricalDistribution([spec.value])
    if kind == "categorical":
        return CategoricalDistribution(list(spec.values or []))
    lo, hi = spec.bounds()
    if kind == "int_uniform":
        return IntDistribution(int(lo), int(hi))
    if kind == "uniform":
        return FloatDistribution(lo, hi)
    if kind == "log_uniform_values":
        return FloatDistribution(lo, hi, log=True)
    if kind == "log_uniform":  # W&B: min/max are natural-log bounds
        return FloatDistribution(math.exp(lo), math.exp(hi), log=True)
    if kind == "q_uniform":
        return FloatDistribution(lo, hi, step=spec.q)
    raise AssertionError(kind)


def distributions(params: dict[str, ParamSpec]) -> dict[str, BaseDistribution]:
    return {name: to_distribution(spec) for name, spec in params.items()}


def suggest(trial: optuna.Trial, params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Sample one configuration. The only caller of trial.suggest_* in harness."""
    out: dict[str, Any] = {}
    for name, spec in params.items():
        d = to_distribution(spec)
        if isinstance(d, CategoricalDistribution):
            out[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            out[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            assert isinstance(d, FloatDistribution)
            out[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    return out


def grid(params: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """The grid for method: grid. Continuous ranges have no grid; int and q ranges do."""
    out: dict[str, list[Any]] = {}
    for name, spec in params.items():
        d = to_distribution(spec)
        if isinstance(d, CategoricalDistribution):
            out[name] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            out[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            out[name] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise ConfigError(
                f"method: grid cannot enumerate parameter {name!r} ({spec.kind} from {spec.min} to "
                f"{spec.max}); give it `values:` or a q_uniform step, or use method: tpe"
            )
    return out
