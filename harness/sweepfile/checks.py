"""Load-time checks that no single field's validator can make: numbers past what the machine holds, strings
that become paths, `module:function` specs, and what `method: grid` can enumerate.

Each check returns '  - key: message' lines (none: []); sweepfile.load.load_sweep gathers them with the
schema's problems into one ConfigError, before any model, data or storage is touched. `config_problems`
needs only the validated config; `space_problems` needs the parsed search space too. No optuna here: the
grid is counted from the ParamSpecs, as harness.study.space.grid will enumerate it.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import CALLABLE_SPEC, NAME_MAX, ConfigError, check_callable_spec, problems_error
from harness.sweepfile.params import ParamSpec
from harness.sweepfile.schema import SweepConfig

INT64_MAX = 2**63 - 1
"""The largest integer numpy, torch and SQLite hold; a larger one in a sweep file is a typo."""
PATH_MAX = 4095
"""Bytes in a whole path on Linux (a component may have NAME_MAX)."""
MAX_GRID = 1_000_000
"""Points `method: grid` may have: Optuna's GridSampler lists every one of them up front."""
PATHS = ("results_dir", "search_space", "model.name", "dataset.source", "train.output_dir")
"""Settings that name a file or folder (model.name and dataset.source may be hub ids: short anyway)."""


def config_problems(cfg: SweepConfig) -> list[str]:
    """Numbers, paths and `module:function` specs of a validated config."""
    return _numbers(cfg) + _paths(cfg) + _callables(cfg)


def space_problems(cfg: SweepConfig) -> list[str]:
    """The parsed search space against the rest of the config: integers the machine holds, and a grid
    that `method: grid` can enumerate (optuna's grid would fail when the first trial is sampled)."""
    out = []
    for name, spec in cfg.parameters.items():
        big = [v for v in spec.candidates() if _too_big(v)]
        if big:
            out.append(f"  - parameters.{name}: {_big(big[0])}")
    if cfg.method == "grid" and not out:
        out += _grid(cfg.parameters)
    return out + _backend(cfg)


def check(cfg: SweepConfig) -> None:
    """`space_problems` as one ConfigError naming the file (load_sweep, once the space is parsed)."""
    found = space_problems(cfg)
    if found:
        raise problems_error(cfg.source_path or "sweep file", found)


def grid_size(spec: ParamSpec) -> int | None:
    """How many points a parameter has on the grid, or None when its range is continuous."""
    kind = spec.kind
    if kind == "constant":
        return 1
    if kind == "categorical":
        return len(spec.values or [])
    lo, hi = spec.bounds()
    if kind == "int_uniform":
        return int(hi) - int(lo) + 1
    if kind == "q_uniform" and spec.q:
        return int(round((hi - lo) / spec.q)) + 1
    return None


def _grid(params: dict[str, ParamSpec]) -> list[str]:
    out, sizes = [], {}
    for name, spec in params.items():
        n = grid_size(spec)
        if n is None:
            out.append(
                f"  - parameters.{name}: method: grid cannot enumerate a {spec.kind} range ({spec.min:g} to "
                f"{spec.max:g}); give it values: [...], an int_uniform or q_uniform range, or use method: tpe"
            )
        else:
            sizes[name] = n
    total = math.prod(sizes.values()) if sizes else 0
    if not out and total > MAX_GRID:
        widest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{name} {n:,}" for name, n in widest)
        out.append(
            f"  - method: grid: the grid has {total:,} points (largest: {shown}); at most {MAX_GRID:,}: "
            "give the widest parameters fewer values, or use method: tpe or random"
        )
    return out


def _numbers(cfg: SweepConfig) -> list[str]:
    dumped = cfg.model_dump(mode="python", exclude={"parameters", "expectations", "source_path"})
    return [f"  - {key}: {_big(v)}" for key, v in _walk(dumped) if _too_big(v)]


def _too_big(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) > INT64_MAX


def _big(v: int) -> str:
    digits = len(str(abs(v)))
    return f"a {digits}-digit number is past the largest integer the machine holds (2**63 - 1)"


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{key}.{i}")
    else:
        yield key, value


def _paths(cfg: SweepConfig) -> list[str]:
    out = []
    for key in PATHS:
        section, _, field = key.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, field)
        if isinstance(value, str):
            problem = path_problem(value)
            if problem:
                out.append(f"  - {key}: {problem}")
    return out


def path_problem(text: str) -> str | None:
    """Why a string cannot be a path on this machine (None: it can): a NUL character, `~name` of no user,
    a file name over NAME_MAX bytes, a path over PATH_MAX bytes."""
    if "\x00" in text:
        return "contains a NUL character, which no file name may hold"
    if text.startswith("~"):
        try:
            Path(text).expanduser()
        except RuntimeError:  # `~name` of a user this machine does not have
            return f"{text.split('/')[0][:40]!r} names no user of this machine, so no home folder"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > PATH_MAX:
        return f"a path of {size:,} bytes; at most {PATH_MAX:,}"
    longest = max(text.replace("\\", "/").split("/"), key=lambda p: len(p.encode("utf-8", "surrogatepass")))
    part_size = len(longest.encode("utf-8", "surrogatepass"))
    if part_size > NAME_MAX:
        return f"a file or folder name of {part_size} bytes ({longest[:20]!r}...); at most {NAME_MAX}"
    return None


def _callables(cfg: SweepConfig) -> list[str]:
    """`module:function` specs name modules on the import path, never files: no '/', '..', '~'.
    (Builtin reward names have no ':'; harness.tasks.check resolves and imports each spec.)"""
    out = []
    specs = [("training.reward_functions", s) for s in cfg.training.reward_functions if ":" in s]
    specs += [("evaluation.custom", s) for s in cfg.evaluation.custom]
    for key, spec in specs:
        what = "reward function" if key.startswith("training") else "custom metric"
        try:
            check_callable_spec(spec, what)
        except ConfigError as e:
            out.append(f"  - {key}: {e}")
    return out


UNSLOTH_QUANTIZATION = ("nf4", "int8", "none")
"""What Unsloth's FastLanguageModel loads: load_in_4bit (NF4), load_in_8bit, or the compute dtype."""


def _backend(cfg: SweepConfig) -> list[str]:
    """model.backend unsloth: its package installed here and a quantization it loads, every one the search
    space can sample. (Its CUDA GPU is checked where torch is: harness.trial.base.check_backend.)"""
    if cfg.model.backend != "unsloth":
        return []
    out = []
    if importlib.util.find_spec("unsloth") is None:  # finds the package without importing it
        out.append(
            "  - model.backend: unsloth is not installed here; install it with "
            "pip install 'harness[unsloth]' (it needs a CUDA GPU), or use backend: transformers"
        )
    if cfg.training.distributed != "none":
        out.append(
            f"  - training.distributed {cfg.training.distributed}: Unsloth trains a trial on one GPU; use "
            "distributed: none with it, or backend: transformers for ddp/fsdp"
        )
    searched = cfg.parameters.get("quantization")
    kinds = {cfg.model.quantization, *(searched.candidates() if searched is not None else ())}
    bad = sorted(str(k) for k in kinds if k not in UNSLOTH_QUANTIZATION)
    if bad:
        out.append(
            f"  - model.quantization {', '.join(bad)}: Unsloth loads {', '.join(UNSLOTH_QUANTIZATION)}; "
            "use one of those, or backend: transformers"
        )
    return out


def callable_ok(spec: str) -> bool:
    """The spec's form is valid (its problems, if any, are `config_problems`')."""
    return bool(CALLABLE_SPEC.fullmatch(spec))
