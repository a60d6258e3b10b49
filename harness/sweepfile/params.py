"""One entry of a W&B-style `parameters:` block, as parsed (harness.study.space maps it onto Optuna).

Kept apart from config.py (the sweep file's schema) so the schema stays one screenful per concern; like
config.py it imports nothing of harness, so everything can import it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

Distribution = Literal[
    "constant",
    "categorical",
    "uniform",
    "int_uniform",
    "log_uniform_values",
    "log_uniform",
    "q_uniform",
]

LOG_MIN, LOG_MAX = -700.0, 700.0
"""log_uniform's natural-log bounds: exp() of them stays a positive, finite float (e**709 is the largest)."""


class ParamSpec(BaseModel):
    """One entry of a W&B `parameters:` block."""

    # `.inf` and `.nan` are YAML floats; as a bound or a step they are always a mistake.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
        if self.min is not None and self.max is not None:
            if self.kind == "int_uniform" and not (self.min.is_integer() and self.max.is_integer()):
                raise ValueError(
                    f"int_uniform needs whole-number min and max (got {self.min:g} and {self.max:g}); "
                    "for fractions use distribution: uniform"
                )
            if self.min > self.max:
                raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
            if self.kind == "log_uniform_values" and self.min <= 0:
                raise ValueError(f"log_uniform_values needs min > 0 (got min {self.min:g})")
            if self.kind == "q_uniform" and (self.q is None or self.q <= 0):
                raise ValueError("q_uniform needs a step `q` > 0")
            if self.kind == "log_uniform" and not (LOG_MIN <= self.min and self.max <= LOG_MAX):
                raise ValueError(
                    f"log_uniform takes natural-log bounds, from {LOG_MIN:g} to {LOG_MAX:g} (got min "
                    f"{self.min:g}, max {self.max:g}): exp() of them is the value; for the values "
                    "themselves use log_uniform_values"
                )
            if self.kind in ("constant", "categorical"):
                raise ValueError(f"distribution {self.kind!r} takes `value`/`values`, not min/max")
        elif forms[2]:
            raise ValueError("`min` and `max` go together")
        elif self.distribution not in (None, "constant", "categorical"):
            raise ValueError(f"distribution {self.distribution!r} needs `min` and `max`")
        return self

    @property
    def kind(self) -> Distribution:
        if self.distribution:
            return self.distribution
        return "constant" if self.value is not None else "categorical"

    def bounds(self) -> tuple[float, float]:
        """min and max of a range form (the validator guarantees both are set)."""
        if self.min is None or self.max is None:
            raise ValueError(f"a {self.kind} parameter has no min/max")
        return float(self.min), float(self.max)

    def candidates(self) -> list[Any]:
        """Values worth validating against the training schema: the extremes and every listed value."""
        if self.value is not None:
            return [self.value]
        if self.values is not None:
            return list(self.values)
        lo, hi = self.bounds()
        if self.kind == "log_uniform":
            return [math.exp(lo), math.exp(hi)]
        if self.kind == "int_uniform":
            return [int(lo), int(hi)]
        return [lo, hi]
