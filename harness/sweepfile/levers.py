"""The QLoRA levers that need more than one field's validator: which layers `target_modules` selects in a
given architecture, and the load-time rules of the LoRA variants (one alpha form, LoRA+'s optimizers).

Pure data and functions over module paths: the trial side hands over the loaded base's layer names
(harness.trial.recipes.lora), the sweep file's checks read only `config.json`'s `model_type`, so a
typo in a module name is an input error before any model is loaded where the architecture is known.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import closest, problems_error
from harness.sweepfile.schema import TARGET_PRESETS, SweepConfig, target_choice

BUILTIN_MODEL, BUILTIN_MODEL_TYPE = "builtin:tiny-llama", "llama"
"""The builtin base is a Llama (tests/test_levers.py checks its shipped config.json says so)."""

_LLAMA: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}
_NEOX: dict[str, tuple[str, ...]] = {
    "attention": ("query_key_value", "dense"),
    "mlp": ("dense_h_to_4h", "dense_4h_to_h"),
}
ARCHITECTURES: dict[str, dict[str, tuple[str, ...]]] = {
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2"), _LLAMA
    ),
    "gpt2": {"attention": ("c_attn", "c_proj"), "mlp": ("c_fc", "c_proj")},  # c_proj: by path (attn./mlp.)
    "phi": {"attention": ("q_proj", "k_proj", "v_proj", "dense"), "mlp": ("fc1", "fc2")},
    "phi3": {"attention": ("qkv_proj", "o_proj"), "mlp": ("gate_up_proj", "down_proj")},
    "falcon": _NEOX,
    "gpt_neox": _NEOX,
}
"""model_type -> the leaf names of each preset's linear layers: every linear layer of those architectures
but the output head. Other architectures fall back to the path rule below."""
EXTRA_LAYERS = ("lm_head", "embed_out", "embed_tokens", "wte", "word_embeddings")
"""Output heads and embeddings: adaptable by name in a list, never chosen by a preset."""

ATTENTION_SEGMENTS = frozenset(
    {"attn", "attention", "self_attn", "self_attention", "cross_attn", "cross_attention"}
)
MLP_SEGMENTS = frozenset({"mlp", "feed_forward", "ffn", "feedforward", "block_sparse_moe", "moe"})


def role(path: str) -> str | None:
    """`attention` or `mlp` by the nearest parent segment of a module path (GPT-2's `h.0.attn.c_proj` is
    attention, `h.0.mlp.c_proj` is mlp); None when no segment says."""
    for segment in reversed(path.split(".")[:-1]):
        if segment in ATTENTION_SEGMENTS:
            return "attention"
        if segment in MLP_SEGMENTS:
            return "mlp"
    return None


def select(choice: str | list[str], layers: Sequence[str], model_type: str | None) -> list[str]:
    """The paths among `layers` (the base's linear layers, output head left out) that a target_modules
    choice adapts. A preset: by the architecture's leaf names where ARCHITECTURES knows it (a path that
    names the other role is left out: GPT-2's mlp.c_proj is no attention layer), else by path alone.
    A list: every layer whose path is, or ends with `.`, one of its names (peft's rule)."""
    if isinstance(choice, list):
        return [p for p in layers if any(matches(p, n) for n in choice)]
    if choice == "all-linear":
        return list(layers)
    names = ARCHITECTURES.get(model_type or "", {}).get(choice)
    if names is None:
        return [p for p in layers if role(p) == choice]
    return [p for p in layers if p.rpartition(".")[2] in names and role(p) in (choice, None)]


def matches(path: str, name: str) -> bool:
    return path == name or path.endswith("." + name)


def unmatched(names: Iterable[str], adaptable: Sequence[str]) -> list[str]:
    """The names of a target_modules list that match no adaptable layer (linear layers, embeddings)."""
    return [n for n in names if not any(matches(p, n) for p in adaptable)]


def block_names(paths: Iterable[str]) -> list[str]:
    """Module paths without the block they repeat in: `model.layers.3.self_attn.q_proj` ->
    `self_attn.q_proj` (what follows the last number); sorted, each once. What params.json records."""
    out = set()
    for path in paths:
        parts = path.split(".")
        last = max((i for i, part in enumerate(parts) if part.isdigit()), default=-1)
        out.add(".".join(parts[last + 1 :]) or path)
    return sorted(out)


def describe(lora_modules: Sequence[str]) -> str:
    """A short form of what an adapter covered, for tables: `attention (4)`, `attention+mlp (7)`."""
    roles = {role(f"x.{m}") for m in lora_modules}
    named = [r for r in ("attention", "mlp") if r in roles]
    kind = "+".join(named + (["other"] if None in roles else [])) or "none"
    return f"{kind} ({len(lora_modules)})"


# ----------------------------------------------------------------------------------------------------
# Load-time checks


def model_type(cfg: SweepConfig) -> str | None:
    """The base's `model_type` from its config.json where it can be read without loading anything: the
    builtin base, a local folder, a hub id already in the local Hugging Face cache; else None."""
    name = cfg.model.name
    if name == BUILTIN_MODEL:
        return BUILTIN_MODEL_TYPE
    local = Path(name).expanduser()
    if cfg.source_path and not local.is_absolute() and (Path(cfg.source_path).parent / local).exists():
        local = Path(cfg.source_path).parent / local
    found = local / "config.json" if local.is_dir() else _cached_config(name, cfg.model.revision)
    try:
        value = json.loads(found.read_text(encoding="utf-8")).get("model_type") if found else None
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _cached_config(repo: str, revision: str | None) -> Path | None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        return None
    hub = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub"
    folder = Path(hub).expanduser() / f"models--{repo.replace('/', '--')}"
    ref = folder / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    path = folder / "snapshots" / str(commit) / "config.json"
    return path if commit and path.is_file() else None


LORAPLUS_UNSUPPORTED = re.compile(r"galore_.*|apollo_.*|lomo|adalomo|.*_layerwise")
"""Optimizers transformers builds from the model itself (not from parameter groups): LoRA+ cannot give
B its own learning rate through them."""


def problems(cfg: SweepConfig) -> list[str]:
    """The levers' problems, as '  - key: message' lines."""
    return _target_problems(cfg) + _alpha_problems(cfg) + _loraplus_problems(cfg)


def check(cfg: SweepConfig) -> None:
    found = problems(cfg)
    if found:
        raise problems_error(cfg.source_path or "sweep file", found)


def target_choices(cfg: SweepConfig) -> list[tuple[str, str | list[str]]]:
    """Every target_modules a trial can train with, and where the sweep file says it."""
    spec = cfg.parameters.get("target_modules")
    if spec is None:
        return [("training.target_modules", cfg.training.target_modules)]
    return [("parameters.target_modules", target_choice(v)) for v in spec.candidates()]


def _target_problems(cfg: SweepConfig) -> list[str]:
    arch = ARCHITECTURES.get(model_type(cfg) or "")
    if arch is None:  # checked on the loaded base instead (recipes.lora.check_targets), before the study
        return []
    known = sorted({*arch["attention"], *arch["mlp"], *EXTRA_LAYERS})
    out = []
    for where, choice in target_choices(cfg):
        if isinstance(choice, list):
            for name in choice:
                if name.rpartition(".")[2] not in known:
                    hint = closest(name.rpartition(".")[2], known)
                    out.append(
                        f"  - {where}: {name!r} is no layer of a {model_type(cfg)} model"
                        + (f" (did you mean {hint!r}?)" if hint else "")
                        + f"; its layers: {', '.join(known)}; or a preset: {', '.join(TARGET_PRESETS)}"
                    )
    return out


def _values(cfg: SweepConfig, name: str) -> list[Any]:
    """The values a setting takes in this sweep: its candidates when searched, else the fixed one."""
    spec = cfg.parameters.get(name)
    return spec.candidates() if spec is not None else [getattr(cfg.training, name)]


def _alpha_problems(cfg: SweepConfig) -> list[str]:
    """training.lora_alpha fixed while lora_alpha_multiple is searched: two answers to one question, unless
    they agree (`sweep best --export` writes both, equal)."""
    t, params = cfg.training, cfg.parameters
    if t.lora_alpha is None or "lora_alpha_multiple" not in params or "lora_alpha" in params:
        return []
    alphas = {float(k) * float(r) for k in _values(cfg, "lora_alpha_multiple") for r in _values(cfg, "r")}
    if params["lora_alpha_multiple"].kind in ("constant", "categorical") and alphas == {t.lora_alpha}:
        return []
    return [
        f"  - training.lora_alpha: fixed at {t.lora_alpha:g}, but parameters.lora_alpha_multiple sets "
        "alpha = multiple * r; give lora_alpha or lora_alpha_multiple, not both"
    ]


def _loraplus_problems(cfg: SweepConfig) -> list[str]:
    if all(v is None for v in _values(cfg, "loraplus_lr_ratio")):
        return []
    where = "parameters.optim" if "optim" in cfg.parameters else "training.optim"
    bad = [o for o in _values(cfg, "optim") if LORAPLUS_UNSUPPORTED.fullmatch(str(o))]
    return [
        f"  - {where}: {o!r} builds its own parameter groups, so LoRA+ (loraplus_lr_ratio) cannot set B's "
        "learning rate; LoRA+ works with the optimizers that take parameter groups: adamw_torch, "
        "adamw_torch_fused, paged_adamw_32bit, paged_adamw_8bit, adamw_bnb_8bit, adafactor, sgd, ..."
        for o in bad
    ]
