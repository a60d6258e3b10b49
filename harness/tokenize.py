"""Prompt/completion -> input_ids + labels: the one tokenization used by training, eval loss and generation.

The rule: `input_ids = prompt_ids + completion_ids + [eos]`, where
- prompt_ids are the prompt tokenized alone, with the tokenizer's special tokens (BOS): exactly what
  `evaluation.generate` feeds the model (it calls `encode_prompts`), so training conditions on the
  context generation continues from;
- completion_ids are the completion tokenized on its own *as a continuation*: right after a special token
  (the EOS), whose ids are then dropped. Special tokens are split off before normalization and
  pre-tokenization, so nothing merges across the prompt/completion boundary, and a SentencePiece
  Metaspace pre-tokenizer with prepend_scheme="first" (what transformers 5's LlamaTokenizer builds for
  Llama-2 and Mistral unless legacy=True) adds no spurious leading "▁" to text that follows one. The slow
  LlamaTokenizer did the same (`sp_model.encode(unk_token + text)`, then drop the unk pieces). For
  tokenizers without a prefix space (byte-level BPE, Gemma) this equals tokenizing the completion alone.

Why not trl's rule: trl 1.x (`SFTTrainer._prepare_dataset`) tokenizes `prompt + completion` as one string
and starts the completion where it diverges from the prompt tokenized alone (`common_prefix_length`).
When tokens merge across the boundary ("Price is " + "$84" -> "Ġ$"; "$" + "84" -> "▁$8") that replaces the
end of the prompt with tokens generation never sees, and scores a token that is half prompt (trl warns:
"the model is trained on a context that differs from the one it sees at inference"). trl's vision collator
tokenizes the completion alone with add_special_tokens=False instead, which gives SentencePiece
completions a leading "▁" (a space) that is not in the data. Ours keeps the prompt's ids fixed and the
completion's ids faithful to its text: decode(prompt_ids + completion_ids) == decode(prompt_ids) + completion.

Imports no torch: callers turn the lists into tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100  # the label value transformers' cross-entropy skips

log = logging.getLogger("harness.tokenize")


@dataclass(frozen=True)
class Encoded:
    """One training/eval sequence. labels[i] is the target *at* position i (the model shifts it)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def has_completion(self) -> bool:
        """Whether any token is scored (after the cut at max_length)."""
        return any(t != IGNORE_INDEX for t in self.labels)


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """The ids generation feeds the model for each prompt (with the tokenizer's BOS, if it adds one)."""
    if not prompts:
        return []
    return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]


def encode_completions(tokenizer: Any, completions: Sequence[str]) -> list[list[int]]:
    """Each completion's ids as a continuation of other text: no BOS, no prefix space, no merges with
    what precedes it (see the module docstring)."""
    if not completions:
        return []
    anchor = next((t for t in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token) if t), None)
    if anchor is None:  # no special token to anchor on: the plain tokenization is all there is
        return [list(ids) for ids in tokenizer(list(completions), add_special_tokens=False)["input_ids"]]
    head = list(tokenizer(anchor, add_special_tokens=False)["input_ids"])
    anchored = tokenizer([anchor + c for c in completions], add_special_tokens=False)["input_ids"]
    out = []
    for c, ids in zip(completions, anchored, strict=True):
        if ids[: len(head)] == head:
            out.append(list(ids[len(head) :]))
        else:  # the tokenizer reads the anchor as text and it merged with c: plain is the better fallback
            out.append(list(tokenizer(c, add_special_tokens=False)["input_ids"]))
    return out


def encode_batch(
    prompts: Sequence[str],
    completions: Sequence[str],
    tokenizer: Any,
    max_length: int,
    completion_only: bool,
) -> list[Encoded]:
    """`encode` for many rows at once (one tokenizer call per side: fast tokenizers batch in Rust)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = encode_prompts(tokenizer, prompts)
    completion_ids = encode_completions(tokenizer, completions)
    _check_round_trip(tokenizer, prompt_ids, completion_ids, completions)
    return [
        _assemble(p, c, eos, max_length, completion_only)
        for p, c in zip(prompt_ids, completion_ids, strict=True)
    ]


def encode(prompt: str, completion: str, tokenizer: Any, max_length: int, completion_only: bool) -> Encoded:
    """input_ids = prompt + completion + EOS ids, cut at max_length; labels score the completion and EOS
    (and the prompt too unless completion_only; its tokens get -100 otherwise)."""
    return encode_batch([prompt], [completion], tokenizer, max_length, completion_only)[0]


def _assemble(
    prompt_ids: list[int], completion_ids: list[int], eos: list[int], max_length: int, completion_only: bool
) -> Encoded:
    # The single place where the two halves meet and get cut, so a truncation mode (keep the answer,
    # drop the row, ...) changes only this function.
    ids = prompt_ids + completion_ids + eos
    prompt_labels = [IGNORE_INDEX] * len(prompt_ids) if completion_only else list(prompt_ids)
    labels = prompt_labels + completion_ids + eos
    return Encoded(ids[:max_length], labels[:max_length])  # cut from the right, as trl's max_length does


def _check_round_trip(
    tokenizer: Any, prompt_ids: list[list[int]], completion_ids: list[list[int]], completions: Sequence[str]
) -> None:
    """Warn when completion tokens, read after their prompt, are not the completion's text: a tokenizer
    that puts a space after every special token (SentencePiece with legacy=True) or a normalizer that
    rewrites text. Training, eval and generation still agree on the tokens; the data just isn't what the
    user wrote."""
    heads = tokenizer.batch_decode(prompt_ids, clean_up_tokenization_spaces=False)
    fulls = tokenizer.batch_decode(
        [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)], clean_up_tokenization_spaces=False
    )
    bad = [i for i, (h, f, c) in enumerate(zip(heads, fulls, completions, strict=True)) if f != h + c]
    if bad:
        i = bad[0]
        example = (completions[i], fulls[i][len(heads[i]) :])
        log.warning(
            "%d of %d completions do not decode back to their text after the prompt's tokens "
            "(e.g. %r reads as %r); check the tokenizer's prefix-space (legacy) and normalizer settings",
            len(bad),
            len(completions),
            *example,
        )
