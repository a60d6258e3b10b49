"""W&B parameters as `sweep convert` reads them (harness.sweepfile.convert writes the file).

- `flatten`: W&B's nested `parameters:` -> dotted names;
- its name: `rank` (how near it is to harness's name for its setting), `setting_of`, `no_setting`;
- its entry: `read_entry` reads W&B's distributions (exact where Optuna has the same one, approximated and
  said so where it has not); `rename_values` renames what transformers names otherwise (optimizers,
  schedulers) and refuses a warmup counted in steps; `Unmapped` says why a parameter stays a comment;
- the sweep's metric: `read_metric`; the output, line by line: `flow` (a value as one line of YAML), `Writer`.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any, TypeGuard

import yaml

from harness.sweepfile import wandb
from harness.sweepfile.schema import OPTIMIZERS, SCHEDULERS, TUNABLE, TrainingConfig, known_metrics

SMALL = ("learning_rate", "weight_decay", "lora_dropout", "warmup_ratio")
"""Settings whose values are below 1: a W&B `log_uniform` over one with bounds > 0 meant the values."""
_SCI = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")
"""`1e-5`: a number to W&B users, a string to YAML 1.1 (which wants `1.0e-5`)."""


class Unmapped(Exception):
    """A parameter that does not become a harness setting; the message says why."""


def flatten(block: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """W&B's nested `parameters:` (a param_dict) -> dotted names, as the script reads them."""
    out: list[tuple[str, Any]] = []
    for name, body in block.items():
        if isinstance(body, dict) and isinstance(body.get("parameters"), dict):
            out += flatten(body["parameters"], f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", body))
    return out


# The values W&B users give optimizers and schedulers -> transformers' names (schema.OPTIMIZERS, SCHEDULERS)

OPTIM_NAMES = {
    "adam": "adamw_torch", "adamw": "adamw_torch", "adamwhf": "adamw_torch", "fusedadam": "adamw_torch_fused",
    "fusedadamw": "adamw_torch_fused", "adamwfused": "adamw_torch_fused", "lion": "lion_32bit",
    "pagedadamw": "paged_adamw_32bit", "adam8bit": "adamw_8bit", "bnbadamw8bit": "adamw_bnb_8bit",
    "pagedlion": "paged_lion_32bit",
}  # fmt: skip
"""Squashed (`_squash`) names with no transformers twin of the same spelling. Plain Adam is AdamW with
weight_decay 0 (harness's default), so `adam` is `adamw_torch`."""
SCHEDULER_NAMES = {
    "cos": "cosine", "cosineannealing": "cosine", "cosineannealinglr": "cosine", "cosinedecay": "cosine",
    "warmupcosine": "cosine", "cosinewarmup": "cosine", "lineardecay": "linear", "warmuplinear": "linear",
    "linearwarmup": "linear", "linearlr": "linear", "none": "constant", "fixed": "constant",
    "const": "constant", "constantlr": "constant", "warmupconstant": "constant_with_warmup",
    "cosineannealingwarmrestarts": "cosine_with_restarts", "cosinerestarts": "cosine_with_restarts",
    "sgdr": "cosine_with_restarts", "poly": "polynomial", "rsqrt": "inverse_sqrt",
    "invsqrt": "inverse_sqrt", "plateau": "reduce_lr_on_plateau", "wsd": "warmup_stable_decay",
}  # fmt: skip
"""Squashed scheduler names (PyTorch's class names, common shorthands) -> transformers' SchedulerType.
Warmup is its own setting in transformers (`warmup_ratio`), so `warmup_cosine` is `cosine`."""


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.rsplit(".", 1)[-1].lower())


def _named(value: Any, names: tuple[str, ...], extra: dict[str, str]) -> str | None:
    if not isinstance(value, str):
        return None
    if value in names:
        return value
    key = _squash(value)
    by_squash = {_squash(n): n for n in names}
    return by_squash.get(key) or extra.get(key)


def optimizer(value: Any) -> str | None:
    """`Adam`, `AdamW`, `torch.optim.SGD`, `paged_adamw` -> transformers' `optim` name, or None."""
    return _named(value, OPTIMIZERS, OPTIM_NAMES)


def scheduler(value: Any) -> str | None:
    """`cosine_annealing`, `CosineAnnealingLR`, `none`, `plateau` -> transformers' scheduler, or None."""
    return _named(value, SCHEDULERS, SCHEDULER_NAMES)


