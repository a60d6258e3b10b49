"""The base model and its tokenizer: device, compute dtype, quantization, and loading the frozen base once
per worker (session-cached, harness.trial.cache). The quantization and dtype choices are tiny pure
factories, tested at config level (no GPU here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from harness.core import ranks
from harness.errors import ConfigError, closest
from harness.sweepfile.schema import ModelConfig, TrainingConfig
from harness.trial import cache


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(model_cfg: ModelConfig, cuda: bool | None = None) -> torch.dtype:
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if model_cfg.compute_dtype != "auto":
        return getattr(torch, model_cfg.compute_dtype)
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU: bf16 matmuls are slow or unsupported on many CPUs


def check_backend(model_cfg: ModelConfig) -> None:
    """Unsloth trains on one CUDA GPU only: refused before the data or base is loaded, never mid-trial
    (its package and quantization were checked with the sweep file: sweepfile.checks)."""
    if model_cfg.backend == "unsloth" and not torch.cuda.is_available():
        raise ConfigError(
            "model.backend unsloth needs a CUDA GPU and this machine has none (torch.cuda.is_available() "
            "is False); use model.backend: transformers here"
        )


def quantization_config(model_cfg: ModelConfig, dtype: torch.dtype, shard: bool = False) -> Any | None:
    """bitsandbytes' config for model.quantization. `shard` (training.distributed: fsdp): the 4-bit
    weights are stored in the compute dtype, as FSDP needs one floating dtype to shard them (QLoRA+FSDP)."""
    from transformers import BitsAndBytesConfig

    if model_cfg.quantization == "none":
        return None
    if model_cfg.quantization == "int8":  # LLM.int8(): Linear8bitLt layers (trains on CPU too)
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.quantization,
        bnb_4bit_use_double_quant=model_cfg.double_quant,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype if shard else torch.uint8,
    )


def use_gradient_checkpointing(training: TrainingConfig, cuda: bool | None = None) -> bool:
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if training.gradient_checkpointing == "auto":
        return cuda  # saves GPU memory; on CPU it only costs time
    return bool(training.gradient_checkpointing)


def resolve_model_path(model_cfg: ModelConfig, source_path: str | None = None) -> str:
    from harness.builtin import BUILTIN_MODEL
    from harness.builtin.tiny_model import ensure_tiny_model

    if model_cfg.name == BUILTIN_MODEL:
        return str(ensure_tiny_model())
    if model_cfg.name.startswith("builtin:"):
        raise ConfigError(f"model.name {model_cfg.name!r}: the only builtin model is {BUILTIN_MODEL!r}")
    local = Path(model_cfg.name).expanduser()
    if source_path and not local.is_absolute() and (Path(source_path).parent / local).exists():
        local = Path(source_path).parent / local
    if local.exists():
        check_model_folder(local, model_cfg.name, model_cfg.trust_remote_code)
        return str(local)
    if model_cfg.name.startswith((".", "/", "~")):
        raise ConfigError(f"model.name: folder not found: {model_cfg.name}")
    check_hub_id(model_cfg)
    return model_cfg.name  # a hub id; loading it needs network access (or the local hub cache)


WEIGHTS = ("*.safetensors", "*.bin")
"""What from_pretrained loads weights from (sharded checkpoints too: their shards have these names)."""


def check_model_folder(folder: Path, name: str, trust_remote_code: bool = False) -> None:
    """A local model folder, checked from its files alone (nothing loaded): a config.json that is a JSON
    object naming a `model_type` transformers knows (or, with trust_remote_code, code of its own), and
    weights that are not empty. Loading would fail on either after the data is prepared, with a message
    about neither the folder nor the key."""
    where = f"model.name {name!r}"
    if not folder.is_dir():
        raise ConfigError(f"{where} is a file; give the folder holding config.json and the weights")
    config = folder / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"{where} is a folder without config.json; give a folder saved by save_pretrained() "
            "(config.json and *.safetensors), a hub id, or builtin:tiny-llama"
        )
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = f" (line {e.lineno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise ConfigError(
            f"{where}: {config} is not valid JSON{line}; it should be the config save_pretrained() wrote, "
            'a JSON object with "model_type" (e.g. "llama")'
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(
            f'{where}: {config} has no "model_type"; transformers needs it to know the architecture '
            '(e.g. "model_type": "llama"): give the config save_pretrained() wrote'
        )
    from transformers import CONFIG_MAPPING

    kind = data["model_type"]
    if kind not in CONFIG_MAPPING and not (trust_remote_code and "auto_map" in data):
        hint = closest(kind, list(CONFIG_MAPPING.keys()))
        raise ConfigError(
            f"{where}: {config} has model_type {kind!r}, which transformers does not know"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + "; models with code of their own need model.trust_remote_code: true"
        )
    weights = [p for pattern in WEIGHTS for p in folder.glob(pattern) if p.is_file()]
    if not weights:
        raise ConfigError(
            f"{where}: folder {folder} has no weights (no *.safetensors or *.bin file); save the model "
            "into it with save_pretrained(), or give a hub id"
        )
    empty = [p.name for p in weights if p.stat().st_size == 0]
    if empty:
        raise ConfigError(
            f"{where}: weight file(s) {', '.join(sorted(empty))} in {folder} are empty (0 bytes)"
        )


def check_hub_id(model_cfg: ModelConfig) -> None:
    """A hub id: well formed, and when the hub is offline (HF_HUB_OFFLINE=1) already in the local cache;
    otherwise the first download would be the first error, after the data is prepared."""
    from huggingface_hub import constants, try_to_load_from_cache

    name = model_cfg.name
    try:
        cached = try_to_load_from_cache(name, "config.json", revision=model_cfg.revision)
    except ValueError as e:  # huggingface_hub's HFValidationError
        raise ConfigError(
            f"model.name {name!r} is no local folder and not a hub id ({str(e).split(':')[0]}); "
            "give a folder, a hub id such as meta-llama/Llama-3.2-1B, or builtin:tiny-llama"
        ) from None
    if isinstance(cached, str):
        return
    flag = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    if flag or constants.HF_HUB_OFFLINE:
        raise ConfigError(
            f"model.name {name!r} is a hub id, but the hub is offline (HF_HUB_OFFLINE=1) and the model is "
            f"not in the local cache ({constants.HF_HUB_CACHE}): download it where there is a network "
            "(huggingface-cli download ...), give a local folder, or use builtin:tiny-llama"
        )


def cannot_load(model_cfg: ModelConfig, what: str, e: BaseException) -> ConfigError:
    """A base model or tokenizer transformers could not load (no network for a hub id, files it cannot
    read): one error naming model.name, instead of a traceback after the data was prepared."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(
        f"model.name {model_cfg.name!r}: the {what} cannot be loaded: {first}; give a local folder, "
        "a hub id that can be downloaded here, or builtin:tiny-llama"
    )


