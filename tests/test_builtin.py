"""The builtin tiny model: the shipped weights, the corpus they were pre-trained on, and the build itself.

The shipped model is checked for real (loads in 4-bit, knows prices); its corpus is checked against the
pricer splits (no leak); the build recipe runs for real at a few steps in the slow suite.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.builtin import BUILTIN_DATASET, BUILTIN_MODEL, corpus, pricer_data
from harness.builtin import tiny_model as tm
from harness.sweepfile.schema import SweepConfig
from harness.tasks.pricer import QUESTION, RESPONSE, format_prompt, parse_price, price_metrics
from harness.trial.datasets import load_splits


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return corpus.pretraining_texts(tm.N_DOCS)


def test_constants():
    assert BUILTIN_MODEL == "builtin:tiny-llama"
    assert BUILTIN_DATASET == "builtin:pricer"


def test_cache_dir_follows_harness_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    assert tm.default_cache_dir() == tmp_path
    monkeypatch.delenv("HARNESS_CACHE")
    assert tm.default_cache_dir() == Path("~/.cache/harness").expanduser()


def test_the_shipped_model_is_the_build_of_todays_corpus(documents: list[str]):
    """Changing the corpus, the generator or the build recipe without `make base` fails here."""
    meta = json.loads((tm.ensure_tiny_model() / tm.META_FILE).read_text())
    assert meta["version"] == tm.VERSION == tm.SHIPPED.name
    assert meta["documents"] == len(documents) and meta["corpus_sha256"] == tm.corpus_digest(documents)
    assert (meta["steps"], meta["batch_size"], meta["seq_len"]) == (tm.STEPS, tm.BATCH_SIZE, tm.SEQ_LEN)
    assert meta["learning_rate"] == tm.LEARNING_RATE and meta["vocab_size"] == tm.VOCAB_SIZE


def test_missing_shipped_files_are_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(tm, "SHIPPED", tmp_path / tm.VERSION)
    with pytest.raises(tm.MissingModelError, match="make base"):
        tm.ensure_tiny_model()


def _occurrences(needles: set[str], haystacks: list[str], prefix: int = 40) -> list[str]:
    """Every needle found inside a haystack, at any word start (a prefix index keeps it to a second)."""
    by_prefix: dict[str, list[str]] = {}
    for n in needles:
        by_prefix.setdefault(n[:prefix], []).append(n)
    found = []
    for hay in haystacks:
        for i in range(len(hay) - prefix + 1):
            if i and hay[i - 1].isalnum():
                continue
            for n in by_prefix.get(hay[i : i + prefix], ()):
                if hay.startswith(n, i):
                    found.append(n)
    return found


def test_corpus_never_shows_a_pricer_item_or_the_task_format(documents: list[str]):
    items = corpus.split_texts()
    assert len(items) == sum(pricer_data.SPLIT_SIZES.values())  # all 5,000 rows are distinct texts
    assert min(map(len, items)) > 40
    assert _occurrences(items, documents) == []
    # The check itself finds an item planted the way a leak would look.
    planted = sorted(items)[7]
    assert _occurrences(items, [*documents[:50], f"Listed at $12. {planted}"]) == [planted]

    question, response = QUESTION.lower(), RESPONSE.lower().rstrip("$").strip()
    assert not [d for d in documents if question in d.lower() or response in d.lower()]
    assert not [d for d in documents if "$" in d]  # so "Price is $84.00" is a format to learn, not a cue


def test_corpus_talks_about_prices_like_web_text(documents: list[str]):
    priced = [d for d in documents if re.search(r"\d+ (dollars|USD|US dollars|bucks)\.|USD \d+\.", d)]
    assert 0.75 < len(priced) / len(documents) < 0.95  # most listings name a price, some do not
    assert any(
        d.startswith(("Listed", "Priced", "Sells", "Yours", "Our", "Now", "Costs", "Usually")) for d in priced
    )
    assert any("around " in d for d in priced) and any("Listed at " in d for d in priced)
    # The price named is the item's own (exactly, or rounded to 5 or 10 dollars).
    items = pricer_data.generate_products(200, corpus.SEED)
    for item, doc in zip(items, documents[:200], strict=True):  # none of the first 200 collides with a split
        assert item["text"] in doc
        named = [int(n) for n in re.findall(r"\d+(?= dollars| USD| US dollars| bucks)|(?<=USD )\d+", doc)]
        assert all(abs(n - item["price"]) <= 5 for n in named), (doc, item["price"])


def test_tokenizer_splits_digits_and_round_trips():
    texts = corpus.pretraining_texts(300, seed=5)
    tok = tm.train_tokenizer(texts)
    assert tok.pad_token_id not in (None, tok.eos_token_id)
    ids = tok("Price is $129.00")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids)[-6:] == ["1", "2", "9", ".", "0", "0"]
    weird = "Ünïcode ✓ and tabs\tstill round-trip 42"
    assert tok.decode(tok(weird)["input_ids"], skip_special_tokens=True) == weird


def _zero_shot_prices(model: Any, tok: Any, texts: list[str], cue: str) -> list[float | None]:
    tok.padding_side = "left"
    enc = tok([f"{t}{cue}" for t in texts], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    return [
        parse_price(a)
        for a in tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    ]


def test_shipped_model_loads_in_4bit_fits_the_rows_and_knows_prices():
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, LlamaForCausalLM

    path = tm.ensure_tiny_model()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == tm.EOS and tok.pad_token == tm.PAD and tok.pad_token_id != tok.eos_token_id

    # Every builtin pricer row fits the default sweep's max_seq_length with its completion and EOS.
    cfg = SweepConfig.model_validate({"name": "t"})
    splits = load_splits(cfg)
    rows = splits.validation
    texts = [p + c for p, c in zip(rows["prompt"], rows["completion"], strict=True)]
    lengths = [len(ids) + 1 for ids in tok(texts)["input_ids"]]  # +1: the EOS the trainer appends
    assert max(lengths) <= cfg.training.max_seq_length

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    q4 = AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map="cpu")
    assert isinstance(q4.model.layers[0].self_attn.q_proj, Linear4bit)
    assert isinstance(q4.model.layers[-1].mlp.down_proj, Linear4bit)

    # Pre-training is real: held-out listings (a seed the build never saw) are far more likely under the
    # shipped model than under a random init of the same config -- in full precision and in 4-bit.
    heldout = corpus.pretraining_texts(200, seed=2024)
    full = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)
    random_loss = tm.heldout_loss(LlamaForCausalLM(full.config), tok, heldout)
    trained_loss = tm.heldout_loss(full, tok, heldout)
    assert random_loss > 6.0  # ~ln(vocab)
    assert trained_loss < 1.5 and tm.heldout_loss(q4, tok, heldout) < 1.5 * trained_loss + 0.2

    # It knows what things cost, the way a real base does: cued like a web listing, the 4-bit base prices
    # validation items (never in its corpus) far better than the training median does for every item...
    val = pricer_data.pricer_splits()["validation"][:128]
    truth = [r["price"] for r in val]
    median = statistics.median(r["price"] for r in pricer_data.pricer_splits()["train"])
    base = price_metrics(_zero_shot_prices(q4, tok, [r["text"] for r in val], " Listed at "), truth)
    constant = price_metrics([median] * len(truth), truth)
    assert base["unparseable_rate"] == 0
    assert base["mae"] < 0.8 * constant["mae"] and base["r2"] > 0.3, (base, constant)


@pytest.mark.slow  # the real build recipe at a few steps (the shipped build takes ~10 min: `make base`)
def test_build_replaces_the_folder_atomically_and_pretrains(tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("an older build")
    meta = tm.build_into(out, steps=60, n_docs=600)
    assert json.loads((out / tm.META_FILE).read_text()) == meta
    assert meta["steps"] == 60 and meta["documents"] <= 600 and meta["params"] > 500_000
    assert meta["corpus_sha256"] == tm.corpus_digest(corpus.pretraining_texts(600))
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp or old folder left behind

    tok = AutoTokenizer.from_pretrained(out)
    text = corpus.pretraining_texts(1, seed=99)[0]
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    model = AutoModelForCausalLM.from_pretrained(out)
    torch.manual_seed(0)
    heldout = corpus.pretraining_texts(100, seed=2024)
    assert (
        tm.heldout_loss(model, tok, heldout)
        < tm.heldout_loss(LlamaForCausalLM(model.config), tok, heldout) - 1
    )
    enc = tok([format_prompt(text)], return_tensors="pt")
    generated = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated.shape[1] > enc["input_ids"].shape[1] and format_prompt(text).endswith(RESPONSE)
