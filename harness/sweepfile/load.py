"""A sweep file -> a validated, frozen SweepConfig: YAML, dotted overrides, the search space, `expect:`.

`load_sweep(path, overrides, checks)` is the only way in. Every problem of the file is gathered into one
ConfigError (the schema's, the `expect:` block's, and the caller's `checks`: harness.tasks.check, which knows
the tasks this package must not import), then the search space (a `search_space:` file with inline
`parameters:` on top) is parsed, so nothing downstream re-reads files or re-parses blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError, closest, problems_error
from harness.sweepfile import checks as machine
from harness.sweepfile import levers, reader, trainers, wandb
from harness.sweepfile.expect import read_expectations
from harness.sweepfile.schema import TASK_METRICS, Expectation, ParamSpec, SweepConfig, known_metrics
from harness.sweepfile.space import parse_parameters

# Fields of SweepConfig that load() sets; a sweep file may not.
INTERNAL = ("source_path", "expectations", "notes")


def read_yaml(path: Path, what: str = "file") -> Any:
    """safe_load only: a sweep file is data, never code; strict about repeated keys, depth and aliases
    (harness.sweepfile.reader)."""
    return reader.read(path, what)


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """`budget.max_steps=20` style overrides; values are parsed as YAML scalars (20 -> int, true -> bool)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r} is not of the form key.sub=value (for example budget.max_steps=20)"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError):
            value = raw
        reader.check_shape(value, f"override {key}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} in {source} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys at the place an unknown key was found, for the 'did you mean' hint."""
    model: type[BaseModel] | None = SweepConfig
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None and field is not None:  # Optional[Model]
            for arg in getattr(ann, "__args__", ()):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    return list(model.model_fields) if model else []


def validation_problems(err: ValidationError) -> list[str]:
    """One '  - key: message' line per problem, with 'did you mean' for unknown keys."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            valid = [f for f in _fields_at(loc) if f not in INTERNAL]
            hint = closest(str(loc[-1]), valid)
            msg = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] not in ("value_error", "assertion_error"):
                msg += f" (got {e['input']!r})"
        lines.append(f"  - {key}: {msg}")
    return lines


Checks = Callable[[SweepConfig], list[str]]
"""A validated config (with its expectations, before the search space is read) -> more problems, as
'  - key: message' lines: what a layer above sweepfile knows (harness.tasks.check)."""


def load_sweep(
    path: str | Path, overrides: list[str] | None = None, checks: Checks | None = None
) -> SweepConfig:
    """Read, override, validate; the search space is loaded and checked here too (one error for all).
    `checks` (harness.tasks.check where the sweep is loaded to run) adds its problems to the schema's."""
    path = Path(path)
    data = read_yaml(path, "sweep file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (name:, model:, ...) at the top level")
    data = apply_overrides(data, overrides or [], str(path))
    data, notes = wandb.accept(data)  # W&B's own keys: method: bayes, program:, eval/loss, run_cap, ...
    data.setdefault("name", path.stem)
    problems = [f"  - {key}: unknown key" for key in INTERNAL if key in data]
    # Parsed below with the search-space file (search_space.parse_parameters words its problems).
    inline = data.pop("parameters", None) or {}
    if not isinstance(inline, dict):
        problems.append(
            "  - parameters: expected a mapping of setting -> W&B parameter (e.g. r: {values: [8]})"
        )
        inline = {}
    clean = {k: v for k, v in data.items() if k not in INTERNAL}
    cfg: SweepConfig | None = None
    try:
        cfg = SweepConfig.model_validate({**clean, "source_path": str(path)})
    except ValidationError as e:
        problems += validation_problems(e)
    expect = data.get("expect")
    expectations: list[Expectation] = []
    if isinstance(expect, dict):
        task = data.get("task")
        task = task if isinstance(task, str) and task in TASK_METRICS else "pricer"  # schema: a bad task
        evaluation = data.get("evaluation")
        custom = isinstance(evaluation, dict) and bool(evaluation.get("custom"))
        trainer = cfg.trainer if cfg is not None else "sft"
        reward_fns = cfg.training.reward_functions if cfg is not None else []
        expectations, problem = read_expectations(
            expect, str(task), custom_metrics=custom, known=known_metrics(str(task), trainer, reward_fns)
        )
        if problem:
            problems.append(f"  - expect: {problem}")
    if cfg is not None:
        problems += machine.config_problems(cfg)  # numbers, paths, module:function specs
    if cfg is not None and checks is not None:  # on the expectations that parsed
        problems += checks(cfg.model_copy(update={"expectations": tuple(expectations)}))
    if problems or cfg is None:
        raise problems_error(str(path), problems)
    params = load_parameters(cfg, inline)
    cfg = cfg.model_copy(
        update={"parameters": params, "expectations": tuple(expectations), "notes": tuple(notes)}
    )
    machine.check(cfg)  # the space against the rest: integers the machine holds, a grid it can enumerate
    trainers.check(cfg)  # needs the search space: GRPO's batches must hold whole generation groups
    levers.check(cfg)  # target_modules against the architecture, one alpha form, LoRA+'s optimizers
    return cfg


def load_parameters(cfg: SweepConfig, inline: dict[str, Any]) -> dict[str, ParamSpec]:
    """The sweep's search space: the file's `parameters:` with inline `parameters:` on top, all checked."""
    raw: dict[str, Any] = {}
    where = cfg.source_path or "sweep file"
    if cfg.search_space:
        path = cfg.resolve_path(cfg.search_space)
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
    raw.update(inline)
    if not raw:
        raise ConfigError(
            f"{cfg.source_path or 'sweep file'}: the search space is empty: give `search_space:` a file "
            "with `parameters:`, or an inline `parameters:` block"
        )
    return parse_parameters(raw, where)
