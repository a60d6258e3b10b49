"""`expect:` in a sweep file: assertions on what a sweep measured, parsed here at load and checked after it
runs by harness.suite.verdicts (pytest-style).

Syntax (each key is a metric the task reports, see `harness.sweepfile.schema.TASK_METRICS`)::

    expect:
      eval_loss: "< 2.5"            # operators: <  <=  >  >=  ==  !=   (== / != compare with 1e-9 tolerance)
      hit_rate: ">= 0.3"
      perplexity: {max: 12}         # inclusive bounds: {min: x}, {max: x}, or both
      mae: "< baseline.median"      # beat a task baseline (harness.tasks); also {max: baseline.mean}
      mae: {max: 40, scope: all}    # per-expectation scope (see below)
      scope: best                   # reserved: default scope of this block (best | all)
      smoke: true                   # reserved: check thresholds in smoke runs too (default true)

Scope:
- `best` (default): the metrics of the study's best trial (by `metric:`), as recorded when it finished.
  In a multi-objective study (`metrics:`) that is the Pareto-optimal trial best on the first metric.
- `all`: every COMPLETE trial must satisfy it (pruned and failed trials have no final metrics and are
  ignored); the report shows the offending trial, or the range over all trials when it passes.

Smoke runs (`sweep run --smoke`, `pytest sweeps/`) train for a few steps only, so quality thresholds meant
for a full run usually fail there. `smoke: false` keeps them meaningful: in smoke runs each expectation
then only checks that its metric was measured (a finite number), which still catches a broken pipeline.

Baselines: `baseline.NAME` in place of a number compares with that task baseline's value of the same
metric, as stored in the study (`task_baselines`, and `untrained_base` from `baseline_metrics`). Names are
checked at load against the task's baselines by harness.tasks.check (this module knows no task: sweepfile
sits below harness.tasks; any name is accepted when the sweep has custom metrics, whose modules may register
more); a baseline the study did not measure is FAIL.

Outcomes: PASS or FAIL with the measured value (and the baseline's, when one is named). A metric the
trial did not report is FAIL "not measured"; a study without any complete trial fails every expectation
("no complete trial").

Malformed blocks (unknown operator, a threshold that is not a number, a metric the task never reports)
are user errors: `parse_expectations` raises one `ConfigError` listing every problem, and
`sweepfile.load` calls it, so a typo fails before anything trains; the parsed block is
`SweepConfig.expectations` (the types, Condition and Expectation, are part of the schema in config.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import ConfigError, closest
from harness.sweepfile.schema import TASK_METRICS, Condition, Expectation, Scope

SCOPES: tuple[str, ...] = ("best", "all")
RESERVED = ("scope", "smoke")
"""Keys of an `expect:` block that configure the block instead of naming a metric."""

OPERATORS: dict[str, str] = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
BOUND_KEYS = {"min": ">=", "max": "<="}
# Longest operators first, so "<=" is not read as "<" followed by "=2.5".
_CONDITION = re.compile(r"^\s*(<=|>=|==|!=|=<|=>|<|>|=)\s*(.*?)\s*$")
_TYPOS = {"=<": "<=", "=>": ">=", "=": "=="}
_BASELINE = re.compile(r"^baseline\.(\w+)$")


# ----------------------------------------------------------------------------------------------------
# Parsing


def parse_expectations(
    raw: Mapping[str, Any] | None,
    task: str = "pricer",
    custom_metrics: bool = False,
    known: Sequence[str] | None = None,
) -> list[Expectation]:
    """Validate an `expect:` block; one ConfigError lists every problem (the caller adds the file name).

    `custom_metrics`: the sweep declares `evaluation.custom` functions, whose metric names cannot be
    known before they run, so unknown names are accepted then (as `metric.name` is)."""
    out, problem = read_expectations(raw, task, custom_metrics, known)
    if problem:
        raise ConfigError(problem)
    return out


def read_expectations(
    raw: Mapping[str, Any] | None,
    task: str = "pricer",
    custom_metrics: bool = False,
    known: Sequence[str] | None = None,
) -> tuple[list[Expectation], str | None]:
    """parse_expectations without raising: the expectations that parse, and every problem in one message
    (None when there is none), so sweepfile.load can check the good ones further in the same pass."""
    if not raw:
        return [], None
    if not isinstance(raw, Mapping):
        return [], "expect: must be a mapping of metric -> condition, e.g. {eval_loss: '< 2.5'}"
    problems: list[str] = []
    default_scope = raw.get("scope", "best")
    if default_scope not in SCOPES:
        problems.append(f"scope: {default_scope!r} is not one of {', '.join(SCOPES)}")
        default_scope = "best"
    in_smoke = raw.get("smoke", True)
    if not isinstance(in_smoke, bool):
        problems.append(f"smoke: must be true or false (got {in_smoke!r})")
        in_smoke = True
    known = tuple(known) if known is not None else TASK_METRICS.get(task, ())  # + the trainer's (config)
    out: list[Expectation] = []
    for metric, spec in raw.items():
        if metric in RESERVED:
            continue
        metric = str(metric)
        if metric not in known and not custom_metrics:
            hint = closest(metric, [*known, *RESERVED])
            problems.append(
                f"{metric}: not a metric task {task!r} reports"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; choose from: {', '.join(known)}"
            )
            continue
        try:
            conditions, scope = _parse_condition(spec, default_scope)
        except ValueError as e:
            problems.append(f"{metric}: {e}")
            continue
        out.append(Expectation(metric, conditions, scope, in_smoke))
    if len(problems) == 1:
        return out, problems[0]
    if problems:
        # Indented to sit under config's "  - expect:" line: one line per problem, all of them at once.
        return out, f"{len(problems)} problems:" + "".join(f"\n      - {p}" for p in problems)
    return out, None


def _parse_condition(spec: Any, default_scope: Scope) -> tuple[tuple[Condition, ...], Scope]:
    if isinstance(spec, str):
        return (_parse_text(spec),), default_scope
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in (*BOUND_KEYS, "scope")]
        if unknown:
            hint = closest(str(unknown[0]), [*BOUND_KEYS, "scope"])
            raise ValueError(
                f"unknown key {unknown[0]!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + "; a mapping takes min:, max: and scope:"
            )
        conditions = tuple(_bound(op, spec[k], k) for k, op in BOUND_KEYS.items() if k in spec)
        if not conditions:
            raise ValueError("give min:, max:, or both (e.g. {max: 12})")
        lo, hi = spec.get("min"), spec.get("max")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
            raise ValueError(f"min {lo} is above max {hi}: no value can pass")
        scope = spec.get("scope", default_scope)
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        return conditions, scope
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        raise ValueError(f"a bare number is ambiguous: write '== {spec}', '<= {spec}' or {{max: {spec}}}")
    raise ValueError(f"expected a condition such as '< 2.5' or {{max: 12}} (got {spec!r})")


def _parse_text(text: str) -> Condition:
    m = _CONDITION.match(text)
    if not m:
        raise ValueError(
            f"{text!r} does not start with an operator; write e.g. '< 2.5' (operators: {' '.join(OPERATORS)})"
        )
    op, value = m.groups()
    if op in _TYPOS:
        raise ValueError(f"operator {op!r} in {text!r}: did you mean {_TYPOS[op]!r}?")
    if re.match(r"^[<>=!]", value):
        raise ValueError(f"{text!r}: unknown operator; use one of {' '.join(OPERATORS)}")
    if m := _BASELINE.match(value):
        return Condition(op, None, m.group(1))
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"{value!r} in {text!r} is not a number (nor baseline.NAME)") from None
    if math.isnan(threshold):
        raise ValueError(f"{text!r}: nan is not a threshold")
    return Condition(op, threshold)


def _bound(op: str, value: Any, key: str) -> Condition:
    if isinstance(value, str) and (m := _BASELINE.match(value.strip())):
        return Condition(op, None, m.group(1))
    return Condition(op, _number(value, key))


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{key}: {value!r} is not a number")
    return float(value)
