"""W&B-style `parameters:` blocks -> checked ParamSpecs (harness.study.space maps them onto Optuna).

People paste their W&B sweep blocks, so the syntax is W&B's: `value`, `values`, or `min`/`max` with a
`distribution`. Parsing needs no Optuna: the sweep file loads (and `--collect-only` runs) without it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from harness.errors import ConfigError, closest
from harness.sweepfile import wandb
from harness.sweepfile.schema import MODEL_TUNABLE, TUNABLE, ModelConfig, ParamSpec, TrainingConfig


def parse_parameters(raw: dict[str, Any], where: str) -> dict[str, ParamSpec]:
    problems: list[str] = []
    out: dict[str, ParamSpec] = {}
    for name, body in raw.items():
        key = f"parameters.{name}"
        if name not in TUNABLE:
            meant = wandb.harness_name(str(name), TUNABLE)  # a script's name from a W&B sweep: lr, lora-r
            hint = meant or closest(str(name), TUNABLE)
            problems.append(
                f"{key}: not a tunable setting"
                + (f" (did you mean {hint!r}?" if hint else "")
                + (" `sweep convert` renames a W&B sweep's parameters)" if meant else ")" if hint else "")
                + f"; tunable: {', '.join(TUNABLE)}"
            )
            continue
        if not isinstance(body, dict):
            body = {"value": body}  # `r: 8` is shorthand for a constant
        body, problem = wandb.parameter(body)  # W&B's distributions: inv_log_uniform, normal, ...
        if problem:
            problems.append(f"{key}: {problem}")
            continue
        try:
            spec = ParamSpec.model_validate(body)
        except ValidationError as e:
            for err in e.errors():
                sub = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] not in ("value_error", "extra_forbidden") and "input" in err:
                    msg += f" (got {_short(err['input'])})"
                if err["type"] == "extra_forbidden":
                    hint = closest(str(err["loc"][-1]), ParamSpec.model_fields)
                    msg = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                problems.append(f"{key}{'.' + sub if sub else ''}: {msg}")
            continue
        if name == "target_modules":
            spec = _lists_as_text(spec)
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


FRACTIONAL = ("uniform", "log_uniform", "log_uniform_values")
"""Distributions that sample fractions (q_uniform does too, unless its min, max and q are whole)."""


def _check_against_schema(key: str, name: str, spec: ParamSpec) -> list[str]:
    """Every value the space can produce must be a valid training setting (r > 0, dropout < 1, ...)."""
    if name == "lora_alpha_multiple":
        bad = [
            v
            for v in spec.candidates()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf
        ]
        return [f"{key}: must be a positive, finite number (got {bad[0]!r})"] if bad else []
    schema = ModelConfig if name in MODEL_TUNABLE else TrainingConfig
    field = schema.model_fields[name]
    if field.annotation is int and _fractional(spec):
        return [
            f"{key}: {name} is a whole number, but distribution {spec.kind} samples fractions; use "
            f"int_uniform (whole min and max, e.g. {{min: 4, max: 32}}) or values: [...]"
        ]
    problems = []
    for v in spec.candidates():
        try:
            schema.model_validate({name: v})
        except ValidationError as e:
            msg = e.errors()[0]["msg"]
            problems.append(f"{key}: value {v!r} is invalid: {msg}")
            break
    return problems


def _lists_as_text(spec: ParamSpec) -> ParamSpec:
    """target_modules' explicit lists as comma-separated text (`[q_proj, v_proj]` -> "q_proj,v_proj"): an
    Optuna choice must be a scalar; TrainingConfig reads the text back as the list."""

    def text(v: Any) -> Any:
        return ",".join(str(x) for x in v) if isinstance(v, list) else v

    if spec.values is not None:
        return spec.model_copy(update={"values": [text(v) for v in spec.values]})
    return spec.model_copy(update={"value": text(spec.value)})


def _fractional(spec: ParamSpec) -> bool:
    if spec.kind in FRACTIONAL:
        return True
    if spec.kind == "q_uniform":
        return not all(float(x).is_integer() for x in (spec.min, spec.max, spec.q) if x is not None)
    return False


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
