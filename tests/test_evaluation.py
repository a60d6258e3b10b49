"""harness.trial.evaluation on a tiny random Llama and an offline BPE tokenizer, checked by hand
computations."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.errors import ConfigError, DataError
from harness.sweepfile.schema import TASK_METRICS
from harness.trial import evaluation as ev

CORPUS = [
    "Title: red cotton shirt, size M. Price is $12.50",
    "Title: steel kitchen knife set with block. Price is $89.99",
    "Title: wireless headphones, noise cancelling. Price is $199.00",
    "The quick brown fox jumps over the lazy dog.\nA second line of text.",
]

# Prompts end in a space-free boundary ("$", ":") so the prompt's tokens are a prefix of prompt+completion's
# and the hand computation below can slice at len(prompt ids).
ROWS = [
    {"prompt": "Title: red cotton shirt. Price is $", "completion": "12.50", "price": 12.5},
    {
        "prompt": "Title: knife. Price is $",
        "completion": "89.99 for the whole steel kitchen set",
        "price": 89.99,
    },
    {"prompt": "Title: wireless headphones, noise cancelling, black. Price is $", "completion": "199.00"},
    {"prompt": "Q:", "completion": " the quick brown fox jumps over the lazy dog"},
    {"prompt": "Title: dog. Price is $", "completion": "5"},
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Models this small gain nothing from intra-op threads, and on a busy machine the thread pool's
    spin-waiting makes each 4x32 matmul take milliseconds; one thread keeps the module fast and steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return _tiny_llama(tokenizer, seed=0)


GEN_PROMPTS = [r["prompt"] for r in ROWS] + ["Title:", "Price is $1"]


def _raw_continuations(m: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, n: int) -> list[list[int]]:
    """Plain transformers generate, one prompt at a time, never stopping early."""
    outs = []
    with torch.no_grad():
        for p in GEN_PROMPTS:
            ids = torch.tensor([tokenizer(p)["input_ids"]])
            out = m.generate(input_ids=ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
            outs.append(out[0, ids.shape[1] :].tolist())
    return outs


@pytest.fixture(scope="module")
def chatty_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A random model made to emit EOS and newlines mid-answer, so rows finish at different steps.

    The EOS and newline output rows become copies (scaled up a little) of the rows of two tokens the plain
    model emits, so they win where those tokens would have. Which pair gives a good mix depends on the
    random weights, so a few candidates are tried (deterministically) until one does.
    """
    m = _tiny_llama(tokenizer, seed=1)
    eos, newline = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("Ċ")
    plain = _raw_continuations(m, tokenizer, 10)
    early = {t for c in plain for t in c[:2]}
    candidates = [t for t, _ in Counter(t for c in plain for t in c[2:]).most_common(12) if t not in early]
    w = m.lm_head.weight
    original = w.detach().clone()
    with torch.no_grad():
        for a in candidates:
            for b in candidates:
                if a == b:
                    continue
                w.copy_(original)
                w[eos] = 1.05 * original[a]
                w[newline] = 1.05 * original[b]
                outs = _raw_continuations(m, tokenizer, 10)
                stops = {c.index(eos) if eos in c else None for c in outs}
                mid_newline = any(newline in c[1 : c.index(eos) if eos in c else None] for c in outs)
                if len(stops - {None}) >= 2 and None in stops and mid_newline:
                    return m
    raise AssertionError("no EOS/newline pair gave rows that stop at different steps")


# ----------------------------------------------------------------------------------------------------
# perplexity / token_nll / eval_batches


def test_perplexity_function() -> None:
    assert ev.perplexity(6.0, 3) == pytest.approx(math.exp(2.0))
    assert ev.perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="zero tokens"):
        ev.perplexity(0.0, 0)
    assert ev.loss_metrics(3.0, 2) == {"eval_loss": 1.5, "perplexity": pytest.approx(math.exp(1.5))}


