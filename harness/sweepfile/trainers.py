"""The trainer side of a sweep file, checked at load (exit 2 before anything is written): the trainer and
data-format pair, the settings that only one trainer reads, one weight per GRPO reward function, and GRPO's
rule that every batch the search space can sample holds whole groups of `num_generations` completions.
Whether each reward function exists is checked by harness.tasks.check (the builtin ones are the tasks').

The data itself is read later (fixtures); a row that does not fit the trainer's format is reported then,
with its index and the columns found (formats.py).
"""

from __future__ import annotations

import itertools
from typing import Any

from harness.errors import problems_error
from harness.sweepfile.params import ParamSpec
from harness.sweepfile.schema import TRAINER_FORMATS, SweepConfig

# Settings only some trainers read: setting or tuning them for another trainer is a mistake worth naming.
ONLY_FOR = {
    "beta": ("dpo", "grpo"),
    "loss_type": ("dpo",),
    "num_generations": ("grpo",),
    "temperature": ("grpo",),
    "max_completion_length": ("grpo",),
    "reward_functions": ("grpo",),
    "reward_weights": ("grpo",),
}
MAX_ENUMERATED = 256  # int ranges up to this many values are checked value by value


def problems(cfg: SweepConfig) -> list[str]:
    """Every trainer-related problem of a loaded sweep, as '  - key: message' lines."""
    out: list[str] = []
    trainer, t = cfg.trainer, cfg.training
    fmt = cfg.dataset.format
    if fmt != "auto" and fmt not in TRAINER_FORMATS[trainer]:
        wants = " or ".join(TRAINER_FORMATS[trainer])
        out.append(f"  - dataset.format: {fmt!r} is not what trainer {trainer!r} trains on ({wants})")
    for key, trainers in ONLY_FOR.items():
        if trainer in trainers:
            continue
        # A default written out (as `sweep best --export` does) is no mistake; another value is.
        changed = key in t.model_fields_set and getattr(t, key) != type(t).model_fields[key].default
        where = [f"training.{key}"] if changed else []
        where += [f"parameters.{key}"] if key in cfg.parameters else []
        for w in where:
            out.append(
                f"  - {w}: only trainer {' or '.join(trainers)} reads it (this sweep's trainer is {trainer})"
            )
    if trainer == "grpo":
        out += _weight_problems(cfg)
        out += _group_problems(cfg)
    return out


def check(cfg: SweepConfig) -> None:
    found = problems(cfg)
    if found:
        raise problems_error(cfg.source_path or "sweep", found)


def _weight_problems(cfg: SweepConfig) -> list[str]:
    t = cfg.training
    if t.reward_weights is None or not t.reward_functions or len(t.reward_weights) == len(t.reward_functions):
        return []
    return [
        f"  - training.reward_weights: {len(t.reward_weights)} weights for "
        f"{len(t.reward_functions)} reward functions; give one weight per function"
    ]


def _group_problems(cfg: SweepConfig) -> list[str]:
    """trl's rule: the generation batch (per-device batch x accumulation) is whole groups of completions."""
    names = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations")
    choices = [_values(cfg.parameters.get(n), getattr(cfg.training, n)) for n in names]
    for bs, ga, ng in itertools.product(*choices):
        if (int(bs) * int(ga)) % int(ng):
            return [
                f"  - training.num_generations: per_device_train_batch_size {bs} x "
                f"gradient_accumulation_steps {ga} = {int(bs) * int(ga)} completions per batch, not a "
                f"multiple of num_generations {ng}; "
                "every batch the search space can sample must hold whole groups (e.g. batch 8 with 2, 4 or 8 "
                "generations)"
            ]
    return []


def _values(spec: ParamSpec | None, fixed: Any) -> list[Any]:
    if spec is None:
        return [fixed]
    if spec.kind in ("int_uniform", "q_uniform") and spec.min is not None and spec.max is not None:
        step = int(spec.q or 1) if spec.kind == "q_uniform" else 1
        lo, hi = int(spec.min), int(spec.max)
        if step >= 1 and (hi - lo) // step <= MAX_ENUMERATED:
            return list(range(lo, hi + 1, step))
    return spec.candidates()
