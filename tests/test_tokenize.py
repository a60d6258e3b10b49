"""harness.trial.tokens: training, eval loss and generation see the same tokens, on tokenizers where the naive
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

from harness.trial import evaluation as ev
from harness.trial import prepare
from harness.trial.tokens import IGNORE_INDEX, encode, encode_batch, encode_completions, encode_prompts

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


@pytest.mark.parametrize("truncation", ["keep_answer", "right", "drop"])
@pytest.mark.parametrize("size", ["long", "short"])
def test_training_and_eval_label_the_same_tokens(tok, size, truncation) -> None:
    whole = encode_batch([r["prompt"] for r in ROWS], [r["completion"] for r in ROWS], tok, 1000, True)
    # short: the median row fits, two longer ones do not (one of them with a prompt longer than that)
    max_length = 64 if size == "long" else sorted(e.length for e in whole)[len(ROWS) // 2]
    rows = Dataset.from_list(ROWS)
    train = prepare.tokenize_rows(rows, tok, max_length, completion_only=True, truncation=truncation)
    pairs = list(zip(train["input_ids"], train["labels"], strict=True))
    assert len(pairs) == len(ROWS)  # one entry per row, dropped or not
    # the rows training keeps (fixtures: those with a completion token)
    trained = Counter((tuple(ids), tuple(lab)) for ids, lab in pairs if _scored(lab))
    evaluated: Counter[tuple[tuple[int, ...], tuple[int, ...]]] = Counter()
    for batch in ev.eval_batches(ROWS, tok, max_length, batch_size=2, truncation=truncation):
        for ids, mask, lab in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
            n = int(mask.sum())
            evaluated[(tuple(ids[:n].tolist()), tuple(lab[:n].tolist()))] += 1
    assert evaluated == trained
    assert max(len(ids) for ids, _ in pairs) <= max_length
    if size == "long":
        assert sum(trained.values()) == len(ROWS)
    elif truncation == "right":  # the cut really happened, and for the longest prompt it left no answer
        assert max(len(ids) for ids, _ in pairs) == max_length
        assert any(not _scored(list(lab)) for _, lab in pairs)
    elif truncation == "keep_answer":  # every row kept, the long ones shortened to exactly max_length
        assert sum(trained.values()) == len(ROWS)
        assert max(len(ids) for ids, _ in trained) == max_length
    else:
        assert sum(trained.values()) == sum(e.length <= max_length for e in whole) < len(ROWS)


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
    train = prepare.tokenize_rows(Dataset.from_list(ROWS), tok, 128, completion_only=True)
    trained_prompts = [_prompt_part(*pair) for pair in zip(train["input_ids"], train["labels"], strict=True)]
    assert sorted(m.seen) == sorted(trained_prompts)
    assert sorted(m.seen) == sorted(tok(prompts)["input_ids"])  # the prompt tokenized alone, BOS included


def test_cut_from_the_right_and_full_labels(tok) -> None:
    row = ROWS[0]  # a short answer: `right` drops a row only when the answer alone does not fit
    full = encode(row["prompt"], row["completion"], tok, max_length=1000, completion_only=True)
    n_prompt = full.labels.count(IGNORE_INDEX)
    assert n_prompt == len(encode_prompts(tok, [row["prompt"]])[0])
    for k in (n_prompt - 1, n_prompt, n_prompt + 1, len(full.input_ids) - 1):
        cut = encode(
            row["prompt"], row["completion"], tok, max_length=k, completion_only=True, truncation="right"
        )
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
    assert encode_batch([], [], tok, 64, True) == []  # e.g. evaluation.samples=0: no generation rows


def test_no_warning_when_text_round_trips_and_one_for_a_legacy_prefix_space(tok, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="harness.trial.tokens"):
        encode_batch([r["prompt"] for r in ROWS], [r["completion"] for r in ROWS], tok, 64, True)
    assert caplog.records == []
    legacy = _sentencepiece(prepend_scheme="always")  # a "▁" after every special token, as legacy=True
    with caplog.at_level(logging.WARNING, logger="harness.trial.tokens"):
        e = encode(PROMPT, "84", legacy, 64, True)
    assert legacy.convert_ids_to_tokens(_scored(e.labels))[0] == "▁"
    (record,) = caplog.records
    assert "1 of 1 completions" in record.getMessage() and "' 84'" in record.getMessage()


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, harness.trial.tokens; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


LONG_PROMPT = (
    "How much does this cost?\n\n"
    + "Red cordless drill with 12 pieces and a carry case. " * 4
    + "\n\nPrice is $"
)


@pytest.mark.parametrize("truncation", ["keep_answer", "right", "drop"])
def test_a_row_over_max_length_is_fitted_by_its_mode(tok, truncation) -> None:
    (prompt_ids,) = encode_prompts(tok, [LONG_PROMPT])
    whole = encode(LONG_PROMPT, "84", tok, max_length=1000, completion_only=True)
    answer = _scored(whole.labels)  # the completion's ids and EOS
    max_length = len(prompt_ids) // 2 + len(answer)
    e = encode(LONG_PROMPT, "84", tok, max_length, completion_only=True, truncation=truncation)
    assert e.length == len(whole.input_ids) > max_length
    if truncation == "keep_answer":
        # The whole answer after a prompt that is the original's head + its last line, token for token.
        assert len(e.input_ids) == max_length and e.shortened and e.has_completion
        assert e.input_ids == e.prompt_ids + answer and _scored(e.labels) == answer
        h = next(i for i, (a, b) in enumerate(zip(e.prompt_ids, prompt_ids, strict=False)) if a != b)
        tail = prompt_ids[len(prompt_ids) - (len(e.prompt_ids) - h) :]
        assert e.prompt_ids == prompt_ids[:h] + tail and h > 1
        assert tok.decode(tail).endswith("\n\nPrice is $") and "Red" not in tok.decode(tail)
        shown = tok.decode(e.input_ids, skip_special_tokens=True)
        assert shown.startswith("How much does this cost?\n\nRed") and shown.endswith("\n\nPrice is $84")
        if tok.bos_token is not None:
            assert e.input_ids[0] == tok.bos_token_id
    elif truncation == "right":  # as before: cut from the right; here the cut leaves no answer token
        assert (e.input_ids, e.labels) == (whole.input_ids[:max_length], whole.labels[:max_length])
        assert e.prompt_ids == prompt_ids and not e.has_completion
    else:
        assert e.input_ids == e.labels == e.prompt_ids == [] and not e.has_completion
    # A row whose answer alone does not fit is left out in every mode.
    long_answer = " ".join(["Blue claw hammer"] * 10)
    too_long = encode(LONG_PROMPT, long_answer, tok, max_length, completion_only=True, truncation=truncation)
    assert not too_long.has_completion and not too_long.shortened


def test_keep_answer_keeps_the_response_template_and_the_end_of_a_one_line_prompt(tok) -> None:
    text = "Category: powertools. " + "Green desk lamp made of steel, " * 5 + "Price is $"
    (prompt_ids,) = encode_prompts(tok, [text])
    n = len(prompt_ids) // 2
    # One line, no response template: the tail is the whole prompt, so its end is what stays.
    e = encode(text, "84", tok, n, completion_only=True)
    assert e.has_completion and len(e.input_ids) == n
    assert tok.decode(e.prompt_ids, skip_special_tokens=True).endswith("steel, Price is $")
    # With the response template, the prompt keeps its head and the template whole.
    e = encode(text, "84", tok, n, completion_only=True, response_template="Price is $")
    shown = tok.decode(e.prompt_ids, skip_special_tokens=True)
    assert shown.startswith("Category: power") and shown.endswith("Price is $") and len(e.input_ids) == n