def _hand_nll(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, row: dict[str, Any]
) -> tuple[float, int]:
    """One row alone (no padding, no batching): -log p(token | everything before) over completion + EOS."""
    prompt_ids = tokenizer(row["prompt"])["input_ids"]
    ids = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # the fixture rows are chosen so this holds
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    total = -sum(logp[j - 1, ids[j]].item() for j in range(len(prompt_ids), len(ids)))
    return total, len(ids) - len(prompt_ids)


def test_token_nll_matches_per_token_hand_computation(model, tokenizer) -> None:
    batches = ev.eval_batches(ROWS, tokenizer, max_length=64, batch_size=3)
    assert len(batches) == 2
    total, count = ev.token_nll(model, batches)
    hand = [_hand_nll(model, tokenizer, r) for r in ROWS]
    assert count == sum(n for _, n in hand)
    assert total == pytest.approx(sum(s for s, _ in hand), rel=1e-5)


def test_perplexity_is_token_weighted_not_mean_of_batch_means(model, tokenizer) -> None:
    # Two batches of very uneven size: 2 scored tokens ("5" + EOS) vs ~10.
    rows = [ROWS[4], ROWS[1]]
    batches = ev.eval_batches(rows, tokenizer, max_length=64, batch_size=1)
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    assert sorted(counts) == [2, max(counts)] and max(counts) >= 8

    total, n = ev.token_nll(model, batches)
    ours = ev.perplexity(total, n)

    hand = [_hand_nll(model, tokenizer, r) for r in rows]
    hand_ppl = math.exp(sum(s for s, _ in hand) / sum(c for _, c in hand))
    assert ours == pytest.approx(hand_ppl, rel=1e-5)

    # What transformers' Trainer reports: the model's own per-batch mean loss, averaged over batches.
    with torch.no_grad():
        batch_losses = [model(**b).loss.item() for b in batches]
    trainer_ppl = math.exp(sum(batch_losses) / len(batch_losses))
    # Same labels convention: each batch's HF loss is that batch's own token mean.
    per_batch = [ev.token_nll(model, [b]) for b in batches]
    assert [s / c for s, c in per_batch] == pytest.approx(batch_losses, rel=1e-5)
    assert abs(trainer_ppl - ours) / ours > 0.01, (trainer_ppl, ours)


def test_padding_and_batching_do_not_change_the_sum(model, tokenizer) -> None:
    one = ev.token_nll(model, ev.eval_batches(ROWS, tokenizer, 64, batch_size=1))
    all_ = ev.token_nll(model, ev.eval_batches(ROWS, tokenizer, 64, batch_size=len(ROWS)))
    assert one[1] == all_[1]
    assert one[0] == pytest.approx(all_[0], rel=1e-5)


def test_token_nll_restores_training_mode(tokenizer) -> None:
    m = _tiny_llama(tokenizer, seed=2)
    m.train()
    ev.token_nll(m, ev.eval_batches(ROWS[:2], tokenizer, 64, 2))
    assert m.training
    m.eval()
    ev.token_nll(m, ev.eval_batches(ROWS[:2], tokenizer, 64, 2))
    assert not m.training


def test_eval_batches_layout(tokenizer) -> None:
    batches = ev.eval_batches(ROWS, tokenizer, max_length=64, batch_size=2)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 2, 1]
    seen = []
    for b in batches:
        ids, mask, labels = b["input_ids"], b["attention_mask"], b["labels"]
        assert ids.shape == mask.shape == labels.shape
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            assert mask[r, :n].all() and not mask[r, n:].any()  # right padding
            assert (ids[r, n:] == tokenizer.pad_token_id).all()
            assert (labels[r, n:] == -100).all()
            scored = labels[r][labels[r] != -100].tolist()
            assert scored[-1] == tokenizer.eos_token_id
            # labels are the completion's own tokens, in place (the shift happens in token_nll)
            assert scored == ids[r, n - len(scored) : n].tolist()
            seen.append(tokenizer.decode(scored[:-1]))
    assert sorted(seen) == sorted(r["completion"] for r in ROWS)
    # longest first: batches carry little padding
    widths = [b["input_ids"].shape[1] for b in batches]
    assert widths == sorted(widths, reverse=True)


