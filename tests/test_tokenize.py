"""harness.tokenize: training, eval loss and generation see the same tokens, on tokenizers where the naive
rules disagree (a SentencePiece-style Unigram with a Metaspace prefix, a byte-level BPE that merges across
the prompt/completion boundary). Both are trained offline in milliseconds."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from collections import Counter

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from harness import evaluation as ev
from harness import fixtures as fx
from harness.tokenize import IGNORE_INDEX, encode, encode_batch, encode_completions, encode_prompts

COLORS = ["Red", "Blue", "Green", "Black", "Silver", "Yellow"]
THINGS = ["cordless drill", "claw hammer", "circular saw", "electric kettle", "desk lamp", "powertools set"]
EXTRAS = ["with 12 pieces", "for the kitchen", "and a carry case", "made of steel", "with two batteries"]


def _corpus() -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(400):
        d = f"{rng.choice(COLORS)} {rng.choice(THINGS)} {rng.choice(EXTRAS)}"
        lines.append(f"How much does this cost?\n\n{d}\n\nPrice is ${rng.randint(5, 400)}")
        lines.append(f"Category: powertools. {d}, Price is ${rng.randint(5, 400)}")
    return lines


def _sentencepiece(prepend_scheme: str = "first") -> PreTrainedTokenizerFast:
    """Llama-2/Mistral-like: Unigram pieces, spaces as "▁", a "▁" prepended to the text, BOS added.
    prepend_scheme="first" is what transformers 5 builds for them (legacy=False); "always" is legacy."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok.train_from_iterator(
        _corpus(), trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _byte_level_bpe() -> PreTrainedTokenizerFast:
    """GPT-2-like: byte-level BPE, no prefix space, no BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module", params=["sentencepiece", "byte_level_bpe"])
def tok(request) -> PreTrainedTokenizerFast:
    return _sentencepiece() if request.param == "sentencepiece" else _byte_level_bpe()


PROMPT = "How much does this cost?\n\nRed cordless drill with 12 pieces\n\nPrice is $"
ROWS = [
    {"prompt": PROMPT, "completion": "84"},  # "$84" merges jointly; SentencePiece alone: "▁84"
    {"prompt": "How much does this cost? Price is ", "completion": "$120"},  # " $" merges jointly
    {"prompt": "Category: power", "completion": "tools. Blue claw hammer"},  # a word split by the boundary
    {"prompt": "Describe it:", "completion": " Green desk lamp made of steel"},  # a real leading space
    {"prompt": "Describe it:", "completion": "\nYellow circular saw"},
]


def _scored(labels: list[int]) -> list[int]:
    return [t for t in labels if t != IGNORE_INDEX]


def _prompt_part(ids: list[int], labels: list[int]) -> list[int]:
    return ids[: next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)]


def test_rows_defeat_the_naive_rules(tok) -> None:
    """Guards the tests below: on these rows tokenizing prompt+completion as one string does not keep the
    prompt's own ids (trl's rule), and for SentencePiece tokenizing the completion alone adds a "▁"."""
    prompts = tok([r["prompt"] for r in ROWS])["input_ids"]
    joints = tok([r["prompt"] + r["completion"] for r in ROWS])["input_ids"]
    assert sum(j[: len(p)] != p for p, j in zip(prompts, joints, strict=True)) >= 2
    plain = tok([r["completion"] for r in ROWS], add_special_tokens=False)["input_ids"]
    ours = encode_completions(tok, [r["completion"] for r in ROWS])
    if tok.bos_token is not None:  # the SentencePiece one
        assert tok.convert_ids_to_tokens(plain[0])[0] == "▁" and tok.convert_ids_to_tokens(ours[0])[0] != "▁"
    else:  # byte-level BPE has no prefix space: the completion alone is already right
        assert plain == ours


@pytest.mark.parametrize("max_length", [64, 18])
def test_training_and_eval_label_the_same_tokens(tok, max_length) -> None:
    train = fx.tokenize_rows(Dataset.from_list(ROWS), tok, max_length, completion_only=True)
    trained = Counter(
        (tuple(ids), tuple(lab)) for ids, lab in zip(train["input_ids"], train["labels"], strict=True)
    )
    evaluated: Counter[tuple[tuple[int, ...], tuple[int, ...]]] = Counter()
    for batch in ev.eval_batches(ROWS, tok, max_length, batch_size=2):
        for ids, mask, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
            n = int(mask.sum())
            evaluated[(tuple(ids[:n].tolist()), tuple(lab[:n].tolist()))] += 1
    assert evaluated == trained
    assert sum(trained.values()) == len(ROWS)
    if max_length == 18:  # the cut really happened, and for some row it left no scored token
        assert max(len(ids) for ids, _ in trained) == 18
        assert any(not _scored(list(lab)) for _, lab in trained)


def test_scored_tokens_are_the_completion_and_eos(tok) -> None:
    for row in ROWS:
        e = encode(row["prompt"], row["completion"], tok, max_length=128, completion_only=True)
        (prompt_ids,) = encode_prompts(tok, [row["prompt"]])
        scored = _scored(e.labels)
        assert scored[-1] == tok.eos_token_id
        assert e.input_ids == prompt_ids + scored  # everything after the prompt is scored, in place
        # Read after the prompt, the scored tokens are exactly the completion: no extra space, nothing lost.
        head = tok.decode(prompt_ids)
        assert tok.decode(prompt_ids + scored) == head + row["completion"] + tok.eos_token
        if tok.bos_token:  # SentencePiece: piece by piece too, since its decoder may drop a leading space
            pieces = "".join(tok.convert_ids_to_tokens(scored[:-1]))
            assert pieces.replace("▁", " ") == row["completion"]


def test_prompt_ids_are_what_generation_feeds(tok) -> None:
    class Recorder(torch.nn.Module):
        """Stands in for a model: records each unpadded prompt and answers EOS at once."""

        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[int]] = []

        def generate(self, input_ids, attention_mask, generation_config):  # noqa: ANN001
            self.seen += [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask, strict=True)]
            eos = torch.full((input_ids.shape[0], 1), tok.eos_token_id, dtype=torch.long)
            return torch.cat([input_ids, eos], dim=1)

    m = Recorder()
    prompts = [r["prompt"] for r in ROWS]
    assert ev.generate(m, tok, prompts, max_new_tokens=3, batch_size=2) == [""] * len(ROWS)
    train = fx.tokenize_rows(Dataset.from_list(ROWS), tok, 128, completion_only=True)
    trained_prompts = [_prompt_part(*pair) for pair in zip(train["input_ids"], train["labels"], strict=True)]
    assert sorted(m.seen) == sorted(trained_prompts)
    assert sorted(m.seen) == sorted(tok(prompts)["input_ids"])  # the prompt tokenized alone, BOS included


def test_cut_from_the_right_and_full_labels(tok) -> None:
    row = ROWS[2]
    full = encode(row["prompt"], row["completion"], tok, max_length=1000, completion_only=True)
    n_prompt = full.labels.count(IGNORE_INDEX)
    assert n_prompt == len(encode_prompts(tok, [row["prompt"]])[0])
    for k in (n_prompt - 1, n_prompt, n_prompt + 1, len(full.input_ids) - 1):
        cut = encode(row["prompt"], row["completion"], tok, max_length=k, completion_only=True)
        assert (cut.input_ids, cut.labels) == (full.input_ids[:k], full.labels[:k])
        assert cut.has_completion == (k > n_prompt)
    everything = encode(row["prompt"], row["completion"], tok, max_length=1000, completion_only=False)
    assert everything.input_ids == full.input_ids and everything.labels == full.input_ids


def test_batch_equals_one_by_one(tok) -> None:
    prompts, completions = [r["prompt"] for r in ROWS], [r["completion"] for r in ROWS]
    batch = encode_batch(prompts, completions, tok, 64, completion_only=True)
    assert batch == [encode(p, c, tok, 64, True) for p, c in zip(prompts, completions, strict=True)]
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        encode_batch(prompts[:2], completions[:1], tok, 64, True)


def test_no_warning_when_text_round_trips_and_one_for_a_legacy_prefix_space(tok, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="harness.tokenize"):
        encode_batch([r["prompt"] for r in ROWS], [r["completion"] for r in ROWS], tok, 64, True)
    assert caplog.records == []
    legacy = _sentencepiece(prepend_scheme="always")  # a "▁" after every special token, as legacy=True
    with caplog.at_level(logging.WARNING, logger="harness.tokenize"):
        e = encode(PROMPT, "84", legacy, 64, True)
    assert legacy.convert_ids_to_tokens(_scored(e.labels))[0] == "▁"
    (record,) = caplog.records
    assert "1 of 1 completions" in record.getMessage() and "' 84'" in record.getMessage()


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, harness.tokenize; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
