"""Prompt/completion -> input_ids + labels: the one tokenization used by training, eval loss and generation.

The rule: `input_ids = prompt_ids + completion_ids + [eos]`, where
- prompt_ids are the prompt tokenized alone, with the tokenizer's special tokens (BOS): exactly what
  `evaluation.generate` feeds the model (`Encoded.prompt_ids`), so training conditions on the context
  generation continues from;
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

Rows longer than max_length (`training.truncation`, decided in `_assemble` for training, eval loss and
generation alike): `keep_answer` removes prompt tokens between the prompt's head (BOS first) and its
protected tail (the last line, e.g. "\n\nPrice is $", and the response template), so the completion and EOS
fit whole; if even that tail does not fit, only its end is kept. `right` cuts the sequence from the right
(trl's max_length; the answer loses its end) and generation still gets the whole prompt. `drop` leaves the
row out. In every mode a row is left out when its completion and EOS (after the BOS) do not fit, or when
no completion token is left: such a row is trained on, scored and generated for nowhere.

Imports no torch: callers turn the lists into tensors.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.sweepfile.schema import Truncation

IGNORE_INDEX = -100  # the label value transformers' cross-entropy skips
TRUNCATIONS = ("keep_answer", "right", "drop")

log = logging.getLogger("harness.trial.tokens")


@dataclass(frozen=True)
class Encoded:
    """One training/eval sequence. labels[i] is the target *at* position i (the model shifts it)."""

    input_ids: list[int]
    labels: list[int]
    prompt_ids: list[int]
    """What generation feeds: the prompt as input_ids hold it (shortened by keep_answer), or the whole
    prompt under `right`. Empty for a dropped row."""
    length: int
    """prompt + completion + EOS before any truncation."""

    @property
    def has_completion(self) -> bool:
        """Whether any completion token is in input_ids; a row without one is used nowhere (dropped)."""
        return len(self.input_ids) > len(self.prompt_ids)

    @property
    def shortened(self) -> bool:
        """Used, but not whole: the prompt was shortened (keep_answer) or the sequence cut (right)."""
        return self.has_completion and len(self.input_ids) < self.length


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
    *,
    truncation: Truncation = "keep_answer",
    response_template: str | None = None,
) -> list[Encoded]:
    """`encode` for many rows at once (one tokenizer call per side: fast tokenizers batch in Rust)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation {truncation!r}: expected one of {', '.join(TRUNCATIONS)}")
    if not prompts:
        return []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = encode_prompts(tokenizer, prompts)
    completion_ids = encode_completions(tokenizer, completions)
    _check_round_trip(tokenizer, prompt_ids, completion_ids, completions)
    lead = encode_prompts(tokenizer, [""])[0]  # what the tokenizer puts before any text: BOS, or nothing
    keep = [(len(lead) if p[: len(lead)] == lead else 0, len(p)) for p in prompt_ids]
    if truncation == "keep_answer":  # only the rows that need shortening pay for finding their tail
        over = [
            i for i, p in enumerate(prompt_ids) if len(p) + len(completion_ids[i]) + len(eos) > max_length
        ]
        tails = _tail_starts(
            tokenizer, [prompts[i] for i in over], [prompt_ids[i] for i in over], response_template
        )
        for i, tail in zip(over, tails, strict=True):
            keep[i] = (keep[i][0], max(keep[i][0], tail))
    return [
        _assemble(p, c, eos, max_length, completion_only, truncation, k)
        for p, c, k in zip(prompt_ids, completion_ids, keep, strict=True)
    ]


def encode(
    prompt: str,
    completion: str,
    tokenizer: Any,
    max_length: int,
    completion_only: bool,
    *,
    truncation: Truncation = "keep_answer",
    response_template: str | None = None,
) -> Encoded:
    """input_ids = prompt + completion + EOS ids, fitted to max_length by `truncation`; labels score the
    completion and EOS (and the prompt too unless completion_only; its tokens get -100 otherwise)."""
    return encode_batch(
        [prompt],
        [completion],
        tokenizer,
        max_length,
        completion_only,
        truncation=truncation,
        response_template=response_template,
    )[0]