BOOKKEEPING = frozenset({
    "output_dir", "logging_dir", "logging_steps", "logging_strategy", "logging_first_step", "save_steps",
    "save_strategy", "save_total_limit", "report_to", "run_name", "overwrite_output_dir", "do_train",
    "do_eval", "evaluation_strategy", "eval_strategy", "hub_model_id", "push_to_hub", "deepspeed", "fp16",
    "bf16", "tf32", "per_device_eval_batch_size", "eval_batch_size", "num_workers", "dataloader_num_workers",
    "wandb_project", "wandb_entity", "device", "gpus", "precision", "log_interval", "save_interval",
    "log_every", "save_every", "checkpoint_dir", "logging", "wandb", "experiment_name",
})  # fmt: skip
"""Script settings about running, not training (where output goes, logging, precision, devices): harness
keeps its own (results/<name>/, evals every budget.eval_steps, compute_dtype)."""


def rank(name: str, target: str | None) -> int:
    """How near a W&B name is to harness's name for its setting (0: harness's own)."""
    if target is None:
        return 0
    aliases = wandb.ALIASES[target]
    for candidate in (wandb.normalize(name), wandb.normalize(re.split(r"[./]", name)[-1])):
        if candidate in aliases:
            return aliases.index(candidate)
    return len(aliases)


def setting_of(target: str) -> str:
    """An ALIASES key -> the parameter name when harness searches it (training.target_modules, once it is
    tunable, is `target_modules`), else the fixed setting's dotted path."""
    last = target.rsplit(".", 1)[-1]
    return last if last in TUNABLE else target


def no_setting(name: str) -> str:
    if wandb.normalize(re.split(r"[./]", name)[-1]) in BOOKKEEPING:
        return "your script's run bookkeeping; harness keeps its own (results/<name>/, evals, logs, dtype)"
    return "no harness setting of that name"


def _num(x: Any) -> Any:
    if isinstance(x, str) and _SCI.fullmatch(x.strip()):
        return float(x)
    if isinstance(x, list):
        return [_num(v) for v in x]
    return x


