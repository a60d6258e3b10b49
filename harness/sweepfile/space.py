"""W&B-style `parameters:` blocks -> checked ParamSpecs (harness.study.space maps them onto Optuna).

People paste their W&B sweep blocks, so the syntax is W&B's: `value`, `values`, or `min`/`max` with a
`distribution`. Parsing needs no Optuna: the sweep file loads (and `--collect-only` runs) without it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from harness.errors import ConfigError, closest
from harness.sweepfile.schema import TUNABLE, ParamSpec, TrainingConfig


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
