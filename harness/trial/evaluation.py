"""Evaluation: token-weighted perplexity, batched greedy generation, and the metrics on its output.

What the numbers mean (documented here once, reported under the names in config.TASK_METRICS):
- eval_loss  = sum of NLL (nats) over every scored completion token / number of those tokens, over the
  whole validation subset. perplexity = exp(eval_loss). Prompt and padding tokens are never scored.
  This is *not* transformers' `exp(eval_loss)`, which averages per-batch means and so over-weights
  tokens in batches with few completion tokens.
- rouge1/rouge2/rougeL/rougeLsum: `rouge-score` F-measure with `use_stemmer=True`, averaged over rows,
  as fractions in [0, 1] (the convention of HF `evaluate`).
- bleu: `sacrebleu.corpus_bleu(predictions, [references]).score`, on sacrebleu's 0-100 scale (the number
  papers and sacrebleu itself report).
- exact_match: share of rows whose prediction equals the reference after stripping surrounding whitespace.
- pricer adds harness.tasks.pricer.price_metrics (unparseable answers count as a $0 prediction there).
The text and price metrics are computed in harness.tasks.scoring (torch-free), re-exported here.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from harness.errors import DataError

# The metrics on generated text live in harness.tasks.scoring (no torch: task baselines use them too); these
# names stay importable from here for the recipe and existing callers.
from harness.tasks.scoring import (  # noqa: F401
    ROUGE_KEYS,
    CustomMetricError,
    load_custom_metric,
    score_generations,
    text_metrics,
)
from harness.trial.tokens import IGNORE_INDEX, encode_batch, encode_prompts

if TYPE_CHECKING:
    from harness.sweepfile.schema import Truncation

# ----------------------------------------------------------------------------------------------------
# Loss and perplexity


def eval_batches(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    max_length: int,
    batch_size: int,
    *,
    truncation: Truncation = "keep_answer",
    response_template: str | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Tokenized, right-padded validation batches with labels only on completion tokens (+ EOS).

    Tokenized by harness.trial.tokens.encode_batch, the function that builds the training set, so eval_loss
    scores exactly the tokens the trainer trains on, after exactly the prompt ids generation is fed.
    Rows longer than `max_length` are fitted by `truncation`, like the training rows; a row left without
    a completion token is left out, as it is of training and generation. Rows are sorted by length
    before batching so little compute goes to padding; the order does not matter because token_nll
    returns a sum.
    """
    if batch_size <= 0 or max_length <= 1:
        raise ValueError(f"need batch_size > 0 and max_length > 1, got {batch_size}, {max_length}")
    pad_id = _pad_id(tokenizer)
    pairs: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        try:
            pairs.append((row["prompt"], row["completion"]))
        except KeyError as e:
            raise DataError(f"validation row {i} has no {e.args[0]!r} column") from None
    prompts, completions = [p for p, _ in pairs], [c for _, c in pairs]
    encoded = encode_batch(
        prompts,
        completions,
        tokenizer,
        max_length,
        completion_only=True,
        truncation=truncation,
        response_template=response_template,
    )
    examples = [(e.input_ids, e.labels) for e in encoded if e.has_completion]
    if encoded and not examples:
        raise DataError(
            f"no completion token fits in max_length={max_length} (truncation: {truncation}) for any "
            "validation row; raise training.max_seq_length or shorten the template"
        )

    examples.sort(key=lambda e: len(e[0]), reverse=True)
    batches = []
    for b in range(0, len(examples), batch_size):
        chunk = examples[b : b + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for r, (ids, lab) in enumerate(chunk):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            attention_mask[r, : len(ids)] = 1
            labels[r, : len(lab)] = torch.tensor(lab)
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
    return batches


def token_nll(model: Any, batches: Iterable[Mapping[str, torch.Tensor]]) -> tuple[float, int]:
    """Sum of NLL (nats) over tokens whose label != -100, and their count.

    The usual causal shift is applied here (logits at t predict the label at t+1). The loss is summed,
    not averaged per batch, so every scored token weighs the same whatever batch it landed in.
    """
    was_training = model.training
    model.eval()
    device = _device(model)
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in batches:
                labels = batch["labels"].to(device)
                out = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    use_cache=False,
                )
                targets = labels[:, 1:]
                keep = targets != IGNORE_INDEX
                # Only the scored positions go through log-softmax: with a large vocabulary this is most
                # of the memory, and float32 keeps the sum exact enough when the model runs in bf16.
                logits = out.logits[:, :-1][keep].float()
                total += F.cross_entropy(logits, targets[keep], reduction="sum").item()
                count += int(keep.sum())
    finally:
        model.train(was_training)
    return total, count


def perplexity(sum_nll: float, n_tokens: int) -> float:
    """exp(sum_nll / n_tokens); inf when that overflows a float (a diverged trial, not an error)."""
    if n_tokens <= 0:
        raise ValueError("perplexity of zero tokens is undefined (no completion tokens were scored)")
    mean = sum_nll / n_tokens
    return math.exp(mean) if mean < 709.0 else math.inf