def _number(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(setting: str) -> bool:
    f = TrainingConfig.model_fields.get(setting)
    return f is not None and f.annotation is int


def read_entry(raw: Any, setting: str) -> tuple[dict[str, Any], list[str]]:
    """A W&B parameter -> an entry harness reads (W&B's distributions read or approximated), with notes."""
    notes: list[str] = []
    body = {k: _num(v) for k, v in raw.items()} if isinstance(raw, dict) else {"value": _num(raw)}
    if "values" in body and not isinstance(body["values"], list):
        body["value"] = body.pop("values")
        notes.append("a single `values:` read as value")
    if body.pop("probabilities", None) is not None:
        notes.append("probabilities dropped: Optuna samples the values evenly")
    dist = body.get("distribution")
    if dist not in (None, "categorical", "constant") and {"value", "values"} & set(body):
        if not {"min", "max"} & set(body):  # `distribution: uniform` over `values: [0.2]`: the values
            notes.append(f"distribution {body.pop('distribution')} with values: the values")
            dist = None
    if dist == "categorical_w_probabilities":
        dist = body["distribution"] = "categorical"
    if dist in wandb.EXACT:
        body, _ = wandb.parameter(body)
        dist = body["distribution"]
    if dist in ("normal", "q_normal", "log_normal", "q_log_normal"):
        mu, sigma = body.pop("mu", 0.0), body.pop("sigma", 1.0)
        if not (_number(mu) and _number(sigma)):
            raise Unmapped(f"W&B's {dist} needs numbers for mu and sigma")
        low, high = mu - 2 * sigma, mu + 2 * sigma
        log = "log" in dist
        body = {"distribution": "log_uniform_values" if log else "uniform"}
        bounds = (_exp(low), _exp(high)) if log else (low, high)
        body["min"], body["max"] = (float(f"{x:.3g}") for x in bounds)  # an approximation: 3 digits
        notes.append(f"W&B's {dist} (mu {mu:g}, sigma {sigma:g}) read as its 95% range")
        dist = body["distribution"]
    if dist == "q_log_uniform" and _number(body.get("min")) and _number(body.get("max")):
        body["min"], body["max"] = _exp(body["min"]), _exp(body["max"])
        dist = "q_log_uniform_values"
    if dist == "q_log_uniform_values":
        body.pop("q", None)
        dist = body["distribution"] = "log_uniform_values"
        if not _is_int(setting):
            notes.append("q dropped: Optuna cannot step a log scale")
    if dist in ("beta", "q_beta"):
        raise Unmapped(f"W&B's {dist} has no Optuna equivalent; give min and max (its range is 0 to 1)")
    lo, hi = body.get("min"), body.get("max")
    if dist == "log_uniform" and setting in SMALL and _number(lo) and _number(hi) and 0 < lo < hi:
        dist = body["distribution"] = "log_uniform_values"
        notes.append(f"log_uniform bounds read as the values (W&B would sample e^{lo:g}..e^{hi:g})")
    if _is_int(setting) and dist in ("log_uniform_values", "log_uniform") and _number(lo) and _number(hi):
        lo, hi = (_exp(lo), _exp(hi)) if dist == "log_uniform" else (lo, hi)
        _finite(lo, hi)
        powers = [2**k for k in range(63) if lo <= 2**k <= hi]
        if len(powers) >= 2:
            body = {"values": powers}
            notes.append("a log scale over whole numbers read as powers of two")
        else:
            body = {"distribution": "int_uniform", "min": math.ceil(lo), "max": math.floor(hi)}
            notes.append("a log scale over whole numbers read as int_uniform")
    elif _is_int(setting) and _number(lo) and _number(hi) and _fractional(dist, lo, hi):
        _finite(lo, hi)
        body = {"distribution": "int_uniform", "min": math.ceil(lo), "max": math.floor(hi)}
        notes.append(f"{setting} is a whole number: int_uniform")
    return body, notes


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _finite(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise Unmapped(f"its range ({lo:g} to {hi:g}) is past what a number holds")


def _fractional(dist: Any, lo: Any, hi: Any) -> bool:
    """A uniform range (said, or W&B's default for float bounds) that samples fractions."""
    return dist == "uniform" or dist is None and not (isinstance(lo, int) and isinstance(hi, int))


PICKS = ("perplexity", "mae", "rmsle", "hit_rate", "r2", "rougeL")
"""What a converted sweep's metric line suggests instead of a metric harness does not measure."""
LORAS = {"alpha": "lora_alpha", "dropout": "lora_dropout", "rank": "r", "dropout_rate": "lora_dropout"}
"""Generic names read as LoRA's: right in a LoRA sweep, a guess in any other (so each line says so)."""


def generic(name: str, setting: str) -> str | None:
    """A note when a generic name was read as a LoRA setting (`alpha` -> lora_alpha)."""
    last = wandb.normalize(re.split(r"[./]", name)[-1])
    return f"{last} read as LoRA's" if LORAS.get(last) == setting else None


def rename_values(body: dict[str, Any], setting: str, notes: list[str]) -> dict[str, Any]:
    """Values whose names differ: optimizers, schedulers; and warmup counted in steps (not mapped)."""
    single = "value" in body
    values = [body["value"]] if single else body.get("values")
    named = {"optim": (optimizer, "optimizer"), "lr_scheduler_type": (scheduler, "scheduler")}
    if setting in named and isinstance(values, list):
        name_of, what = named[setting]
        new = list(dict.fromkeys(n for n in map(name_of, values) if n))
        lost = [v for v in values if not name_of(v)]
        if not new:
            raise Unmapped(f"transformers has no {what} named {', '.join(map(str, lost))}")
        renamed = [f"{v} -> {name_of(v)}" for v in values if name_of(v) and name_of(v) != v]
        notes += [", ".join(renamed)] if renamed else []
        notes += [f"left out {', '.join(map(str, lost))}: no transformers {what}"] if lost else []
        return {"value": new[0]} if single or len(new) == 1 else {"values": new}
    if setting == "warmup_ratio":
        seen = values if isinstance(values, list) else [body.get("min"), body.get("max")]
        if any(_number(v) and v >= 1 for v in seen):
            raise Unmapped(
                "a warmup in steps; harness's warmup is warmup_ratio, a share (0 to 1) of each trial's steps"
            )
    return body


def problem_of(message: str, setting: str) -> str:
    """parse_parameters' error -> the problem alone (`r: value 0 is invalid: ...`)."""
    for line in message.splitlines():
        if line.startswith("  - "):
            return line[4:].removeprefix(f"parameters.{setting}").lstrip(".: ")
    return message


def one_value(raw: Any) -> Any:
    """The one value a W&B parameter gives (`value: 3`, `values: [3]`, `3`), else None."""
    if not isinstance(raw, dict):
        return _num(raw)
    if "value" in raw:
        return _num(raw["value"])
    values = raw.get("values")
    if not isinstance(values, list):
        return _num(values)
    unique = list(dict.fromkeys(map(repr, _num(values))))
    return _num(values[0]) if len(unique) == 1 else None


def describe(body: dict[str, Any]) -> str:
    if "value" in body:
        return f"value {flow(body['value'])}"
    if "values" in body:
        return f"values {flow(body['values'])}"
    lo, hi = body.get("min"), body.get("max")
    ints = isinstance(lo, int) and isinstance(hi, int)
    dist = body.get("distribution") or ("int_uniform" if ints else "uniform")
    step = f" step {body['q']:g}" if _number(body.get("q")) else ""
    return f"{dist} {lo:g}..{hi:g}{step}" if _number(lo) and _number(hi) else flow(body)


def enumerable(body: dict[str, Any]) -> bool:
    """What method: grid can list: values, whole-number ranges, stepped ranges."""
    if "value" in body or "values" in body:
        return True
    ints = isinstance(body.get("min"), int) and isinstance(body.get("max"), int)
    return body.get("distribution", "int_uniform" if ints else None) in ("int_uniform", "q_uniform")


def read_metric(name: Any, goal: Any, trainer: str) -> tuple[str, str, str | None]:
    """A W&B metric -> (harness metric, goal, why it changed or None)."""
    known = known_metrics("pricer", trainer)
    goal = goal if goal in ("minimize", "maximize") else "minimize"
    if not isinstance(name, str) or not name:
        return "eval_loss", "minimize", "the W&B sweep names no metric"
    flat = wandb.metric_name(name)
    if flat in known:
        return flat, goal, None if flat == name else "the name the HF Trainer logs it under"
    low = name.lower()
    if "loss" in low:
        why = "harness ranks trials by validation loss" + (", not training loss" if "train" in low else "")
        return "eval_loss", "minimize", why
    if "perplexity" in low or re.search(r"(^|[/_.])ppl($|[/_.])", low):
        return "perplexity", "minimize", "harness's validation perplexity"
    bare = re.sub(r"^(eval|val|valid|validation|test)[/_.]", "", name)
    if bare in known:
        return bare, goal, "harness's name for it"
    return (
        "eval_loss",
        "minimize",
        (
            f"harness does not measure {name}: ranked by validation loss (or pick one task pricer "
            f"reports: {', '.join(m for m in known if m in PICKS)}, ...)"
        ),
    )


def flow(value: Any) -> str:
    """One line of YAML (flow style): `{values: [8, 16]}`, `1.0e-05`, `'a: b'`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1, sort_keys=False).strip()
    lines = text.splitlines()
    if len(lines) > 1 and lines[-1] == "...":  # a bare scalar's end-of-document marker
        lines.pop()
    return " ".join(line.strip() for line in lines)


class Writer:
    """The output file, line by line: YAML keys in flow style, and comments."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def raw(self, line: str) -> None:
        self.out.append(line)

    def blank(self) -> None:
        self.out.append("")

    def comment(self, text: str, indent: str = "") -> None:
        lines = textwrap.wrap(
            text, 106, initial_indent=indent, subsequent_indent=indent or "  ", break_on_hyphens=False
        ) or [""]
        self.out += [f"# {line}".rstrip() for line in lines]

    def key(self, key: str, value: Any, note: str | None = None) -> None:
        self.out.append(f"{key}: {flow(value)}" + (f"  # {note}" if note else ""))

    def section(self, key: str, values: dict[str, Any], notes: dict[str, str | None] | None = None) -> None:
        self.out.append(f"{key}:")
        for k, v in values.items():
            note = (notes or {}).get(k)
            self.out.append(f"  {k}: {flow(v)}" + (f"  # {note}" if note else ""))

    def text(self) -> str:
        return "\n".join(self.out).rstrip() + "\n"