def test_eval_batches_truncation(tokenizer) -> None:
    row = ROWS[0]  # under `right` a long answer would be dropped: it alone does not fit max_length
    prompt_len = len(tokenizer(row["prompt"])["input_ids"])
    (batch,) = ev.eval_batches([row], tokenizer, max_length=prompt_len + 3, batch_size=4, truncation="right")
    assert batch["input_ids"].shape == (1, prompt_len + 3)
    assert int((batch["labels"] != -100).sum()) == 3  # cut from the right: the EOS is gone
    with pytest.raises(DataError, match="max_length=4"):
        ev.eval_batches([row], tokenizer, max_length=4, batch_size=4, truncation="right")


def test_eval_batches_missing_column(tokenizer) -> None:
    with pytest.raises(DataError, match="'completion'"):
        ev.eval_batches([{"prompt": "x"}], tokenizer, 16, 1)


# ----------------------------------------------------------------------------------------------------
# generation


@pytest.mark.parametrize("which", ["model", "chatty_model"])
def test_batched_generation_equals_one_by_one(which, request, tokenizer) -> None:
    m = request.getfixturevalue(which)
    prompts = GEN_PROMPTS
    tokenizer.padding_side = "right"
    m.train()
    batched = ev.generate(m, tokenizer, prompts, max_new_tokens=10, batch_size=4)
    single = ev.generate(m, tokenizer, prompts, max_new_tokens=10, batch_size=1)
    assert batched == single
    assert tokenizer.padding_side == "right" and m.training
    m.eval()
    assert all("\n" not in t and t == t.strip() for t in batched)


def test_chatty_model_really_stops_early(chatty_model, tokenizer) -> None:
    """Guards the test above: with this model rows do finish at EOS, at different steps, and emit newlines."""
    raw = ev.generate(chatty_model, tokenizer, GEN_PROMPTS, 10, batch_size=8, stop_at_newline=False)
    plain = _raw_continuations(chatty_model, tokenizer, 10)
    eos = tokenizer.eos_token_id
    stops = {c.index(eos) if eos in c else None for c in plain}
    assert len(stops - {None}) >= 2 and None in stops
    assert any("\n" in t for t in raw)
    # Each answer is exactly the plain continuation up to EOS.
    expected = [tokenizer.decode(c[: c.index(eos)] if eos in c else c).strip() for c in plain]
    assert raw == expected
    cut = ev.generate(chatty_model, tokenizer, GEN_PROMPTS, 10, batch_size=8, stop_at_newline=True)
    # Stopping at newline tokens changes nothing but where the text is cut.
    assert cut == [t.split("\n", 1)[0].strip() for t in raw]


class ScriptedLM(torch.nn.Module):
    """Stands in for a model: returns a fixed continuation per prompt and records what it was given."""

    def __init__(self, script: dict[int, list[int]]) -> None:
        super().__init__()
        self.script = script
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[dict[str, Any]] = []

    def generate(self, input_ids, attention_mask, generation_config):  # noqa: ANN001
        self.calls.append(
            {"input_ids": input_ids, "attention_mask": attention_mask, "config": generation_config}
        )
        conts = [self.script[int(row[-1])][: generation_config.max_new_tokens] for row in input_ids]
        width = max(len(c) for c in conts)
        pad = generation_config.pad_token_id
        new = torch.tensor([c + [pad] * (width - len(c)) for c in conts], dtype=torch.long)
        return torch.cat([input_ids, new], dim=1)


