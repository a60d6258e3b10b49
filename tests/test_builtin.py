"""The builtin tiny model: built once per session (~1 min), then checked for real.

One build backs every test here; it goes to a session temp folder so the test exercises the real build
(lock, temp dir, atomic rename) instead of reusing a developer's cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from harness.builtin import BUILTIN_DATASET, BUILTIN_MODEL
from harness.builtin import tiny_model as tm
from harness.config import SweepConfig
from harness.data import PRICER_RESPONSE, format_pricer_prompt, load_splits


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("harness-cache")
    # A leftover folder without harness_meta.json (an interrupted copy, say) must be rebuilt, not trusted.
    stale = cache / tm.VERSION
    stale.mkdir()
    (stale / "junk.txt").write_text("stale")
    return tm.ensure_tiny_model(cache)


def test_constants():
    assert BUILTIN_MODEL == "builtin:tiny-llama"
    assert BUILTIN_DATASET == "builtin:pricer"


def test_cache_dir_follows_harness_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    assert tm.default_cache_dir() == tmp_path
    monkeypatch.delenv("HARNESS_CACHE")
    assert tm.default_cache_dir() == Path("~/.cache/harness").expanduser()


def test_a_complete_cached_build_is_reused_without_building(tmp_path: Path):
    done = tmp_path / tm.VERSION
    done.mkdir()
    (done / tm.META_FILE).write_text("{}")
    assert tm.ensure_tiny_model(tmp_path) == done  # would take a minute if it rebuilt


def test_tokenizer_splits_digits_and_round_trips():
    texts = tm.descriptions(300, seed=5)
    tok = tm.train_tokenizer(texts)
    assert tok.pad_token_id not in (None, tok.eos_token_id)
    ids = tok("Price is $129.00")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids)[-6:] == ["1", "2", "9", ".", "0", "0"]
    weird = "Ünïcode ✓ and tabs\tstill round-trip 42"
    assert tok.decode(tok(weird)["input_ids"], skip_special_tokens=True) == weird


@pytest.mark.slow  # a from-scratch build (~1.5 min on 2 cores); other tests share the one cached model
def test_builtin_model_builds_loads_in_4bit_and_is_pretrained(tiny_model_dir: Path):
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, LlamaForCausalLM

    # Built, complete, replaced the stale folder, and reused on the next call.
    meta = json.loads((tiny_model_dir / tm.META_FILE).read_text())
    assert meta["version"] == tm.VERSION and meta["params"] > 500_000
    assert not (tiny_model_dir / "junk.txt").exists()
    assert (tiny_model_dir / "model.safetensors").exists()
    assert not [p for p in tiny_model_dir.parent.iterdir() if p.name.startswith(f".{tm.VERSION}-")]
    mtime = os.stat(tiny_model_dir / tm.META_FILE).st_mtime_ns
    assert tm.ensure_tiny_model(tiny_model_dir.parent) == tiny_model_dir
    assert os.stat(tiny_model_dir / tm.META_FILE).st_mtime_ns == mtime

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.eos_token == tm.EOS and tok.pad_token == tm.PAD and tok.pad_token_id != tok.eos_token_id
    text = tm.descriptions(1, seed=99)[0]
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text

    # Every builtin pricer row fits the default max_seq_length (128) with its completion and EOS.
    cfg = SweepConfig.model_validate({"name": "t"})
    rows = load_splits(cfg).validation
    texts = [p + c for p, c in zip(rows["prompt"], rows["completion"], strict=True)]
    lengths = [len(ids) + 1 for ids in tok(texts)["input_ids"]]  # +1: the EOS the trainer appends
    assert max(lengths) <= cfg.training.max_seq_length

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    q4 = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=bnb, device_map="cpu")
    assert isinstance(q4.model.layers[0].self_attn.q_proj, Linear4bit)
    assert isinstance(q4.model.layers[-1].mlp.down_proj, Linear4bit)

    # Pre-training is real: held-out descriptions (a seed the build never saw) are far more likely
    # under the built model than under a random init of the same config -- in full precision and in 4-bit.
    heldout = tm.descriptions(200, seed=2024)
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    random_init = LlamaForCausalLM(full.config)
    random_loss = tm.heldout_loss(random_init, tok, heldout)
    trained_loss = tm.heldout_loss(full, tok, heldout)
    q4_loss = tm.heldout_loss(q4, tok, heldout)
    assert random_loss > 6.0  # ~ln(vocab)
    assert trained_loss < 1.5 and q4_loss < 1.5 * trained_loss + 0.2

    # Generation in eval mode runs bitsandbytes' packed CPU kernel, which needs 64-aligned layer sizes.
    enc = tok([format_pricer_prompt(text)], return_tensors="pt")
    out = q4.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert format_pricer_prompt(text).endswith(PRICER_RESPONSE)
