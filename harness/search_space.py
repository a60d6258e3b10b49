"""W&B-style `parameters:` blocks -> Optuna distributions.

People paste their W&B sweep blocks, so the syntax is W&B's: `value`, `values`, or `min`/`max` with a
`distribution`. `suggest(trial, params)` is the only place in harness that calls `trial.suggest_*`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from harness.config import SweepConfig, TrainingConfig, read_yaml, resolve_relative
from harness.errors import ConfigError, closest

Distribution = Literal[
    "constant",
    "categorical",
    "uniform",
    "int_uniform",
    "log_uniform_values",
    "log_uniform",
    "q_uniform",
]

# Tunable names are TrainingConfig fields, plus the "alpha = k * r" form.
NOT_TUNABLE = {
    "max_seq_length",
    "target_modules",
    "completion_only_loss",
    "response_template",
    "gradient_checkpointing",
}
TUNABLE = tuple(f for f in TrainingConfig.model_fields if f not in NOT_TUNABLE) + ("lora_alpha_multiple",)


class ParamSpec(BaseModel):
    """One entry of a W&B `parameters:` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Any = None
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    distribution: Distribution | None = None
    q: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_distribution(cls, data: Any) -> Any:
        """W&B's defaults: int min/max -> int_uniform, float min/max -> uniform (decided before coercion)."""
        if isinstance(data, dict) and "distribution" not in data and "min" in data and "max" in data:
            ints = all(isinstance(data[k], int) and not isinstance(data[k], bool) for k in ("min", "max"))
            data = {**data, "distribution": "int_uniform" if ints else "uniform"}
        return data

    @model_validator(mode="after")
    def _one_form(self) -> ParamSpec:
        forms = [
            self.value is not None,
            self.values is not None,
            self.min is not None or self.max is not None,
        ]
        if sum(forms) != 1:
            raise ValueError("give exactly one of `value`, `values`, or `min`+`max`")
        if self.values is not None and not self.values:
            raise ValueError("`values` is empty")
        if forms[2]:
            if self.min is None or self.max is None:
                raise ValueError("`min` and `max` go together")
            if self.min > self.max:
                raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
            if self.kind == "log_uniform_values" and self.min <= 0:
                raise ValueError(f"log_uniform_values needs min > 0 (got min {self.min:g})")
            if self.kind == "q_uniform" and (self.q is None or self.q <= 0):
                raise ValueError("q_uniform needs a step `q` > 0")
            if self.kind in ("constant", "categorical"):
                raise ValueError(f"distribution {self.kind!r} takes `value`/`values`, not min/max")
        elif self.distribution not in (None, "constant", "categorical"):
            raise ValueError(f"distribution {self.distribution!r} needs `min` and `max`")
        return self

    @property
    def kind(self) -> Distribution:
        if self.distribution:
            return self.distribution
        return "constant" if self.value is not None else "categorical"

    def candidates(self) -> list[Any]:
        """Values worth validating against the training schema: the extremes and every listed value."""
        if self.value is not None:
            return [self.value]
        if self.values is not None:
            return list(self.values)
        lo, hi = self.min, self.max
        if self.kind == "log_uniform":
            lo, hi = math.exp(lo), math.exp(hi)
        if self.kind == "int_uniform":
            lo, hi = int(lo), int(hi)
        return [lo, hi]


def to_distribution(spec: ParamSpec) -> BaseDistribution:
    kind = spec.kind
    if kind == "constant":
        return CategoricalDistribution([spec.value])
    if kind == "categorical":
        return CategoricalDistribution(list(spec.values or []))
    lo, hi = float(spec.min), float(spec.max)  # type: ignore[arg-type]
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


def load_parameters(cfg: SweepConfig) -> dict[str, ParamSpec]:
    """The sweep's search space: the file's `parameters:` with inline `parameters:` on top, all checked."""
    raw: dict[str, Any] = {}
    where = cfg.source_path or "sweep file"
    if cfg.search_space:
        path = resolve_relative(cfg, cfg.search_space)
        if not path.exists():
            raise ConfigError(f"{where}: search_space: file not found: {cfg.search_space}")
        data = read_yaml(path, "search-space file")
        if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict):
            raise ConfigError(f"{path}: expected a top-level `parameters:` mapping (W&B sweep syntax)")
        extra = sorted(set(data) - {"parameters", "description"})
        if extra:
            raise ConfigError(f"{path}: unknown top-level key(s) {extra}; expected `parameters:`")
        raw.update(data["parameters"])
        where = str(path)
    raw.update(cfg.parameters)
    if not raw:
        raise ConfigError(
            f"{cfg.source_path or 'sweep file'}: the search space is empty: give `search_space:` a file "
            "with `parameters:`, or an inline `parameters:` block"
        )
    return parse_parameters(raw, where)


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
