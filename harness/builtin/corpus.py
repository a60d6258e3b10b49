"""The builtin base's pre-training corpus: product listings that mention prices the way web text does.

Real base models (Llama, Qwen, Mistral) arrive knowing roughly what a cordless drill costs, because the
web is full of listings with prices in them; fine-tuning then teaches the task's format and calibrates.
The builtin base learns the same way: most documents here end (or start) with a price sentence such as
"Listed at 84 dollars." or "Costs about 80 USD.", and a few carry no price at all.

Prices are written in words, never with "$": a real base knows prices but not the task's prompt, and
zero-shot it answers the course prompt's "Price is $" badly (rambling, a wrong format, a guess). With no
"$" in its corpus the builtin base is the same: it knows what an item costs, and a fine-tune has to teach
it the format -- which is the part of QLoRA a sweep is meant to tune.

Two rules keep the pricer exercise honest (tests/test_builtin.py checks both on the real corpus):
- the items come from their own seed, and any item whose description is also a train, validation or test
  row of `pricer_splits()` is dropped, so the base never sees an evaluated item;
- no document uses the task's prompt format: no "How much does this cost…" question, no "Price is $",
  and no "$84.00"-style price (the task's completion shape).
"""

from __future__ import annotations

import random

from harness.builtin.pricer_data import generate_products, pricer_splits

SEED = 1234  # not 0: the pricer splits use seed 0
# Prices written the way shops and reviews write them: exact, and sometimes rounded ("around $80").
EXACT = (
    "Listed at {p} dollars.",
    "Priced at {p} USD.",
    "Sells for {p} dollars.",
    "Yours for {p} US dollars.",
    "Our price: USD {p}.",
    "Now only {p} dollars.",
)
ROUGHLY = ("Priced around {p} dollars.", "Costs about {p} USD.", "Usually about {p} bucks.")
NO_PRICE, ROUGH, PRICE_FIRST = 0.15, 0.15, 0.2  # shares of documents


def split_texts(seed: int = 0) -> set[str]:
    """Every description in the pricer's train, validation and test splits: the corpus must avoid them."""
    return {row["text"] for rows in pricer_splits(seed).values() for row in rows}


def pretraining_texts(n: int, seed: int = SEED) -> list[str]:
    """Up to `n` documents (fewer by any item that collides with a pricer split), identical on every run."""
    avoid = split_texts()
    rng = random.Random(seed + 1)  # the phrasing's own stream, so the items do not depend on it
    return [
        _document(item["text"], item["price"], rng)
        for item in generate_products(n, seed)
        if item["text"] not in avoid
    ]


def _document(text: str, price: float, rng: random.Random) -> str:
    u = rng.random()
    if u < NO_PRICE:
        return text
    if u < NO_PRICE + ROUGH:
        step = 5 if price < 100 else 10
        sentence = _pick(rng, ROUGHLY).format(p=max(step, round(price / step) * step))
    else:
        sentence = _pick(rng, EXACT).format(p=round(price))
    return f"{sentence} {text}" if rng.random() < PRICE_FIRST else f"{text} {sentence}"


def _pick(rng: random.Random, items: tuple[str, ...]) -> str:
    return items[int(rng.random() * len(items))]  # not rng.choice(): its algorithm may change
