"""Session-scoped resources, built once per worker process and shared by every trial and every sweep.

Scopes, like pytest's:
- session (this module's cache): the quantized base model, the tokenizer, the dataset splits and their
  tokenized forms. Keyed by exactly the settings they depend on, so two sweeps with the same model and data
  share them and a sweep with another model gets its own.
- trial (recipe.py): the LoRA adapter, optimizer, scheduler and Trainer. Created and torn down per trial.

Reloading and re-quantizing the base for each trial is what makes `Trainer.hyperparameter_search` with
`model_init` slow; here a trial attaches a fresh adapter to the shared base and removes it afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import torch

from harness.errors import ConfigError
from harness.sweepfile.schema import ModelConfig, SweepConfig, TrainingConfig, Truncation
from harness.trial import lengths
from harness.trial.tokens import Encoded, encode_batch

T = TypeVar("T")

_SESSION: dict[tuple[str, str], Any] = {}
BUILDS: Counter[str] = Counter()
"""How many times each session fixture was actually built in this process (tests check reuse)."""


def session_fixture(fn: Callable[..., T]) -> Callable[..., T]:
    """Memoize per process. The first argument is the key: exactly the settings the result depends on
    (so sweeps that differ elsewhere still share it); the other arguments are what it is built from."""

    @wraps(fn)
    def wrapper(key: dict[str, Any], *args: Any) -> T:
        cache_key = (fn.__name__, json.dumps(key, sort_keys=True, default=str))
        if cache_key not in _SESSION:
            BUILDS[fn.__name__] += 1
            _SESSION[cache_key] = fn(key, *args)
        return _SESSION[cache_key]

    return wrapper


def clear_session() -> None:
    _SESSION.clear()


# ----------------------------------------------------------------------------------------------------
# Device and quantization: tiny pure factories (config-level tested; no GPU here)


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


# ----------------------------------------------------------------------------------------------------
# Session fixtures


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


@session_fixture
def tokenizer(key: dict[str, Any], model_cfg: ModelConfig, model_path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        model_path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@session_fixture
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


@session_fixture
def splits(sweep_key: dict[str, Any], sweep: SweepConfig, tok: Any) -> Any:
    from harness.trial.datasets import load_splits

    return load_splits(sweep, tokenizer=tok)


def tokenize_rows(
    rows: Any,
    tok: Any,
    max_length: int,
    completion_only: bool,
    *,
    truncation: Truncation = "keep_answer",
    response_template: str | None = None,
) -> dict[str, list[list[int]]]:
    """prompt + completion + eos -> input_ids, labels (-100 on the prompt when completion_only), by
    harness.trial.tokens: the same tokens eval_batches scores and generation continues from. One entry per
    row; a dropped row's are empty (or, under `right`, hold no completion token)."""
    training = TrainingConfig(
        max_seq_length=max_length, truncation=truncation, response_template=response_template
    )
    encoded = encode_rows(rows, tok, training, completion_only)
    return {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}


def encode_rows(rows: Any, tok: Any, training: TrainingConfig, completion_only: bool = True) -> list[Encoded]:
    """A split's rows (a Dataset or a list of dicts) through harness.trial.tokens with the sweep's
    max_seq_length, truncation and response_template."""
    prompts, completions = (
        [r[c] for r in rows] if isinstance(rows, list) else list(rows[c]) for c in ("prompt", "completion")
    )
    return encode_batch(
        prompts,
        completions,
        tok,
        training.max_seq_length,
        completion_only,
        truncation=training.truncation,
        response_template=training.response_template,
    )


@dataclass(frozen=True)
class Fixtures:
    """Everything a trial shares with other trials. Built by `get(sweep)`."""

    model: Any
    tokenizer: Any
    train: Any  # sft: datasets.Dataset with input_ids, labels (no re-tokenizing); dpo/grpo: the text rows
    eval_batches: list[dict[str, torch.Tensor]]  # fixed validation subset for loss/perplexity
    eval_rows: list[dict[str, Any]]  # the same subset as rows (dpo: its pairs; grpo: its prompts)
    generation_rows: list[dict[str, Any]]  # fixed validation subset for generation metrics (rows that fit)
    test_rows: list[dict[str, Any]]
    device: str
    lengths: dict[str, dict[str, Any]]  # per split: how the rows fit max_seq_length (harness.trial.lengths)