def test_generate_cuts_at_eos_and_newline_and_keeps_order(tokenizer) -> None:
    enc = tokenizer.convert_tokens_to_ids
    eos, nl = tokenizer.eos_token_id, enc("Ċ")
    words = tokenizer("Price dog fox")["input_ids"]
    p_short, p_long = "dog", "Title: red cotton shirt"
    last = {p: tokenizer(p)["input_ids"][-1] for p in (p_short, p_long)}
    m = ScriptedLM(
        {
            last[p_short]: [enc("Ġ"), *words, nl, *words, eos],  # " Price dog fox\nPrice dog fox</s>"
            last[p_long]: [*words, eos, *words],  # text after EOS must never show
        }
    )
    out = ev.generate(m, tokenizer, [p_short, p_long], max_new_tokens=20, batch_size=2)
    assert out == ["Price dog fox", "Price dog fox"]
    (call,) = m.calls
    cfg = call["config"]
    assert cfg.do_sample is False and cfg.num_beams == 1 and cfg.use_cache is True
    assert set(cfg.eos_token_id) >= {eos, nl}
    # left padding: the short prompt (second after sorting by length) is padded on the left
    mask = call["attention_mask"]
    assert mask[1, 0] == 0 and mask[1, -1] == 1 and mask[0].all()

    out = ev.generate(m, tokenizer, [p_short, p_long], max_new_tokens=20, batch_size=2, stop_at_newline=False)
    assert out == ["Price dog fox\nPrice dog fox", "Price dog fox"]
    assert nl not in m.calls[-1]["config"].eos_token_id
    assert ev.generate(m, tokenizer, [], 5, 2) == []


# ----------------------------------------------------------------------------------------------------
# text metrics


def test_text_metrics_hand_computed() -> None:
    preds = ["a b c d e", "x y z w"]
    refs = ["a b c d e f g h", "x y z w"]
    m = ev.text_metrics(preds, refs)
    # pair 1: unigram P=5/5 R=5/8 -> F=10/13; bigram P=4/4 R=4/7 -> F=8/11; LCS=5 -> 10/13. pair 2: all 1.
    assert m["rouge1"] == pytest.approx((10 / 13 + 1) / 2)
    assert m["rouge2"] == pytest.approx((8 / 11 + 1) / 2)
    assert m["rougeL"] == pytest.approx((10 / 13 + 1) / 2)
    assert m["rougeLsum"] == pytest.approx((10 / 13 + 1) / 2)
    # corpus BLEU: every n-gram precision is 1 (9/9, 7/7, 5/5, 3/3); brevity penalty exp(1 - 12/9)
    assert m["bleu"] == pytest.approx(100 * math.exp(1 - 12 / 9), rel=1e-6)
    assert m["exact_match"] == 0.5