def _assemble(
    prompt_ids: list[int],
    completion_ids: list[int],
    eos: list[int],
    max_length: int,
    completion_only: bool,
    truncation: Truncation,
    keep: tuple[int, int],
) -> Encoded:
    # The single place where the two halves meet and get fitted to max_length, for training, eval loss
    # and generation. keep = (lead, tail): keep_answer never cuts prompt_ids[:lead] (the BOS) and cuts
    # prompt_ids[tail:] (the last line) only from its left, when the tail alone leaves no room.
    answer = completion_ids + eos
    length = len(prompt_ids) + len(answer)
    lead, tail = keep
    if length > max_length:
        if truncation == "drop" or lead + len(answer) > max_length:
            return Encoded([], [], [], length)
        if truncation == "keep_answer":
            room = max_length - lead - len(answer)  # prompt tokens that fit after the BOS
            head = max(0, room - (len(prompt_ids) - tail))  # body tokens left once the tail is in
            prompt_ids = prompt_ids[: lead + head] + prompt_ids[max(tail, len(prompt_ids) - room) :]
    ids = prompt_ids + answer
    prompt_labels = [IGNORE_INDEX] * len(prompt_ids) if completion_only else list(prompt_ids)
    labels = prompt_labels + answer
    # `right` cuts here, as trl's max_length does; the others already fit.
    return Encoded(ids[:max_length], labels[:max_length], prompt_ids, length)


def _tail_starts(
    tokenizer: Any, prompts: Sequence[str], prompt_ids: Sequence[list[int]], response_template: str | None
) -> list[int]:
    """Where each prompt's protected tail starts in its ids: the last line with the line break(s) before it
    ("\\n\\nPrice is $"), and the response template if it starts earlier; a one-line prompt's tail is its
    response template, or else all of it (keep_answer then keeps its end). The ids are those of the whole
    prompt from the first token that differs from the head tokenized alone, so a token that merges across
    the boundary belongs to the tail and the tail's ids are exactly what the model sees unshortened."""
    cuts = []
    for p in prompts:
        cut = p.rstrip().rfind("\n") + 1  # a trailing line break belongs to the last line
        at = p.rfind(response_template) if response_template else -1
        if at >= 0 and (at < cut or cut == 0):
            cut = at
        cuts.append(len(p[:cut].rstrip()))
    heads = encode_prompts(tokenizer, [p[:cut] for p, cut in zip(prompts, cuts, strict=True)])
    starts = []
    for ids, head in zip(prompt_ids, heads, strict=True):
        n = 0
        while n < min(len(ids), len(head)) and ids[n] == head[n]:
            n += 1
        starts.append(n)
    return starts


def _check_round_trip(
    tokenizer: Any, prompt_ids: list[list[int]], completion_ids: list[list[int]], completions: Sequence[str]
) -> None:
    """Warn when completion tokens, read after their prompt, are not the completion's text: a tokenizer
    that puts a space after every special token (SentencePiece with legacy=True) or a normalizer that
    rewrites text. Training, eval and generation still agree on the tokens; the data just isn't what the
    user wrote. Once per tokenizer: it is a property of its settings, and generation re-encodes its rows
    at every eval."""
    if _warned(tokenizer):
        return
    heads = tokenizer.batch_decode(prompt_ids, clean_up_tokenization_spaces=False)
    fulls = tokenizer.batch_decode(
        [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)], clean_up_tokenization_spaces=False
    )
    bad = [i for i, (h, f, c) in enumerate(zip(heads, fulls, completions, strict=True)) if f != h + c]
    if bad:
        i = bad[0]
        example = (completions[i], fulls[i][len(heads[i]) :])
        _WARNED.add(tokenizer)
        log.warning(
            "%d of %d completions do not decode back to their text after the prompt's tokens "
            "(e.g. %r reads as %r); check the tokenizer's prefix-space (legacy) and normalizer settings",
            len(bad),
            len(completions),
            *example,
        )


_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()


def _warned(tokenizer: Any) -> bool:
    try:
        return tokenizer in _WARNED
    except TypeError:  # not weak-referenceable: warn every time
        return False
