"""The builtin base model: a tiny Llama with its own BPE tokenizer, pre-trained offline, built once.

QLoRA on a randomly initialised base barely learns, so the default model is pre-trained (about a minute
on two CPU cores) on generated product descriptions -- never on the price task, which is what the LoRA
adapters are for. The result is cached under $HARNESS_CACHE (default ~/.cache/harness) in a folder named
after `VERSION`; bump it whenever anything below changes what gets built, so stale builds are not reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VERSION = "tiny-llama-v1"
META_FILE = "harness_meta.json"
PRETRAIN_SEED = 1234  # not 0: the pricer splits use seed 0, and the base must not see those rows
HELDOUT_SEED = 4321
N_DOCS = 6000
VOCAB_SIZE = 1024
SEQ_LEN = 128
BATCH_SIZE = 16
STEPS = 400
LEARNING_RATE = 5e-3
WARMUP_STEPS = 30
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# A plain role-tagged template, so chat-format datasets also work with the builtin model.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or "~/.cache/harness").expanduser()


def ensure_tiny_model(cache_dir: Path | None = None) -> Path:
    """The folder of the builtin model, building it first if needed (once, even across processes)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / VERSION
    if (final / META_FILE).exists():  # the meta file is written last, so its presence means complete
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{VERSION}.lock"):
        if (final / META_FILE).exists():  # another process built it while we waited
            return final
        print("harness: building the builtin tiny model once (~1 min)…", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{VERSION}-", dir=cache))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            build_tiny_model(tmp)
            if final.exists():  # a leftover without meta (e.g. copied by hand): not ours to trust
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks until the builder in another process is done
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """No 'Writing model shards' bar in the middle of a sweep's output."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_tiny_model(out_dir: Path) -> dict[str, Any]:
    """Train the tokenizer, pre-train the model, save both (safetensors) and `harness_meta.json`."""
    import torch
    from transformers import LlamaForCausalLM

    start = time.perf_counter()
    texts = descriptions(N_DOCS, PRETRAIN_SEED)
    tokenizer = train_tokenizer(texts)
    torch.manual_seed(PRETRAIN_SEED)
    model = LlamaForCausalLM(model_config(tokenizer))
    train_loss = pretrain(model, pack(tokenizer, texts), steps=STEPS, seed=PRETRAIN_SEED)
    heldout = heldout_loss(model, tokenizer, descriptions(500, HELDOUT_SEED))
    with _quiet_progress_bars():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    meta = {
        "version": VERSION,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "steps": STEPS,
        "pretrain_loss": round(train_loss, 4),
        "heldout_loss": round(heldout, 4),
        "seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def descriptions(n: int, seed: int) -> list[str]:
    from harness.builtin.pricer_data import generate_products

    return [p["text"] for p in generate_products(n, seed)]


def train_tokenizer(texts: list[str]) -> Any:
    """Byte-level BPE (any text round-trips) with digits split one by one, so prices are learnable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from harness.data import PRICER_QUESTION, PRICER_RESPONSE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The fixed prompt words are in the tokenizer's corpus (not the model's), so prompts stay short.
    tok.train_from_iterator([*texts, *[f"{PRICER_QUESTION}\n\n{PRICER_RESPONSE}"] * 50], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=SEQ_LEN * 4
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def model_config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        # A multiple of 64: bitsandbytes' CPU 4-bit inference kernel packs rows in blocks of 32 and
        # needs whole 64-wide quantization blocks per row (344 or 352 crash at eval time).
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ_LEN * 4,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def pack(tokenizer: Any, texts: list[str]) -> Any:
    """One stream of `<s> text </s>` documents cut into SEQ_LEN blocks: no padding, no wasted compute."""
    import torch

    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        stream.extend([*ids, tokenizer.eos_token_id])
    n = len(stream) // SEQ_LEN
    return torch.tensor(stream[: n * SEQ_LEN]).view(n, SEQ_LEN)


def pretrain(model: Any, blocks: Any, steps: int, seed: int) -> float:
    """Plain AdamW loop with warmup + cosine; returns the mean loss of the last 20 steps."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    recent: list[float] = []
    for _ in range(steps):
        batch = blocks[torch.randint(len(blocks), (BATCH_SIZE,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = [*recent[-19:], loss.item()]
    model.eval()
    return sum(recent) / len(recent)


def heldout_loss(model: Any, tokenizer: Any, texts: list[str]) -> float:
    """Mean next-token loss on packed blocks of `texts` (tests compare it against a random init)."""
    import torch

    blocks = pack(tokenizer, texts)
    model.eval()
    with torch.no_grad():
        losses = [model(input_ids=b, labels=b).loss.item() for b in blocks.split(32)]
    return sum(losses) / len(losses)