def loss_metrics(sum_nll: float, n_tokens: int) -> dict[str, float]:
    """`eval_loss` (token-weighted mean NLL) and `perplexity` from token_nll's output."""
    return {"eval_loss": sum_nll / n_tokens, "perplexity": perplexity(sum_nll, n_tokens)}


# ----------------------------------------------------------------------------------------------------
# Generation


def sharded_token_nll(model: Any, batches: list[dict[str, torch.Tensor]]) -> tuple[float, int]:
    """token_nll over the ranks of a sharded base (training.distributed: fsdp): rank r scores batches r,
    r+K, ..., and the (nll sum, token count) are summed over the ranks, so each token is scored once. A
    rank short of a batch runs one more forward whose figures are dropped: every forward of a sharded
    base needs every rank."""
    import torch.distributed as dist

    k, r = dist.get_world_size(), dist.get_rank()
    mine = batches[r::k]
    nll, n = token_nll(model, mine)
    for _ in range(-(-len(batches) // k) - len(mine)):
        token_nll(model, batches[:1])
    total = torch.tensor([nll, float(n)], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total[0]), int(total[1])


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[list[int]],
    max_new_tokens: int,
    batch_size: int,
    stop_at_newline: bool = True,
) -> list[str]:
    """Greedy completions of `prompts`, in order: only the new text, cut at the first newline if asked,
    and stripped. A prompt is token ids (tokenize.Encoded.prompt_ids: what training put before the
    completion, shortened by the truncation rule) or text (tokenized whole, with BOS)."""
    if not prompts:
        return []
    if isinstance(prompts[0], str):  # tokenized whole: the prompt ids training and eval put first
        encoded = encode_prompts(tokenizer, [str(p) for p in prompts])
    else:
        encoded = [[int(t) for t in p] for p in prompts]
    results = []
    for new, _ in generate_ids(model, tokenizer, encoded, max_new_tokens, batch_size, stop_at_newline):
        text = tokenizer.decode(new, skip_special_tokens=True)
        if stop_at_newline:
            text = text.split("\n", 1)[0]
        results.append(text.strip())
    return results


def generate_ids(
    model: Any,
    tokenizer: Any,
    encoded: Sequence[list[int]],
    max_new_tokens: int,
    batch_size: int,
    stop_at_newline: bool = False,
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of prompt ids, in order: (the new ids up to EOS, whether EOS came before
    max_new_tokens ran out).

    Batched with LEFT padding (so every row's last prompt token sits at the same position and the new
    tokens line up) and the KV cache. Padding is done here by hand, so the tokenizer is never mutated
    (its padding_side and pad_token stay as the caller left them). Prompts are sorted by length first so
    batches carry little padding; greedy decoding of a left-padded row equals decoding it alone.
    """
    if batch_size <= 0 or max_new_tokens <= 0:
        raise ValueError(f"need batch_size > 0 and max_new_tokens > 0, got {batch_size}, {max_new_tokens}")
    if not encoded:
        return []
    from transformers import GenerationConfig  # local: keeps `import harness.trial.evaluation` light

    pad_id = _pad_id(tokenizer)
    eos_ids = _eos_ids(model, tokenizer)
    stop_ids = eos_ids | (_newline_ids(tokenizer) if stop_at_newline else set())
    # A fresh config rather than model.generation_config: a hub model's sampling defaults
    # (temperature, top_p, ...) must not leak into what is meant to be plain greedy decoding.
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=pad_id,
        eos_token_id=sorted(stop_ids) or None,
    )
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    device = _device(model)
    results: list[tuple[list[int], bool]] = [([], False)] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    n = len(encoded[i])
                    input_ids[r, width - n :] = torch.tensor(encoded[i], dtype=torch.long)
                    attention_mask[r, width - n :] = 1
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=gen_config,
                )
                for r, i in enumerate(idx):
                    new = out[r, width:].tolist()
                    # Finished rows are filled with pad; the pad id may be an ordinary token, so cut at EOS
                    # ourselves instead of trusting skip_special_tokens to drop it.
                    cut = next((k for k, t in enumerate(new) if t in eos_ids), None)
                    results[i] = (new[:cut], cut is not None)
    finally:
        model.train(was_training)
    return results


# Tokens that contain a newline, per tokenizer: computing it decodes the whole vocabulary once.
_NEWLINE_CACHE: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def _newline_ids(tokenizer: Any) -> frozenset[int]:
    """Ids whose text contains '\\n'. Used as extra stop tokens: everything after the first newline is
    cut anyway, so stopping there changes no output and saves the steps a model spends rambling."""
    try:
        return _NEWLINE_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    special = set(getattr(tokenizer, "all_special_ids", []))
    ids = frozenset(i for i, t in enumerate(texts) if "\n" in t and i not in special)
    try:
        _NEWLINE_CACHE[tokenizer] = ids
    except TypeError:  # an unhashable / non-weakrefable tokenizer just isn't cached
        pass
    return ids


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokenizer's EOS plus any the model's generation config lists (chat models often have several)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(e) for e in extra)
    return ids


def _pad_id(tokenizer: Any) -> int:
    # Tokenizers without a pad token (most base LMs) pad with EOS, as trl does; the attention mask and
    # the -100 labels make the choice irrelevant to the numbers.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has neither a pad token nor an EOS token to pad with")
    return int(pad)


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
