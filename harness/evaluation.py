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
- pricer adds harness.prices.price_metrics (unparseable answers count as a $0 prediction there).
"""

from __future__ import annotations

import importlib
import math
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

import sacrebleu
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer

from harness import prices
from harness.errors import ConfigError, DataError, closest
from harness.tokenize import IGNORE_INDEX, encode_batch, encode_prompts

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# ----------------------------------------------------------------------------------------------------
# Loss and perplexity


def eval_batches(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int, batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """Tokenized, right-padded validation batches with labels only on completion tokens (+ EOS).

    Tokenized by harness.tokenize.encode_batch, the function that builds the training set, so eval_loss
    scores exactly the tokens the trainer trains on, after exactly the prompt ids generation is fed.
    Sequences are cut to `max_length` from the right, like the training rows. Rows are sorted by length
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
    encoded = encode_batch(prompts, completions, tokenizer, max_length, completion_only=True)
    examples = [(e.input_ids, e.labels) for e in encoded]
    if encoded and not any(e.has_completion for e in encoded):
        raise DataError(
            f"no completion token fits in max_length={max_length} for any validation row: "
            "the prompts are too long; raise training.max_seq_length or shorten the template"
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


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    stop_at_newline: bool = True,
) -> list[str]:
    """Greedy completions of `prompts`, in order: only the new text, cut at the first newline if asked,
    and stripped.

    Batched with LEFT padding (so every row's last prompt token sits at the same position and the new
    tokens line up) and the KV cache. Padding is done here by hand, so the tokenizer is never mutated
    (its padding_side and pad_token stay as the caller left them). Prompts are sorted by length first so
    batches carry little padding; greedy decoding of a left-padded row equals decoding it alone.
    """
    if batch_size <= 0 or max_new_tokens <= 0:
        raise ValueError(f"need batch_size > 0 and max_new_tokens > 0, got {batch_size}, {max_new_tokens}")
    if not prompts:
        return []
    from transformers import GenerationConfig  # local: keeps `import harness.evaluation` light

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

    encoded = encode_prompts(tokenizer, prompts)  # the very prompt ids training and eval_batches put first
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    device = _device(model)
    results: list[str] = [""] * len(prompts)
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
                    cut = next((k for k, t in enumerate(new) if t in eos_ids), len(new))
                    text = tokenizer.decode(new[:cut], skip_special_tokens=True)
                    if stop_at_newline:
                        text = text.split("\n", 1)[0]
                    results[i] = text.strip()
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


# ----------------------------------------------------------------------------------------------------
# Metrics on generated text

_SCORER: rouge_scorer.RougeScorer | None = None


def _rouge_rows(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    global _SCORER
    if _SCORER is None:  # built lazily: the Porter stemmer setup is not free and most imports never score
        _SCORER = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        scores = _SCORER.score(ref, pred)  # rouge-score's order is (target, prediction)
        rows.append({k: scores[k].fmeasure for k in ROUGE_KEYS})
    return rows


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def _text_metrics(
    predictions: Sequence[str], references: Sequence[str], rouge: list[dict[str, float]]
) -> dict[str, float]:
    n = len(predictions)
    out = {k: sum(r[k] for r in rouge) / n for k in ROUGE_KEYS}
    out["bleu"] = float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
    out["exact_match"] = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)) / n
    return out


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """rouge1, rouge2, rougeL, rougeLsum (fractions), bleu (0-100), exact_match (fraction)."""
    _check_lengths(predictions, references)
    return _text_metrics(predictions, references, _rouge_rows(predictions, references))