@cache.session_fixture
def tokenizer(key: dict[str, Any], model_cfg: ModelConfig, model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            model_path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except (OSError, ValueError) as e:  # unreachable hub, missing or unreadable tokenizer files
        raise cannot_load(model_cfg, "tokenizer", e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@cache.session_fixture
def base_model(
    key: dict[str, Any],
    model_cfg: ModelConfig,
    model_path: str,
    gradient_checkpointing: bool,
    shard: bool = False,
) -> Any:
    """The frozen, quantized base, prepared for k-bit training once for all trials. Called with
    `keep=model.max_cached_bases` (session.get): a worker holds at most that many bases at once.
    `shard` (training.distributed: fsdp on K ranks): sharded over the ranks once, for all trials."""
    import pickle

    from peft import prepare_model_for_kbit_training
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    cuda = device() == "cuda"
    if cuda:
        torch.cuda.empty_cache()  # give back what a base just dropped (cache._evict) held
    dtype = compute_dtype(model_cfg, cuda)
    kwargs: dict[str, Any] = {
        "revision": model_cfg.revision,
        "trust_remote_code": model_cfg.trust_remote_code,
        "dtype": dtype,
        "device_map": {"": ranks.local_rank()} if cuda else "cpu",
    }
    if model_cfg.backend == "unsloth":
        return unsloth_base(model_cfg, model_path, dtype, gradient_checkpointing)
    quant = quantization_config(model_cfg, dtype, shard)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if model_cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    # An unreachable hub, weight files that are not weights (unpickling, safetensors), weights that do not
    # fit the config (a size mismatch), an architecture this transformers does not have.
    except (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError) as e:
        raise cannot_load(model_cfg, "base model", e) from e
    if quant is not None:
        keep_4bit_layout_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
    model.config.use_cache = False  # training; generation turns it on per call
    if shard:
        shard_frozen(model)
    return model


def unsloth_base(model_cfg: ModelConfig, model_path: str, dtype: torch.dtype, gc: bool) -> Any:
    """The base through Unsloth's FastLanguageModel (its patched attention, RoPE and cross-entropy); it
    prepares k-bit training and gradient checkpointing itself. Imported only here: Unsloth patches
    transformers and trl on import and refuses to import without CUDA (check_backend ran before)."""
    from unsloth import FastLanguageModel

    try:
        model, _ = FastLanguageModel.from_pretrained(
            model_name=model_path,
            dtype=dtype,
            load_in_4bit=model_cfg.quantization == "nf4",
            load_in_8bit=model_cfg.quantization == "int8",
            revision=model_cfg.revision,
            trust_remote_code=model_cfg.trust_remote_code,
            use_gradient_checkpointing="unsloth" if gc else False,
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise cannot_load(model_cfg, "base model (Unsloth)", e) from e
    model.config.use_cache = False
    return model


def shard_frozen(model: Any) -> None:
    """FSDP2 (`fully_shard`) over the process group: each decoder block (the model's _no_split_modules)
    its own unit, the rest in the root's. Done once per worker on the frozen base; each trial's LoRA
    layers, added later, stay whole on every rank and their gradients are averaged over the ranks
    (recipes.common.average_adapter_grads), so adapter snapshots and checkpoints need no collective."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)


def keep_4bit_layout_trainable(model: Any) -> None:
    """Stop bitsandbytes' CPU fast path from repacking 4-bit weights into its bf16 inference layout.

    On AVX512-BF16 CPUs (bitsandbytes 0.50.2) the first no-grad forward repacks every Linear4bit for a
    forward-only kernel; from then on almost no gradient reaches earlier LoRA layers (layer-0 q_proj
    lora_A grad 0.0149 -> 0.000133) and state_dict() rewrites the packed quant state. The shared base
    is evaluated between training steps, so the repack must never happen. No effect on GPU."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