@session_fixture
def _tokenized(sweep_key: dict[str, Any], sweep: SweepConfig, tok: Any) -> tuple[Any, dict[str, Any]]:
    """The training set, and how the rows of every split fit max_seq_length: one pass of the rule."""
    from datasets import Dataset

    t = sweep.training
    data = splits(_data_key(sweep), sweep, tok)
    if sweep.trainer != "sft":
        # trl's DPO/GRPO trainers tokenize their own formats; the length figures are for prompt+answer
        # (dpo: chosen), and only where the rows carry an answer (grpo's reference is optional).
        with_answer = {
            name: ds.filter(lambda r: bool(r["completion"])) for name, ds in data.as_dict().items()
        }
        report = {
            name: lengths.summary(encode_rows(ds, tok, t), t.max_seq_length, t.truncation)
            for name, ds in with_answer.items()
            if len(ds)
        }
        return data.train, report
    encoded = {
        name: encode_rows(ds, tok, t, completion_only=t.completion_only_loss if name == "train" else True)
        for name, ds in data.as_dict().items()
    }
    report = {name: lengths.summary(enc, t.max_seq_length, t.truncation) for name, enc in encoded.items()}
    train = [e for e in encoded["train"] if e.has_completion]
    if not train:
        from harness.errors import DataError

        raise DataError(
            f"{sweep.dataset.source}: no training row has completion tokens within "
            f"max_seq_length={t.max_seq_length} (truncation: {t.truncation}); raise training.max_seq_length"
        )
    columns = {"input_ids": [e.input_ids for e in train], "labels": [e.labels for e in train]}
    return Dataset.from_dict(columns), report


@session_fixture
def _eval_batches(sweep_key: dict[str, Any], sweep: SweepConfig, tok: Any) -> list[dict[str, torch.Tensor]]:
    from harness.trial.evaluation import eval_batches

    rows = _eval_rows(sweep, tok)
    t = sweep.training
    return eval_batches(
        rows,
        tok,
        t.max_seq_length,
        batch_size=32,
        truncation=t.truncation,
        response_template=t.response_template,
    )


def _eval_rows(sweep: SweepConfig, tok: Any) -> list[dict[str, Any]]:
    """The fixed, seeded validation subset every eval measures (`dataset.max_eval_rows` rows)."""
    data = splits(_data_key(sweep), sweep, tok)
    return _subset(data.validation, sweep.dataset.max_eval_rows, sweep.seed)


def _fitting(rows: list[dict[str, Any]], tok: Any, training: TrainingConfig) -> list[dict[str, Any]]:
    """The rows the truncation rule keeps: generation is measured on the rows training and eval use."""
    return [r for r, e in zip(rows, encode_rows(rows, tok, training), strict=True) if e.has_completion]


def _subset(ds: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """A fixed, seeded subset: the same rows for every trial, so trials are compared on equal terms."""
    from harness.trial.datasets import seeded_subset

    return seeded_subset(ds, n, seed)


def _data_key(sweep: SweepConfig) -> dict[str, Any]:
    # source_path matters because relative dataset paths resolve against the sweep file's folder.
    return {
        "dataset": sweep.dataset.model_dump(mode="json"),
        "task": sweep.task,
        "response_template": sweep.training.response_template,
        "model": sweep.model.name,  # chat datasets are rendered with the model's chat template
        "trainer": sweep.trainer,  # dpo reads pairs, grpo prompts
        "source": str(Path(sweep.source_path).parent) if sweep.source_path else None,
    }


def _tok_key(sweep: SweepConfig) -> dict[str, Any]:
    return {
        **_data_key(sweep),
        "model": sweep.model.model_dump(mode="json"),
        "max_seq_length": sweep.training.max_seq_length,
        "truncation": sweep.training.truncation,
        "completion_only": sweep.training.completion_only_loss,
        "seed": sweep.seed,
    }


def get(sweep: SweepConfig) -> Fixtures:
    """All session fixtures for a sweep; cheap after the first call with the same model and data."""
    from harness.trial.datasets import generation_subset

    path = resolve_model_path(sweep.model, sweep.source_path)
    model_key = {"model": sweep.model.model_dump(mode="json"), "path": path}
    tok = tokenizer(model_key, sweep.model, path)
    data = splits(_data_key(sweep), sweep, tok)
    gc = use_gradient_checkpointing(sweep.training)
    train, report = _tokenized(_tok_key(sweep), sweep, tok)
    generation_rows = generation_subset(data.validation, sweep)  # the rows task baselines use too
    return Fixtures(
        model=base_model({**model_key, "gradient_checkpointing": gc}, sweep.model, path, gc),
        tokenizer=tok,
        train=train,
        eval_batches=_eval_batches(_tok_key(sweep), sweep, tok),
        eval_rows=_eval_rows(sweep, tok),
        generation_rows=_fitting(generation_rows, tok, sweep.training),
        test_rows=[data.test[i] for i in range(len(data.test))],
        device=device(),
        lengths=report,
    )


def data_splits(sweep: SweepConfig, tok: Any) -> Any:
    """The sweep's formatted splits (data.Splits), session-cached: the rows the trials train on."""
    return splits(_data_key(sweep), sweep, tok)