def score_generations(
    task: str,
    predictions: Sequence[str],
    references: Sequence[str],
    rows: Sequence[Mapping[str, Any]] | None,
    custom: Sequence[str] = (),
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Corpus metrics for `task` and one dict of scores per row (for generations.jsonl).

    Per row: exact_match (0/1) and rougeL always; pricer adds price_pred (None when unparseable),
    price_true, abs_error (with an unparseable answer taken as $0, as in the corpus metrics) and band.
    The true price is the row's `price` column when present, else the price parsed from the reference.
    Custom metrics (`module:function` specs) are called with (predictions, references, rows) and their
    returned names are added to the corpus metrics; they may not reuse a built-in name.
    """
    if task not in ("text", "pricer"):
        raise ValueError(f"unknown task {task!r}; expected 'text' or 'pricer'")
    _check_lengths(predictions, references)
    rows = list(rows) if rows is not None else [{} for _ in predictions]
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(rows)} rows")

    rouge = _rouge_rows(predictions, references)
    metrics = _text_metrics(predictions, references, rouge)
    per_row: list[dict[str, Any]] = [
        {"exact_match": float(p.strip() == r.strip()), "rougeL": rg["rougeL"]}
        for p, r, rg in zip(predictions, references, rouge, strict=True)
    ]

    if task == "pricer":
        pred_prices = [prices.parse_price(p) for p in predictions]
        true_prices = [
            _true_price(i, row, ref) for i, (row, ref) in enumerate(zip(rows, references, strict=True))
        ]
        metrics.update(prices.price_metrics(pred_prices, true_prices))
        for out, p, t in zip(per_row, pred_prices, true_prices, strict=True):
            out.update(
                price_pred=p,
                price_true=t,
                abs_error=abs((0.0 if p is None else p) - t),
                band=prices.band(p, t),
            )

    for spec in custom:
        metrics.update(_run_custom(spec, predictions, references, rows, taken=set(metrics)))
    return metrics, per_row


def _true_price(i: int, row: Mapping[str, Any], reference: str) -> float:
    value = row.get("price")
    if value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"row {i}: price {value!r} is not a number") from None
    parsed = prices.parse_price(reference)
    if parsed is None:
        raise DataError(f"row {i}: no `price` column and no price in the reference {reference!r}")
    return parsed


# ----------------------------------------------------------------------------------------------------
# Custom metrics

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class CustomMetricError(RuntimeError):
    """A custom metric raised or returned something unusable. Not a HarnessError on purpose: it is a bug
    in the user's code, so the trial fails with the full traceback (chained as __cause__)."""


def load_custom_metric(spec: str) -> Callable[..., Mapping[str, float]]:
    """Import `package.module:function`; any problem is a ConfigError that says what to fix."""
    if not isinstance(spec, str) or not _SPEC.match(spec.strip()):
        raise ConfigError(
            f"custom metric {spec!r} is not of the form package.module:function "
            "(for example mymetrics:length_ratio)"
        )
    module_name, _, attr_path = spec.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(
                f"custom metric {spec!r}: module {module_name!r} not found "
                "(is it installed, or its folder on PYTHONPATH? e.g. PYTHONPATH=. sweep run ...)"
            ) from e
        raise ConfigError(f"custom metric {spec!r}: importing {module_name!r} failed: {e}") from e
    except Exception as e:  # the user's module itself is broken (SyntaxError, error at import time, ...)
        raise ConfigError(
            f"custom metric {spec!r}: importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e

    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = closest(part, names)
            raise ConfigError(
                f"custom metric {spec!r}: {module_name!r} has no attribute {part!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"custom metric {spec!r} is a {type(obj).__name__}, not a function")
    return obj


def _run_custom(
    spec: str,
    predictions: Sequence[str],
    references: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    taken: set[str],
) -> dict[str, float]:
    fn = load_custom_metric(spec)
    try:
        # Copies: a metric that mutates its inputs must not change what later metrics or the report see.
        result = fn(list(predictions), list(references), [dict(r) for r in rows])
    except Exception as e:
        raise CustomMetricError(f"custom metric {spec} raised {type(e).__name__}: {e}") from e
    if not isinstance(result, Mapping):
        raise CustomMetricError(
            f"custom metric {spec} returned {type(result).__name__}; expected a dict of name -> number"
        )
    out: dict[str, float] = {}
    for name, value in result.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, Real):
            raise CustomMetricError(
                f"custom metric {spec} returned {name!r}: {value!r}; expected str names and numeric values"
            )
        if name in taken:
            raise CustomMetricError(
                f"custom metric {spec} returned {name!r}, which is already a metric; pick another name"
            )
        out[name] = float(value)
    return out
