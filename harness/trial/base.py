"""The base model and its tokenizer: device, compute dtype, quantization, and loading the frozen base once
per worker (session-cached, harness.trial.cache). The quantization and dtype choices are tiny pure
factories, tested at config level (no GPU here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.errors import ConfigError
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


def quantization_config(model_cfg: ModelConfig, dtype: torch.dtype) -> Any | None:
    from transformers import BitsAndBytesConfig

    if model_cfg.quantization == "none":
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.quantization,
        bnb_4bit_use_double_quant=model_cfg.double_quant,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=torch.uint8,
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
        if not (local / "config.json").exists():
            raise ConfigError(f"model.name {model_cfg.name!r} is a folder without config.json")
        return str(local)
    if model_cfg.name.startswith((".", "/", "~")):
        raise ConfigError(f"model.name: folder not found: {model_cfg.name}")
    return model_cfg.name  # a hub id; loading it needs network access


@cache.session_fixture
def tokenizer(key: dict[str, Any], model_cfg: ModelConfig, model_path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        model_path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@cache.session_fixture
def base_model(
    key: dict[str, Any], model_cfg: ModelConfig, model_path: str, gradient_checkpointing: bool
) -> Any:
    """The frozen, quantized base, prepared for k-bit training once for all trials."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    cuda = device() == "cuda"
    dtype = compute_dtype(model_cfg, cuda)
    kwargs: dict[str, Any] = {
        "revision": model_cfg.revision,
        "trust_remote_code": model_cfg.trust_remote_code,
        "dtype": dtype,
        "device_map": {"": 0} if cuda else "cpu",
    }
    quant = quantization_config(model_cfg, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if model_cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
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
    return model


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
