"""W&B-style `parameters:` blocks -> Optuna distributions.

People paste their W&B sweep blocks, so the syntax is W&B's: `value`, `values`, or `min`/`max` with a
`distribution`. `suggest(trial, params)` is the only place in harness that calls `trial.suggest_*`.
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
from pydantic import ValidationError

from harness.errors import ConfigError, closest
from harness.sweepfile.schema import TUNABLE, ParamSpec, TrainingConfig

__all__ = ["ParamSpec", "TUNABLE", "distributions", "grid", "parse_parameters", "suggest", "to_distribution"]


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


# ----------------------------------------------------------------------------------------------------
# Loading and checking


def parse_parameters(raw: dict[str, Any], where: str) -> dict[str, ParamSpec]:
    problems: list[str] = []
    out: dict[str, ParamSpec] = {}
    for name, body in raw.items():
        key = f"parameters.{name}"
        if name not in TUNABLE:
            hint = closest(str(name), TUNABLE)
            problems.append(
                f"{key}: not a tunable setting"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; tunable: {', '.join(TUNABLE)}"
            )
            continue
        if not isinstance(body, dict):
            body = {"value": body}  # `r: 8` is shorthand for a constant
        try:
            spec = ParamSpec.model_validate(body)
        except ValidationError as e:
            for err in e.errors():
                sub = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    hint = closest(str(err["loc"][-1]), ParamSpec.model_fields)
                    msg = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                problems.append(f"{key}{'.' + sub if sub else ''}: {msg}")
            continue
        problems += _check_against_schema(key, name, spec)
        out[name] = spec
    if "lora_alpha" in out and "lora_alpha_multiple" in out:
        problems.append("parameters: give lora_alpha or lora_alpha_multiple, not both")
    if problems:
        n = len(problems)
        raise ConfigError(
            f"{where}: {n} problem{'s' if n > 1 else ''} in the search space:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return out


def _check_against_schema(key: str, name: str, spec: ParamSpec) -> list[str]:
    """Every value the space can produce must be a valid training setting (r > 0, dropout < 1, ...)."""
    if name == "lora_alpha_multiple":
        bad = [v for v in spec.candidates() if not isinstance(v, (int, float)) or v <= 0]
        return [f"{key}: must be a positive number (got {bad[0]!r})"] if bad else []
    problems = []
    for v in spec.candidates():
        try:
            TrainingConfig.model_validate({name: v})
        except ValidationError as e:
            msg = e.errors()[0]["msg"]
            problems.append(f"{key}: value {v!r} is invalid: {msg}")
            break
    return problems