def test_text_metrics_match_the_libraries_on_real_strings() -> None:
    preds = ["the cats are running home", "Price is $12.50", "", "completely different words"]
    refs = ["a cat runs home quickly", "Price is $12.50", "something", "the lazy dog sleeps\nall day long"]
    m = ev.text_metrics(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    direct = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert m[k] == pytest.approx(sum(d[k].fmeasure for d in direct) / len(preds))
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert m["exact_match"] == 0.25
    # stemming is on: "cats running" and "cat runs" share both stems
    assert ev.text_metrics(["cats running"], ["cat runs"])["rouge1"] == 1.0


def test_exact_match_ignores_surrounding_whitespace_only() -> None:
    assert ev.text_metrics([" 12.50 ", "12.5"], ["12.50", "12.50"])["exact_match"] == 0.5


# ----------------------------------------------------------------------------------------------------
# score_generations


def test_score_generations_pricer() -> None:
    preds = ["12.50", "about 100", "no idea"]
    refs = ["12.50", "89.99", "$199.00"]
    rows = [{"price": 12.5}, {"price": "89.99"}, {}]  # last one: price parsed from the reference
    metrics, per_row = ev.score_generations("pricer", preds, refs, rows)
    assert set(TASK_METRICS["pricer"]) - {"eval_loss", "perplexity"} <= set(metrics)
    assert metrics["mae"] == pytest.approx((0 + (100 - 89.99) + 199) / 3)
    assert metrics["unparseable_rate"] == pytest.approx(1 / 3)
    assert metrics["hit_rate"] == pytest.approx(2 / 3)
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert per_row[0] == {
        "exact_match": 1.0,
        "rougeL": 1.0,
        "price_pred": 12.5,
        "price_true": 12.5,
        "abs_error": 0.0,
        "band": "green",
    }
    assert (
        per_row[2]["price_pred"] is None and per_row[2]["abs_error"] == 199.0 and per_row[2]["band"] == "red"
    )


def test_score_generations_text_and_errors() -> None:
    metrics, per_row = ev.score_generations("text", ["a b"], ["a b"], None)
    assert set(metrics) == set(TASK_METRICS["text"]) - {"eval_loss", "perplexity"}
    assert per_row == [{"exact_match": 1.0, "rougeL": 1.0}]
    with pytest.raises(DataError, match="row 0"):
        ev.score_generations("pricer", ["1"], ["no price here"], [{}])
    with pytest.raises(ValueError, match="no predictions"):
        ev.score_generations("text", [], [], [])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        ev.text_metrics(["a", "b"], ["a"])


# ----------------------------------------------------------------------------------------------------
# custom metrics

CUSTOM_MODULE = """
def length_ratio(predictions, references, rows):
    return {"length_ratio": sum(map(len, predictions)) / sum(map(len, references)), "n_rows": len(rows)}

def boom(predictions, references, rows):
    raise KeyError("missing_field")

def not_a_dict(predictions, references, rows):
    return [1.0]

def clash(predictions, references, rows):
    return {"bleu": 1.0}

NOT_CALLABLE = 3
"""


@pytest.fixture()
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "harness_test_custom_metrics"
    (tmp_path / f"{name}.py").write_text(CUSTOM_MODULE)
    (tmp_path / "harness_test_broken_metrics.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    sys.modules.pop("harness_test_broken_metrics", None)


def test_custom_metric_is_added(custom_module: str) -> None:
    metrics, _ = ev.score_generations(
        "text", ["ab", "c"], ["abcd", "ef"], [{}, {}], [f"{custom_module}:length_ratio"]
    )
    assert metrics["length_ratio"] == pytest.approx(3 / 6)
    assert metrics["n_rows"] == 2.0
    assert "rouge1" in metrics


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "not of the form package.module:function"),
        ("a.b:", "not of the form"),
        ("a b:c", "not of the form"),
        ("definitely_not_a_module_xyz:f", "module 'definitely_not_a_module_xyz' not found"),
        (
            "harness_test_broken_metrics:f",
            "importing 'harness_test_broken_metrics' failed: RuntimeError: broken",
        ),
        ("{mod}:length_ratoi", "has no attribute 'length_ratoi' (did you mean 'length_ratio'?)"),
        ("{mod}:NOT_CALLABLE", "is a int, not a function"),
    ],
)
def test_bad_custom_spec_is_a_config_error(custom_module: str, spec: str, message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        ev.load_custom_metric(spec.format(mod=custom_module))


def test_custom_metric_that_raises_names_the_function(custom_module: str) -> None:
    with pytest.raises(ev.CustomMetricError, match=f"{custom_module}:boom raised KeyError") as info:
        ev.score_generations("text", ["a"], ["a"], [{}], [f"{custom_module}:boom"])
    assert isinstance(info.value.__cause__, KeyError)  # the original traceback is kept


@pytest.mark.parametrize(
    ("fn", "message"), [("not_a_dict", "returned list"), ("clash", "'bleu', which is already")]
)
def test_custom_metric_bad_return(custom_module: str, fn: str, message: str) -> None:
    with pytest.raises(ev.CustomMetricError, match=message):
        ev.score_generations("text", ["a"], ["a"], [{}], [f"{custom_module}:{fn}"])
