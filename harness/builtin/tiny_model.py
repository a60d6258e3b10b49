"""The builtin base model: a tiny Llama with its own BPE tokenizer, pre-trained offline, shipped as files.

QLoRA on a randomly initialised base barely learns, and a base that never saw a price can only learn the
price distribution from a short fine-tune. So the default base is pre-trained on product listings that
mention prices the way web text does (`corpus.py`, items disjoint from the pricer splits), like a real
LLM that arrives knowing roughly what things cost; the LoRA trials teach the task's format and calibrate.

The weights are built once by `make base` (about ten minutes on two CPU cores) and shipped in the package
folder named after `VERSION` (~4 MB), so every machine trains on the same bytes and nobody waits for a
build. `harness_meta.json` records how they were made, including a digest of the corpus: a test fails
when the corpus or the settings it records (steps, batch, sequence length, learning rate, vocabulary)
change without a rebuild. Bump `VERSION` whenever you rebuild.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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

from harness.builtin import corpus
from harness.errors import HarnessError

VERSION = "tiny-llama-v2"
SHIPPED = Path(__file__).resolve().parent / VERSION
META_FILE = "harness_meta.json"
# The shipped bytes, as harness.trial.provenance hashes them (and records in every study): a rebuild must
# update these, so "the same base" means the same bytes on every machine (tests/test_provenance.py).
WEIGHTS_SHA256 = "4f3639ac885b221389e61d51988ae7b0814b783211b896bc4c0b201be5157a75"
TOKENIZER_SHA256 = "8a99aa679acf10703802d6ae350130c5db7810e531bd5747544646910ea91cb8"
PRETRAIN_SEED = corpus.SEED
HELDOUT_SEED = 4321
N_DOCS = 30000
VOCAB_SIZE = 1024
SEQ_LEN = 128
BATCH_SIZE = 16
STEPS = 4000
LEARNING_RATE = 5e-3
WARMUP_STEPS = 100
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# A plain role-tagged template, so chat-format datasets also work with the builtin model.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


class MissingModelError(HarnessError):
    """The shipped weights are not where the package expects them (a partial checkout or install)."""


def default_cache_dir() -> Path:
    """Where harness keeps machine-local files it can rebuild (benchmark runs); not the model any more."""
    return Path(os.environ.get("HARNESS_CACHE") or "~/.cache/harness").expanduser()


def ensure_tiny_model() -> Path:
    """The folder of the shipped builtin model (its meta file is written last, so it means complete)."""
    if not (SHIPPED / META_FILE).exists():
        raise MissingModelError(
            f"the builtin model's files are missing from {SHIPPED}; reinstall harness from a full checkout, "
            "or rebuild them with `make base` (about ten minutes on two CPU cores)."
        )
    return SHIPPED


def corpus_digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def build_into(final: Path, steps: int = STEPS, n_docs: int = N_DOCS) -> dict[str, Any]:
    """Build into a temp folder beside `final`, then swap it in: a failed build leaves `final` as it was."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private
        meta = build_tiny_model(tmp, steps=steps, n_docs=n_docs)
        old = final.with_name(f".{final.name}-old")
        shutil.rmtree(old, ignore_errors=True)  # left by a build killed mid-swap: os.replace needs it gone
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


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


def build_tiny_model(out_dir: Path, steps: int = STEPS, n_docs: int = N_DOCS) -> dict[str, Any]:
    """Train the tokenizer, pre-train the model, save both (safetensors) and `harness_meta.json`."""
    import torch
    from transformers import LlamaForCausalLM

    start = time.perf_counter()
    texts = corpus.pretraining_texts(n_docs, PRETRAIN_SEED)
    tokenizer = train_tokenizer(texts)
    torch.manual_seed(PRETRAIN_SEED)
    model = LlamaForCausalLM(model_config(tokenizer))
    train_loss = pretrain(model, pack(tokenizer, texts), steps=steps, seed=PRETRAIN_SEED)
    heldout = heldout_loss(model, tokenizer, corpus.pretraining_texts(500, HELDOUT_SEED))
    with _quiet_progress_bars():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    meta = {
        "version": VERSION,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "documents": len(texts),
        "corpus_sha256": corpus_digest(texts),
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "seq_len": SEQ_LEN,
        "learning_rate": LEARNING_RATE,
        "pretrain_loss": round(train_loss, 4),
        "heldout_loss": round(heldout, 4),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def train_tokenizer(texts: list[str]) -> Any:
    """Byte-level BPE (any text round-trips) with digits split one by one, so prices are learnable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from harness.builtin.pricer_data import QUESTION, RESPONSE

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
    tok.train_from_iterator([*texts, *[f"{QUESTION}\n\n{RESPONSE}"] * 50], trainer)
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


def main(argv: list[str] | None = None) -> None:
    """`make base`: rebuild the shipped weights (or a quick build elsewhere, for checking the recipe)."""
    parser = argparse.ArgumentParser(prog="python -m harness.builtin.tiny_model", description=main.__doc__)
    parser.add_argument(
        "out", nargs="?", type=Path, default=SHIPPED, help=f"folder to build (default {SHIPPED})"
    )
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--docs", type=int, default=N_DOCS)
    args = parser.parse_args(argv)
    meta = build_into(args.out, steps=args.steps, n_docs=args.docs)
    print(json.dumps(meta, indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
